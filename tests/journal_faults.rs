//! The record journal against what a state directory can hold: directories, FIFOs,
//! symbolic links, unreadable and oversize files under a segment's name, damaged
//! segments, and private modes. The full disk is in `journal_full_disk.rs`.

// The collector-sink tests' helpers: records that carry their own number, chunks,
// the reference collector and readers of its output.
#[path = "../crates/flow-sink/tests/common/mod.rs"]
mod common;

use std::{
    fs,
    os::unix::fs::{FileTypeExt, PermissionsExt, symlink},
    path::{Path, PathBuf},
    process::Command,
    sync::mpsc,
    time::Duration,
};

use common::*;
use flow_batch::wire::InstanceId;
use flowexporter::{JournalConfig, JournalCounters, RecordJournal, Recovered};

fn open(dir: &Path, instance: u128) -> (RecordJournal, Recovered) {
    RecordJournal::open(
        dir,
        HOST,
        InstanceId::new(instance),
        JournalConfig::default(),
    )
    .expect("open journal")
}

/// Opens in another thread, failing (instead of hanging the suite) after 20 s.
fn open_within_20s(dir: &Path, instance: u128) -> (RecordJournal, Recovered) {
    let (tx, rx) = mpsc::channel();
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(RecordJournal::open(
            &dir,
            HOST,
            InstanceId::new(instance),
            JournalConfig::default(),
        ));
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("open did not hang")
        .expect("open journal")
}

/// Simulates `kill -9`: no destructor runs, so nothing buffered is written.
fn crash(journal: RecordJournal) {
    std::mem::forget(journal);
}

fn numbers(records: &[flow_record::FlowRecord]) -> Vec<u64> {
    records.iter().map(|r| r.stats.bytes_sent).collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

fn damaged(dir: &Path) -> Vec<PathBuf> {
    let Ok(listing) = fs::read_dir(dir.join("damaged")) else {
        return Vec::new();
    };
    let mut v: Vec<_> = listing.map(|e| e.expect("entry").path()).collect();
    v.sort();
    v
}

/// A journal left by a crashed run: records `0..n` synced.
fn previous_run(dir: &Path, n: u64) {
    let (mut journal, _) = open(dir, 1);
    for i in 0..n {
        journal.append(&record(i)).expect("append");
    }
    journal.sync().expect("sync");
    crash(journal);
}

/// A name that sorts after every segment of `dir`, as a segment's.
const INTRUDER: &str = "00000000000000000900.wal";

/// After an intruder was set aside: the journal works, and what it journals comes back.
fn still_works(dir: &Path, journal: RecordJournal, counters_before: JournalCounters) {
    let mut journal = journal;
    for i in 500..505 {
        journal.append(&record(i)).expect("append");
    }
    journal.sync().expect("sync");
    assert!(journal.is_journaling());
    crash(journal);
    let (_journal, recovered) = open(dir, 99);
    let mut got = numbers(&recovered.records);
    got.sort();
    let mut want: Vec<u64> = (0..counters_before.records_recovered).collect();
    want.extend(500..505);
    assert_eq!(got, want);
}

#[test]
fn a_directory_named_like_a_segment_is_set_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    previous_run(dir.path(), 20);
    fs::create_dir(dir.path().join(INTRUDER)).expect("mkdir");
    fs::write(dir.path().join(INTRUDER).join("inside"), b"keep").expect("write");

    let (journal, recovered) = open(dir.path(), 2);
    assert_eq!(numbers(&recovered.records), (0..20).collect::<Vec<_>>());
    let c = journal.counters();
    assert_eq!((c.entries_set_aside, c.damaged_segments), (1, 0));
    let aside = damaged(dir.path());
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(aside[0].is_dir());
    assert_eq!(fs::read(aside[0].join("inside")).expect("kept"), b"keep");
    still_works(dir.path(), journal, c);
}

