//! Remote attribution end to end, for real: the `flowexporter` binary traces real TCP
//! connections between two network namespaces (one IP per simulated workload, named
//! in the exporter's IP map with its own CLI) and sends to the real `flowcollector`
//! binary, whose JSON lines must name the remote side of every flow: from the other
//! end's own record when both ends were traced, from the ownership map (the
//! heartbeats) when only one end was (a refused connect), and, once an IP is given to
//! another workload, the new owner for new flows while older flows keep the old one.
//!
//! Needs root, a kernel with BTF, and `target/<profile>/flowcollector` built first
//! (`cargo build -p flowcollector`): the test fails, never skips, without it.

mod common;

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant, SystemTime},
};

use common::{Scratch, set_owner};
use flow_testkit::VethPair;
use serde_json::{Value, json};
use socket2::{Domain, Socket, Type};

/// The workload of namespace a's IPs throughout.
const CLIENT: &str = "client-a";
/// The first owner of namespace b's IPs.
const SERVER_BEFORE: &str = "server-b";
/// Their owner after the move.
const SERVER_AFTER: &str = "server-c";

/// The collector's clock tolerance (its default, said explicitly: the scenario's
/// pauses are chosen against it).
const TOLERANCE: Duration = Duration::from_secs(2);

/// The host ID `common::start_exporter_at` gives the exporter.
const HOST_ID: &str = "test-host";

/// Every field of a collector line: the exporter's record, then the collector's.
const FIELDS: [&str; 32] = [
    "local_ip",
    "local_port",
    "remote_ip",
    "remote_port",
    "direction",
    "t_start",
    "t_end",
    "bytes_sent",
    "bytes_received",
    "segs_in",
    "segs_out",
    "retransmits",
    "srtt_us",
    "rttvar_us",
    "bytes_retransmitted",
    "close_state",
    "close_reason",
    "local_workload_id",
    "identity_source",
    "unattributed_reason",
    "incomplete",
    "record_kind",
    "flow_id",
    "pid",
    "comm",
    "cgroup_id",
    "host_id",
    "batch_id",
    "record_index",
    "remote_workload_id",
    "remote_identity_source",
    "remote_unattributed_reason",
];

/// `target/<profile>/flowcollector`, next to this test's own directory
/// (`target/<profile>/deps/attribution-<hash>`).
fn collector_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join("flowcollector");
    assert!(
        bin.is_file(),
        "{} is missing: build it first: cargo build -p flowcollector",
        bin.display()
    );
    bin
}

/// The `flowcollector` process, killed on drop if the test did not stop it.
struct Collector {
    child: Option<Child>,
    addr: SocketAddr,
    out: PathBuf,
}

