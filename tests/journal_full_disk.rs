//! The record journal on a real, full tmpfs: nothing fails, what is not journaled is
//! counted, the journal resumes by itself when space returns, and after a crash what
//! was journaled comes back exactly once. These tests run as root (they mount a tmpfs).

// The collector-sink tests' helpers: records that carry their own number, chunks,
// the reference collector and readers of its output.
#[path = "../crates/flow-sink/tests/common/mod.rs"]
mod common;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use common::*;
use flow_batch::wire::InstanceId;
use flow_testkit::{Tmpfs, fill_disk};
use flowexporter::{JournalConfig, RecordJournal, Recovered, journal::NOT_JOURNALED};

/// Deletes the filler, and waits until the file system shows the space as free. Run in
/// parallel, the space was seen to come back a moment after the unlink (about one run
/// in ten; likely a process spawned by another test holding a copy of the descriptor
/// until its exec), and a resume tried in that moment fails.
fn free(filler: &Path) {
    fs::remove_file(filler).expect("free space");
    let dir = filler.parent().expect("parent");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = rustix::fs::statvfs(dir).expect("statvfs");
        if st.f_bavail * st.f_bsize >= 256 << 10 {
            return;
        }
        assert!(Instant::now() < deadline, "the space never came back");
        std::thread::sleep(Duration::from_millis(10));
    }
}

const SYNC: Duration = Duration::from_millis(100);

fn open(dir: &Path, instance: u128) -> (RecordJournal, Recovered) {
    RecordJournal::open(
        dir,
        HOST,
        InstanceId::new(instance),
        JournalConfig::default().with_sync_interval(SYNC),
    )
    .expect("open journal")
}

fn numbers(records: &[flow_record::FlowRecord]) -> Vec<u64> {
    records.iter().map(|r| r.stats.bytes_sent).collect()
}

fn tagged(sequence: u64, first: usize, count: usize, tags: &[u64]) -> flow_batch::Chunk {
    let mut c = chunk(sequence, first as u64, count as u64);
    c.tags = tags[first..first + count].to_vec();
    c
}

#[test]
fn a_full_disk_degrades_and_the_journal_resumes_when_space_returns() {
    let fs_ = Tmpfs::mount("2m");
    let dir = fs_.path().join("journal");
    let filler: PathBuf = fs_.path().join("filler");
    let (mut journal, _) = open(&dir, 1);

    // Records 0..100; chunk A (0..50) and B (50..100) handed to the sink.
    let mut tags: Vec<u64> = (0..100)
        .map(|n| journal.append_tagged(&record(n)).expect("append"))
        .collect();
    let a = tagged(0, 0, 50, &tags);
    let b = tagged(1, 50, 50, &tags);
    let id_a = journal.begin_chunk(&a).expect("begin");
    let id_b = journal.begin_chunk(&b).expect("begin");
    journal.sync().expect("sync");

    fill_disk(&filler);
    // Records 100..150 are buffered; the sync that writes them finds the disk full.
    for n in 100..150 {
        tags.push(journal.append_tagged(&record(n)).expect("buffered"));
    }
    let t0 = Instant::now();
    assert!(
        !journal
            .sync_if_due(t0 + SYNC)
            .expect("a full disk is no error")
    );
    let c = journal.counters();
    assert_eq!((c.degraded, c.write_failures), (1, 1), "{c:?}");
    assert!(!journal.is_journaling());
    assert_eq!(
        journal.poll_timeout(),
        Some(t0 + 2 * SYNC),
        "retries on its own"
    );

    // Capture and delivery go on: nothing fails, what is not journaled is counted.
    for n in 150..160 {
        let at = journal.append_tagged(&record(n)).expect("no error");
        assert_eq!(at, NOT_JOURNALED);
        tags.push(at);
    }
    journal.end_chunk(&id_a).expect("A delivered");
    let c_chunk = tagged(2, 100, 60, &tags);
    let id_c = journal.begin_chunk(&c_chunk).expect("begin while degraded");
    journal.end_chunk(&id_c).expect("C delivered");
    journal.sync().expect("no error");
    let c = journal.counters();
    assert_eq!(c.records_not_journaled, 10);
    assert_eq!(c.degraded, 1);

    // Still full when the retry comes: still degraded, one more failure counted.
    assert!(!journal.sync_if_due(t0 + 2 * SYNC).expect("no error"));
    let c = journal.counters();
    assert_eq!((c.degraded, c.write_failures), (1, 2), "{c:?}");

    // Space returns: the next retry resumes by itself.
    free(&filler);
    assert!(
        !journal.sync_if_due(t0 + 2 * SYNC).expect("no error"),
        "not before the retry is due"
    );
    let resumed = journal.sync_if_due(t0 + 3 * SYNC).expect("resumed");
    assert!(resumed, "{:?}", journal.counters());
    let c = journal.counters();
    assert_eq!((c.degraded, c.resumed), (0, 1), "{c:?}");
    assert!(journal.is_journaling());

    // Journaled again: records 1000..1010.
    for n in 1000..1010 {
        assert_ne!(
            journal.append_tagged(&record(n)).expect("append"),
            NOT_JOURNALED
        );
    }
    journal.sync().expect("sync");
    std::mem::forget(journal); // kill -9

    // A and C were delivered (their done marks, and C's intent, were written on
    // resume): they do not come back. B was in flight: it does, under its batch ID.
    // Records 150..160 were never journaled. Nothing comes back twice.
    let (_journal, recovered) = open(&dir, 2);
    assert_eq!(recovered.chunks.len(), 1, "{:?}", recovered.chunks);
    assert_eq!(recovered.chunks[0].batch_id(), id_b);
    assert_eq!(recovered.chunks[0].chunk.records, b.records);
    assert_eq!(
        numbers(&recovered.records),
        (1000..1010).collect::<Vec<_>>()
    );
}