#[test]
fn a_fifo_named_like_a_segment_does_not_hang_the_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    previous_run(dir.path(), 20);
    let status = Command::new("mkfifo")
        .arg(dir.path().join(INTRUDER))
        .status()
        .expect("mkfifo");
    assert!(status.success());

    let (journal, recovered) = open_within_20s(dir.path(), 2);
    assert_eq!(numbers(&recovered.records), (0..20).collect::<Vec<_>>());
    let c = journal.counters();
    assert_eq!(c.entries_set_aside, 1);
    let aside = damaged(dir.path());
    assert_eq!(aside.len(), 1);
    let kind = fs::symlink_metadata(&aside[0]).expect("stat").file_type();
    assert!(kind.is_fifo(), "the FIFO itself was moved: {kind:?}");
    still_works(dir.path(), journal, c);
}

#[test]
fn a_link_to_dev_zero_is_neither_followed_nor_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    previous_run(dir.path(), 20);
    symlink("/dev/zero", dir.path().join(INTRUDER)).expect("symlink");

    let (journal, recovered) = open_within_20s(dir.path(), 2);
    assert_eq!(numbers(&recovered.records), (0..20).collect::<Vec<_>>());
    let c = journal.counters();
    assert_eq!(c.entries_set_aside, 1);
    let aside = damaged(dir.path());
    assert_eq!(aside.len(), 1);
    assert_eq!(
        fs::read_link(&aside[0]).expect("still a link"),
        Path::new("/dev/zero")
    );
    assert!(
        fs::metadata("/dev/zero")
            .expect("stat")
            .file_type()
            .is_char_device()
    );
    still_works(dir.path(), journal, c);
}

#[test]
fn a_link_to_an_outside_file_leaves_that_file_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let precious = outside.path().join("precious.wal");
    // Even a valid segment elsewhere is not ours to read, move or delete.
    previous_run(outside.path(), 3);
    let theirs = segments(outside.path()).pop().expect("a segment");
    fs::rename(&theirs, &precious).expect("rename");
    let before = fs::read(&precious).expect("read");
    let mode_before = fs::metadata(&precious).expect("stat").permissions().mode();

    previous_run(dir.path(), 20);
    symlink(&precious, dir.path().join(INTRUDER)).expect("symlink");
    let (journal, recovered) = open(dir.path(), 2);
    assert_eq!(
        numbers(&recovered.records),
        (0..20).collect::<Vec<_>>(),
        "the linked segment's records are not recovered"
    );
    let c = journal.counters();
    assert_eq!(c.entries_set_aside, 1);
    let aside = damaged(dir.path());
    assert_eq!(fs::read_link(&aside[0]).expect("still a link"), precious);
    assert_eq!(fs::read(&precious).expect("still there"), before);
    assert_eq!(
        fs::metadata(&precious).expect("stat").permissions().mode(),
        mode_before
    );
    still_works(dir.path(), journal, c);
    assert_eq!(fs::read(&precious).expect("still there"), before);
}

#[test]
fn an_oversize_file_is_set_aside_unread() {
    let dir = tempfile::tempdir().expect("tempdir");
    previous_run(dir.path(), 20);
    let limit = JournalConfig::default().segment_read_limit();
    let big = fs::File::create(dir.path().join(INTRUDER)).expect("create");
    big.set_len(limit + 1).expect("sparse file"); // no disk used
    drop(big);

    let (journal, recovered) = open(dir.path(), 2);
    assert_eq!(numbers(&recovered.records), (0..20).collect::<Vec<_>>());
    let c = journal.counters();
    assert_eq!(c.entries_set_aside, 1);
    let aside = damaged(dir.path());
    assert_eq!(fs::metadata(&aside[0]).expect("stat").len(), limit + 1);
    still_works(dir.path(), journal, c);
}

