//! A window's last chunk reports, in its completeness's `lost_spool`, the records of
//! the window's earlier chunks that the sink dropped: from its full spool (a spool a
//! few chunks large), for a full disk and from its memory queue (a real 256 KiB tmpfs
//! as the spool directory: mounting it needs root). The collector is down: nothing
//! is sent, the frames are read back from the spool directory.

mod common;

use std::path::Path;

use common::*;
use flow_batch::{
    Chunk, Completeness, Window,
    wire::{BatchId, ChunkEncoder, ChunkHeader, DecodeLimits, InstanceId, decode_header},
};
use flow_sink::{CollectorSink, FlowSink, SpoolConfig, collector_sink::Accepted};
use flow_testkit::{Tmpfs, fill_disk};

const PER: u64 = 50;

/// The headers of the frames in the spool directory, by sequence.
fn spooled_headers(dir: &Path) -> Vec<ChunkHeader> {
    let mut headers: Vec<ChunkHeader> = std::fs::read_dir(dir)
        .expect("spool dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "chunk"))
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read a spool file");
            decode_header(&bytes, &DecodeLimits::default()).expect("a frame")
        })
        .collect();
    headers.sort_by_key(|h| h.sequence);
    headers
}

/// The frame of chunk `sequence` in the spool.
fn spooled(dir: &Path, sequence: u64) -> ChunkHeader {
    spooled_headers(dir)
        .into_iter()
        .find(|h| h.sequence == sequence)
        .unwrap_or_else(|| panic!("chunk {sequence} is not spooled"))
}

fn completeness(lost_spool: u64) -> Completeness {
    Completeness {
        closes_seen: 1_000,
        records_emitted: 1_000,
        lost_spool,
        interim_records: 3,
        running_whole_window: true,
        ..Completeness::default()
    }
}

/// The window after [`window`].
fn next_window() -> Window {
    Window::from_millis(WINDOW_START_MS + 60_000, WINDOW_START_MS + 120_000).expect("window")
}

/// A sink whose spool holds about two and a half chunks of `PER` records, the
/// collector down.
fn small_spool_sink(instance: u128, spool_dir: &Path) -> CollectorSink {
    let mut encoder = ChunkEncoder::new(HOST, InstanceId::new(instance)).expect("encoder");
    let frame = encoder.encode_to_vec(&chunk(0, 0, PER)).expect("encode");
    let cap = frame.len() as u64 * 5 / 2;
    let url = format!("http://{}/v1/chunks", free_port());
    CollectorSink::start(
        sink_config(&url, instance, spool_dir)
            .with_spool(SpoolConfig::default().with_max_bytes(cap)),
    )
    .expect("sink")
}

