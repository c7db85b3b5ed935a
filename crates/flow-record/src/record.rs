//! The record: one closed TCP connection, and the plain types it is made of.

use std::{borrow::Cow, fmt, net::SocketAddr, time::SystemTime};

use flow_common::tcp;
use serde::{Deserialize, Serialize};

use crate::{FlowId, IdentitySource, ProcessInfo, RecordKind, WorkloadId};

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

/// One TCP connection as seen from this host: closed ([`RecordKind::Final`]) or, at
/// the close of a batch window, still open ([`RecordKind::Interim`]).
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
    /// Whether the connection closed (`Final`) or this is a snapshot of one still
    /// open (`Interim`). For an interim record `t_end` is the snapshot's time,
    /// `close_state` the state it was in, `close_reason` is `Normal` and means
    /// nothing, and the statistics are cumulative since the open.
    pub record_kind: RecordKind,
    /// The connection's ID, shared by its interim records and its final record;
    /// `None` for records from a sender that did not know it (wire format 1).
    pub flow_id: Option<FlowId>,
    /// The task that opened an outbound connection; `None` for inbound connections
    /// and when the active open was not seen.
    pub process: Option<ProcessInfo>,
}
