//! The JSON-lines output's tests: rotation, pruning, crash recovery, hostile paths,
//! failed writes.

use std::{
    io::Write,
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use flow_batch::wire::{BatchId, InstanceId};

use super::*;
use crate::attribution::{AttributedFlow, RemoteIdentitySource, RemoteUnattributedReason};

fn t(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn batch(sequence: u64) -> Arc<BatchId> {
    Arc::new(BatchId {
        host: "node-1".into(),
        instance: InstanceId::new(1),
        sequence,
    })
}

fn flows(sequence: u64, n: u32) -> Vec<AttributedFlow> {
    let b = batch(sequence);
    (0..n)
        .map(|i| AttributedFlow {
            record: flow_testkit::record().build(),
            batch: Arc::clone(&b),
            record_index: i,
            remote_workload_id: None,
            remote_identity_source: RemoteIdentitySource::None,
            remote_unattributed_reason: Some(RemoteUnattributedReason::NoOwnerKnown),
        })
        .collect()
}

fn keys(sequence: u64, n: u32) -> Vec<FlowKey> {
    (0..n).map(|i| (batch(sequence).to_string(), i)).collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn line_len() -> u64 {
    let mut buf = Vec::new();
    write_json_line(&mut buf, &flows(0, 1)[0]).expect("line");
    buf.len() as u64
}

#[test]
fn appends_commits_and_reports_nothing_without_a_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("flows.jsonl");
    let mut out = JsonLinesOutput::open(&path, Rotation::default()).expect("open");
    out.write(&flows(1, 3)).expect("write");
    let p = out.commit().expect("commit");
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(text.lines().count(), 3);
    assert!(out.written_since(None).expect("since").is_empty());
    assert!(out.written_since(Some(&p)).expect("since").is_empty());
    drop(out);
    // Reopened: appends.
    let mut out = JsonLinesOutput::open(&path, Rotation::default()).expect("open");
    out.write(&flows(2, 1)).expect("write");
    assert_eq!(out.written_since(Some(&p)).expect("since"), keys(2, 1));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777 & !0o640, 0);
}

#[test]
fn rotates_by_size_and_keeps_n() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("flows.jsonl");
    let rotation = Rotation::default()
        .with_max_bytes(3 * line_len())
        .with_keep(2);
    let mut out = JsonLinesOutput::open_at(&path, rotation, t(0)).expect("open");
    // A symlink with a rotated name is neither followed nor deleted.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"keep me").expect("write");
    std::os::unix::fs::symlink(&victim, dir.path().join("flows.jsonl.20000101T000000Z"))
        .expect("symlink");
    for s in 0..5u64 {
        out.write(&flows(s, 2)).expect("write");
        out.commit_at(t(s)).expect("commit");
    }
    // 2 lines: not yet; 4 lines: rotate, 2 + 2 again: rotate; ...
    assert_eq!(out.stats().rotations, 2);
    assert_eq!(out.stats().rotated_deleted, 0);
    out.write(&flows(9, 4)).expect("write");
    out.commit_at(t(9)).expect("commit");
    assert_eq!(out.stats().rotations, 3);
    assert_eq!(out.stats().rotated_deleted, 1);
    let n = names(dir.path());
    assert_eq!(
        n,
        vec![
            "flows.jsonl",
            "flows.jsonl.20000101T000000Z",
            "flows.jsonl.20231114T221323Z",
            "flows.jsonl.20231114T221329Z",
            "victim"
        ]
    );
    assert_eq!(std::fs::read(&victim).expect("read"), b"keep me");
    assert_eq!(std::fs::metadata(&path).expect("meta").len(), 0);
}

#[test]
fn rotates_by_age_with_numbered_names_on_collision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("flows.jsonl");
    let rotation = Rotation::default().with_max_age(Duration::from_secs(60));
    let mut out = JsonLinesOutput::open_at(&path, rotation, t(0)).expect("open");
    out.write(&flows(0, 1)).expect("write");
    out.commit_at(t(59)).expect("commit");
    assert_eq!(out.stats().rotations, 0);
    out.commit_at(t(60)).expect("commit");
    assert_eq!(out.stats().rotations, 1);
    // An empty file is never rotated.
    out.commit_at(t(600)).expect("commit");
    assert_eq!(out.stats().rotations, 1);
    // The new file's age counts from its creation (t=60); same second as a rotated
    // name that exists already: numbered.
    std::fs::write(dir.path().join("flows.jsonl.20231114T221620Z"), b"").expect("write");
    out.write(&flows(1, 1)).expect("write");
    out.commit_at(t(180)).expect("commit");
    assert_eq!(out.stats().rotations, 2);
    assert!(names(dir.path()).contains(&"flows.jsonl.20231114T221620Z.1".to_string()));
}

