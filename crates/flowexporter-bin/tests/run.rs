//! `flowexporter run` end to end with real processes: the exporter binary, the
//! reference collector on loopback, real TCP connections. Every record must arrive
//! exactly once through outages, failures, SIGTERM and `kill -9`.

use std::{
    collections::HashMap,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use flow_sink::collector::{CollectorOptions, FaultInjection, FlowCollector};

const BIN: &str = env!("CARGO_BIN_EXE_flowexporter");

/// A scratch directory for one test (spool, journal, collector output).
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("fe-run-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn start_collector(
    rt: &tokio::runtime::Runtime,
    port: u16,
    out: &Path,
    faults: FaultInjection,
) -> FlowCollector {
    let mut options = CollectorOptions::new(([127, 0, 0, 1], port).into(), out);
    options.faults = faults;
    rt.block_on(FlowCollector::start(options))
        .expect("collector")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Starts the exporter; returns once it has attached.
fn start_exporter(collector_port: u16, scratch: &Scratch, window: &str) -> Child {
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--collector",
            &format!("http://127.0.0.1:{collector_port}"),
        ])
        .args([
            "--window",
            window,
            "--retry-max-backoff",
            "1s",
            "--host-id",
            "test-host",
        ])
        .arg("--spool-dir")
        .arg(scratch.path("spool"))
        .arg("--journal-dir")
        .arg(scratch.path("journal"))
        .arg("--pin-dir")
        .arg(format!("/sys/fs/bpf/fe-run-{}", std::process::id()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start exporter");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            eprintln!("exporter: {line}");
            if line.contains("tracing TCP closes") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("exporter attached");
    child
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

fn stop(mut child: Child) {
    signal(&child, libc::SIGTERM);
    let status = child.wait().expect("wait");
    assert!(status.success(), "exporter exit status {status}");
}

/// Opens and closes `n` connections to a fresh listener; returns its port.
fn connections(n: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    for _ in 0..n {
        let c = TcpStream::connect(addr).expect("connect");
        let (s, _) = listener.accept().expect("accept");
        drop(c);
        drop(s);
    }
    addr.port()
}

/// The collector's records of connections to `port`, counted by identity
/// (local end, remote end, close time): each must be 1.
fn records_for(out: &Path, port: u16) -> HashMap<String, usize> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let mut seen = HashMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        if v["local_port"] == port || v["remote_port"] == port {
            let key = format!(
                "{}:{}>{}:{}@{}",
                v["local_ip"], v["local_port"], v["remote_ip"], v["remote_port"], v["t_end"]
            );
            *seen.entry(key).or_insert(0) += 1;
        }
    }
    seen
}

/// Waits until the collector has `want` distinct records for `port`.
fn wait_for(out: &Path, port: u16, want: usize, timeout: Duration) -> HashMap<String, usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = records_for(out, port);
        if seen.len() >= want || Instant::now() > deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn assert_exactly_once(seen: &HashMap<String, usize>, want: usize) {
    assert_eq!(seen.len(), want, "distinct records");
    let dup: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
    assert!(dup.is_empty(), "duplicated records: {dup:?}");
}

#[test]
fn sigterm_mid_window_delivers_every_record_exactly_once() {
    let scratch = Scratch::new("sigterm");
    let rt = runtime();
    let out = scratch.path("flows.jsonl");
    let collector_port = free_port();
    let collector = start_collector(&rt, collector_port, &out, FaultInjection::default());
    // A 60 s window: nothing would be sent for a minute without the early close.
    let exporter = start_exporter(collector_port, &scratch, "60s");
    let port = connections(100);
    std::thread::sleep(Duration::from_millis(500)); // captured and read (50 ms poll)
    stop(exporter);
    assert_exactly_once(&records_for(&out, port), 200);
    let stats = collector.stats();
    assert!(stats.chunks_accepted >= 1, "{stats:?}");
    rt.block_on(collector.shutdown());
}

#[test]
fn collector_down_at_start_then_up_loses_and_duplicates_nothing() {
    let scratch = Scratch::new("down");
    let rt = runtime();
    let out = scratch.path("flows.jsonl");
    let collector_port = free_port(); // nothing listens there yet
    let exporter = start_exporter(collector_port, &scratch, "2s");
    let first = connections(50);
    std::thread::sleep(Duration::from_secs(5)); // windows close, sends fail, chunks spool
    assert!(
        std::fs::read_dir(scratch.path("spool"))
            .expect("spool dir")
            .count()
            > 0
    );
    let collector = start_collector(&rt, collector_port, &out, FaultInjection::default());
    let second = connections(50);
    let seen_first = wait_for(&out, first, 100, Duration::from_secs(30));
    let seen_second = wait_for(&out, second, 100, Duration::from_secs(30));
    stop(exporter);
    assert_exactly_once(&seen_first, 100);
    assert_exactly_once(&seen_second, 100);
    assert_exactly_once(&records_for(&out, first), 100);
    rt.block_on(collector.shutdown());
}

#[test]
fn intermittent_503s_and_a_slow_collector_lose_nothing() {
    let scratch = Scratch::new("flaky");
    let rt = runtime();
    let out = scratch.path("flows.jsonl");
    let collector_port = free_port();
    let faults = FaultInjection::default()
        .with_fail_every(2)
        .with_fail_status(503)
        .with_lose_ack_every(3)
        .with_delay(Duration::from_millis(300));
    let collector = start_collector(&rt, collector_port, &out, faults);
    let exporter = start_exporter(collector_port, &scratch, "1s");
    let mut ports = Vec::new();
    for _ in 0..4 {
        ports.push(connections(25));
        std::thread::sleep(Duration::from_millis(700));
    }
    for port in &ports {
        assert_exactly_once(&wait_for(&out, *port, 50, Duration::from_secs(30)), 50);
    }
    stop(exporter);
    for port in &ports {
        assert_exactly_once(&records_for(&out, *port), 50);
    }
    let stats = collector.stats();
    assert!(
        stats.chunks_duplicate > 0,
        "lost acknowledgements were retried and dropped: {stats:?}"
    );
    rt.block_on(collector.shutdown());
}

#[test]
fn kill_9_during_an_outage_then_restart_loses_nothing() {
    let scratch = Scratch::new("kill9");
    let rt = runtime();
    let out = scratch.path("flows.jsonl");
    let collector_port = free_port();
    let exporter = start_exporter(collector_port, &scratch, "2s");
    let before = connections(60);
    // Past the journal's 1 s sync, and past a window close (so chunks were spooled).
    std::thread::sleep(Duration::from_millis(3500));
    signal(&exporter, libc::SIGKILL);
    let mut exporter = exporter;
    let _ = exporter.wait();

    let collector = start_collector(&rt, collector_port, &out, FaultInjection::default());
    let exporter = start_exporter(collector_port, &scratch, "2s");
    let after = connections(40);
    let seen_before = wait_for(&out, before, 120, Duration::from_secs(30));
    let seen_after = wait_for(&out, after, 80, Duration::from_secs(30));
    stop(exporter);
    assert_exactly_once(&seen_before, 120);
    assert_exactly_once(&seen_after, 80);
    rt.block_on(collector.shutdown());
}
