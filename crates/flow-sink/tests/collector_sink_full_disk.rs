//! The collector sink when its spool's disk is full: a real 256 KiB tmpfs as the spool
//! directory (mounting it needs root) and the reference collector, down first and up
//! later. `deliver` keeps accepting chunks (kept in memory, the oldest dropped and
//! counted when too many wait), and once the disk has room again and the collector is
//! up, every chunk not counted as dropped arrives exactly once.

mod common;

use std::time::Duration;

use common::*;
use flow_batch::wire::{BatchId, InstanceId};
use flow_collector::{CollectorOptions, FlowCollector};
use flow_sink::{CollectorSink, FlowSink, collector_sink::Accepted};
use flow_testkit::{Tmpfs, fill_disk};

const PER: u64 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_disk_keeps_chunks_in_memory_until_the_collector_has_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("flows.jsonl");
    let mnt = dir.path().join("mnt");
    let _tmpfs = Tmpfs::mount_at(&mnt, "256k");
    let spool_dir = mnt.join("spool");
    let addr = free_port(); // the collector is down
    let url = format!("http://{addr}/v1/chunks");
    let sink =
        CollectorSink::start(sink_config(&url, 60, &spool_dir).with_memory_queue(1 << 20, 8))
            .expect("sink");

    // The disk fills up (another writer): the spool cannot take a single chunk.
    let ballast = mnt.join("ballast");
    fill_disk(&ballast);
    let all = chunks(17, PER);
    for c in &all[..12] {
        let accepted = sink
            .accept_chunk(c)
            .await
            .expect("a full disk fails no delivery");
        assert_eq!(accepted, Accepted::InMemory);
    }
    let c = sink.counters();
    assert_eq!((c.chunks_accepted, c.chunks_unspooled), (12, 12), "{c:?}");
    assert_eq!(c.records_unspooled, 12 * PER);
    // At most 8 wait in memory: the 4 oldest were dropped and counted.
    assert_eq!(
        (c.chunks_dropped_memory, c.records_dropped_memory),
        (4, 4 * PER),
        "{c:?}"
    );
    assert_eq!(c.memory_chunks, 8);
    assert!(c.bytes_dropped_memory > 0 && c.memory_bytes > 0, "{c:?}");
    // The dropped ones are settled (a journal may let them go); the rest are not.
    assert_eq!(sequences(sink.take_settled()), [0, 1, 2, 3]);
    assert!(sink.take_settled().is_empty(), "each is reported once");
    assert_eq!(c.spool.expect("spool").files, 0);
    eventually(Duration::from_secs(20), "attempts from memory", || {
        sink.counters().transport_errors >= 2
    })
    .await;

    // Room again: new chunks go to the spool as before, and those kept in memory
    // follow them there (durable now: settled).
    std::fs::remove_file(&ballast).expect("free the disk");
    for c in &all[12..] {
        assert_eq!(
            sink.accept_chunk(c).await.expect("deliver"),
            Accepted::Spooled
        );
    }
    let c = sink.counters();
    assert_eq!(c.spool.expect("spool").files, 13, "{c:?}");
    assert_eq!(
        (c.chunks_respooled, c.memory_chunks, c.memory_bytes),
        (8, 0, 0)
    );
    let settled = sink.take_settled();
    assert!(settled.iter().all(|b| b.instance == InstanceId::new(60)));
    assert_eq!(sequences(settled), (4..12).collect::<Vec<_>>());

    // The collector comes up: everything not counted as dropped arrives, once.
    let collector = FlowCollector::start(
        CollectorOptions::new(addr, &out)
            .with_hold_back(std::time::Duration::ZERO)
            .with_sync(false),
    )
    .await
    .expect("collector on the same port");
    sink.flush().await.expect("flush");
    let seen = numbers_in(&out);
    let want: Vec<u64> = (4 * PER..17 * PER).collect();
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), want);
    assert!(seen.values().all(|n| *n == 1), "duplicates: {seen:?}");
    let c = sink.counters();
    assert_eq!((c.chunks_sent, c.memory_chunks, c.memory_bytes), (13, 0, 0));
    assert_eq!(c.spool.expect("spool").files, 0);
    // Settled once, when spooled.
    assert!(sink.take_settled().is_empty());
    sink.close().await.expect("close");
    collector.shutdown().await;
}

