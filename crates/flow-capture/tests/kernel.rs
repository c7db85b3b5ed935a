//! The real kernel program against real sockets: every test loads the tracer, makes
//! TCP connections and checks the records that come out, field by field.
//!
//! Needs root (or CAP_BPF + CAP_PERFMON) and a kernel with BTF, like the exporter.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::{RwLock, RwLockReadGuard},
    thread,
    time::{Duration, SystemTime},
};

use flow_capture::{CloseReason, Direction, FlowRecord};
use flow_testkit::{Capture, VethPair, assert_times_within, by_local, involves};

const WAIT: Duration = Duration::from_secs(10);

/// Every loaded capture sees every test's sockets: the churn test's 20,000 records
/// would flood the ring of a capture loaded beside it (its records dropped, its test
/// timed out). The churn runs alone; the others share.
static CHURN: RwLock<()> = RwLock::new(());

/// Held by a test that may run beside the others.
fn beside_others() -> RwLockReadGuard<'static, ()> {
    CHURN.read().unwrap_or_else(|p| p.into_inner())
}

/// Client sends `up` bytes, server answers `down` bytes, client closes first.
fn exchange(client: &mut TcpStream, server: &mut TcpStream, up: usize, down: usize) {
    let payload_up = vec![0xA5u8; up];
    let mut got = vec![0u8; up];
    thread::scope(|s| {
        s.spawn(|| client.write_all(&payload_up).expect("client write"));
        server.read_exact(&mut got).expect("server read");
    });
    let payload_down = vec![0x5Au8; down];
    let mut got = vec![0u8; down];
    server.write_all(&payload_down).expect("server write");
    client.read_exact(&mut got).expect("client read");
    client.shutdown(Shutdown::Write).expect("client shutdown");
    let mut rest = Vec::new();
    server.read_to_end(&mut rest).expect("server reads EOF");
    assert!(rest.is_empty());
}

/// Runs one exchange over `listen` and checks both ends' records.
fn check_exchange(cap: &mut Capture, listener: TcpListener, connect_to: SocketAddr) {
    let (up, down) = (123_457, 65_432);
    let port = listener.local_addr().expect("addr").port();
    let mut client = TcpStream::connect(connect_to).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let client_addr = canonical(client.local_addr().expect("a"));
    let server_addr = canonical(server.local_addr().expect("b"));
    exchange(&mut client, &mut server, up, down);
    drop(client);
    drop(server);
    drop(listener);
    let records = cap.collect(2, WAIT, involves(port));
    let after = SystemTime::now();
    assert_eq!(
        records.len(),
        2,
        "exactly one record per end, none for the listener: {records:#?}"
    );
    check_pair(
        &records,
        client_addr,
        server_addr,
        up as u64,
        down as u64,
        cap.started,
        after,
    );
}

fn check_pair(
    records: &[FlowRecord],
    client_addr: SocketAddr,
    server_addr: SocketAddr,
    up: u64,
    down: u64,
    from: SystemTime,
    to: SystemTime,
) {
    let c = by_local(records, client_addr);
    let s = by_local(records, server_addr);
    assert_eq!(c.remote, server_addr);
    assert_eq!(s.remote, client_addr);
    assert_eq!(c.direction, Direction::Outbound);
    assert_eq!(s.direction, Direction::Inbound);
    assert_eq!(
        (c.stats.bytes_sent, c.stats.bytes_received),
        (up, down),
        "client: {c:#?}"
    );
    assert_eq!(
        (s.stats.bytes_sent, s.stats.bytes_received),
        (down, up),
        "server: {s:#?}"
    );
    for r in [c, s] {
        assert_eq!(r.close_reason, CloseReason::Normal, "{r:#?}");
        assert!(!r.incomplete, "{r:#?}");
        assert!(r.stats.segs_in > 0 && r.stats.segs_out > 0, "{r:#?}");
        assert!(r.stats.srtt_us > 0, "an RTT sample was taken: {r:#?}");
        assert_times_within(r, from, to);
    }
    // The client closed first: it leaves via FIN_WAIT2, the server via LAST_ACK.
    assert_eq!(c.close_state.as_str(), "FIN_WAIT2");
    assert_eq!(s.close_state.as_str(), "LAST_ACK");
    // The server's socket was opened by the client's connect, so it started later.
    assert!(s.t_start >= c.t_start);
}

#[test]
fn loopback_ipv4_both_ends_exact_bytes() {
    let _shared = beside_others();
    let mut cap = Capture::load();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    check_exchange(&mut cap, listener, addr);
}

