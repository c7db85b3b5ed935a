//! The standard exports for real: the `flowexporter` binary traces real TCP
//! connections (IPv4 and IPv6 loopback) and sends each chunk to the reference
//! collector over HTTP, to an OTLP/HTTP receiver (Python, decoding with the
//! OpenTelemetry project's own protobuf definitions) and as IPFIX over UDP to Debian's
//! `nfcapd`, read back with `nfdump`. Every record of the test's connections must
//! arrive at all three, once, and say the same thing: the OTLP attributes and the
//! IPFIX fields are compared, field by field, with the collector's line for the same
//! flow, and the bytes with what the test itself sent.

mod common;

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::{Exporter, Scratch, exchange, runtime, start_collector, start_exporter_at};
use flow_collector::FaultInjection;
use flow_testkit::{
    nfdump::{Nfcapd, parse_utc_ms},
    otlp::{Receiver, attributes, log_records},
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// Whether the JSON record `v` (the collector's line) is an end of a connection to
/// one of `servers`.
fn ours(servers: &[SocketAddr], local: (&str, u64), remote: (&str, u64)) -> bool {
    servers.iter().any(|s| {
        let (ip, port) = (s.ip().to_string(), u64::from(s.port()));
        (local.0 == ip && local.1 == port) || (remote.0 == ip && remote.1 == port)
    })
}

/// A flow's key in every export: (local address, local port, remote port).
type Key = (String, u64, u64);

/// An OTLP log record: its attributes as text, and its `time_unix_nano`.
type LogRecord = (HashMap<String, String>, u64);

/// The collector's final records of connections to `servers`, by key.
fn collector_records(out: &std::path::Path, servers: &[SocketAddr]) -> HashMap<Key, Value> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let mut by_key = HashMap::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).expect("a JSON line");
        if v["record_kind"] != "final" {
            continue;
        }
        let local = (
            v["local_ip"].as_str().unwrap_or(""),
            v["local_port"].as_u64().unwrap_or(0),
        );
        let remote = (
            v["remote_ip"].as_str().unwrap_or(""),
            v["remote_port"].as_u64().unwrap_or(0),
        );
        if ours(servers, local, remote) {
            let key = (local.0.to_owned(), local.1, remote.1);
            assert!(by_key.insert(key, v.clone()).is_none(), "twice: {v}");
        }
    }
    by_key
}

/// An attribute's value as text (strings as they are, int64 as the decimal string
/// protobuf's JSON mapping writes, booleans as `true`/`false`).
fn attr_text(v: &Value) -> String {
    for kind in ["string_value", "int_value"] {
        match &v[kind] {
            Value::String(s) => return s.clone(),
            Value::Number(n) => return n.to_string(),
            _ => {}
        }
    }
    match &v["bool_value"] {
        Value::Bool(b) => b.to_string(),
        // protobuf's JSON mapping leaves a false bool out.
        _ => "false".into(),
    }
}

/// The OTLP log records of connections to `servers`, by key: their attributes, and
/// `time_unix_nano`; with how many final log records of them arrived in all.
fn otlp_records(requests: &[Value], servers: &[SocketAddr]) -> (HashMap<Key, LogRecord>, usize) {
    let mut by_key = HashMap::new();
    let mut count = 0;
    for request in requests {
        for log in log_records(request) {
            let a: HashMap<String, String> = attributes(&log["attributes"])
                .into_iter()
                .map(|(k, v)| (k, attr_text(&v)))
                .collect();
            if a.get("flowexporter.record_kind").map(String::as_str) != Some("final") {
                continue;
            }
            let get = |k: &str| a.get(k).cloned().unwrap_or_default();
            let local = (
                get("source.address"),
                get("source.port").parse().unwrap_or(0),
            );
            let remote = (
                get("destination.address"),
                get("destination.port").parse().unwrap_or(0),
            );
            if ours(servers, (&local.0, local.1), (&remote.0, remote.1)) {
                count += 1;
                let time = log["time_unix_nano"]
                    .as_str()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                by_key.insert((local.0, local.1, remote.1), (a, time));
            }
        }
    }
    (by_key, count)
}