impl Collector {
    /// Starts it on a free loopback port with its output and state in `scratch`;
    /// returns once it said it is listening.
    fn start(scratch: &Scratch) -> Collector {
        let listen = SocketAddr::from(([127, 0, 0, 1], flow_testkit::free_port()));
        let out = scratch.path("flows.jsonl");
        let bin = collector_bin();
        let mut child = Command::new(&bin)
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--out")
            .arg(&out)
            .arg("--state-dir")
            .arg(scratch.path("collector-state"))
            .args(["--hold-back", "5s"])
            .args(["--clock-tolerance", &format!("{}s", TOLERANCE.as_secs())])
            // Flows of no interest here (the exporter's own connections to the
            // collector) may still be held at the end: do not wait long for them.
            .args(["--drain-timeout", "3s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let keep = Arc::clone(&stderr_lines);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("collector: {line}");
                keep.lock().expect("lines").push(line);
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("collector (stdout): {line}");
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let said = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().expect("wait");
                thread::sleep(Duration::from_millis(100)); // the last stderr lines
                panic!(
                    "{} did not say \"listening on\" ({status}); is it the old collector \
                     without attribution? Rebuild it: cargo build -p flowcollector. \
                     Its stderr: {:#?}",
                    bin.display(),
                    stderr_lines.lock().expect("lines")
                );
            }
        };
        assert_eq!(said, listen.to_string(), "the address it listens on");
        Collector {
            child: Some(child),
            addr: listen,
            out,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGTERM, then its exit status (within 30 s).
    fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        common::signal(&child, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the collector did not exit within 30 s of SIGTERM");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The exporter process, killed on drop if the test did not stop it (a panicking
/// test must not leave a tracer attached).
struct Exporter(Option<Child>);

impl Exporter {
    /// SIGTERM (it flushes what it holds), and it must exit 0.
    fn stop(&mut self) {
        common::stop(self.0.take().expect("running"));
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

/// An established connection from namespace a to a listener in namespace b, `up`
/// bytes sent by the client and `down` answered.
struct Conn {
    client: TcpStream,
    server: TcpStream,
    up: usize,
    down: usize,
}

/// What one end of a connection must look like in the collector's output.
#[derive(Clone, Debug)]
struct Expected {
    /// For messages: which flow of the scenario.
    what: String,
    local: SocketAddr,
    remote: SocketAddr,
    direction: &'static str,
    sent: u64,
    received: u64,
    close_state: &'static str,
    close_reason: &'static str,
    local_workload: &'static str,
    remote_workload: &'static str,
    remote_source: &'static str,
}

/// Opens a connection from a to `server_ip` (in b) and exchanges `up` then `down`
/// bytes; the sockets are created inside the namespaces, then used from here.
fn open(net: &VethPair, server_ip: &str, up: usize, down: usize) -> Conn {
    let bind = SocketAddr::new(server_ip.parse().expect("ip"), 0);
    let listener = net
        .b
        .spawn(move || TcpListener::bind(bind).expect("bind in b"))
        .join()
        .expect("b");
    let to = listener.local_addr().expect("listener address");
    let mut client = net
        .a
        .spawn(move || TcpStream::connect(to).expect("connect from a"))
        .join()
        .expect("a");
    let (mut server, peer) = listener.accept().expect("accept");
    assert_eq!(peer, client.local_addr().expect("client address"));
    drop(listener);
    client.write_all(&vec![0xA5; up]).expect("client write");
    server.read_exact(&mut vec![0; up]).expect("server read");
    server.write_all(&vec![0x5A; down]).expect("server write");
    client.read_exact(&mut vec![0; down]).expect("client read");
    Conn {
        client,
        server,
        up,
        down,
    }
}

impl Conn {
    /// Closes it, the client first (as `flow-capture`'s kernel tests do: the client
    /// leaves from FIN_WAIT2, the server from LAST_ACK); returns what both ends'
    /// records must say, the server's workload being `server_workload`.
    fn close(self, what: &str, server_workload: &'static str) -> [Expected; 2] {
        let Conn {
            client,
            mut server,
            up,
            down,
        } = self;
        let client_addr = client.local_addr().expect("client address");
        let server_addr = server.local_addr().expect("server address");
        client.shutdown(Shutdown::Write).expect("client shutdown");
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).expect("server reads EOF");
        assert!(rest.is_empty());
        drop(client);
        drop(server);
        let (up, down) = (up as u64, down as u64);
        [
            Expected {
                what: format!("{what}: client end"),
                local: client_addr,
                remote: server_addr,
                direction: "outbound",
                sent: up,
                received: down,
                close_state: "FIN_WAIT2",
                close_reason: "normal",
                local_workload: CLIENT,
                remote_workload: server_workload,
                remote_source: "peer_record",
            },
            Expected {
                what: format!("{what}: server end"),
                local: server_addr,
                remote: client_addr,
                direction: "inbound",
                sent: down,
                received: up,
                close_state: "LAST_ACK",
                close_reason: "normal",
                local_workload: server_workload,
                remote_workload: CLIENT,
                remote_source: "peer_record",
            },
        ]
    }
}

/// A connect from a (`client_ip`) to a port of `server_ip` in b where nothing
/// listens: refused, so only the client end has a record, and its remote side can
/// come only from the ownership map, whose owner of `server_ip` then is
/// `server_workload`.
fn refused(
    net: &VethPair,
    what: &str,
    client_ip: &str,
    server_ip: &str,
    server_workload: &'static str,
) -> Expected {
    // A port nothing listens on: a listener's, closed at once.
    let bind = SocketAddr::new(server_ip.parse().expect("ip"), 0);
    let to = net
        .b
        .spawn(move || {
            TcpListener::bind(bind)
                .expect("bind in b")
                .local_addr()
                .expect("address")
        })
        .join()
        .expect("b");
    let from = SocketAddr::new(client_ip.parse().expect("ip"), 0);
    // Bound before the connect, to know the local port the record will name.
    let local = net
        .a
        .spawn(move || {
            let s = Socket::new(Domain::for_address(to), Type::STREAM, None).expect("socket");
            s.bind(&from.into()).expect("bind in a");
            let local = s
                .local_addr()
                .expect("local address")
                .as_socket()
                .expect("inet");
            let err = s.connect(&to.into()).expect_err("nothing listens there");
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
            local
        })
        .join()
        .expect("a");
    Expected {
        what: what.to_string(),
        local,
        remote: to,
        direction: "outbound",
        sent: 0,
        received: 0,
        close_state: "SYN_SENT",
        close_reason: "refused",
        local_workload: CLIENT,
        remote_workload: server_workload,
        remote_source: "heartbeat",
    }
}

/// The complete lines of the collector's output (the last may be being written).
fn read_lines(out: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
    complete
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
        })
        .collect()
}

/// The lines whose local and remote ends are those of `e`.
fn lines_of<'a>(lines: &'a [Value], e: &Expected) -> Vec<&'a Value> {
    of_kind(lines, e, "final")
}

/// The lines of `e`'s connection of one `record_kind` (a held connection also has
/// interim records, one per window it was open at the window's close).
fn of_kind<'a>(lines: &'a [Value], e: &Expected, kind: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|v| {
            v["local_ip"] == e.local.ip().to_string()
                && v["local_port"] == e.local.port()
                && v["remote_ip"] == e.remote.ip().to_string()
                && v["remote_port"] == e.remote.port()
                && v["record_kind"] == kind
        })
        .collect()
}

