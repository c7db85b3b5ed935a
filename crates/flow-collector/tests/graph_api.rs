//! The dependency graph's read API on a real `flowcollector`: chunks of two traced
//! hosts and their untraced peers go in over HTTP, `GET /api/v1/graph` says exactly
//! which edges, nodes and counts came of them (a connection between the two traced
//! workloads counted once, though both ends report it), the workload filter keeps
//! the edges touching it, bad parameters are refused with a reason; and the
//! aggregation's memory per edge, measured with a counting allocator.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use flow_batch::wire::{BatchId, InstanceId};
use flow_collector::{
    attribution::{AttributedFlow, RemoteIdentitySource, RemoteUnattributedReason},
    graph::{GraphAggregator, GraphConfig, GraphQuery},
};
use flow_record::{CloseReason, Direction, FlowRecord, IdentitySource, TcpState};
use serde_json::Value;

mod common;
use common::{Collector, frame, metric};

/// A record of `local` (workload `workload`) with `remote`, ending `t_end`.
fn rec(
    local: &str,
    remote: &str,
    workload: &str,
    direction: Direction,
    t_end: SystemTime,
    bytes: (u64, u64),
) -> FlowRecord {
    let mut r = flow_testkit::record()
        .local(local)
        .remote(remote)
        .direction(direction)
        .t_start(Some(t_end - Duration::from_millis(300)))
        .t_end(t_end)
        .bytes(bytes.0, bytes.1)
        .workload(workload, IdentitySource::IpMap)
        .build();
    r.stats.srtt_us = 800;
    r
}

/// The graph, once it has aggregated `flows` flows.
fn graph_with(c: &Collector, query: &str, flows: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, body) = c.get(&format!("/api/v1/graph{query}"));
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).expect("JSON");
        if v["flows"].as_u64() == Some(flows) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "flows never reached {flows}: {v}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn edge<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .find(|e| e["id"] == id)
        .unwrap_or_else(|| panic!("no edge {id} in {v:#}"))
}

fn node<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["id"] == id)
        .unwrap_or_else(|| panic!("no node {id} in {v:#}"))
}

