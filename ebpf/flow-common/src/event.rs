//! The record the kernel program writes to the ring buffer, and the per-socket state it
//! keeps between a socket's first state change and its close.

use crate::identity::WorkloadValue;

/// Bits of [`RawFlowEvent::flags`].
pub mod flags {
    /// The socket's open was not seen (it was opened before the program attached, or
    /// its entry in the socket table was recycled): `start_ns` is 0 and the direction
    /// is unknown.
    pub const START_UNKNOWN: u8 = 1 << 0;
    /// At least one kernel read failed; the fields it would have filled are zero.
    pub const READ_FAILED: u8 = 1 << 1;
    /// The peer's FIN was received (`SOCK_DONE` was set in `sk_flags` at close), so
    /// `bytes_received` counts one sequence number that is not payload.
    pub const FIN_RECEIVED: u8 = 1 << 2;
}

/// Values of [`RawFlowEvent::kind`].
pub mod kind {
    /// The socket closed (written to the ring buffer at `TCP_CLOSE`).
    pub const FINAL: u8 = 0;
    /// The socket is still open (written by the open-socket iterator at a window's
    /// close); `end_ns` is the snapshot's time and `close_state` the current state.
    pub const INTERIM: u8 = 1;
}

/// Bit number of `SOCK_DONE` in `sock.sk_flags` (`enum sock_flags`, stable since 2.6).
pub const SOCK_DONE_BIT: u32 = 1;

/// Which side opened the connection.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Not known: the socket's open was not seen.
    Unknown = 0,
    /// Active open: this host called `connect()`.
    Outbound = 1,
    /// Passive open: this host accepted the connection.
    Inbound = 2,
}

impl Direction {
    /// Decodes the wire byte; unknown values map to [`Direction::Unknown`].
    pub const fn from_u8(v: u8) -> Direction {
        match v {
            1 => Direction::Outbound,
            2 => Direction::Inbound,
            _ => Direction::Unknown,
        }
    }
}

/// One closed TCP socket, exactly as the kernel program writes it to the ring buffer.
///
/// Addresses are in network byte order; an IPv4 address occupies the first four bytes
/// of its 16-byte field. Ports are in host byte order. Times are `CLOCK_BOOTTIME`
/// nanoseconds (user space converts them to wall-clock time). Counters are the raw
/// `struct tcp_sock` values; user space derives payload byte counts from them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawFlowEvent {
    /// `CLOCK_BOOTTIME` ns of the socket's first state change; 0 when unknown.
    pub start_ns: u64,
    /// `CLOCK_BOOTTIME` ns of the change to `TCP_CLOSE`.
    pub end_ns: u64,
    /// `tcp_sock.bytes_acked`: sequence space acked by the peer (payload + SYN + FIN).
    pub bytes_acked: u64,
    /// `tcp_sock.bytes_received`: sequence space received (payload + FIN).
    pub bytes_received: u64,
    /// `tcp_sock.bytes_sent`: payload bytes transmitted, retransmissions included.
    pub bytes_sent: u64,
    /// `tcp_sock.bytes_retrans`: payload bytes retransmitted.
    pub bytes_retrans: u64,
    /// Local address (network byte order).
    pub local_addr: [u8; 16],
    /// Remote address (network byte order).
    pub remote_addr: [u8; 16],
    /// `tcp_sock.segs_in`: segments received.
    pub segs_in: u32,
    /// `tcp_sock.segs_out`: segments sent.
    pub segs_out: u32,
    /// `tcp_sock.total_retrans`: segments retransmitted.
    pub total_retrans: u32,
    /// `tcp_sock.srtt_us`: smoothed RTT in µs, shifted left by 3 as the kernel keeps it.
    pub srtt_us_x8: u32,
    /// `tcp_sock.mdev_us`: RTT mean deviation in µs, shifted left by 2.
    pub mdev_us_x4: u32,
    /// `sock.sk_err` at close: `ECONNREFUSED`, `ECONNRESET`, `ETIMEDOUT`, ... or 0.
    pub sk_err: u32,
    /// Local port (host byte order).
    pub local_port: u16,
    /// Remote port (host byte order).
    pub remote_port: u16,
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// The state the socket closed from (the `oldstate` of the change to `TCP_CLOSE`).
    pub close_state: u8,
    /// A [`Direction`] as its `u8`.
    pub direction: u8,
    /// [`flags`] bits.
    pub flags: u8,
    /// Where `workload` came from (`crate::identity::source`).
    pub identity_source: u8,
    /// A [`kind`] value: a close, or a snapshot of an open socket.
    pub kind: u8,
    /// Explicit padding; always zero.
    pub _pad: u8,
    /// The process (thread group) ID that made the active open; 0 when the socket is
    /// inbound or its open was not seen.
    pub pid: u32,
    /// The local workload resolved in the kernel (empty when `identity_source` is 0).
    pub workload: WorkloadValue,
    /// The socket cookie (`bpf_get_socket_cookie`): unique per boot.
    pub cookie: u64,
    /// The cgroup ID of the task that made the active open; 0 when `pid` is 0.
    pub cgroup_id: u64,
    /// The command name of that task (`comm`, NUL-padded); zero when `pid` is 0.
    pub comm: [u8; 16],
}

