//! The typed flow record user space hands on, decoded from the kernel's
//! [`RawFlowEvent`].

use std::{
    borrow::Cow,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::SystemTime,
};

use flow_common::{RawFlowEvent, WORKLOAD_ID_MAX, WorkloadValue, flags, identity, tcp};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{clock::BootClock, error::CaptureError};

/// Which side opened the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// This host called `connect()` (active open).
    Outbound,
    /// This host accepted the connection (passive open).
    Inbound,
    /// The open was not seen (the socket predates the program).
    Unknown,
}

impl Direction {
    /// The name used in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
            Direction::Unknown => "unknown",
        }
    }
}

/// A TCP state, as the kernel numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TcpState(pub u8);

impl TcpState {
    /// The kernel's name for the state (`ESTABLISHED`, `FIN_WAIT2`, ...).
    pub fn as_str(self) -> &'static str {
        match self.0 {
            tcp::TCP_ESTABLISHED => "ESTABLISHED",
            tcp::TCP_SYN_SENT => "SYN_SENT",
            tcp::TCP_SYN_RECV => "SYN_RECV",
            tcp::TCP_FIN_WAIT1 => "FIN_WAIT1",
            tcp::TCP_FIN_WAIT2 => "FIN_WAIT2",
            tcp::TCP_TIME_WAIT => "TIME_WAIT",
            tcp::TCP_CLOSE => "CLOSE",
            tcp::TCP_CLOSE_WAIT => "CLOSE_WAIT",
            tcp::TCP_LAST_ACK => "LAST_ACK",
            tcp::TCP_LISTEN => "LISTEN",
            tcp::TCP_CLOSING => "CLOSING",
            tcp::TCP_NEW_SYN_RECV => "NEW_SYN_RECV",
            _ => "UNKNOWN",
        }
    }

    /// Whether a socket closing from this state never finished its handshake.
    pub fn is_handshake(self) -> bool {
        matches!(self.0, tcp::TCP_SYN_SENT | tcp::TCP_SYN_RECV)
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// An orderly close after the connection was established.
    Normal,
    /// The peer refused the connection (RST in answer to SYN: `ECONNREFUSED`).
    Refused,
    /// The handshake timed out (`ETIMEDOUT` before established).
    ConnectTimedOut,
    /// The handshake was abandoned locally (closed before it completed, no error).
    ConnectAborted,
    /// The established connection was reset by the peer (`ECONNRESET`, `EPIPE`).
    Reset,
    /// This host aborted the established connection (closed it with unread data or
    /// `SO_LINGER` 0, so an RST went out instead of a FIN).
    Aborted,
    /// The established connection timed out (retransmissions or keepalive exhausted).
    TimedOut,
    /// Another socket error, by errno (e.g. 113, `EHOSTUNREACH`).
    Error(u32),
}

impl CloseReason {
    /// Derives the reason from the state the socket closed from, whether it was ever
    /// established, and `sk_err`.
    pub fn classify(close_state: TcpState, established: bool, sk_err: u32) -> CloseReason {
        const EPIPE: u32 = libc::EPIPE as u32;
        const ECONNRESET: u32 = libc::ECONNRESET as u32;
        const ETIMEDOUT: u32 = libc::ETIMEDOUT as u32;
        const ECONNREFUSED: u32 = libc::ECONNREFUSED as u32;
        let handshake = !established && close_state.is_handshake();
        match sk_err {
            0 if handshake => CloseReason::ConnectAborted,
            0 if matches!(close_state.0, tcp::TCP_ESTABLISHED | tcp::TCP_CLOSE_WAIT) => {
                CloseReason::Aborted
            }
            0 => CloseReason::Normal,
            ECONNREFUSED => CloseReason::Refused,
            ECONNRESET | EPIPE => CloseReason::Reset,
            ETIMEDOUT if handshake => CloseReason::ConnectTimedOut,
            ETIMEDOUT => CloseReason::TimedOut,
            e => CloseReason::Error(e),
        }
    }

