//! What the core adds to a window's completeness (the source supplies the kernel's
//! counts): the interim records batched in it, the records of a previous run the
//! journal gave back, and the journal's losses at recovery.

use std::collections::BTreeMap;

use flow_batch::{Completeness, Window};

/// Completeness per window, from the source's counts to the window's last chunk.
#[derive(Debug, Default)]
pub(crate) struct CompletenessBook {
    /// Whether every window is reported (kept open without records, completeness
    /// asked for at its close).
    pub(crate) enabled: bool,
    /// The source's counts, by window start (ms), until the window's last chunk.
    supplied: BTreeMap<u64, Completeness>,
    /// Interim records batched, by the start (ms) of the window the batcher put them
    /// in.
    interim: BTreeMap<u64, u64>,
    /// Final records of a previous run recovered from the journal, by the start (ms)
    /// of the window the batcher put them in.
    replayed: BTreeMap<u64, u64>,
    /// Journal entries lost at recovery, not yet reported.
    journal_lost: u64,
}

impl CompletenessBook {
    pub(crate) fn new() -> CompletenessBook {
        CompletenessBook::default()
    }

    /// Counts an interim record batched in `window` (also before windows are
    /// reported: records recovered from the journal are batched before).
    pub(crate) fn interim(&mut self, window: Window) {
        count(&mut self.interim, window.start_ms());
    }

    /// A final record of a previous run, recovered from the journal, batched in
    /// `window`.
    pub(crate) fn replayed(&mut self, window: Window) {
        count(&mut self.replayed, window.start_ms());
    }

    /// Journal entries the recovery could not read: reported with the next window.
    pub(crate) fn journal_lost(&mut self, entries: u64) {
        self.journal_lost += entries;
    }

    /// Whether the source's counts for `window` are in already.
    pub(crate) fn has(&self, window: Window) -> bool {
        self.supplied.contains_key(&window.start_ms())
    }

    /// The source's counts for `window`.
    pub(crate) fn supply(&mut self, window: Window, counts: Completeness) {
        self.supplied.insert(window.start_ms(), counts);
    }

    /// The completeness of `window`, for its last chunk: the source's counts with
    /// the core's additions; `None` when the source gave none. Forgets the window
    /// (and every earlier one).
    pub(crate) fn take(&mut self, window: Window) -> Option<Completeness> {
        let start = window.start_ms();
        let mut c = self.supplied.remove(&start)?;
        c.interim_records = self.interim.remove(&start).unwrap_or(0);
        c.records_replayed = self.replayed.remove(&start).unwrap_or(0);
        c.lost_journal += std::mem::take(&mut self.journal_lost);
        self.supplied.retain(|&s, _| s > start);
        self.interim.retain(|&s, _| s > start);
        self.replayed.retain(|&s, _| s > start);
        Some(c)
    }
}

/// Windows a count is kept for at most: those never reported (windows are not
/// reported, or their last chunk was never made) are forgotten, oldest first.
const KEEP_WINDOWS: usize = 64;

fn count(map: &mut BTreeMap<u64, u64>, window_start_ms: u64) {
    *map.entry(window_start_ms).or_default() += 1;
    if map.len() > KEEP_WINDOWS {
        map.pop_first();
    }
}
