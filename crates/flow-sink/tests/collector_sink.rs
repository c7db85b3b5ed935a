//! The collector sink against the reference collector over loopback.

mod common;

use std::time::Duration;

use common::*;
use flow_collector::{CollectorOptions, FaultInjection, FlowCollector};
use flow_sink::{CollectorConfig, CollectorSink, FlowSink, SinkError};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_delivers_every_record_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("flows.jsonl");
    let collector = collector(&out, FaultInjection::default()).await;
    let sink = CollectorSink::start(sink_config(&collector.url(), 1, &dir.path().join("spool")))
        .expect("sink");
    for c in chunks(20, 50) {
        sink.deliver(&c).await.expect("deliver");
    }
    sink.flush().await.expect("flush");
    assert_exactly_once(&out, 1000);
    let c = sink.counters();
    assert_eq!(
        (c.chunks_accepted, c.chunks_sent, c.records_sent),
        (20, 20, 1000)
    );
    assert_eq!(c.retries, 0);
    let spool = c.spool.expect("spool counters");
    assert_eq!((spool.files, spool.bytes, spool.chunks_removed), (0, 0, 20));
    assert_eq!(collector.stats().chunks_accepted, 20);
    sink.close().await.expect("close");
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_down_then_up_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("flows.jsonl");
    let addr = free_port();
    let url = format!("http://{addr}/v1/chunks");
    let sink = CollectorSink::start(sink_config(&url, 2, &dir.path().join("spool"))).expect("sink");
    // Accepted (spooled) while nothing listens.
    for c in chunks(10, 30) {
        sink.deliver(&c).await.expect("deliver");
    }
    eventually(WAIT, "connection failures", || {
        sink.counters().transport_errors >= 3
    })
    .await;
    assert_eq!(sink.counters().chunks_sent, 0);
    assert_eq!(sink.counters().spool.expect("spool").files, 10);

    let collector = FlowCollector::start(
        CollectorOptions::new(addr, &out)
            .with_hold_back(std::time::Duration::ZERO)
            .with_sync(false),
    )
    .await
    .expect("collector on the same port");
    sink.flush().await.expect("flush");
    assert_exactly_once(&out, 300);
    assert_eq!(sink.counters().chunks_sent, 10);
    assert!(sink.counters().retries >= 3);
    sink.close().await.expect("close");
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intermittent_500_503_and_lost_acks_are_retried_without_duplicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("flows.jsonl");
    let collector = collector(
        &out,
        FaultInjection::default()
            .with_fail_first(2)
            .with_fail_every(3)
            .with_fail_status(500)
            .with_lose_ack_every(4),
    )
    .await;
    let sink = CollectorSink::start(sink_config(&collector.url(), 3, &dir.path().join("spool")))
        .expect("sink");
    let all = chunks(20, 25);
    for c in &all[..10] {
        sink.deliver(c).await.expect("deliver");
    }
    sink.flush().await.expect("flush");
    collector.set_faults(
        FaultInjection::default()
            .with_fail_every(2)
            .with_fail_status(503)
            .with_lose_ack_every(3),
    );
    for c in &all[10..] {
        sink.deliver(c).await.expect("deliver");
    }
    sink.flush().await.expect("flush");

    assert_exactly_once(&out, 500);
    let stats = collector.stats();
    assert_eq!(stats.chunks_accepted, 20);
    assert!(stats.chunks_duplicate >= 4, "{stats:?}");
    let c = sink.counters();
    // One acknowledgement per chunk: stored, or (after a lost ack) a duplicate.
    assert_eq!(c.chunks_sent, 20);
    assert_eq!(c.chunks_duplicate, stats.chunks_duplicate);
    assert!(c.retriable_statuses >= 10, "{c:?}");
    assert_eq!(c.retries, c.retriable_statuses);
    assert_eq!(c.chunks_rejected, 0);
    sink.close().await.expect("close");
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_collector_times_out_then_is_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("flows.jsonl");
    let collector = collector(
        &out,
        FaultInjection::default().with_delay(Duration::from_millis(600)),
    )
    .await;
    let config = sink_config(&collector.url(), 4, &dir.path().join("spool"))
        .with_request_timeout(Duration::from_millis(150));
    let sink = CollectorSink::start(config).expect("sink");
    for c in chunks(3, 40) {
        sink.deliver(&c).await.expect("deliver");
    }
    eventually(WAIT, "request timeouts", || {
        sink.counters().transport_errors >= 2
    })
    .await;
    assert_eq!(sink.counters().chunks_sent, 0);
    // Slower than before but within the timeout: delivered.
    collector.set_faults(FaultInjection::default().with_delay(Duration::from_millis(50)));
    sink.flush().await.expect("flush");
    assert_exactly_once(&out, 120);
    assert_eq!(sink.counters().spool.expect("spool").files, 0);
    sink.close().await.expect("close");
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_rejection_goes_to_rejected_dir_and_is_not_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("flows.jsonl");
    let spool_dir = dir.path().join("spool");
    let collector = collector(&out, FaultInjection::default().with_reject_all(Some(400))).await;
    let sink = CollectorSink::start(sink_config(&collector.url(), 5, &spool_dir)).expect("sink");
    for c in chunks(3, 10) {
        sink.deliver(&c)
            .await
            .expect("a rejected chunk is still kept");
    }
    sink.flush().await.expect("flush");
    let c = sink.counters();
    assert_eq!((c.chunks_rejected, c.records_rejected), (3, 30));
    assert_eq!(
        (c.requests, c.retries, c.chunks_sent),
        (3, 0, 0),
        "no retry of a 400"
    );
    assert_eq!(c.spool.expect("spool").rejected_files, 3);
    let mut names: Vec<String> = std::fs::read_dir(spool_dir.join("rejected"))
        .expect("rejected dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 6, "{names:?}");
    let reason = names
        .iter()
        .find(|n| n.ends_with(".reason"))
        .expect("a reason file");
    let text = std::fs::read_to_string(spool_dir.join("rejected").join(reason)).expect("read");
    assert!(
        text.contains("HTTP 400") && text.contains("injected refusal"),
        "{text}"
    );

    // The collector is fixed: later chunks go through.
    collector.set_faults(FaultInjection::default());
    sink.deliver(&chunk(3, 100, 5)).await.expect("deliver");
    sink.flush().await.expect("flush");
    assert_eq!(numbers_in(&out).len(), 5);
    sink.close().await.expect("close");
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_spool_a_real_400_is_an_error_and_an_outage_gives_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("flows.jsonl");
    let collector = collector(&out, FaultInjection::default()).await;
    let config = CollectorConfig::new(collector.url(), HOST, flow_batch::wire::InstanceId::new(6))
        .with_retry(fast_retry().with_max_attempts(Some(3)));
    let sink = CollectorSink::start(config).expect("sink");
    sink.deliver(&chunk(0, 0, 10)).await.expect("deliver");
    assert_eq!(numbers_in(&out).len(), 10);

    // A frame with a damaged payload: its header is fine, so the sink sends it, and
    // the collector refuses it for good.
    let mut frame = flow_batch::wire::ChunkEncoder::new(HOST, flow_batch::wire::InstanceId::new(6))
        .expect("encoder")
        .encode_to_vec(&chunk(1, 10, 10))
        .expect("encode");
    let last = frame.len() - 1;
    frame[last] ^= 0xff;
    match sink.deliver_frame(frame).await {
        Err(SinkError::Rejected {
            status: 400, body, ..
        }) => {
            assert!(body.contains("checksum"), "{body}")
        }
        other => panic!("expected a 400 rejection, got {other:?}"),
    }
    assert_eq!(collector.stats().rejected_undecodable, 1);
    assert_eq!(sink.counters().chunks_rejected, 1);

    collector.shutdown().await;
    match sink.deliver(&chunk(2, 20, 10)).await {
        Err(SinkError::Transport { .. }) => {}
        other => panic!("expected a transport error, got {other:?}"),
    }
    let c = sink.counters();
    assert_eq!((c.chunks_failed, c.retries), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_failures_answer_503_and_are_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("flows.jsonl");
    let collector = collector(&out, FaultInjection::default().with_fail_writes(true)).await;
    let sink = CollectorSink::start(sink_config(&collector.url(), 7, &dir.path().join("spool")))
        .expect("sink");
    for c in chunks(2, 10) {
        sink.deliver(&c).await.expect("deliver");
    }
    eventually(WAIT, "503s", || collector.stats().write_failures >= 2).await;
    assert_eq!(
        std::fs::metadata(&out).expect("out").len(),
        0,
        "no partial chunk"
    );
    collector.set_faults(FaultInjection::default());
    sink.flush().await.expect("flush");
    assert_exactly_once(&out, 20);
    sink.close().await.expect("close");
    collector.shutdown().await;
}

#[tokio::test]
async fn collector_answers_protocol_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("flows.jsonl");
    let options = CollectorOptions::new("127.0.0.1:0".parse().expect("addr"), &out)
        .with_hold_back(std::time::Duration::ZERO)
        .with_max_body_bytes(1024)
        .with_sync(false);
    let collector = FlowCollector::start(options).await.expect("collector");
    let client = reqwest::Client::new();
    let post = |body: Vec<u8>, ct: &'static str| {
        client
            .post(collector.url())
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let ct = flow_sink::CHUNK_CONTENT_TYPE;
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(post(b"garbage".to_vec(), ct).await.expect("send")),
        400
    );
    assert_eq!(status(post(vec![0; 4096], ct).await.expect("send")), 413);
    assert_eq!(
        status(post(b"x".to_vec(), "text/plain").await.expect("send")),
        415
    );
    let wrong_path = format!("http://{}/v2/other", collector.local_addr());
    assert_eq!(
        status(client.post(wrong_path).send().await.expect("send")),
        404
    );
    assert_eq!(
        status(client.get(collector.url()).send().await.expect("send")),
        405
    );
    let s = collector.stats();
    assert_eq!(
        (
            s.rejected_undecodable,
            s.rejected_too_large,
            s.rejected_content_type
        ),
        (1, 1, 1)
    );
    collector.shutdown().await;
}
