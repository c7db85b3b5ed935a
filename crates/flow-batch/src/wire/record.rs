//! One record of the payload, written straight into its fixed layout.
//!
//! The layout (format version 2) is bincode 1's fixint little-endian serialization of
//! `FlowRecord` (`docs/wire-format.md`, "Record encoding"). Going through serde and bincode cost a
//! call and a length check per field, a second serializer pass to learn the size, and
//! a copy of the workload string; here the size follows from the record's shape and
//! the fields are copied into a stack buffer. The bytes are the same: the tests below
//! compare both encoders on records of every shape and variant, and bincode remains
//! the decoder.
//!
//! A record this writer does not know how to lay out (a variant added to one of
//! `flow_record`'s `#[non_exhaustive]` enums, a workload ID longer than IDs may be)
//! or cannot encode (a time before the Unix epoch) goes through bincode instead, so
//! the result, or the error, is always bincode's. The one exception is a time at or
//! after 10000-01-01T00:00:00Z ([`TIME_LIMIT_SECS`]): bincode would encode it, but the
//! decoder refuses it, so it is refused here too, with an error of bincode's type. So
//! is a process whose `comm` is not in its one form (bytes after the first NUL, or no
//! NUL at all: [`ProcessInfo::comm_is_canonical`]).

use std::{
    net::SocketAddr,
    time::{SystemTime, UNIX_EPOCH},
};

use bincode::Options;
use flow_record::{
    CloseReason, Direction, FlowRecord, IdentitySource, ProcessInfo, RecordKind, UnattributedReason,
};

use super::{MIN_RECORD_LEN, TIME_LIMIT_SECS, record_options};

/// Longest workload ID, in bytes (`flow_common::WORKLOAD_ID_MAX`, which `WorkloadId`
/// enforces).
const WORKLOAD_ID_MAX: usize = 64;

/// Bytes a flow ID takes after its option tag: the boot ID (16) and the cookie (8).
pub(super) const FLOW_ID_LEN: usize = 16 + 8;
/// Bytes a process takes after its option tag: pid (4), cgroup ID (8), comm (16).
pub(super) const PROCESS_LEN: usize = 4 + 8 + 16;

/// The most bytes a record written here takes: two IPv6 addresses (12 bytes more
/// each), a start time (12), an errno (4), the longest workload (8 + 64), an
/// unattributed reason (4), a flow ID and a process.
const MAX_RECORD_LEN: usize =
    MIN_RECORD_LEN + 2 * 12 + 12 + 4 + 8 + WORKLOAD_ID_MAX + 4 + FLOW_ID_LEN + PROCESS_LEN;

/// Appends the wire encoding of `record` to `out`: exactly the bytes of bincode 1's
/// `serialize` (fixed-size little-endian integers), as `docs/wire-format.md` lays
/// them out (format version 2). Fails, as bincode does, for a time before the Unix
/// epoch, and for what decoders refuse: a time at or after 10000-01-01T00:00:00Z
/// ([`TIME_LIMIT_SECS`]) and a process `comm` not in its one form.
///
/// On error, `out` may hold part of the record after its previous contents.
pub fn encode_record(record: &FlowRecord, out: &mut Vec<u8>) -> Result<(), bincode::Error> {
    let mut buf = [0; MAX_RECORD_LEN];
    match write_fields(record, &mut buf).and_then(|len| buf.get(..len)) {
        Some(bytes) => {
            out.extend_from_slice(bytes);
            Ok(())
        }
        None => {
            check_refused(record)?;
            record_options().serialize_into(out, record)
        }
    }
}

/// The exact number of bytes [`encode_record`] appends for `record`, or why it cannot
/// be encoded (a time before the Unix epoch, or at or after 10000-01-01T00:00:00Z; a
/// process `comm` not in its one form).
pub fn encoded_record_len(record: &FlowRecord) -> Result<usize, bincode::Error> {
    match shape_len(record) {
        Some(len) => Ok(len),
        None => {
            check_refused(record)?;
            let len = record_options().serialized_size(record)?;
            Ok(usize::try_from(len).unwrap_or(usize::MAX))
        }
    }
}