#[test]
fn a_full_disk_at_rotation_degrades_and_recovers_exactly_once() {
    // Small segments: the disk fills while a new segment is created (and its header
    // synced), not only on a buffered write.
    let fs_ = Tmpfs::mount("1m");
    let dir = fs_.path().join("journal");
    let config = JournalConfig::default()
        .with_sync_interval(SYNC)
        .with_segment_max_bytes(4096);
    let (mut journal, _) =
        RecordJournal::open(&dir, HOST, InstanceId::new(1), config.clone()).expect("open");
    fill_disk(&fs_.path().join("filler"));
    let mut journaled = Vec::new();
    let mut n = 0;
    while journal.is_journaling() {
        assert!(n < 10_000, "the disk never filled");
        if journal.append_tagged(&record(n)).expect("no error") != NOT_JOURNALED {
            journaled.push(n);
        }
        n += 1;
    }
    let c = journal.counters();
    assert!(
        c.write_failures >= 1 && c.records_not_journaled >= 1,
        "{c:?}"
    );
    for m in n..n + 20 {
        assert_eq!(
            journal.append_tagged(&record(m)).expect("no error"),
            NOT_JOURNALED
        );
    }
    free(&fs_.path().join("filler"));
    let later = Instant::now() + 2 * SYNC;
    assert!(journal.sync_if_due(later).expect("resumed"));
    journal.append(&record(99_999)).expect("append");
    journal.sync().expect("sync");
    std::mem::forget(journal);

    let (_journal, recovered) =
        RecordJournal::open(&dir, HOST, InstanceId::new(2), config).expect("reopen");
    let got = numbers(&recovered.records);
    let mut unique = got.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), got.len(), "nothing twice");
    assert!(got.contains(&99_999));
    for m in n..n + 20 {
        assert!(!got.contains(&m), "record {m} was never journaled");
    }
    // What was journaled before the failure and synced comes back; the records of
    // the failed write itself may or may not (they reached the disk or not).
    let synced_before: Vec<u64> = journaled.iter().copied().take(10).collect();
    for m in synced_before {
        assert!(got.contains(&m), "record {m} lost");
    }
}

#[test]
fn a_chunk_begun_and_ended_as_the_disk_fills_does_not_come_back() {
    // The failure is found by begin_chunk's own sync: its intent, and the done mark
    // after it, are kept in memory and written on resume, so a later crash does not
    // hand the delivered records back as new ones (a duplicate under a new batch ID).
    let fs_ = Tmpfs::mount("2m");
    let dir = fs_.path().join("journal");
    let (mut journal, _) = open(&dir, 1);
    let mut tags: Vec<u64> = (0..10)
        .map(|n| journal.append_tagged(&record(n)).expect("append"))
        .collect();
    journal.sync().expect("sync");
    fill_disk(&fs_.path().join("filler"));
    for n in 10..60 {
        tags.push(journal.append_tagged(&record(n)).expect("buffered"));
    }
    let c = tagged(0, 0, 60, &tags);
    let id = journal.begin_chunk(&c).expect("no error");
    assert!(!journal.is_journaling(), "the intent's sync failed");
    journal.end_chunk(&id).expect("no error");
    free(&fs_.path().join("filler"));
    assert!(
        journal
            .sync_if_due(Instant::now() + 2 * SYNC)
            .expect("resumed")
    );
    journal.append(&record(777)).expect("append");
    journal.sync().expect("sync");
    std::mem::forget(journal);

    let (_journal, recovered) = open(&dir, 2);
    assert!(recovered.chunks.is_empty(), "{:?}", recovered.chunks);
    assert_eq!(numbers(&recovered.records), vec![777]);
}