    /// The name used in JSON output: `normal`, `refused`, ..., `errno_113`.
    pub fn as_str(&self) -> Cow<'static, str> {
        match self {
            CloseReason::Normal => "normal".into(),
            CloseReason::Refused => "refused".into(),
            CloseReason::ConnectTimedOut => "connect_timed_out".into(),
            CloseReason::ConnectAborted => "connect_aborted".into(),
            CloseReason::Reset => "reset".into(),
            CloseReason::Aborted => "aborted".into(),
            CloseReason::TimedOut => "timed_out".into(),
            CloseReason::Error(e) => format!("errno_{e}").into(),
        }
    }

    /// Whether the connection failed before it was established.
    pub fn is_connect_failure(&self) -> bool {
        matches!(
            self,
            CloseReason::Refused | CloseReason::ConnectTimedOut | CloseReason::ConnectAborted
        )
    }
}

/// Socket statistics at close, from `struct tcp_sock`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketStats {
    /// Application payload bytes sent and acknowledged by the peer (SYN and FIN, which
    /// the kernel's `bytes_acked` includes, are taken out).
    pub bytes_sent: u64,
    /// Application payload bytes received (the FIN, which the kernel's
    /// `bytes_received` includes, is taken out).
    pub bytes_received: u64,
    /// Segments received.
    pub segs_in: u32,
    /// Segments sent, retransmissions included.
    pub segs_out: u32,
    /// Segments retransmitted.
    pub retransmits: u32,
    /// Payload bytes retransmitted.
    pub bytes_retransmitted: u64,
    /// Smoothed round-trip time, µs (0 when no RTT sample was taken).
    pub srtt_us: u32,
    /// Round-trip time mean deviation, µs.
    pub rttvar_us: u32,
}

/// A workload identity: who owned the local address of a flow. UTF-8, 1 to 64 bytes,
/// no NUL and no other control character (C0, DEL, C1: Unicode's `Cc`), so an ID can
/// be printed to a terminal or a log as it is. Deserializing validates too, so a
/// decoded record cannot smuggle in an ID that could not have been written.
///
/// The text is shared (`Arc<str>`): cloning an ID, as every record of the same
/// workload does, neither allocates nor copies, and the IDs decoded from kernel
/// records are interned per thread (see [`FlowRecord::from_raw`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorkloadId(Arc<str>);

/// What makes a workload ID, or a workload value found in an identity map, invalid.
/// Positions are byte offsets from the start of the ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadIdProblem {
    /// The ID is empty.
    #[error("it is empty")]
    Empty,
    /// The ID is longer than [`WORKLOAD_ID_MAX`] bytes.
    #[error("it is longer than {max} bytes ({len} bytes)", max = WORKLOAD_ID_MAX)]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The ID contains a NUL byte (in a map value: a NUL followed by more bytes
    /// than NUL padding).
    #[error("it contains a NUL byte at byte {at}")]
    Nul {
        /// Offset of the NUL.
        at: usize,
    },
    /// The ID contains a control character (ESC, newline, DEL, a C1 control, ...).
    #[error("it contains the control character U+{code:04X} at byte {at}", code = u32::from(*ch))]
    ControlCharacter {
        /// Offset of the character's first byte.
        at: usize,
        /// The character.
        ch: char,
    },
    /// A map value is not UTF-8.
    #[error("it is not UTF-8 (invalid byte at byte {at})")]
    NotUtf8 {
        /// Offset of the first byte that is not part of valid UTF-8.
        at: usize,
    },
}

/// A workload value found in an identity map (or a kernel record) that is not a valid
/// workload ID: what it holds, and why it is refused. Its [`Display`](fmt::Display)
/// shows the value escaped, so a value written by another tool can never put control
/// characters on a terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidWorkloadValue {
    value: WorkloadValue,
    problem: WorkloadIdProblem,
}

impl InvalidWorkloadValue {
    /// Why the value is not a valid workload ID.
    pub fn problem(&self) -> WorkloadIdProblem {
        self.problem
    }

    /// The value's bytes, without its trailing NUL padding.
    pub fn bytes(&self) -> &[u8] {
        let len = self
            .value
            .id
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |last| last + 1);
        &self.value.id[..len]
    }

    /// The value as printable ASCII-safe text, without quotes: UTF-8 text escaped as
    /// Rust's `escape_debug` does (`\u{1b}`, `\n`, `\0`, ...), every byte that is not
    /// UTF-8 as `\xNN`.
    pub fn escaped(&self) -> String {
        escape_bytes(self.bytes())
    }
}

impl fmt::Display for InvalidWorkloadValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\": {}", self.escaped(), self.problem)
    }
}

