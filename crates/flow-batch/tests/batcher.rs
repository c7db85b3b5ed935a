//! The batcher under simulated time.

mod common;

use std::{
    collections::BTreeMap,
    time::{Duration, UNIX_EPOCH},
};

use common::{Rng, at, at_ms, record};
use flow_batch::{
    BatchConfig, BatchError, Chunk, MinuteBatcher, Window, wire::ChunkEncoder, wire::InstanceId,
};

/// 5 s windows, 2 s lateness, 1 s future skew.
fn config() -> BatchConfig {
    BatchConfig::default()
        .with_window(Duration::from_secs(5))
        .with_allowed_lateness(Duration::from_secs(2))
        .with_max_future_skew(Duration::from_secs(1))
}

fn batcher(config: BatchConfig) -> MinuteBatcher {
    MinuteBatcher::new(config).expect("valid config")
}

fn drain(b: &mut MinuteBatcher) -> Vec<Chunk> {
    std::iter::from_fn(|| b.poll_chunk()).collect()
}

fn window(start_s: u64, end_s: u64) -> Window {
    Window::from_millis(start_s * 1000, end_s * 1000).expect("non-empty window")
}

fn ports(chunk: &Chunk) -> Vec<u16> {
    chunk.records.iter().map(|r| r.remote.port()).collect()
}

#[test]
fn records_go_to_the_window_of_their_close_time_and_boundaries_belong_to_the_next() {
    let mut b = batcher(config().with_max_future_skew(Duration::from_secs(5)));
    b.push(record(at(10), 1), at(10)).expect("push");
    b.push(record(at_ms(9_999), 2), at(10)).expect("push");
    b.push(record(at_ms(14_999), 3), at(10)).expect("push");
    assert_eq!(b.counters().open_windows, 2);
    assert!(drain(&mut b).is_empty());

    // [5, 10) closes at 10 + 2 lateness.
    assert_eq!(b.poll_timeout(), Some(at(12)));
    b.handle_timeout(at_ms(11_999));
    assert!(drain(&mut b).is_empty());
    b.handle_timeout(at(12));
    let chunks = drain(&mut b);
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].window, window(5, 10));
    assert_eq!(
        (chunks[0].index, chunks[0].sequence, chunks[0].last),
        (0, 0, true)
    );
    assert_eq!(ports(&chunks[0]), [2]);

    assert_eq!(b.poll_timeout(), Some(at(17)));
    b.handle_timeout(at(17));
    let chunks = drain(&mut b);
    assert_eq!(chunks[0].window, window(10, 15));
    assert_eq!(
        (chunks[0].index, chunks[0].sequence, chunks[0].last),
        (0, 1, true)
    );
    assert_eq!(ports(&chunks[0]), [1, 3]);
    assert_eq!(b.poll_timeout(), None);
    let c = b.counters();
    assert_eq!(
        (c.records_in, c.records_out, c.chunks_out, c.windows_closed),
        (3, 3, 2, 2)
    );
    assert_eq!(
        (c.records_late, c.records_future, c.open_windows),
        (0, 0, 0)
    );
}

#[test]
fn windows_fall_on_multiples_of_their_length_since_the_epoch() {
    let mut b = batcher(BatchConfig::default());
    let t = UNIX_EPOCH + Duration::from_millis(1_700_000_123_456);
    b.push(record(t, 1), t).expect("push");
    b.flush(t);
    let chunk = b.poll_chunk().expect("flushed");
    assert_eq!(chunk.window.start_ms(), 1_700_000_100_000);
    assert_eq!(chunk.window.end_ms(), 1_700_000_160_000);
    assert!(chunk.window.contains(t));
}

#[test]
fn a_record_within_the_lateness_joins_its_own_window() {
    let mut b = batcher(config());
    b.push(record(at(11), 1), at(11)).expect("push");
    // [10, 15) ended at 15 but stays open until 17.
    b.push(record(at(14), 2), at_ms(16_999)).expect("push");
    b.handle_timeout(at(17));
    let chunks = drain(&mut b);
    assert_eq!(chunks.len(), 1);
    assert_eq!(ports(&chunks[0]), [1, 2]);
    assert_eq!(b.counters().records_late, 0);
}

