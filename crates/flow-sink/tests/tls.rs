//! HTTPS and mutual TLS between the collector sink and the reference collector.

mod common;

use std::{path::PathBuf, time::Duration};

use common::*;
use flow_batch::wire::InstanceId;
use flow_collector::{CollectorOptions, FlowCollector, ServerTls};
use flow_sink::{ClientTls, CollectorConfig, CollectorSink, FlowSink, SinkError};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tls")
        .join(name)
}

async fn mtls_collector(out: &std::path::Path) -> FlowCollector {
    let tls = ServerTls::new(fixture("server.pem"), fixture("server.key"))
        .with_client_ca(fixture("ca.pem"));
    let options = CollectorOptions::new("127.0.0.1:0".parse().expect("addr"), out)
        .with_hold_back(std::time::Duration::ZERO)
        .with_tls(tls)
        .with_sync(false);
    FlowCollector::start(options).await.expect("collector")
}

fn config(url: String, tls: ClientTls) -> CollectorConfig {
    CollectorConfig::new(url, HOST, InstanceId::new(1))
        .with_retry(fast_retry().with_max_attempts(Some(1)))
        .with_request_timeout(Duration::from_secs(5))
        .with_tls(tls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("flows.jsonl");
    let collector = mtls_collector(&out).await;
    assert!(collector.url().starts_with("https://127.0.0.1:"));
    let tls = ClientTls::default()
        .with_ca_file(fixture("ca.pem"))
        .with_client_identity(fixture("client.pem"), fixture("client.key"));
    let sink =
        CollectorSink::start(config(collector.url(), tls).with_spool_dir(dir.path().join("spool")))
            .expect("sink");
    for c in chunks(3, 10) {
        sink.deliver(&c).await.expect("deliver");
    }
    sink.flush().await.expect("flush");
    assert_exactly_once(&out, 30);
    sink.close().await.expect("close");
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_or_trust_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("flows.jsonl");
    let collector = mtls_collector(&out).await;

    // Trusts the server but presents no certificate: the handshake fails.
    let anonymous = ClientTls::default().with_ca_file(fixture("ca.pem"));
    let sink = CollectorSink::start(config(collector.url(), anonymous)).expect("sink");
    let err = sink.deliver(&chunk(0, 0, 1)).await.expect_err("refused");
    assert!(matches!(err, SinkError::Transport { .. }), "{err:?}");

    // Presents a certificate but does not trust the server's CA (only the public roots).
    let untrusting =
        ClientTls::default().with_client_identity(fixture("client.pem"), fixture("client.key"));
    let sink = CollectorSink::start(config(collector.url(), untrusting)).expect("sink");
    let err = sink.deliver(&chunk(0, 0, 1)).await.expect_err("refused");
    assert!(matches!(err, SinkError::Transport { .. }), "{err:?}");

    assert_eq!(collector.stats().requests, 0);
    assert!(numbers_in(&out).is_empty());
    collector.shutdown().await;
}

#[test]
fn bad_tls_material_is_a_typed_error() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let mut half = ClientTls::default();
    half.client_cert = Some(fixture("client.pem"));
    match CollectorSink::start(config("https://127.0.0.1:1".into(), half)) {
        Err(SinkError::InvalidConfig { key, .. }) => assert_eq!(key, "tls client identity"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
    let cert_without_key =
        ClientTls::default().with_client_identity(fixture("client.pem"), fixture("ca.pem"));
    match CollectorSink::start(config("https://127.0.0.1:1".into(), cert_without_key)) {
        Err(SinkError::Tls { what, .. }) => assert_eq!(what, "client certificate and key"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    let missing = ClientTls::default().with_ca_file(fixture("nope.pem"));
    match CollectorSink::start(config("https://127.0.0.1:1".into(), missing)) {
        Err(SinkError::Io { path, .. }) => assert!(path.ends_with("nope.pem")),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}
