//! The record journal: a write-ahead log of captured records, so that `kill -9` (or a
//! power cut) loses at most about one sync interval of them.
//!
//! # How an exporter uses it
//!
//! [`PipelineCore`](crate::pipeline::core::PipelineCore) does all of this; the steps
//! for a pipeline of one's own:
//!
//! ```text
//! open:    (journal, recovered) = RecordJournal::open(dir, host, instance, config)
//!          hand every recovered.chunks[i] to FlowSink::replay under its OLD batch ID,
//!          then end_chunk(its id)
//!          push every recovered.records[i] into the new batcher (already re-journaled)
//! capture: at = journal.append_tagged(&record); batcher.push_tagged(record, at, now)
//! timer:   journal.sync_if_due(now)            (at least every sync_interval)
//! chunk:   id = journal.begin_chunk(&chunk)    (durable before the chunk leaves)
//!          sink.accept(&chunk, &id).await      (delivered or kept durably)
//!          journal.end_chunk(&id)              (its records may now be forgotten;
//!          on Accepted::InMemory only once FlowSink::take_settled names it)
//! ```
//!
//! # Why intents, and why a recovered chunk keeps its batch ID
//!
//! A record is covered once a chunk holding it has been delivered or spooled. But the
//! batcher decides which window a record lands in (late and future records move) and
//! splits big windows into several chunks, so "everything before window W" is not a
//! set the journal can name. Instead, [`begin_chunk`](RecordJournal::begin_chunk)
//! writes an **intent**: the chunk's batch ID, window, index, the journal positions
//! of its records and its [completeness](flow_batch::Completeness) (a window's last
//! chunk), and `fsync`s it *before* the chunk is handed to a sink.
//! [`end_chunk`](RecordJournal::end_chunk) writes a **done** mark after. After a crash:
//!
//! - a record in no intent was never sent: it comes back in
//!   [`Recovered::records`], to be batched again under the new exporter instance;
//! - an intent without a done mark may or may not have reached the collector: it comes
//!   back in [`Recovered::chunks`] as the *same* chunk (same records, window, index,
//!   host, instance, sequence and completeness), so it encodes to the same batch ID
//!   and the collector drops it if it already has it;
//! - an intent with its done mark is forgotten.
//!
//! So nothing is lost but what had not been synced, and nothing is duplicated under a
//! new batch ID. A chunk's records' positions come with the chunk when they were
//! appended with [`RecordJournal::append_tagged`] and batched with
//! [`MinuteBatcher::push_tagged`](flow_batch::MinuteBatcher::push_tagged) (the
//! exporter's path). Otherwise the journal finds them by content (a 64-bit fingerprint
//! of each record's fields, in append order): records that agree on every field it
//! covers are interchangeable, so matching by content is exact; it keeps, in memory, a
//! fingerprint and a position for each such record not yet in an intent (bounded by
//! the batcher's open windows), and per chunk in flight its positions.
//!
//! # Files
//!
//! `DIR/<segment, 20 digits>.wal`, mode `0600` in a `0700` directory; a new segment
//! when the active one passes `segment_max_bytes` or when every record and chunk in it
//! is done. A segment starts with `FXWJ`, a `u16` version (3), a `u16` of flags and a
//! `u64`: without flags, "supersedes below" (segments numbered below it are obsolete: a
//! recovery wrote their live content into this one); with flag 1, the first segment of
//! the recovery that continued into this one (it counts only once that first segment
//! has its final name). Then entries: `u32` body length, `u32` CRC-32C of the body, the
//! body (a kind byte: 1 record, 2 intent, 3 done; then its bincode 1 encoding with
//! fixed little-endian integers: for a record, the wire format's record encoding,
//! version 2; an intent ends with the chunk's completeness, an option: a `0` byte, or
//! a `1` byte and its eight `u64` counts and a `bool`). All integers are
//! little-endian. A record's position is its segment number and its byte offset in the
//! segment. A segment is deleted once every record in it belongs to a done chunk.
//!
//! Segments of older releases are still read: version 2 (positions are byte offsets,
//! records in wire format 1) and version 1 (positions are ordinals, records in wire
//! format 1; intents without completeness). Their records come back as final records
//! without flow ID or process, their chunks without completeness, and a recovery
//! writes them into version 3 segments in the current encoding.
//!
//! # What the start-up scan tolerates
//!
//! - A segment that ends in an incomplete entry (a crash during a write; the normal
//!   case): the incomplete entry is skipped and counted
//!   ([`bytes_discarded`](JournalCounters::bytes_discarded)), quietly.
//! - A damaged segment (bad bytes between intact entries, or a bad header): every
//!   entry whose length is sane, whose checksum matches and that decodes is kept; after
//!   bad bytes, reading starts again at the next position where such an entry begins
//!   (followed by another one, or ending the segment). The bad bytes are counted
//!   ([`bad_entries`](JournalCounters::bad_entries), `bytes_discarded`), the segment
//!   too ([`damaged_segments`](JournalCounters::damaged_segments)), and once its
//!   intact content is journaled again it is moved into `DIR/damaged/`, not deleted.
//!   Reading one segment checksums at most eight times its size (at least 16 MiB):
//!   a segment crafted to make that search slow has the rest of it counted as one
//!   bad stretch once that is spent.
//! - Anything else under a segment's name (a directory, a FIFO or device, a symbolic
//!   link, a file that cannot be opened or read, a file larger than
//!   [`JournalConfig::segment_read_limit`], a segment number above 2^31 - 1): never
//!   followed, never blocked on, never read past the limit, moved into `DIR/damaged/`
//!   with a warning and counted
//!   ([`entries_set_aside`](JournalCounters::entries_set_aside)) once moved (an entry
//!   that cannot be moved stays, unread, with a warning). A `DIR/damaged` that is not a
//!   directory (a link, a file, a FIFO) is renamed aside to `DIR/damaged.not-ours`,
//!   never followed, and a real one is made.
//! - A failed `fsync` of the directory is logged and counted
//!   ([`write_failures`](JournalCounters::write_failures)), not fatal; what it would
//!   have made durable is left for the next start-up to finish.
//! - A segment that cannot be read for a reason about the process, not the file
//!   (`EMFILE`, `ENFILE`, `ENOMEM`; `EINTR` is retried) fails the open: it is not set
//!   aside, and a later start reads it.
//!
//! # When the journal cannot write
//!
//! A failed write, `fdatasync` or segment creation (`ENOSPC`, `EDQUOT`, `EIO`, ...)
//! does not fail [`append`](RecordJournal::append),
//! [`sync_if_due`](RecordJournal::sync_if_due), [`begin_chunk`](RecordJournal::begin_chunk)
//! or [`end_chunk`](RecordJournal::end_chunk): capture and delivery go on. The journal
//! logs one warning (a crash now loses the records not yet in a delivered chunk), stops
//! journaling records (counted in
//! [`records_not_journaled`](JournalCounters::records_not_journaled); the
//! [`degraded`](JournalCounters::degraded) gauge is 1) and keeps in memory the intents
//! and done marks it could not make durable. Every `sync_interval` it tries a fresh
//! segment; once that works it writes those intents and done marks, syncs, logs that
//! it journals again, and goes on. So after a resume:
//!
//! - a chunk delivered while degraded does not come back after a later crash (its done
//!   mark, and its intent if need be, were written on resume);
//! - records appended while degraded are in no segment: a crash loses them unless
//!   their chunk was delivered (nothing can bring them back);
//! - records appended in the sync interval before the failure are in the journal only
//!   if the failed segment's buffer reached the disk (it is tried once more on resume).
//!
//! When the recovery itself cannot be written at [`open`](RecordJournal::open), the
//! journal opens all the same in that state: the old segments stay as they are and
//! serve as this run's journal (records are found by their old positions), until they
//! are settled and deleted.