#[test]
fn a_file_exactly_at_the_read_limit_is_read() {
    // The bound is not off by one: a (garbage) file of exactly the limit is a segment
    // of ours, read and found damaged, not set aside unread.
    let dir = tempfile::tempdir().expect("tempdir");
    let limit = JournalConfig::default().segment_read_limit();
    assert!(limit < 128 << 20, "{limit}");
    let f = fs::File::create(dir.path().join(INTRUDER)).expect("create");
    f.set_len(limit).expect("sparse");
    drop(f);
    let (journal, recovered) = open(dir.path(), 2);
    assert!(recovered.is_empty());
    let c = journal.counters();
    assert_eq!((c.entries_set_aside, c.damaged_segments), (0, 1));
}

/// The unreadable-segment test runs this in a child process without
/// `CAP_DAC_OVERRIDE` and `CAP_DAC_READ_SEARCH` (root ignores modes otherwise). Without
/// the environment variable it does nothing.
#[test]
fn child_opens_a_journal_with_an_unreadable_segment() {
    let Some(dir) = std::env::var_os("JOURNAL_TEST_UNREADABLE_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let err = fs::read(dir.join(INTRUDER)).expect_err("capabilities were dropped");
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
    let (mut journal, recovered) = open(&dir, 2);
    assert_eq!(numbers(&recovered.records), (0..20).collect::<Vec<_>>());
    let c = journal.counters();
    assert_eq!(c.entries_set_aside, 1, "{c:?}");
    journal.append(&record(500)).expect("append");
    journal.sync().expect("sync");
    assert!(journal.is_journaling());
    crash(journal);
}

#[test]
fn an_unreadable_segment_is_set_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A segment of ours (records 100..110) that cannot be opened.
    let other = tempfile::tempdir().expect("tempdir");
    let (mut journal, _) = open(other.path(), 1);
    for i in 100..110 {
        journal.append(&record(i)).expect("append");
    }
    journal.sync().expect("sync");
    crash(journal);
    previous_run(dir.path(), 20);
    let ours = segments(other.path()).pop().expect("segment");
    fs::copy(&ours, dir.path().join(INTRUDER)).expect("copy");
    fs::set_permissions(dir.path().join(INTRUDER), fs::Permissions::from_mode(0o000))
        .expect("chmod");

    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new("setpriv")
        .args(["--bounding-set", "-dac_override,-dac_read_search", "--"])
        .arg(exe)
        .args([
            "--exact",
            "child_opens_a_journal_with_an_unreadable_segment",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("JOURNAL_TEST_UNREADABLE_DIR", dir.path())
        .output()
        .expect("run setpriv");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{stderr}"
    );
    let aside = damaged(dir.path());
    assert_eq!(aside.len(), 1, "{aside:?}");
    // Its records were not lost: they are in damaged/, for the operator.
    fs::set_permissions(&aside[0], fs::Permissions::from_mode(0o600)).expect("chmod");
    assert_eq!(
        fs::read(&aside[0]).expect("read"),
        fs::read(&ours).expect("read")
    );
    let (_journal, recovered) = open(dir.path(), 3);
    let mut got = numbers(&recovered.records);
    got.sort();
    let mut want: Vec<u64> = (0..20).collect();
    want.push(500);
    assert_eq!(got, want);
}

/// A run that journaled records `0..n` in one segment; returns the segment.
fn one_segment(dir: &Path, n: u64) -> PathBuf {
    previous_run(dir, n);
    let all = segments(dir);
    assert_eq!(all.len(), 1);
    all[0].clone()
}

#[test]
fn one_flipped_byte_mid_segment_loses_one_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seg = one_segment(dir.path(), 201);
    let mut bytes = fs::read(&seg).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    fs::write(&seg, &bytes).expect("write");

    let (journal, recovered) = open(dir.path(), 2);
    let got = numbers(&recovered.records);
    assert_eq!(got.len(), 200, "all but the damaged record: {got:?}");
    let lost: Vec<u64> = (0..201).filter(|n| !got.contains(n)).collect();
    assert_eq!(lost.len(), 1);
    assert!((90..110).contains(&lost[0]), "{lost:?}");
    let c = journal.counters();
    assert_eq!((c.damaged_segments, c.bad_entries), (1, 1));
    assert!(c.bytes_discarded > 0);
    let aside = damaged(dir.path());
    assert_eq!(aside.len(), 1);
    assert_eq!(
        fs::read(&aside[0]).expect("kept"),
        bytes,
        "set aside as found"
    );
    // Recovery rewrote the rest: a crash now loses nothing more.
    crash(journal);
    let (_j, again) = open(dir.path(), 3);
    assert_eq!(numbers(&again.records), got);
}

