//! The pipeline on simulated time, without HTTP: windows' completeness records are
//! written once, next to the flows, across crashes.

use std::{
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use flow_batch::{
    Chunk, Completeness, Window,
    wire::{ChunkEncoder, InstanceId},
};
use flow_record::{FlowRecord, RecordKind};

use super::{Pipeline, Stored};
use crate::{
    CollectorOptions,
    attribution::Attributor,
    completeness::CompletenessConfig,
    ledger::Ledger,
    output::{JsonLinesOutput, Rotation},
    stats::Stats,
};

/// The simulated epoch: a minute boundary.
const T0_SECS: u64 = 1_699_999_980;

fn at(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0_SECS + s)
}

fn minute(m: u64) -> Window {
    let start = (T0_SECS + 60 * m) * 1000;
    Window::from_millis(start, start + 60_000).expect("a window")
}

fn options(dir: &Path) -> CollectorOptions {
    CollectorOptions::new(
        "127.0.0.1:0".parse().expect("addr"),
        dir.join("flows.jsonl"),
    )
    .with_hold_back(Duration::ZERO)
    .with_sync(false)
    .with_completeness(CompletenessConfig::default().with_grace(Duration::from_secs(120)))
}

/// Opens (or reopens, after a "crash": the previous pipeline dropped unflushed) the
/// pipeline of `dir` at `now`.
fn open(dir: &Path, now: SystemTime) -> Pipeline {
    let options = options(dir);
    let ledger =
        Ledger::open(&options.state_dir, options.ledger.clone().with_sync(false)).expect("ledger");
    let output = JsonLinesOutput::open_at(&options.out, Rotation::default(), now).expect("output");
    let attributor = Attributor::new(options.attribution.clone());
    Pipeline::recover(
        &options,
        ledger,
        attributor,
        Box::new(output),
        now,
        &Stats::default(),
    )
    .expect("recover")
    .0
}

/// `finals` final and `interims` interim records of window `w`.
fn records(w: Window, finals: u16, interims: u16) -> Vec<FlowRecord> {
    (0..finals + interims)
        .map(|i| {
            let mut r = flow_testkit::record()
                .local(format!("10.0.0.1:{}", 1000 + i).as_str())
                .remote("10.0.0.2:443")
                .t_end(w.start() + Duration::from_secs(30))
                .build();
            if i >= finals {
                r.record_kind = RecordKind::Interim;
            }
            r
        })
        .collect()
}

/// Chunk `index` (the window's last, with `completeness`, when given) of an exporter
/// run on `node-1`.
fn frame(
    sequence: u64,
    w: Window,
    index: u32,
    last: Option<Completeness>,
    records: Vec<FlowRecord>,
) -> Vec<u8> {
    let mut chunk = Chunk::new(w, index, sequence, last.is_some(), records);
    chunk.completeness = last;
    ChunkEncoder::new("node-1", InstanceId::new(9))
        .expect("encoder")
        .encode_to_vec(&chunk)
        .expect("encode")
}

fn kernel(n: u64) -> Completeness {
    Completeness {
        closes_seen: n,
        records_emitted: n,
        running_whole_window: true,
        ..Completeness::default()
    }
}

fn accept(p: &mut Pipeline, frame: &[u8], now: SystemTime) {
    assert!(matches!(
        p.accept(frame, now, false, &Stats::default()),
        Stored::Accepted { .. }
    ));
}