mod chunks;
mod config;
mod degraded;
mod error;
mod format;
mod matching;
mod recover;
mod recovered;
mod scan;
mod write;

pub use self::{
    config::{
        DEFAULT_SEGMENT_MAX_BYTES, DEFAULT_SYNC_INTERVAL, JournalConfig, JournalCounters,
        NOT_JOURNALED, SEGMENT_MAX_BYTES_LIMIT,
    },
    error::JournalError,
    recovered::{Recovered, RecoveredChunk},
};

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    fs::File,
    io::{BufWriter, Write},
    path::Path,
    time::Instant,
};

use flow_batch::{
    Chunk, NO_TAG, Window,
    wire::{BatchId, InstanceId, encode_record},
};
use flow_record::FlowRecord;

use self::{
    format::{DoneBody, IntentBody, KIND_RECORD, Lsn, OldContent, lsn_segment},
    matching::{PendingMap, fingerprint},
    scan::{segment_name, set_aside, tmp_name},
    write::{no_segment, start_segment},
};
use flow_sink::{error_chain, state_dir::StateDir};

#[derive(Debug, Default)]
struct Segment {
    /// Found damaged at start (and kept as is): set aside, not deleted, once settled.
    damaged: bool,
    /// Records in it not yet in a done chunk.
    live: u64,
    /// Intents written in it and not yet done.
    open_intents: u64,
}

