//! The durable spool: caps, corrupt files, restarts.

mod common;

use std::{fs, path::Path, time::Duration};

use common::*;
use flow_batch::wire::{ChunkEncoder, InstanceId};
use flow_collector::{CollectorOptions, FaultInjection, FlowCollector};
use flow_sink::{CollectorSink, FlowSink, SinkError, Spool, SpoolConfig, WhenFull};

fn frames(instance: u128, n: u64, per: u64) -> Vec<Vec<u8>> {
    let mut encoder = ChunkEncoder::new(HOST, InstanceId::new(instance)).expect("encoder");
    chunks(n, per)
        .iter()
        .map(|c| encoder.encode_to_vec(c).expect("encode"))
        .collect()
}

fn spool_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("spool dir")
        .filter_map(|e| {
            let name = e.expect("entry").file_name().to_string_lossy().into_owned();
            name.ends_with(".chunk").then_some(name)
        })
        .collect();
    names.sort();
    names
}

#[test]
fn full_spool_drops_the_oldest_and_counts_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let frames = frames(1, 5, 20);
    let biggest = frames.iter().map(Vec::len).max().expect("frames") as u64;
    let config = SpoolConfig::default().with_max_bytes(3 * biggest);
    let mut spool = Spool::open(dir.path(), config).expect("spool");
    for f in &frames {
        spool.push(f).expect("push");
    }
    let c = spool.counters();
    assert_eq!((c.chunks_spooled, c.chunks_dropped_full), (5, 2));
    assert_eq!(c.records_dropped_full, 40);
    assert_eq!(c.files, 3);
    assert!(c.bytes <= 3 * biggest);
    let oldest = spool.oldest().expect("read").expect("a chunk");
    assert_eq!(
        oldest.batch_id.sequence, 2,
        "sequences 0 and 1 were dropped"
    );
    assert_eq!(spool_files(dir.path()).len(), 3);
}

#[test]
fn rejected_chunks_are_kept_under_their_own_cap_oldest_deleted_first() {
    // A collector refusing every chunk must not fill the disk: rejected/ (frames and
    // their notes) stays under set_aside_max_bytes, the oldest deleted and counted.
    let dir = tempfile::tempdir().expect("tempdir");
    let frames = frames(1, 6, 20);
    let biggest = frames.iter().map(Vec::len).max().expect("frames") as u64;
    let cap = 3 * biggest + 3 * 64;
    let config = SpoolConfig::default().with_set_aside_max_bytes(cap);
    let mut spool = Spool::open(dir.path(), config.clone()).expect("spool");
    for f in &frames {
        let id = spool.push(f).expect("push");
        spool.reject(id, "400 Bad Request").expect("reject");
    }
    let c = spool.counters();
    assert_eq!(c.rejected_files, 6);
    assert!(c.set_aside_files_deleted >= 3, "{c:?}");
    assert!(c.set_aside_bytes <= cap, "{c:?}");
    let rejected = spool_files(&dir.path().join("rejected"));
    assert_eq!(rejected.len() as u64, 6 - c.set_aside_files_deleted);
    let on_disk: u64 = fs::read_dir(dir.path().join("rejected"))
        .expect("rejected dir")
        .map(|e| e.expect("entry").metadata().expect("stat").len())
        .sum();
    assert_eq!(
        on_disk, c.set_aside_bytes,
        "notes counted with their frames"
    );
    // The newest were kept: the last frame's file is still there.
    assert!(
        rejected
            .last()
            .is_some_and(|n| n.starts_with("00000000000000000005"))
    );
    drop(spool);

    // A restart picks the folder up again and keeps it under a lower cap.
    let lower = SpoolConfig::default().with_set_aside_max_bytes(biggest + 64);
    let spool = Spool::open(dir.path(), lower).expect("reopen");
    let c = spool.counters();
    assert_eq!(spool_files(&dir.path().join("rejected")).len(), 1);
    assert!(c.set_aside_bytes <= biggest + 64, "{c:?}");
}

#[test]
fn full_spool_can_refuse_the_newest_instead() {
    let dir = tempfile::tempdir().expect("tempdir");
    let frames = frames(1, 4, 20);
    let biggest = frames.iter().map(Vec::len).max().expect("frames") as u64;
    let config = SpoolConfig::default()
        .with_max_bytes(2 * biggest)
        .with_when_full(WhenFull::RefuseNewest);
    let mut spool = Spool::open(dir.path(), config).expect("spool");
    spool.push(&frames[0]).expect("push");
    spool.push(&frames[1]).expect("push");
    assert!(matches!(
        spool.push(&frames[2]),
        Err(SinkError::SpoolFull { .. })
    ));
    let c = spool.counters();
    assert_eq!(
        (c.files, c.chunks_refused_full, c.chunks_dropped_full),
        (2, 1, 0)
    );
    assert_eq!(
        spool
            .oldest()
            .expect("read")
            .expect("chunk")
            .batch_id
            .sequence,
        0
    );
}

