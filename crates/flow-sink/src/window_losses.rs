//! Records the collector sink dropped before delivery (its spool full, its disk full,
//! its memory queue full), remembered per window until the window's last chunk is
//! encoded, so that the last chunk's completeness can say how many
//! ([`Completeness::lost_spool`](flow_batch::Completeness::lost_spool)).
//!
//! The spool and the memory queue belong to the send task, while chunks are encoded in
//! the caller's task: both hold a [`WindowLosses`], one ledger behind a mutex, taken
//! for a few comparisons at each drop and at each window's last chunk.
//!
//! What cannot be reported, and is counted as such:
//!
//! - a frame dropped after its window's last chunk was encoded (often to make room for
//!   that very chunk), the last chunk itself, or a frame of a window whose last chunk
//!   carried no completeness: *unreported*;
//! - drops of more than [`MAX_WINDOWS`] windows waiting for their last chunk: the
//!   oldest window is *forgotten*.
//!
//! The ledger lives in memory: drops before a restart are not remembered after it.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard},
};

use flow_batch::wire::{ChunkHeader, InstanceId};

/// Most windows whose drops are remembered while they wait for their last chunk; past
/// it the oldest is forgotten (counted in [`LossCounts::forgotten`]).
pub(crate) const MAX_WINDOWS: usize = 64;

/// Most exporter runs (instances) whose encoded last chunks are remembered.
const MAX_INSTANCES: usize = 64;

/// A window of one exporter run: the instance in the batch ID and the window's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct WindowKey {
    /// The exporter run.
    pub(crate) instance: InstanceId,
    /// The window's start, ms since the epoch.
    pub(crate) start_ms: u64,
}

impl WindowKey {
    /// The window of the frame whose header is `header`.
    pub(crate) fn of(header: &ChunkHeader) -> WindowKey {
        WindowKey {
            instance: header.instance,
            start_ms: header.window.start_ms(),
        }
    }
}

/// What became of the records dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LossCounts {
    /// Added to the `lost_spool` of their window's last chunk.
    pub(crate) reported: u64,
    /// Dropped too late to be reported (see the module docs).
    pub(crate) unreported: u64,
    /// Of windows forgotten to stay within [`MAX_WINDOWS`].
    pub(crate) forgotten: u64,
}

/// The per-window ledger of dropped records, shared by the sink and its send task.
#[derive(Clone, Debug, Default)]
pub(crate) struct WindowLosses(Arc<Mutex<Ledger>>);

#[derive(Debug, Default)]
struct Ledger {
    /// Records dropped per window, waiting for the window's last chunk; in the order
    /// the windows first had a drop.
    pending: VecDeque<(WindowKey, u64)>,
    /// Per instance, the latest window whose last chunk was encoded (or dropped):
    /// windows close in order, so no drop at or before it can be reported any more.
    closed: VecDeque<(InstanceId, u64)>,
    counts: LossCounts,
}

impl WindowLosses {
    fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that the frame whose header is `header` was dropped before delivery.
    pub(crate) fn dropped(&self, header: &ChunkHeader) {
        self.note(
            WindowKey::of(header),
            u64::from(header.record_count),
            header.last,
        );
    }

    /// Notes `records` dropped of window `key`, in the window's last chunk if `last`.
    pub(crate) fn note(&self, key: WindowKey, records: u64, last: bool) {
        let mut ledger = self.lock();
        if last {
            // Its completeness is gone with it, and earlier drops have nowhere to go.
            ledger.close(key);
            ledger.counts.unreported += records;
            return;
        }
        if records == 0 {
            return;
        }
        if ledger.is_closed(key) {
            ledger.counts.unreported += records;
            return;
        }
        if let Some((_, n)) = ledger.pending.iter_mut().find(|(k, _)| *k == key) {
            *n += records;
            return;
        }
        if ledger.pending.len() >= MAX_WINDOWS
            && let Some((old, n)) = ledger.pending.pop_front()
        {
            ledger.counts.forgotten += n;
            tracing::warn!(
                window_start_ms = old.start_ms,
                instance = %old.instance,
                records = n,
                windows = MAX_WINDOWS,
                "records dropped before delivery in too many windows: the oldest window's are forgotten, not reported in its completeness"
            );
        }
        ledger.pending.push_back((key, records));
    }

