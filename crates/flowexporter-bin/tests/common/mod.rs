//! What the end-to-end tests of `flowexporter run` share: scratch directories, the
//! reference collector, the exporter process and its logs, connections to count,
//! metrics, certificates and the credentials of the exporter's threads.

#![allow(dead_code)]

use std::{
    collections::HashMap,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc::Receiver,
    time::{Duration, Instant},
};

use flow_collector::{CollectorOptions, FaultInjection, FlowCollector};

pub const BIN: &str = env!("CARGO_BIN_EXE_flowexporter");

/// A scratch directory for one test (spool, journal, collector output) and the test's
/// own pin directory for the identity maps; both removed when the test ends.
pub struct Scratch {
    dir: PathBuf,
    pins: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let name = format!("fe-run-{}-{tag}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch {
            dir,
            pins: PathBuf::from("/sys/fs/bpf").join(name),
        }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    /// Where the exporter under test pins its identity maps.
    pub fn pins(&self) -> &Path {
        &self.pins
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.pins);
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

pub fn start_collector(
    rt: &tokio::runtime::Runtime,
    port: u16,
    out: &Path,
    faults: FaultInjection,
) -> FlowCollector {
    let mut options = CollectorOptions::new(([127, 0, 0, 1], port).into(), out)
        .with_hold_back(std::time::Duration::ZERO);
    options.faults = faults;
    rt.block_on(FlowCollector::start(options))
        .expect("collector")
}

pub fn free_port() -> u16 {
    flow_testkit::free_port()
}

/// Starts the exporter; returns once it has attached.
pub fn start_exporter(collector_port: u16, scratch: &Scratch, window: &str) -> Child {
    start_exporter_with(collector_port, scratch, window, &[])
}

pub fn start_exporter_with(
    collector_port: u16,
    scratch: &Scratch,
    window: &str,
    extra: &[&str],
) -> Child {
    start_exporter_logged(collector_port, scratch, window, extra).0
}

/// Starts the exporter; returns it and its log lines.
pub fn start_exporter_logged(
    collector_port: u16,
    scratch: &Scratch,
    window: &str,
    extra: &[&str],
) -> (Child, Logs) {
    let url = format!("http://127.0.0.1:{collector_port}");
    start_exporter_at(&url, scratch, window, extra)
}

/// Starts the exporter sending to `url`, with a 1 s retry backoff, the host ID
/// `test-host`, spool and journal in `scratch`, and `extra` arguments; returns once it
/// has attached, with its log lines.
pub fn start_exporter_at(
    url: &str,
    scratch: &Scratch,
    window: &str,
    extra: &[&str],
) -> (Child, Logs) {
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--collector", url])
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
        .arg(scratch.pins())
        .args(extra)
        .stdout(Stdio::null());
    spawn_logged(cmd)
}

/// Spawns `cmd` with its stderr read into [`Logs`] (and echoed to the test's own);
/// returns once the exporter said it is tracing.
pub fn spawn_logged(mut cmd: Command) -> (Child, Logs) {
    let mut child = cmd.stderr(Stdio::piped()).spawn().expect("start exporter");
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
    (
        child,
        Logs {
            rx: lines_rx,
            lines: Vec::new(),
            cursor: 0,
        },
    )
}

/// The exporter's log lines, as they come.
pub struct Logs {
    rx: Receiver<String>,
    lines: Vec<String>,
    /// Where the next [`Logs::wait_for`] starts looking.
    cursor: usize,
}

impl Logs {
    /// Waits up to 10 s for a line containing every one of `needles`, after the line
    /// the previous wait found; returns it.
    pub fn wait_for(&mut self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            while self.cursor < self.lines.len() {
                let line = &self.lines[self.cursor];
                self.cursor += 1;
                if needles.iter().all(|n| line.contains(n)) {
                    return line.clone();
                }
            }
            if Instant::now() > deadline {
                panic!("no log line with {needles:?}");
            }
            if let Ok(line) = self.rx.recv_timeout(Duration::from_millis(200)) {
                self.lines.push(line);
            }
        }
    }

    /// Every line so far.
    pub fn all(&mut self) -> &[String] {
        while let Ok(line) = self.rx.try_recv() {
            self.lines.push(line);
        }
        &self.lines
    }
}

pub fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

pub fn stop(mut child: Child) {
    signal(&child, libc::SIGTERM);
    let status = child.wait().expect("wait");
    assert!(status.success(), "exporter exit status {status}");
}

/// An exporter process that is killed when dropped (a failing test must not leave it
/// tracing the machine); [`Exporter::stop`] stops it cleanly and checks its exit.
pub struct Exporter(Option<Child>);

impl Exporter {
    /// Guards `child`.
    pub fn new(child: Child) -> Exporter {
        Exporter(Some(child))
    }

