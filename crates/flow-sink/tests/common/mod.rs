//! Shared helpers: records that carry their own number, chunks, and readers of the
//! collector's JSON-lines output.

#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use flow_batch::{Chunk, Window};
use flow_collector::{CollectorOptions, FaultInjection, FlowCollector};
use flow_record::{FlowRecord, SocketStats};
use flow_sink::{CollectorConfig, RetryPolicy};

pub const HOST: &str = "host-a";
pub const WINDOW_START_MS: u64 = 1_700_000_000_000;

/// A record whose `bytes_sent` is `n`, so every record can be told apart in the output.
pub fn record(n: u64) -> FlowRecord {
    let t_end = UNIX_EPOCH + Duration::from_millis(WINDOW_START_MS + n % 60_000);
    let remote = format!(
        "10.0.{}.{}:{}",
        (n >> 8) & 0xff,
        n & 0xff,
        10_000 + n % 50_000
    );
    let stats = SocketStats {
        bytes_sent: n,
        bytes_received: 2 * n,
        segs_in: 3,
        segs_out: 4,
        srtt_us: 100,
        rttvar_us: 10,
        ..SocketStats::default()
    };
    // t_start: 5 ms before t_end; unattributed.
    flow_testkit::record()
        .remote(remote)
        .t_end(t_end)
        .stats(stats)
        .build()
}

pub fn window() -> Window {
    Window::from_millis(WINDOW_START_MS, WINDOW_START_MS + 60_000).expect("window")
}

/// Chunk `sequence` holding records `first..first + count`.
pub fn chunk(sequence: u64, first: u64, count: u64) -> Chunk {
    Chunk::new(
        window(),
        sequence as u32,
        sequence,
        false,
        (first..first + count).map(record).collect(),
    )
}

/// `n` chunks of `per` records each, numbered from 0.
pub fn chunks(n: u64, per: u64) -> Vec<Chunk> {
    (0..n).map(|s| chunk(s, s * per, per)).collect()
}

/// A retry policy for tests: fast and capped low.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy::default()
        .with_initial_backoff(Duration::from_millis(20))
        .with_max_backoff(Duration::from_millis(200))
}

pub fn sink_config(url: &str, instance: u128, spool: &Path) -> CollectorConfig {
    CollectorConfig::new(url, HOST, flow_batch::wire::InstanceId::new(instance))
        .with_retry(fast_retry())
        .with_connect_timeout(Duration::from_millis(500))
        .with_request_timeout(Duration::from_secs(2))
        .with_spool_dir(spool)
        .with_flush_timeout(Duration::from_secs(20))
}

pub async fn collector(out: &Path, faults: FaultInjection) -> FlowCollector {
    let options = CollectorOptions::new("127.0.0.1:0".parse().expect("addr"), out)
        .with_hold_back(std::time::Duration::ZERO)
        .with_faults(faults)
        .with_sync(false);
    FlowCollector::start(options).await.expect("collector")
}

/// The record numbers (`bytes_sent`) in a JSON-lines file, with how often each occurs.
pub fn numbers_in(out: &Path) -> BTreeMap<u64, u32> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let mut seen = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let n = v["bytes_sent"].as_u64().expect("bytes_sent");
        *seen.entry(n).or_insert(0) += 1;
    }
    seen
}

/// Asserts that records `0..n` each appear exactly once.
pub fn assert_exactly_once(out: &Path, n: u64) {
    let seen = numbers_in(out);
    let dupes: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(dupes.is_empty(), "duplicated records: {dupes:?}");
    let missing: Vec<u64> = (0..n).filter(|i| !seen.contains_key(i)).collect();
    assert!(missing.is_empty(), "missing records: {missing:?}");
    assert_eq!(seen.len() as u64, n, "unexpected extra records");
}

/// Polls `cond` every 10 ms until it holds or `within` passes.
pub async fn eventually(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A loopback port with nothing listening on it (bound, then released).
pub fn free_port() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], flow_testkit::free_port()))
}

pub fn now() -> SystemTime {
    SystemTime::now()
}
