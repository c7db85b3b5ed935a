//! TCP states and address families as the kernel numbers them (`include/net/tcp_states.h`).

/// `TCP_ESTABLISHED`.
pub const TCP_ESTABLISHED: u8 = 1;
/// `TCP_SYN_SENT`: an active open (connect) is under way.
pub const TCP_SYN_SENT: u8 = 2;
/// `TCP_SYN_RECV`: a passive open; the child socket of a listener starts here.
pub const TCP_SYN_RECV: u8 = 3;
/// `TCP_FIN_WAIT1`.
pub const TCP_FIN_WAIT1: u8 = 4;
/// `TCP_FIN_WAIT2`.
pub const TCP_FIN_WAIT2: u8 = 5;
/// `TCP_TIME_WAIT`.
pub const TCP_TIME_WAIT: u8 = 6;
/// `TCP_CLOSE`: the socket is closed; this is where a flow record is emitted.
pub const TCP_CLOSE: u8 = 7;
/// `TCP_CLOSE_WAIT`: the peer's FIN was received first.
pub const TCP_CLOSE_WAIT: u8 = 8;
/// `TCP_LAST_ACK`.
pub const TCP_LAST_ACK: u8 = 9;
/// `TCP_LISTEN`: a listening socket; it never yields a flow record.
pub const TCP_LISTEN: u8 = 10;
/// `TCP_CLOSING`: simultaneous close.
pub const TCP_CLOSING: u8 = 11;
/// `TCP_NEW_SYN_RECV`: a request socket (never a full socket in this tracepoint).
pub const TCP_NEW_SYN_RECV: u8 = 12;

/// `AF_INET`.
pub const AF_INET: u16 = 2;
/// `AF_INET6`.
pub const AF_INET6: u16 = 10;
/// `IPPROTO_TCP`.
pub const IPPROTO_TCP: u16 = 6;

/// `SOCK_STREAM`: the socket type of a TCP socket.
pub const SOCK_STREAM: u16 = 1;
