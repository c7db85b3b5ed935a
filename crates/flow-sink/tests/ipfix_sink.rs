//! The IPFIX sink against a real collector: Debian's `nfcapd` (nfdump 1.7), started by
//! the tests on a loopback UDP port, its files read back with `nfdump -o json` and
//! compared field by field with the records exported. nfcapd has no TCP listener:
//! the TCP tests put a relay in front of it that only cuts the TCP stream into
//! messages by their length fields and forwards each as a datagram, so nfcapd still
//! decodes every message. What nfdump does not show (our enterprise elements, the
//! nanosecond times, the options record) is checked by an independent decoder of
//! the messages written here, and docs/schema.md's IPFIX column is compared with the
//! templates.
//!
//! The tests need `nfcapd` and `nfdump` (Debian package `nfdump`) and fail without them.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use common::{HOST, eventually, fast_retry};
use flow_batch::{Chunk, Window, wire::InstanceId};
use flow_record::{
    CloseReason, Direction, FlowId, FlowRecord, IdentitySource, ProcessInfo, RecordKind,
    SocketStats, TcpState, UnattributedReason,
};
use flow_sink::{
    FlowSink, IpfixSink, IpfixSinkConfig,
    ipfix_sink::{
        ELEMENTS, IpfixEncoder, Messages, REVERSE_PEN, Registry, TEMPLATE_EXPORTER,
        observation_domain_for,
    },
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
const PEN: u32 = 32473;

// ---------------------------------------------------------------------------------
// The collector: nfcapd, and nfdump to read what it wrote.
// ---------------------------------------------------------------------------------

/// `name` on the PATH; the test fails (it never skips) when it is missing.
fn binary(name: &str) -> PathBuf {
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
struct Stored {
    flows: Vec<Value>,
    extra: BTreeMap<u16, (u8, u8)>,
    log: String,
}

/// A running `nfcapd` on 127.0.0.1:`port`, writing into a directory of its own.
struct Nfcapd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

impl Nfcapd {
    /// Starts nfcapd and waits until it listens.
    fn start(port: u16) -> Nfcapd {
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
            assert!(Instant::now() < deadline, "nfcapd does not listen: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nfcapd.log")).unwrap_or_default()
    }

    /// Stops nfcapd with SIGTERM (it writes its file out) and reads every flow it
    /// stored with `nfdump -o json`; also its log (its closing line counts sequence
    /// errors).
    fn stop(mut self) -> Stored {
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
fn parse_nfdump_json(text: &str) -> Vec<Value> {
    let text = text.trim().trim_end_matches(',');
    if text.is_empty() {
        return Vec::new();
    }
    match serde_json::from_str::<Value>(&format!("[{text}]")) {
        Ok(Value::Array(flows)) => flows,
        other => panic!(
            "nfdump JSON: {other:?}: {}",
            &text[..text.len().min(3000)]
        ),
    }
}

/// What the JSON output leaves out, by source port: `(biflowDirection,
/// flowEndReason)` from `nfdump -o fmt:`.
fn read_fmt(flows_dir: &Path) -> BTreeMap<u16, (u8, u8)> {
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
        let parse = |i: usize| fields[i].parse::<u64>().unwrap_or_else(|_| panic!("nfdump line {line:?}"));
        out.insert(parse(0) as u16, (parse(1) as u8, parse(2) as u8));
    }
    out
}

/// `YYYY-MM-DDThh:mm:ss.mmm` (UTC) as milliseconds since the Unix epoch.
fn parse_utc_ms(t: &str) -> u64 {
    let n = |range: std::ops::Range<usize>| -> i64 {
        t.get(range).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("time {t:?}"))
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

// ---------------------------------------------------------------------------------
// Records built field by field.
// ---------------------------------------------------------------------------------

/// Record `n`: IPv6 when `n % 3 == 1`, no start time when `n % 7 == 3`, interim when
/// `n % 5 == 4`; every number derived from `n` so that it can be found again.
fn record(n: u64) -> FlowRecord {
    let t_end = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000 + n * 1_001) + Duration::from_nanos(123_456);
    let (local, remote): (SocketAddr, SocketAddr) = if n % 3 == 1 {
        (
            format!("[2001:db8::{:x}]:{}", n + 1, 1000 + n).parse().expect("v6"),
            format!("[2001:db8:1::{:x}]:{}", n + 7, 40_000 + n).parse().expect("v6"),
        )
    } else {
        (
            format!("10.1.{}.{}:{}", n / 250, n % 250 + 1, 1000 + n).parse().expect("v4"),
            format!("192.168.{}.{}:{}", n / 250, n % 250 + 2, 40_000 + n).parse().expect("v4"),
        )
    };
    let direction = [Direction::Outbound, Direction::Inbound, Direction::Unknown][(n % 3) as usize];
    let t_start = (n % 7 != 3).then(|| t_end - Duration::from_millis(250 + n));
    let kind = if n % 5 == 4 { RecordKind::Interim } else { RecordKind::Final };
    let stats = SocketStats {
        bytes_sent: 1_000_000 + n * 17,
        bytes_received: 5_000 + n * 3,
        segs_in: 10 + n as u32,
        segs_out: 20 + 2 * n as u32,
        retransmits: (n % 4) as u32,
        bytes_retransmitted: n * 100,
        srtt_us: 150 + n as u32,
        rttvar_us: 30 + n as u32,
    };
    let mut builder = flow_testkit::record()
        .local(local)
        .remote(remote)
        .direction(direction)
        .t_end(t_end)
        .t_start(t_start)
        .stats(stats)
        .close(TcpState(if n % 2 == 0 { 7 } else { 5 }), if n % 6 == 5 { CloseReason::Reset } else { CloseReason::Normal })
        .kind(kind)
        .incomplete(n % 11 == 0)
        .flow_id((n % 4 != 2).then_some(FlowId {
            boot_id: [n as u8; 16],
            cookie: 0x1000 + n,
        }))
        .process((direction == Direction::Outbound).then(|| ProcessInfo::new(1000 + n as u32, "curl", 5000 + n)));
    builder = if n % 2 == 0 {
        builder.workload(format!("k8s:prod/api-{n}"), IdentitySource::ConnectMap)
    } else {
        builder.unattributed(UnattributedReason::NoMatch)
    };
    builder.build()
}

fn window() -> Window {
    Window::from_millis(1_700_000_000_000, 1_700_000_060_000).expect("window")
}

/// Chunk `sequence` with records `first..first + count`.
fn chunk(sequence: u64, first: u64, count: u64) -> Chunk {
    Chunk::new(
        window(),
        sequence as u32,
        sequence,
        false,
        (first..first + count).map(record).collect(),
    )
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as u64
}

fn config(url: &str, spool: &Path, instance: u128) -> IpfixSinkConfig {
    IpfixSinkConfig::from_url(url, HOST, InstanceId::new(instance))
        .expect("url")
        .with_retry(fast_retry())
        .with_spool_dir(spool)
        .with_flush_timeout(WAIT)
        .with_error_log_interval(Duration::ZERO)
        .with_timeouts(Duration::from_secs(2), Duration::from_secs(2))
}

// ---------------------------------------------------------------------------------
// What nfdump shows, against the records.
// ---------------------------------------------------------------------------------

/// A JSON field as text (nfdump writes some numbers as strings).
fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => panic!("nfdump shows no {key:?} in {v}"),
    }
}