/// `bytes` escaped for a terminal: valid UTF-8 with `escape_debug`, the rest as `\xNN`.
fn escape_bytes(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            // `escape_debug` leaves printable characters (ü, €) alone.
            let _ = write!(out, "{}", c.escape_debug());
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

impl TryFrom<String> for WorkloadId {
    type Error = CaptureError;

    fn try_from(id: String) -> Result<WorkloadId, CaptureError> {
        WorkloadId::new(id)
    }
}

impl From<WorkloadId> for String {
    fn from(id: WorkloadId) -> String {
        String::from(&*id.0)
    }
}

impl WorkloadId {
    /// Validates an identity string.
    pub fn new(id: impl Into<String>) -> Result<WorkloadId, CaptureError> {
        let id = id.into();
        match problem(&id) {
            Some(reason) => Err(CaptureError::InvalidWorkloadId { id, reason }),
            None => Ok(WorkloadId(Arc::from(id))),
        }
    }

    /// Decodes a map or record value; `None` when it is not a valid ID (see
    /// [`WorkloadId::decode_value`]).
    pub fn from_value(value: &WorkloadValue) -> Option<WorkloadId> {
        WorkloadId::decode_value(value).ok()
    }

    /// Decodes a map or record value: the ID's bytes, then NUL padding to 64 bytes.
    /// Refused when the ID is empty, when a NUL is followed by anything but more NULs
    /// (`ab\0cd` is not `ab`), when it is not UTF-8 or holds a control character.
    pub fn decode_value(value: &WorkloadValue) -> Result<WorkloadId, InvalidWorkloadValue> {
        let invalid = |problem| InvalidWorkloadValue {
            value: *value,
            problem,
        };
        let bytes = &value.id[..];
        let len = bytes
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(WORKLOAD_ID_MAX);
        if bytes[len..].iter().any(|&b| b != 0) {
            return Err(invalid(WorkloadIdProblem::Nul { at: len }));
        }
        let s = std::str::from_utf8(&bytes[..len]).map_err(|e| {
            invalid(WorkloadIdProblem::NotUtf8 {
                at: e.valid_up_to(),
            })
        })?;
        match problem(s) {
            Some(p) => Err(invalid(p)),
            None => Ok(WorkloadId(Arc::from(s))),
        }
    }

    /// Encodes the identity as a map value.
    pub fn to_value(&self) -> WorkloadValue {
        let mut v = WorkloadValue::EMPTY;
        v.id[..self.0.len()].copy_from_slice(self.0.as_bytes());
        v
    }

    /// The identity as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why `id` is not a valid workload ID, or `None` when it is one.
fn problem(id: &str) -> Option<WorkloadIdProblem> {
    if id.is_empty() {
        return Some(WorkloadIdProblem::Empty);
    }
    if id.len() > WORKLOAD_ID_MAX {
        return Some(WorkloadIdProblem::TooLong { len: id.len() });
    }
    // The common case, printable ASCII, is one pass over the bytes.
    if id.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return None;
    }
    id.char_indices().find_map(|(at, ch)| match ch {
        '\0' => Some(WorkloadIdProblem::Nul { at }),
        ch if ch.is_control() => Some(WorkloadIdProblem::ControlCharacter { at, ch }),
        _ => None,
    })
}

impl fmt::Display for WorkloadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Serialized as its text, exactly like a `String`.
impl Serialize for WorkloadId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Deserialized from a string, which must be a valid workload ID.
impl<'de> Deserialize<'de> for WorkloadId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<WorkloadId, D::Error> {
        let id = String::deserialize(deserializer)?;
        WorkloadId::new(id).map_err(serde::de::Error::custom)
    }
}

/// Why a record carries no workload identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UnattributedReason {
    /// Neither identity map had an entry for the local end, and no certificate is
    /// configured.
    NoMatch,
    /// A map entry was found but is not a valid workload ID (empty, not UTF-8, a NUL
    /// before the end of the ID, or a control character).
    InvalidMapValue,
    /// The configured identity certificate does not exist.
    CertificateMissing,
    /// The configured identity certificate could not be read.
    CertificateUnreadable,
    /// The configured identity certificate is not a valid PEM X.509 certificate.
    CertificateMalformed,
    /// The configured identity certificate has expired.
    CertificateExpired,
    /// The configured identity certificate is not valid yet.
    CertificateNotYetValid,
    /// The configured identity certificate names no identity in the configured field.
    CertificateHasNoIdentity,
}

