//! The window tracker on simulated time.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use flow_batch::{
    Completeness, Window,
    wire::{BatchId, InstanceId},
};

use super::*;

/// The simulated epoch: 2023-11-14T22:13:00Z, a minute boundary.
const T0_SECS: u64 = 1_699_999_980;

/// `s` seconds after T0.
fn at(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0_SECS + s)
}

/// The minute `m` after T0.
fn minute(m: u64) -> Window {
    let start = (T0_SECS + 60 * m) * 1000;
    Window::from_millis(start, start + 60_000).expect("a window")
}

/// An exporter run sending chunks.
struct Run {
    host: &'static str,
    instance: u128,
    sequence: u64,
}

impl Run {
    fn new(host: &'static str, instance: u128) -> Run {
        Run {
            host,
            instance,
            sequence: 0,
        }
    }

    /// Its next chunk: chunk `index` of `window`, with `finals` final and `interims`
    /// interim records.
    fn chunk(
        &mut self,
        window: Window,
        index: u32,
        last: Option<Option<Completeness>>,
        finals: u64,
        interims: u64,
    ) -> WindowChunk {
        self.sequence += 1;
        WindowChunk {
            batch: Arc::new(BatchId {
                host: self.host.to_owned(),
                instance: InstanceId::new(self.instance),
                sequence: self.sequence,
            }),
            window,
            chunk_index: index,
            last: last.is_some(),
            completeness: last.flatten(),
            final_records: finals,
            interim_records: interims,
        }
    }
}

/// A kernel that saw `closes`, emitted `emitted` and lost `ring_full`.
fn kernel(closes: u64, emitted: u64, ring_full: u64) -> Completeness {
    Completeness {
        closes_seen: closes,
        records_emitted: emitted,
        lost_ring_full: ring_full,
        running_whole_window: true,
        ..Completeness::default()
    }
}

/// Offers `chunk` at `now` as the collector does: asks for a slot, then observes.
fn offer(t: &mut WindowTracker, chunk: &WindowChunk, now: SystemTime) -> bool {
    let slot = t.wants_slot(&chunk.batch, chunk.window, now);
    t.observe(chunk, if slot { Slot::Unwritten } else { Slot::None }, now);
    slot
}

fn reports(t: &mut WindowTracker) -> Vec<WindowReport> {
    std::iter::from_fn(|| t.pop_report()).collect()
}

fn config() -> CompletenessConfig {
    CompletenessConfig::default()
        .with_grace(Duration::from_secs(300))
        .with_remember(Duration::from_secs(1800))
}

#[test]
fn a_window_whose_chunks_all_arrived_is_reported_at_once_and_adds_up() {
    let mut t = WindowTracker::new(config());
    let mut run = Run::new("node-1", 1);
    let w = minute(0);
    // Two full chunks during the window, the last one after it with the counts.
    let c0 = run.chunk(w, 0, None, 3, 0);
    let c1 = run.chunk(w, 1, None, 3, 0);
    // The exporter counted the two interim records it sent.
    let counts = Completeness {
        interim_records: 2,
        ..kernel(10, 9, 1)
    };
    let c2 = run.chunk(w, 2, Some(Some(counts)), 3, 2);
    assert!(offer(&mut t, &c0, at(20)), "the first chunk holds the slot");
    assert!(!offer(&mut t, &c1, at(40)));
    assert!(reports(&mut t).is_empty());
    assert!(!offer(&mut t, &c2, at(65)));
    let r = reports(&mut t);
    assert_eq!(r.len(), 1);
    let r = &r[0];
    assert_eq!((r.batch.as_ref(), r.record_index), (c0.batch.as_ref(), 3));
    assert_eq!(r.host_id(), "node-1");
    assert_eq!(r.window, w);
    assert_eq!(r.status, WindowStatus::AllChunks);
    assert_eq!((r.chunks_expected, r.chunks_received), (Some(3), 3));
    assert_eq!((r.records_received, r.interim_records_received), (9, 2));
    assert_eq!(r.records_expected(), Some(11));
    assert!(r.adds_up());
    let s = t.stats();
    assert_eq!(s.windows_for(WindowStatus::AllChunks), 1);
    assert_eq!(
        (
            s.closes_seen,
            s.records_emitted,
            s.records_received,
            s.lost_ring_full
        ),
        (10, 9, 9, 1)
    );
    assert_eq!(s.windows_not_adding_up, 0);
    assert_eq!((s.windows_open, s.windows_remembered), (0, 1));
    assert_eq!(t.pop_silent(), None);
}