#[test]
fn the_graph_api_answers_what_the_chunks_said() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(
        dir.path(),
        &[
            "--hold-back",
            "1s",
            "--peer-wait",
            "1s",
            "--graph-retention",
            "2h",
            "--graph-top-edges",
            "10",
        ],
    );
    let t = SystemTime::now() - Duration::from_secs(5);
    let (a, b) = ("spiffe://prod/a", "spiffe://prod/b");
    // Host a: two connections to b, one refused by an untraced database.
    let mut refused = rec(
        "10.0.0.1:40003",
        "198.51.100.7:5432",
        a,
        Direction::Outbound,
        t,
        (0, 0),
    );
    refused.close_state = TcpState(7);
    refused.close_reason = CloseReason::Refused;
    let host_a = vec![
        rec(
            "10.0.0.1:40001",
            "10.0.0.2:443",
            a,
            Direction::Outbound,
            t,
            (100, 200),
        ),
        rec(
            "10.0.0.1:40002",
            "10.0.0.2:443",
            a,
            Direction::Outbound,
            t,
            (300, 400),
        ),
        refused,
    ];
    // Host b: its ends of the same two connections, and one from an untraced client.
    let host_b = vec![
        rec(
            "10.0.0.2:443",
            "10.0.0.1:40001",
            b,
            Direction::Inbound,
            t,
            (200, 100),
        ),
        rec(
            "10.0.0.2:443",
            "10.0.0.1:40002",
            b,
            Direction::Inbound,
            t,
            (400, 300),
        ),
        rec(
            "10.0.0.2:443",
            "192.0.2.9:50000",
            b,
            Direction::Inbound,
            t,
            (1_000, 10),
        ),
    ];
    let (status, result, body) = c.post(&frame("host-a", 1, 0, host_a));
    assert_eq!((status, result.as_str()), (200, "accepted"), "{body}");
    let (status, result, body) = c.post(&frame("host-b", 2, 0, host_b));
    assert_eq!((status, result.as_str()), (200, "accepted"), "{body}");

    let v = graph_with(&c, "", 6);
    assert_eq!(v["edges"].as_array().map(Vec::len), Some(3), "{v:#}");
    let ab = edge(&v, "spiffe://prod/a -> spiffe://prod/b:443");
    assert_eq!(ab["source"], a);
    assert_eq!(ab["target"], b);
    assert_eq!(ab["port"], 443);
    // Once, though both ends reported both connections.
    assert_eq!(ab["connections"], 2);
    assert_eq!(ab["bytes_sent"], 400);
    assert_eq!(ab["bytes_received"], 600);
    assert_eq!(ab["failed_total"], 0);
    assert_eq!(ab["rtt_us"]["samples"], 2);
    assert_eq!(ab["recent"].as_array().map(Vec::len), Some(2));
    assert!(
        ab["recent"][0]["flow"]
            .as_str()
            .is_some_and(|f| f.starts_with("host-a/")),
        "{ab:#}"
    );
    let db = edge(&v, "spiffe://prod/a -> unattributed:198.51.100.7:5432");
    assert_eq!(db["connections"], 1);
    assert_eq!(db["failed"], serde_json::json!({"refused": 1}));
    assert_eq!(db["failed_total"], 1);
    let client = edge(&v, "unattributed:192.0.2.9 -> spiffe://prod/b:443");
    assert_eq!(client["connections"], 1);
    assert_eq!(client["bytes_sent"], 10);
    assert_eq!(client["bytes_received"], 1_000);
    assert_eq!(v["nodes"].as_array().map(Vec::len), Some(4), "{v:#}");
    let na = node(&v, a);
    assert_eq!(na["kind"], "workload");
    assert_eq!(na["connections_out"], 3);
    assert_eq!(na["connections_in"], 0);
    assert_eq!(na["bytes_out"], 400);
    assert_eq!(na["failed"], 1);
    let nb = node(&v, b);
    assert_eq!(nb["connections_in"], 3);
    assert_eq!(nb["bytes_in"], 410);
    assert_eq!(nb["bytes_out"], 1_600);
    assert_eq!(node(&v, "unattributed:192.0.2.9")["kind"], "unattributed");
    assert_eq!(v["unattributed_flows"], 2);
    assert_eq!(
        v["folded"],
        serde_json::json!({"edges": 0, "connections": 0})
    );
    assert_eq!(v["clamped"], false);
    assert_eq!(v["truncated"], false);
    assert!(v["minutes"].as_u64().is_some_and(|m| m >= 15));

    // The filter: the edges touching a (percent-encoded, as a browser sends it).
    let v = graph_with(&c, "?workload=spiffe%3A%2F%2Fprod%2Fa", 6);
    let ids: Vec<&str> = v["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.iter().all(|id| id.starts_with("spiffe://prod/a -> ")));

    // A range in Unix seconds and RFC 3339, and one before the retention: clamped.
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let v = graph_with(&c, &format!("?from={}&to={}", now - 120, now + 60), 6);
    assert_eq!(
        edge(&v, "spiffe://prod/a -> spiffe://prod/b:443")["connections"],
        2
    );
    let (status, _, body) = c.get("/api/v1/graph?from=2020-01-01T00:00:00Z");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["clamped"], true);
    assert_eq!(v["flows"], 6);
    // Which node answered, and since when it holds data (it started minutes ago).
    assert!(
        v["collector"].as_str().is_some_and(|c| !c.is_empty()),
        "{v}"
    );
    assert!(v["held_from"].as_str().is_some_and(|t| t > "2026"), "{v}");
    let (status, _, body) = c.get(&format!("/api/v1/graph?to={}", now - 3_600));
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["flows"], 0);
    assert_eq!(v["edges"], serde_json::json!([]));

    // Bad parameters: 400 with one line naming the parameter.
    for (query, names) in [
        ("from=yesterday", "from:"),
        ("to=12:00", "to:"),
        ("from=2000&to=1000", "from:"),
        ("workload=", "workload:"),
        ("window=5m", "window:"),
        ("to=253402300800", "to:"),
        ("workload=a&workload=b", "workload:"),
    ] {
        let (status, _, body) = c.get(&format!("/api/v1/graph?{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.starts_with(names), "{query}: {body}");
        assert_eq!(body.lines().count(), 1, "{body}");
    }
    // The page forbids what it does not load itself.
    let head = raw_head(&c, "/");
    assert!(
        head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{head}"
    );
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    // Not a page asset: 404; the chunk path still answers as before.
    assert_eq!(c.get("/assets/no-such-file.js").0, 404);
    assert_eq!(c.get("/v1/chunks").0, 405);

    let (status, _, text) = c.get("/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        metric(
            &text,
            "flowcollector_graph_flows_total{result=\"aggregated\"}"
        ),
        6
    );
    assert_eq!(
        metric(&text, "flowcollector_graph_flows_counted_by_peer_total"),
        2
    );
    assert_eq!(metric(&text, "flowcollector_graph_edges"), 3);
    c.stop();
}

