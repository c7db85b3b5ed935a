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
    start_exporter_with(collector_port, scratch, window, &[])
}

fn start_exporter_with(
    collector_port: u16,
    scratch: &Scratch,
    window: &str,
    extra: &[&str],
) -> Child {
    start_exporter_logged(collector_port, scratch, window, extra).0
}

/// Starts the exporter; returns it and its log lines.
fn start_exporter_logged(
    collector_port: u16,
    scratch: &Scratch,
    window: &str,
    extra: &[&str],
) -> (Child, std::sync::mpsc::Receiver<String>) {
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
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start exporter");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
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
            let _ = lines_tx.send(line);
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("exporter attached");
    (child, lines_rx)
}

/// Waits for a log line containing `needle`.
fn expect_log(lines: &std::sync::mpsc::Receiver<String>, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(200))
            && line.contains(needle)
        {
            return;
        }
    }
    panic!("no log line with {needle:?}");
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

/// The capability sets of every thread of `pid`, as (name, hex) pairs.
fn capability_sets(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks");
    for task in tasks {
        let status =
            std::fs::read_to_string(task.expect("task").path().join("status")).expect("status");
        for line in status.lines() {
            if let Some((name, value)) = line.split_once(':')
                && (name.starts_with("Cap") || name == "NoNewPrivs")
            {
                out.push((name.to_string(), value.trim().to_string()));
            }
        }
    }
    out
}

#[test]
fn no_capabilities_remain_after_the_program_is_attached() {
    let scratch = Scratch::new("caps");
    let rt = runtime();
    let out = scratch.path("flows.jsonl");
    let collector_port = free_port();
    let collector = start_collector(&rt, collector_port, &out, FaultInjection::default());
    let exporter = start_exporter(collector_port, &scratch, "1s");
    let sets = capability_sets(exporter.id());
    assert!(sets.len() >= 6, "{sets:?}");
    for (name, value) in &sets {
        let expected = if name == "NoNewPrivs" {
            "1"
        } else {
            "0000000000000000"
        };
        assert_eq!(
            value, expected,
            "{name} of a thread of the exporter: {sets:?}"
        );
    }
    // And it still works without them: records flow to the collector.
    let port = connections(10);
    assert_exactly_once(&wait_for(&out, port, 20, Duration::from_secs(15)), 20);
    stop(exporter);
    rt.block_on(collector.shutdown());
}

/// GETs the metrics text.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).expect("connect to metrics");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(line_start)
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no {line_start} in {text}"))
}

#[test]
fn metrics_are_served_and_follow_the_traffic() {
    let scratch = Scratch::new("metrics");
    let rt = runtime();
    let out = scratch.path("flows.jsonl");
    let collector_port = free_port();
    let collector = start_collector(&rt, collector_port, &out, FaultInjection::default());
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let exporter = start_exporter_with(
        collector_port,
        &scratch,
        "1s",
        &["--metrics-addr", &metrics_addr],
    );
    std::thread::sleep(Duration::from_millis(300));
    let before = scrape(&metrics_addr);
    let captured = metric(&before, "flowexporter_records_captured_total ");
    let port = connections(30);
    wait_for(&out, port, 60, Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(1500)); // one more refresh of the snapshot
    let after = scrape(&metrics_addr);
    assert!(
        metric(&after, "flowexporter_records_captured_total ") >= captured + 60,
        "{after}"
    );
    assert!(
        metric(&after, "flowexporter_records_sent_total ") >= 60,
        "{after}"
    );
    assert!(
        metric(&after, "flowexporter_chunks_sent_total ") >= 1,
        "{after}"
    );
    assert_eq!(
        metric(
            &after,
            r#"flowexporter_records_dropped_total{reason="ring_full",intentional="false"} "#
        ),
        0
    );
    assert!(
        after.contains("# TYPE flowexporter_spool_bytes gauge"),
        "{after}"
    );
    assert!(
        after.contains(r#"flowexporter_identity_records_total{source="none",reason="no_match"}"#)
    );
    stop(exporter);
    rt.block_on(collector.shutdown());
}

fn write_cert(path: &Path, uri: &str) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().expect("ia5"))];
    let key = rcgen::KeyPair::generate().expect("key");
    let staged = path.with_extension("new");
    std::fs::write(&staged, params.self_signed(&key).expect("sign").pem()).expect("write");
    std::fs::rename(&staged, path).expect("rename");
}

#[test]
fn sighup_reloads_the_certificate() {
    let scratch = Scratch::new("hup");
    let rt = runtime();
    let out = scratch.path("flows.jsonl");
    let cert = scratch.path("host.pem");
    write_cert(&cert, "spiffe://x/before");
    let collector_port = free_port();
    let collector = start_collector(&rt, collector_port, &out, FaultInjection::default());
    let cert_arg = cert.display().to_string();
    let (exporter, lines) = start_exporter_logged(
        collector_port,
        &scratch,
        "1s",
        &["--identity-cert", &cert_arg],
    );
    signal(&exporter, libc::SIGHUP);
    expect_log(&lines, "SIGHUP: identity certificate unchanged");
    std::thread::sleep(Duration::from_millis(20));
    write_cert(&cert, "spiffe://x/after");
    signal(&exporter, libc::SIGHUP);
    expect_log(&lines, "SIGHUP: identity certificate reloaded");
    let port = connections(5);
    wait_for(&out, port, 10, Duration::from_secs(15));
    let text = std::fs::read_to_string(&out).expect("out");
    let mine: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["local_port"] == port || v["remote_port"] == port)
        .collect();
    assert_eq!(mine.len(), 10);
    assert!(
        mine.iter()
            .all(|v| v["local_workload_id"] == "spiffe://x/after"),
        "{mine:#?}"
    );
    stop(exporter);
    rt.block_on(collector.shutdown());
}