#[derive(Debug)]
struct OpenIntent {
    /// The segment its intent was written in; `None` while it waits in the backlog.
    segment: Option<u64>,
    /// Records covered, per segment they live in.
    per_segment: Vec<(u64, u64)>,
}

/// Positions of the not-yet-chunked records with one content hash: almost always one.
#[derive(Debug)]
enum Positions {
    One(Lsn),
    Many(VecDeque<Lsn>),
}

#[derive(Debug)]
struct Active {
    number: u64,
    /// Its name now (the `.tmp` one while a recovery writes it).
    name: String,
    /// `None` only before the first segment exists (a journal that could not write
    /// from the start).
    writer: Option<BufWriter<File>>,
    bytes: u64,
    /// Nothing appended since creation.
    empty: bool,
}

/// An intent or done mark that is not known to be durable: written since the last
/// successful sync, or not written at all because the journal could not write. Such
/// entries are written (again) when the journal writes again; both kinds are
/// idempotent.
#[derive(Debug)]
enum Mark {
    Intent(BatchId, IntentBody),
    Done(DoneBody),
}

/// Why the journal does not write, and when it tries again.
#[derive(Debug)]
struct Degraded {
    since: Instant,
    retry_at: Instant,
    not_journaled_before: u64,
}

/// The write-ahead log of captured records. See the [module docs](self) for the
/// protocol and the file format.
///
/// A synchronous type: `fsync`s happen in [`sync`](RecordJournal::sync),
/// [`sync_if_due`](RecordJournal::sync_if_due) and
/// [`begin_chunk`](RecordJournal::begin_chunk) (about once a second and once per
/// chunk). An async caller may call it directly (each call blocks for at most one
/// `fdatasync`) or from `spawn_blocking`.
///
/// Write failures (a full disk, a quota, an I/O error) do not fail its methods: the
/// journal stops journaling, says so once, counts what it does not journal, and tries
/// again every `sync_interval`. See the module docs, "When the journal cannot write".
#[derive(Debug)]
pub struct RecordJournal {
    dir: StateDir,
    config: JournalConfig,
    host: String,
    instance: InstanceId,
    active: Active,
    segments: BTreeMap<u64, Segment>,
    pending: PendingMap,
    pending_count: u64,
    intents: HashMap<BatchId, OpenIntent>,
    /// Intents and done marks not known to be durable (see [`Mark`]).
    unsynced: Vec<Mark>,
    /// Intents and done marks to write once the journal writes again.
    backlog: Vec<Mark>,
    degraded: Option<Degraded>,
    /// While open() writes a recovery: its first segment, for the headers of the
    /// segments it continues into.
    recovering: Option<u64>,
    /// The recovery's rename into place may not be durable (a directory `fsync`
    /// failed): the old segments it superseded are deleted only after one succeeds.
    rename_unsynced: bool,
    dirty: bool,
    last_sync: Option<Instant>,
    scratch: Vec<u8>,
    counters: JournalCounters,
}