#[test]
fn numbers_that_do_not_add_up_say_so() {
    let mut t = WindowTracker::new(config());
    let mut run = Run::new("node-1", 1);
    // The kernel's own numbers do not add up (a close neither emitted nor counted).
    let c = run.chunk(minute(0), 0, Some(Some(kernel(10, 8, 1))), 8, 0);
    offer(&mut t, &c, at(65));
    // The kernel's do, but two records are missing that no loss explains.
    let c = run.chunk(minute(1), 0, Some(Some(kernel(9, 9, 0))), 7, 0);
    offer(&mut t, &c, at(125));
    // Two records more than emitted.
    let c = run.chunk(minute(2), 0, Some(Some(kernel(9, 9, 0))), 11, 0);
    offer(&mut t, &c, at(185));
    let r = reports(&mut t);
    assert_eq!(r.len(), 3);
    assert!(r.iter().all(|r| !r.adds_up()), "{r:#?}");
    assert!(r.iter().all(|r| r.status == WindowStatus::AllChunks));
    assert_eq!(t.stats().windows_not_adding_up, 3);
}

#[test]
fn losses_after_the_kernel_explain_missing_chunks() {
    let mut t = WindowTracker::new(config());
    let mut run = Run::new("node-1", 1);
    let w = minute(0);
    // Chunk 0 (4 records) was dropped from the exporter's spool, and said so in the
    // last chunk; the last chunk also carries one record of a crashed earlier run
    // that its journal gave back (and one it could not: informational here).
    let _dropped = run.chunk(w, 0, None, 4, 0);
    let c1 = run.chunk(w, 1, None, 3, 0);
    let last = Completeness {
        lost_spool: 4,
        lost_journal: 1,
        records_replayed: 1,
        ..kernel(12, 12, 0)
    };
    let c2 = run.chunk(w, 2, Some(Some(last)), 6, 0);
    offer(&mut t, &c1, at(30));
    offer(&mut t, &c2, at(61));
    assert!(reports(&mut t).is_empty(), "waits for chunk 0");
    t.advance(at(61 + 299));
    assert!(reports(&mut t).is_empty());
    assert_eq!(t.next_deadline(), Some(at(61 + 300)));
    t.advance(at(61 + 300));
    let r = reports(&mut t);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].status, WindowStatus::ChunksMissing);
    assert_eq!((r[0].chunks_expected, r[0].chunks_received), (Some(3), 2));
    assert_eq!(r[0].records_expected(), Some(9));
    assert!(r[0].adds_up(), "the losses account for what is missing");
    let s = t.stats();
    assert_eq!((s.lost_spool, s.lost_journal), (4, 1));
    assert_eq!(s.windows_for(WindowStatus::ChunksMissing), 1);
}

#[test]
fn a_chunk_arriving_after_the_last_one_completes_the_window() {
    let mut t = WindowTracker::new(config());
    let mut run = Run::new("node-1", 1);
    let w = minute(0);
    let c0 = run.chunk(w, 0, None, 5, 0);
    let c1 = run.chunk(w, 1, Some(Some(kernel(6, 6, 0))), 1, 0);
    // Reordered on the way: the last chunk first; it holds the slot.
    assert!(offer(&mut t, &c1, at(61)));
    assert!(reports(&mut t).is_empty());
    assert!(!offer(&mut t, &c0, at(90)));
    let r = reports(&mut t);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].status, WindowStatus::AllChunks);
    assert_eq!((r[0].batch.sequence, r[0].record_index), (2, 1));
    assert!(r[0].adds_up());
    // Its deadline went with it.
    t.advance(at(61 + 300));
    assert!(reports(&mut t).is_empty());
}