/// The sequence numbers of `ids`, sorted.
fn sequences(ids: Vec<BatchId>) -> Vec<u64> {
    let mut s: Vec<u64> = ids.into_iter().map(|b| b.sequence).collect();
    s.sort_unstable();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_still_in_memory_at_close_go_to_the_spool_if_it_has_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("flows.jsonl");
    let mnt = dir.path().join("mnt");
    let _tmpfs = Tmpfs::mount_at(&mnt, "256k");
    let spool_dir = mnt.join("spool");
    let addr = free_port(); // the collector is down
    let url = format!("http://{addr}/v1/chunks");
    let config = sink_config(&url, 61, &spool_dir).with_flush_timeout(Duration::from_millis(200));
    let sink = CollectorSink::start(config).expect("sink");
    let ballast = mnt.join("ballast");
    fill_disk(&ballast);
    let all = chunks(3, PER);
    for c in &all {
        assert_eq!(
            sink.accept_chunk(c).await.expect("deliver"),
            Accepted::InMemory
        );
    }
    sink.flush()
        .await
        .expect("a flush that times out is no error");
    std::fs::remove_file(&ballast).expect("free the disk");
    assert!(sink.take_settled().is_empty(), "nothing settled yet");
    sink.shut_down().await.expect("shut down");
    // Spooled at close: settled, durable now.
    assert_eq!(sequences(sink.take_settled()), [0, 1, 2]);
    drop(sink);

    // The next run finds them in the spool and sends them.
    let collector = FlowCollector::start(
        CollectorOptions::new(addr, &out)
            .with_hold_back(std::time::Duration::ZERO)
            .with_sync(false),
    )
    .await
    .expect("collector");
    let sink = CollectorSink::start(sink_config(&url, 62, &spool_dir)).expect("sink");
    assert_eq!(sink.counters().spool.expect("spool").files, 3);
    sink.flush().await.expect("flush");
    assert_exactly_once(&out, 3 * PER);
    sink.close().await.expect("close");
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_neither_spooled_nor_kept_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("mnt");
    let _tmpfs = Tmpfs::mount_at(&mnt, "256k");
    let addr = free_port();
    let url = format!("http://{addr}/v1/chunks");
    // A memory queue smaller than any frame.
    let config = sink_config(&url, 63, &mnt.join("spool")).with_memory_queue(16, 8);
    let sink = CollectorSink::start(config).expect("sink");
    fill_disk(&mnt.join("ballast"));
    match sink.deliver(&chunk(0, 0, PER)).await {
        Err(flow_sink::SinkError::Io { source, .. }) => {
            assert_eq!(source.raw_os_error(), Some(28), "{source}")
        }
        other => panic!("expected the spool's I/O error, got {other:?}"),
    }
    let c = sink.counters();
    assert_eq!(
        (c.chunks_accepted, c.chunks_unspooled, c.memory_chunks),
        (0, 0, 0)
    );
    sink.close().await.expect("close");
}

/// Chunks kept in memory and delivered from there, the spool still full: settled when
/// the collector has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_delivered_from_memory_are_settled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("flows.jsonl");
    let mnt = dir.path().join("mnt");
    let _tmpfs = Tmpfs::mount_at(&mnt, "256k");
    let addr = free_port(); // the collector is down
    let url = format!("http://{addr}/v1/chunks");
    let sink = CollectorSink::start(sink_config(&url, 64, &mnt.join("spool"))).expect("sink");
    fill_disk(&mnt.join("ballast"));
    for c in &chunks(3, PER) {
        assert_eq!(
            sink.accept_chunk(c).await.expect("deliver"),
            Accepted::InMemory
        );
    }
    assert!(sink.take_settled().is_empty(), "not delivered yet");
    let collector = FlowCollector::start(
        CollectorOptions::new(addr, &out)
            .with_hold_back(std::time::Duration::ZERO)
            .with_sync(false),
    )
    .await
    .expect("collector");
    sink.flush().await.expect("flush");
    assert_exactly_once(&out, 3 * PER);
    let c = sink.counters();
    assert_eq!(
        (c.chunks_sent, c.chunks_respooled, c.memory_chunks),
        (3, 0, 0)
    );
    assert_eq!(sequences(sink.take_settled()), [0, 1, 2]);
    sink.close().await.expect("close");
    collector.shutdown().await;
}