impl RecordJournal {
    /// Opens the journal in `dir` (created if missing, mode `0700`) for an exporter run
    /// with this `host` identity and `instance` (the same the run's [`ChunkEncoder`](flow_batch::wire::ChunkEncoder)
    /// uses), and recovers what a previous run left.
    ///
    /// What is recovered is first rewritten into new segments (so a crash during
    /// recovery loses nothing either) and the old segments are deleted, or set aside in
    /// `dir/damaged/` when they were damaged; entries under a segment's name that are no
    /// segment of ours are set aside unread. The [`Recovered`] value says what the
    /// caller must do with it.
    ///
    /// Fails on an invalid `config`, when `dir` cannot be opened or listed, or when a
    /// segment cannot be read for lack of file descriptors or memory (`EMFILE`,
    /// `ENFILE`, `ENOMEM`: setting it aside would lose it). When the recovery cannot be
    /// written (a full disk), the journal opens without journaling (see the module
    /// docs), the old segments left as they are; a failed directory `fsync` is counted
    /// in [`write_failures`](JournalCounters::write_failures), not an error.
    pub fn open(
        dir: impl AsRef<Path>,
        host: impl Into<String>,
        instance: InstanceId,
        config: JournalConfig,
    ) -> Result<(RecordJournal, Recovered), JournalError> {
        let path = dir.as_ref();
        if config.sync_interval.is_zero() {
            return Err(JournalError::InvalidConfig {
                key: "journal sync_interval",
                value: format!("{:?}", config.sync_interval),
                reason: "must be more than zero",
            });
        }
        if config.segment_max_bytes < 4096 {
            return Err(JournalError::InvalidConfig {
                key: "journal segment_max_bytes",
                value: config.segment_max_bytes.to_string(),
                reason: "must be at least 4096",
            });
        }
        let dir = StateDir::open(path).map_err(|e| JournalError::io("open directory", path, e))?;
        let host = host.into();
        let mut counters = JournalCounters::default();
        let old = scan::scan(&dir, config.segment_read_limit(), &mut counters)?;
        let first = old.last_number + 1;
        let mut journal = RecordJournal::new(dir, config, host, instance, counters, first - 1);
        let recovered = match journal.recover_into_new_segments(first, old.content) {
            Ok(recovered) => {
                journal.remove_old_segments(old.old);
                recovered
            }
            Err(e @ JournalError::Io { .. }) => {
                // The disk is full (or failing) at start: run without journaling
                // rather than not at all, and leave what the previous run journaled
                // where it is.
                let (dir, config, host, counters, last) = journal.abandon_recovery(first);
                let old = scan::scan(&dir, config.segment_read_limit(), &mut Default::default())?;
                let last = last.max(old.last_number);
                journal = RecordJournal::new(dir, config, host, instance, counters, last);
                journal.recover_in_place(old, &e)?
            }
            Err(e) => return Err(e),
        };
        journal.counters.records_recovered = recovered.records.len() as u64;
        journal.counters.chunks_recovered = recovered.chunks.len() as u64;
        if !recovered.is_empty() {
            tracing::info!(
                dir = %journal.dir.path().display(),
                records = recovered.records.len(),
                chunks = recovered.chunks.len(),
                "recovered flow records from the journal of a previous run"
            );
        }
        Ok((journal, recovered))
    }

