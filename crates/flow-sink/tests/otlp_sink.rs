//! The OTLP logs sink against an independent receiver: a Python http.server that
//! decodes every request with the official OpenTelemetry protobuf definitions
//! (opentelemetry-proto's `ExportLogsServiceRequest`,
//! `crates/flow-testkit/scripts/otlp_receiver.py`),
//! compared field by field with the records sent. docs/schema.md's OpenTelemetry
//! column is compared with the attributes the sink emits, so they cannot drift.

mod common;

use std::{
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use common::*;
use flow_batch::{Chunk, Completeness, wire::InstanceId};
use flow_record::{
    CloseReason, Direction, FlowId, FlowRecord, IdentitySource, ProcessInfo, RecordKind,
    SocketStats, TcpState, UnattributedReason,
};
use flow_sink::{FlowSink, OtlpSink, OtlpSinkConfig, RetryPolicy};
use flow_testkit::otlp::Receiver;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// A sink for the receiver on `port`, run `instance`, spooling in `spool`.
fn config(port: u16, instance: u128, spool: &Path) -> OtlpSinkConfig {
    OtlpSinkConfig::new(
        format!("http://127.0.0.1:{port}"),
        HOST,
        InstanceId::new(instance),
    )
    .with_spool_dir(spool)
    .with_retry(fast_retry())
    .with_flush_timeout(WAIT)
    .with_timeouts(Duration::from_secs(2), Duration::from_secs(5))
    .with_error_log_interval(Duration::ZERO)
}

/// The one scope's log records of a decoded request.
fn log_records(request: &Value) -> &Vec<Value> {
    request["request"]["resource_logs"][0]["scope_logs"][0]["log_records"]
        .as_array()
        .expect("log records")
}

/// `key -> value` of a list of decoded `KeyValue`s, in order.
fn attributes(list: &Value) -> Vec<(String, Value)> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|kv| {
                    (
                        kv["key"].as_str().expect("a key").to_owned(),
                        kv["value"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).expect("after 1970").as_nanos() as u64
}

fn s(v: &str) -> Value {
    json!({ "string_value": v })
}

/// An int64 as protobuf's JSON mapping writes it: a string.
fn i(v: i64) -> Value {
    json!({ "int_value": v.to_string() })
}

/// What docs/schema.md says a record's attributes are, computed from the record
/// itself (not by the sink's code): null fields left out.
fn expected_attributes(r: &FlowRecord, batch_id: &str, index: i64) -> Vec<(String, Value)> {
    let mut a: Vec<(&str, Value)> = vec![
        ("source.address", s(&r.local.ip().to_string())),
        ("source.port", i(r.local.port().into())),
        ("destination.address", s(&r.remote.ip().to_string())),
        ("destination.port", i(r.remote.port().into())),
        ("flowexporter.direction", s(r.direction.as_str())),
    ];
    if let Some(t) = r.t_start {
        a.push(("flowexporter.t_start", i(ns(t) as i64)));
    }
    let st = &r.stats;
    a.extend([
        ("flowexporter.bytes_sent", i(st.bytes_sent as i64)),
        ("flowexporter.bytes_received", i(st.bytes_received as i64)),
        ("flowexporter.segments_in", i(st.segs_in.into())),
        ("flowexporter.segments_out", i(st.segs_out.into())),
        ("flowexporter.tcp.retransmits", i(st.retransmits.into())),
        ("flowexporter.tcp.srtt_us", i(st.srtt_us.into())),
        ("flowexporter.tcp.rttvar_us", i(st.rttvar_us.into())),
        (
            "flowexporter.tcp.bytes_retransmitted",
            i(st.bytes_retransmitted as i64),
        ),
        ("flowexporter.tcp.close_state", s(r.close_state.as_str())),
    ]);
    if r.record_kind == RecordKind::Final {
        a.push(("flowexporter.tcp.close_reason", s(&r.close_reason.as_str())));
    }
    if let Some(w) = &r.local_workload_id {
        a.push(("flowexporter.source.workload", s(w.as_str())));
    }
    a.push((
        "flowexporter.source.identity_source",
        s(r.identity_source.as_str()),
    ));
    if let Some(reason) = r.identity_source.unattributed_reason() {
        a.push((
            "flowexporter.source.unattributed_reason",
            s(reason.as_str()),
        ));
    }
    a.push((
        "flowexporter.incomplete",
        json!({ "bool_value": r.incomplete }),
    ));
    a.push(("flowexporter.record_kind", s(r.record_kind.as_str())));
    if let Some(id) = &r.flow_id {
        a.push(("flowexporter.flow_id", s(&id.to_string())));
    }
    if let Some(p) = &r.process {
        a.push(("process.pid", i(p.pid.into())));
        a.push(("process.executable.name", s(&p.comm())));
        a.push(("flowexporter.cgroup_id", i(p.cgroup_id as i64)));
    }
    a.push(("flowexporter.batch_id", s(batch_id)));
    a.push(("flowexporter.record_index", i(index)));
    a.push(("network.transport", s("tcp")));
    a.push((
        "network.type",
        s(if r.local.is_ipv4() { "ipv4" } else { "ipv6" }),
    ));
    a.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Records that between them set and leave out every field: IPv4 and IPv6,
/// outbound and inbound, final and interim, attributed and not, with and without a
/// process, a flow ID and a start time.
fn varied_records() -> Vec<FlowRecord> {
    let t_end = UNIX_EPOCH + Duration::from_nanos(1_700_000_012_345_678_901);
    vec![
        flow_testkit::record()
            .local("10.1.2.3:40000")
            .remote("192.0.2.7:443")
            .direction(Direction::Outbound)
            .t_end(t_end)
            .stats(SocketStats {
                bytes_sent: 12_345,
                bytes_received: 987_654_321_000,
                segs_in: 40,
                segs_out: 41,
                retransmits: 3,
                bytes_retransmitted: 4_200,
                srtt_us: 1_500,
                rttvar_us: 250,
            })
            .close(TcpState(4), CloseReason::Reset)
            .workload("k8s:prod/api", IdentitySource::ConnectMap)
            .flow_id(Some(FlowId {
                boot_id: [0xab; 16],
                cookie: 0x0123_4567_89ab_cdef,
            }))
            .process(Some(ProcessInfo::new(4242, "curl", 77)))
            .build(),
        flow_testkit::record()
            .local("[2001:db8::1]:8443")
            .remote("[2001:db8::2]:51000")
            .direction(Direction::Inbound)
            .t_start(None)
            .t_end(t_end)
            .bytes(10, 20)
            .close(TcpState(1), CloseReason::Normal)
            .unattributed(UnattributedReason::CertificateExpired)
            .incomplete(true)
            .kind(RecordKind::Interim)
            .flow_id(Some(FlowId {
                boot_id: [0x01; 16],
                cookie: 9,
            }))
            .build(),
        // The builder's defaults: IPv4 inbound, unattributed (no_match), no flow ID or
        // process.
        flow_testkit::record().build(),
        flow_testkit::record()
            .direction(Direction::Outbound)
            .close(TcpState(2), CloseReason::Error(113))
            .workload("host:cert-id", IdentitySource::Certificate)
            .direction(Direction::Unknown)
            // A cgroup ID above i64::MAX travels bit for bit.
            .process(Some(ProcessInfo::new(1, "systemd", u64::MAX - 5)))
            .build(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_arrives_as_a_log_record_with_the_schemas_attributes_field_by_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = flow_testkit::free_port();
    let receiver = Receiver::start(port, &dir.path().join("requests.jsonl"), "");
    let sink = OtlpSink::start(
        config(port, 0xfeed, &dir.path().join("spool"))
            .with_host_name("node-a.example")
            .with_header("Authorization", "Bearer t0k3n"),
    )
    .expect("sink");
    assert_eq!(
        sink.destination(),
        format!("http://127.0.0.1:{port}/v1/logs")
    );
    let records = varied_records();
    let first = Chunk::new(window(), 0, 0, false, records[..3].to_vec());
    let mut last = Chunk::new(window(), 1, 1, true, records[3..].to_vec());
    let completeness = Completeness {
        closes_seen: 10,
        records_emitted: 9,
        lost_ring_full: 1,
        lost_recursion: 2,
        lost_journal: 0,
        lost_spool: 0,
        interim_records: 1,
        records_replayed: 3,
        running_whole_window: true,
    };
    last.completeness = Some(completeness);
    let before = SystemTime::now();
    sink.deliver(&first).await.expect("deliver");
    sink.deliver(&last).await.expect("deliver");
    sink.flush().await.expect("flush");
    let after = SystemTime::now();
    let c = sink.counters();
    assert_eq!(
        (
            c.chunks_accepted,
            c.chunks_sent,
            c.log_records_sent,
            c.requests
        ),
        (2, 2, 4, 2),
        "{c:?}"
    );
    assert!(c.bytes_sent > 0 && c.build_time_ns > 0, "{c:?}");
    sink.close().await.expect("close");

    let requests = receiver.requests();
    assert_eq!(requests.len(), 2, "one request per chunk: {requests:#?}");
    let instance = format!("{:032x}", 0xfeed);
    for (n, (request, chunk)) in requests.iter().zip([&first, &last]).enumerate() {
        assert!(request.get("error").is_none(), "{request}");
        assert_eq!(request["path"], "/v1/logs");
        let headers = &request["headers"];
        assert_eq!(headers["content-type"], "application/x-protobuf");
        assert_eq!(headers["content-encoding"], "gzip");
        assert_eq!(headers["authorization"], "Bearer t0k3n");
        let resource_logs = request["request"]["resource_logs"]
            .as_array()
            .expect("resource logs");
        assert_eq!(resource_logs.len(), 1);
        assert_eq!(
            attributes(&resource_logs[0]["resource"]["attributes"]),
            vec![
                ("host.id".to_owned(), s(HOST)),
                ("host.name".to_owned(), s("node-a.example")),
                ("service.name".to_owned(), s("flowexporter")),
                ("service.version".to_owned(), s(env!("CARGO_PKG_VERSION"))),
                ("service.instance.id".to_owned(), s(&instance)),
            ]
        );
        let scope_logs = resource_logs[0]["scope_logs"].as_array().expect("scopes");
        assert_eq!(scope_logs.len(), 1);
        let scope = &scope_logs[0]["scope"];
        assert_eq!(scope["name"], "flowexporter");
        assert_eq!(scope["version"], env!("CARGO_PKG_VERSION"));
        let mut expected_scope = vec![
            (
                "flowexporter.window.start_unix_nano".to_owned(),
                i(WINDOW_START_MS as i64 * 1_000_000),
            ),
            (
                "flowexporter.window.end_unix_nano".to_owned(),
                i((WINDOW_START_MS as i64 + 60_000) * 1_000_000),
            ),
            ("flowexporter.chunk.index".to_owned(), i(n as i64)),
            (
                "flowexporter.chunk.last".to_owned(),
                json!({ "bool_value": n == 1 }),
            ),
        ];
        if n == 1 {
            let c = &completeness;
            expected_scope.push((
                "flowexporter.completeness.running_whole_window".to_owned(),
                json!({ "bool_value": true }),
            ));
            for (k, v) in [
                ("closes_seen", c.closes_seen),
                ("records_emitted", c.records_emitted),
                ("lost_ring_full", c.lost_ring_full),
                ("lost_recursion", c.lost_recursion),
                ("lost_journal", c.lost_journal),
                ("lost_spool", c.lost_spool),
                ("interim_records", c.interim_records),
                ("records_replayed", c.records_replayed),
                ("records_expected", 13),
            ] {
                expected_scope.push((format!("flowexporter.completeness.{k}"), i(v as i64)));
            }
        }
        assert_eq!(
            attributes(&scope["attributes"]),
            expected_scope,
            "chunk {n}"
        );

        let batch_id = format!("{HOST}/{instance}/{n}");
        let logs = log_records(request);
        assert_eq!(logs.len(), chunk.records.len(), "chunk {n}");
        for (index, (log, record)) in logs.iter().zip(&chunk.records).enumerate() {
            let what = format!("chunk {n} record {index}");
            assert_eq!(
                log["time_unix_nano"],
                ns(record.t_end).to_string(),
                "{what}"
            );
            let observed: u64 = log["observed_time_unix_nano"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .expect("observed time");
            assert!(ns(before) <= observed && observed <= ns(after), "{what}");
            assert_eq!(log["severity_number"], "SEVERITY_NUMBER_INFO", "{what}");
            assert_eq!(log["severity_text"], "INFO", "{what}");
            assert_eq!(log["event_name"], "flowexporter.flow", "{what}");
            assert_eq!(
                log["body"],
                s(&format!(
                    "tcp {} -> {} ({}, {})",
                    record.local,
                    record.remote,
                    record.direction.as_str(),
                    record.record_kind.as_str()
                )),
                "{what}"
            );
            assert_eq!(
                attributes(&log["attributes"]),
                expected_attributes(record, &batch_id, index as i64),
                "{what}"
            );
        }
    }
    // A few values spelled out, not computed.
    let a: std::collections::BTreeMap<String, Value> =
        attributes(&log_records(&requests[0])[0]["attributes"])
            .into_iter()
            .collect();
    assert_eq!(a["source.address"], s("10.1.2.3"));
    assert_eq!(a["destination.port"], i(443));
    assert_eq!(a["flowexporter.bytes_received"], i(987_654_321_000));
    assert_eq!(a["flowexporter.tcp.close_state"], s("FIN_WAIT1"));
    assert_eq!(a["flowexporter.tcp.close_reason"], s("reset"));
    assert_eq!(
        a["flowexporter.flow_id"],
        s("abababababababababababababababab-0123456789abcdef")
    );
    assert_eq!(a["process.executable.name"], s("curl"));
    let v6: std::collections::BTreeMap<String, Value> =
        attributes(&log_records(&requests[0])[1]["attributes"])
            .into_iter()
            .collect();
    assert_eq!(v6["source.address"], s("2001:db8::1"));
    assert_eq!(v6["network.type"], s("ipv6"));
    assert_eq!(v6["flowexporter.record_kind"], s("interim"));
    for absent in [
        "flowexporter.t_start",
        "flowexporter.tcp.close_reason",
        "flowexporter.source.workload",
        "process.pid",
    ] {
        assert!(!v6.contains_key(absent), "{absent} sent for a null field");
    }
    let big: std::collections::BTreeMap<String, Value> =
        attributes(&log_records(&requests[1])[0]["attributes"])
            .into_iter()
            .collect();
    assert_eq!(
        big["flowexporter.cgroup_id"],
        i(-6),
        "u64::MAX - 5, bit for bit"
    );
    assert_eq!(big["flowexporter.tcp.close_reason"], s("errno_113"));
}

/// A retry policy whose cap lets a receiver's `Retry-After` of 1 s be honoured.
fn patient_retry() -> RetryPolicy {
    RetryPolicy::default()
        .with_initial_backoff(Duration::from_millis(20))
        .with_max_backoff(Duration::from_secs(5))
}

fn time_of(request: &Value) -> f64 {
    request["time"].as_f64().expect("a time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_and_a_429_with_retry_after_are_retried_after_that_delay_and_delivered_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = flow_testkit::free_port();
    let receiver = Receiver::start(port, &dir.path().join("requests.jsonl"), "503:1,429:1");
    let sink =
        OtlpSink::start(config(port, 2, &dir.path().join("spool")).with_retry(patient_retry()))
            .expect("sink");
    let chunk = chunk(0, 0, 5);
    sink.deliver(&chunk).await.expect("deliver");
    sink.flush().await.expect("flush");
    let c = sink.counters();
    assert_eq!(
        (
            c.chunks_sent,
            c.log_records_sent,
            c.requests,
            c.retries,
            c.retriable_statuses
        ),
        (1, 5, 3, 2, 2),
        "{c:?}"
    );
    sink.close().await.expect("close");
    let requests = receiver.requests();
    let statuses: Vec<i64> = requests
        .iter()
        .map(|r| r["status"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(statuses, [503, 429, 200]);
    for pair in requests.windows(2) {
        let gap = time_of(&pair[1]) - time_of(&pair[0]);
        assert!(
            gap >= 0.95,
            "retried after {gap:.3} s, before the Retry-After of 1 s"
        );
    }
    // The same log records each time, under the same batch ID.
    let bodies: Vec<Vec<Value>> = requests
        .iter()
        .map(|r| {
            log_records(r)
                .iter()
                .map(|l| l["attributes"].clone())
                .collect()
        })
        .collect();
    assert_eq!(bodies[0], bodies[1]);
    assert_eq!(bodies[1], bodies[2]);
    assert_eq!(bodies[2].len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_sets_the_chunk_aside_in_rejected_and_later_chunks_are_delivered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool");
    let port = flow_testkit::free_port();
    let receiver = Receiver::start(
        port,
        &dir.path().join("requests.jsonl"),
        "200,400,200,partial:2",
    );
    let sink = OtlpSink::start(config(port, 3, &spool)).expect("sink");
    for c in chunks(4, 10) {
        sink.deliver(&c).await.expect("deliver");
    }
    sink.flush().await.expect("flush");
    let c = sink.counters();
    assert_eq!(
        (
            c.chunks_sent,
            c.log_records_sent,
            c.chunks_rejected,
            c.records_rejected
        ),
        (3, 30, 1, 10),
        "{c:?}"
    );
    assert_eq!(
        (
            c.partial_successes,
            c.log_records_rejected_by_receiver,
            c.retries
        ),
        (1, 2, 0),
        "{c:?}"
    );
    assert_eq!(c.spool.expect("spool").rejected_files, 1);
    sink.close().await.expect("close");
    let requests = receiver.requests();
    assert_eq!(requests.len(), 4, "the refused chunk is not retried");
    let batch_ids: Vec<String> = requests
        .iter()
        .map(|r| {
            let a: std::collections::BTreeMap<String, Value> =
                attributes(&log_records(r)[0]["attributes"])
                    .into_iter()
                    .collect();
            a["flowexporter.batch_id"]["string_value"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let instance = format!("{:032x}", 3);
    assert_eq!(
        batch_ids,
        (0..4)
            .map(|n| format!("{HOST}/{instance}/{n}"))
            .collect::<Vec<_>>()
    );
    let rejected: Vec<String> = std::fs::read_dir(spool.join("rejected"))
        .expect("rejected/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let reason = rejected
        .iter()
        .find(|n| n.ends_with(".reason"))
        .unwrap_or_else(|| panic!("no .reason in {rejected:?}"));
    let text = std::fs::read_to_string(spool.join("rejected").join(reason)).expect("read");
    assert!(
        text.contains("HTTP 400") && text.contains("refused by plan"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_wait_in_the_spool_for_a_receiver_that_is_down_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool");
    let out = dir.path().join("requests.jsonl");
    let port = flow_testkit::free_port();

    // Run 7: the receiver is down; its chunks stay spooled when it stops.
    let sink = OtlpSink::start(config(port, 7, &spool)).expect("sink");
    let all = chunks(3, 4);
    for c in &all[..2] {
        sink.deliver(c).await.expect("deliver");
    }
    eventually(WAIT, "failed attempts", || {
        sink.counters().transport_errors >= 2
    })
    .await;
    assert_eq!(sink.counters().chunks_sent, 0);
    sink.close().await.expect("close");
    drop(sink);

    // Run 8, over the same spool: sends run 7's chunks (their batch IDs and
    // instance), then its own once the receiver is up.
    let sink = OtlpSink::start(config(port, 8, &spool)).expect("sink");
    sink.deliver(&all[2]).await.expect("deliver");
    eventually(WAIT, "failed attempts", || {
        sink.counters().transport_errors >= 1
    })
    .await;
    let receiver = Receiver::start(port, &out, "");
    sink.flush().await.expect("flush");
    let c = sink.counters();
    assert_eq!((c.chunks_sent, c.log_records_sent), (3, 12), "{c:?}");
    assert_eq!(c.spool.expect("spool").files, 0);
    sink.close().await.expect("close");

    let requests = receiver.requests();
    assert_eq!(requests.len(), 3, "each chunk once");
    let sent: Vec<(String, String)> = requests
        .iter()
        .map(|r| {
            let resource = attributes(&r["request"]["resource_logs"][0]["resource"]["attributes"]);
            let instance = resource
                .iter()
                .find(|(k, _)| k == "service.instance.id")
                .map(|(_, v)| v["string_value"].as_str().unwrap_or_default().to_owned())
                .expect("service.instance.id");
            let a: std::collections::BTreeMap<String, Value> =
                attributes(&log_records(r)[0]["attributes"])
                    .into_iter()
                    .collect();
            let batch = a["flowexporter.batch_id"]["string_value"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (instance, batch)
        })
        .collect();
    let run = |n: u128| format!("{n:032x}");
    assert_eq!(
        sent,
        vec![
            (run(7), format!("{HOST}/{}/0", run(7))),
            (run(7), format!("{HOST}/{}/1", run(7))),
            (run(8), format!("{HOST}/{}/2", run(8))),
        ]
    );
    // Record by record: bytes_sent carries each record's number.
    let numbers: Vec<String> = requests
        .iter()
        .flat_map(|r| log_records(r).clone())
        .map(|l| {
            let a: std::collections::BTreeMap<String, Value> =
                attributes(&l["attributes"]).into_iter().collect();
            a["flowexporter.bytes_sent"]["int_value"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(numbers, (0..12).map(|n| n.to_string()).collect::<Vec<_>>());
}

/// One row of docs/schema.md's table: the field and its OpenTelemetry cell.
fn schema_rows() -> Vec<(String, String)> {
    let schema =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/schema.md"))
            .expect("docs/schema.md");
    schema
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            assert_eq!(cells.len(), 9, "a row of 7 cells: {l}");
            let field = cells[1].trim_matches('`').to_owned();
            (field, cells[6].to_owned())
        })
        .collect()
}

/// The first `name` in backquotes of a cell.
fn quoted(cell: &str) -> &str {
    cell.split('`').nth(1).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attributes_sent_are_the_schemas_opentelemetry_column_in_order() {
    let rows = schema_rows();
    assert!(rows.len() >= 32, "the schema's table: {rows:?}");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = flow_testkit::free_port();
    let receiver = Receiver::start(port, &dir.path().join("requests.jsonl"), "");
    let sink = OtlpSink::start(config(port, 1, &dir.path().join("spool"))).expect("sink");
    // Every field set: a final record with a start, workload, flow ID and process.
    let full = varied_records().swap_remove(0);
    assert!(
        full.t_start.is_some()
            && full.local_workload_id.is_some()
            && full.flow_id.is_some()
            && full.process.is_some()
    );
    // And one with every nullable field null.
    let sparse = varied_records().swap_remove(1);
    sink.deliver(&Chunk::new(
        window(),
        0,
        0,
        false,
        vec![full.clone(), sparse],
    ))
    .await
    .expect("deliver");
    sink.flush().await.expect("flush");
    sink.close().await.expect("close");
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    let resource: Vec<String> =
        attributes(&request["request"]["resource_logs"][0]["resource"]["attributes"])
            .into_iter()
            .map(|(k, _)| k)
            .collect();
    let log = &log_records(request)[0];
    let keys = |n: usize| -> Vec<String> {
        attributes(&log_records(request)[n]["attributes"])
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    };
    let (full_keys, sparse_keys) = (keys(0), keys(1));

    let mut documented = Vec::new();
    for (n, (field, cell)) in rows.iter().enumerate() {
        // Past the exporter's 26 fields, the remote side's attribution is the
        // collector's: not the exporter's to send (the remote address and port are).
        if n >= 26 && field.starts_with("remote_") {
            continue;
        }
        if let Some(rest) = cell.strip_prefix("resource attribute ") {
            assert!(
                resource.iter().any(|k| k == quoted(rest)),
                "{field}: {cell} vs {resource:?}"
            );
        } else if cell.starts_with("the log record's ") {
            assert_eq!(quoted(cell), "time_unix_nano", "{field}");
            assert_eq!(field, "t_end");
            assert_eq!(log["time_unix_nano"], ns(full.t_end).to_string());
        } else {
            documented.push(quoted(cell).to_owned());
        }
    }
    // The orientation paragraph's two attributes come last.
    let schema =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/schema.md"))
            .expect("docs/schema.md");
    for extra in ["network.transport", "network.type"] {
        assert!(
            schema.contains(&format!("`{extra}`")),
            "{extra} in docs/schema.md"
        );
        documented.push(extra.to_owned());
    }
    // Each record's attributes are the documented ones in order, less its null
    // fields; between them, the full and the sparse record send every one (the
    // identity source's workload and the unattributed reason exclude each other).
    for sent in [&full_keys, &sparse_keys] {
        let mut expected = documented.iter();
        for k in sent {
            assert!(
                expected.any(|d| d == k),
                "{k}: not in docs/schema.md's OpenTelemetry column, or out of its order \
                 ({documented:?})"
            );
        }
    }
    let mut union: Vec<&String> = full_keys.iter().chain(&sparse_keys).collect();
    union.sort();
    union.dedup();
    let mut all: Vec<&String> = documented.iter().collect();
    all.sort();
    assert_eq!(
        union, all,
        "docs/schema.md's OpenTelemetry column vs the sink"
    );
}

/// What a decoded request says of its log records: `(batch_id, record_index,
/// bytes_sent)` of each, in order.
fn record_ids(request: &Value) -> Vec<(String, i64, u64)> {
    log_records(request)
        .iter()
        .map(|l| {
            let a: std::collections::BTreeMap<String, Value> =
                attributes(&l["attributes"]).into_iter().collect();
            let int = |k: &str| a[k]["int_value"].as_str().expect(k).to_owned();
            (
                a["flowexporter.batch_id"]["string_value"]
                    .as_str()
                    .expect("batch_id")
                    .to_owned(),
                int("flowexporter.record_index").parse().expect("index"),
                int("flowexporter.bytes_sent").parse().expect("bytes_sent"),
            )
        })
        .collect()
}

fn statuses(requests: &[Value]) -> Vec<i64> {
    requests
        .iter()
        .map(|r| r["status"].as_i64().unwrap_or(0))
        .collect()
}

/// The log records of the accepted requests, in order, are `chunk`'s records, each
/// once, with their positions in the chunk, under `batch_id`.
#[track_caller]
fn accepted_are_the_chunk_once_in_order(requests: &[Value], batch_id: &str, records: u64) {
    let got: Vec<(String, i64, u64)> = requests
        .iter()
        .filter(|r| r["status"] == 200)
        .flat_map(record_ids)
        .collect();
    let expected: Vec<(String, i64, u64)> = (0..records)
        .map(|n| (batch_id.to_owned(), n as i64, n))
        .collect();
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_larger_than_max_request_bytes_arrives_as_several_whole_requests_in_order_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = flow_testkit::free_port();
    let receiver = Receiver::start(port, &dir.path().join("requests.jsonl"), "");
    let max = 16_000;
    let sink = OtlpSink::start(
        config(port, 9, &dir.path().join("spool"))
            .with_max_request_bytes(max)
            .with_compression(flow_sink::otlp_sink::Compression::None),
    )
    .expect("sink");
    let mut chunk = chunk(0, 0, 100);
    chunk.last = true;
    chunk.completeness = Some(Completeness {
        closes_seen: 100,
        records_emitted: 100,
        ..Completeness::default()
    });
    sink.deliver(&chunk).await.expect("deliver");
    sink.flush().await.expect("flush");
    let c = sink.counters();
    sink.close().await.expect("close");

    let requests = receiver.requests();
    let n = requests.len() as u64;
    assert!(
        n >= 5,
        "{n} requests for 100 records of about 1 KB in 16 kB"
    );
    assert!(statuses(&requests).iter().all(|s| *s == 200));
    assert_eq!(
        (
            c.chunks_sent,
            c.requests_sent,
            c.requests,
            c.log_records_sent,
            c.retries,
            c.requests_split_on_413,
            c.chunks_rejected
        ),
        (1, n, n, 100, 0, 0, 0),
        "{c:?}"
    );
    let batch_id = format!("{HOST}/{:032x}/0", 9);
    accepted_are_the_chunk_once_in_order(&requests, &batch_id, 100);
    // Each a whole request: the same resource and scope (the chunk's window and
    // completeness on every one), under the limit (sent uncompressed here).
    let first = &requests[0]["request"]["resource_logs"][0];
    for r in &requests {
        let resource_logs = &r["request"]["resource_logs"][0];
        assert_eq!(resource_logs["resource"], first["resource"]);
        assert_eq!(
            resource_logs["scope_logs"][0]["scope"],
            first["scope_logs"][0]["scope"]
        );
        let length: usize = r["headers"]["content-length"]
            .as_str()
            .expect("content-length")
            .parse()
            .expect("a length");
        assert!(length <= max, "{length} bytes");
        assert!(r["headers"].get("content-encoding").is_none());
    }
    let scope = attributes(&first["scope_logs"][0]["scope"]["attributes"]);
    assert!(
        scope.contains(&("flowexporter.completeness.records_emitted".into(), i(100))),
        "{scope:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_resends_only_the_requests_not_yet_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = flow_testkit::free_port();
    let receiver = Receiver::start(port, &dir.path().join("requests.jsonl"), "200,503,200,502");
    let sink =
        OtlpSink::start(config(port, 10, &dir.path().join("spool")).with_max_request_bytes(16_000))
            .expect("sink");
    sink.deliver(&chunk(0, 0, 100)).await.expect("deliver");
    sink.flush().await.expect("flush");
    let c = sink.counters();
    sink.close().await.expect("close");

    let requests = receiver.requests();
    let n = requests.len() as u64;
    assert_eq!(&statuses(&requests)[..4], [200, 503, 200, 502]);
    // The refused requests were sent again as they were, and nothing twice.
    assert_eq!(record_ids(&requests[1]), record_ids(&requests[2]));
    assert_eq!(record_ids(&requests[3]), record_ids(&requests[4]));
    accepted_are_the_chunk_once_in_order(&requests, &format!("{HOST}/{:032x}/0", 10), 100);
    assert_eq!(
        (
            c.chunks_sent,
            c.requests_sent,
            c.requests,
            c.retries,
            c.retriable_statuses,
            c.log_records_sent
        ),
        (1, n - 2, n, 2, 2, 100),
        "{c:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_splits_the_request_in_halves_that_all_arrive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool");
    let port = flow_testkit::free_port();
    // The chunk's one request, then its first half, are too large.
    let receiver = Receiver::start(port, &dir.path().join("requests.jsonl"), "413,413");
    let sink = OtlpSink::start(config(port, 11, &spool)).expect("sink");
    sink.deliver(&chunk(0, 0, 8)).await.expect("deliver");
    sink.deliver(&chunk(1, 8, 3)).await.expect("deliver");
    sink.flush().await.expect("flush");
    let c = sink.counters();
    sink.close().await.expect("close");

    let requests = receiver.requests();
    assert_eq!(statuses(&requests), [413, 413, 200, 200, 200, 200, 200]);
    let sizes: Vec<usize> = requests.iter().map(|r| log_records(r).len()).collect();
    // 8 -> 4 + 4 -> (2 + 2) + (2 + 2); then the next chunk whole.
    assert_eq!(sizes, [8, 4, 2, 2, 2, 2, 3]);
    accepted_are_the_chunk_once_in_order(&requests[..6], &format!("{HOST}/{:032x}/0", 11), 8);
    assert_eq!(
        (
            c.chunks_sent,
            c.requests_sent,
            c.requests,
            c.requests_split_on_413,
            c.log_records_sent,
            c.log_records_too_large,
            c.chunks_rejected,
            c.retries
        ),
        (2, 5, 7, 2, 11, 0, 0, 0),
        "{c:?}"
    );
    assert_eq!(c.spool.expect("spool").rejected_files, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_record_answered_413_is_left_out_and_the_chunk_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = flow_testkit::free_port();
    // 2 records: both, then the first alone, are too large.
    let receiver = Receiver::start(port, &dir.path().join("requests.jsonl"), "413,413");
    let sink = OtlpSink::start(config(port, 12, &dir.path().join("spool"))).expect("sink");
    sink.deliver(&chunk(0, 0, 2)).await.expect("deliver");
    sink.flush().await.expect("flush");
    let c = sink.counters();
    sink.close().await.expect("close");

    let requests = receiver.requests();
    assert_eq!(statuses(&requests), [413, 413, 200]);
    let batch_id = format!("{HOST}/{:032x}/0", 12);
    assert_eq!(record_ids(&requests[2]), [(batch_id, 1, 1)]);
    assert_eq!(
        (
            c.chunks_sent,
            c.requests_split_on_413,
            c.log_records_too_large,
            c.log_records_sent,
            c.chunks_rejected
        ),
        (1, 1, 1, 1, 0),
        "{c:?}"
    );
}