/// The length of `record` from its shape, or `None` when [`write_fields`] would not
/// write it.
fn shape_len(r: &FlowRecord) -> Option<usize> {
    if !writable(r.t_end) || !r.t_start.is_none_or(writable) {
        return None;
    }
    let mut len = MIN_RECORD_LEN + address_extra(&r.local) + address_extra(&r.remote);
    if r.t_start.is_some() {
        len += 12;
    }
    if matches!(r.close_reason, CloseReason::Error(_)) {
        len += 4;
    }
    if let Some(id) = &r.local_workload_id {
        let id_len = id.as_str().len();
        if id_len > WORKLOAD_ID_MAX {
            return None;
        }
        len += 8 + id_len;
    }
    let (_, reason) = identity_source(&r.identity_source)?;
    if reason.is_some() {
        len += 4;
    }
    if r.flow_id.is_some() {
        len += FLOW_ID_LEN;
    }
    if let Some(p) = &r.process {
        if !p.comm_is_canonical() {
            return None;
        }
        len += PROCESS_LEN;
    }
    Some(len)
}

/// Whether `t` lies in `[UNIX_EPOCH, TIME_LIMIT_SECS)`, the times a record may carry.
fn writable(t: SystemTime) -> bool {
    since_epoch(t).is_some()
}

/// Refuses a record with a time at or after [`TIME_LIMIT_SECS`] or a process `comm`
/// not in its one form (decoders refuse both), with an error of bincode's type so that
/// callers see one kind of encoding error. Times before the epoch are left to bincode,
/// which refuses them itself.
fn check_refused(r: &FlowRecord) -> Result<(), bincode::Error> {
    if let Some(p) = r.process.filter(|p| !p.comm_is_canonical()) {
        return Err(Box::new(bincode::ErrorKind::Custom(format!(
            "process.comm {:?} is not a NUL-padded name of at most 15 bytes (build it with \
             ProcessInfo::new or ProcessInfo::from_comm_bytes)",
            p.comm
        ))));
    }
    for (field, t) in [("t_start", r.t_start), ("t_end", Some(r.t_end))] {
        let Some(Ok(d)) = t.map(|t| t.duration_since(UNIX_EPOCH)) else {
            continue;
        };
        if d.as_secs() >= TIME_LIMIT_SECS {
            return Err(Box::new(bincode::ErrorKind::Custom(format!(
                "{field} is {} s after the Unix epoch, not before 10000-01-01T00:00:00Z \
                 ({TIME_LIMIT_SECS} s)",
                d.as_secs()
            ))));
        }
    }
    Ok(())
}

/// Bytes an address takes beyond an IPv4 one.
fn address_extra(a: &SocketAddr) -> usize {
    match a {
        SocketAddr::V4(_) => 0,
        SocketAddr::V6(_) => 12,
    }
}

