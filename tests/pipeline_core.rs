//! The pipeline's sans-IO core under simulated time: no clock is read, no task runs.

mod common;

use std::time::{Duration, Instant, UNIX_EPOCH};

use common::*;
use flow_batch::{BatchConfig, wire::InstanceId};
use flow_sink::{Accepted, SinkError};
use flowexporter::{JournalConfig, RecordJournal, Shipping, pipeline::core::PipelineCore};

/// The simulated clock: `WINDOW_START_MS` plus `s` seconds.
fn at(s: u64) -> std::time::SystemTime {
    UNIX_EPOCH + Duration::from_millis(WINDOW_START_MS) + Duration::from_secs(s)
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
        core.poll_transmit().is_none(),
        "nothing before the window closes"
    );
    let (window_due, sync_due) = core.poll_timeout();
    // The records end at WINDOW_START_MS (20 s into a minute): their window is
    // [-20 s, 40 s), due at its end plus the 5 s lateness.
    assert_eq!(window_due, Some(at(45)), "window end + lateness");
    assert_eq!(sync_due, None, "no journal");

    core.handle_timeout(at(44), Instant::now());
    assert!(core.poll_transmit().is_none());
    core.handle_timeout(at(45), Instant::now());
    let t = core.poll_transmit().expect("the window's chunk");
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
    core.handle_accepted(&t, &Ok(Accepted::Sent));
    assert!(core.poll_transmit().is_none());
    assert_eq!(core.counters().records_in, 10);
    assert_eq!(core.counters().chunks_out, 1);
}

#[test]
fn shipping_immediately_cuts_a_chunk_per_push_within_the_window() {
    let mut core = core(Shipping::Immediately, None);
    core.push((0..3).map(record), at(1));
    let first = core.poll_transmit().expect("first read");
    core.push((3..5).map(record), at(2));
    let second = core.poll_transmit().expect("second read");
    assert_eq!(
        (first.chunk.records.len(), second.chunk.records.len()),
        (3, 2)
    );
    assert_eq!(first.chunk.window, second.chunk.window);
    assert!(!first.chunk.last && !second.chunk.last);
    assert_eq!((first.batch_id.sequence, second.batch_id.sequence), (0, 1));
    // The window still closes, with an empty last chunk.
    core.handle_timeout(at(65), Instant::now());
    let last = core.poll_transmit().expect("last chunk");
    assert!(last.chunk.last && last.chunk.records.is_empty());
}

#[test]
fn a_chunk_the_sink_could_not_take_is_counted_and_its_intent_ended() {
    let dir = tempfile::tempdir().expect("dir");
    let (journal, _) = RecordJournal::open(
        dir.path(),
        "host-a",
        InstanceId::new(9),
        JournalConfig::default(),
    )
    .expect("journal");
    let mut core = core(Shipping::Windows, Some(journal));
    core.push((0..4).map(record), at(1));
    core.close_windows(at(2));
    let t = core.poll_transmit().expect("chunk");
    assert_eq!(core.journal_counters().expect("journal").open_chunks, 1);
    core.handle_accepted(&t, &Err(SinkError::other("refused")));
    let c = core.counters();
    assert_eq!((c.delivery_errors, c.records_dropped), (1, 4));
    assert_eq!(core.journal_counters().expect("journal").open_chunks, 0);
}

#[test]
fn a_chunk_kept_in_memory_stays_open_until_the_sink_settles_it() {
    let dir = tempfile::tempdir().expect("dir");
    let (journal, _) = RecordJournal::open(
        dir.path(),
        "host-a",
        InstanceId::new(9),
        JournalConfig::default(),
    )
    .expect("journal");
    let mut core = core(Shipping::Windows, Some(journal));
    core.push((0..4).map(record), at(1));
    core.close_windows(at(2));
    let t = core.poll_transmit().expect("chunk");
    core.handle_accepted(&t, &Ok(Accepted::InMemory));
    assert_eq!(core.journal_counters().expect("journal").open_chunks, 1);
    core.handle_settled([t.batch_id.clone()]);
    assert_eq!(core.journal_counters().expect("journal").open_chunks, 0);
    assert_eq!(core.counters().records_dropped, 0);
}