    /// SIGTERM, then its exit status must be success.
    pub fn stop(mut self) {
        if let Some(child) = self.0.take() {
            stop(child);
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Opens and closes `n` connections to a fresh listener; returns its port.
pub fn connections(n: usize) -> u16 {
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

/// The collector's final records of connections to `port`, as JSON (one per
/// closed connection end: a connection open when a window closed also has interim
/// records, which these tests do not count).
pub fn records_of(out: &Path, port: u16) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    text.lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("JSON line"))
        .filter(|v| v["local_port"] == port || v["remote_port"] == port)
        .filter(|v| v["record_kind"] != "interim")
        .collect()
}

/// The collector's records of connections to `port`, counted by identity
/// (local end, remote end, close time): each must be 1.
pub fn records_for(out: &Path, port: u16) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for v in records_of(out, port) {
        let key = format!(
            "{}:{}>{}:{}@{}",
            v["local_ip"], v["local_port"], v["remote_ip"], v["remote_port"], v["t_end"]
        );
        *seen.entry(key).or_insert(0) += 1;
    }
    seen
}

/// Waits until the collector has `want` distinct records for `port`.
pub fn wait_for(out: &Path, port: u16, want: usize, timeout: Duration) -> HashMap<String, usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = records_for(out, port);
        if seen.len() >= want || Instant::now() > deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn assert_exactly_once(seen: &HashMap<String, usize>, want: usize) {
    assert_eq!(seen.len(), want, "distinct records");
    let dup: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
    assert!(dup.is_empty(), "duplicated records: {dup:?}");
}

/// The workload IDs of the collector's records of connections to `port`, once it has
/// `want` of them.
pub fn workloads_for(out: &Path, port: u16, want: usize) -> Vec<serde_json::Value> {
    assert_exactly_once(&wait_for(out, port, want, Duration::from_secs(15)), want);
    records_of(out, port)
        .into_iter()
        .map(|v| v["local_workload_id"].clone())
        .collect()
}

/// The lines of `/proc/PID/task/*/status` of every thread of `pid` whose name
/// `wanted` accepts, as (name, value) pairs.
pub fn thread_status(pid: u32, wanted: impl Fn(&str) -> bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks");
    for task in tasks {
        let status =
            std::fs::read_to_string(task.expect("task").path().join("status")).expect("status");
        for line in status.lines() {
            if let Some((name, value)) = line.split_once(':')
                && wanted(name)
            {
                out.push((name.to_string(), value.trim().to_string()));
            }
        }
    }
    out
}

/// The capability sets of every thread of `pid`, as (name, hex) pairs.
pub fn capability_sets(pid: u32) -> Vec<(String, String)> {
    thread_status(pid, |name| name.starts_with("Cap") || name == "NoNewPrivs")
}

/// Asserts that no thread of `pid` holds a capability, and that none can gain one.
pub fn assert_no_capabilities(pid: u32) {
    let sets = capability_sets(pid);
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
}

/// GETs the metrics text.
pub fn scrape(addr: &str) -> String {
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

pub fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(line_start)
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no {line_start} in {text}"))
}

/// Writes a self-signed certificate naming `uri` to `path` (replacing the file at once).
pub fn write_cert(path: &Path, uri: &str) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().expect("ia5"))];
    let key = rcgen::KeyPair::generate().expect("key");
    let staged = path.with_extension("new");
    std::fs::write(&staged, params.self_signed(&key).expect("sign").pem()).expect("write");
    std::fs::rename(&staged, path).expect("rename");
}

/// Writes `text` to `path`, replacing the file at once.
pub fn write_file(path: &Path, text: &str) {
    let staged = path.with_extension("staged");
    std::fs::write(&staged, text).expect("write");
    std::fs::rename(&staged, path).expect("rename");
}

/// `flowexporter identity ip set IP WORKLOAD --pin-dir PINS`, as an operator (or an
/// orchestrator's hook) runs it.
pub fn set_owner(pins: &Path, ip: &str, workload: &str) {
    let out = Command::new(BIN)
        .args(["identity", "ip", "set", ip, workload, "--pin-dir"])
        .arg(pins)
        .output()
        .expect("run flowexporter identity");
    assert!(
        out.status.success(),
        "identity ip set {ip} {workload}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One connection from a client to a fresh listener on `ip`, the client sending
/// `bytes` bytes and the server answering `bytes * 2`; returns (server, client).
pub fn exchange(ip: &str, bytes: usize) -> (std::net::SocketAddr, std::net::SocketAddr) {
    use std::io::{Read, Write};
    let listener = TcpListener::bind((ip, 0)).expect("bind");
    let server_addr = listener.local_addr().expect("addr");
    let mut client = TcpStream::connect(server_addr).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    client.write_all(&vec![1u8; bytes]).expect("write");
    let mut buf = vec![0u8; bytes];
    server.read_exact(&mut buf).expect("read");
    server.write_all(&vec![2u8; bytes * 2]).expect("answer");
    let mut answer = vec![0u8; bytes * 2];
    client.read_exact(&mut answer).expect("read answer");
    let client_addr = client.local_addr().expect("local");
    drop(client);
    drop(server);
    (server_addr, client_addr)
}