fn number(v: &Value, key: &str) -> u64 {
    text(v, key).parse().unwrap_or_else(|_| panic!("{key} of {v} is not a number"))
}

/// Asserts that what nfcapd stored is exactly `records`, field by field (found by
/// source address and port, unique per record), and that it counted no sequence
/// error.
fn assert_stored(stored: &Stored, records: &[FlowRecord]) {
    let mut by_source: BTreeMap<(String, u16), &Value> = BTreeMap::new();
    for flow in &stored.flows {
        let ip = flow
            .get("src4_addr")
            .or_else(|| flow.get("src6_addr"))
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("a flow without a source address: {flow}"));
        let key = (ip.to_owned(), number(flow, "src_port") as u16);
        assert!(by_source.insert(key.clone(), flow).is_none(), "flow {key:?} twice");
    }
    assert_eq!(by_source.len(), records.len(), "one flow per record; nfcapd: {}", stored.log);
    for r in records {
        let key = (r.local.ip().to_string(), r.local.port());
        let flow = by_source.get(&key).unwrap_or_else(|| panic!("no flow for {key:?}"));
        let what = format!("record {key:?}: {flow}");
        let (src, dst) = match (r.local.ip(), r.remote.ip()) {
            (IpAddr::V4(_), IpAddr::V4(_)) => ("src4_addr", "dst4_addr"),
            _ => ("src6_addr", "dst6_addr"),
        };
        assert_eq!(text(flow, src), r.local.ip().to_string(), "{what}");
        assert_eq!(text(flow, dst), r.remote.ip().to_string(), "{what}");
        assert_eq!(number(flow, "src_port"), u64::from(r.local.port()), "{what}");
        assert_eq!(number(flow, "dst_port"), u64::from(r.remote.port()), "{what}");
        assert_eq!(number(flow, "proto"), 6, "{what}");
        assert_eq!(number(flow, "in_bytes"), r.stats.bytes_sent, "{what}");
        assert_eq!(number(flow, "in_packets"), u64::from(r.stats.segs_out), "{what}");
        assert_eq!(number(flow, "out_bytes"), r.stats.bytes_received, "{what}");
        assert_eq!(number(flow, "out_packets"), u64::from(r.stats.segs_in), "{what}");
        assert_eq!(parse_utc_ms(&text(flow, "last")), millis(r.t_end), "{what}");
        // No start time: the templates without one; nfdump shows 0 (1970).
        let first = r.t_start.map_or(0, millis);
        assert_eq!(parse_utc_ms(&text(flow, "first")), first, "{what}");
        let (bfd, end) = stored.extra.get(&r.local.port()).copied().unwrap_or_else(|| panic!("no fmt line: {what}"));
        let direction = match r.direction {
            Direction::Unknown => 0,
            Direction::Outbound => 1,
            Direction::Inbound => 2,
        };
        assert_eq!(bfd, direction, "biflowDirection: {what}");
        let reason = match r.record_kind {
            RecordKind::Final => 3,
            RecordKind::Interim => 2,
        };
        assert_eq!(end, reason, "flowEndReason: {what}");
    }
    assert!(
        stored.log.contains("Sequence Errors: 0"),
        "nfcapd counted sequence errors: {}",
        stored.log
    );
}

// ---------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn udp_records_reach_nfcapd_field_by_field() {
    let port = flow_testkit::free_port();
    let nfcapd = Nfcapd::start(port);
    let spool = tempfile::tempdir().expect("spool");
    let sink = IpfixSink::start(config(&format!("udp://127.0.0.1:{port}"), spool.path(), 1)).expect("start");
    let chunks: Vec<Chunk> = (0..4).map(|s| chunk(s, s * 120, 120)).collect();
    for c in &chunks {
        sink.deliver(c).await.expect("deliver");
    }
    sink.flush().await.expect("flush");
    let counters = sink.counters();
    sink.close().await.expect("close");
    let stored = tokio::task::block_in_place(|| nfcapd.stop());
    println!("{}\n{counters:?}", stored.log);
    let records: Vec<FlowRecord> = chunks.iter().flat_map(|c| c.records.clone()).collect();
    assert_stored(&stored, &records);
}
