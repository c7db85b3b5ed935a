//! The reference collector against hostile peers, over real loopback sockets: idle
//! connections, more connections than the cap, slow headers and bodies, a process out
//! of file descriptors (a real RLIMIT_NOFILE, in a child process), and a frame with
//! valid checksums whose record cannot be stored.

mod common;

use std::{
    io::{BufRead, BufReader, ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::*;
use flow_batch::{
    Chunk,
    wire::{ChunkEncoder, InstanceId},
};
use flow_collector::{CollectorOptions, FlowCollector};
use flow_sink::{CHUNK_CONTENT_TYPE, CHUNKS_PATH};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn options(out: &Path) -> CollectorOptions {
    CollectorOptions::new("127.0.0.1:0".parse().expect("addr"), out)
        .with_hold_back(std::time::Duration::ZERO)
        .with_sync(false)
}

fn frame(chunk: &Chunk) -> Vec<u8> {
    ChunkEncoder::new(HOST, InstanceId::new(7))
        .expect("encoder")
        .encode_to_vec(chunk)
        .expect("encode")
}

/// POSTs `body` to the chunk path on a fresh connection; the status and the body.
fn post(addr: SocketAddr, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(
        s,
        "POST {CHUNKS_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: {CHUNK_CONTENT_TYPE}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("headers");
    s.write_all(body).expect("body");
    read_answer(&mut s)
}

fn read_answer(s: &mut TcpStream) -> (u16, String) {
    let mut text = String::new();
    s.read_to_string(&mut text).expect("answer");
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

/// True once the peer closed `s` (end of stream or reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut byte = [0u8; 1];
    match s.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

fn connect_many(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect()
}

#[test]
fn idle_connections_are_closed_after_the_timeout_and_a_fresh_chunk_is_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("flows.jsonl");
    let rt = runtime();
    let collector = rt
        .block_on(FlowCollector::start(
            options(&out)
                .with_header_read_timeout(Duration::from_secs(1))
                .with_idle_timeout(Duration::from_secs(1)),
        ))
        .expect("collector");
    let addr = collector.local_addr();
    let started = Instant::now();
    let mut idle = connect_many(addr, 200);
    std::thread::sleep(Duration::from_millis(1500));
    for (i, s) in idle.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(3)),
            "idle connection {i} still open after {:?}",
            started.elapsed()
        );
    }
    let stats = collector.stats();
    assert_eq!(stats.connections_timed_out, 200, "{stats:?}");
    assert_eq!(stats.connections_open, 0, "{stats:?}");

    let (status, body) = post(addr, &frame(&chunk(0, 0, 3)));
    assert_eq!(status, 200, "{body}");
    assert_exactly_once(&out, 3);
    rt.block_on(collector.shutdown());
}

#[test]
fn connections_over_the_cap_are_closed_at_once_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("flows.jsonl");
    let rt = runtime();
    let collector = rt
        .block_on(FlowCollector::start(options(&out).with_max_connections(8)))
        .expect("collector");
    let addr = collector.local_addr();
    let mut held = connect_many(addr, 8);
    rt.block_on(eventually(
        Duration::from_secs(5),
        "8 connections open",
        || collector.stats().connections_open == 8,
    ));
    let mut extra = connect_many(addr, 20);
    for (i, s) in extra.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(2)),
            "connection {i} over the cap was kept"
        );
    }
    // The 8 within the cap are still served (30 s timeouts by default).
    for s in &mut held {
        assert!(!closed_within(s, Duration::from_millis(20)));
    }
    let stats = collector.stats();
    assert_eq!(stats.connections_refused, 20, "{stats:?}");
    assert_eq!(stats.connections_accepted, 8, "{stats:?}");

    drop(held);
    rt.block_on(eventually(
        Duration::from_secs(5),
        "held connections closed",
        || collector.stats().connections_open == 0,
    ));
    let (status, body) = post(addr, &frame(&chunk(0, 0, 2)));
    assert_eq!(status, 200, "{body}");
    rt.block_on(collector.shutdown());
}