    /// A journal with no segment yet: `last` is the highest segment number in use.
    fn new(
        dir: StateDir,
        config: JournalConfig,
        host: String,
        instance: InstanceId,
        counters: JournalCounters,
        last: u64,
    ) -> RecordJournal {
        RecordJournal {
            dir,
            config,
            host,
            instance,
            active: Active {
                number: last,
                name: String::new(),
                writer: None,
                bytes: 0,
                empty: true,
            },
            segments: BTreeMap::new(),
            pending: PendingMap::default(),
            pending_count: 0,
            intents: HashMap::new(),
            unsynced: Vec::new(),
            backlog: Vec::new(),
            degraded: None,
            recovering: None,
            rename_unsynced: false,
            dirty: false,
            last_sync: None,
            scratch: Vec::with_capacity(512),
            counters,
        }
    }

    /// The journal directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The settings in force.
    pub fn config(&self) -> &JournalConfig {
        &self.config
    }

    /// A snapshot of the counters and gauges.
    pub fn counters(&self) -> JournalCounters {
        JournalCounters {
            segments: self.segments.len() as u64,
            live_records: self.segments.values().map(|s| s.live).sum(),
            pending_records: self.pending_count,
            open_chunks: self.intents.len() as u64,
            degraded: u64::from(self.degraded.is_some()),
            ..self.counters
        }
    }

    /// Whether the journal writes now: `false` after a write failure, until it writes
    /// again (it tries every `sync_interval`).
    pub fn is_journaling(&self) -> bool {
        self.degraded.is_none()
    }

    /// Appends a captured record (buffered: it is durable after the next sync).
    /// [`begin_chunk`](RecordJournal::begin_chunk) finds it again by its fields.
    ///
    /// Fails for a record the wire format cannot carry either (a time before the Unix
    /// epoch): such a record is not journaled. While the journal cannot write, the
    /// record is not journaled either, but that is counted
    /// ([`records_not_journaled`](JournalCounters::records_not_journaled)), not an
    /// error.
    pub fn append(&mut self, record: &FlowRecord) -> Result<(), JournalError> {
        let at = self.append_tagged(record)?;
        if at != NOT_JOURNALED {
            self.pending_count -= 1;
            self.add_pending(fingerprint(record), at);
        }
        Ok(())
    }

    /// Appends a captured record, as [`append`](RecordJournal::append), and returns
    /// its position in the journal, to be given as the record's tag to
    /// [`MinuteBatcher::push_tagged`](flow_batch::MinuteBatcher::push_tagged):
    /// [`begin_chunk`](RecordJournal::begin_chunk) then takes the chunk's records'
    /// positions from [`Chunk::tags`] instead of searching for each record.
    ///
    /// Returns [`NOT_JOURNALED`] for a record it could not journal (the journal cannot
    /// write): tag the record with it all the same.
    pub fn append_tagged(&mut self, record: &FlowRecord) -> Result<u64, JournalError> {
        if self.degraded.is_some() {
            self.counters.records_not_journaled += 1;
            return Ok(NOT_JOURNALED);
        }
        match self.write_record(record) {
            Ok(at) => {
                self.pending_count += 1;
                Ok(at)
            }
            Err(e @ JournalError::Encode { .. }) => Err(e),
            Err(e) => {
                self.fail(&e, Instant::now());
                self.counters.records_not_journaled += 1;
                Ok(NOT_JOURNALED)
            }
        }
    }

    /// Writes a record into the active segment, starting a new segment first when the
    /// active one is full: an error means the record was not written (a failed
    /// rotation after the write would leave a journaled record its caller believes
    /// lost, and send it twice after a restart).
    fn write_record(&mut self, record: &FlowRecord) -> Result<Lsn, JournalError> {
        self.rotate_if_full()?;
        self.scratch.clear();
        self.scratch.push(KIND_RECORD);
        // The wire format's record writer: the same bytes as bincode with `options()`,
        // written field by field.
        encode_record(record, &mut self.scratch).map_err(|source| JournalError::Encode {
            local: record.local,
            remote: record.remote,
            source,
        })?;
        self.write_scratch_record()
    }