impl UnattributedReason {
    /// The name used in JSON output.
    pub fn as_str(&self) -> &'static str {
        match self {
            UnattributedReason::NoMatch => "no_match",
            UnattributedReason::InvalidMapValue => "invalid_map_value",
            UnattributedReason::CertificateMissing => "certificate_missing",
            UnattributedReason::CertificateUnreadable => "certificate_unreadable",
            UnattributedReason::CertificateMalformed => "certificate_malformed",
            UnattributedReason::CertificateExpired => "certificate_expired",
            UnattributedReason::CertificateNotYetValid => "certificate_not_yet_valid",
            UnattributedReason::CertificateHasNoIdentity => "certificate_has_no_identity",
        }
    }
}

/// Which source resolved a record's local workload identity. Precedence: the connect
/// map, then the IP map (both looked up in the kernel), then the certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum IdentitySource {
    /// The connect map: (local IPv4, local port) -> workload.
    ConnectMap,
    /// The IP map: local address -> workload.
    IpMap,
    /// The host's identity certificate.
    Certificate,
    /// Nothing resolved it; the record is unattributed, for this reason.
    None(UnattributedReason),
}

impl IdentitySource {
    /// The name used in JSON output: `connect_map`, `ip_map`, `certificate`, `none`.
    pub fn as_str(&self) -> &'static str {
        match self {
            IdentitySource::ConnectMap => "connect_map",
            IdentitySource::IpMap => "ip_map",
            IdentitySource::Certificate => "certificate",
            IdentitySource::None(_) => "none",
        }
    }

    /// Why the record is unattributed, if it is.
    pub fn unattributed_reason(&self) -> Option<UnattributedReason> {
        match self {
            IdentitySource::None(r) => Some(*r),
            _ => None,
        }
    }
}

/// One closed TCP connection as seen from this host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// Local address and port. IPv4-mapped IPv6 addresses are reported as IPv4.
    pub local: SocketAddr,
    /// Remote address and port.
    pub remote: SocketAddr,
    /// Who opened the connection.
    pub direction: Direction,
    /// Wall-clock time of the socket's open; `None` when the open was not seen.
    pub t_start: Option<SystemTime>,
    /// Wall-clock time of the close.
    pub t_end: SystemTime,
    /// The state the socket closed from.
    pub close_state: TcpState,
    /// Why it closed.
    pub close_reason: CloseReason,
    /// Statistics at close.
    pub stats: SocketStats,
    /// The local workload, when resolved.
    pub local_workload_id: Option<WorkloadId>,
    /// How the local workload was resolved.
    pub identity_source: IdentitySource,
    /// Some kernel reads failed: fields they would have filled are zero.
    pub incomplete: bool,
}

impl FlowRecord {
    /// Decodes a kernel event, converting its boot-clock stamps with `clock`.
    ///
    /// The workload IDs of the kernel's events are interned per thread: a workload
    /// value seen recently (up to 256 distinct values are kept) is neither validated
    /// nor allocated again, its record shares the ID decoded the first time.
    pub fn from_raw(ev: &RawFlowEvent, clock: &BootClock) -> FlowRecord {
        let (local_ip, remote_ip) = addresses(ev);
        let close_state = TcpState(ev.close_state);
        let start_known = ev.flags & flags::START_UNKNOWN == 0;
        // No state leads back to SYN_SENT/SYN_RECV from ESTABLISHED, so a socket that
        // closed from any other state had been established.
        let established = !close_state.is_handshake();
        let direction = match flow_common::Direction::from_u8(ev.direction) {
            flow_common::Direction::Outbound => Direction::Outbound,
            flow_common::Direction::Inbound => Direction::Inbound,
            flow_common::Direction::Unknown => Direction::Unknown,
        };
        let (local_workload_id, identity_source) = kernel_identity(ev);
        FlowRecord {
            local: SocketAddr::new(local_ip, ev.local_port),
            remote: SocketAddr::new(remote_ip, ev.remote_port),
            direction,
            t_start: start_known.then(|| clock.to_wall(ev.start_ns)),
            t_end: clock.to_wall(ev.end_ns),
            close_state,
            close_reason: CloseReason::classify(close_state, established, ev.sk_err),
            stats: stats(ev, direction, established),
            local_workload_id,
            identity_source,
            incomplete: ev.flags & flags::READ_FAILED != 0,
        }
    }
}