#[test]
fn a_flipped_magic_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seg = one_segment(dir.path(), 200);
    let mut bytes = fs::read(&seg).expect("read");
    bytes[1] ^= 0xff;
    fs::write(&seg, &bytes).expect("write");

    let (journal, recovered) = open(dir.path(), 2);
    assert_eq!(numbers(&recovered.records), (0..200).collect::<Vec<_>>());
    let c = journal.counters();
    assert_eq!(
        (c.damaged_segments, c.bad_entries, c.bytes_discarded),
        (1, 0, 0)
    );
    assert_eq!(damaged(dir.path()).len(), 1);
}

#[test]
fn a_truncated_entry_is_a_quiet_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seg = one_segment(dir.path(), 50);
    let len = fs::metadata(&seg).expect("stat").len();
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .expect("open")
        .set_len(len - 30)
        .expect("truncate");
    let (journal, recovered) = open(dir.path(), 2);
    assert_eq!(numbers(&recovered.records), (0..49).collect::<Vec<_>>());
    let c = journal.counters();
    assert_eq!((c.damaged_segments, c.bad_entries), (0, 0));
    assert!(c.bytes_discarded > 0);
    assert!(damaged(dir.path()).is_empty(), "a torn tail is not damage");
    assert!(!dir.path().join("damaged").exists());
}

#[test]
fn damage_before_a_chunk_does_not_shift_its_records() {
    // Positions are byte offsets: a record lost in front of a chunk's records does not
    // make the chunk's intent name the wrong records (nor lose its completeness).
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut journal, _) = open(dir.path(), 7);
    let positions: Vec<u64> = (0..30)
        .map(|n| journal.append_tagged(&record(n)).expect("append"))
        .collect();
    let mut b = chunk(1, 10, 10);
    b.tags = positions[10..20].to_vec();
    b.last = true;
    b.completeness = Some(flow_batch::Completeness {
        closes_seen: 30,
        records_emitted: 30,
        interim_records: 2,
        running_whole_window: true,
        ..Default::default()
    });
    let id_b = journal.begin_chunk(&b).expect("begin");
    crash(journal);
    let seg = segments(dir.path()).pop().expect("segment");
    let mut bytes = fs::read(&seg).expect("read");
    // Inside record 5's body.
    let at = usize::try_from(positions[5] & 0xffff_ffff).expect("offset") + 20;
    bytes[at] ^= 0x01;
    fs::write(&seg, &bytes).expect("write");

    let (_journal, recovered) = open(dir.path(), 8);
    assert_eq!(recovered.chunks.len(), 1);
    assert_eq!(recovered.chunks[0].batch_id(), id_b);
    assert_eq!(recovered.chunks[0].chunk, b);
    let mut want: Vec<u64> = (0..10).filter(|&n| n != 5).collect();
    want.extend(20..30);
    assert_eq!(numbers(&recovered.records), want);
}

#[test]
fn what_the_journal_creates_is_private() {
    let base = tempfile::tempdir().expect("tempdir");
    let dir = base.path().join("new/journal");
    previous_run(&dir, 5);
    fs::create_dir(dir.join(INTRUDER)).expect("mkdir");
    // A journal directory an older release made 0755.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    let (mut journal, _) = open(&dir, 2);
    journal.append(&record(1)).expect("append");
    journal.sync().expect("sync");
    let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&base.path().join("new")), 0o700);
    assert_eq!(mode(&dir.join("damaged")), 0o700);
    let segs = segments(&dir);
    assert!(!segs.is_empty());
    for seg in segs {
        assert_eq!(mode(&seg), 0o600, "{}", seg.display());
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("dir") {
        let p = e.expect("entry").path();
        if p.is_file() {
            fs::copy(&p, to.join(p.file_name().expect("name"))).expect("copy");
        }
    }
}