impl RawFlowEvent {
    /// Size of the record on the wire, in bytes.
    pub const SIZE: usize = core::mem::size_of::<RawFlowEvent>();

    /// A record with every field zero.
    pub const fn zeroed() -> RawFlowEvent {
        RawFlowEvent {
            start_ns: 0,
            end_ns: 0,
            bytes_acked: 0,
            bytes_received: 0,
            bytes_sent: 0,
            bytes_retrans: 0,
            local_addr: [0; 16],
            remote_addr: [0; 16],
            segs_in: 0,
            segs_out: 0,
            total_retrans: 0,
            srtt_us_x8: 0,
            mdev_us_x4: 0,
            sk_err: 0,
            local_port: 0,
            remote_port: 0,
            family: 0,
            close_state: 0,
            direction: 0,
            flags: 0,
            identity_source: 0,
            kind: 0,
            _pad: 0,
            pid: 0,
            workload: WorkloadValue::EMPTY,
            cookie: 0,
            cgroup_id: 0,
            comm: [0; 16],
        }
    }
}

/// What the kernel program keeps per socket (in the `FLOW_SOCKETS` table, keyed by
/// the socket's address) from its open until its close.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketStart {
    /// `CLOCK_BOOTTIME` ns of the first state change.
    pub start_ns: u64,
    /// A [`Direction`] as its `u8`.
    pub direction: u8,
    /// 1 once the close was emitted (so the second attachment of the program does not
    /// emit it again); a reconnect starts afresh.
    pub closed: u8,
    /// 1 once identity was looked up at establishment.
    pub resolved: u8,
    /// Where `workload` came from (`crate::identity::source`).
    pub identity_source: u8,
    /// The process (thread group) ID that made the active open; 0 for a passive one.
    pub pid: u32,
    /// The workload resolved when the connection was established.
    pub workload: WorkloadValue,
    /// The cgroup ID of the task that made the active open.
    pub cgroup_id: u64,
    /// The command name of that task (`comm`, NUL-padded).
    pub comm: [u8; 16],
}

const _: () = assert!(RawFlowEvent::SIZE == 216);
const _: () = assert!(core::mem::size_of::<SocketStart>() == 104);
// The layout user space decodes (and the kernel program writes a word at a time).
const _: () = assert!(core::mem::offset_of!(RawFlowEvent, local_addr) == 48);
const _: () = assert!(core::mem::offset_of!(RawFlowEvent, workload) == 120);
const _: () = assert!(core::mem::offset_of!(RawFlowEvent, cookie) == 184);
const _: () = assert!(core::mem::offset_of!(SocketStart, workload) == 16);
const _: () = assert!(core::mem::offset_of!(SocketStart, comm) == 88);

#[cfg(feature = "user")]
// SAFETY: plain-old-data: `#[repr(C)]`, integer fields only, no implicit padding.
unsafe impl aya::Pod for RawFlowEvent {}
