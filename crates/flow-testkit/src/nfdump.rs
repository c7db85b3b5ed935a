//! A real IPFIX collector for tests: Debian's `nfcapd` (nfdump 1.7), started on a
//! loopback UDP port with a directory of its own, stopped with SIGTERM (it writes its
//! file out), and what it stored read back with its own tool, `nfdump` (`-o json`, and
//! `-o fmt:` for what the JSON leaves out). nfcapd 1.7 has no TCP listener.
//!
//! A test that needs nfcapd and cannot find it fails, naming the Debian package: it
//! never passes by skipping.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// Longest nfcapd takes to listen, or to stop.
const WAIT: Duration = Duration::from_secs(30);

/// `name` on the PATH; the test fails (it never skips) when it is missing.
pub fn binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` not found on PATH: the IPFIX sink tests need the real collector \
                 (Debian: apt-get install nfdump)"
            )
        })
}

/// What nfcapd stored: nfdump's JSON flows, what only `-o fmt:` shows, its log.
pub struct Stored {
    /// nfdump's JSON flows (`-o json`).
    pub flows: Vec<Value>,
    /// `(biflowDirection, flowEndReason)` by source port, from `-o fmt:`.
    pub extra: BTreeMap<u16, (u8, u8)>,
    /// nfcapd's log.
    pub log: String,
}

/// A running `nfcapd` on 127.0.0.1:`port`, writing into a directory of its own.
pub struct Nfcapd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

impl Nfcapd {
    /// Starts nfcapd and waits until it listens.
    pub fn start(port: u16) -> Nfcapd {
        let dir = tempfile::tempdir().expect("temp dir");
        let flows = dir.path().join("flows");
        std::fs::create_dir(&flows).expect("flows dir");
        let log = std::fs::File::create(dir.path().join("nfcapd.log")).expect("log");
        let child = Command::new(binary("nfcapd"))
            .args(["-b", "127.0.0.1", "-p", &port.to_string(), "-w"])
            .arg(&flows)
            // A file per hour (nothing rotates during a test); a large socket buffer
            // (a frame's datagrams arrive in a burst).
            .args(["-t", "3600", "-B", "8388608"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start nfcapd");
        let mut nfcapd = Nfcapd {
            child: Some(child),
            dir,
            port,
        };
        nfcapd.wait_listening();
        nfcapd
    }

    /// Waits until nfcapd holds its port (a bind of ours fails).
    fn wait_listening(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            match std::net::UdpSocket::bind(("127.0.0.1", self.port)) {
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return,
                _ => {}
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("nfcapd exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "nfcapd does not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// nfcapd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nfcapd.log")).unwrap_or_default()
    }

    /// Stops nfcapd with SIGTERM (it writes its file out) and reads every flow it
    /// stored with `nfdump -o json`; also its log (its closing line counts sequence
    /// errors).
    pub fn stop(mut self) -> Stored {
        let Some(mut child) = self.child.take() else {
            panic!("nfcapd stopped twice");
        };
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -TERM nfcapd");
        let deadline = Instant::now() + WAIT;
        while child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "nfcapd does not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = Command::new(binary("nfdump"))
            .arg("-R")
            .arg(self.dir.path().join("flows"))
            .args(["-o", "json", "-q"])
            .env("TZ", "UTC")
            .output()
            .expect("run nfdump");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "nfdump failed: {}{text}",
            String::from_utf8_lossy(&output.stderr)
        );
        let flows_dir = self.dir.path().join("flows");
        Stored {
            flows: parse_nfdump_json(&text),
            extra: read_fmt(&flows_dir),
            log: self.log(),
        }
    }
}

impl Drop for Nfcapd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// nfdump 1.7's JSON output (`-q`): flow objects separated by commas.
pub fn parse_nfdump_json(text: &str) -> Vec<Value> {
    let text = text.trim().trim_end_matches(',');
    if text.is_empty() {
        return Vec::new();
    }
    match serde_json::from_str::<Value>(&format!("[{text}]")) {
        Ok(Value::Array(flows)) => flows,
        other => panic!("nfdump JSON: {other:?}: {}", &text[..text.len().min(3000)]),
    }
}

/// What the JSON output leaves out, by source port: `(biflowDirection,
/// flowEndReason)` from `nfdump -o fmt:`.
pub fn read_fmt(flows_dir: &Path) -> BTreeMap<u16, (u8, u8)> {
    let output = Command::new(binary("nfdump"))
        .arg("-R")
        .arg(flows_dir)
        .args(["-q", "-N", "-o", "fmt:%sp %bfd %end"])
        .env("TZ", "UTC")
        .output()
        .expect("run nfdump");
    assert!(output.status.success(), "nfdump -o fmt failed");
    let mut out = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() != 3 {
            continue;
        }
        let parse = |i: usize| {
            fields[i]
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("nfdump line {line:?}"))
        };
        out.insert(parse(0) as u16, (parse(1) as u8, parse(2) as u8));
    }
    out
}

/// `YYYY-MM-DDThh:mm:ss.mmm` (UTC) as milliseconds since the Unix epoch.
pub fn parse_utc_ms(t: &str) -> u64 {
    let n = |range: std::ops::Range<usize>| -> i64 {
        t.get(range)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("time {t:?}"))
    };
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19);
    (secs * 1000 + n(20..23)) as u64
}
