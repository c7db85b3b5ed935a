//! The ledger's tests: round trips, restarts, damage, pruning, failures, hostile
//! directories.

use std::{
    collections::BTreeSet,
    io::Write,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use flow_batch::wire::{BatchId, InstanceId};

use super::*;
use crate::output::OutputPosition;

fn id(sequence: u64) -> BatchId {
    BatchId {
        host: "node-1".into(),
        instance: InstanceId::new(0xfeed),
        sequence,
    }
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn config() -> LedgerConfig {
    LedgerConfig::default().with_segment_bytes(300)
}

fn open(dir: &Path) -> Ledger {
    Ledger::open(dir, config()).expect("open")
}

fn replay(ledger: &mut Ledger) -> (Vec<RecoveredChunk>, RecoveryStats) {
    let mut chunks = Vec::new();
    let stats = ledger.recover(|c| chunks.push(c)).expect("recover");
    (chunks, stats)
}

fn position(n: u8) -> OutputPosition {
    OutputPosition(vec![n; 3])
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 20)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn append_recover_round_trip_with_emitted_sets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ledger = open(dir.path());
    assert!(replay(&mut ledger).0.is_empty());
    for q in 0..10u64 {
        ledger
            .append(&id(q), 4, at(q), format!("frame {q}").as_bytes())
            .expect("append");
    }
    assert!(ledger.stats().segments > 1, "{:?}", ledger.stats());
    // 0..3 fully emitted, 3 partly, the rest not at all.
    for q in 0..3 {
        for i in 0..4 {
            ledger.mark_emitted(&id(q), i);
        }
    }
    ledger.mark_emitted(&id(3), 1);
    ledger.mark_emitted(&id(3), 3);
    ledger.checkpoint(&position(1)).expect("checkpoint");
    // After the checkpoint: more flows emitted (not checkpointed) and one more chunk.
    ledger.mark_emitted(&id(4), 0);
    ledger
        .append(&id(10), 2, at(10), b"frame 10")
        .expect("append");
    drop(ledger);

    let mut ledger = open(dir.path());
    assert_eq!(ledger.output_position(), Some(&position(1)));
    let (chunks, stats) = replay(&mut ledger);
    assert_eq!(stats.checkpoint, CheckpointSource::Current);
    assert_eq!(stats.entries, 11);
    assert_eq!((stats.damaged_regions, stats.torn_tail_bytes), (0, 0));
    assert_eq!(chunks.len(), 11);
    for (q, c) in chunks.iter().enumerate() {
        assert_eq!(c.batch, id(q as u64));
        assert_eq!(c.arrival, at(q as u64));
        assert_eq!(c.frame, format!("frame {q}").as_bytes());
        let expected = match q {
            0..=2 => Emitted::All,
            3 => Emitted::Some(BTreeSet::from([1, 3])),
            _ => Emitted::None,
        };
        assert_eq!(c.emitted, expected, "chunk {q}");
    }
    assert_eq!(stats.pending_chunks, 8);
    assert_eq!(ledger.stats().pending_chunks, 8);
}

#[test]
fn restart_remembers_every_batch_id_before_and_after_pruning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ledger = open(dir.path());
    replay(&mut ledger);
    for q in (0..20u64).chain([25, 30]) {
        ledger
            .append(&id(q), 1, at(q), b"0123456789")
            .expect("append");
        ledger.mark_emitted(&id(q), 0);
    }
    ledger.checkpoint(&position(2)).expect("checkpoint");
    let before = ledger.stats().segments;
    assert!(before >= 3);
    drop(ledger);

    let mut ledger = open(dir.path());
    let (chunks, _) = replay(&mut ledger);
    assert!(chunks.iter().all(|c| c.emitted == Emitted::All));
    let stored = |l: &Ledger| (0..20).chain([25, 30]).all(|q| l.contains(&id(q)));
    assert!(stored(&ledger));
    assert!(!ledger.contains(&id(20)) && !ledger.contains(&id(31)));
    // Everything is emitted and old: every segment goes (there is no current one).
    let pruned = ledger.prune(at(1000)).expect("prune");
    assert_eq!(pruned as u64, before);
    assert!(segments(dir.path()).is_empty());
    assert!(stored(&ledger));
    drop(ledger);

    let mut ledger = open(dir.path());
    let (chunks, _) = replay(&mut ledger);
    assert!(chunks.is_empty());
    assert!(stored(&ledger), "the dedup set lives in the checkpoint");
    // Segment numbers are not reused after pruning.
    ledger.append(&id(40), 1, at(40), b"x").expect("append");
    assert!(ledger.contains(&id(40)));
}