    fn rotate_if_full(&mut self) -> Result<(), JournalError> {
        if self.active.bytes >= self.config.segment_limit() {
            self.rotate()?;
        }
        Ok(())
    }

    /// When [`sync_if_due`](RecordJournal::sync_if_due) will next sync (or, while the
    /// journal cannot write, next try to write again): `None` while nothing is waiting.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if let Some(d) = &self.degraded {
            return Some(d.retry_at);
        }
        if !self.dirty {
            return None;
        }
        self.last_sync.map(|t| t + self.config.sync_interval)
    }

    /// Syncs if something was appended and the last sync is at least `sync_interval`
    /// old at `now`. Returns whether it synced. Call it at least every
    /// `sync_interval` (on the exporter's timer, or after each batch of records).
    ///
    /// While the journal cannot write, tries to write again instead (at most once per
    /// `sync_interval`). A failure is not an error: see
    /// [`is_journaling`](RecordJournal::is_journaling).
    pub fn sync_if_due(&mut self, now: Instant) -> Result<bool, JournalError> {
        if self.degraded.is_some() {
            return Ok(self.try_resume(now));
        }
        let due = self.dirty
            && self
                .last_sync
                .is_none_or(|t| now.saturating_duration_since(t) >= self.config.sync_interval);
        if !due {
            return Ok(false);
        }
        match self.flush_and_sync(now) {
            Ok(()) => Ok(true),
            Err(e) => {
                self.fail(&e, now);
                Ok(false)
            }
        }
    }

    /// Writes out the buffer and `fdatasync`s the active segment now (while the journal
    /// cannot write: tries to write again, at most once per `sync_interval`). A failure
    /// is not an error: see [`is_journaling`](RecordJournal::is_journaling).
    pub fn sync(&mut self) -> Result<(), JournalError> {
        let now = Instant::now();
        if self.degraded.is_some() {
            self.try_resume(now);
        } else if let Err(e) = self.flush_and_sync(now) {
            self.fail(&e, now);
        }
        Ok(())
    }

    /// Flushes and `fdatasync`s the active segment; on success, every intent and done
    /// mark written is durable.
    fn flush_and_sync(&mut self, now: Instant) -> Result<(), JournalError> {
        let path = || self.dir.join(&self.active.name);
        let writer = self.active.writer.as_mut().ok_or_else(no_segment);
        let writer = writer.map_err(|e| JournalError::io("write", path(), e))?;
        writer
            .flush()
            .map_err(|e| JournalError::io("write", path(), e))?;
        writer
            .get_ref()
            .sync_data()
            .map_err(|e| JournalError::io("fdatasync", path(), e))?;
        self.counters.syncs += 1;
        self.dirty = false;
        self.last_sync = Some(now);
        self.unsynced.clear();
        Ok(())
    }
}

/// How many of `lsns` live in each segment, in order.
fn open_intent(segment: Option<u64>, lsns: &[Lsn]) -> OpenIntent {
    let mut per_segment: Vec<(u64, u64)> = Vec::new();
    for at in lsns {
        let segment = lsn_segment(*at);
        match per_segment.last_mut() {
            Some((s, n)) if *s == segment => *n += 1,
            _ => per_segment.push((segment, 1)),
        }
    }
    OpenIntent {
        segment,
        per_segment,
    }
}

#[cfg(test)]
mod tests {
    use super::format::{lsn, lsn_segment};

    #[test]
    fn lsn_round_trip() {
        let at = lsn(7, 42);
        assert_eq!(lsn_segment(at), 7);
        assert_eq!(at & 0xffff_ffff, 42);
    }
}
