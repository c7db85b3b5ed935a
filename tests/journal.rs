//! The record journal: crash recovery, torn writes, intents and batch IDs.

// The collector-sink tests' helpers: records that carry their own number, chunks,
// the reference collector and readers of its output.
#[path = "../crates/flow-sink/tests/common/mod.rs"]
mod common;

use std::{fs, path::Path, time::Instant};

use common::*;
use flow_batch::wire::InstanceId;
use flow_collector::FaultInjection;
use flow_sink::{CollectorSink, FlowSink};
use flowexporter::{JournalConfig, RecordJournal};

fn open(dir: &Path, instance: u128) -> (RecordJournal, flowexporter::Recovered) {
    RecordJournal::open(
        dir,
        HOST,
        InstanceId::new(instance),
        JournalConfig::default(),
    )
    .expect("open journal")
}

/// Simulates `kill -9`: no destructor runs, so nothing buffered is written.
fn crash(journal: RecordJournal) {
    std::mem::forget(journal);
}

fn numbers(records: &[flow_record::FlowRecord]) -> Vec<u64> {
    records.iter().map(|r| r.stats.bytes_sent).collect()
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

#[test]
fn crash_loses_only_what_was_not_synced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut journal, recovered) = open(dir.path(), 1);
    assert!(recovered.is_empty());
    for n in 0..100 {
        journal.append(&record(n)).expect("append");
    }
    let t0 = Instant::now();
    assert!(
        journal
            .sync_if_due(t0 + JournalConfig::default().sync_interval)
            .expect("sync")
    );
    assert!(
        !journal.sync_if_due(t0).expect("not due"),
        "nothing new to sync"
    );
    for n in 100..110 {
        journal.append(&record(n)).expect("append");
    }
    assert!(journal.poll_timeout().is_some());
    crash(journal);

    let (journal, recovered) = open(dir.path(), 2);
    assert_eq!(numbers(&recovered.records), (0..100).collect::<Vec<_>>());
    assert!(recovered.chunks.is_empty());
    let c = journal.counters();
    assert_eq!((c.records_recovered, c.pending_records), (100, 100));
    // Recovery rewrote the live records into one new segment.
    assert_eq!(segments(dir.path()).len(), 1);

    // A crash right after recovery recovers the same again: nothing lost, nothing doubled.
    crash(journal);
    let (_journal, again) = open(dir.path(), 3);
    assert_eq!(numbers(&again.records), (0..100).collect::<Vec<_>>());
}

#[test]
fn torn_last_record_is_tolerated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut journal, _) = open(dir.path(), 1);
    for n in 0..50 {
        journal.append(&record(n)).expect("append");
    }
    journal.sync().expect("sync");
    crash(journal);
    let seg = segments(dir.path()).pop().expect("a segment");
    let len = fs::metadata(&seg).expect("stat").len();
    // Cut the last record in the middle, as a crash during write(2) would.
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open")
        .set_len(len - 20)
        .expect("truncate");

    let (journal, recovered) = open(dir.path(), 2);
    assert_eq!(numbers(&recovered.records), (0..49).collect::<Vec<_>>());
    assert!(journal.counters().bytes_discarded > 0);
}

#[test]
fn garbage_after_the_last_record_is_tolerated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut journal, _) = open(dir.path(), 1);
    for n in 0..10 {
        journal.append(&record(n)).expect("append");
    }
    journal.sync().expect("sync");
    crash(journal);
    let seg = segments(dir.path()).pop().expect("a segment");
    let mut bytes = fs::read(&seg).expect("read");
    bytes.extend_from_slice(&[0x40, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9]);
    fs::write(&seg, bytes).expect("write");
    let (journal, recovered) = open(dir.path(), 2);
    assert_eq!(numbers(&recovered.records), (0..10).collect::<Vec<_>>());
    assert_eq!(journal.counters().bytes_discarded, 11);
}

#[test]
fn chunks_in_flight_come_back_with_their_batch_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut journal, _) = open(dir.path(), 7);
    for n in 0..30 {
        journal.append(&record(n)).expect("append");
    }
    // Chunk 0 was delivered; chunk 1 was handed to the sink when the process died.
    let a = chunk(0, 0, 10);
    let b = chunk(1, 10, 10);
    let id_a = journal.begin_chunk(&a).expect("begin");
    journal.end_chunk(&id_a).expect("end");
    let id_b = journal.begin_chunk(&b).expect("begin");
    assert_eq!(id_b.sequence, 1);
    assert_eq!(journal.counters().open_chunks, 1);
    crash(journal);

    let (mut journal, recovered) = open(dir.path(), 8);
    assert_eq!(recovered.chunks.len(), 1);
    let rb = &recovered.chunks[0];
    assert_eq!(rb.batch_id(), id_b, "same host, instance and sequence");
    assert_eq!(rb.chunk, b, "same window, index and records");
    assert_eq!(numbers(&recovered.records), (20..30).collect::<Vec<_>>());

    // Delivered now, but the done mark is synced lazily: a crash before the next sync
    // brings the chunk back once more, under the same batch ID (the collector drops it).
    journal.end_chunk(&rb.batch_id()).expect("end");
    crash(journal);
    let (mut journal, recovered) = open(dir.path(), 9);
    assert_eq!(recovered.chunks.len(), 1);
    assert_eq!(recovered.chunks[0].batch_id(), id_b);

    // Once the done mark is synced, only the unbatched records remain.
    journal.end_chunk(&id_b).expect("end");
    journal.sync().expect("sync");
    crash(journal);
    let (_journal, recovered) = open(dir.path(), 10);
    assert!(recovered.chunks.is_empty());
    assert_eq!(numbers(&recovered.records), (20..30).collect::<Vec<_>>());
}