    /// The last chunk of window `key` is about to be encoded: takes the records
    /// dropped of the window, to add to its `lost_spool` when it carries a
    /// completeness (`with_completeness`; otherwise they are unreported and 0 is
    /// returned). Later drops of the window, or of an earlier one of the same run,
    /// are unreported.
    pub(crate) fn take_for_last(&self, key: WindowKey, with_completeness: bool) -> u64 {
        let mut ledger = self.lock();
        let n = match ledger.pending.iter().position(|(k, _)| *k == key) {
            Some(i) => ledger.pending.remove(i).map_or(0, |(_, n)| n),
            None => 0,
        };
        ledger.close(key);
        if with_completeness {
            ledger.counts.reported += n;
            n
        } else {
            ledger.counts.unreported += n;
            0
        }
    }

    /// The chunk that was to report `records` of window `key` was not taken (an
    /// error): they wait for it again, should it be handed over once more.
    pub(crate) fn give_back(&self, key: WindowKey, records: u64) {
        if records == 0 {
            return;
        }
        let mut ledger = self.lock();
        ledger.counts.reported = ledger.counts.reported.saturating_sub(records);
        match ledger.pending.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += records,
            None => ledger.pending.push_back((key, records)),
        }
    }

    /// What became of the records dropped so far.
    pub(crate) fn counts(&self) -> LossCounts {
        self.lock().counts
    }
}

impl Ledger {
    /// Whether window `key`'s last chunk (or a later one's of its run) was encoded.
    fn is_closed(&self, key: WindowKey) -> bool {
        self.closed
            .iter()
            .any(|(i, start)| *i == key.instance && key.start_ms <= *start)
    }

    /// Window `key`'s last chunk was encoded or dropped: it and the run's earlier
    /// windows take no more drops, and what waits for them is unreported.
    fn close(&mut self, key: WindowKey) {
        match self.closed.iter_mut().find(|(i, _)| *i == key.instance) {
            Some((_, start)) => *start = (*start).max(key.start_ms),
            None => {
                if self.closed.len() >= MAX_INSTANCES {
                    self.closed.pop_front();
                }
                self.closed.push_back((key.instance, key.start_ms));
            }
        }
        let mut unreported = 0;
        self.pending.retain(|(k, n)| {
            let stale = k.instance == key.instance && k.start_ms <= key.start_ms;
            if stale {
                unreported += n;
            }
            !stale
        });
        self.counts.unreported += unreported;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(start_ms: u64) -> WindowKey {
        WindowKey {
            instance: InstanceId::new(1),
            start_ms,
        }
    }

    #[test]
    fn drops_wait_for_their_windows_last_chunk() {
        let losses = WindowLosses::default();
        losses.note(key(0), 10, false);
        losses.note(key(0), 5, false);
        losses.note(key(60), 7, false);
        assert_eq!(losses.take_for_last(key(0), true), 15);
        assert_eq!(losses.take_for_last(key(0), true), 0, "taken once");
        // Window 0 is closed: a later drop of it cannot be reported.
        losses.note(key(0), 3, false);
        // Another run's window 0 is not this one's.
        let other = WindowKey {
            instance: InstanceId::new(2),
            start_ms: 0,
        };
        losses.note(other, 4, false);
        assert_eq!(losses.take_for_last(other, true), 4);
        // Without a completeness, nothing is reported.
        assert_eq!(losses.take_for_last(key(60), false), 0);
        assert_eq!(
            losses.counts(),
            LossCounts {
                reported: 19,
                unreported: 3 + 7,
                forgotten: 0
            }
        );
    }

    #[test]
    fn a_later_windows_last_chunk_or_a_dropped_last_chunk_closes_earlier_windows() {
        let losses = WindowLosses::default();
        losses.note(key(0), 10, false);
        losses.note(key(60), 5, false);
        assert_eq!(losses.take_for_last(key(60), true), 5);
        assert_eq!(losses.counts().unreported, 10, "window 0 closed before 60");
        losses.note(key(120), 2, false);
        // The window's last chunk itself dropped.
        losses.note(key(120), 3, true);
        assert_eq!(losses.take_for_last(key(120), true), 0);
        assert_eq!(losses.counts().unreported, 10 + 2 + 3);
    }

    #[test]
    fn bounded_and_given_back() {
        let losses = WindowLosses::default();
        for w in 0..MAX_WINDOWS as u64 + 2 {
            losses.note(key(w * 60), 1, false);
        }
        assert_eq!(losses.counts().forgotten, 2);
        assert_eq!(losses.take_for_last(key(0), true), 0, "forgotten");
        let last = key((MAX_WINDOWS as u64 + 1) * 60);
        assert_eq!(losses.take_for_last(last, true), 1);
        losses.give_back(last, 1);
        assert_eq!(losses.counts().reported, 0);
        assert_eq!(losses.take_for_last(last, true), 1, "there again");
    }
}