#[test]
fn a_recovery_spans_segments_and_one_cut_short_counts_for_nothing() {
    let config = JournalConfig::default().with_segment_max_bytes(4096);
    let open4k = |dir: &Path, instance| {
        RecordJournal::open(dir, HOST, InstanceId::new(instance), config.clone()).expect("open")
    };
    let base = tempfile::tempdir().expect("tempdir");
    let (done, cut) = (base.path().join("done"), base.path().join("cut"));
    let (mut journal, _) = open4k(&done, 1);
    for n in 0..200 {
        journal.append(&record(n)).expect("append");
    }
    journal.sync().expect("sync");
    crash(journal);
    let before: Vec<PathBuf> = segments(&done);
    assert!(before.len() > 3, "{before:?}");
    copy_dir(&done, &cut);

    // A recovery of 200 records does not fit one 4 KiB segment: it continues into
    // more, and every one of them stays within the read bound.
    let (journal, recovered) = open4k(&done, 2);
    assert_eq!(numbers(&recovered.records), (0..200).collect::<Vec<_>>());
    let after = segments(&done);
    assert!(after.len() > 3, "{after:?}");
    for seg in &after {
        let len = fs::metadata(seg).expect("stat").len();
        assert!(len < 4096 + 512, "{} is {len} bytes", seg.display());
    }
    crash(journal);

    // The same recovery cut short by a crash just before its first segment got its
    // final name: the old segments are still there, and so are the later segments of
    // the recovery. Those count for nothing; nothing comes back twice.
    let recovery: Vec<&PathBuf> = after.iter().filter(|p| !before.contains(p)).collect();
    for (i, seg) in recovery.iter().enumerate() {
        let name = seg
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let name = if i == 0 { format!("{name}.tmp") } else { name };
        fs::copy(seg, cut.join(name)).expect("copy");
    }
    let (journal, recovered) = open4k(&cut, 3);
    assert_eq!(numbers(&recovered.records), (0..200).collect::<Vec<_>>());
    assert_eq!(journal.counters().damaged_segments, 0);
    crash(journal);
    let (_journal, recovered) = open4k(&cut, 4);
    assert_eq!(numbers(&recovered.records), (0..200).collect::<Vec<_>>());

    // And the completed one, opened again, recovers them once too.
    let (_journal, recovered) = open4k(&done, 5);
    assert_eq!(numbers(&recovered.records), (0..200).collect::<Vec<_>>());
}

/// Length of the journal's segment header and of an entry's framing (`FXWJ`, version,
/// flags, a `u64`; then per entry a `u32` length and a `u32` CRC-32C).
const SEGMENT_HEADER_LEN: usize = 16;
const ENTRY_HEAD_LEN: usize = 8;