/// Writes `r` at the start of `buf`; returns its length, or `None` when it is not a
/// record this writer lays out (see the module's documentation).
fn write_fields(r: &FlowRecord, buf: &mut [u8; MAX_RECORD_LEN]) -> Option<usize> {
    let t_end = since_epoch(r.t_end)?;
    let t_start = match r.t_start {
        Some(t) => Some(since_epoch(t)?),
        None => None,
    };
    let (source, reason) = identity_source(&r.identity_source)?;
    let workload = match &r.local_workload_id {
        Some(id) if id.as_str().len() > WORKLOAD_ID_MAX => return None,
        Some(id) => Some(id.as_str().as_bytes()),
        None => None,
    };
    if r.process.is_some_and(|p| !p.comm_is_canonical()) {
        return None;
    }

    let mut w = Writer { buf, at: 0 };
    w.address(&r.local);
    w.address(&r.remote);
    w.u32(direction(r.direction));
    match t_start {
        Some((secs, nanos)) => {
            w.u8(1);
            w.time(secs, nanos);
        }
        None => w.u8(0),
    }
    w.time(t_end.0, t_end.1);
    w.u8(r.close_state.0);
    match r.close_reason {
        CloseReason::Error(errno) => {
            w.u32(7);
            w.u32(errno);
        }
        reason => w.u32(close_reason(reason)),
    }
    let s = &r.stats;
    w.u64(s.bytes_sent);
    w.u64(s.bytes_received);
    w.u32(s.segs_in);
    w.u32(s.segs_out);
    w.u32(s.retransmits);
    w.u64(s.bytes_retransmitted);
    w.u32(s.srtt_us);
    w.u32(s.rttvar_us);
    match workload {
        Some(id) => {
            w.u8(1);
            w.u64(id.len() as u64);
            w.bytes(id);
        }
        None => w.u8(0),
    }
    w.u32(source);
    if let Some(reason) = reason {
        w.u32(reason);
    }
    w.u8(u8::from(r.incomplete));
    w.u32(record_kind(r.record_kind));
    match &r.flow_id {
        Some(id) => {
            w.u8(1);
            w.bytes(&id.boot_id);
            w.u64(id.cookie);
        }
        None => w.u8(0),
    }
    match &r.process {
        Some(ProcessInfo {
            pid,
            cgroup_id,
            comm,
        }) => {
            w.u8(1);
            w.u32(*pid);
            w.u64(*cgroup_id);
            w.bytes(comm);
        }
        None => w.u8(0),
    }
    w.finish()
}

/// Seconds and nanoseconds since the Unix epoch, as serde writes a `SystemTime`;
/// `None` for a time before the epoch or at or after [`TIME_LIMIT_SECS`].
fn since_epoch(t: SystemTime) -> Option<(u64, u32)> {
    let d = t.duration_since(UNIX_EPOCH).ok()?;
    (d.as_secs() < TIME_LIMIT_SECS).then(|| (d.as_secs(), d.subsec_nanos()))
}

/// Variant indices, in declaration order (serde's `variant_index`).
fn direction(d: Direction) -> u32 {
    match d {
        Direction::Outbound => 0,
        Direction::Inbound => 1,
        Direction::Unknown => 2,
    }
}

/// The record kind's variant index: 0 final, 1 interim.
pub(super) fn record_kind(k: RecordKind) -> u32 {
    match k {
        RecordKind::Final => 0,
        RecordKind::Interim => 1,
    }
}

/// The variant index of every reason but `Error`, which carries its errno.
fn close_reason(r: CloseReason) -> u32 {
    match r {
        CloseReason::Normal => 0,
        CloseReason::Refused => 1,
        CloseReason::ConnectTimedOut => 2,
        CloseReason::ConnectAborted => 3,
        CloseReason::Reset => 4,
        CloseReason::Aborted => 5,
        CloseReason::TimedOut => 6,
        CloseReason::Error(_) => 7,
    }
}

/// The source's variant index and, for `None`, the reason's; `None` for a variant
/// added after this writer.
fn identity_source(s: &IdentitySource) -> Option<(u32, Option<u32>)> {
    Some(match s {
        IdentitySource::ConnectMap => (0, None),
        IdentitySource::IpMap => (1, None),
        IdentitySource::Certificate => (2, None),
        IdentitySource::None(reason) => (3, Some(unattributed_reason(reason)?)),
        _ => return None,
    })
}

fn unattributed_reason(r: &UnattributedReason) -> Option<u32> {
    Some(match r {
        UnattributedReason::NoMatch => 0,
        UnattributedReason::InvalidMapValue => 1,
        UnattributedReason::CertificateMissing => 2,
        UnattributedReason::CertificateUnreadable => 3,
        UnattributedReason::CertificateMalformed => 4,
        UnattributedReason::CertificateExpired => 5,
        UnattributedReason::CertificateNotYetValid => 6,
        UnattributedReason::CertificateHasNoIdentity => 7,
        _ => return None,
    })
}