#[test]
fn a_late_record_is_counted_and_shipped_in_the_current_window() {
    let mut b = batcher(config());
    b.push(record(at(11), 1), at(11)).expect("push");
    b.handle_timeout(at(17));
    assert_eq!(drain(&mut b).len(), 1);

    // Its window [10, 15) closed at 17; it goes to [15, 20), which contains now.
    b.push(record(at(12), 2), at(18)).expect("push");
    // A record far in the past (before the batcher started) is late too.
    b.push(record(at(1), 3), at(18)).expect("push");
    assert_eq!(b.counters().records_late, 2);
    b.handle_timeout(at(22));
    let chunks = drain(&mut b);
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0].window, window(15, 20));
    assert_eq!(ports(&chunks[0]), [2, 3]);
    assert_eq!(
        chunks[0].records[0].t_end,
        at(12),
        "a late record keeps its close time"
    );
}

#[test]
fn a_late_record_with_now_gone_backwards_goes_to_the_first_open_window() {
    let mut b = batcher(config());
    b.push(record(at(11), 1), at(11)).expect("push");
    b.handle_timeout(at(17));
    drain(&mut b);
    // The wall clock stepped back to 11: [10, 15) is closed, so [15, 20) takes it.
    b.push(record(at(11), 2), at(11)).expect("push");
    b.flush(at(11));
    let chunks = drain(&mut b);
    assert_eq!(chunks[0].window, window(15, 20));
    assert_eq!(b.counters().records_late, 1);
}

#[test]
fn a_record_from_the_future_is_counted_and_not_buffered_for_its_far_window() {
    let mut b = batcher(config());
    // Within the 1 s skew: its own (next) window.
    b.push(record(at_ms(15_500), 1), at_ms(14_600))
        .expect("push");
    // An hour ahead: the current window, [10, 15).
    b.push(record(at(3_600), 2), at_ms(14_600)).expect("push");
    let c = b.counters();
    assert_eq!((c.records_future, c.open_windows), (1, 2));
    b.handle_timeout(at(17));
    let chunks = drain(&mut b);
    assert_eq!(chunks[0].window, window(10, 15));
    assert_eq!(ports(&chunks[0]), [2]);
    b.handle_timeout(at(22));
    let chunks = drain(&mut b);
    assert_eq!(chunks[0].window, window(15, 20));
    assert_eq!(ports(&chunks[0]), [1]);
}

#[test]
fn a_record_before_the_epoch_is_rejected_and_handed_back() {
    let mut b = batcher(config());
    let bad = record(UNIX_EPOCH - Duration::from_secs(1), 9);
    let err = b.push(bad.clone(), at(10)).expect_err("unencodable");
    match err {
        BatchError::UnencodableRecord { record, .. } => assert_eq!(*record, bad),
        other => panic!("unexpected error {other:?}"),
    }
    let c = b.counters();
    assert_eq!(
        (c.records_in, c.records_rejected, c.buffered_records),
        (1, 1, 0)
    );
}

#[test]
fn a_window_reaching_max_records_ships_numbered_chunks_at_once() {
    let mut b = batcher(config().with_max_records(3));
    for port in 0..7 {
        b.push(record(at(11), port), at(11)).expect("push");
    }
    let chunks = drain(&mut b);
    assert_eq!(chunks.len(), 2);
    assert_eq!(
        chunks
            .iter()
            .map(|c| (c.index, c.sequence, c.last))
            .collect::<Vec<_>>(),
        [(0, 0, false), (1, 1, false)]
    );
    assert_eq!(ports(&chunks[0]), [0, 1, 2]);
    assert_eq!(ports(&chunks[1]), [3, 4, 5]);
    assert_eq!(b.counters().buffered_records, 1);
    b.handle_timeout(at(17));
    let last = drain(&mut b);
    assert_eq!(
        (last[0].index, last[0].sequence, last[0].last),
        (2, 2, true)
    );
    assert_eq!(ports(&last[0]), [6]);
    assert_eq!(b.counters().chunks_split, 2);
}

#[test]
fn a_window_that_emptied_exactly_ends_with_an_empty_last_chunk() {
    let mut b = batcher(config().with_max_records(2));
    for port in 0..4 {
        b.push(record(at(11), port), at(11)).expect("push");
    }
    assert_eq!(drain(&mut b).len(), 2);
    b.handle_timeout(at(17));
    let last = drain(&mut b);
    assert_eq!(
        (last[0].index, last[0].last, last[0].records.len()),
        (2, true, 0)
    );
}