#[test]
fn a_window_without_its_last_chunk_is_reported_missing_after_the_grace() {
    let mut t = WindowTracker::new(config());
    let mut run = Run::new("node-1", 1);
    let w = minute(0);
    // A full chunk mid-window, then the exporter was killed: no last chunk.
    let c0 = run.chunk(w, 0, None, 7, 0);
    offer(&mut t, &c0, at(30));
    // Its deadline runs from the window's end, not from the chunk's arrival.
    assert_eq!(t.next_deadline(), Some(at(60 + 300)));
    t.advance(at(359));
    assert!(reports(&mut t).is_empty());
    t.advance(at(360));
    let r = reports(&mut t);
    assert_eq!(r.len(), 1);
    let r = &r[0];
    assert_eq!(r.status, WindowStatus::LastChunkMissing);
    assert_eq!((r.completeness, r.chunks_expected), (None, None));
    assert_eq!((r.chunks_received, r.records_received), (1, 7));
    assert_eq!(r.records_expected(), None);
    assert!(!r.adds_up());
    let s = t.stats();
    assert_eq!(s.windows_for(WindowStatus::LastChunkMissing), 1);
    assert_eq!(s.windows_not_adding_up, 1);
    // A chunk of a window arriving late (a spool replayed after an outage) pushes
    // the deadline from its arrival.
    let c = run.chunk(minute(1), 0, None, 1, 0);
    offer(&mut t, &c, at(1_000));
    assert_eq!(t.next_deadline(), Some(at(1_300)));
}

#[test]
fn a_late_chunk_is_counted_and_reports_nothing_more() {
    let mut t = WindowTracker::new(config());
    let mut run = Run::new("node-1", 1);
    let w = minute(0);
    let c0 = run.chunk(w, 0, None, 2, 0);
    let c1 = run.chunk(w, 1, Some(Some(kernel(3, 3, 0))), 1, 0);
    offer(&mut t, &c1, at(61));
    t.advance(at(61 + 300));
    let r = reports(&mut t);
    assert_eq!(r[0].status, WindowStatus::ChunksMissing);
    assert!(!r[0].adds_up());
    // Chunk 0 comes in after the report: counted, no slot, no second report.
    assert!(!offer(&mut t, &c0, at(600)));
    t.advance(at(600 + 3_600));
    assert!(reports(&mut t).is_empty());
    assert_eq!(t.stats().late_chunks, 1);
    // Once the window is forgotten, a chunk of it starts a new one.
    let again = run.chunk(w, 3, None, 1, 0);
    assert!(offer(&mut t, &again, at(10_000)));
    t.advance(at(10_300));
    assert_eq!(reports(&mut t)[0].status, WindowStatus::LastChunkMissing);
}

#[test]
fn a_window_without_completeness_resolves_its_slot_silently() {
    // An exporter speaking wire format 1: a last chunk, no completeness.
    let mut t = WindowTracker::new(config());
    let mut run = Run::new("old-exporter", 1);
    let c = run.chunk(minute(0), 0, Some(None), 4, 0);
    assert!(offer(&mut t, &c, at(61)));
    assert!(reports(&mut t).is_empty());
    assert_eq!(t.pop_silent(), Some((Arc::clone(&c.batch), 4)));
    assert_eq!(t.stats().windows, [0, 0, 0]);
}

#[test]
fn each_exporter_run_has_its_own_windows() {
    // A restart within a window: the old run closes it early, the new run sends the
    // rest; both report.
    let mut t = WindowTracker::new(config());
    let mut old = Run::new("node-1", 1);
    let mut new = Run::new("node-1", 2);
    let w = minute(0);
    let partial = Completeness {
        running_whole_window: false,
        ..kernel(4, 4, 0)
    };
    assert!(offer(
        &mut t,
        &old.chunk(w, 0, Some(Some(partial)), 4, 0),
        at(20)
    ));
    assert!(offer(
        &mut t,
        &new.chunk(w, 0, Some(Some(partial)), 4, 0),
        at(61)
    ));
    let r = reports(&mut t);
    assert_eq!(r.len(), 2);
    assert_ne!(r[0].instance, r[1].instance);
    assert!(r.iter().all(WindowReport::adds_up));
}