/// `segment` (written by this release: version 3, records in wire format 2) as an
/// older release wrote it: `version` 2 (positions are byte offsets) or 1 (positions
/// are ordinals), records in wire format 1 (without the last 6 bytes: record kind
/// final, no flow ID, no process, which is what `common::record` makes), intents
/// without completeness (they end with their positions; `common::chunk` has none). The
/// positions the intents name are rewritten to where their records are now.
fn as_older_release(segment: &[u8], version: u16) -> Vec<u8> {
    use std::collections::HashMap;
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4"));
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8"));
    assert_eq!(&segment[..4], b"FXWJ");
    assert_eq!(segment[4..6], [3, 0], "written by this release");
    let mut out = segment[..SEGMENT_HEADER_LEN].to_vec();
    out[4..6].copy_from_slice(&version.to_le_bytes());
    let mut moved: HashMap<u32, u32> = HashMap::new();
    let mut ordinal = 0;
    let mut at = SEGMENT_HEADER_LEN;
    while at < segment.len() {
        let len = u32_at(segment, at) as usize;
        let body = &segment[at + ENTRY_HEAD_LEN..at + ENTRY_HEAD_LEN + len];
        let mut body = body.to_vec();
        match body[0] {
            1 => {
                let tail = body.split_off(body.len() - 6);
                assert_eq!(tail, [0; 6], "a final record without flow ID and process");
                let now = if version == 1 {
                    ordinal
                } else {
                    out.len() as u32
                };
                moved.insert(at as u32, now);
                ordinal += 1;
            }
            2 => {
                // Kind, host (u64 length and bytes), 45 bytes of fixed fields, the
                // position count and the positions (segment << 32 | position), then
                // (in this release's segments only) the completeness: `None` here.
                let count_at = 1 + 8 + u64_at(&body, 1) as usize + 45;
                let count = u64_at(&body, count_at) as usize;
                let positions_end = count_at + 8 + 8 * count;
                assert_eq!(body[positions_end..], [0], "an intent without completeness");
                body.truncate(positions_end);
                for i in 0..count {
                    let p = count_at + 8 + 8 * i;
                    let lsn = u64_at(&body, p);
                    let now = moved[&(lsn as u32)];
                    let lsn = (lsn & !0xffff_ffff) | u64::from(now);
                    body[p..p + 8].copy_from_slice(&lsn.to_le_bytes());
                }
            }
            _ => {}
        }
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        out.extend_from_slice(&body);
        at += ENTRY_HEAD_LEN + len;
    }
    out
}

#[test]
fn segments_of_older_releases_replay() {
    // A run of the previous release crashed with one chunk delivered, one in flight
    // and records in no chunk yet; its segment (version 2, or version 1 of the release
    // before) is replayed by this one: the same chunk under the same batch ID, the same
    // records, as final records without flow ID or process.
    for version in [2, 1] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut journal, _) = open(dir.path(), 7);
        for n in 0..30 {
            journal.append(&record(n)).expect("append");
        }
        let (a, b) = (chunk(0, 0, 10), chunk(1, 10, 10));
        let id_a = journal.begin_chunk(&a).expect("begin");
        journal.end_chunk(&id_a).expect("end");
        let id_b = journal.begin_chunk(&b).expect("begin");
        journal.sync().expect("sync");
        crash(journal);
        let all = segments(dir.path());
        assert_eq!(all.len(), 1);
        let bytes = fs::read(&all[0]).expect("read");
        fs::write(&all[0], as_older_release(&bytes, version)).expect("write");

        let (journal, recovered) = open(dir.path(), 8);
        assert_eq!(journal.counters().damaged_segments, 0, "version {version}");
        assert_eq!(recovered.chunks.len(), 1, "version {version}");
        assert_eq!(recovered.chunks[0].batch_id(), id_b);
        assert_eq!(
            recovered.chunks[0].chunk, b,
            "same window, index and records"
        );
        assert_eq!(numbers(&recovered.records), (20..30).collect::<Vec<_>>());
        assert!(
            recovered
                .records
                .iter()
                .all(|r| r.record_kind == flow_record::RecordKind::Final
                    && r.flow_id.is_none()
                    && r.process.is_none())
        );
        crash(journal);

        // The recovery rewrote them in this release's format, which replays the same.
        for seg in segments(dir.path()) {
            assert_eq!(
                fs::read(&seg).expect("read")[4..6],
                [3, 0],
                "{}",
                seg.display()
            );
        }
        let (_journal, again) = open(dir.path(), 9);
        assert_eq!(again.chunks.len(), 1);
        assert_eq!(again.chunks[0].batch_id(), id_b);
        assert_eq!(again.chunks[0].chunk, b);
        assert_eq!(again.records, recovered.records);
    }
}