/// The collector line's field `f` as text (`null` fields as `None`).
fn field(v: &Value, f: &str) -> Option<String> {
    match &v[f] {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[test]
fn real_connections_reach_the_collector_an_otlp_receiver_and_nfcapd_saying_the_same() {
    flow_testkit::mount_kernel_filesystems();
    let scratch = Scratch::new("exports");
    let rt = runtime();
    let collector_port = common::free_port();
    let collector_out = scratch.path("flows.jsonl");
    let _collector = start_collector(
        &rt,
        collector_port,
        &collector_out,
        FaultInjection::default(),
    );
    let otlp_port = common::free_port();
    let receiver = Receiver::start(otlp_port, &scratch.path("otlp.jsonl"), "");
    let ipfix_port = common::free_port();
    let nfcapd = Nfcapd::start(ipfix_port);
    let otlp = format!("http://127.0.0.1:{otlp_port}");
    let ipfix = format!("udp://127.0.0.1:{ipfix_port}");
    let (child, _logs) = start_exporter_at(
        &format!("http://127.0.0.1:{collector_port}"),
        &scratch,
        "2s",
        &[
            "--otlp-endpoint",
            &otlp,
            "--otlp-header",
            "x-test=yes",
            "--ipfix-collector",
            &ipfix,
        ],
    );
    let exporter = Exporter::new(child);

    // IPv4 and IPv6, distinct byte counts: each connection's two ends are records.
    let sizes = [1_000usize, 2_345, 7_777, 12_000];
    let mut servers = Vec::new();
    let mut sent = HashMap::new();
    for (n, size) in sizes.iter().enumerate() {
        let ip = if n % 2 == 0 { "127.0.0.1" } else { "::1" };
        let (server, _) = exchange(ip, *size);
        sent.insert(server.port(), *size as u64);
        servers.push(server);
    }
    let want = servers.len() * 2;

    // The collector and the OTLP receiver both have every record.
    let deadline = Instant::now() + WAIT;
    let (collected, logs) = loop {
        let collected = collector_records(&collector_out, &servers);
        let (logs, count) = otlp_records(&receiver.requests(), &servers);
        if collected.len() >= want && count >= want {
            assert_eq!(count, want, "every record once over OTLP");
            break (collected, logs);
        }
        assert!(
            Instant::now() < deadline,
            "collector {} of {want}, OTLP {count} of {want}",
            collected.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(collected.len(), want, "every record once at the collector");
    exporter.stop();
    let stored = nfcapd.stop();

    // The bytes are what the test sent: the client end sent `size`, the server end 2x.
    for (key, v) in &collected {
        let server_end = sent.contains_key(&(key.1 as u16));
        let size = sent
            .get(&(key.1 as u16))
            .or_else(|| sent.get(&(key.2 as u16)))
            .copied()
            .expect("one of ours");
        let (out, inn) = if server_end {
            (2 * size, size)
        } else {
            (size, 2 * size)
        };
        assert_eq!(v["bytes_sent"], out, "{v}");
        assert_eq!(v["bytes_received"], inn, "{v}");
    }

    // OTLP: every attribute the schema maps from a field of the collector's line.
    let mapped = [
        ("source.address", "local_ip"),
        ("source.port", "local_port"),
        ("destination.address", "remote_ip"),
        ("destination.port", "remote_port"),
        ("flowexporter.direction", "direction"),
        ("flowexporter.bytes_sent", "bytes_sent"),
        ("flowexporter.bytes_received", "bytes_received"),
        ("flowexporter.segments_in", "segs_in"),
        ("flowexporter.segments_out", "segs_out"),
        ("flowexporter.tcp.retransmits", "retransmits"),
        ("flowexporter.tcp.srtt_us", "srtt_us"),
        ("flowexporter.tcp.rttvar_us", "rttvar_us"),
        (
            "flowexporter.tcp.bytes_retransmitted",
            "bytes_retransmitted",
        ),
        ("flowexporter.tcp.close_state", "close_state"),
        ("flowexporter.tcp.close_reason", "close_reason"),
        ("flowexporter.source.workload", "local_workload_id"),
        ("flowexporter.source.identity_source", "identity_source"),
        (
            "flowexporter.source.unattributed_reason",
            "unattributed_reason",
        ),
        ("flowexporter.incomplete", "incomplete"),
        ("flowexporter.record_kind", "record_kind"),
        ("flowexporter.flow_id", "flow_id"),
        ("process.pid", "pid"),
        ("process.executable.name", "comm"),
        ("flowexporter.cgroup_id", "cgroup_id"),
        // The same chunk, the same position: the collector's flow ID.
        ("flowexporter.batch_id", "batch_id"),
        ("flowexporter.record_index", "record_index"),
    ];
    for (key, v) in &collected {
        let (a, time) = logs
            .get(key)
            .unwrap_or_else(|| panic!("no OTLP log record for {key:?}"));
        for (attribute, f) in mapped {
            assert_eq!(
                a.get(attribute).cloned(),
                field(v, f),
                "{attribute} of {key:?}: {v}"
            );
        }
        assert_eq!(a.get("network.transport").map(String::as_str), Some("tcp"));
        let family = if key.0.contains(':') { "ipv6" } else { "ipv4" };
        assert_eq!(a.get("network.type").map(String::as_str), Some(family));
        let t_end = field(v, "t_end").expect("t_end");
        assert_eq!(time / 1_000_000, parse_utc_ms(&t_end), "time of {key:?}");
    }
    let requests = receiver.requests();
    for request in &requests {
        assert_eq!(request["path"], "/v1/logs");
        assert_eq!(request["headers"]["content-encoding"], "gzip");
        assert_eq!(request["headers"]["x-test"], "yes");
        let resource =
            attributes(&request["request"]["resource_logs"][0]["resource"]["attributes"]);
        let host = resource
            .iter()
            .find(|(k, _)| k == "host.id")
            .map(|(_, v)| attr_text(v));
        assert_eq!(host.as_deref(), Some("test-host"));
    }

    // IPFIX, as nfdump read it from nfcapd's file.
    let mut seen = 0;
    for flow in &stored.flows {
        let src = flow.get("src4_addr").or_else(|| flow.get("src6_addr"));
        let Some(src) = src.and_then(Value::as_str) else {
            continue;
        };
        let number = |k: &str| {
            flow[k]
                .as_u64()
                .or_else(|| flow[k].as_str().and_then(|s| s.parse().ok()))
        };
        let key = (
            src.to_owned(),
            number("src_port").unwrap_or(0),
            number("dst_port").unwrap_or(0),
        );
        let Some(v) = collected.get(&key) else {
            continue;
        };
        let last = flow["last"].as_str().map(parse_utc_ms);
        if last != field(v, "t_end").map(|t| parse_utc_ms(&t)) {
            // An interim record of the same connection.
            continue;
        }
        seen += 1;
        let dst = flow.get("dst4_addr").or_else(|| flow.get("dst6_addr"));
        assert_eq!(
            dst.and_then(Value::as_str),
            v["remote_ip"].as_str(),
            "{flow}"
        );
        assert_eq!(number("proto"), Some(6), "{flow}");
        assert_eq!(number("in_bytes"), v["bytes_sent"].as_u64(), "{flow}");
        assert_eq!(number("out_bytes"), v["bytes_received"].as_u64(), "{flow}");
        assert_eq!(number("in_packets"), v["segs_out"].as_u64(), "{flow}");
        assert_eq!(number("out_packets"), v["segs_in"].as_u64(), "{flow}");
        let first = field(v, "t_start").map_or(0, |t| parse_utc_ms(&t));
        assert_eq!(
            flow["first"].as_str().map(parse_utc_ms),
            Some(first),
            "{flow}"
        );
    }
    assert_eq!(
        seen, want,
        "every record once in nfcapd's file; its log: {}",
        stored.log
    );
}