#[test]
fn headers_trickled_byte_by_byte_are_cut_at_the_header_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("flows.jsonl");
    let rt = runtime();
    let collector = rt
        .block_on(FlowCollector::start(
            options(&out)
                .with_header_read_timeout(Duration::from_secs(1))
                .with_idle_timeout(Duration::from_secs(30)),
        ))
        .expect("collector");
    let mut s = TcpStream::connect(collector.local_addr()).expect("connect");
    let started = Instant::now();
    // One byte every 200 ms: never idle, never done.
    let header = format!("POST {CHUNKS_PATH} HTTP/1.1\r\nX-Slow: {}", "a".repeat(100));
    for byte in header.as_bytes() {
        if s.write_all(&[*byte]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        if started.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    assert!(
        closed_within(&mut s, Duration::from_millis(500)),
        "slow headers still read after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(collector.stats().connections_timed_out >= 1);
    rt.block_on(collector.shutdown());
}

#[test]
fn a_body_trickled_past_the_body_timeout_gets_408_and_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("flows.jsonl");
    let rt = runtime();
    let collector = rt
        .block_on(FlowCollector::start(
            options(&out)
                .with_body_read_timeout(Duration::from_secs(1))
                // Shorter than the body's trickle: a request being handled is not idle.
                .with_idle_timeout(Duration::from_millis(500)),
        ))
        .expect("collector");
    let body = frame(&chunk(0, 0, 3));
    let mut s = TcpStream::connect(collector.local_addr()).expect("connect");
    write!(
        s,
        "POST {CHUNKS_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: {CHUNK_CONTENT_TYPE}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("headers");
    let started = Instant::now();
    for byte in body.iter().take(8) {
        let _ = s.write_all(&[*byte]);
        std::thread::sleep(Duration::from_millis(300));
    }
    let (status, text) = read_answer(&mut s);
    assert_eq!(status, 408, "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let stats = collector.stats();
    assert_eq!(stats.body_timeouts, 1, "{stats:?}");
    assert_eq!(stats.chunks_accepted, 0, "{stats:?}");
    assert!(numbers_in(&out).is_empty());
    rt.block_on(collector.shutdown());
}

/// The environment variable that makes [`emfile_child`] run (in a child process).
const CHILD_ENV: &str = "FLOW_SINK_TEST_EMFILE_CHILD_OUT";

/// The child process, killed if the test ends early; its standard output, by line.
struct Child {
    process: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Child {
    /// The text after `prefix` on the next line holding it (the test harness may put
    /// its own words before it on the line), within 60 s.
    fn after(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("no {prefix:?} from the child: {e}"));
            if let Some(at) = line.find(prefix) {
                return line[at + prefix.len()..].trim().to_owned();
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

#[test]
fn out_of_file_descriptors_on_accept_the_collector_backs_off_and_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("flows.jsonl");
    // The collector runs in a child process (this test binary again, running only
    // `emfile_child`), whose RLIMIT_NOFILE is lowered: the limit is per process.
    let mut process = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "emfile_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, &out)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("child");
    let stdout = process.stdout.take().expect("stdout");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut child = Child { process, lines };
    let addr: SocketAddr = child.after("listening on ").parse().expect("addr");
    // Far more connections than the child has descriptors left; held open.
    let _idle = connect_many(addr, 60);
    std::thread::sleep(Duration::from_millis(500));
    // Served once idle connections time out (1 s) and give their descriptors back.
    let (status, body) = post(addr, &frame(&chunk(0, 0, 3)));
    assert_eq!(status, 200, "{body}");
    assert_exactly_once(&out, 3);

    drop(child.process.stdin.take()); // the child stops
    let stats = child.after("stats ");
    let status = child.process.wait().expect("child exit");
    assert!(status.success(), "{status}");
    let accept_errors: u64 = stats
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("accept_errors="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no accept_errors in {stats}"));
    assert!(accept_errors > 0, "the child never ran out: {stats}");
}

/// The collector of the test above, with few file descriptors; does nothing unless
/// run by it.
#[test]
fn emfile_child() {
    let Some(out) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let rt = runtime();
    let collector = rt
        .block_on(FlowCollector::start(
            options(Path::new(&out))
                .with_header_read_timeout(Duration::from_secs(1))
                .with_idle_timeout(Duration::from_secs(1)),
        ))
        .expect("collector");
    let open = std::fs::read_dir("/proc/self/fd").expect("fds").count() as u64;
    set_nofile(open + 12);
    // On a line of its own: the harness may have written "test emfile_child ... ".
    println!("\nlistening on {}", collector.local_addr());
    std::io::stdout().flush().expect("flush");
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    let s = collector.stats();
    println!(
        "stats accept_errors={} accepted={} timed_out={} chunks_accepted={}",
        s.accept_errors, s.connections_accepted, s.connections_timed_out, s.chunks_accepted
    );
    std::io::stdout().flush().expect("flush");
    rt.block_on(collector.shutdown());
}

/// Lowers this process's soft RLIMIT_NOFILE to `limit`.
fn set_nofile(limit: u64) {
    // setrlimit(2) from the C library std already links; flow-sink has no libc
    // dependency of its own. RLIMIT_NOFILE is 7 on Linux.
    #[repr(C)]
    struct Rlimit {
        cur: u64,
        max: u64,
    }
    unsafe extern "C" {
        fn getrlimit(resource: i32, rlim: *mut Rlimit) -> i32;
        fn setrlimit(resource: i32, rlim: *const Rlimit) -> i32;
    }
    const RLIMIT_NOFILE: i32 = 7;
    let mut current = Rlimit { cur: 0, max: 0 };
    // SAFETY: both calls get a valid pointer to an rlimit of the C layout.
    let ok = unsafe {
        getrlimit(RLIMIT_NOFILE, &mut current) == 0 && {
            let lowered = Rlimit {
                cur: limit,
                max: current.max,
            };
            setrlimit(RLIMIT_NOFILE, &lowered) == 0
        }
    };
    assert!(ok, "setrlimit: {}", std::io::Error::last_os_error());
}
