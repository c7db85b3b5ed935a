//! Window completeness, sans-IO: for every exporter window, how many records the
//! exporter's kernel program saw close, emitted and lost (the [`Completeness`] its
//! last chunk carries), against how many the collector received.
//!
//! A window is one exporter run's (`host`, `instance`) batch window: its chunks share
//! the header's window and are numbered from 0, and the last one (`last`, numbered
//! `n - 1` for a window of `n` chunks) carries the [`Completeness`]. The
//! [`WindowTracker`] counts the final and interim records of every chunk of a window
//! as it arrives, and reports the window once:
//!
//! - at once, when the last chunk and every chunk before it have arrived
//!   ([`WindowStatus::AllChunks`]);
//! - when the last chunk arrived but some chunk before it did not, at the last
//!   chunk's arrival plus the grace ([`WindowStatus::ChunksMissing`]);
//! - when the last chunk never arrived, at the grace after the window's end or its
//!   latest chunk's arrival, whichever is later ([`WindowStatus::LastChunkMissing`];
//!   an exporter killed mid-window, a last chunk dropped from its spool).
//!
//! A window whose last chunk arrived without a completeness (an exporter speaking
//! wire format 1) is not reported. Chunks of a window already reported are counted
//! ([`CompletenessStats::late_chunks`]) and are in no report; the reported window is
//! remembered for [`CompletenessConfig::remember`], after which a chunk of it starts
//! a new window (reported as [`WindowStatus::LastChunkMissing`]).
//!
//! # Durable, once
//!
//! A report is written to the output like a flow, under a key of its own: the first
//! chunk the collector received of the window stores one more output slot than it
//! has records (its ledger entry counts `records + 1`), and the report is that
//! slot: `(batch ID of that chunk, its record count)`. So the ledger keeps the chunk
//! until the report is written and committed, a crash before that replays it, and a
//! report written before a crash is not written again (the checkpoint, or the
//! output read back past it, says so). A window whose last chunk came without a
//! completeness resolves its slot without writing anything.
//!
//! After a crash the ledger replays its chunks in arrival order with their arrival
//! times, and the tracker is rebuilt from them: every chunk is counted once (the
//! ledger stores a batch ID once), a window whose report was written before the crash
//! is followed to its end without being reported or counted again, and a window
//! whose first replayed chunk has no slot is taken as reported (its report went out
//! under an earlier chunk, pruned since).
//!
//! # Memory
//!
//! One entry per window that is open (waiting for chunks) or remembered as reported:
//! a few hundred bytes each (two table slots, the host's name twice, and while open
//! its counts), at most [`CompletenessConfig::max_windows`]. Above the cap
//! the oldest remembered windows are forgotten first, then the open windows nearest
//! their deadline are reported early (counted in
//! [`CompletenessStats::windows_evicted`]). A fleet of 1,000 exporters with 1-minute
//! windows keeps about 60,000 windows remembered for the default hour.

mod tracker;

#[cfg(test)]
mod tests;

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use flow_batch::{
    Completeness, Window,
    wire::{BatchId, InstanceId},
};

pub use tracker::WindowTracker;

/// Settings of a [`WindowTracker`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompletenessConfig {
    /// How long a window waits for its missing chunks: after its last chunk arrived,
    /// or, without it, after the later of the window's end and its latest chunk's
    /// arrival (`--window-grace`, default 10 minutes).
    pub grace: Duration,
    /// How long a reported window is remembered, so that a late chunk of it is
    /// counted as late rather than starting a new window (default 1 hour).
    pub remember: Duration,
    /// Most windows tracked at once, open and remembered (default 1,000,000).
    pub max_windows: usize,
}

impl Default for CompletenessConfig {
    fn default() -> CompletenessConfig {
        CompletenessConfig {
            grace: Duration::from_secs(600),
            remember: Duration::from_secs(3600),
            max_windows: 1_000_000,
        }
    }
}

impl CompletenessConfig {
    /// Sets [`grace`](CompletenessConfig::grace).
    pub fn with_grace(mut self, grace: Duration) -> CompletenessConfig {
        self.grace = grace;
        self
    }

    /// Sets [`remember`](CompletenessConfig::remember).
    pub fn with_remember(mut self, remember: Duration) -> CompletenessConfig {
        self.remember = remember;
        self
    }

    /// Sets [`max_windows`](CompletenessConfig::max_windows) (at least 1).
    pub fn with_max_windows(mut self, max: usize) -> CompletenessConfig {
        self.max_windows = max.max(1);
        self
    }
}

/// How much of a window arrived when it was reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WindowStatus {
    /// The last chunk, with its completeness, and every chunk before it.
    AllChunks,
    /// The last chunk, with its completeness, but not every chunk before it within
    /// the grace.
    ChunksMissing,
    /// Not the last chunk, within the grace: nothing is known of the window's
    /// completeness.
    LastChunkMissing,
}

impl WindowStatus {
    /// Every status, in a fixed order (for metrics).
    pub const ALL: [WindowStatus; 3] = [
        WindowStatus::AllChunks,
        WindowStatus::ChunksMissing,
        WindowStatus::LastChunkMissing,
    ];

    /// The name in the output: `all_chunks`, `chunks_missing`, `last_chunk_missing`.
    pub fn as_str(self) -> &'static str {
        match self {
            WindowStatus::AllChunks => "all_chunks",
            WindowStatus::ChunksMissing => "chunks_missing",
            WindowStatus::LastChunkMissing => "last_chunk_missing",
        }
    }

    /// Its position in [`ALL`](WindowStatus::ALL).
    pub fn index(self) -> usize {
        match self {
            WindowStatus::AllChunks => 0,
            WindowStatus::ChunksMissing => 1,
            WindowStatus::LastChunkMissing => 2,
        }
    }
}

