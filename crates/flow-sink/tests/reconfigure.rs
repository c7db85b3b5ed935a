//! `CollectorSink::reconfigure`: rotated TLS material is read again from the same
//! paths, a waiting sender retries at once, and a failed reconfiguration changes
//! nothing.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant, UNIX_EPOCH},
};

use flow_batch::{Chunk, Window};
use flow_record::FlowRecord;

use flow_batch::wire::InstanceId;
use flow_collector::{CollectorOptions, FlowCollector, ServerTls};
use flow_sink::{ClientTls, CollectorConfig, CollectorSink, FlowSink, RetryPolicy, SinkError};

const WINDOW_START_MS: u64 = 1_700_000_000_000;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tls")
        .join(name)
}

fn record(n: u64) -> FlowRecord {
    flow_testkit::record()
        .remote(format!("10.0.0.2:{}", 10_000 + n))
        .t_end(UNIX_EPOCH + Duration::from_millis(WINDOW_START_MS + n))
        .t_start(None)
        .build()
}

fn chunk(sequence: u64, records: u64) -> Chunk {
    let window = Window::from_millis(WINDOW_START_MS, WINDOW_START_MS + 60_000).expect("window");
    Chunk::new(
        window,
        sequence as u32,
        sequence,
        false,
        (0..records).map(|r| record(sequence * 100 + r)).collect(),
    )
}

fn lines(out: &Path) -> usize {
    std::fs::read_to_string(out).map_or(0, |t| t.lines().count())
}

/// Waits up to `timeout` for `cond`.
async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_client_certificate_is_read_again_and_sent_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("flows.jsonl");
    let tls = ServerTls::new(fixture("server.pem"), fixture("server.key"))
        .with_client_ca(fixture("ca.pem"));
    let collector = FlowCollector::start(
        CollectorOptions::new("127.0.0.1:0".parse().expect("addr"), &out)
            .with_hold_back(std::time::Duration::ZERO)
            .with_tls(tls)
            .with_sync(false),
    )
    .await
    .expect("collector");
    // The client identity lives at fixed paths; at first they hold a certificate the
    // collector refuses (it is for servers only).
    let cert = dir.path().join("client.pem");
    let key = dir.path().join("client.key");
    std::fs::copy(fixture("server.pem"), &cert).expect("copy");
    std::fs::copy(fixture("server.key"), &key).expect("copy");
    let client_tls = ClientTls::default()
        .with_ca_file(fixture("ca.pem"))
        .with_client_identity(&cert, &key);
    // Long waits between attempts: only the wake-up of reconfigure sends soon.
    let slow = RetryPolicy::default()
        .with_initial_backoff(Duration::from_secs(60))
        .with_max_backoff(Duration::from_secs(60));
    let sink = CollectorSink::start(
        CollectorConfig::new(collector.url(), "host-a", InstanceId::new(7))
            .with_spool_dir(dir.path().join("spool"))
            .with_retry(slow.clone())
            .with_tls(client_tls.clone()),
    )
    .expect("sink");
    sink.deliver(&chunk(0, 5)).await.expect("spooled");
    assert!(
        eventually(Duration::from_secs(10), || sink.counters().transport_errors
            >= 1)
        .await,
        "the refused certificate fails the handshake"
    );
    // Now in its backoff wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(lines(&out), 0);

    // Rotation: new files under the same paths, then reconfigure.
    std::fs::copy(fixture("client.pem"), &cert).expect("copy");
    std::fs::copy(fixture("client.key"), &key).expect("copy");
    sink.reconfigure(&client_tls, slow).expect("reconfigure");
    assert!(
        eventually(Duration::from_secs(5), || lines(&out) == 5).await,
        "sent with the rotated certificate without waiting out the backoff: {:?}",
        sink.counters()
    );
    sink.close().await.expect("close");
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reconfiguration_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("flows.jsonl");
    let collector = FlowCollector::start(
        CollectorOptions::new("127.0.0.1:0".parse().expect("addr"), &out)
            .with_hold_back(std::time::Duration::ZERO)
            .with_sync(false),
    )
    .await
    .expect("collector");
    let policy = RetryPolicy::default()
        .with_initial_backoff(Duration::from_millis(10))
        .with_max_backoff(Duration::from_millis(100));
    let sink = CollectorSink::start(
        CollectorConfig::new(collector.url(), "host-a", InstanceId::new(8))
            .with_spool_dir(dir.path().join("spool"))
            .with_retry(policy.clone()),
    )
    .expect("sink");

    // A missing CA file: refused, the client and the policy stay.
    let missing = ClientTls::default().with_ca_file(dir.path().join("nope.pem"));
    let longer = policy.clone().with_max_backoff(Duration::from_secs(5));
    match sink.reconfigure(&missing, longer.clone()) {
        Err(SinkError::Io { path, .. }) => assert!(path.ends_with("nope.pem")),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert_eq!(sink.retry_policy(), policy);
    // An invalid policy: refused the same way.
    let backwards = policy
        .clone()
        .with_initial_backoff(Duration::from_secs(2))
        .with_max_backoff(Duration::from_secs(1));
    assert!(matches!(
        sink.reconfigure(&ClientTls::default(), backwards),
        Err(SinkError::InvalidConfig { .. })
    ));
    assert_eq!(sink.retry_policy(), policy);
    // The sink still delivers with what it had.
    sink.deliver(&chunk(0, 3)).await.expect("spooled");
    assert!(eventually(Duration::from_secs(5), || lines(&out) == 3).await);

    // A valid reconfiguration replaces the policy.
    sink.reconfigure(&ClientTls::default(), longer.clone())
        .expect("reconfigure");
    assert_eq!(sink.retry_policy(), longer);
    sink.deliver(&chunk(1, 2)).await.expect("spooled");
    assert!(eventually(Duration::from_secs(5), || lines(&out) == 5).await);
    sink.close().await.expect("close");
    collector.shutdown().await;
}
