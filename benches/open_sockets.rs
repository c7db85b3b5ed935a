//! What a snapshot of the open TCP connections costs (interim records), by how many
//! are open, next to the alternatives it was chosen over, in one run:
//!
//! - the open-socket iterator (`iter/task_file`, what the exporter uses): one kernel
//!   pass over every process's files, an interim record per open TCP socket, decoded;
//! - `ss -tinH` (sock_diag with `INET_DIAG_INFO`: a `tcp_info` per socket through
//!   netlink, formatted as text by `ss`), for this network namespace only, less the
//!   time `ss -V` takes (the process's start and exit);
//! - reading `/proc/net/tcp` and `/proc/net/tcp6` (the socket table as text, no byte
//!   counters), this network namespace only.
//!
//! Connections are held by child processes (this binary again), each owning both ends
//! of up to 9,000 loopback connections, so that 100,000 connections (200,000 sockets)
//! fit under a per-process file limit of 20,000.
//!
//! Run as root: `cargo bench --bench open_sockets`
//! Knobs: `FLOW_BENCH_OPEN` (comma-separated connection counts, default
//! `1000,10000,100000`), `FLOW_BENCH_SNAPSHOTS` per count (default 5).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::Instant,
};

use flowexporter::capture::FlowCaptureBuilder;

/// Connections one child process holds at most (two sockets each).
const PER_CHILD: usize = 9_000;
const CHILD_ENV: &str = "FLOW_BENCH_HOLD";

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        hold(&spec);
        return;
    }
    let counts: Vec<usize> = std::env::var("FLOW_BENCH_OPEN")
        .unwrap_or_else(|_| "1000,10000,100000".into())
        .split(',')
        .map(|n| n.trim().parse().expect("a count"))
        .collect();
    let snapshots: usize = std::env::var("FLOW_BENCH_SNAPSHOTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    flow_testkit::mount_kernel_filesystems();
    let capture = FlowCaptureBuilder::new().load().expect("load the capture");
    let scanner = capture.open_socket_scanner().expect("the iterator loads");
    println!(
        "{:>9} {:>9} | {:>12} {:>10} | {:>10} {:>10} | {:>12} {:>10} | {:>12} {:>10}",
        "open",
        "sockets",
        "snapshot ms",
        "ns/socket",
        "kernel ms",
        "ns/socket",
        "ss -ti ms",
        "ns/socket",
        "/proc ms",
        "ns/socket"
    );
    for &n in &counts {
        let children = spawn_holders(n);
        let mut iter_ms = Vec::new();
        let mut kernel_ms = Vec::new();
        let mut sockets = 0;
        for _ in 0..snapshots {
            let snap = scanner.snapshot().expect("snapshot");
            sockets = snap.records.len();
            iter_ms.push(snap.elapsed.as_secs_f64() * 1e3);
            // The kernel's pass and the copy out alone, without decoding.
            let t = Instant::now();
            scanner.scan_raw(|_| {}).expect("scan");
            kernel_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        // `ss` is a process of its own: its start and exit (`ss -V`) are taken out.
        let ss_start = median((0..snapshots).map(|_| time_ms(ss_version)).collect());
        let ss_ms: Vec<f64> = (0..snapshots)
            .map(|_| (time_ms(ss) - ss_start).max(0.0))
            .collect();
        let proc_ms: Vec<f64> = (0..snapshots).map(|_| time_ms(proc_net_tcp)).collect();
        let (i, k, s, p) = (
            median(iter_ms),
            median(kernel_ms),
            median(ss_ms),
            median(proc_ms),
        );
        let per = |ms: f64| ms * 1e6 / sockets.max(1) as f64;
        println!(
            "{n:>9} {sockets:>9} | {i:>12.2} {:>10.0} | {k:>10.2} {:>10.0} | {s:>12.2} {:>10.0} | {p:>12.2} {:>10.0}",
            per(i),
            per(k),
            per(s),
            per(p)
        );
        for mut child in children {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time_ms(f: fn()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1e3
}

/// sock_diag with `tcp_info`, as `ss` does it.
fn ss() {
    let out = Command::new("ss")
        .args(["-tinH"])
        .stdout(Stdio::piped())
        .output()
        .expect("ss (iproute2)");
    assert!(out.status.success());
}

/// `ss` starting and exiting without a dump.
fn ss_version() {
    let out = Command::new("ss")
        .arg("-V")
        .stdout(Stdio::piped())
        .output()
        .expect("ss (iproute2)");
    assert!(out.status.success());
}

fn proc_net_tcp() {
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .expect("read /proc/net/tcp");
    }
}

/// Starts child processes holding `n` connections in all; returns once all are up.
fn spawn_holders(n: usize) -> Vec<Child> {
    let exe = std::env::current_exe().expect("this binary");
    let mut children = Vec::new();
    let mut left = n;
    let mut k = 0u8;
    while left > 0 {
        let here = left.min(PER_CHILD);
        // A loopback address per child: its connections have their own 4-tuples.
        let ip = Ipv4Addr::new(127, 0, 1, k + 1);
        let mut child = Command::new(&exe)
            .env(CHILD_ENV, format!("{ip},{here}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a holder");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("the holder's answer");
        assert!(line.starts_with("ready"), "holder: {line:?}");
        children.push(child);
        left -= here;
        k += 1;
    }
    children
}

/// The child: listens on `ip`, opens `n` connections to itself, says `ready`, and
/// holds them until its stdin closes.
fn hold(spec: &str) {
    let (ip, n) = spec.split_once(',').expect("ip,n");
    let n: usize = n.parse().expect("n");
    let listener = TcpListener::bind(SocketAddr::new(ip.parse().expect("ip"), 0)).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut held = Vec::with_capacity(2 * n);
    for _ in 0..n {
        held.push(TcpStream::connect(addr).expect("connect"));
        held.push(listener.accept().expect("accept").0);
    }
    println!("ready");
    std::io::stdout().flush().expect("flush");
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
}