/// Little-endian fields into a buffer as long as the longest record. It cannot run
/// out of room for a record [`write_fields`] accepts; if it ever did, the record would
/// go to bincode instead (`finish` says so), never out of bounds.
struct Writer<'a> {
    buf: &'a mut [u8; MAX_RECORD_LEN],
    at: usize,
}

impl Writer<'_> {
    #[inline(always)]
    fn bytes(&mut self, bytes: &[u8]) {
        let end = self.at + bytes.len();
        if let Some(dst) = self.buf.get_mut(self.at..end) {
            dst.copy_from_slice(bytes);
        }
        self.at = end;
    }

    #[inline(always)]
    fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }

    #[inline(always)]
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }

    #[inline(always)]
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }

    /// serde's `SystemTime`: a struct of `u64` seconds and `u32` nanoseconds.
    fn time(&mut self, secs: u64, nanos: u32) {
        self.u64(secs);
        self.u32(nanos);
    }

    /// serde's `SocketAddr`: the variant index, the address octets, the port.
    fn address(&mut self, a: &SocketAddr) {
        match a {
            SocketAddr::V4(a) => {
                self.u32(0);
                self.bytes(&a.ip().octets());
                self.bytes(&a.port().to_le_bytes());
            }
            SocketAddr::V6(a) => {
                self.u32(1);
                self.bytes(&a.ip().octets());
                self.bytes(&a.port().to_le_bytes());
            }
        }
    }

    /// The length written, if it all fit.
    fn finish(self) -> Option<usize> {
        (self.at <= MAX_RECORD_LEN).then_some(self.at)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::{Ipv4Addr, Ipv6Addr},
        time::Duration,
    };

    use flow_record::{FlowId, SocketStats, TcpState, WorkloadId};

    use super::*;

    /// SplitMix64: reproducible field values.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        /// One of a few edge values, or a random one.
        fn u64_edgy(&mut self) -> u64 {
            match self.next() % 5 {
                0 => 0,
                1 => u64::MAX,
                2 => 1 << 63,
                _ => self.next() >> (self.next() % 64),
            }
        }

        fn u32_edgy(&mut self) -> u32 {
            match self.next() % 5 {
                0 => 0,
                1 => u32::MAX,
                _ => self.next() as u32,
            }
        }
    }

    const CLOSE_REASONS: [CloseReason; 8] = [
        CloseReason::Normal,
        CloseReason::Refused,
        CloseReason::ConnectTimedOut,
        CloseReason::ConnectAborted,
        CloseReason::Reset,
        CloseReason::Aborted,
        CloseReason::TimedOut,
        CloseReason::Error(0),
    ];

    const DIRECTIONS: [Direction; 3] =
        [Direction::Outbound, Direction::Inbound, Direction::Unknown];

    /// Every identity source, with every unattributed reason.
    fn identity_sources() -> Vec<IdentitySource> {
        let mut sources = vec![
            IdentitySource::ConnectMap,
            IdentitySource::IpMap,
            IdentitySource::Certificate,
        ];
        sources.extend(
            [
                UnattributedReason::NoMatch,
                UnattributedReason::InvalidMapValue,
                UnattributedReason::CertificateMissing,
                UnattributedReason::CertificateUnreadable,
                UnattributedReason::CertificateMalformed,
                UnattributedReason::CertificateExpired,
                UnattributedReason::CertificateNotYetValid,
                UnattributedReason::CertificateHasNoIdentity,
            ]
            .map(IdentitySource::None),
        );
        sources
    }

    fn address(rng: &mut Rng, v6: bool) -> SocketAddr {
        let port = match rng.next() % 4 {
            0 => 0,
            1 => u16::MAX,
            _ => rng.next() as u16,
        };
        if v6 {
            let ip = match rng.next() % 4 {
                0 => Ipv6Addr::UNSPECIFIED,
                1 => Ipv6Addr::from(u128::MAX),
                _ => Ipv6Addr::from((u128::from(rng.next()) << 64) | u128::from(rng.next())),
            };
            SocketAddr::new(ip.into(), port)
        } else {
            let ip = match rng.next() % 4 {
                0 => Ipv4Addr::UNSPECIFIED,
                1 => Ipv4Addr::BROADCAST,
                _ => Ipv4Addr::from(rng.next() as u32),
            };
            SocketAddr::new(ip.into(), port)
        }
    }

    /// A time the format allows: the epoch itself, the last nanosecond of a second,
    /// today, or the last nanosecond before 10000-01-01T00:00:00Z.
    fn time(rng: &mut Rng) -> SystemTime {
        let d = match rng.next() % 6 {
            0 => Duration::ZERO,
            1 => Duration::new(rng.next() % (1 << 37), 999_999_999),
            2 => Duration::new(TIME_LIMIT_SECS - 1, 999_999_999),
            _ => Duration::new(
                1_700_000_000 + rng.next() % 1_000_000,
                rng.next() as u32 % 1_000_000_000,
            ),
        };
        UNIX_EPOCH + d
    }

    /// A valid workload ID of 1 to 64 bytes, ASCII or multi-byte UTF-8.
    fn workload(rng: &mut Rng) -> WorkloadId {
        let len = match rng.next() % 4 {
            0 => 1,
            1 => WORKLOAD_ID_MAX,
            _ => 1 + (rng.next() % WORKLOAD_ID_MAX as u64) as usize,
        };
        let mut id = String::new();
        while id.len() < len {
            let c = match rng.next() % 8 {
                0 => 'ü',
                1 => '€',
                2 => '𝄞',
                _ => char::from(b'!' + (rng.next() % 94) as u8),
            };
            if id.len() + c.len_utf8() <= len {
                id.push(c);
            } else {
                id.push('x');
            }
        }
        WorkloadId::new(id).expect("valid by construction")
    }

    /// A process with a command name of 0 to 15 bytes, any of them but NUL.
    fn process(rng: &mut Rng) -> ProcessInfo {
        let len = match rng.next() % 4 {
            0 => 0,
            1 => 15,
            _ => (rng.next() % 16) as usize,
        };
        let name: Vec<u8> = (0..len).map(|_| (rng.next() % 255) as u8 + 1).collect();
        ProcessInfo::from_comm_bytes(rng.u32_edgy(), &name, rng.u64_edgy())
    }

    /// The four combinations of the version 2 fields: a final record without flow ID
    /// and process, an interim one with both, and two in between.
    const TAILS: [(RecordKind, bool, bool); 4] = [
        (RecordKind::Final, false, false),
        (RecordKind::Interim, true, false),
        (RecordKind::Final, true, true),
        (RecordKind::Interim, false, true),
    ];

    /// Records of every shape and every variant: each combination of address families,
    /// start time, close reason, workload, identity source, direction, `incomplete`
    /// and the version 2 fields ([`TAILS`]), `per_shape` times with other field values.
    fn varied_records(per_shape: usize) -> Vec<FlowRecord> {
        let mut rng = Rng(0x5eed);
        let mut records = Vec::new();
        for local_v6 in [false, true] {
            for remote_v6 in [false, true] {
                for with_start in [false, true] {
                    for close_reason in CLOSE_REASONS {
                        for with_workload in [false, true] {
                            for identity_source in identity_sources() {
                                for direction in DIRECTIONS {
                                    for incomplete in [false, true] {
                                        for (kind, with_id, with_process) in TAILS {
                                            for _ in 0..per_shape {
                                                let close_reason = match close_reason {
                                                    CloseReason::Error(_) => {
                                                        CloseReason::Error(rng.u32_edgy())
                                                    }
                                                    r => r,
                                                };
                                                // Drawn in the order of the fields.
                                                let record = flow_testkit::record()
                                                    .local(address(&mut rng, local_v6))
                                                    .remote(address(&mut rng, remote_v6))
                                                    .direction(direction)
                                                    .t_start(with_start.then(|| time(&mut rng)))
                                                    .t_end(time(&mut rng))
                                                    .close(TcpState(rng.next() as u8), close_reason)
                                                    .stats(SocketStats {
                                                        bytes_sent: rng.u64_edgy(),
                                                        bytes_received: rng.u64_edgy(),
                                                        segs_in: rng.u32_edgy(),
                                                        segs_out: rng.u32_edgy(),
                                                        retransmits: rng.u32_edgy(),
                                                        bytes_retransmitted: rng.u64_edgy(),
                                                        srtt_us: rng.u32_edgy(),
                                                        rttvar_us: rng.u32_edgy(),
                                                    })
                                                    .identity(
                                                        with_workload.then(|| workload(&mut rng)),
                                                        identity_source,
                                                    )
                                                    .incomplete(incomplete)
                                                    .kind(kind)
                                                    .flow_id(with_id.then(|| {
                                                        FlowId {
                                                            boot_id: (u128::from(rng.next()) << 64
                                                                | u128::from(rng.next()))
                                                            .to_le_bytes(),
                                                            cookie: rng.u64_edgy(),
                                                        }
                                                    }))
                                                    .process(
                                                        with_process.then(|| process(&mut rng)),
                                                    );
                                                records.push(record.build());
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        records
    }

    fn bincode_bytes(record: &FlowRecord) -> Vec<u8> {
        // bincode 1's `serialize`: the encoding docs/wire-format.md specifies.
        bincode::serialize(record).expect("bincode encodes it")
    }

    #[test]
    fn writes_the_bytes_bincode_writes() {
        let records = varied_records(3);
        // 2 * 2 * 2 * 8 * 2 * 11 * 3 * 2 * 4 shapes and variants, 3 records each.
        assert_eq!(records.len(), 33_792 * 3);
        let mut lens = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for (i, record) in records.iter().enumerate() {
            out.clear();
            encode_record(record, &mut out).expect("encodes");
            let expected = bincode_bytes(record);
            assert_eq!(out, expected, "record {i}: {record:?}");
            lens.insert(out.len());
        }
        // The shortest and the longest records were among them.
        assert_eq!(lens.first(), Some(&MIN_RECORD_LEN));
        assert_eq!(lens.last(), Some(&MAX_RECORD_LEN));
    }

    #[test]
    fn records_written_one_after_another_are_bincodes_concatenation() {
        let records = varied_records(1);
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for record in &records {
            encode_record(record, &mut ours).expect("encodes");
            record_options()
                .serialize_into(&mut theirs, record)
                .expect("bincode encodes it");
        }
        assert_eq!(ours, theirs);
        // And bincode reads them back.
        let mut rest = &ours[..];
        for record in &records {
            let back: FlowRecord = record_options()
                .deserialize_from(&mut rest)
                .expect("decodes");
            assert_eq!(&back, record);
        }
        assert!(rest.is_empty());
    }

    #[test]
    fn length_from_the_shape_is_the_encoded_length() {
        for (i, record) in varied_records(2).iter().enumerate() {
            let expected = bincode::serialized_size(record).expect("sized") as usize;
            assert_eq!(shape_len(record), Some(expected), "record {i}: {record:?}");
            assert_eq!(encoded_record_len(record).expect("sized"), expected);
        }
    }

    #[test]
    fn times_before_the_epoch_fail_as_with_bincode() {
        let mut rng = Rng(7);
        let mut record = varied_records(1).swap_remove(0);
        let before = UNIX_EPOCH - Duration::from_nanos(1);
        let cases: [(Option<SystemTime>, SystemTime); 3] = [
            (None, before),
            (Some(before), time(&mut rng)),
            (Some(before), before),
        ];
        for (t_start, t_end) in cases {
            record.t_start = t_start;
            record.t_end = t_end;
            let expected = bincode::serialize(&record).expect_err("bincode refuses it");
            let mut out = Vec::new();
            let err = encode_record(&record, &mut out).expect_err("refused");
            assert_eq!(err.to_string(), expected.to_string());
            let err = encoded_record_len(&record).expect_err("refused");
            assert_eq!(err.to_string(), expected.to_string());
        }
    }

    #[test]
    fn times_from_the_year_10000_on_are_refused() {
        let mut record = varied_records(1).swap_remove(0);
        let last = UNIX_EPOCH + Duration::new(TIME_LIMIT_SECS - 1, 999_999_999);
        let limit = UNIX_EPOCH + Duration::from_secs(TIME_LIMIT_SECS);
        let far = UNIX_EPOCH + Duration::from_secs(i64::MAX as u64);
        record.t_start = Some(last);
        record.t_end = last;
        let mut out = Vec::new();
        encode_record(&record, &mut out).expect("the last nanosecond of 9999 encodes");
        assert_eq!(encoded_record_len(&record).expect("sized"), out.len());
        for (t_start, t_end, field) in [
            (None, limit, "t_end"),
            (Some(limit), last, "t_start"),
            (Some(last), far, "t_end"),
            (Some(far), limit, "t_start"),
        ] {
            record.t_start = t_start;
            record.t_end = t_end;
            let err = encode_record(&record, &mut Vec::new()).expect_err("refused");
            let text = err.to_string();
            assert!(text.starts_with(field), "{text}");
            assert!(text.contains("10000-01-01T00:00:00Z"), "{text}");
            let err = encoded_record_len(&record).expect_err("refused");
            assert_eq!(err.to_string(), text);
        }
    }

    #[test]
    fn records_decode_back_in_both_versions() {
        for (i, record) in varied_records(1).iter().enumerate() {
            let mut out = Vec::new();
            encode_record(record, &mut out).expect("encodes");
            out.extend_from_slice(b"next");
            let (back, len) = super::super::decode_record(&out, 2).expect("decodes");
            assert_eq!((&back, len), (record, out.len() - 4), "record {i}");
            // A version 1 record is a version 2 one without the fields after
            // `incomplete`: it decodes as final, without flow ID or process.
            let tail = 4
                + 1
                + record.flow_id.map_or(0, |_| FLOW_ID_LEN)
                + 1
                + record.process.map_or(0, |_| PROCESS_LEN);
            let mut v1 = out[..len - tail].to_vec();
            v1.extend_from_slice(b"next");
            let (old, old_len) = super::super::decode_record(&v1, 1).expect("decodes");
            let expected = FlowRecord {
                record_kind: RecordKind::Final,
                flow_id: None,
                process: None,
                ..record.clone()
            };
            assert_eq!((old, old_len), (expected, len - tail), "record {i}");
        }
    }

    #[test]
    fn a_comm_not_in_its_one_form_is_refused() {
        let mut record = varied_records(1).swap_remove(0);
        let mut process = ProcessInfo::new(1, "curl", 2);
        process.comm[10] = b'x';
        for comm in [process.comm, [b'z'; 16]] {
            process.comm = comm;
            record.process = Some(process);
            let err = encode_record(&record, &mut Vec::new()).expect_err("refused");
            assert!(err.to_string().starts_with("process.comm"), "{err}");
            let err = encoded_record_len(&record).expect_err("refused");
            assert!(err.to_string().starts_with("process.comm"), "{err}");
        }
        record.process = Some(ProcessInfo::from_comm_bytes(1, &[b'z'; 16], 2));
        let mut out = Vec::new();
        encode_record(&record, &mut out).expect("the canonical form encodes");
        assert_eq!(encoded_record_len(&record).expect("sized"), out.len());
    }

    #[test]
    fn workload_id_is_encoded_as_a_string() {
        let id = WorkloadId::new("k8s:prod/api-ü").expect("valid");
        assert_eq!(
            bincode::serialize(&id).expect("encodes"),
            bincode::serialize("k8s:prod/api-ü").expect("encodes")
        );
    }
}
