//! The pipeline's sans-IO core under simulated time: no clock is read, no task runs.

// The collector-sink tests' helpers: records that carry their own number, chunks,
// the reference collector and readers of its output.
#[path = "../crates/flow-sink/tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant, UNIX_EPOCH};

use common::*;
use flow_batch::{BatchConfig, wire::InstanceId};
use flow_sink::RetryPolicy;
use flow_sink::{Accepted, SinkError};
use flowexporter::{
    BacklogLimits, JournalConfig, RecordJournal, Shipping, pipeline::core::PipelineCore,
};

/// The simulated clock: `WINDOW_START_MS` plus `s` seconds.
fn at(s: u64) -> std::time::SystemTime {
    UNIX_EPOCH + Duration::from_millis(WINDOW_START_MS) + Duration::from_secs(s)
}

/// The simulated monotonic clock's origin (only differences to it matter).
fn t0() -> Instant {
    use std::sync::OnceLock;
    static T0: OnceLock<Instant> = OnceLock::new();
    *T0.get_or_init(Instant::now)
}

fn journal(dir: &std::path::Path) -> RecordJournal {
    RecordJournal::open(dir, "host-a", InstanceId::new(9), JournalConfig::default())
        .expect("journal")
        .0
}

fn core(shipping: Shipping, journal: Option<RecordJournal>) -> PipelineCore {
    let batch = BatchConfig::for_window(Duration::from_secs(60))
        .with_allowed_lateness(Duration::from_secs(5));
    PipelineCore::new(batch, shipping, journal, "host-a", InstanceId::new(9)).expect("core")
}

#[test]
fn a_window_leaves_when_its_time_has_passed_and_not_before() {
    let mut core = core(Shipping::Windows, None);
    core.push((0..10).map(record), at(1));
    assert!(
        core.poll_transmit(t0()).is_none(),
        "nothing before the window closes"
    );
    let (window_due, sync_due) = core.poll_timeout();
    // The records end at WINDOW_START_MS (20 s into a minute): their window is
    // [-20 s, 40 s), due at its end plus the 5 s lateness.
    assert_eq!(window_due, Some(at(45)), "window end + lateness");
    assert_eq!(sync_due, None, "no journal");

    core.handle_timeout(at(44), Instant::now());
    assert!(core.poll_transmit(t0()).is_none());
    core.handle_timeout(at(45), Instant::now());
    let t = core.poll_transmit(t0()).expect("the window's chunk");
    assert_eq!(t.chunk.records.len(), 10);
    assert!(t.chunk.last && !t.replay);
    assert_eq!(
        (
            t.batch_id.host.as_str(),
            t.batch_id.instance,
            t.batch_id.sequence
        ),
        ("host-a", InstanceId::new(9), 0)
    );
    core.handle_accepted(t, Ok(Accepted::Sent), t0());
    assert!(core.poll_transmit(t0()).is_none());
    assert_eq!(core.counters().records_in, 10);
    assert_eq!(core.counters().chunks_out, 1);
}

#[test]
fn shipping_immediately_cuts_a_chunk_per_push_within_the_window() {
    let mut core = core(Shipping::Immediately, None);
    core.push((0..3).map(record), at(1));
    let first = core.poll_transmit(t0()).expect("first read");
    core.push((3..5).map(record), at(2));
    let second = core.poll_transmit(t0()).expect("second read");
    assert_eq!(
        (first.chunk.records.len(), second.chunk.records.len()),
        (3, 2)
    );
    assert_eq!(first.chunk.window, second.chunk.window);
    assert!(!first.chunk.last && !second.chunk.last);
    assert_eq!((first.batch_id.sequence, second.batch_id.sequence), (0, 1));
    // The window still closes, with an empty last chunk.
    core.handle_timeout(at(65), Instant::now());
    let last = core.poll_transmit(t0()).expect("last chunk");
    assert!(last.chunk.last && last.chunk.records.is_empty());
}

