//! Member offsets of kernel structures, read from the running kernel's BTF by user space
//! and handed to the program as a read-only global before it is loaded.

/// Byte offsets of the kernel members the program reads, counted from the start of
/// `struct sock` (which begins `struct inet_sock` and `struct tcp_sock`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `sock_common.skc_family` (u16).
    pub skc_family: u32,
    /// `sock.sk_protocol` (u16).
    pub sk_protocol: u32,
    /// `sock_common.skc_daddr` (IPv4 remote, u32).
    pub skc_daddr: u32,
    /// `sock_common.skc_rcv_saddr` (IPv4 local, u32).
    pub skc_rcv_saddr: u32,
    /// `sock_common.skc_dport` (remote port, network order u16).
    pub skc_dport: u32,
    /// `sock_common.skc_v6_daddr` (IPv6 remote, 16 bytes).
    pub skc_v6_daddr: u32,
    /// `sock_common.skc_v6_rcv_saddr` (IPv6 local, 16 bytes).
    pub skc_v6_rcv_saddr: u32,
    /// `inet_sock.inet_sport` (local port, network order u16; `skc_num` is 0 at close).
    pub inet_sport: u32,
    /// `sock.sk_type` (u16): `SOCK_STREAM` for a TCP socket.
    pub sk_type: u32,
    /// `sock_common.skc_state` (u8, volatile unsigned char): the current TCP state.
    pub skc_state: u32,
    /// `socket.sk` (`struct sock *`), counted from the start of `struct socket`.
    pub socket_sk: u32,
    /// `sock.sk_err` (int).
    pub sk_err: u32,
    /// `sock_common.skc_flags`, formerly `sock.sk_flags` (unsigned long; bit `SOCK_DONE` is set when the peer's FIN
    /// arrived).
    pub sk_flags: u32,
    /// `tcp_sock.bytes_acked` (u64).
    pub bytes_acked: u32,
    /// `tcp_sock.bytes_received` (u64).
    pub bytes_received: u32,
    /// `tcp_sock.bytes_sent` (u64).
    pub bytes_sent: u32,
    /// `tcp_sock.bytes_retrans` (u64).
    pub bytes_retrans: u32,
    /// `tcp_sock.segs_in` (u32).
    pub segs_in: u32,
    /// `tcp_sock.segs_out` (u32).
    pub segs_out: u32,
    /// `tcp_sock.total_retrans` (u32).
    pub total_retrans: u32,
    /// `tcp_sock.srtt_us` (u32).
    pub srtt_us: u32,
    /// `tcp_sock.mdev_us` (u32).
    pub mdev_us: u32,
}

/// Bits of [`ProgramConfig::features`]. The program branches on them; as the
/// configuration is frozen, the verifier drops the branch not taken, so a helper the
/// kernel lacks is never called (nor checked).
pub mod features {
    /// `bpf_get_socket_cookie` may be called from tracing programs (Linux 5.12):
    /// records carry the socket cookie (their flow ID).
    pub const SOCKET_COOKIE: u32 = 1 << 0;
}

/// The program's read-only configuration global (`FLOW_CONFIG`), frozen at load time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramConfig {
    /// Where to read each kernel member.
    pub offsets: KernelOffsets,
    /// [`features`] bits: what the running kernel lets the program do.
    pub features: u32,
    /// Explicit padding; always zero.
    pub _pad: u32,
    /// Wake the reader only once at least this many bytes are waiting in the ring
    /// buffer; below it records are submitted without a wakeup and the reader polls on
    /// a timer. 0 wakes the reader on every record.
    pub wakeup_bytes: u64,
}

const _: () = assert!(core::mem::size_of::<ProgramConfig>() == 22 * 4 + 4 + 4 + 8);

#[cfg(feature = "user")]
// SAFETY: plain-old-data: `#[repr(C)]`, integer fields only, explicit padding.
unsafe impl aya::Pod for ProgramConfig {}