/// A completeness whose every field differs from the others.
fn a_completeness() -> flow_batch::Completeness {
    flow_batch::Completeness {
        closes_seen: 31,
        records_emitted: 29,
        lost_ring_full: 2,
        lost_recursion: 3,
        lost_journal: 4,
        lost_spool: 5,
        interim_records: 6,
        records_replayed: 7,
        running_whole_window: true,
    }
}

#[test]
fn a_last_chunk_comes_back_with_its_completeness() {
    // The window's last chunk carries its completeness: replayed after a crash, it
    // must carry it again (or the collector writes no completeness for the window).
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut journal, _) = open(dir.path(), 7);
    let positions: Vec<u64> = (0..30)
        .map(|n| journal.append_tagged(&record(n)).expect("append"))
        .collect();
    let mut a = chunk(0, 0, 10);
    a.tags = positions[..10].to_vec();
    let mut b = chunk(1, 10, 10);
    b.tags = positions[10..20].to_vec();
    b.last = true;
    b.completeness = Some(a_completeness());
    // A last chunk of no records (they all left in earlier chunks) keeps it too.
    let mut empty = flow_batch::Chunk::new(window(), 2, 2, true, Vec::new());
    empty.completeness = Some(flow_batch::Completeness {
        running_whole_window: false,
        ..a_completeness()
    });
    let id_a = journal.begin_chunk(&a).expect("begin");
    let id_b = journal.begin_chunk(&b).expect("begin");
    let id_empty = journal.begin_chunk(&empty).expect("begin");
    crash(journal);

    let (journal, recovered) = open(dir.path(), 8);
    let ids: Vec<_> = recovered.chunks.iter().map(|c| c.batch_id()).collect();
    assert_eq!(ids, vec![id_a, id_b.clone(), id_empty]);
    assert_eq!(recovered.chunks[0].chunk, a, "none: not a last chunk");
    assert_eq!(recovered.chunks[0].chunk.completeness, None);
    assert_eq!(
        recovered.chunks[1].chunk, b,
        "same records and completeness"
    );
    assert_eq!(
        recovered.chunks[1].chunk.completeness,
        Some(a_completeness())
    );
    assert_eq!(recovered.chunks[2].chunk, empty);
    assert_eq!(numbers(&recovered.records), (20..30).collect::<Vec<_>>());

    // The recovery wrote the intents again, completeness included: a crash right
    // after it brings back the same chunks.
    crash(journal);
    let (mut journal, again) = open(dir.path(), 9);
    assert_eq!(again, recovered);

    // Once delivered, it is gone.
    for c in &again.chunks {
        journal.end_chunk(&c.batch_id()).expect("end");
    }
    journal.sync().expect("sync");
    crash(journal);
    let (_journal, last) = open(dir.path(), 10);
    assert!(last.chunks.is_empty());
    assert_eq!(numbers(&last.records), (20..30).collect::<Vec<_>>());
}

#[test]
fn tagged_chunks_name_their_records_positions() {
    // The exporter's path: positions from append_tagged ride along as chunk tags.
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut journal, _) = open(dir.path(), 7);
    let positions: Vec<u64> = (0..30)
        .map(|n| journal.append_tagged(&record(n)).expect("append"))
        .collect();
    assert_eq!(journal.counters().pending_records, 30);
    let tagged = |index, first: usize| {
        let mut c = chunk(index, first as u64, 10);
        c.tags = positions[first..first + 10].to_vec();
        c
    };
    let (a, b) = (tagged(0, 0), tagged(1, 10));
    let id_a = journal.begin_chunk(&a).expect("begin");
    journal.end_chunk(&id_a).expect("end");
    let id_b = journal.begin_chunk(&b).expect("begin");
    let c = journal.counters();
    assert_eq!((c.records_unmatched, c.pending_records), (0, 10));
    crash(journal);

    let (_journal, recovered) = open(dir.path(), 8);
    assert_eq!(recovered.chunks.len(), 1);
    assert_eq!(recovered.chunks[0].batch_id(), id_b);
    assert_eq!(recovered.chunks[0].chunk.records, b.records);
    assert_eq!(numbers(&recovered.records), (20..30).collect::<Vec<_>>());
}