#[test]
fn a_window_reaching_max_bytes_ships_chunks_that_fit_the_limit() {
    let mut encoder = ChunkEncoder::new("host", InstanceId::new(1)).expect("encoder");
    let one = Chunk::new(window(10, 15), 0, 0, true, vec![record(at(11), 0)]);
    let record_len = encoder
        .encode(&one, &mut Vec::new())
        .expect("encode")
        .raw_len as usize;
    let max_bytes = 1024;
    let per_chunk = max_bytes / record_len;

    let mut b = batcher(config().with_max_bytes(max_bytes));
    for port in 0..100 {
        b.push(record(at(11), port), at(11)).expect("push");
    }
    b.handle_timeout(at(17));
    let chunks = drain(&mut b);
    assert_eq!(chunks.len(), 100_usize.div_ceil(per_chunk));
    let mut raw_total = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        assert_eq!((chunk.index as usize, chunk.sequence as usize), (i, i));
        assert_eq!(chunk.last, i == chunks.len() - 1);
        let header = encoder.encode(chunk, &mut Vec::new()).expect("encode");
        assert!(
            header.raw_len as usize <= max_bytes,
            "chunk {i} is {} bytes",
            header.raw_len
        );
        raw_total += u64::from(header.raw_len);
    }
    assert!(
        chunks[..chunks.len() - 1]
            .iter()
            .all(|c| c.records.len() == per_chunk)
    );
    assert_eq!(
        b.counters().bytes_out,
        raw_total,
        "bytes_out is the exact encoded size"
    );
}

#[test]
fn sequence_numbers_increase_across_windows() {
    let mut b = batcher(config().with_max_records(2));
    b.push(record(at(11), 1), at(11)).expect("push");
    b.push(record(at(16), 2), at(16)).expect("push");
    b.push(record(at(16), 3), at(16)).expect("push");
    b.push(record(at(17), 4), at(17)).expect("push");
    b.handle_timeout(at(30));
    let chunks = drain(&mut b);
    let seen: Vec<_> = chunks
        .iter()
        .map(|c| (c.window.start_ms() / 1000, c.index, c.sequence, c.last))
        .collect();
    assert_eq!(
        seen,
        [(15, 0, 0, false), (10, 0, 1, true), (15, 1, 2, true)],
        "chunks come out in emission order, each with the next sequence number"
    );
}

#[test]
fn flush_closes_every_open_window_and_later_records_count_as_late() {
    let mut b = batcher(config());
    b.push(record(at(11), 1), at_ms(14_600)).expect("push");
    b.push(record(at_ms(14_900), 2), at_ms(14_600))
        .expect("push");
    b.push(record(at_ms(15_500), 3), at_ms(14_600))
        .expect("push");
    b.flush(at_ms(14_600));
    let chunks = drain(&mut b);
    assert_eq!(chunks.len(), 2);
    assert!(chunks.iter().all(|c| c.last));
    assert_eq!(ports(&chunks[0]), [1, 2]);
    assert_eq!(ports(&chunks[1]), [3]);
    let c = b.counters();
    assert_eq!(
        (c.windows_flushed, c.open_windows, c.buffered_records),
        (2, 0, 0)
    );
    assert_eq!(b.poll_timeout(), None);

    b.push(record(at(12), 4), at_ms(14_600)).expect("push");
    assert_eq!(b.counters().records_late, 1);
    b.flush(at_ms(14_600));
    let chunks = drain(&mut b);
    assert_eq!(
        chunks[0].window,
        window(20, 25),
        "the first window after the flushed ones"
    );
    assert_eq!(chunks[0].sequence, 2);
}