#[test]
fn loopback_ipv6_both_ends_exact_bytes() {
    let _shared = beside_others();
    let mut cap = Capture::load();
    let listener = TcpListener::bind("[::1]:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    check_exchange(&mut cap, listener, addr);
}

#[test]
fn ipv4_mapped_ipv6_is_reported_as_ipv4() {
    let _shared = beside_others();
    let mut cap = Capture::load();
    let listener = TcpListener::bind("[::]:0").expect("bind dual-stack");
    let port = listener.local_addr().expect("addr").port();
    check_exchange(&mut cap, listener, SocketAddr::from(([127, 0, 0, 1], port)));
}

#[test]
fn across_a_veth_pair_between_namespaces() {
    let _shared = beside_others();
    let mut cap = Capture::load();
    let net = VethPair::new();
    for (server_ip, family) in [(VethPair::B4, "ipv4"), (VethPair::B6, "ipv6")] {
        let bind: SocketAddr = SocketAddr::new(server_ip.parse().expect("ip"), 0);
        let listener = net
            .b
            .spawn(move || TcpListener::bind(bind).expect("bind in b"))
            .join()
            .expect("b");
        let server_addr = listener.local_addr().expect("addr");
        let server = thread::spawn(move || {
            let (mut s, peer) = listener.accept().expect("accept");
            let mut got = vec![0u8; 200_000];
            s.read_exact(&mut got).expect("server read");
            s.write_all(&[7u8; 3_000]).expect("server write");
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).expect("eof");
            peer
        });
        let client_addr = net
            .a
            .spawn(move || {
                let mut c = TcpStream::connect(server_addr).expect("connect from a");
                c.write_all(&[1u8; 200_000]).expect("client write");
                let mut got = vec![0u8; 3_000];
                c.read_exact(&mut got).expect("client read");
                let local = c.local_addr().expect("local");
                drop(c);
                local
            })
            .join()
            .expect("a");
        assert_eq!(server.join().expect("server"), client_addr);
        let records = cap.collect(2, WAIT, involves(server_addr.port()));
        let records: Vec<_> = records
            .into_iter()
            .filter(|r| r.local == client_addr || r.local == server_addr)
            .collect();
        assert_eq!(records.len(), 2, "{family}: {records:#?}");
        check_pair(
            &records,
            client_addr,
            server_addr,
            200_000,
            3_000,
            cap.started,
            SystemTime::now(),
        );
    }
}

#[test]
fn refused_connect_says_so() {
    let _shared = beside_others();
    let mut cap = Capture::load();
    // A port nobody listens on: bind a listener to learn a free port, then close it.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("a")
        .port();
    let err = TcpStream::connect(("127.0.0.1", port)).expect_err("nothing listens");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    let records = cap.collect(1, WAIT, |r| r.remote.port() == port);
    assert_eq!(records.len(), 1, "{records:#?}");
    let r = &records[0];
    assert_eq!(r.close_reason, CloseReason::Refused);
    assert!(r.close_reason.is_connect_failure());
    assert_eq!(r.close_state.as_str(), "SYN_SENT");
    assert_eq!(r.direction, Direction::Outbound);
    assert_eq!((r.stats.bytes_sent, r.stats.bytes_received), (0, 0));
    assert_eq!(r.remote, SocketAddr::from(([127, 0, 0, 1], port)));
    assert_ne!(r.local.port(), 0, "the local port is known at close");
    assert_times_within(r, cap.started, SystemTime::now());
}

#[test]
fn timed_out_connect_says_so() {
    let _shared = beside_others();
    let mut cap = Capture::load();
    let net = VethPair::new();
    // An address with a neighbour entry but no host: SYNs leave and nothing answers.
    let dev = format!("fva{}", net_suffix(&net));
    net.a.exec(&[
        "ip",
        "neigh",
        "add",
        "10.77.0.99",
        "lladdr",
        "02:00:00:00:00:99",
        "dev",
        &dev,
        "nud",
        "permanent",
    ]);
    net.a
        .spawn(|| connect_with_syncnt("10.77.0.99:9", 1))
        .join()
        .expect("a");
    let remote: SocketAddr = "10.77.0.99:9".parse().expect("addr");
    let records = cap.collect(1, Duration::from_secs(20), |r| r.remote == remote);
    let r = &records[0];
    assert_eq!(r.close_reason, CloseReason::ConnectTimedOut, "{r:#?}");
    assert_eq!(r.close_state.as_str(), "SYN_SENT");
    assert!(
        r.stats.retransmits >= 1,
        "the SYN was retransmitted: {r:#?}"
    );
}

/// The veth device suffix of a pair (its devices are `fva<id>`/`fvb<id>`).
fn net_suffix(net: &VethPair) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &net.a.name, "ip", "-o", "link", "show"])
        .output()
        .expect("ip link");
    let text = String::from_utf8_lossy(&out.stdout);
    let name = text
        .split_whitespace()
        .find(|w| w.starts_with("fva"))
        .expect("veth device in a");
    name.trim_start_matches("fva")
        .split('@')
        .next()
        .expect("id")
        .trim_end_matches(':')
        .to_string()
}

