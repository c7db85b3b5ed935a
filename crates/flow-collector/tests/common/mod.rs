//! What the tests that run the `flowcollector` binary share: starting and stopping
//! it, posting frames, reading its metrics; records and frames.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant, SystemTime},
};

use flow_batch::{
    Chunk, Window,
    wire::{ChunkEncoder, InstanceId},
};
use flow_record::{Direction, FlowRecord, IdentitySource};

pub const BIN: &str = env!("CARGO_BIN_EXE_flowcollector");

/// A running collector and what it printed.
pub struct Collector {
    pub child: Child,
    pub addr: String,
}

impl Collector {
    pub fn start(dir: &Path, extra: &[&str]) -> Collector {
        let out = dir.join("flows.jsonl");
        let state = dir.join("state");
        let mut args: Vec<&str> = vec!["--out", out.to_str().expect("path"), "--state-dir"];
        args.push(state.to_str().expect("path"));
        args.extend_from_slice(extra);
        Collector::start_with(&args)
    }

    /// Starts it with exactly `args` (and a free --listen port).
    pub fn start_with(args: &[&str]) -> Collector {
        let port = flow_testkit::free_port();
        let mut child = Command::new(BIN)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start flowcollector");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("flowcollector says it listens");
        let addr = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Collector { child, addr }
    }

    /// Sends `frame`; returns the status, the result header and the body.
    pub fn post(&self, frame: &[u8]) -> (u16, String, String) {
        let mut s = TcpStream::connect(&self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let head = format!(
            "POST /v1/chunks HTTP/1.1\r\nhost: x\r\ncontent-type: application/vnd.flowexporter.chunk\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            frame.len()
        );
        s.write_all(head.as_bytes()).expect("head");
        s.write_all(frame).expect("body");
        response(s)
    }

    pub fn get(&self, path: &str) -> (u16, String, String) {
        let mut s = TcpStream::connect(&self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        .expect("get");
        response(s)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// kill -9: no drain, no final checkpoint.
    pub fn crash(mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGTERM; returns how long it took to exit, asserting success.
    pub fn stop(mut self) -> Duration {
        let t = Instant::now();
        self.signal(libc::SIGTERM);
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "flowcollector exit status {status}");
        t.elapsed()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status, result header and body of a `connection: close` response.
pub fn response(mut s: TcpStream) -> (u16, String, String) {
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let status = text[9..12].parse().expect("status");
    let result = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("flowexporter-result: ")
                .map(str::to_string)
        })
        .unwrap_or_default();
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, result, body)
}

/// A record of `local` -> `remote` named `workload`, closed `ago` before now.
pub fn record(local: &str, remote: &str, workload: Option<&str>, ago: Duration) -> FlowRecord {
    let t_end = SystemTime::now() - ago;
    let b = flow_testkit::record()
        .local(local)
        .remote(remote)
        .direction(Direction::Outbound)
        .t_start(Some(t_end - Duration::from_millis(200)))
        .t_end(t_end)
        .bytes(100, 200);
    match workload {
        Some(w) => b.workload(w, IdentitySource::IpMap).build(),
        None => b.build(),
    }
}

/// One frame of `records` from `host`, sequence `sequence`.
pub fn frame(host: &str, instance: u128, sequence: u64, records: Vec<FlowRecord>) -> Vec<u8> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let start = now - now % 60_000;
    let window = Window::from_millis(start, start + 60_000).expect("window");
    let chunk = Chunk::new(window, sequence as u32, sequence, false, records);
    let mut encoder = ChunkEncoder::new(host, InstanceId::new(instance)).expect("encoder");
    encoder.encode_to_vec(&chunk).expect("encode")
}

/// The value of the metric series `series` in `text`.
pub fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .map(|v| v.trim().parse().expect("value"))
        })
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// Posts `frame` to the collector at `addr`; the status, or `None` when there was no
/// answer (the collector is down).
pub fn post_to(addr: &str, frame: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let head = format!(
        "POST /v1/chunks HTTP/1.1\r\nhost: x\r\ncontent-type: application/vnd.flowexporter.chunk\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        frame.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(frame).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.get(9..12)?.parse().ok()
}