#[test]
fn records_after_an_older_release_s_intent_stay_in_their_chunk() {
    // An older release's intent is shorter than the same intent written now: the
    // entries after it are where its stored length says (in a version 1 segment,
    // records taken for records after damage would lose their ordinal, and their
    // chunk would come back without them).
    for version in [2, 1] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut journal, _) = open(dir.path(), 7);
        let (a, b) = (chunk(0, 0, 10), chunk(1, 10, 10));
        for n in 0..10 {
            journal.append(&record(n)).expect("append");
        }
        let id_a = journal.begin_chunk(&a).expect("begin");
        for n in 10..25 {
            journal.append(&record(n)).expect("append");
        }
        let id_b = journal.begin_chunk(&b).expect("begin");
        journal.sync().expect("sync");
        crash(journal);
        let all = segments(dir.path());
        assert_eq!(all.len(), 1);
        let bytes = fs::read(&all[0]).expect("read");
        fs::write(&all[0], as_older_release(&bytes, version)).expect("write");

        let (_journal, recovered) = open(dir.path(), 8);
        let ids: Vec<_> = recovered.chunks.iter().map(|c| c.batch_id()).collect();
        assert_eq!(ids, vec![id_a, id_b], "version {version}");
        assert_eq!(recovered.chunks[0].chunk, a, "version {version}");
        assert_eq!(recovered.chunks[1].chunk, b, "version {version}");
        assert_eq!(numbers(&recovered.records), (20..25).collect::<Vec<_>>());
    }
}

#[test]
fn records_with_the_new_fields_survive_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut journal, _) = open(dir.path(), 1);
    let mut records: Vec<flow_record::FlowRecord> = (0..5).map(record).collect();
    records[1].record_kind = flow_record::RecordKind::Interim;
    records[2].flow_id = Some(flow_record::FlowId {
        boot_id: [7; 16],
        cookie: 42,
    });
    records[3].process = Some(flow_record::ProcessInfo::new(99, "nginx", 1234));
    for r in &records {
        journal.append(r).expect("append");
    }
    journal.sync().expect("sync");
    crash(journal);
    let (_journal, recovered) = open(dir.path(), 2);
    assert_eq!(recovered.records, records);
}

#[test]
fn a_version_1_segment_is_read_damage_included() {
    // Segments of an older release (version 1: positions are ordinals) are still
    // read; after damage their positions are unknown, and the records come back as
    // records in no chunk rather than being lost.
    let dir = tempfile::tempdir().expect("tempdir");
    let seg = one_segment(dir.path(), 100);
    let mut bytes = as_older_release(&fs::read(&seg).expect("read"), 1);
    fs::write(&seg, &bytes).expect("write");
    let copy = tempfile::tempdir().expect("tempdir");
    fs::copy(&seg, copy.path().join(seg.file_name().expect("name"))).expect("copy");
    let (_journal, recovered) = open(dir.path(), 2);
    assert_eq!(numbers(&recovered.records), (0..100).collect::<Vec<_>>());

    let seg = copy.path().join(seg.file_name().expect("name"));
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    fs::write(&seg, &bytes).expect("write");
    let (journal, recovered) = open(copy.path(), 3);
    assert_eq!(recovered.records.len(), 99);
    assert_eq!(journal.counters().damaged_segments, 1);
}

#[test]
fn a_segment_number_out_of_range_does_not_set_the_numbering() {
    // Positions hold a segment number in 32 bits: a name far above what the journal
    // gives is set aside, or the next segments' positions would alias older ones.
    let dir = tempfile::tempdir().expect("tempdir");
    previous_run(dir.path(), 20);
    let huge = dir.path().join("18446744073709551615.wal");
    fs::copy(segments(dir.path()).pop().expect("segment"), &huge).expect("copy");
    let (journal, recovered) = open(dir.path(), 2);
    assert_eq!(numbers(&recovered.records), (0..20).collect::<Vec<_>>());
    let c = journal.counters();
    assert_eq!(c.entries_set_aside, 1);
    assert!(!huge.exists());
    assert_eq!(damaged(dir.path()).len(), 1);
    still_works(dir.path(), journal, c);
    for seg in segments(dir.path()) {
        let name = seg.file_stem().and_then(|s| s.to_str()).expect("name");
        assert!(name.parse::<u64>().expect("number") < 100, "{name}");
    }
}