/// Connects with `TCP_SYNCNT` = `syncnt`, so that a lost SYN times out in seconds.
fn connect_with_syncnt(to: &str, syncnt: i32) {
    let to: SocketAddr = to.parse().expect("addr");
    // SAFETY: plain socket calls on a fresh fd owned by this function.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let v = syncnt;
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_SYNCNT,
            (&v as *const i32).cast(),
            4,
        );
        let SocketAddr::V4(v4) = to else {
            panic!("ipv4 only")
        };
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(v4.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        );
        assert_eq!(rc, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ETIMEDOUT)
        );
        libc::close(fd);
    }
}

#[test]
fn reset_and_local_abort_are_told_apart() {
    let _shared = beside_others();
    let mut cap = Capture::load();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    client.write_all(b"hello").expect("write");
    let mut got = [0u8; 5];
    server.read_exact(&mut got).expect("read");
    let (client_addr, server_addr) = (
        client.local_addr().expect("a"),
        server.local_addr().expect("b"),
    );
    // SO_LINGER 0: close sends RST instead of FIN.
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid fd and option value.
    let rc = unsafe {
        libc::setsockopt(
            client.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as u32,
        )
    };
    assert_eq!(rc, 0);
    drop(client);
    // The RST closes the server's socket at once, before the application notices.
    let records = cap.collect(2, WAIT, involves(port));
    assert_eq!(records.len(), 2, "{records:#?}");
    let c = by_local(&records, client_addr);
    assert_eq!(c.close_reason, CloseReason::Aborted, "{c:#?}");
    assert_eq!(c.stats.bytes_sent, 5);
    let s = by_local(&records, server_addr);
    assert_eq!(s.close_reason, CloseReason::Reset, "{s:#?}");
    assert_eq!(s.stats.bytes_received, 5);
    assert_eq!(s.remote, client_addr);
    let err = server.read(&mut got).expect_err("reset");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
}

#[test]
fn socket_opened_before_attach_is_flagged_not_dropped() {
    let _shared = beside_others();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    let (client_addr, server_addr) = (
        client.local_addr().expect("a"),
        server.local_addr().expect("b"),
    );
    let mut cap = Capture::load();
    exchange(&mut client, &mut server, 1_000, 2_000);
    drop(client);
    drop(server);
    let records = cap.collect(2, WAIT, involves(server_addr.port()));
    assert_eq!(records.len(), 2, "{records:#?}");
    for (local, remote) in [(client_addr, server_addr), (server_addr, client_addr)] {
        let r = by_local(&records, local);
        assert_eq!(r.remote, remote);
        assert_eq!(r.t_start, None, "start unknown: {r:#?}");
        assert_eq!(r.direction, Direction::Unknown);
        assert!(r.t_end >= cap.started);
        assert_eq!(r.close_reason, CloseReason::Normal);
    }
    let c = by_local(&records, client_addr);
    let s = by_local(&records, server_addr);
    assert_eq!(c.stats.bytes_received, 2_000);
    assert_eq!(s.stats.bytes_received, 1_000);
}

#[test]
fn churn_10000_connections_yield_20000_records_none_lost() {
    let _alone = CHURN.write().unwrap_or_else(|p| p.into_inner());
    const N: usize = 10_000;
    let mut cap = Capture::load();
    let before = cap.capture.counters().expect("counters");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let churn = thread::spawn(move || {
        for _ in 0..N {
            let client = TcpStream::connect(addr).expect("connect");
            let (server, _) = listener.accept().expect("accept");
            drop(client);
            drop(server);
        }
    });
    let mode = std::env::var("CHURN_MODE").unwrap_or_default();
    let _ = mode;
    let records = cap.collect(2 * N, Duration::from_secs(120), involves(addr.port()));
    churn.join().expect("churn");
    assert_eq!(records.len(), 2 * N);
    let outbound = records
        .iter()
        .filter(|r| r.direction == Direction::Outbound)
        .count();
    assert_eq!(outbound, N);
    assert!(
        records
            .iter()
            .all(|r| r.close_reason == CloseReason::Normal && !r.incomplete)
    );
    let after = cap.capture.counters().expect("counters");
    assert_eq!(
        after.lost_ring_full, before.lost_ring_full,
        "records lost in the kernel"
    );
    assert_eq!(cap.reader.counters().malformed, 0);
}

#[test]
fn bad_configuration_gives_typed_errors() {
    let _shared = beside_others();
    use flow_capture::{CaptureError, FlowCaptureBuilder};
    let err = FlowCaptureBuilder::new()
        .ring_size(12_345)
        .load()
        .err()
        .expect("odd ring size");
    assert!(
        matches!(err, CaptureError::InvalidRingSize { size: 12_345, .. }),
        "{err}"
    );
    let Err(err) = FlowCaptureBuilder::new()
        .btf_path("/nonexistent/btf")
        .load()
    else {
        panic!("a missing BTF file must fail");
    };
    assert!(matches!(err, CaptureError::NoBtf { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/btf"), "{err}");
}