/// The identity the kernel resolved, if any.
fn kernel_identity(ev: &RawFlowEvent) -> (Option<WorkloadId>, IdentitySource) {
    let source = match ev.identity_source {
        identity::source::CONNECT_MAP => IdentitySource::ConnectMap,
        identity::source::IP_MAP => IdentitySource::IpMap,
        _ => return (None, IdentitySource::None(UnattributedReason::NoMatch)),
    };
    match workload_cache::lookup(&ev.workload) {
        Some(id) => (Some(id), source),
        None => (
            None,
            IdentitySource::None(UnattributedReason::InvalidMapValue),
        ),
    }
}

fn addresses(ev: &RawFlowEvent) -> (IpAddr, IpAddr) {
    if ev.family == tcp::AF_INET6 {
        let l = Ipv6Addr::from(ev.local_addr);
        let r = Ipv6Addr::from(ev.remote_addr);
        match (l.to_ipv4_mapped(), r.to_ipv4_mapped()) {
            (Some(l4), Some(r4)) => (IpAddr::V4(l4), IpAddr::V4(r4)),
            _ => (IpAddr::V6(l), IpAddr::V6(r)),
        }
    } else {
        let v4 = |a: &[u8; 16]| IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]));
        (v4(&ev.local_addr), v4(&ev.remote_addr))
    }
}

/// Payload byte counts from the kernel's sequence-space counters.
///
/// `bytes_acked` counts every acknowledged sequence number: the SYN of an active open
/// (a passive child starts with its SYN-ACK already acknowledged), the payload, and
/// our FIN once acked. The FIN comes after all payload, so capping at the payload
/// actually sent (`bytes_sent - bytes_retrans`) removes it exactly. `bytes_received`
/// counts the payload plus the peer's FIN, which the kernel program reports.
fn stats(ev: &RawFlowEvent, direction: Direction, established: bool) -> SocketStats {
    let syn = u64::from(direction == Direction::Outbound && established);
    let payload_sent = ev.bytes_sent.saturating_sub(ev.bytes_retrans);
    let bytes_sent = ev.bytes_acked.saturating_sub(syn).min(payload_sent);
    let fin_received = u64::from(ev.flags & flags::FIN_RECEIVED != 0);
    SocketStats {
        bytes_sent,
        bytes_received: ev.bytes_received.saturating_sub(fin_received),
        segs_in: ev.segs_in,
        segs_out: ev.segs_out,
        retransmits: ev.total_retrans,
        bytes_retransmitted: ev.bytes_retrans,
        srtt_us: ev.srtt_us_x8 >> 3,
        rttvar_us: ev.mdev_us_x4 >> 2,
    }
}

/// Per-thread interning of the workload values found in kernel events.
///
/// Every event of an attributed socket carries its workload as a NUL-padded 64-byte
/// value, and a host has few workloads: decoding one from scratch (finding its length,
/// checking its UTF-8, allocating its text) for every record cost as much as the rest
/// of the record. The cache maps the whole 64-byte value, compared as it is, to the
/// ID decoded the first time.
mod workload_cache {
    use std::{
        cell::RefCell,
        collections::HashMap,
        hash::{BuildHasherDefault, Hash, Hasher},
    };

    use flow_common::{WORKLOAD_ID_MAX, WorkloadValue};

    use super::WorkloadId;

    /// Most distinct values kept per thread (more than the pods a node usually runs).
    /// When it is full the cache is emptied and fills again, so it never grows past
    /// this (about 40 KiB) however many workloads come and go.
    pub(super) const CAPACITY: usize = 256;

    thread_local! {
        static CACHE: RefCell<WorkloadCache> = RefCell::new(WorkloadCache::default());
    }

    /// The ID of `value`, as [`WorkloadId::from_value`] decodes it, from this thread's
    /// cache when the value was seen recently.
    pub(super) fn lookup(value: &WorkloadValue) -> Option<WorkloadId> {
        CACHE
            .try_with(|cache| match cache.try_borrow_mut() {
                Ok(mut cache) => cache.get(value),
                // Not reachable (nothing here calls back into `lookup`), but never
                // worth a panic: decode without the cache.
                Err(_) => WorkloadId::from_value(value),
            })
            // The thread is being torn down and its cache is gone.
            .unwrap_or_else(|_| WorkloadId::from_value(value))
    }