/// A previous run on `dir`: records 0..60, chunk 0 (records 0..20) delivered, chunk 1
/// (records 20..40, its window's last, with a completeness) in flight; returns chunk 1.
fn previous_run(dir: &Path) -> (flow_batch::wire::BatchId, flow_batch::Chunk) {
    let (mut journal, _) = open(dir, 1);
    for n in 0..60 {
        journal.append(&record(n)).expect("append");
    }
    let id_a = journal.begin_chunk(&chunk(0, 0, 20)).expect("begin");
    journal.end_chunk(&id_a).expect("end");
    let mut b = chunk(1, 20, 20);
    b.last = true;
    b.completeness = Some(flow_batch::Completeness {
        closes_seen: 45,
        records_emitted: 40,
        lost_ring_full: 5,
        running_whole_window: true,
        ..Default::default()
    });
    let id_b = journal.begin_chunk(&b).expect("begin");
    journal.sync().expect("sync");
    std::mem::forget(journal);
    (id_b, b)
}

#[test]
fn a_full_disk_at_start_does_not_stop_the_exporter() {
    let fs_ = Tmpfs::mount("2m");
    let dir = fs_.path().join("journal");
    let filler = fs_.path().join("filler");
    let (id_b, b) = previous_run(&dir);
    fill_disk(&filler);

    // The recovery cannot be written: the journal opens all the same, without
    // journaling, and hands back what the previous run left.
    let (mut journal, recovered) = open(&dir, 2);
    assert!(!journal.is_journaling());
    let c = journal.counters();
    assert_eq!((c.degraded, c.write_failures), (1, 1), "{c:?}");
    assert_eq!(recovered.chunks.len(), 1);
    assert_eq!(recovered.chunks[0].batch_id(), id_b);
    assert_eq!(recovered.chunks[0].chunk, b);
    assert_eq!(numbers(&recovered.records), (40..60).collect::<Vec<_>>());

    // The exporter delivers all of it while the disk is still full.
    journal.end_chunk(&id_b).expect("end");
    let rest = flow_batch::Chunk::new(window(), 0, 0, true, recovered.records.clone());
    let id = journal.begin_chunk(&rest).expect("begin");
    journal.end_chunk(&id).expect("end");
    assert_eq!(
        journal.append_tagged(&record(100)).expect("no error"),
        NOT_JOURNALED
    );

    // Space returns: the journal resumes, and writes the done marks it kept.
    free(&filler);
    let resumed = journal
        .sync_if_due(Instant::now() + 2 * SYNC)
        .expect("resumed");
    assert!(resumed, "{:?}", journal.counters());
    assert!(journal.is_journaling());
    journal.append(&record(200)).expect("append");
    journal.sync().expect("sync");
    std::mem::forget(journal);

    // Nothing delivered comes back; what was journaled since does, once.
    let (journal, recovered) = open(&dir, 3);
    assert!(recovered.chunks.is_empty(), "{:?}", recovered.chunks);
    assert_eq!(numbers(&recovered.records), vec![200]);
    assert_eq!(journal.counters().degraded, 0);
}

#[test]
fn a_crash_while_the_disk_is_full_at_start_loses_nothing_journaled() {
    let fs_ = Tmpfs::mount("2m");
    let dir = fs_.path().join("journal");
    let filler = fs_.path().join("filler");
    let (id_b, b) = previous_run(&dir);
    fill_disk(&filler);
    for instance in [2, 3] {
        let (journal, recovered) = open(&dir, instance);
        assert!(!journal.is_journaling());
        assert_eq!(recovered.chunks.len(), 1);
        assert_eq!(numbers(&recovered.records), (40..60).collect::<Vec<_>>());
        std::mem::forget(journal);
    }
    free(&filler);
    let (journal, recovered) = open(&dir, 4);
    assert!(journal.is_journaling());
    assert_eq!(recovered.chunks.len(), 1);
    assert_eq!(recovered.chunks[0].batch_id(), id_b);
    assert_eq!(recovered.chunks[0].chunk, b);
    assert_eq!(numbers(&recovered.records), (40..60).collect::<Vec<_>>());
}