/// Net bytes allocated by this thread (the tests run on threads of their own).
struct Counting;

thread_local! {
    static NET: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // try_with: a thread's allocations after its locals are gone are not counted.
    let _ = NET.try_with(|n| n.set(n.get() + delta));
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn net() -> isize {
    NET.with(Cell::get)
}

/// `owners` workloads with `per_owner` distinct remotes each, ending at `t_end`.
fn flows(owners: u32, per_owner: u32, t_end: SystemTime) -> Vec<AttributedFlow> {
    let batch = Arc::new(BatchId {
        host: "host-1".into(),
        instance: InstanceId::new(1),
        sequence: 1,
    });
    let mut out = Vec::new();
    for o in 0..owners {
        let workload = format!("spiffe://prod/workload-{o}");
        for e in 0..per_owner {
            let remote = format!("10.{}.{}.{}:443", o / 256, o % 256, e + 1);
            let mut record = rec(
                "10.255.0.1:40000",
                &remote,
                &workload,
                Direction::Outbound,
                t_end,
                (100, 200),
            );
            record.stats.srtt_us = 500 + 7 * e;
            out.push(AttributedFlow {
                record,
                batch: Arc::clone(&batch),
                record_index: o * per_owner + e,
                remote_workload_id: None,
                remote_identity_source: RemoteIdentitySource::None,
                remote_unattributed_reason: Some(RemoteUnattributedReason::NoOwnerKnown),
            });
        }
    }
    out
}

#[test]
fn memory_per_edge() {
    // Dense: 200 workloads with 50 remotes each; sparse: 10,000 workloads with one
    // remote each (every owner's map holding a single edge: the worst case).
    let dense = edge_memory(200, 50);
    let sparse = edge_memory(10_000, 1);
    for (name, (first, steady, total, query_kib)) in [("dense", dense), ("sparse", sparse)] {
        println!(
            "graph memory per edge ({name}): {first} bytes in its first minute (one recent \
             flow included), {steady} bytes in each further minute once its 5 recent flows \
             are held, {total} bytes for 7 minutes; a query answer of 5,000 edges: \
             {query_kib} KiB"
        );
    }
    assert!(dense.1 < 400, "{} bytes per edge-minute", dense.1);
    assert!(dense.0 < 1_000, "{} bytes per new edge", dense.0);
    assert!(sparse.1 < 1_200, "{} bytes per edge-minute", sparse.1);
    // The table of matched connections: 10,000 connections on one edge.
    let now = SystemTime::now();
    let mut graph = GraphAggregator::new(GraphConfig::default());
    graph.add_flows(&flows(1, 1, now - Duration::from_secs(30)), now);
    let many: Vec<AttributedFlow> = (0..10_000u16)
        .map(|i| {
            let mut f = flows(1, 1, now - Duration::from_secs(30)).remove(0);
            f.record.local.set_port(20_000 + i);
            f
        })
        .collect();
    let before = net();
    graph.add_flows(&many, now);
    let per_connection = (net() - before) / 10_000;
    println!("graph memory per matched connection: {per_connection} bytes");
    assert_eq!(graph.edges_held(), 1);
    assert!(
        per_connection < 100,
        "{per_connection} bytes per connection"
    );
}

/// Seven minutes of the same `owners x per_owner` edges: bytes per edge in its first
/// minute, in its seventh, in all seven; and a whole query's transient KiB.
fn edge_memory(owners: u32, per_owner: u32) -> (isize, isize, isize, isize) {
    let edges = (owners * per_owner) as isize;
    let now = SystemTime::now();
    let minutes: Vec<Vec<AttributedFlow>> = (0..7u64)
        .map(|m| flows(owners, per_owner, now - Duration::from_secs(60 * (8 - m))))
        .collect();
    let mut graph = GraphAggregator::new(GraphConfig::default());
    let mut grown = Vec::new();
    for minute in &minutes {
        let before = net();
        graph.add_flows(minute, now);
        grown.push((net() - before) / edges);
    }
    assert_eq!(graph.edges_held(), 7 * edges as usize);
    // A query of every minute: its transient memory.
    let before_query = net();
    let answer = graph.query(&GraphQuery::new(now - Duration::from_secs(600), now, None));
    let query_bytes = net() - before_query;
    assert_eq!(answer.edges.len(), 5_000);
    // From the sixth minute on, an edge's recent flows (5) are full: what a minute
    // adds is the edge-minute alone (and the minute's connection, matched).
    (grown[0], grown[6], grown.iter().sum(), query_bytes / 1024)
}

/// `flowcollector config check` with `args`: success and what it printed.
fn config_check(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(common::BIN)
        .args(["config", "check", "--out", "/tmp/x.jsonl"])
        .args(args)
        .env_remove("FLOWCOLLECTOR_CONFIG")
        .output()
        .expect("run config check");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_graph_flags_are_checked_and_shown() {
    let (ok, text) = config_check(&[]);
    assert!(ok, "{text}");
    assert!(text.contains("graph.retention = 6h"), "{text}");
    assert!(text.contains("graph.top_edges = 50"), "{text}");
    assert!(text.contains("graph.max_edges = 500000"), "{text}");
    let (ok, text) = config_check(&["--graph-retention", "2h", "--graph-top-edges", "7"]);
    assert!(ok && text.contains("graph.retention = 2h"), "{text}");
    assert!(text.contains("graph.top_edges = 7"), "{text}");
    let (ok, text) = config_check(&["--graph-retention", "30s"]);
    assert!(
        !ok && text.contains("graph.retention (--graph-retention)"),
        "{text}"
    );
    let (ok, text) = config_check(&["--graph-top-edges", "0"]);
    assert!(!ok && text.contains("graph.top_edges"), "{text}");
    let (ok, text) = config_check(&[]);
    assert!(ok && text.contains("graph.enabled = true"), "{text}");
    let (ok, text) = config_check(&["--no-graph"]);
    assert!(ok && text.contains("graph.enabled = false"), "{text}");
}

#[test]
fn with_no_graph_nothing_is_aggregated_and_the_page_and_api_are_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = Collector::start(dir.path(), &["--hold-back", "0s", "--no-graph"]);
    let t = SystemTime::now() - Duration::from_secs(5);
    let flows = vec![rec(
        "10.0.0.1:40000",
        "10.0.0.2:443",
        "spiffe://prod/a",
        Direction::Outbound,
        t,
        (100, 10),
    )];
    let (status, result, body) = c.post(&frame("host-a", 1, 0, flows));
    assert_eq!((status, result.as_str()), (200, "accepted"), "{body}");
    for path in ["/", "/assets/app.js", "/api/v1/graph"] {
        let (status, _, body) = c.get(path);
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body.contains("--no-graph"), "{path}: {body}");
    }
    // The flow was written (the output took it), and the graph took nothing.
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let (_, _, text) = c.get("/metrics");
        if metric(&text, "flowcollector_flows_out_total") == 1 || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(metric(&text, "flowcollector_flows_out_total"), 1, "{text}");
    assert_eq!(
        metric(
            &text,
            "flowcollector_graph_flows_total{result=\"aggregated\"}"
        ),
        0
    );
    c.stop();
}

/// The status line and headers of `GET path`, lower-cased.
fn raw_head(c: &Collector, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(&c.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .expect("get");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    text.split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}