    /// Recently seen workload values and their IDs; invalid values are not kept.
    #[derive(Default)]
    pub(super) struct WorkloadCache {
        ids: HashMap<Key, WorkloadId, BuildHasherDefault<WordHasher>>,
    }

    impl WorkloadCache {
        /// The ID of `value` (`None` when it is not a valid ID), decoded only when it
        /// is not in the cache.
        pub(super) fn get(&mut self, value: &WorkloadValue) -> Option<WorkloadId> {
            let key = Key(value.id);
            if let Some(id) = self.ids.get(&key) {
                return Some(id.clone());
            }
            let id = WorkloadId::from_value(value)?;
            if self.ids.len() >= CAPACITY {
                self.ids.clear();
            }
            self.ids.insert(key, id.clone());
            Some(id)
        }

        /// How many values it holds.
        #[cfg(test)]
        pub(super) fn len(&self) -> usize {
            self.ids.len()
        }
    }

    /// A workload value, padding included: equal keys are equal values.
    #[derive(PartialEq, Eq)]
    struct Key([u8; WORKLOAD_ID_MAX]);

    impl Hash for Key {
        fn hash<H: Hasher>(&self, state: &mut H) {
            for word in self.0.chunks_exact(8) {
                let mut w = [0; 8];
                w.copy_from_slice(word);
                state.write_u64(u64::from_le_bytes(w));
            }
        }
    }

    /// A multiply-rotate hash of whole words (the Fx hash of rustc), with a final mix
    /// so that the high bits hashbrown uses as tags depend on every word. The keys are
    /// written by the local kernel program from the host's own identity maps, so a
    /// keyed hash buys nothing here; the cache's size bounds any collision chain.
    #[derive(Default)]
    struct WordHasher(u64);

    impl WordHasher {
        const K: u64 = 0xf135_7aea_2e62_a9c5;
    }

    impl Hasher for WordHasher {
        fn write(&mut self, bytes: &[u8]) {
            for &b in bytes {
                self.write_u64(u64::from(b));
            }
        }

        fn write_u64(&mut self, word: u64) {
            self.0 = (self.0 ^ word).wrapping_mul(Self::K).rotate_left(26);
        }