#[test]
fn a_damaged_that_is_no_directory_is_renamed_aside_and_a_real_one_made() {
    // A symbolic link (to a directory outside), a file or a FIFO under the name
    // `damaged`: never followed; renamed aside to `damaged.not-ours`, and a real
    // `0700` directory takes its place, so entries are set aside on the first start.
    for what in ["symlink", "file", "fifo"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        previous_run(dir.path(), 20);
        fs::create_dir(dir.path().join(INTRUDER)).expect("mkdir");
        let damaged_path = dir.path().join("damaged");
        match what {
            "symlink" => symlink(outside.path(), &damaged_path).expect("symlink"),
            "file" => fs::write(&damaged_path, b"not a directory").expect("write"),
            _ => assert!(
                Command::new("mkfifo")
                    .arg(&damaged_path)
                    .status()
                    .expect("mkfifo")
                    .success()
            ),
        }

        let (journal, recovered) = open_within_20s(dir.path(), 2);
        assert_eq!(numbers(&recovered.records), (0..20).collect::<Vec<_>>());
        let c = journal.counters();
        assert_eq!(c.entries_set_aside, 1, "{what}: {c:?}");
        let meta = fs::symlink_metadata(&damaged_path).expect("damaged/");
        assert!(meta.is_dir(), "{what}: a real directory");
        assert_eq!(meta.permissions().mode() & 0o777, 0o700, "{what}");
        assert_eq!(damaged(dir.path()).len(), 1, "{what}: the intruder moved");
        let aside = fs::symlink_metadata(dir.path().join("damaged.not-ours"))
            .unwrap_or_else(|e| panic!("{what}: renamed aside: {e}"));
        match what {
            "symlink" => assert!(aside.file_type().is_symlink()),
            "file" => assert_eq!(
                fs::read(dir.path().join("damaged.not-ours")).expect("kept"),
                b"not a directory"
            ),
            _ => assert!(aside.file_type().is_fifo()),
        }
        assert_eq!(
            fs::read_dir(outside.path()).expect("outside").count(),
            0,
            "{what}: the link was not followed"
        );
        still_works(dir.path(), journal, c);
    }
}

#[test]
fn a_segment_crafted_to_make_resynchronisation_slow_does_not_stall_the_open() {
    // At every 4th byte a plausible 64 KiB record entry (`01 FF 00 00` repeated: a
    // length of 65,281, the kind byte being the next length's first byte) with a
    // wrong checksum. Without a bound on the bytes checksummed, each position costs a
    // checksum over 64 KiB: hours for a segment at the read limit.
    let dir = tempfile::tempdir().expect("tempdir");
    let seg = one_segment(dir.path(), 20);
    let mut bytes = fs::read(&seg).expect("read");
    bytes.extend([0x01, 0xFF, 0x00, 0x00].repeat(8 << 20));
    fs::write(&seg, &bytes).expect("write");

    // Unbounded resynchronisation would take hours here; the 20 s guard is the bound
    // (generous for a debug build on a loaded two-core machine).
    let (journal, recovered) = open_within_20s(dir.path(), 2);
    assert_eq!(numbers(&recovered.records), (0..20).collect::<Vec<_>>());
    let c = journal.counters();
    assert_eq!((c.damaged_segments, c.bad_entries), (1, 1), "{c:?}");
    assert_eq!(damaged(dir.path()).len(), 1, "the segment is set aside");
    still_works(dir.path(), journal, c);
}