#[test]
fn written_since_after_a_crash_cuts_the_torn_line_and_follows_rotations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("flows.jsonl");
    let rotation = Rotation::default().with_max_bytes(3 * line_len());
    let mut out = JsonLinesOutput::open_at(&path, rotation.clone(), t(0)).expect("open");
    out.write(&flows(0, 1)).expect("write");
    let checkpointed = out.commit_at(t(0)).expect("commit");
    // Written after the checkpoint: two flows, a rotation (its position never
    // checkpointed), two more flows.
    out.write(&flows(1, 2)).expect("write");
    out.commit_at(t(1)).expect("commit");
    assert_eq!(out.stats().rotations, 1);
    out.write(&flows(2, 2)).expect("write");
    drop(out);
    // The crash: a line that parses only partly, garbage, and a torn line.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open");
    f.write_all(b"not json\n{\"batch_id\":\"x\"}\n{\"local_ip\":\"10.")
        .expect("write");
    drop(f);
    let before = std::fs::metadata(&path).expect("meta").len();

    let mut out = JsonLinesOutput::open_at(&path, rotation, t(5)).expect("open");
    assert_eq!(out.stats().torn_lines_cut, 1, "cut at open");
    let cut = std::fs::metadata(&path).expect("meta").len();
    assert_eq!(before - cut, "{\"local_ip\":\"10.".len() as u64);
    let mut expected = keys(1, 2);
    expected.extend(keys(2, 2));
    assert_eq!(
        out.written_since(Some(&checkpointed)).expect("since"),
        expected
    );
    assert_eq!(out.stats().unparsable_lines, 2);
    // A torn line appearing later (written by someone else) is cut by written_since.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("open");
    f.write_all(b"{\"batch_").expect("write");
    drop(f);
    let p = out.commit_at(t(6)).expect("commit");
    let _ = p;
    assert_eq!(
        out.written_since(Some(&checkpointed)).expect("since").len(),
        4
    );
    assert_eq!(out.stats().torn_lines_cut, 2);
    assert_eq!(std::fs::metadata(&path).expect("meta").len(), cut);
    // The output goes on with whole lines.
    out.write(&flows(3, 1)).expect("write");
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.ends_with("\n") && text.lines().last().is_some_and(|l| l.contains("/3\"")));
}

#[test]
fn an_unknown_or_lost_position_is_not_fatal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("flows.jsonl");
    let mut out = JsonLinesOutput::open(&path, Rotation::default()).expect("open");
    out.write(&flows(0, 2)).expect("write");
    assert!(
        out.written_since(Some(&OutputPosition(b"junk".to_vec())))
            .expect("since")
            .is_empty()
    );
    let gone = position::FilePosition::new("flows.jsonl", 0, 0, 0).encode();
    assert_eq!(out.written_since(Some(&gone)).expect("since"), keys(0, 2));
    assert_eq!(out.stats().positions_lost, 2);
}

#[test]
fn symlinks_and_fifos_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("target");
    std::fs::write(&target, b"").expect("write");
    let link = dir.path().join("link.jsonl");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let err = JsonLinesOutput::open(&link, Rotation::default()).expect_err("refused");
    assert!(format!("{:?}", err).contains("symbolic link"), "{err:?}");
    let fifo = dir.path().join("fifo.jsonl");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("mkfifo");
    // Must not block (no reader): refused at once.
    let err = JsonLinesOutput::open(&fifo, Rotation::default()).expect_err("refused");
    let _ = err;
    let sub = dir.path().join("dir.jsonl");
    std::fs::create_dir(&sub).expect("mkdir");
    assert!(JsonLinesOutput::open(&sub, Rotation::default()).is_err());
}