#[test]
fn nothing_is_lost_and_memory_stays_bounded_under_random_traffic() {
    let config = config().with_max_records(50).with_max_bytes(4096);
    let mut b = batcher(config.clone());
    let mut rng = Rng::new(42);
    let mut now_ms = 1_000_000;
    let mut chunks = Vec::new();
    let mut pushed = 0_u64;
    for i in 0..20_000_u64 {
        now_ms += rng.below(20);
        if rng.chance(500) {
            now_ms = now_ms.saturating_sub(rng.below(10_000)); // the clock steps back
        }
        let t_end_ms = match rng.below(100) {
            0 => now_ms + rng.below(1_000_000),             // far future
            1 => now_ms.saturating_sub(rng.below(100_000)), // very late
            _ => now_ms.saturating_sub(rng.below(3_000)),
        };
        let mut r = record(at_ms(t_end_ms), 0);
        r.stats.bytes_sent = i; // identifies the record
        b.push(r, at_ms(now_ms)).expect("push");
        pushed += 1;
        if rng.chance(50) {
            b.handle_timeout(at_ms(now_ms));
        }
        let c = b.counters();
        assert!(c.open_windows <= 3, "{c:?}");
        assert!(c.buffered_records <= c.open_windows * 50, "{c:?}");
        assert!(c.buffered_bytes <= c.open_windows * 4096, "{c:?}");
        assert_eq!(c.records_in, c.records_out + c.buffered_records);
        chunks.extend(drain(&mut b));
    }
    b.flush(at_ms(now_ms));
    chunks.extend(drain(&mut b));

    let mut ids: Vec<u64> = chunks
        .iter()
        .flat_map(|c| c.records.iter().map(|r| r.stats.bytes_sent))
        .collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (0..pushed).collect::<Vec<_>>(),
        "every record exactly once"
    );

    for (i, chunk) in chunks.iter().enumerate() {
        assert_eq!(chunk.sequence, i as u64, "sequence numbers have no gaps");
        assert!(chunk.records.len() <= 50);
    }
    let mut per_window: BTreeMap<u64, Vec<&Chunk>> = BTreeMap::new();
    for chunk in &chunks {
        per_window
            .entry(chunk.window.start_ms())
            .or_default()
            .push(chunk);
    }
    for (start, list) in per_window {
        let indexes: Vec<u32> = list.iter().map(|c| c.index).collect();
        assert_eq!(
            indexes,
            (0..list.len() as u32).collect::<Vec<_>>(),
            "window {start}"
        );
        assert_eq!(list.iter().filter(|c| c.last).count(), 1, "window {start}");
        assert!(list.last().is_some_and(|c| c.last), "window {start}");
        assert_eq!(start % 5_000, 0);
    }
    let c = b.counters();
    assert!(c.records_late > 0 && c.records_future > 0, "{c:?}");
    assert_eq!(c.records_out, pushed);
    assert_eq!(c.chunks_out, chunks.len() as u64);
}

#[test]
fn records_of_drains_sharing_one_now_go_to_the_windows_their_times_say() {
    // As the reader hands them on: 100 records per drain at one `now`, drains 50 ms
    // apart, across many windows. Close times spread from 12 s before `now` to 4 s
    // after it, so that records just inside and just outside the lateness and the
    // future skew (to the millisecond) share windows with ordinary ones.
    let (window_ms, lateness_ms, skew_ms) = (5_000, 2_000, 1_000);
    let mut b = batcher(config().with_max_records(64));
    let mut rng = Rng::new(7);
    let mut chunks = Vec::new();
    let (mut late, mut future) = (0, 0);
    let mut now_ms: u64 = 1_000_000;
    for _ in 0..2_000 {
        now_ms += 50;
        for _ in 0..100 {
            let t_end_ms = match rng.below(10) {
                0 => now_ms - 2_000 - rng.below(10_000),
                1 => now_ms + 900 + rng.below(3_000),
                2 => now_ms + skew_ms - 2 + rng.below(5),
                _ => now_ms - rng.below(1_500),
            };
            // Time never goes back here, so a window is closed once `now` passed its
            // end by the lateness.
            let own_end = t_end_ms - t_end_ms % window_ms + window_ms;
            let closed_until = (now_ms - lateness_ms) - (now_ms - lateness_ms) % window_ms;
            late += u64::from(own_end <= closed_until);
            future += u64::from(own_end > closed_until && t_end_ms > now_ms + skew_ms);
            let sub_ms = Duration::from_nanos(rng.below(1_000_000));
            let mut r = record(at_ms(t_end_ms) + sub_ms, 0);
            r.stats.bytes_received = now_ms;
            b.push(r, at_ms(now_ms)).expect("push");
        }
        chunks.extend(drain(&mut b));
    }
    b.flush(at_ms(now_ms));
    chunks.extend(drain(&mut b));

    let mut seen = 0;
    let mut moved = 0;
    for chunk in &chunks {
        for r in &chunk.records {
            let pushed_ms = r.stats.bytes_received;
            let t_end_ms = common::ms(r.t_end);
            let own_end = t_end_ms - t_end_ms % window_ms + window_ms;
            let closed_until = (pushed_ms - lateness_ms) - (pushed_ms - lateness_ms) % window_ms;
            let own = own_end > closed_until && t_end_ms <= pushed_ms + skew_ms;
            let expected = if own { t_end_ms } else { pushed_ms };
            assert_eq!(
                chunk.window.start_ms(),
                expected - expected % window_ms,
                "{r:?} in {}",
                chunk.window
            );
            moved += u64::from(!own);
            seen += 1;
        }
    }
    let c = b.counters();
    assert_eq!(seen, 200_000);
    assert_eq!((c.records_late, c.records_future), (late, future));
    assert_eq!(moved, late + future);
    assert!(late > 1_000 && future > 1_000, "{c:?}");
}

