//! How the journal is configured, and what it counts.

use std::time::Duration;

use super::format::{ENTRY_HEAD_LEN, HEADER_LEN, MAX_ENTRY_LEN};

/// Default longest time between two syncs of the journal: 1 s.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Default size at which the active segment is closed and a new one started: 16 MiB.
pub const DEFAULT_SEGMENT_MAX_BYTES: u64 = 16 << 20;
/// Largest segment size in force: a larger
/// [`segment_max_bytes`](JournalConfig::segment_max_bytes) counts as 1 GiB (a record's
/// position in its segment is a 32-bit offset).
pub const SEGMENT_MAX_BYTES_LIMIT: u64 = 1 << 30;
/// What [`RecordJournal::append_tagged`](super::RecordJournal::append_tagged) returns for a record it did not journal
/// (while the journal cannot write): a tag that names no position. Give it to the
/// batcher like any other tag; [`RecordJournal::begin_chunk`](super::RecordJournal::begin_chunk) skips it.
pub const NOT_JOURNALED: u64 = u64::MAX - 1;

/// Settings of a [`RecordJournal`](super::RecordJournal).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct JournalConfig {
    /// Longest time appended records may sit unsynced: what a crash can lose. Also how
    /// often a journal that cannot write tries again.
    /// Default [`DEFAULT_SYNC_INTERVAL`].
    pub sync_interval: Duration,
    /// Size at which a new segment is started. Default [`DEFAULT_SEGMENT_MAX_BYTES`],
    /// at most [`SEGMENT_MAX_BYTES_LIMIT`] in effect.
    pub segment_max_bytes: u64,
}

impl Default for JournalConfig {
    fn default() -> JournalConfig {
        JournalConfig {
            sync_interval: DEFAULT_SYNC_INTERVAL,
            segment_max_bytes: DEFAULT_SEGMENT_MAX_BYTES,
        }
    }
}

impl JournalConfig {
    /// Sets [`sync_interval`](JournalConfig::sync_interval).
    pub fn with_sync_interval(mut self, d: Duration) -> JournalConfig {
        self.sync_interval = d;
        self
    }

    /// Sets [`segment_max_bytes`](JournalConfig::segment_max_bytes).
    pub fn with_segment_max_bytes(mut self, bytes: u64) -> JournalConfig {
        self.segment_max_bytes = bytes;
        self
    }

    /// The segment size in force: `segment_max_bytes`, at most
    /// [`SEGMENT_MAX_BYTES_LIMIT`].
    pub(super) fn segment_limit(&self) -> u64 {
        self.segment_max_bytes.min(SEGMENT_MAX_BYTES_LIMIT)
    }

    /// The largest segment file the start-up scan reads: the larger of the segment
    /// size in force and the default one (so that segments written before the setting
    /// was lowered are still read), plus one entry of the largest size accepted and the
    /// header. A segment never legitimately exceeds it: a new one is started before a
    /// record is written once the active one reaches the segment size, so a segment
    /// ends at most one entry past it. A larger file is set aside unread.
    pub fn segment_read_limit(&self) -> u64 {
        self.segment_limit().max(DEFAULT_SEGMENT_MAX_BYTES)
            + u64::from(MAX_ENTRY_LEN)
            + (ENTRY_HEAD_LEN + HEADER_LEN) as u64
    }
}

/// What a journal has done, and what it holds now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JournalCounters {
    /// Records appended (recovered ones re-journaled included).
    pub records_appended: u64,
    /// Bytes written to segments.
    pub bytes_written: u64,
    /// `fdatasync` calls.
    pub syncs: u64,
    /// Intents written ([`RecordJournal::begin_chunk`](super::RecordJournal::begin_chunk), and recovered chunks).
    pub chunks_begun: u64,
    /// Done marks written ([`RecordJournal::end_chunk`](super::RecordJournal::end_chunk)).
    pub chunks_ended: u64,
    /// Records of a chunk that were never appended (not journaled, so not
    /// recoverable).
    pub records_unmatched: u64,
    /// Segments created.
    pub segments_created: u64,
    /// Segments deleted because everything in them was done (or superseded).
    pub segments_deleted: u64,
    /// Records handed back for re-batching when the journal was opened.
    pub records_recovered: u64,
    /// Chunks handed back for re-delivery when the journal was opened.
    pub chunks_recovered: u64,
    /// Bytes of segments that held no intact entry and were skipped when the journal
    /// was opened: the incomplete last entry a crash during a write leaves (normal),
    /// and the bad stretches of damaged segments.
    pub bytes_discarded: u64,
    /// Always 0: kept for compatibility. A segment with a bad header is no longer
    /// ignored; see [`damaged_segments`](JournalCounters::damaged_segments).
    pub segments_discarded: u64,
    /// Segments found damaged when the journal was opened (a bad header, or bad bytes
    /// followed by intact entries): their intact entries were recovered, and the
    /// segment was set aside in `damaged/`.
    pub damaged_segments: u64,
    /// Bad stretches skipped inside damaged segments when the journal was opened; each
    /// lost at least one entry (a record, an intent or a done mark).
    pub bad_entries: u64,
    /// Entries under a segment's name that were no segment of ours (a directory, a
    /// FIFO or device, a symbolic link, a file that cannot be read or is larger than
    /// [`JournalConfig::segment_read_limit`]) and were set aside in `damaged/` unread,
    /// never followed or deleted. One that could not be moved is not counted (it stays
    /// in place, unread, with a warning).
    pub entries_set_aside: u64,
    /// Failed writes, `fdatasync`s and segment creations (a full disk, a quota, an I/O
    /// error), retries while not journaling included, and failed `fsync`s of the
    /// journal directory at open.
    pub write_failures: u64,
    /// Records appended while the journal could not write: handed on to the batcher,
    /// but not journaled, so a crash loses them until they are in a delivered chunk.
    pub records_not_journaled: u64,
    /// Times the journal wrote again after a failure.
    pub resumed: u64,
    /// Gauge: 1 while the journal cannot write (records are not journaled), else 0.
    pub degraded: u64,
    /// Gauge: segment files now.
    pub segments: u64,
    /// Gauge: records appended and not yet in a done chunk.
    pub live_records: u64,
    /// Gauge: records appended and not yet in any chunk.
    pub pending_records: u64,
    /// Gauge: chunks begun and not yet ended.
    pub open_chunks: u64,
}