#[test]
fn prune_keeps_unemitted_recent_and_current_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ledger = open(dir.path());
    replay(&mut ledger);
    for q in 0..12u64 {
        ledger.append(&id(q), 2, at(q), &[7u8; 80]).expect("append");
    }
    // Segments hold two entries each (300 bytes, entries of 136).
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 6);
    // Everything emitted except chunk 5 (third segment), one flow of it missing.
    for q in 0..12u64 {
        ledger.mark_emitted(&id(q), 0);
        if q != 5 {
            ledger.mark_emitted(&id(q), 1);
        }
    }
    // Not checkpointed yet: nothing can go.
    assert_eq!(ledger.prune(at(100)).expect("prune"), 0);
    ledger.checkpoint(&position(3)).expect("checkpoint");
    // Only segments whose entries all arrived before t=4: the first two.
    assert_eq!(ledger.prune(at(4)).expect("prune"), 2);
    // Then all but the unemitted third and the current (last) one.
    assert_eq!(ledger.prune(at(100)).expect("prune"), 2);
    let left = segments(dir.path());
    assert_eq!(left, vec![segs[2].clone(), segs[5].clone()]);
    drop(ledger);

    let mut ledger = open(dir.path());
    let (chunks, _) = replay(&mut ledger);
    let emitted: Vec<_> = chunks
        .iter()
        .map(|c| (c.batch.sequence, c.emitted.clone()))
        .collect();
    assert_eq!(
        emitted,
        vec![
            (4, Emitted::All),
            (5, Emitted::Some(BTreeSet::from([0]))),
            (10, Emitted::All),
            (11, Emitted::All)
        ]
    );
    assert!((0..12).all(|q| ledger.contains(&id(q))));
}

#[test]
fn torn_tail_is_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ledger = Ledger::open(dir.path(), LedgerConfig::default()).expect("open");
    replay(&mut ledger);
    ledger.append(&id(0), 1, at(0), b"first").expect("append");
    ledger.append(&id(1), 1, at(1), b"second").expect("append");
    drop(ledger);
    let seg = segments(dir.path()).pop().expect("segment");
    let good = std::fs::metadata(&seg).expect("meta").len();
    // A crash mid-append: half an entry at the end.
    let mut entry_bytes = Vec::new();
    entry::encode(&mut entry_bytes, &id(2), 1, at(2), b"third, torn").expect("encode");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .expect("open");
    f.write_all(&entry_bytes[..entry_bytes.len() / 2])
        .expect("write");
    drop(f);

    let mut ledger = Ledger::open(dir.path(), LedgerConfig::default()).expect("open");
    let (chunks, stats) = replay(&mut ledger);
    assert_eq!(chunks.len(), 2);
    assert_eq!(stats.torn_tail_bytes, (entry_bytes.len() / 2) as u64);
    assert_eq!(std::fs::metadata(&seg).expect("meta").len(), good);
    assert!(!ledger.contains(&id(2)));
    // Appends go on, in a new segment.
    ledger.append(&id(2), 1, at(2), b"third").expect("append");
    drop(ledger);
    let mut ledger = Ledger::open(dir.path(), LedgerConfig::default()).expect("open");
    let (chunks, stats) = replay(&mut ledger);
    assert_eq!(chunks.len(), 3);
    assert_eq!(stats.torn_tail_bytes, 0);
}

#[test]
fn a_damaged_entry_is_skipped_and_the_entries_after_it_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ledger = Ledger::open(dir.path(), LedgerConfig::default()).expect("open");
    replay(&mut ledger);
    for q in 0..3 {
        ledger
            .append(&id(q), 1, at(q), b"some frame bytes")
            .expect("append");
    }
    ledger.append(&id(9), 1, at(9), b"y").expect("append");
    drop(ledger);
    let seg = segments(dir.path()).pop().expect("segment");
    let mut bytes = std::fs::read(&seg).expect("read");
    let entry_len = bytes.len() / 4; // not exact (the last frame is shorter): flip in the 2nd
    bytes[entry_len + 30] ^= 0xff;
    std::fs::write(&seg, &bytes).expect("write");

    let mut ledger = Ledger::open(dir.path(), LedgerConfig::default()).expect("open");
    let (chunks, stats) = replay(&mut ledger);
    let seqs: Vec<u64> = chunks.iter().map(|c| c.batch.sequence).collect();
    assert_eq!(seqs, vec![0, 2, 9]);
    assert_eq!(stats.damaged_regions, 1);
    assert!(stats.damaged_bytes > 0);
    assert_eq!(
        stats.torn_tail_bytes, 0,
        "acknowledged entries after damage are kept"
    );
}