fn records_dropped_full(sink: &CollectorSink) -> u64 {
    sink.counters().spool.expect("spool").records_dropped_full
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_chunk_reports_the_windows_records_dropped_from_a_full_spool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool_dir = dir.path().join("spool");
    let instance = 70;
    let sink = small_spool_sink(instance, &spool_dir);

    // Window W: six chunks; the spool keeps the newest two or so.
    for c in chunks(6, PER) {
        assert_eq!(
            sink.accept_chunk(&c).await.expect("accept"),
            Accepted::Spooled
        );
    }
    let dropped = records_dropped_full(&sink);
    assert!(dropped >= 3 * PER, "the spool dropped chunks: {dropped}");
    let c = sink.counters();
    assert_eq!(
        (
            c.records_lost_spool_reported,
            c.records_lost_spool_unreported
        ),
        (0, 0)
    );

    // W's last chunk, small, with a completeness that already counts 7 lost (the
    // sum is reported), handed over under its batch ID.
    let mut last = Chunk::new(window(), 6, 6, true, vec![record(10_000)]);
    last.completeness = Some(completeness(7));
    let id = BatchId {
        host: HOST.into(),
        instance: InstanceId::new(instance),
        sequence: 6,
    };
    assert_eq!(
        FlowSink::accept(&sink, &last, &id).await.expect("accept"),
        Accepted::Spooled
    );
    // Frames dropped to make room for it came too late to be reported in it.
    let late = records_dropped_full(&sink) - dropped;
    let header = spooled(&spool_dir, 6);
    assert!(header.last);
    assert_eq!(header.completeness, Some(completeness(7 + dropped)));
    let c = sink.counters();
    assert_eq!(
        (
            c.records_lost_spool_reported,
            c.records_lost_spool_unreported,
            c.records_lost_spool_forgotten
        ),
        (dropped, late, 0),
        "{c:?}"
    );
    assert_eq!(
        last.completeness,
        Some(completeness(7)),
        "the caller's chunk is unchanged"
    );

    // The next window, one chunk with no drop of its own: its completeness is sent
    // unchanged, though it pushes W's chunks out (too late for W: unreported).
    let before = records_dropped_full(&sink);
    let mut only = Chunk::new(
        next_window(),
        0,
        7,
        true,
        (20_000..20_000 + PER).map(record).collect(),
    );
    only.completeness = Some(completeness(0));
    assert_eq!(
        sink.accept_chunk(&only).await.expect("accept"),
        Accepted::Spooled
    );
    let pushed_out = records_dropped_full(&sink) - before;
    assert!(pushed_out > 0, "W's chunks made room");
    assert_eq!(spooled(&spool_dir, 7).completeness, Some(completeness(0)));
    let c = sink.counters();
    assert_eq!(
        (
            c.records_lost_spool_reported,
            c.records_lost_spool_unreported
        ),
        (dropped, late + pushed_out),
        "{c:?}"
    );
    sink.shut_down().await.expect("shut down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_without_drops_or_without_completeness_is_sent_as_it_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool_dir = dir.path().join("spool");
    let sink = small_spool_sink(71, &spool_dir);

    // Two chunks fit: nothing dropped, the last one's completeness unchanged.
    let first = chunk(0, 0, PER);
    let mut last = Chunk::new(window(), 1, 1, true, vec![record(10_000)]);
    last.completeness = Some(completeness(0));
    sink.deliver(&first).await.expect("deliver");
    sink.deliver(&last).await.expect("deliver");
    assert_eq!(records_dropped_full(&sink), 0);
    assert_eq!(spooled(&spool_dir, 1).completeness, Some(completeness(0)));

    // The next window drops chunks and ends without a completeness: nothing to
    // report them in, so they are counted as unreported.
    let later: Vec<Chunk> = (0..5u64)
        .map(|i| {
            let records = ((i + 2) * PER..(i + 3) * PER).map(record).collect();
            Chunk::new(next_window(), i as u32, i + 2, i == 4, records)
        })
        .collect();
    for c in &later {
        sink.deliver(c).await.expect("deliver");
    }
    let h = spooled(&spool_dir, 6);
    assert!(h.last && h.completeness.is_none());
    let c = sink.counters();
    // Window 1's chunks 2..4 dropped before its last chunk (unreported: no
    // completeness), and its own earlier window's frames dropped after its last chunk.
    let dropped = c.spool.expect("spool").records_dropped_full;
    assert!(dropped >= 3 * PER, "{c:?}");
    assert_eq!(
        (
            c.records_lost_spool_reported,
            c.records_lost_spool_unreported
        ),
        (0, dropped),
        "{c:?}"
    );
    sink.shut_down().await.expect("shut down");
}

/// Drops from the memory queue (the spool's disk full) are reported the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_dropped_from_the_memory_queue_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("mnt");
    let _tmpfs = Tmpfs::mount_at(&mnt, "256k");
    let spool_dir = mnt.join("spool");
    let url = format!("http://{}/v1/chunks", free_port()); // the collector is down
    let sink =
        CollectorSink::start(sink_config(&url, 72, &spool_dir).with_memory_queue(1 << 20, 4))
            .expect("sink");
    let ballast = mnt.join("ballast");
    fill_disk(&ballast);
    for c in chunks(6, PER) {
        assert_eq!(
            sink.accept_chunk(&c).await.expect("accept"),
            Accepted::InMemory
        );
    }
    assert_eq!(sink.counters().records_dropped_memory, 2 * PER);
    let mut last = Chunk::new(window(), 6, 6, true, vec![record(10_000)]);
    last.completeness = Some(completeness(0));
    assert_eq!(
        sink.accept_chunk(&last).await.expect("accept"),
        Accepted::InMemory
    );
    // Room for the last chunk dropped one more, too late for it.
    let c = sink.counters();
    assert_eq!(c.records_dropped_memory, 3 * PER, "{c:?}");
    assert_eq!(
        (
            c.records_lost_spool_reported,
            c.records_lost_spool_unreported
        ),
        (2 * PER, PER),
        "{c:?}"
    );

    // Room again: the next chunk is spooled, and the frames in memory follow it.
    std::fs::remove_file(&ballast).expect("free the disk");
    let next = Chunk::new(next_window(), 0, 7, true, vec![record(20_000)]);
    assert_eq!(
        sink.accept_chunk(&next).await.expect("accept"),
        Accepted::Spooled
    );
    assert_eq!(sink.counters().chunks_respooled, 4);
    assert_eq!(
        spooled(&spool_dir, 6).completeness,
        Some(completeness(2 * PER))
    );
    sink.shut_down().await.expect("shut down");
}

/// Spooled frames dropped for a full disk (the memory queue full) are reported too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_dropped_for_a_full_disk_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("mnt");
    let _tmpfs = Tmpfs::mount_at(&mnt, "256k");
    let spool_dir = mnt.join("spool");
    let url = format!("http://{}/v1/chunks", free_port()); // the collector is down
    let sink =
        CollectorSink::start(sink_config(&url, 73, &spool_dir).with_memory_queue(1 << 20, 1))
            .expect("sink");
    let all = chunks(5, PER);
    for c in &all[..3] {
        assert_eq!(
            sink.accept_chunk(c).await.expect("accept"),
            Accepted::Spooled
        );
    }
    fill_disk(&mnt.join("ballast"));
    // The memory queue takes one; then the oldest spooled chunks make room.
    assert_eq!(
        sink.accept_chunk(&all[3]).await.expect("accept"),
        Accepted::InMemory
    );
    assert_eq!(
        sink.accept_chunk(&all[4]).await.expect("accept"),
        Accepted::Spooled
    );
    let no_space = |sink: &CollectorSink| {
        sink.counters()
            .spool
            .expect("spool")
            .records_dropped_no_space
    };
    let dropped = no_space(&sink);
    assert!(dropped >= PER, "{:?}", sink.counters());
    let mut last = Chunk::new(window(), 5, 5, true, vec![record(10_000)]);
    last.completeness = Some(completeness(0));
    assert_eq!(
        sink.accept_chunk(&last).await.expect("accept"),
        Accepted::Spooled
    );
    let late = no_space(&sink) - dropped;
    assert_eq!(
        spooled(&spool_dir, 5).completeness,
        Some(completeness(dropped))
    );
    let c = sink.counters();
    assert_eq!(
        (
            c.records_lost_spool_reported,
            c.records_lost_spool_unreported
        ),
        (dropped, late),
        "{c:?}"
    );
    sink.shut_down().await.expect("shut down");
}