#[test]
fn config_validation_names_the_bad_key() {
    let cases: [(BatchConfig, &str); 10] = [
        (config().with_window(Duration::ZERO), "window"),
        (config().with_window(Duration::from_millis(999)), "window"),
        (config().with_window(Duration::from_secs(7200)), "window"),
        (
            config().with_window(Duration::from_micros(5_000_500)),
            "window",
        ),
        (
            config().with_allowed_lateness(Duration::from_secs(5)),
            "allowed_lateness",
        ),
        (
            config().with_max_future_skew(Duration::from_secs(6)),
            "max_future_skew",
        ),
        (config().with_max_records(0), "max_records"),
        (config().with_max_records(usize::MAX), "max_records"),
        (config().with_max_bytes(0), "max_bytes"),
        (config().with_max_bytes(1 << 40), "max_bytes"),
    ];
    for (config, key) in cases {
        let err = MinuteBatcher::new(config.clone()).expect_err(key);
        match &err {
            BatchError::InvalidConfig { key: k, .. } => assert_eq!(k, &key, "{config:?}"),
            other => panic!("unexpected error {other:?}"),
        }
        assert!(err.to_string().contains(key), "{err}");
    }
    assert!(BatchConfig::default().validate().is_ok());
    assert!(
        config()
            .with_allowed_lateness(Duration::ZERO)
            .validate()
            .is_ok()
    );
}

#[test]
fn a_config_for_any_window_from_one_second_validates() {
    for secs in [1, 2, 3, 5, 60, 3600] {
        let config = BatchConfig::for_window(Duration::from_secs(secs));
        assert!(config.validate().is_ok(), "{config:?}");
        assert_eq!(config.window, Duration::from_secs(secs));
    }
    let one = BatchConfig::for_window(Duration::from_secs(1));
    assert_eq!(one.allowed_lateness, Duration::from_millis(500));
    // Long windows keep the default lateness and skew.
    let minute = BatchConfig::for_window(Duration::from_secs(60));
    assert_eq!(
        minute.allowed_lateness,
        BatchConfig::default().allowed_lateness
    );
    assert_eq!(
        minute.max_future_skew,
        BatchConfig::default().max_future_skew
    );
}