#[test]
fn spool_replays_in_order_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let frames = frames(9, 4, 5);
    {
        let mut spool = Spool::open(dir.path(), SpoolConfig::default()).expect("spool");
        for f in &frames {
            spool.push(f).expect("push");
        }
        // A write cut short by a crash leaves a .tmp file.
        fs::write(
            dir.path().join("00000000000000000099-x-1.chunk.tmp"),
            b"partial",
        )
        .expect("tmp");
    }
    let mut spool = Spool::open(dir.path(), SpoolConfig::default()).expect("reopen");
    assert_eq!(spool.counters().files_recovered, 4);
    assert!(
        !dir.path()
            .join("00000000000000000099-x-1.chunk.tmp")
            .exists()
    );
    for (i, f) in frames.iter().enumerate() {
        let c = spool.oldest().expect("read").expect("chunk");
        assert_eq!(c.batch_id.sequence, i as u64);
        assert_eq!(&c.frame, f, "the exact bytes, so the batch ID is kept");
        assert!(spool.remove(c.id).expect("remove"));
    }
    assert!(spool.oldest().expect("read").is_none());
    // New pushes continue the order after a reopen.
    let id = spool.push(&frames[0]).expect("push");
    assert_eq!(id.order(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_spool_file_is_skipped_and_the_others_delivered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool_dir = dir.path().join("spool");
    let out = dir.path().join("flows.jsonl");
    // A previous run left five chunks; one was damaged on disk since.
    {
        let mut spool = Spool::open(&spool_dir, SpoolConfig::default()).expect("spool");
        for f in frames(10, 5, 10) {
            spool.push(&f).expect("push");
        }
    }
    let names = spool_files(&spool_dir);
    let victim = spool_dir.join(&names[2]);
    let mut bytes = fs::read(&victim).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    fs::write(&victim, &bytes).expect("corrupt it");

    let collector = collector(&out, FaultInjection::default()).await;
    let sink = CollectorSink::start(sink_config(&collector.url(), 11, &spool_dir)).expect("sink");
    sink.flush().await.expect("flush");
    let seen = numbers_in(&out);
    let expected: Vec<u64> = (0..50).filter(|n| !(20..30).contains(n)).collect();
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), expected);
    assert!(seen.values().all(|&c| c == 1));
    let spool = sink.counters().spool.expect("spool");
    assert_eq!(
        (spool.corrupt_files, spool.files_recovered, spool.files),
        (1, 5, 0)
    );
    assert!(spool_dir.join("corrupt").join(&names[2]).exists());
    sink.close().await.expect("close");
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_picks_up_the_spool_and_sends_it_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool_dir = dir.path().join("spool");
    let out = dir.path().join("flows.jsonl");
    let addr = free_port();
    let url = format!("http://{addr}/v1/chunks");
    let all = chunks(8, 10);
    {
        // First run: the collector is down; the run ends with chunks spooled.
        let config =
            sink_config(&url, 20, &spool_dir).with_flush_timeout(Duration::from_millis(100));
        let sink = CollectorSink::start(config).expect("sink");
        for c in &all[..5] {
            sink.deliver(c).await.expect("deliver");
        }
        sink.close().await.expect("close");
    }
    assert_eq!(spool_files(&spool_dir).len(), 5);

    // Second run, new instance (its sequences restart at 0), collector up.
    let collector = FlowCollector::start(
        CollectorOptions::new(addr, &out)
            .with_hold_back(std::time::Duration::ZERO)
            .with_sync(false),
    )
    .await
    .expect("collector");
    let sink = CollectorSink::start(sink_config(&url, 21, &spool_dir)).expect("sink");
    for (i, c) in all[5..].iter().enumerate() {
        let mut c = c.clone();
        c.sequence = i as u64;
        sink.deliver(&c).await.expect("deliver");
    }
    sink.flush().await.expect("flush");
    assert_exactly_once(&out, 80);
    // The first run's chunks were sent before the second run's.
    let text = fs::read_to_string(&out).expect("out");
    let order: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["bytes_sent"]
                .as_u64()
                .expect("n")
        })
        .collect();
    assert_eq!(order, (0..80).collect::<Vec<_>>());
    assert_eq!(sink.counters().spool.expect("spool").files_recovered, 5);
    sink.close().await.expect("close");
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_with_a_small_spool_keeps_the_newest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool_dir = dir.path().join("spool");
    let out = dir.path().join("flows.jsonl");
    let addr = free_port();
    let url = format!("http://{addr}/v1/chunks");
    let all = chunks(6, 20);
    let biggest = frames(30, 6, 20)
        .iter()
        .map(Vec::len)
        .max()
        .expect("frames") as u64;
    let config = sink_config(&url, 30, &spool_dir)
        .with_spool(SpoolConfig::default().with_max_bytes(3 * biggest));
    let sink = CollectorSink::start(config).expect("sink");
    for c in &all {
        sink.deliver(c).await.expect("deliver");
    }
    let collector = FlowCollector::start(
        CollectorOptions::new(addr, &out)
            .with_hold_back(std::time::Duration::ZERO)
            .with_sync(false),
    )
    .await
    .expect("collector");
    sink.flush().await.expect("flush");
    let spool = sink.counters().spool.expect("spool");
    assert_eq!(
        (spool.chunks_dropped_full, spool.records_dropped_full),
        (3, 60)
    );
    let seen: Vec<u64> = numbers_in(&out).keys().copied().collect();
    assert_eq!(seen, (60..120).collect::<Vec<_>>());
    sink.close().await.expect("close");
    collector.shutdown().await;
}