#[test]
fn a_failed_write_leaves_no_partial_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("flows.jsonl");
    let mut out = JsonLinesOutput::open(&path, Rotation::default()).expect("open");
    out.write(&flows(0, 1)).expect("write");
    let len = std::fs::metadata(&path).expect("meta").len();
    out.fail_next_write = Some(30);
    let err = out.write(&flows(1, 3)).expect_err("ENOSPC");
    assert!(
        matches!(&err, OutputError::Io { operation: "write", source, .. } if source.raw_os_error() == Some(28)),
        "{err:?}"
    );
    assert_eq!(std::fs::metadata(&path).expect("meta").len(), len);
    assert_eq!(out.stats().write_failures, 1);
    // The caller retries with the same flows.
    out.write(&flows(1, 3)).expect("write");
    out.commit().expect("commit");
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(text.lines().count(), 4);
    assert!(
        text.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
    );
}

#[test]
fn a_file_that_is_not_this_output_is_refused_not_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in [
        ("passwd", &b"root:x:0:0:root:/root:/bin/bash\n"[..]),
        ("log", &b"line one\nhalf a line"[..]),
        ("long-tail", &[b'{'; 20_000][..]),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        let e = JsonLinesOutput::open(&path, Rotation::default()).expect_err(name);
        assert!(e.to_string().contains("open"), "{e}");
        assert_eq!(
            std::fs::read(&path).expect("read"),
            text,
            "{name} untouched"
        );
    }
}

#[test]
fn rotate_keep_never_deletes_the_file_the_last_checkpoint_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("flows.jsonl");
    let rotation = Rotation::default().with_max_bytes(line_len()).with_keep(0);
    let mut out = JsonLinesOutput::open_at(&path, rotation, t(0)).expect("open");
    out.write(&flows(0, 1)).expect("write");
    let first = out.commit_at(t(0)).expect("commit"); // rotates: the position names the new file
    out.write(&flows(1, 1)).expect("write");
    let _second = out.commit_at(t(1)).expect("commit");
    // With keep 0 every rotated file goes, except those the last two positions name:
    // a crash before the second checkpoint still finds the first's file.
    out.write(&flows(2, 1)).expect("write");
    assert_eq!(out.written_since(Some(&first)).expect("since"), {
        let mut k = keys(1, 1);
        k.extend(keys(2, 1));
        k
    });
}

/// The completeness record of a one-chunk window whose first chunk is `sequence`,
/// with `records` records.
fn report(sequence: u64, records: u64) -> crate::completeness::WindowReport {
    use crate::completeness::{CompletenessConfig, Slot, WindowChunk, WindowTracker};
    let mut tracker = WindowTracker::new(CompletenessConfig::default());
    let window = flow_batch::Window::from_millis(60_000, 120_000).expect("window");
    let mut chunk = WindowChunk::new(
        batch(sequence),
        window,
        0,
        true,
        Some(flow_batch::Completeness {
            closes_seen: records,
            records_emitted: records,
            ..Default::default()
        }),
        &[],
    );
    chunk.final_records = records;
    tracker.observe(&chunk, Slot::Unwritten, t(0));
    tracker.pop_report().expect("a report")
}

#[test]
fn completeness_records_are_lines_of_their_own_and_read_back_as_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("flows.jsonl");
    let mut out = JsonLinesOutput::open(&path, Rotation::default()).expect("open");
    let p = out.commit().expect("commit");
    out.write(&flows(1, 2)).expect("write");
    out.write_completeness(&[report(1, 2)]).expect("write");
    out.commit().expect("commit");
    let text = std::fs::read_to_string(&path).expect("read");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[..2].iter().all(|l| l.get("record_type").is_none()));
    let c = &lines[2];
    assert_eq!(c["record_type"], "completeness");
    assert_eq!(c["status"], "all_chunks");
    assert_eq!(
        (&c["records_received"], &c["adds_up"]),
        (&2.into(), &true.into())
    );
    // The record's key follows the chunk's flows.
    let mut expected = keys(1, 2);
    expected.push((batch(1).to_string(), 2));
    assert_eq!(out.written_since(Some(&p)).expect("since"), expected);
    assert_eq!(out.stats().lines_written, 3);
}

#[test]
fn a_failed_completeness_write_leaves_no_partial_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("flows.jsonl");
    let mut out = JsonLinesOutput::open(&path, Rotation::default()).expect("open");
    out.write(&flows(1, 1)).expect("write");
    out.fail_next_write = Some(10);
    assert!(out.write_completeness(&[report(1, 1)]).is_err());
    out.write_completeness(&[report(1, 1)]).expect("retried");
    out.commit().expect("commit");
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(text.lines().count(), 2);
    assert!(
        text.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
    );
}
