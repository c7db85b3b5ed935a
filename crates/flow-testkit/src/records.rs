//! A [`FlowRecord`] builder for tests: fixed defaults, and a setter for each field a
//! test varies, so that a test names only what matters to it.
#![warn(missing_docs)]

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use flow_record::{
    CloseReason, Direction, FlowId, FlowRecord, IdentitySource, ProcessInfo, RecordKind,
    SocketStats, TcpState, UnattributedReason, WorkloadId,
};

/// The default `t_end`, in seconds after the Unix epoch (2023-11-14T22:13:20Z).
pub const DEFAULT_T_END_SECS: u64 = 1_700_000_000;

/// How long before `t_end` the default `t_start` is.
pub const DEFAULT_DURATION: Duration = Duration::from_millis(5);

/// Starts a record with the defaults of [`RecordBuilder::new`].
///
/// ```
/// use flow_record::{CloseReason, Direction, IdentitySource, TcpState};
///
/// let r = flow_testkit::record()
///     .remote("10.0.0.9:8080")
///     .direction(Direction::Outbound)
///     .bytes(100, 2_000)
///     .close(TcpState(1), CloseReason::Reset)
///     .workload("k8s:prod/api", IdentitySource::ConnectMap)
///     .build();
/// assert_eq!(r.local, "10.0.0.1:443".parse()?);
/// assert_eq!(r.remote.port(), 8080);
/// assert_eq!((r.stats.bytes_sent, r.stats.bytes_received), (100, 2_000));
/// assert_eq!(r.local_workload_id.as_ref().map(|w| w.as_str()), Some("k8s:prod/api"));
/// // t_start stays 5 ms before t_end unless it is set.
/// assert_eq!(r.t_start, Some(r.t_end - flow_testkit::records::DEFAULT_DURATION));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn record() -> RecordBuilder {
    RecordBuilder::new()
}

/// Builds a [`FlowRecord`] for a test. Every setter replaces what it names and leaves
/// the rest; [`RecordBuilder::build`] (or `FlowRecord::from`) makes the record.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing until built"]
pub struct RecordBuilder {
    record: FlowRecord,
    /// `Some`: `t_start` is this long before `t_end` (wherever `t_end` is set);
    /// `None`: `t_start` was set as it is in `record`.
    start_before_end: Option<Duration>,
}

impl Default for RecordBuilder {
    fn default() -> Self {
        RecordBuilder::new()
    }
}

impl RecordBuilder {
    /// A record with these defaults:
    ///
    /// | field | default |
    /// |---|---|
    /// | `local` | `10.0.0.1:443` |
    /// | `remote` | `10.0.0.2:50000` |
    /// | `direction` | [`Direction::Inbound`] |
    /// | `t_end` | [`DEFAULT_T_END_SECS`] (1 700 000 000 s) after the Unix epoch |
    /// | `t_start` | [`DEFAULT_DURATION`] (5 ms) before `t_end`, wherever `t_end` is set |
    /// | `close_state`, `close_reason` | `TcpState(7)` (`CLOSE`), [`CloseReason::Normal`] |
    /// | `stats` | all zero |
    /// | `local_workload_id`, `identity_source` | `None`, `None(NoMatch)` (unattributed) |
    /// | `incomplete` | `false` |
    pub fn new() -> RecordBuilder {
        let t_end = UNIX_EPOCH + Duration::from_secs(DEFAULT_T_END_SECS);
        RecordBuilder {
            record: FlowRecord {
                local: SocketAddr::from(([10, 0, 0, 1], 443)),
                remote: SocketAddr::from(([10, 0, 0, 2], 50_000)),
                direction: Direction::Inbound,
                t_start: Some(t_end - DEFAULT_DURATION),
                t_end,
                close_state: TcpState(7),
                close_reason: CloseReason::Normal,
                stats: SocketStats::default(),
                local_workload_id: None,
                identity_source: IdentitySource::None(UnattributedReason::NoMatch),
                incomplete: false,
                record_kind: RecordKind::Final,
                flow_id: None,
                process: None,
            },
            start_before_end: Some(DEFAULT_DURATION),
        }
    }

    /// The local address and port (`"10.0.0.1:443"`, a [`SocketAddr`], `([10, 0, 0, 1],
    /// 443)`, ...).
    pub fn local(mut self, addr: impl IntoSocketAddr) -> Self {
        self.record.local = addr.into_socket_addr();
        self
    }

    /// The remote address and port.
    pub fn remote(mut self, addr: impl IntoSocketAddr) -> Self {
        self.record.remote = addr.into_socket_addr();
        self
    }

    /// Who opened the connection.
    pub fn direction(mut self, direction: Direction) -> Self {
        self.record.direction = direction;
        self
    }

    /// The open time, as given (`None`: the open was not seen); a later
    /// [`t_end`](Self::t_end) no longer moves it.
    pub fn t_start(mut self, t_start: Option<SystemTime>) -> Self {
        self.record.t_start = t_start;
        self.start_before_end = None;
        self
    }

    /// The close time. `t_start` moves with it unless it was set with
    /// [`t_start`](Self::t_start).
    pub fn t_end(mut self, t_end: SystemTime) -> Self {
        self.record.t_end = t_end;
        self
    }

    /// Statistics at close, all of them.
    pub fn stats(mut self, stats: SocketStats) -> Self {
        self.record.stats = stats;
        self
    }

    /// Payload bytes sent and received (the other statistics are left as they are).
    pub fn bytes(mut self, sent: u64, received: u64) -> Self {
        self.record.stats.bytes_sent = sent;
        self.record.stats.bytes_received = received;
        self
    }

