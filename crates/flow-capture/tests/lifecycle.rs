//! Interim records, flow IDs, the connecting process and per-window close counts,
//! from the real kernel program and real sockets.
//!
//! Needs root (or CAP_BPF + CAP_PERFMON) and a kernel with BTF, like the exporter.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use flow_capture::{Direction, FlowCaptureBuilder, FlowRecord, RecordKind, window_index};
use flow_testkit::{Capture, involves};

const WAIT: Duration = Duration::from_secs(10);

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// Sends `n` bytes from `from` and reads them at `to`.
fn send(from: &mut TcpStream, to: &mut TcpStream, n: usize) {
    from.write_all(&vec![7u8; n]).expect("write");
    let mut got = vec![0u8; n];
    to.read_exact(&mut got).expect("read");
}

/// The interim records of the connection whose local end is `local` (and remote end
/// `remote`: other tests' sockets may reuse the local port towards another peer).
fn interim_of(records: &[FlowRecord], local: SocketAddr, remote: SocketAddr) -> Vec<&FlowRecord> {
    records
        .iter()
        .filter(|r| r.local == local && r.remote == remote && r.record_kind == RecordKind::Interim)
        .collect()
}

#[test]
fn an_open_connection_is_snapshotted_and_its_close_shares_the_flow_id() {
    let mut cap = Capture::load();
    let scanner = cap.capture.open_socket_scanner().expect("iterator loads");
    for bind in ["127.0.0.1:0", "[::1]:0"] {
        let listener = TcpListener::bind(bind).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        let client_addr = canonical(client.local_addr().expect("a"));
        let server_addr = canonical(server.local_addr().expect("b"));

        send(&mut client, &mut server, 1000);
        send(&mut server, &mut client, 300);
        // `bytes_sent` counts what the peer acknowledged: its (delayed) ACK may still
        // be on the way; snapshot until both ends have theirs.
        let deadline = std::time::Instant::now() + WAIT;
        let (c1, s1) = loop {
            let first = scanner.snapshot().expect("snapshot");
            let c1 = interim_of(&first.records, client_addr, server_addr);
            let s1 = interim_of(&first.records, server_addr, client_addr);
            assert_eq!((c1.len(), s1.len()), (1, 1), "{:#?}", first.records);
            let (c1, s1) = (c1[0].clone(), s1[0].clone());
            let acked = c1.stats.bytes_sent == 1000 && s1.stats.bytes_sent == 300;
            if acked || std::time::Instant::now() > deadline {
                break (c1, s1);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(c1.stats.bytes_sent, 1000, "{c1:#?}");
        assert_eq!(c1.stats.bytes_received, 300, "{c1:#?}");
        assert_eq!(s1.stats.bytes_sent, 300, "{s1:#?}");
        assert_eq!(c1.close_state.as_str(), "ESTABLISHED");
        assert_eq!(c1.direction, Direction::Outbound);
        assert_eq!(s1.direction, Direction::Inbound);
        assert!(c1.t_start.is_some());
        let process = c1.process.expect("an outbound socket names its process");
        assert_eq!(process.pid, std::process::id());
        assert!(s1.process.is_none(), "inbound: no process");
        assert_ne!(c1.flow_id, s1.flow_id);

        send(&mut client, &mut server, 2000);
        // `bytes_sent` counts what the peer acknowledged: its (delayed) ACK may
        // still be on the way.
        let deadline = std::time::Instant::now() + WAIT;
        let c2 = loop {
            let second = scanner.snapshot().expect("snapshot");
            let c2 = interim_of(&second.records, client_addr, server_addr)[0].clone();
            if c2.stats.bytes_sent == 3000 || std::time::Instant::now() > deadline {
                break c2;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(c2.flow_id, c1.flow_id, "stable across snapshots");
        assert_eq!(c2.stats.bytes_sent, 3000, "cumulative: {c2:#?}");
        assert!(c2.t_end > c1.t_end);

        client.shutdown(Shutdown::Write).expect("shutdown");
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).expect("eof");
        drop(client);
        drop(server);
        drop(listener);
        let finals = cap.collect(2, WAIT, involves(port));
        let client_final = finals
            .iter()
            .find(|r| r.local == client_addr)
            .expect("client final");
        assert_eq!(client_final.record_kind, RecordKind::Final);
        assert_eq!(client_final.flow_id, c1.flow_id);
        assert_eq!(client_final.stats.bytes_sent, 3000);
        assert_eq!(client_final.stats.bytes_received, 300);
        assert_eq!(client_final.process, c1.process);
        let server_final = finals
            .iter()
            .find(|r| r.local == server_addr)
            .expect("server final");
        assert_eq!(server_final.flow_id, s1.flow_id);
    }
}

#[test]
fn a_socket_opened_before_the_capture_is_snapshotted_with_an_unknown_start() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    send(&mut client, &mut server, 500);
    let client_addr = client.local_addr().expect("a");
    let server_addr = server.local_addr().expect("b");

    let mut cap = Capture::load();
    let snap = cap
        .capture
        .open_socket_scanner()
        .expect("iterator")
        .snapshot()
        .expect("snapshot");
    let found = interim_of(&snap.records, client_addr, server_addr);
    assert_eq!(found.len(), 1, "{:#?}", snap.records);
    let interim = found[0].clone();
    assert!(interim.t_start.is_none());
    assert_eq!(interim.direction, Direction::Unknown);
    assert!(interim.process.is_none());
    assert_eq!(interim.stats.bytes_sent, 500);

    drop(client);
    drop(server);
    drop(listener);
    let finals = cap.collect(2, WAIT, involves(port));
    let client_final = finals
        .iter()
        .find(|r| r.local == client_addr)
        .expect("final");
    assert_eq!(client_final.flow_id, interim.flow_id);
}

#[test]
fn closes_are_counted_per_window_and_add_up_even_when_the_ring_overflows() {
    let window = Duration::from_secs(3600);
    // The smallest ring (one page): a burst of closes overflows it.
    let mut cap = Capture::load_with(
        FlowCaptureBuilder::new()
            .ring_size(4096)
            .wakeup_threshold(u64::MAX)
            .poll_interval(Duration::from_secs(3600))
            .window_counts(window),
    );
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let index_now = || {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after epoch")
            .as_millis() as u64;
        window_index(ms - ms % 3_600_000, window)
    };
    // Other tests close sockets meanwhile: compare the window's own numbers, which
    // add up whatever else happens. A burst that straddles an hour is done again.
    let index = loop {
        let before = index_now();
        for _ in 0..200 {
            let c = TcpStream::connect(addr).expect("connect");
            let (s, _) = listener.accept().expect("accept");
            drop(c);
            drop(s);
        }
        if index_now() == before {
            break before;
        }
    };
    std::thread::sleep(Duration::from_millis(200));
    // The kernel's counts first, then the ring: what the reader counts can only be
    // more than what the kernel had submitted when its counts were read. A count
    // read while another CPU is between a close and its outcome is read again.
    let mut kernel = None;
    for _ in 0..100 {
        let k = cap
            .capture
            .window_counts(index)
            .expect("counting")
            .expect("readable");
        if k.closes == k.submitted + k.ring_full {
            kernel = Some(k);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let kernel = kernel.expect("the window's counts add up");
    cap.reader.read_available(|_| {});
    assert!(kernel.ring_full > 0, "the ring overflowed: {kernel:?}");
    assert!(kernel.closes >= 400, "{kernel:?}");
    assert!(
        cap.reader.records_in_window(index) >= kernel.submitted,
        "every record the kernel submitted was read and counted in its window: {} < {kernel:?}",
        cap.reader.records_in_window(index)
    );
}

#[test]
fn an_outbound_connection_names_the_process_that_made_it() {
    let mut cap = Capture::load();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // bash connects itself (its /dev/tcp), writes a line and closes.
    let mut child = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "exec 3<>/dev/tcp/127.0.0.1/{port}; echo hello >&3; exec 3>&-"
        ))
        .spawn()
        .expect("bash");
    let pid = child.id();
    let (mut server, _) = listener.accept().expect("accept");
    let mut got = String::new();
    server.read_to_string(&mut got).expect("read");
    assert_eq!(got, "hello\n");
    assert!(child.wait().expect("bash exits").success());
    drop(server);
    let records = cap.collect(2, WAIT, involves(port));
    let outbound = records
        .iter()
        .find(|r| r.direction == Direction::Outbound)
        .expect("the client's record");
    let process = outbound.process.expect("a process");
    assert_eq!(process.pid, pid, "{outbound:#?}");
    assert_eq!(process.comm(), "bash");
    assert_ne!(process.cgroup_id, 0);
    let inbound = records
        .iter()
        .find(|r| r.direction == Direction::Inbound)
        .expect("the server's record");
    assert!(inbound.process.is_none(), "{inbound:#?}");
}