#[test]
fn tags_come_out_with_their_records_across_windows_splits_and_untagged_pushes() {
    // Record limit 3, so windows split; the tag of each record is its port plus 1000,
    // except every fifth record, which is pushed without a tag.
    let mut b = batcher(config().with_max_records(3));
    let mut rng = Rng::new(7);
    for port in 1..=60u16 {
        // Close times spread over three windows, some of them late.
        let t = at_ms(10_000 + rng.below(15_000));
        let now = at(20);
        let pushed = if port % 5 == 0 {
            b.push(record(t, port), now)
        } else {
            b.push_tagged(record(t, port), 1000 + u64::from(port), now)
        };
        pushed.expect("push");
    }
    b.flush(at(20));
    let chunks = drain(&mut b);
    let mut seen = 0;
    for chunk in &chunks {
        let expected: Vec<u64> = ports(chunk)
            .iter()
            .map(|&p| {
                if p % 5 == 0 {
                    flow_batch::NO_TAG
                } else {
                    1000 + u64::from(p)
                }
            })
            .collect();
        if expected.iter().all(|&t| t == flow_batch::NO_TAG) {
            assert!(chunk.tags.is_empty(), "{chunk:?}");
        } else {
            assert_eq!(chunk.tags, expected, "{chunk:?}");
        }
        seen += chunk.records.len();
    }
    // Late records go to the current window with their tags; none is lost.
    assert_eq!(seen, 60);
    // Tags are the caller's, not part of a chunk's identity (nor of the wire format).
    let tagged = chunks
        .iter()
        .find(|c| !c.tags.is_empty())
        .expect("a tagged chunk");
    let mut untagged = tagged.clone();
    untagged.tags.clear();
    assert_eq!(*tagged, untagged);
    assert!(b.counters().records_late > 0, "some records were late");
    assert!(
        chunks.iter().any(|c| !c.last),
        "the limit split some window"
    );
}

#[test]
fn ship_open_hands_out_what_is_buffered_and_keeps_the_windows_open() {
    let mut b = batcher(config());
    b.push(record(at(10), 1), at(10)).expect("push");
    b.push(record(at(11), 2), at(11)).expect("push");
    b.ship_open();
    let first = drain(&mut b);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].window, window(10, 15));
    assert_eq!(
        (first[0].index, first[0].sequence, first[0].last),
        (0, 0, false)
    );
    assert_eq!(ports(&first[0]), [1, 2]);
    // Nothing buffered: nothing shipped, not even an empty chunk.
    b.ship_open();
    assert!(drain(&mut b).is_empty());
    assert_eq!(b.counters().open_windows, 1);
    // The window still closes with its last chunk, empty here.
    b.push(record(at(12), 3), at(12)).expect("push");
    b.ship_open();
    assert_eq!(ports(&drain(&mut b)[0]), [3]);
    b.handle_timeout(at(17));
    let last = drain(&mut b);
    assert_eq!(last.len(), 1);
    assert_eq!(
        (last[0].index, last[0].sequence, last[0].last),
        (2, 2, true)
    );
    assert!(last[0].records.is_empty());
}

#[test]
fn an_opened_window_closes_with_an_empty_last_chunk_and_says_when_it_closes() {
    let mut b = batcher(config());
    b.open_current(at(101));
    assert_eq!(b.open_windows().collect::<Vec<_>>(), vec![window(100, 105)]);
    // Due at 105 s + 2 s lateness.
    assert_eq!(b.closing_at(at(106)).count(), 0);
    assert_eq!(
        b.closing_at(at(107)).collect::<Vec<_>>(),
        vec![window(100, 105)]
    );
    b.open_current(at(106));
    assert_eq!(
        b.open_windows().collect::<Vec<_>>(),
        vec![window(100, 105), window(105, 110)]
    );
    b.handle_timeout(at(107));
    let chunks = drain(&mut b);
    assert_eq!(chunks.len(), 1);
    assert!(chunks[0].last && chunks[0].records.is_empty());
    assert_eq!(chunks[0].window, window(100, 105));
    // Opening it again once closed opens the current one instead.
    b.open_current(at(107));
    assert_eq!(b.open_windows().collect::<Vec<_>>(), vec![window(105, 110)]);
}

#[test]
fn window_for_says_where_a_push_would_put_a_record() {
    let mut b = batcher(config());
    let cases = [
        (at(101), at(102)), // its own window
        (at(90), at(102)),  // late: the current one
        (at(104), at(106)), // its window still takes records (lateness)
        (at(110), at(106)), // from the future (more than 1 s ahead): the current one
        (at(99), at(108)),  // late once the window before closed
    ];
    for (t_end, now) in cases {
        let predicted = b.window_for(t_end, now);
        b.push(record(t_end, 1), now).expect("push");
        b.flush(now);
        let chunks = drain(&mut b);
        let placed: Vec<Window> = chunks
            .iter()
            .filter(|c| !c.records.is_empty())
            .map(|c| c.window)
            .collect();
        assert_eq!(placed, vec![predicted], "t_end {t_end:?} pushed at {now:?}");
    }
}