/// The output's lines: (flows, completeness records).
fn lines(dir: &Path) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    std::fs::read_to_string(dir.join("flows.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
        .partition(|v| v.get("record_type").is_none())
}

#[test]
fn a_window_is_written_once_its_chunks_are_in_and_counted_by_kind() {
    let dir = tempfile::tempdir().expect("dir");
    let stats = Stats::default();
    let mut p = open(dir.path(), at(0));
    let w = minute(0);
    accept(&mut p, &frame(0, w, 0, None, records(w, 3, 0)), at(30));
    assert!(lines(dir.path()).1.is_empty());
    accept(
        &mut p,
        &frame(
            1,
            w,
            1,
            Some(Completeness {
                interim_records: 4,
                ..kernel(5)
            }),
            records(w, 2, 4),
        ),
        at(61),
    );
    p.tick(at(62), &stats);
    let (flows, windows) = lines(dir.path());
    assert_eq!(flows.len(), 9, "one line per record, interim ones included");
    assert_eq!(windows.len(), 1);
    let c = &windows[0];
    assert_eq!(c["status"], "all_chunks");
    assert_eq!(
        (&c["records_received"], &c["interim_records_received"]),
        (&5.into(), &4.into())
    );
    assert_eq!(c["adds_up"], true);
    // Its key is the first chunk's slot, one past its records.
    assert_eq!(c["batch_id"], flows[0]["batch_id"]);
    assert_eq!(c["record_index"], 3);
    let s = p.snapshot();
    assert_eq!(s.completeness.windows, [1, 0, 0]);
    // Written and committed: the ledger holds nothing pending.
    assert_eq!(s.ledger.pending_chunks, 0);
}

#[test]
fn a_crash_before_the_commit_writes_the_window_once_after_the_restart() {
    let w = minute(0);
    let crash_after_writing = |dir: &Path| {
        let mut p = open(dir, at(0));
        accept(&mut p, &frame(0, w, 0, None, records(w, 3, 0)), at(30));
        accept(
            &mut p,
            &frame(1, w, 1, Some(kernel(4)), records(w, 1, 0)),
            at(61),
        );
        // Written to the file, never committed: the crash comes first.
    };
    // The restart reads the lines past the checkpoint back: nothing again.
    let dir = tempfile::tempdir().expect("dir");
    crash_after_writing(dir.path());
    let written = lines(dir.path());
    assert_eq!((written.0.len(), written.1.len()), (4, 1));
    let p = open(dir.path(), at(100));
    let (flows, windows) = lines(dir.path());
    assert_eq!((flows.len(), windows.len()), (4, 1));
    assert_eq!(
        p.snapshot().completeness.windows,
        [0, 0, 0],
        "not counted again"
    );
    // The crash tore the completeness line: cut off, and written again, once.
    let dir = tempfile::tempdir().expect("dir");
    crash_after_writing(dir.path());
    let path = dir.path().join("flows.jsonl");
    let text = std::fs::read_to_string(&path).expect("read");
    let last_line = text.trim_end().rfind('\n').expect("lines") + 1;
    std::fs::write(&path, &text[..last_line + 20]).expect("tear");
    let p = open(dir.path(), at(100));
    let (flows, windows) = lines(dir.path());
    assert_eq!((flows.len(), windows.len()), (4, 1));
    assert_eq!(windows[0]["adds_up"], true);
    assert_eq!(p.snapshot().completeness.windows, [1, 0, 0]);
    drop(p);
    let p = open(dir.path(), at(200));
    assert_eq!(lines(dir.path()).1.len(), 1);
    assert_eq!(p.snapshot().ledger.pending_chunks, 0);
}

#[test]
fn a_window_waiting_at_a_crash_is_written_when_its_last_chunk_comes() {
    let dir = tempfile::tempdir().expect("dir");
    let stats = Stats::default();
    let w = minute(0);
    {
        let mut p = open(dir.path(), at(0));
        accept(&mut p, &frame(0, w, 0, None, records(w, 3, 0)), at(30));
        p.tick(at(31), &stats);
    }
    // The chunk is replayed: its window waits on, and counts it once.
    let mut p = open(dir.path(), at(40));
    accept(
        &mut p,
        &frame(1, w, 1, Some(kernel(4)), records(w, 1, 0)),
        at(61),
    );
    p.tick(at(62), &stats);
    let (flows, windows) = lines(dir.path());
    assert_eq!((flows.len(), windows.len()), (4, 1));
    assert_eq!(windows[0]["records_received"], 4);
    assert_eq!(windows[0]["adds_up"], true);
    // A committed window stays written across the next restart.
    p.tick(at(70), &stats);
    drop(p);
    let p = open(dir.path(), at(80));
    assert_eq!(lines(dir.path()).1.len(), 1);
    assert_eq!(p.snapshot().ledger.pending_chunks, 0);
}

#[test]
fn a_window_without_its_last_chunk_is_written_missing_after_the_grace() {
    let dir = tempfile::tempdir().expect("dir");
    let stats = Stats::default();
    let mut p = open(dir.path(), at(0));
    let w = minute(0);
    accept(&mut p, &frame(0, w, 0, None, records(w, 2, 0)), at(30));
    p.tick(at(60 + 119), &stats);
    assert!(lines(dir.path()).1.is_empty());
    p.tick(at(60 + 120), &stats);
    let windows = lines(dir.path()).1;
    assert_eq!(windows.len(), 1);
    assert_eq!(windows[0]["status"], "last_chunk_missing");
    assert!(windows[0]["closes_seen"].is_null());
    assert_eq!(windows[0]["adds_up"], false);
}

#[test]
fn a_window_without_completeness_writes_nothing_and_leaves_nothing_pending() {
    let dir = tempfile::tempdir().expect("dir");
    let stats = Stats::default();
    let mut p = open(dir.path(), at(0));
    let w = minute(0);
    accept(&mut p, &frame(0, w, 0, None, records(w, 2, 0)), at(30));
    // A last chunk without completeness (what an exporter of wire format 1 sends),
    // in this window without records, in the next one alone.
    let last_without = |sequence: u64, w: Window, index: u32| {
        ChunkEncoder::new("node-1", InstanceId::new(9))
            .expect("encoder")
            .encode_to_vec(&Chunk::new(w, index, sequence, true, Vec::new()))
            .expect("encode")
    };
    accept(&mut p, &last_without(1, w, 1), at(61));
    accept(&mut p, &last_without(2, minute(1), 0), at(121));
    p.tick(at(200), &stats);
    let (flows, windows) = lines(dir.path());
    assert_eq!((flows.len(), windows.len()), (2, 0));
    assert_eq!(p.snapshot().ledger.pending_chunks, 0);
}