/// The `.wal` files of `dir` with their sizes.
fn wal_sizes(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .map(|p| {
            let len = fs::metadata(&p).expect("stat").len();
            (p, len)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_disk_full_for_more_than_a_thousand_retries_resumes_and_leaves_no_empty_segments() {
    // Creating an empty file works on a full tmpfs; writing its header does not. Each
    // failed retry must remove the file it created: otherwise retries pile up empty
    // segments, and after 1,000 of them the journal looks for a free name no more and
    // fails for good (`AlreadyExists`), even once space returns.
    let fs_ = Tmpfs::mount("1m");
    let dir = fs_.path().join("journal");
    let filler = fs_.path().join("filler");
    let sync = Duration::from_millis(1);
    let config = JournalConfig::default().with_sync_interval(sync);
    let (mut journal, _) =
        RecordJournal::open(&dir, HOST, InstanceId::new(1), config.clone()).expect("open");
    journal.append(&record(0)).expect("append");
    journal.sync().expect("sync");
    fill_disk(&filler);
    for n in 1..50 {
        journal.append(&record(n)).expect("buffered");
    }
    let t0 = Instant::now();
    assert!(!journal.sync_if_due(t0 + sync).expect("no error"));
    assert!(!journal.is_journaling());
    let retries = 1_100u32;
    for i in 2..2 + retries {
        assert!(
            !journal.sync_if_due(t0 + i * sync).expect("no error"),
            "the disk is still full"
        );
    }
    let c = journal.counters();
    assert!(c.write_failures > u64::from(retries), "{c:?}");
    let empty: Vec<_> = wal_sizes(&dir)
        .into_iter()
        .filter(|(_, len)| *len == 0)
        .collect();
    assert!(
        empty.is_empty(),
        "failed retries left {} empty segments",
        empty.len()
    );

    free(&filler);
    let resumed = journal
        .sync_if_due(t0 + (retries + 3) * sync)
        .expect("resumed");
    assert!(resumed, "{:?}", journal.counters());
    assert!(journal.is_journaling());
    journal.append(&record(1000)).expect("append");
    journal.sync().expect("sync");
    for (path, len) in wal_sizes(&dir) {
        assert!(len >= 16, "{} is {len} bytes", path.display());
    }
    std::mem::forget(journal);

    let (_journal, recovered) =
        RecordJournal::open(&dir, HOST, InstanceId::new(2), config).expect("reopen");
    let got = numbers(&recovered.records);
    assert!(got.contains(&0) && got.contains(&1000), "{got:?}");
}

#[test]
fn on_a_read_only_file_system_the_journal_opens_and_counts_only_real_moves() {
    // Nothing can be moved into damaged/ (EROFS): the intruder stays, is not counted
    // as set aside, and the journal opens all the same (not journaling), with what
    // the previous run left.
    let fs_ = Tmpfs::mount("2m");
    let dir = fs_.path().join("journal");
    // Left elsewhere, then copied: the crashed run's descriptors would keep the file
    // system from being remounted read-only.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let (id_b, _) = previous_run(elsewhere.path());
    fs::create_dir(&dir).expect("mkdir");
    for entry in fs::read_dir(elsewhere.path()).expect("dir") {
        let from = entry.expect("entry").path();
        fs::copy(&from, dir.join(from.file_name().expect("name"))).expect("copy");
    }
    fs::create_dir(dir.join("00000000000000000900.wal")).expect("intruder");
    let status = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(fs_.path())
        .status()
        .expect("remount");
    assert!(status.success(), "remount read-only");

    let (journal, recovered) = open(&dir, 2);
    assert!(!journal.is_journaling());
    let c = journal.counters();
    assert_eq!(c.entries_set_aside, 0, "nothing was moved: {c:?}");
    assert_eq!(recovered.chunks.len(), 1);
    assert_eq!(recovered.chunks[0].batch_id(), id_b);
    assert_eq!(numbers(&recovered.records), (40..60).collect::<Vec<_>>());
    assert!(
        dir.join("00000000000000000900.wal").is_dir(),
        "left in place"
    );
    drop(journal);
    let status = Command::new("mount")
        .args(["-o", "remount,rw"])
        .arg(fs_.path())
        .status()
        .expect("remount");
    assert!(status.success(), "remount read-write");
    let (journal, _) = open(&dir, 3);
    assert_eq!(journal.counters().entries_set_aside, 1);
    assert!(journal.is_journaling());
}