/// Waits until every expected flow has a line (decided: held flows are not
/// written), at most `timeout`; returns whether they all came.
fn wait_for_all(out: &Path, expected: &[Expected], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let lines = read_lines(out);
        let missing: Vec<&str> = expected
            .iter()
            .filter(|e| lines_of(&lines, e).is_empty())
            .map(|e| e.what.as_str())
            .collect();
        if missing.is_empty() {
            return true;
        }
        if Instant::now() > deadline {
            eprintln!("after {timeout:?}, still no line for {missing:#?}");
            return false;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// An RFC 3339 time of a line.
fn time(v: &Value, field: &str) -> SystemTime {
    let text = v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is not a time: {v}"));
    humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{field} {text:?}: {e}"))
}

/// The flow's interval: [t_start, t_end], or [t_end, t_end] without a start.
fn interval(v: &Value) -> (SystemTime, SystemTime) {
    let end = time(v, "t_end");
    let start = if v["t_start"].is_null() {
        end
    } else {
        time(v, "t_start")
    };
    (start, end)
}

/// Checks one line against what the scenario made, field by field; returns the
/// mismatches.
fn mismatches(v: &Value, e: &Expected, from: SystemTime, to: SystemTime) -> Vec<String> {
    let want = json!({
        "local_ip": e.local.ip().to_string(),
        "local_port": e.local.port(),
        "remote_ip": e.remote.ip().to_string(),
        "remote_port": e.remote.port(),
        "direction": e.direction,
        "bytes_sent": e.sent,
        "bytes_received": e.received,
        "retransmits": 0,
        "bytes_retransmitted": 0,
        "close_state": e.close_state,
        "close_reason": e.close_reason,
        "local_workload_id": e.local_workload,
        "identity_source": "ip_map",
        "unattributed_reason": null,
        "incomplete": false,
        "host_id": HOST_ID,
        "remote_workload_id": e.remote_workload,
        "remote_identity_source": e.remote_source,
        "remote_unattributed_reason": null,
    });
    let mut wrong: Vec<String> = want
        .as_object()
        .expect("object")
        .iter()
        .filter(|(field, want)| v[field.as_str()] != **want)
        .map(|(field, want)| format!("{field}: {} instead of {want}", v[field.as_str()]))
        .collect();
    let mut expect = |ok: bool, what: &str| {
        if !ok {
            wrong.push(what.to_string());
        }
    };
    let keys: Vec<&str> = v
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let missing: Vec<&str> = FIELDS.into_iter().filter(|f| !keys.contains(f)).collect();
    let extra: Vec<&str> = keys.into_iter().filter(|k| !FIELDS.contains(k)).collect();
    expect(
        missing.is_empty() && extra.is_empty(),
        &format!("fields missing {missing:?}, unknown {extra:?}"),
    );
    // The times: both known (the tracer saw the open), ordered, within the test.
    let slack = Duration::from_secs(1);
    expect(!v["t_start"].is_null(), "t_start is null");
    let (start, end) = interval(v);
    expect(start <= end, "t_start after t_end");
    expect(
        start + slack >= from && end <= to + slack,
        "times outside the test",
    );
    // What a real exchange has (a refused connect sent one SYN, got one RST).
    expect(
        v["segs_in"].as_u64().is_some_and(|n| n >= 1),
        "segs_in not >= 1",
    );
    expect(
        v["segs_out"].as_u64().is_some_and(|n| n >= 1),
        "segs_out not >= 1",
    );
    if e.sent > 0 {
        expect(
            v["srtt_us"].as_u64().is_some_and(|n| n > 0),
            "no RTT sample",
        );
    }
    // batch_id is host/instance/sequence; with record_index, the flow's unique ID.
    let batch = v["batch_id"].as_str().unwrap_or_default();
    let parts: Vec<&str> = batch.split('/').collect();
    expect(
        parts.len() == 3
            && parts[0] == HOST_ID
            && parts[1].len() == 32
            && parts[1].chars().all(|c| c.is_ascii_hexdigit())
            && parts[2].parse::<u64>().is_ok(),
        "batch_id is not host/instance/sequence",
    );
    expect(v["record_index"].is_u64(), "record_index is not a number");
    wrong
}

/// Who owned `ip` over [start, end] in the scenario: the workloads an attribution
/// may name (both around the move, which the tracer's clock places within a margin).
fn owners(
    ip: IpAddr,
    (start, end): (SystemTime, SystemTime),
    moved: (SystemTime, SystemTime),
) -> Vec<&'static str> {
    let margin = Duration::from_secs(1);
    let ip = ip.to_canonical().to_string();
    if ip == VethPair::A4 || ip == VethPair::A6 {
        vec![CLIENT]
    } else if ip == VethPair::B4 || ip == VethPair::B6 {
        if end + margin < moved.0 {
            vec![SERVER_BEFORE]
        } else if start > moved.1 + margin {
            vec![SERVER_AFTER]
        } else {
            vec![SERVER_BEFORE, SERVER_AFTER]
        }
    } else {
        // Nothing else is in the IP map: no heartbeat names an owner for it.
        Vec::new()
    }
}

#[test]
fn remote_side_is_attributed_and_follows_an_ip_to_its_new_owner() {
    let began = Instant::now();
    flow_testkit::mount_kernel_filesystems();
    let from = SystemTime::now();
    let scratch = Scratch::new("attribution");
    let net = VethPair::new();
    for (ip, workload) in [
        (VethPair::A4, CLIENT),
        (VethPair::A6, CLIENT),
        (VethPair::B4, SERVER_BEFORE),
        (VethPair::B6, SERVER_BEFORE),
    ] {
        set_owner(scratch.pins(), ip, workload);
    }
    let mut collector = Collector::start(&scratch);
    let (child, _logs) = common::start_exporter_at(&collector.url(), &scratch, "1s", &[]);
    let mut exporter = Exporter(Some(child));

    let mut expected: Vec<Expected> = Vec::new();
    let families = [(VethPair::A4, VethPair::B4), (VethPair::A6, VethPair::B6)];
    // The same steps before and after the move of b's IPs to another workload:
    // 1. one connection per family held open across the refused connect, so that
    //    b's record of it (a heartbeat for b's IP) spans the connect;
    // 2. short exchanges per family (both ends traced: peer records);
    // 3. a refused connect per family, 3 s later (only a's end is traced);
    // 4. 3 s later, the held connections close: b's records of them go out.
    // b's claim on its IP must cover the refused connect's time with the clock
    // tolerance (2 s) to spare on both sides, or the collector cannot confirm it
    // (`owner_unconfirmed`).
    let phase = |label: &str, owner: &'static str, expected: &mut Vec<Expected>| {
        let held: Vec<Conn> = families
            .iter()
            .map(|(_, b)| open(&net, b, 11, 22))
            .collect();
        for (i, (_, b)) in families.iter().enumerate() {
            let conn = open(&net, b, 1_234 + i, 5_678 + i);
            expected.extend(conn.close(&format!("{label}: exchange with {b}"), owner));
        }
        thread::sleep(TOLERANCE + Duration::from_secs(1));
        for (a, b) in families {
            let what = format!("{label}: refused connect to {b}");
            expected.push(refused(&net, &what, a, b, owner));
        }
        thread::sleep(TOLERANCE + Duration::from_secs(1));
        for (conn, (_, b)) in held.into_iter().zip(families) {
            expected.extend(conn.close(&format!("{label}: held connection to {b}"), owner));
        }
    };

    phase("before the move", SERVER_BEFORE, &mut expected);
    // b's last records as server-b closed above; the move comes 1 s after them and
    // the first flows as server-c the tolerance plus 1 s after the move: more than
    // twice the tolerance between the two owners' heartbeats, so no flow of the
    // scenario is near the change of owner (none is `owner_changed`).
    thread::sleep(Duration::from_millis(1000));
    let moved_from = SystemTime::now();
    set_owner(scratch.pins(), VethPair::B4, SERVER_AFTER);
    set_owner(scratch.pins(), VethPair::B6, SERVER_AFTER);
    let moved_to = SystemTime::now();
    thread::sleep(TOLERANCE + Duration::from_secs(1));
    phase("after the move", SERVER_AFTER, &mut expected);

    thread::sleep(Duration::from_millis(500)); // captured and read (50 ms poll)
    exporter.stop();
    let to = SystemTime::now();
    // Refused connects wait out the peer wait (the hold-back, 5 s) before the
    // ownership map decides them.
    let all_came = wait_for_all(&collector.out, &expected, Duration::from_secs(30));
    let status = collector.stop();
    assert!(status.success(), "the collector's exit status: {status}");
    let lines = read_lines(&collector.out);
    assert!(
        all_came,
        "some flows of the scenario were not written before the collector stopped"
    );

    // Every flow of the scenario: exactly one line, right field by field.
    let mut wrong = Vec::new();
    for e in &expected {
        match lines_of(&lines, e).as_slice() {
            [v] => {
                let bad = mismatches(v, e, from, to);
                if !bad.is_empty() {
                    wrong.push(format!("{}: {bad:?}\n    {v}", e.what));
                }
                // Its interim records: the same connection, and never another
                // remote workload (unattributed is acceptable).
                for interim in of_kind(&lines, e, "interim") {
                    let remote = &interim["remote_workload_id"];
                    if interim["flow_id"] != v["flow_id"]
                        || !(remote.is_null() || *remote == e.remote_workload)
                        || interim["local_workload_id"] != e.local_workload
                    {
                        wrong.push(format!("{}: interim record {interim}", e.what));
                    }
                }
            }
            found => wrong.push(format!("{}: {} lines {found:#?}", e.what, found.len())),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} flows are wrong:\n{}",
        wrong.len(),
        expected.len(),
        wrong.join("\n")
    );

    // The premise of the heartbeat attributions: b's record of each held connection
    // (a heartbeat for b's IP) spans the refused connect made while it was open,
    // and no end in b has a record of a refused connect.
    for e in expected.iter().filter(|e| e.close_reason == "refused") {
        let connect = interval(lines_of(&lines, e)[0]);
        let spanning = lines.iter().any(|v| {
            v["local_ip"] == e.remote.ip().to_string()
                && v["local_workload_id"] == e.remote_workload
                && {
                    let (start, end) = interval(v);
                    start <= connect.0 && end >= connect.1
                }
        });
        assert!(spanning, "{}: no record of b spans it", e.what);
        assert!(
            !lines
                .iter()
                .any(|v| v["local_ip"] == e.remote.ip().to_string()
                    && v["local_port"] == e.remote.port()),
            "{}: a record of the refusing end",
            e.what
        );
    }

    // Each flow is written once: batch ID and index are unique.
    let mut ids: HashMap<(String, u64), usize> = HashMap::new();
    for v in &lines {
        let id = (
            v["batch_id"].as_str().unwrap_or_default().to_string(),
            v["record_index"].as_u64().unwrap_or(u64::MAX),
        );
        *ids.entry(id).or_default() += 1;
    }
    let repeated: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "flows written twice: {repeated:?}");

    // No line of the output is misattributed: every named remote workload is one
    // that held the remote IP at the flow's time (the exporter's connections to the
    // collector and anything else traced meanwhile included: nobody owns their IPs).
    let mut misattributed = Vec::new();
    // Flow lines only: the windows' completeness lines name no remote end.
    for v in lines.iter().filter(|v| v["record_type"] != "completeness") {
        let remote: IpAddr = v["remote_ip"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("remote_ip: {v}"));
        match v["remote_workload_id"].as_str() {
            Some(workload) => {
                let may = owners(remote, interval(v), (moved_from, moved_to));
                let source = v["remote_identity_source"].as_str().unwrap_or_default();
                if !may.contains(&workload)
                    || !["peer_record", "heartbeat"].contains(&source)
                    || !v["remote_unattributed_reason"].is_null()
                {
                    misattributed.push(format!("may name {may:?}: {v}"));
                }
            }
            None => {
                if v["remote_identity_source"] != "none"
                    || !v["remote_unattributed_reason"].is_string()
                {
                    misattributed.push(format!("unattributed without a reason: {v}"));
                }
            }
        }
    }
    assert!(
        misattributed.is_empty(),
        "misattributed lines:\n{}",
        misattributed.join("\n")
    );
    eprintln!(
        "{} flows of the scenario checked among {} lines, in {:?}",
        expected.len(),
        lines.len(),
        began.elapsed()
    );
}