/// A full disk costs no spooled chunk while the memory queue has room: new chunks wait
/// in memory; only once it is full are the oldest spooled chunks dropped (counted) to
/// make room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_drops_spooled_chunks_only_once_memory_is_full() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("mnt");
    let _tmpfs = Tmpfs::mount_at(&mnt, "256k");
    let spool_dir = mnt.join("spool");
    let url = format!("http://{}/v1/chunks", free_port()); // the collector is down
    let sink =
        CollectorSink::start(sink_config(&url, 61, &spool_dir).with_memory_queue(1 << 20, 2))
            .expect("sink");
    let all = chunks(6, PER);
    for c in &all[..3] {
        assert_eq!(
            sink.accept_chunk(c).await.expect("spool"),
            Accepted::Spooled
        );
    }
    fill_disk(&mnt.join("ballast"));
    for c in &all[3..5] {
        assert_eq!(
            sink.accept_chunk(c).await.expect("memory"),
            Accepted::InMemory
        );
    }
    let c = sink.counters();
    let spool = c.spool.expect("spool");
    assert_eq!(
        (spool.files, spool.chunks_dropped_no_space),
        (3, 0),
        "{c:?}"
    );
    assert_eq!((c.memory_chunks, c.chunks_dropped_memory), (2, 0), "{c:?}");

    // Memory full: now the oldest spooled chunk makes room for the new one.
    assert_eq!(
        sink.accept_chunk(&all[5]).await.expect("spool"),
        Accepted::Spooled
    );
    let c = sink.counters();
    let spool = c.spool.expect("spool");
    assert!(spool.chunks_dropped_no_space >= 1, "{c:?}");
    assert_eq!(
        spool.records_dropped_no_space,
        spool.chunks_dropped_no_space * PER
    );
    assert_eq!((c.memory_chunks, c.chunks_dropped_memory), (2, 0), "{c:?}");
    sink.close().await.expect("close");
}

/// At close with the disk still full, a chunk kept in memory costs no spooled chunk and
/// is not settled: a caller's journal keeps its intent open and sends it next time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_in_memory_at_close_on_a_full_disk_is_left_to_the_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("mnt");
    let _tmpfs = Tmpfs::mount_at(&mnt, "256k");
    let spool_dir = mnt.join("spool");
    let url = format!("http://{}/v1/chunks", free_port()); // the collector is down
    let sink =
        CollectorSink::start(sink_config(&url, 62, &spool_dir).with_memory_queue(1 << 20, 8))
            .expect("sink");
    let all = chunks(3, PER);
    for c in &all[..2] {
        assert_eq!(
            sink.accept_chunk(c).await.expect("spool"),
            Accepted::Spooled
        );
    }
    fill_disk(&mnt.join("ballast"));
    assert_eq!(
        sink.accept_chunk(&all[2]).await.expect("memory"),
        Accepted::InMemory
    );
    sink.shut_down().await.expect("shut down");
    let c = sink.counters();
    let spool = c.spool.expect("spool");
    assert_eq!(
        (spool.files, spool.chunks_dropped_no_space),
        (2, 0),
        "{c:?}"
    );
    assert_eq!(
        (c.chunks_unsaved_at_close, c.records_unsaved_at_close),
        (1, PER),
        "{c:?}"
    );
    assert_eq!(c.chunks_dropped_memory, 0, "{c:?}");
    assert!(
        sink.take_settled().is_empty(),
        "left unsettled for the journal"
    );
}
