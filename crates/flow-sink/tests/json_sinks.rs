//! File sink, and the blanket impls (fan-out, optional, boxed, shared).

mod common;

use std::sync::Arc;

use common::*;
use flow_sink::{FileSink, FlowSink};

#[tokio::test]
async fn file_sink_appends_json_lines_and_creates_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("flows.jsonl");
    let sink = FileSink::open(&path).expect("open");
    sink.deliver(&chunk(0, 0, 3)).await.expect("deliver");
    drop(sink);
    // Reopening appends.
    let sink = FileSink::open(&path).expect("reopen");
    sink.deliver(&chunk(1, 3, 2)).await.expect("deliver");
    assert_exactly_once(&path, 5);
    let c = sink.counters();
    assert_eq!((c.chunks_written, c.records_written), (1, 2));
    let first = std::fs::read_to_string(&path).expect("read");
    let v: serde_json::Value =
        serde_json::from_str(first.lines().next().expect("a line")).expect("json");
    for field in [
        "local_ip",
        "local_port",
        "remote_ip",
        "remote_port",
        "direction",
        "t_start",
        "t_end",
        "bytes_sent",
        "bytes_received",
        "close_state",
        "close_reason",
        "local_workload_id",
        "identity_source",
    ] {
        assert!(v.get(field).is_some(), "missing {field}: {v}");
    }
}

#[tokio::test]
async fn fan_out_optional_boxed_and_shared_sinks_compose() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a.jsonl");
    let b = dir.path().join("b.jsonl");
    let shared = Arc::new(FileSink::open(&b).expect("open"));
    let sinks: Vec<Box<dyn FlowSink>> = vec![
        Box::new(FileSink::open(&a).expect("open")),
        Box::new(None::<FileSink>),
        Box::new(Arc::clone(&shared)),
    ];
    assert_eq!(sinks.name(), "fan-out");
    assert_eq!(None::<FileSink>.name(), "none");
    for c in chunks(3, 4) {
        sinks.deliver(&c).await.expect("deliver");
    }
    sinks.flush().await.expect("flush");
    assert_exactly_once(&a, 12);
    assert_exactly_once(&b, 12);
    assert_eq!(shared.counters().records_written, 12);
}

#[tokio::test]
async fn fan_out_tries_every_sink_and_names_the_failing_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.jsonl");
    // /dev/full accepts the open and fails every write.
    let full = FileSink::open("/dev/full")
        .expect("open /dev/full")
        .with_sync(false);
    let sinks = vec![full, FileSink::open(&good).expect("open")];
    let err = sinks
        .deliver(&chunk(0, 0, 2))
        .await
        .expect_err("one sink fails");
    match err {
        flow_sink::SinkError::Sink { name, .. } => assert_eq!(name, "file"),
        other => panic!("unexpected {other:?}"),
    }
    assert_exactly_once(&good, 2);
}
