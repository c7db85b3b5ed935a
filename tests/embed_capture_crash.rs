//! `examples/embed_capture.rs` (the library with a sink of its own) keeps the crash
//! guarantee: killed with SIGKILL mid-window, the restarted process delivers every
//! record that was journaled, once; a third start delivers none of them again.
//!
//! Real kernel program, real sockets (IPv4 and IPv6 loopback), real processes. Needs
//! root, like every capture test.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use serde_json::Value;

/// The example, built by `cargo test` (the whole package's, as `.ci/run` runs it)
/// next to this test's own binary.
fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let example = dir.join("examples").join("embed_capture");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/embed_capture.rs");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (modified(&example), modified(&source)) {
        (Some(built), Some(written)) if built >= written => example,
        _ => panic!(
            "{} is missing or older than its source: `cargo test` builds it, \
             `cargo test --test embed_capture_crash` alone does not \
             (cargo build --example embed_capture first)",
            example.display()
        ),
    }
}

/// A running example: its stdout lines as they come.
struct Embedded {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Embedded {
    /// Starts the example with a journal in `journal` and a one-hour window (so that
    /// no window closes during the test), and waits until it captures.
    fn start(journal: &Path) -> Embedded {
        let mut child = Command::new(example())
            .args(["--window", "1h", "--journal-sync", "50ms", "--journal-dir"])
            .arg(journal)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start examples/embed_capture (built by cargo test)");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().expect("lines").push(line);
            }
        });
        let stderr = child.stderr.take().expect("stderr");
        let (ready, attached) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("embed_capture: {line}");
                if line.contains("capturing") {
                    let _ = ready.send(());
                }
            }
        });
        attached
            .recv_timeout(Duration::from_secs(60))
            .expect("embed_capture attached");
        Embedded { child, lines }
    }

    /// The records it printed whose remote port is `port`, by local address.
    fn records_to(&self, port: u16) -> BTreeMap<SocketAddr, Vec<Value>> {
        let mut by_local: BTreeMap<SocketAddr, Vec<Value>> = BTreeMap::new();
        for line in self.lines.lock().expect("lines").iter() {
            let v: Value = serde_json::from_str(line).expect("each stdout line is a JSON record");
            // Final records only: an interim one (a snapshot before the hour's end)
            // is not a delivery of the connection.
            if v["remote_port"] == u64::from(port) && v["record_kind"] != "interim" {
                let ip: std::net::IpAddr = v["local_ip"]
                    .as_str()
                    .expect("local_ip")
                    .parse()
                    .expect("ip");
                let local = SocketAddr::new(ip, v["local_port"].as_u64().expect("port") as u16);
                by_local.entry(local).or_default().push(v);
            }
        }
        by_local
    }

    /// SIGTERM, and waits for a clean exit (its stdout read to the end).
    fn stop(mut self) -> Embedded {
        // SAFETY: signalling our own child process.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) },
            0
        );
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "embed_capture exit status {status}");
        // The reader thread has seen EOF once the process is gone; give it a moment.
        std::thread::sleep(Duration::from_millis(200));
        self
    }
}

/// Opens and closes a connection from `client` to each listener; returns the client
/// ends' addresses.
fn connect_all(listeners: &[TcpListener], per_listener: usize) -> Vec<SocketAddr> {
    let mut clients = Vec::new();
    for listener in listeners {
        let addr = listener.local_addr().expect("addr");
        for _ in 0..per_listener {
            let c = TcpStream::connect(addr).expect("connect");
            let (s, _) = listener.accept().expect("accept");
            clients.push(c.local_addr().expect("client addr"));
            drop(c);
            drop(s);
        }
    }
    clients
}

#[test]
fn a_killed_embedding_delivers_what_was_journaled_once_after_restart() {
    flow_testkit::mount_kernel_filesystems();
    let scratch = tempfile::tempdir().expect("scratch");
    let journal = scratch.path().join("journal");
    let port = flow_testkit::free_port();
    let listeners = [
        TcpListener::bind(("127.0.0.1", port)).expect("bind v4"),
        TcpListener::bind(("::1", port)).expect("bind v6"),
    ];

    let mut first = Embedded::start(&journal);
    let clients = connect_all(&listeners, 3);
    // Read from the ring and journaled (synced every 50 ms), not delivered: the
    // window is an hour long.
    std::thread::sleep(Duration::from_millis(1500));
    first.child.kill().expect("SIGKILL");
    first.child.wait().expect("reap");
    let before = first.records_to(port);

    let second = Embedded::start(&journal).stop();
    let after = second.records_to(port);
    eprintln!(
        "delivered before the kill: {}, after the restart: {}",
        before.len(),
        after.len()
    );
    // Every client socket exactly once over both runs (the first run printed none,
    // unless an hour boundary fell inside the test).
    let mut seen: BTreeMap<SocketAddr, usize> = BTreeMap::new();
    for (local, records) in before.iter().chain(after.iter()) {
        *seen.entry(*local).or_default() += records.len();
    }
    let want: BTreeMap<SocketAddr, usize> = clients.iter().map(|c| (*c, 1)).collect();
    assert_eq!(seen, want, "every connection once, before: {before:?}");
    for (local, records) in &after {
        let r = &records[0];
        assert_eq!(r["direction"], "outbound", "{r}");
        assert_eq!(r["remote_ip"], local.ip().to_string(), "{r}");
        assert_eq!(r["remote_port"], u64::from(port), "{r}");
        assert_eq!(r["close_reason"], "normal", "{r}");
        assert!(r["t_start"].is_string() && r["t_end"].is_string(), "{r}");
        assert_eq!(r["identity_source"], "none", "{r}");
    }

    // The journal ended them: a third start replays none of them.
    let third = Embedded::start(&journal).stop();
    assert!(
        third.records_to(port).is_empty(),
        "delivered again: {:?}",
        third.records_to(port)
    );
}