#[test]
fn a_chunk_refused_for_good_is_counted_and_its_intent_ended() {
    let dir = tempfile::tempdir().expect("dir");
    let mut core = core(Shipping::Windows, Some(journal(dir.path())));
    core.push((0..4).map(record), at(1));
    core.close_windows(at(2));
    let t = core.poll_transmit(t0()).expect("chunk");
    assert_eq!(core.journal_counters().expect("journal").open_chunks, 1);
    let refused = SinkError::Rejected {
        url: "http://collector".into(),
        batch_id: t.batch_id.to_string(),
        status: 400,
        body: "no".into(),
    };
    core.handle_accepted(t, Err(refused), t0());
    let c = core.counters();
    assert_eq!((c.delivery_errors, c.records_dropped), (1, 4));
    assert_eq!(core.journal_counters().expect("journal").open_chunks, 0);
}

#[test]
fn a_chunk_kept_in_memory_stays_open_until_the_sink_settles_it() {
    let dir = tempfile::tempdir().expect("dir");
    let mut core = core(Shipping::Windows, Some(journal(dir.path())));
    core.push((0..4).map(record), at(1));
    core.close_windows(at(2));
    let t = core.poll_transmit(t0()).expect("chunk");
    let id = t.batch_id.clone();
    core.handle_accepted(t, Ok(Accepted::InMemory), t0());
    assert_eq!(core.journal_counters().expect("journal").open_chunks, 1);
    core.handle_settled([id]);
    assert_eq!(core.journal_counters().expect("journal").open_chunks, 0);
    assert_eq!(core.counters().records_dropped, 0);
}

#[test]
fn a_failed_chunk_is_tried_again_after_its_backoff_and_newer_chunks_wait_behind_it() {
    let dir = tempfile::tempdir().expect("dir");
    let policy = RetryPolicy::default()
        .with_initial_backoff(Duration::from_secs(1))
        .with_max_backoff(Duration::from_secs(4));
    let mut core = core(Shipping::Immediately, Some(journal(dir.path())))
        .with_delivery_retry(policy, BacklogLimits::default());
    core.push((0..3).map(record), at(1));
    let first = core.poll_transmit(t0()).expect("first chunk");
    let first_id = first.batch_id.clone();
    core.handle_accepted(first, Err(SinkError::other("peer down")), t0());
    assert_eq!(core.counters().delivery_retries, 1);
    assert_eq!(core.counters().records_dropped, 0);
    let (_, due) = core.poll_timeout();
    let due = due.expect("a retry is due");
    assert!(
        due <= t0() + Duration::from_secs(1),
        "within the first backoff"
    );

    // A newer chunk does not overtake it.
    core.push((3..5).map(record), at(2));
    assert!(due == t0() || core.poll_transmit(t0()).is_none());
    assert_eq!(core.counters().chunks_waiting, 2);

    // Due: the failed chunk again, then the newer one.
    let again = core.poll_transmit(due).expect("the retry");
    assert_eq!(again.batch_id, first_id);
    assert_eq!(again.chunk.records.len(), 3);
    core.handle_accepted(again, Ok(Accepted::Sent), due);
    let next = core.poll_transmit(due).expect("the newer chunk");
    assert_eq!(next.chunk.records.len(), 2);
    core.handle_accepted(next, Ok(Accepted::Sent), due);
    assert_eq!(core.journal_counters().expect("journal").open_chunks, 0);
    assert_eq!(core.counters().chunks_waiting, 0);
}