#[test]
fn a_failed_rotation_journals_nothing_more_and_fails_nothing() {
    // The next segment cannot be created (a directory is in its way): the append that
    // needs it is not journaled, but does not fail either (the exporter keeps
    // capturing); that record, and those after it, must not be in the journal, or they
    // would come back after a restart although their caller sent them on unjournaled.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = JournalConfig::default().with_segment_max_bytes(4096);
    let (mut journal, _) =
        RecordJournal::open(dir.path(), HOST, InstanceId::new(1), config).expect("open");
    let first = segments(dir.path());
    let current = first[0]
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse::<u64>().ok())
        .expect("segment number");
    let next = dir.path().join(format!("{:020}.wal", current + 1));
    fs::create_dir(&next).expect("block the next segment");
    let mut written = 0;
    loop {
        let at = journal
            .append_tagged(&record(written))
            .expect("never an error");
        if at == flowexporter::journal::NOT_JOURNALED {
            break;
        }
        written += 1;
        assert!(written < 1_000, "the segment never filled");
    }
    for n in written + 1..written + 5 {
        let at = journal.append_tagged(&record(n)).expect("never an error");
        assert_eq!(at, flowexporter::journal::NOT_JOURNALED);
    }
    let c = journal.counters();
    assert_eq!(
        (c.write_failures, c.degraded, c.records_not_journaled),
        (1, 1, 5)
    );
    assert!(!journal.is_journaling());
    journal.sync().expect("sync");
    crash(journal);
    fs::remove_dir(&next).expect("unblock");
    let (_journal, recovered) = open(dir.path(), 2);
    assert_eq!(
        numbers(&recovered.records),
        (0..written).collect::<Vec<_>>(),
        "exactly the records whose append was journaled"
    );
}

#[test]
fn identical_records_are_matched_one_for_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut journal, _) = open(dir.path(), 1);
    for _ in 0..3 {
        journal.append(&record(5)).expect("append");
    }
    let c = flow_batch::Chunk::new(window(), 0, 0, true, vec![record(5), record(5)]);
    let id = journal.begin_chunk(&c).expect("begin");
    journal.end_chunk(&id).expect("end");
    crash(journal);
    let (_j, recovered) = open(dir.path(), 2);
    assert_eq!(
        numbers(&recovered.records),
        vec![5],
        "one copy was in no chunk"
    );
}

#[test]
fn done_segments_are_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = JournalConfig::default().with_segment_max_bytes(8192);
    let (mut journal, _) =
        RecordJournal::open(dir.path(), HOST, InstanceId::new(1), config).expect("open");
    for n in 0..400 {
        journal.append(&record(n)).expect("append");
    }
    assert!(journal.counters().segments > 3, "{:?}", journal.counters());
    for (seq, c) in chunks(4, 100).iter().enumerate() {
        let id = journal.begin_chunk(c).expect("begin");
        assert_eq!(id.sequence, seq as u64);
        journal.end_chunk(&id).expect("end");
    }
    let c = journal.counters();
    assert_eq!(
        (c.live_records, c.pending_records, c.open_chunks),
        (0, 0, 0)
    );
    assert_eq!(c.segments, 1, "{c:?}");
    assert_eq!(segments(dir.path()).len(), 1);
    assert_eq!(c.records_unmatched, 0);
    crash(journal);
    let (_j, recovered) = open(dir.path(), 2);
    assert!(recovered.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_chunk_is_dropped_by_the_collector_if_it_had_arrived() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("flows.jsonl");
    let journal_dir = dir.path().join("journal");
    let collector = collector(&out, FaultInjection::default()).await;

    // Run 1: the chunk reaches the collector, then the process dies before end_chunk.
    {
        let (mut journal, _) = open(&journal_dir, 100);
        let sink = CollectorSink::start(sink_config(
            &collector.url(),
            100,
            &dir.path().join("spool1"),
        ))
        .expect("sink");
        for n in 0..40 {
            journal.append(&record(n)).expect("append");
        }
        let c = chunk(0, 0, 25);
        journal.begin_chunk(&c).expect("begin");
        sink.deliver(&c).await.expect("deliver");
        sink.flush().await.expect("flush");
        crash(journal);
        sink.close().await.expect("close");
    }
    assert_eq!(numbers_in(&out).len(), 25);

    // Run 2: the chunk comes back with its old batch ID; the rest is batched anew.
    let (mut journal, recovered) = open(&journal_dir, 101);
    let sink = CollectorSink::start(sink_config(
        &collector.url(),
        101,
        &dir.path().join("spool2"),
    ))
    .expect("sink");
    for rc in &recovered.chunks {
        // Its old batch ID: a collector that has it drops it.
        sink.replay(&rc.chunk, &rc.batch_id())
            .await
            .expect("replay");
        journal.end_chunk(&rc.batch_id()).expect("end");
    }
    let rest = flow_batch::Chunk::new(window(), 0, 0, true, recovered.records.clone());
    let id = journal.begin_chunk(&rest).expect("begin");
    sink.deliver(&rest).await.expect("deliver");
    journal.end_chunk(&id).expect("end");
    sink.flush().await.expect("flush");

    assert_exactly_once(&out, 40);
    assert_eq!(collector.stats().chunks_duplicate, 1);
    assert_eq!(sink.counters().chunks_duplicate, 1);
    assert_eq!(journal.counters().live_records, 0);
    sink.close().await.expect("close");
    collector.shutdown().await;
}