/// One exporter window, reported: what the exporter said of it and what arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WindowReport {
    /// The report's key, with [`record_index`](WindowReport::record_index): the first
    /// chunk of the window the collector received (its `host` is the host ID).
    pub batch: Arc<BatchId>,
    /// The report's slot in that chunk: the chunk's record count.
    pub record_index: u32,
    /// The exporter run.
    pub instance: InstanceId,
    /// The window.
    pub window: Window,
    /// How much of it arrived.
    pub status: WindowStatus,
    /// What the exporter counted (`None` when the last chunk did not arrive).
    pub completeness: Option<Completeness>,
    /// Chunks the window had: the last chunk's index plus one (`None` without it).
    pub chunks_expected: Option<u32>,
    /// Chunks of the window received.
    pub chunks_received: u32,
    /// Final records in the window's chunks received.
    pub records_received: u64,
    /// Interim records in the window's chunks received.
    pub interim_records_received: u64,
}

impl WindowReport {
    /// The host ID of the exporter.
    pub fn host_id(&self) -> &str {
        &self.batch.host
    }

    /// Records (final and interim) that should have arrived: the final records
    /// emitted, the interim records and those replayed from a crashed run's journal,
    /// less what the exporter's sink dropped ([`Completeness::records_expected`]);
    /// `None` without the last chunk.
    pub fn records_expected(&self) -> Option<u64> {
        self.completeness.map(|c| c.records_expected())
    }

    /// Whether the window's numbers add up: the last chunk arrived, every close the
    /// kernel saw was emitted or counted lost in the ring
    /// (`closes_seen == records_emitted + lost_ring_full`), and the records received
    /// (final and interim) are exactly those expected
    /// (`records_received + interim_records_received == records_emitted +
    /// interim_records + records_replayed - lost_spool`).
    pub fn adds_up(&self) -> bool {
        self.completeness.is_some_and(|c| {
            c.adds_up()
                && self.records_received + self.interim_records_received == c.records_expected()
        })
    }

    /// The window's start.
    pub fn window_start(&self) -> SystemTime {
        self.window.start()
    }

    /// The window's end.
    pub fn window_end(&self) -> SystemTime {
        self.window.end()
    }
}

/// What a [`WindowTracker`] has reported and holds. The sums are over the reports
/// made since start (a report written before a restart is not counted again).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompletenessStats {
    /// Windows reported, by [`WindowStatus::index`].
    pub windows: [u64; WindowStatus::ALL.len()],
    /// Windows reported whose numbers did not add up ([`WindowReport::adds_up`]
    /// false; every [`WindowStatus::LastChunkMissing`] among them).
    pub windows_not_adding_up: u64,
    /// Open windows closed early (reported with what had arrived) because the
    /// tracker was full.
    pub windows_evicted: u64,
    /// Sum of [`Completeness::closes_seen`].
    pub closes_seen: u64,
    /// Sum of [`Completeness::records_emitted`].
    pub records_emitted: u64,
    /// Final records received, in the windows reported.
    pub records_received: u64,
    /// Sum of [`Completeness::lost_ring_full`].
    pub lost_ring_full: u64,
    /// Sum of [`Completeness::lost_recursion`] (an upper bound of closes missed).
    pub lost_recursion: u64,
    /// Sum of [`Completeness::lost_journal`].
    pub lost_journal: u64,
    /// Sum of [`Completeness::lost_spool`].
    pub lost_spool: u64,
    /// Sum of [`Completeness::interim_records`].
    pub interim_records: u64,
    /// Chunks that arrived for a window already reported: their records are in no
    /// report.
    pub late_chunks: u64,
    /// Windows waiting for chunks now.
    pub windows_open: u64,
    /// Windows remembered as reported now.
    pub windows_remembered: u64,
}

impl CompletenessStats {
    /// Windows reported with `status`.
    pub fn windows_for(&self, status: WindowStatus) -> u64 {
        self.windows[status.index()]
    }
}

/// One chunk, as the tracker needs it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WindowChunk {
    /// Its batch ID (host, exporter run, sequence).
    pub batch: Arc<BatchId>,
    /// Its window.
    pub window: Window,
    /// Its index within the window.
    pub chunk_index: u32,
    /// Whether it is the window's last.
    pub last: bool,
    /// The window's completeness (the last chunk's, from wire format 2 on).
    pub completeness: Option<Completeness>,
    /// Its final records.
    pub final_records: u64,
    /// Its interim records.
    pub interim_records: u64,
}

impl WindowChunk {
    /// A chunk of `window` whose batch ID is `batch`, with its records' counts.
    pub fn new(
        batch: Arc<BatchId>,
        window: Window,
        chunk_index: u32,
        last: bool,
        completeness: Option<Completeness>,
        records: &[flow_record::FlowRecord],
    ) -> WindowChunk {
        let interim = records
            .iter()
            .filter(|r| r.record_kind == flow_record::RecordKind::Interim)
            .count() as u64;
        WindowChunk {
            batch,
            window,
            chunk_index,
            last,
            completeness,
            final_records: records.len() as u64 - interim,
            interim_records: interim,
        }
    }

    /// The number of records.
    pub fn records(&self) -> u64 {
        self.final_records + self.interim_records
    }
}

/// Whether a chunk holds its window's report slot (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// It does not.
    None,
    /// It does, at index [`WindowChunk::records`], and the report has not been
    /// written.
    Unwritten,
    /// It does, and the report was written before a restart (replay).
    Written,
}
