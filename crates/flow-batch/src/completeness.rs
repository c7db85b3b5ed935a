//! How complete a window's records are: what the kernel saw close, what reached the
//! batcher, and what was lost on the way, by reason.

use serde::{Deserialize, Serialize};

/// The completeness of one window on one host, carried by the window's last chunk.
///
/// The kernel counts every TCP close it sees before it reserves room for the record,
/// in per-CPU buckets by the close's window, so that for a window
/// `closes_seen == records_emitted + lost_ring_full` holds exactly. The other losses
/// happen after the kernel: `lost_spool` counts records of the window the sink
/// dropped, `lost_journal` damaged stretches of a crashed earlier run's journal.
/// `lost_recursion` is a loose upper bound of closes the kernel skipped on both
/// attachments of the program (no program ran, so they are not in `closes_seen`).
/// [`records_expected`](Completeness::records_expected) is what a collector should
/// receive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Completeness {
    /// TCP closes the kernel program saw whose close falls in the window.
    pub closes_seen: u64,
    /// Final records the kernel program wrote to the ring buffer for those closes
    /// (and user space read).
    pub records_emitted: u64,
    /// Closes whose record found the ring buffer full.
    pub lost_ring_full: u64,
    /// Recursion misses of the backup attachment during the window: a loose upper
    /// bound of the state changes (closes among them) both attachments missed; most
    /// are events the primary attachment handled.
    pub lost_recursion: u64,
    /// Damaged stretches of a crashed earlier run's journal that the recovery skipped
    /// (each held at least one entry: a record, an intent or a done mark; not a count
    /// of records); reported in the first window after the restart, because their own
    /// window could not be read. Records the crashed run read but had not journaled
    /// yet are in no count.
    pub lost_journal: u64,
    /// Records of earlier chunks of this window that the sink dropped before they
    /// were delivered (a full spool or disk, a full in-memory queue), as far as known
    /// when the window's last chunk was encoded: drops after that, and drops before a
    /// restart, are not included (the sink counts them).
    pub lost_spool: u64,
    /// Interim records sent in this window's chunks (those of the window's own
    /// snapshot, and any a crashed run's journal gave back).
    pub interim_records: u64,
    /// Final records of an earlier run of this exporter that its journal gave back
    /// after a crash (read then, in no delivered chunk) and that went out in this
    /// window's chunks: their own windows had closed. They are in no other count of
    /// this window.
    pub records_replayed: u64,
    /// Whether the exporter was capturing for the whole window (false for the windows
    /// in which it started or stopped).
    pub running_whole_window: bool,
}

impl Completeness {
    /// Whether the kernel's numbers add up: every close seen was emitted or counted
    /// lost in the ring.
    pub fn adds_up(&self) -> bool {
        self.closes_seen == self.records_emitted.saturating_add(self.lost_ring_full)
    }

    /// Records (final and interim) the window's chunks should bring to a collector:
    /// the final records emitted, the interim records, and those a crashed run's
    /// journal gave back, less what the sink dropped (`lost_spool` counts records of
    /// both kinds). `lost_journal` counts records of that crashed run, in no count of
    /// this window.
    pub fn records_expected(&self) -> u64 {
        self.records_emitted
            .saturating_add(self.interim_records)
            .saturating_add(self.records_replayed)
            .saturating_sub(self.lost_spool)
    }
}