#[test]
fn a_full_backlog_drops_its_oldest_chunk_counted() {
    let dir = tempfile::tempdir().expect("dir");
    let mut core = core(Shipping::Immediately, Some(journal(dir.path())))
        .with_delivery_retry(RetryPolicy::default(), BacklogLimits::new(2, 1_000));
    core.push((0..3).map(record), at(1));
    let first = core.poll_transmit(t0()).expect("first chunk");
    core.handle_accepted(first, Err(SinkError::other("peer down")), t0());
    for n in 0..3 {
        core.push([record(10 + n)], at(2));
        // The failed chunk's retry is not due yet: nothing is handed out.
        assert!(core.poll_transmit(t0()).is_none());
    }
    // Four chunks for a backlog of two: the two oldest went, their 4 records counted.
    let c = core.counters();
    assert_eq!(c.records_dropped_backlog_full, 3 + 1);
    assert_eq!(c.chunks_waiting, 2);
    assert_eq!(core.journal_counters().expect("journal").open_chunks, 2);
}

#[test]
fn what_still_waits_at_the_stop_stays_journaled_or_is_counted_lost() {
    let dir = tempfile::tempdir().expect("dir");
    let mut journaled = core(Shipping::Immediately, Some(journal(dir.path())));
    let mut unjournaled = core(Shipping::Immediately, None);
    for core in [&mut journaled, &mut unjournaled] {
        core.push((0..3).map(record), at(1));
        let t = core.poll_transmit(t0()).expect("chunk");
        core.handle_accepted(t, Err(SinkError::other("peer down")), t0());
        assert_eq!(core.abandon_backlog(), 1);
    }
    assert_eq!(journaled.counters().chunks_left_in_journal, 1);
    assert_eq!(journaled.counters().records_unsent_at_stop, 0);
    assert_eq!(
        journaled.journal_counters().expect("journal").open_chunks,
        1
    );
    assert_eq!(unjournaled.counters().records_unsent_at_stop, 3);
}

#[test]
fn every_window_is_reported_with_the_sources_counts_interim_and_replayed_records_added() {
    let dir = tempfile::tempdir().expect("dir");
    // A run journals five records, then crashes before any chunk left.
    {
        let mut crashed = core(Shipping::Windows, Some(journal(dir.path())));
        crashed.push((0..5).map(record), at(1));
        crashed.sync();
    }
    let (journal, recovered) = RecordJournal::open(
        dir.path(),
        "host-a",
        InstanceId::new(10),
        JournalConfig::default(),
    )
    .expect("journal");
    let batch = BatchConfig::for_window(Duration::from_secs(60))
        .with_allowed_lateness(Duration::from_secs(5));
    let mut core = PipelineCore::new(
        batch,
        Shipping::Windows,
        Some(journal),
        "host-a",
        InstanceId::new(10),
    )
    .expect("core");
    // The next start, in the window [at(100), at(160)): the old records are late.
    core.recover(recovered, at(100));
    core.report_windows(at(100));
    let interim: Vec<_> = (10..12)
        .map(|i| {
            let mut r = record(i);
            r.record_kind = flow_record::RecordKind::Interim;
            r.t_end = at(110);
            r
        })
        .collect();
    core.push(interim, at(110));
    // Nothing is due before the window's end plus the lateness.
    assert!(core.windows_to_report(at(164), false).is_empty());
    let due = core.windows_to_report(at(165), false);
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].start(), at(100));
    let counts = flow_batch::Completeness {
        closes_seen: 3,
        records_emitted: 3,
        running_whole_window: false,
        ..Default::default()
    };
    core.supply_completeness(due[0], counts);
    assert!(
        core.windows_to_report(at(165), false).is_empty(),
        "asked once"
    );
    core.handle_timeout(at(165), t0());
    let t = core.poll_transmit(t0()).expect("the window's last chunk");
    assert!(t.chunk.last);
    assert_eq!(t.chunk.records.len(), 7, "5 replayed, 2 interim");
    let c = t
        .chunk
        .completeness
        .expect("completeness on the last chunk");
    assert_eq!(c.records_replayed, 5, "{c:?}");
    assert_eq!(c.interim_records, 2, "{c:?}");
    assert_eq!((c.closes_seen, c.records_emitted), (3, 3));
    // The next window is open already, without a record: it will be reported too.
    let next = core.windows_to_report(at(225), false);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].start(), at(160));
}
