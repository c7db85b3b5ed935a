//! What the core adds to a window's completeness (the source supplies the kernel's
//! counts): the interim records batched in it, and the journal's losses at recovery.

use std::collections::BTreeMap;

use flow_batch::{Completeness, Window};
use flow_record::{FlowRecord, RecordKind};

/// Completeness per window, from the source's counts to the window's last chunk.
#[derive(Debug, Default)]
pub(crate) struct CompletenessBook {
    /// Whether every window is reported (kept open without records, completeness
    /// asked for at its close).
    pub(crate) enabled: bool,
    /// The source's counts, by window start (ms), until the window's last chunk.
    supplied: BTreeMap<u64, Completeness>,
    /// Interim records batched, by the start (ms) of their `t_end`'s window.
    interim: BTreeMap<u64, u64>,
    /// Journal entries lost at recovery, not yet reported.
    journal_lost: u64,
    window_ms: u64,
}

impl CompletenessBook {
    pub(crate) fn new(window_ms: u64) -> CompletenessBook {
        CompletenessBook {
            window_ms: window_ms.max(1),
            ..CompletenessBook::default()
        }
    }

    /// Counts `record` if it is an interim one.
    pub(crate) fn saw(&mut self, record: &FlowRecord) {
        if self.enabled && record.record_kind == RecordKind::Interim {
            let ms = record
                .t_end
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            *self.interim.entry(ms - ms % self.window_ms).or_default() += 1;
        }
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
        c.lost_journal += std::mem::take(&mut self.journal_lost);
        self.supplied.retain(|&s, _| s > start);
        self.interim.retain(|&s, _| s > start);
        Some(c)
    }
}