    /// The state the socket closed from, and why it closed.
    pub fn close(mut self, state: TcpState, reason: CloseReason) -> Self {
        self.record.close_state = state;
        self.record.close_reason = reason;
        self
    }

    /// Attributed to workload `id` (a `&str`, `String` or [`WorkloadId`]) by `source`.
    ///
    /// # Panics
    ///
    /// When `id` is not a valid workload ID.
    pub fn workload(mut self, id: impl Into<String>, source: IdentitySource) -> Self {
        let id = WorkloadId::new(id).unwrap_or_else(|e| panic!("test workload ID: {e}"));
        self.record.local_workload_id = Some(id);
        self.record.identity_source = source;
        self
    }

    /// Unattributed, for `reason`: no workload, `identity_source` `None(reason)`.
    pub fn unattributed(mut self, reason: UnattributedReason) -> Self {
        self.record.local_workload_id = None;
        self.record.identity_source = IdentitySource::None(reason);
        self
    }

    /// The workload and identity source exactly as given, even in combinations the
    /// resolvers never produce (for encoders that must carry any record).
    pub fn identity(mut self, id: Option<WorkloadId>, source: IdentitySource) -> Self {
        self.record.local_workload_id = id;
        self.record.identity_source = source;
        self
    }

    /// Whether some kernel reads failed.
    pub fn incomplete(mut self, incomplete: bool) -> Self {
        self.record.incomplete = incomplete;
        self
    }

    /// Final (closed) or interim (still open at a window's close).
    pub fn kind(mut self, kind: RecordKind) -> Self {
        self.record.record_kind = kind;
        self
    }

    /// The connection's ID (default none).
    pub fn flow_id(mut self, flow_id: Option<FlowId>) -> Self {
        self.record.flow_id = flow_id;
        self
    }

    /// The process that opened the connection (default none).
    pub fn process(mut self, process: Option<ProcessInfo>) -> Self {
        self.record.process = process;
        self
    }

    /// The record.
    pub fn build(self) -> FlowRecord {
        let mut record = self.record;
        if let Some(before) = self.start_before_end {
            record.t_start = Some(record.t_end - before);
        }
        record
    }
}

impl From<RecordBuilder> for FlowRecord {
    fn from(builder: RecordBuilder) -> FlowRecord {
        builder.build()
    }
}

/// An address a [`RecordBuilder`] accepts: a [`SocketAddr`], a string that parses as
/// one (panicking when it does not), or an IP address with a port.
pub trait IntoSocketAddr {
    /// The address.
    fn into_socket_addr(self) -> SocketAddr;
}

impl IntoSocketAddr for SocketAddr {
    fn into_socket_addr(self) -> SocketAddr {
        self
    }
}

impl IntoSocketAddr for &str {
    fn into_socket_addr(self) -> SocketAddr {
        self.parse()
            .unwrap_or_else(|e| panic!("test address {self:?}: {e}"))
    }
}

impl IntoSocketAddr for String {
    fn into_socket_addr(self) -> SocketAddr {
        self.as_str().into_socket_addr()
    }
}

impl IntoSocketAddr for ([u8; 4], u16) {
    fn into_socket_addr(self) -> SocketAddr {
        SocketAddr::from(self)
    }
}

impl IntoSocketAddr for ([u16; 8], u16) {
    fn into_socket_addr(self) -> SocketAddr {
        SocketAddr::from(self)
    }
}

impl IntoSocketAddr for (IpAddr, u16) {
    fn into_socket_addr(self) -> SocketAddr {
        SocketAddr::from(self)
    }
}

impl IntoSocketAddr for (Ipv4Addr, u16) {
    fn into_socket_addr(self) -> SocketAddr {
        SocketAddr::from(self)
    }
}

impl IntoSocketAddr for (Ipv6Addr, u16) {
    fn into_socket_addr(self) -> SocketAddr {
        SocketAddr::from(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let r = record().build();
        let t_end = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            r,
            FlowRecord {
                local: "10.0.0.1:443".parse().expect("addr"),
                remote: "10.0.0.2:50000".parse().expect("addr"),
                direction: Direction::Inbound,
                t_start: Some(t_end - Duration::from_millis(5)),
                t_end,
                close_state: TcpState(7),
                close_reason: CloseReason::Normal,
                stats: SocketStats::default(),
                local_workload_id: None,
                identity_source: IdentitySource::None(UnattributedReason::NoMatch),
                incomplete: false,
                record_kind: RecordKind::Final,
                flow_id: None,
                process: None,
            }
        );
        assert_eq!(FlowRecord::from(RecordBuilder::default()), r);
    }

    #[test]
    fn t_start_follows_t_end_until_it_is_set() {
        let t = UNIX_EPOCH + Duration::from_secs(10);
        let r = record().t_end(t).build();
        assert_eq!(r.t_start, Some(t - DEFAULT_DURATION));
        let r = record().t_start(None).t_end(t).build();
        assert_eq!((r.t_start, r.t_end), (None, t));
        let s = UNIX_EPOCH + Duration::from_secs(3);
        let r = record().t_end(t).t_start(Some(s)).t_end(t).build();
        assert_eq!(r.t_start, Some(s));
    }

    #[test]
    fn identity_setters() {
        let r = record()
            .workload("wl", IdentitySource::IpMap)
            .unattributed(UnattributedReason::CertificateMissing)
            .build();
        assert_eq!(r.local_workload_id, None);
        assert_eq!(
            r.identity_source,
            IdentitySource::None(UnattributedReason::CertificateMissing)
        );
        let id = WorkloadId::new("wl").expect("id");
        let r = record()
            .identity(
                Some(id.clone()),
                IdentitySource::None(UnattributedReason::NoMatch),
            )
            .build();
        assert_eq!(r.local_workload_id, Some(id));
    }
}