#[test]
fn a_replay_reports_only_what_was_not_written_and_counts_it_once() {
    let mut run = Run::new("node-1", 1);
    let a0 = run.chunk(minute(0), 0, Some(Some(kernel(2, 2, 0))), 2, 0);
    let b0 = run.chunk(minute(1), 0, None, 1, 0);
    let late = run.chunk(minute(0), 1, None, 1, 0);
    let b1 = run.chunk(minute(1), 1, Some(Some(kernel(2, 2, 0))), 1, 0);
    // Before the crash: window 0 reported and written; window 1 reported but not
    // yet written when the collector died. Then a late chunk of window 0.
    let mut live = WindowTracker::new(config());
    let slots: Vec<bool> = [(&a0, 61), (&b0, 100), (&late, 110), (&b1, 121)]
        .into_iter()
        .map(|(c, s)| offer(&mut live, c, at(s)))
        .collect();
    assert_eq!(slots, [true, true, false, false]);
    assert_eq!(reports(&mut live).len(), 2);
    assert_eq!(live.stats().late_chunks, 1);
    // The replay: window 0's slot is written, window 1's is not.
    let mut replay = WindowTracker::new(config());
    replay.set_replaying(true);
    replay.observe(&a0, Slot::Written, at(61));
    replay.observe(&b0, Slot::Unwritten, at(100));
    replay.observe(&late, Slot::None, at(110));
    replay.observe(&b1, Slot::None, at(121));
    replay.set_replaying(false);
    let r = reports(&mut replay);
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].window, r[0].batch.sequence), (minute(1), 2));
    assert!(r[0].adds_up());
    let s = replay.stats();
    assert_eq!(s.windows_for(WindowStatus::AllChunks), 1);
    assert_eq!((s.records_received, s.late_chunks), (2, 0));
    // A chunk whose window's first chunks were pruned from the ledger (no slot in
    // what is replayed): that window was reported before; it stays silent.
    let mut replay = WindowTracker::new(config());
    replay.set_replaying(true);
    replay.observe(&late, Slot::None, at(110));
    replay.set_replaying(false);
    replay.advance(at(10_000));
    assert!(reports(&mut replay).is_empty());
    assert_eq!(replay.pop_silent(), None);
}

#[test]
fn the_cap_forgets_reported_windows_first_then_closes_open_ones_early() {
    let mut t = WindowTracker::new(config().with_max_windows(2));
    let mut run = Run::new("node-1", 1);
    offer(
        &mut t,
        &run.chunk(minute(0), 0, Some(Some(kernel(1, 1, 0))), 1, 0),
        at(61),
    );
    assert_eq!(reports(&mut t).len(), 1);
    offer(&mut t, &run.chunk(minute(1), 0, None, 1, 0), at(90));
    // A third window: the remembered one goes.
    offer(&mut t, &run.chunk(minute(2), 0, None, 1, 0), at(150));
    let s = t.stats();
    assert_eq!((s.windows_open, s.windows_remembered), (2, 0));
    // A fourth: the open window nearest its deadline is reported now.
    offer(&mut t, &run.chunk(minute(3), 0, None, 1, 0), at(200));
    let r = reports(&mut t);
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].window, r[0].status),
        (minute(1), WindowStatus::LastChunkMissing)
    );
    let s = t.stats();
    assert_eq!(s.windows_evicted, 1);
    assert!(s.windows_open + s.windows_remembered <= 2, "{s:?}");
}

#[test]
fn time_going_back_changes_nothing() {
    let mut t = WindowTracker::new(config());
    let mut run = Run::new("node-1", 1);
    offer(&mut t, &run.chunk(minute(0), 0, None, 1, 0), at(400));
    offer(&mut t, &run.chunk(minute(5), 0, None, 1, 0), at(10));
    assert_eq!(t.next_deadline(), Some(at(700)));
}