#[test]
fn a_damaged_checkpoint_falls_back_to_the_previous_one_then_to_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ledger = open(dir.path());
    replay(&mut ledger);
    ledger.append(&id(0), 1, at(0), b"a").expect("append");
    ledger.mark_emitted(&id(0), 0);
    ledger.checkpoint(&position(1)).expect("checkpoint");
    ledger.append(&id(1), 1, at(1), b"b").expect("append");
    ledger.mark_emitted(&id(1), 0);
    ledger.checkpoint(&position(2)).expect("checkpoint");
    drop(ledger);
    let current = dir.path().join("checkpoint");
    let mut bytes = std::fs::read(&current).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&current, &bytes).expect("write");

    let mut ledger = open(dir.path());
    assert_eq!(ledger.output_position(), Some(&position(1)));
    let (chunks, stats) = replay(&mut ledger);
    assert_eq!(stats.checkpoint, CheckpointSource::Previous);
    assert_eq!(chunks[0].emitted, Emitted::All);
    assert_eq!(
        chunks[1].emitted,
        Emitted::None,
        "after the previous checkpoint"
    );
    assert!(ledger.contains(&id(0)) && ledger.contains(&id(1)));
    drop(ledger);

    std::fs::write(dir.path().join("checkpoint.prev"), b"garbage").expect("write");
    let mut ledger = open(dir.path());
    assert_eq!(ledger.output_position(), None);
    let (chunks, stats) = replay(&mut ledger);
    assert_eq!(stats.checkpoint, CheckpointSource::Lost);
    assert!(chunks.iter().all(|c| c.emitted == Emitted::None));
    assert!(
        ledger.contains(&id(0)) && ledger.contains(&id(1)),
        "rebuilt from the log"
    );
}

#[test]
fn a_failed_append_leaves_no_partial_entry_and_the_ledger_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ledger = Ledger::open(dir.path(), LedgerConfig::default()).expect("open");
    replay(&mut ledger);
    ledger.append(&id(0), 1, at(0), b"kept").expect("append");
    let seg = segments(dir.path()).pop().expect("segment");
    let len = std::fs::metadata(&seg).expect("meta").len();
    ledger.fail_next_write = Some(20);
    let err = ledger
        .append(&id(1), 1, at(1), b"lost to ENOSPC")
        .expect_err("fails");
    assert!(
        matches!(&err, LedgerError::Io { source, .. } if source.raw_os_error() == Some(28)),
        "{err}"
    );
    assert_eq!(
        std::fs::metadata(&seg).expect("meta").len(),
        len,
        "cut back"
    );
    assert!(!ledger.contains(&id(1)));
    assert_eq!(ledger.stats().append_failures, 1);
    ledger.append(&id(1), 1, at(1), b"retried").expect("append");
    drop(ledger);
    let mut ledger = Ledger::open(dir.path(), LedgerConfig::default()).expect("open");
    let (chunks, stats) = replay(&mut ledger);
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[1].frame, b"retried");
    assert_eq!((stats.damaged_regions, stats.torn_tail_bytes), (0, 0));
}

#[test]
fn writes_before_recover_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ledger = open(dir.path());
    assert!(matches!(
        ledger.append(&id(0), 1, at(0), b"x"),
        Err(LedgerError::NotRecovered)
    ));
    assert!(ledger.checkpoint(&position(0)).is_err());
}

#[test]
fn a_symlinked_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let real = dir.path().join("real");
    std::fs::create_dir(&real).expect("mkdir");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let err = Ledger::open(&link, config()).expect_err("refused");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    let file = dir.path().join("file");
    std::fs::write(&file, b"").expect("write");
    assert!(Ledger::open(&file, config()).is_err());
}

#[test]
fn a_new_directory_is_created_0750() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("a/b");
    let mut ledger = open(&state);
    replay(&mut ledger);
    let mode = std::fs::metadata(&state)
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777 & !0o750, 0, "at most rwxr-x---");
    ledger.append(&id(0), 1, at(0), b"x").expect("append");
    let seg = segments(&state).pop().expect("segment");
    let mode = std::fs::metadata(seg).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777 & !0o640, 0, "at most rw-r-----");
}

#[test]
fn fifos_links_directories_and_odd_names_are_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ledger = open(dir.path());
    replay(&mut ledger);
    ledger.append(&id(0), 1, at(0), b"x").expect("append");
    drop(ledger);
    let fifo = dir.path().join(segment_name_for_test(7));
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("mkfifo");
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join(segment_name_for_test(8)))
        .expect("symlink");
    std::fs::create_dir(dir.path().join(segment_name_for_test(9))).expect("mkdir");
    std::fs::write(dir.path().join("notes.txt"), b"hi").expect("write");
    // Would block forever if the FIFO were opened.
    let mut ledger = open(dir.path());
    assert_eq!(ledger.stats().skipped_files, 4);
    let (chunks, _) = replay(&mut ledger);
    assert_eq!(chunks.len(), 1);
    ledger.append(&id(1), 1, at(1), b"y").expect("append");
}

fn segment_name_for_test(seq: u64) -> String {
    format!("{seq:020}")
}