        fn finish(&self) -> u64 {
            let h = self.0 ^ (self.0 >> 32);
            h.wrapping_mul(Self::K) ^ (h >> 29)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(id: &[u8]) -> WorkloadValue {
        let mut v = WorkloadValue::EMPTY;
        v.id[..id.len()].copy_from_slice(id);
        v
    }

    #[test]
    fn workload_id_validates_like_before() {
        assert!(WorkloadId::new("").is_err());
        assert!(WorkloadId::new("a".repeat(65)).is_err());
        assert!(WorkloadId::new("nul\0inside").is_err());
        assert_eq!(
            WorkloadId::new("a".repeat(64)).expect("64 bytes").as_str(),
            "a".repeat(64)
        );
        let id = WorkloadId::try_from(String::from("ümlaut")).expect("UTF-8");
        assert_eq!(id.to_string(), "ümlaut");
        assert_eq!(String::from(id.clone()), "ümlaut");
        assert_eq!(WorkloadId::from_value(&id.to_value()), Some(id));
        assert_eq!(WorkloadId::from_value(&WorkloadValue::EMPTY), None);
        assert_eq!(WorkloadId::from_value(&value(&[0xff, 0xfe])), None);
    }

    #[test]
    fn workload_id_validates_when_deserialized() {
        use serde::de::value::{Error, StrDeserializer};
        let id = WorkloadId::deserialize(StrDeserializer::<Error>::new("k8s:prod/api"));
        assert_eq!(id.expect("valid").as_str(), "k8s:prod/api");
        for bad in ["", "nul\0inside", &"a".repeat(65)] {
            let id = WorkloadId::deserialize(StrDeserializer::<Error>::new(bad));
            assert!(id.is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_nul_inside_a_map_value_is_invalid_not_truncated() {
        // NUL padding after the ID is fine; a NUL followed by more bytes is not.
        let padded = value(b"ab");
        assert_eq!(
            WorkloadId::decode_value(&padded).expect("padded").as_str(),
            "ab"
        );
        let embedded = value(b"ab\0cd");
        assert_eq!(WorkloadId::from_value(&embedded), None);
        let err = WorkloadId::decode_value(&embedded).expect_err("embedded NUL");
        assert_eq!(err.problem(), WorkloadIdProblem::Nul { at: 2 });
        assert_eq!(err.bytes(), b"ab\0cd");
        assert_eq!(err.escaped(), "ab\\0cd");
        // A leading NUL with bytes after it is not an empty value either.
        let leading = value(b"\0x");
        assert_eq!(
            WorkloadId::decode_value(&leading).map_err(|e| e.problem()),
            Err(WorkloadIdProblem::Nul { at: 0 })
        );
        // The last byte of a full-length value counts too.
        let mut last = value(&[b'a'; WORKLOAD_ID_MAX - 2]);
        last.id[WORKLOAD_ID_MAX - 1] = b'z';
        assert_eq!(
            WorkloadId::decode_value(&last).map_err(|e| e.problem()),
            Err(WorkloadIdProblem::Nul {
                at: WORKLOAD_ID_MAX - 2
            })
        );
        assert_eq!(
            WorkloadId::decode_value(&WorkloadValue::EMPTY).map_err(|e| e.problem()),
            Err(WorkloadIdProblem::Empty)
        );
    }

    #[test]
    fn a_nul_inside_a_kernel_value_is_attributed_as_invalid() {
        let clock = crate::clock::BootClock::with_offset_ns(0);
        let mut ev = RawFlowEvent::zeroed();
        ev.family = tcp::AF_INET;
        ev.close_state = tcp::TCP_CLOSE;
        ev.identity_source = identity::source::CONNECT_MAP;
        // Seen as `ab` first, so a cache keyed on the ID's text would answer `ab`.
        ev.workload = value(b"ab");
        let ab = FlowRecord::from_raw(&ev, &clock);
        assert_eq!(
            ab.local_workload_id.as_ref().map(WorkloadId::as_str),
            Some("ab")
        );
        ev.workload = value(b"ab\0cd");
        for _ in 0..2 {
            let r = FlowRecord::from_raw(&ev, &clock);
            assert_eq!(r.local_workload_id, None);
            assert_eq!(
                r.identity_source,
                IdentitySource::None(UnattributedReason::InvalidMapValue)
            );
        }
    }

    #[test]
    fn control_characters_are_refused_with_their_position() {
        for (id, at, ch) in [
            ("ab\u{1b}cd", 2, '\u{1b}'),
            ("line\nbreak", 4, '\n'),
            ("\ttab", 0, '\t'),
            ("del\u{7f}", 3, '\u{7f}'),
            ("c1-\u{85}", 3, '\u{85}'),
            ("ü\u{9b}31m", 2, '\u{9b}'),
            ("cr\r", 2, '\r'),
        ] {
            let err = WorkloadId::new(id).expect_err(id);
            let CaptureError::InvalidWorkloadId { reason, .. } = &err else {
                panic!("{err:?}");
            };
            assert_eq!(*reason, WorkloadIdProblem::ControlCharacter { at, ch });
            let text = err.to_string();
            assert!(
                text.contains(&format!("at byte {at}"))
                    && text.contains(&format!("U+{:04X}", u32::from(ch))),
                "{text}"
            );
            // The message itself carries no raw control character.
            assert!(!text.chars().any(char::is_control), "{text:?}");
        }
        let err = WorkloadId::new("nul\0inside").expect_err("NUL");
        assert!(err.to_string().contains("NUL byte at byte 3"), "{err}");
        // Printable non-ASCII stays valid.
        assert!(WorkloadId::new("k8s:prod/ümlaut-€-𝄞").is_ok());
    }

    #[test]
    fn control_characters_are_refused_when_deserialized() {
        use serde::de::value::{Error, StrDeserializer};
        for bad in ["ab\u{1b}[31mcd", "a\nb", "\u{7f}", "\u{9f}"] {
            let id = WorkloadId::deserialize(StrDeserializer::<Error>::new(bad));
            let err = id.expect_err(bad).to_string();
            assert!(err.contains("control character"), "{err}");
        }
    }

    #[test]
    fn a_map_value_with_control_characters_is_invalid_and_shown_escaped() {
        let esc = value(b"ab\x1b[2Jcd");
        let err = WorkloadId::decode_value(&esc).expect_err("ESC");
        assert_eq!(
            err.problem(),
            WorkloadIdProblem::ControlCharacter {
                at: 2,
                ch: '\u{1b}'
            }
        );
        assert_eq!(err.escaped(), "ab\\u{1b}[2Jcd");
        let shown = err.to_string();
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        let c1 = value("x\u{9b}y\n".as_bytes());
        assert_eq!(
            WorkloadId::decode_value(&c1).expect_err("C1").escaped(),
            "x\\u{9b}y\\n"
        );
        let not_utf8 = value(&[b'a', 0xff, 0x1b]);
        let err = WorkloadId::decode_value(&not_utf8).expect_err("not UTF-8");
        assert_eq!(err.problem(), WorkloadIdProblem::NotUtf8 { at: 1 });
        assert_eq!(err.escaped(), "a\\xff\\u{1b}");

        let clock = crate::clock::BootClock::with_offset_ns(0);
        let mut ev = RawFlowEvent::zeroed();
        ev.family = tcp::AF_INET;
        ev.close_state = tcp::TCP_CLOSE;
        ev.identity_source = identity::source::IP_MAP;
        ev.workload = esc;
        let r = FlowRecord::from_raw(&ev, &clock);
        assert_eq!(r.local_workload_id, None);
        assert_eq!(
            r.identity_source,
            IdentitySource::None(UnattributedReason::InvalidMapValue)
        );
    }

    #[test]
    fn cache_shares_the_id_of_a_value_seen_before() {
        let mut cache = workload_cache::WorkloadCache::default();
        let a = cache.get(&value(b"k8s:prod/api")).expect("valid");
        let again = cache.get(&value(b"k8s:prod/api")).expect("valid");
        assert_eq!(a.as_str(), "k8s:prod/api");
        assert!(Arc::ptr_eq(&a.0, &again.0), "decoded twice");
        let b = cache.get(&value(b"k8s:prod/db")).expect("valid");
        assert_eq!(b.as_str(), "k8s:prod/db");
        // A longer ID sharing the prefix, and the longest one.
        let long = cache.get(&value(b"k8s:prod/api-2")).expect("valid");
        assert_eq!(long.as_str(), "k8s:prod/api-2");
        let max = cache.get(&value(&[b'x'; WORKLOAD_ID_MAX])).expect("valid");
        assert_eq!(max.as_str(), "x".repeat(WORKLOAD_ID_MAX));
        assert_eq!(cache.len(), 4);
    }

    #[test]
    fn cache_keeps_no_invalid_value() {
        let mut cache = workload_cache::WorkloadCache::default();
        assert_eq!(cache.get(&WorkloadValue::EMPTY), None);
        assert_eq!(cache.get(&value(&[b'a', 0xc3])), None);
        assert_eq!(cache.get(&value(&[b'a', 0xc3])), None);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn cache_is_bounded() {
        let mut cache = workload_cache::WorkloadCache::default();
        for i in 0..3 * workload_cache::CAPACITY {
            let id = format!("workload-{i}");
            let got = cache.get(&value(id.as_bytes())).expect("valid");
            assert_eq!(got.as_str(), id);
            assert!(cache.len() <= workload_cache::CAPACITY);
        }
        assert!(cache.len() > 0);
    }

    #[test]
    fn from_raw_decodes_the_kernel_identity() {
        let clock = crate::clock::BootClock::with_offset_ns(0);
        let mut ev = RawFlowEvent::zeroed();
        ev.family = tcp::AF_INET;
        ev.close_state = tcp::TCP_CLOSE;
        ev.identity_source = identity::source::IP_MAP;
        ev.workload = value(b"billing");
        let first = FlowRecord::from_raw(&ev, &clock);
        let second = FlowRecord::from_raw(&ev, &clock);
        assert_eq!(first.identity_source, IdentitySource::IpMap);
        assert_eq!(
            first.local_workload_id.as_ref().map(WorkloadId::as_str),
            Some("billing")
        );
        assert_eq!(first, second);
        ev.workload = value(&[0xff]);
        let bad = FlowRecord::from_raw(&ev, &clock);
        assert_eq!(bad.local_workload_id, None);
        assert_eq!(
            bad.identity_source,
            IdentitySource::None(UnattributedReason::InvalidMapValue)
        );
        ev.identity_source = identity::source::NONE;
        let none = FlowRecord::from_raw(&ev, &clock);
        assert_eq!(
            none.identity_source,
            IdentitySource::None(UnattributedReason::NoMatch)
        );
    }
}
