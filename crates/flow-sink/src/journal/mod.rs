//! The record journal: a write-ahead log of captured records, so that `kill -9` (or a
//! power cut) loses at most about one sync interval of them.
//!
//! # How an exporter uses it
//!
//! ```text
//! open:    (journal, recovered) = RecordJournal::open(dir, host, instance, config)
//!          deliver every recovered.chunks[i] with its OLD batch ID, then end_chunk(its id)
//!          push every recovered.records[i] into the new batcher (already re-journaled)
//! capture: journal.append(&record); batcher.push(record, now)
//! timer:   journal.sync_if_due(now)            (at least every sync_interval)
//! chunk:   id = journal.begin_chunk(&chunk)    (durable before the chunk leaves)
//!          sink.deliver(&chunk).await          (delivered or spooled)
//!          journal.end_chunk(&id)              (its records may now be forgotten)
//! ```
//!
//! # Why intents, and why a recovered chunk keeps its batch ID
//!
//! A record is covered once a chunk holding it has been delivered or spooled. But the
//! batcher decides which window a record lands in (late and future records move) and
//! splits big windows into several chunks, so "everything before window W" is not a
//! set the journal can name. Instead, [`begin_chunk`](RecordJournal::begin_chunk)
//! writes an **intent**: the chunk's batch ID, window, index and the journal positions
//! of its records, and `fsync`s it *before* the chunk is handed to a sink.
//! [`end_chunk`](RecordJournal::end_chunk) writes a **done** mark after. After a crash:
//!
//! - a record in no intent was never sent: it comes back in
//!   [`Recovered::records`], to be batched again under the new exporter instance;
//! - an intent without a done mark may or may not have reached the collector: it comes
//!   back in [`Recovered::chunks`] as the *same* chunk (same records, window, index,
//!   host, instance and sequence), so it encodes to the same batch ID and the
//!   collector drops it if it already has it;
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
//! `DIR/<segment, 20 digits>.wal`, a new segment when the active one passes
//! `segment_max_bytes` or when every record and chunk in it is done. A segment starts
//! with `FXWJ`, a `u16` version (1), two zero bytes and a `u64` "supersedes below":
//! segments numbered below it are obsolete (a recovery wrote their live content into
//! this one). Then entries: `u32` body length, `u32` CRC-32C of the body, the body
//! (a kind byte: 1 record, 2 intent, 3 done; then its bincode 1 encoding with fixed
//! little-endian integers). All integers are little-endian. A segment is deleted once
//! every record in it belongs to a done chunk. Reading stops at the first entry of a
//! segment that is cut short or fails its checksum (a torn write at a crash); the
//! bytes skipped are counted.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    fs::{self, File, OpenOptions},
    hash::{BuildHasherDefault, Hasher},
    io::{BufWriter, Write},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bincode::Options;
use flow_batch::{
    Chunk, NO_TAG, Window,
    wire::{BatchId, ChunkEncoder, InstanceId, encode_record},
};
use flow_capture::FlowRecord;
use serde::{Deserialize, Serialize};

use crate::{error::SinkError, spool::sync_dir};

/// Default longest time between two syncs of the journal: 1 s.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Default size at which the active segment is closed and a new one started: 16 MiB.
pub const DEFAULT_SEGMENT_MAX_BYTES: u64 = 16 << 20;

const MAGIC: [u8; 4] = *b"FXWJ";
const VERSION: u16 = 1;
const HEADER_LEN: usize = 16;
const ENTRY_HEAD_LEN: usize = 8;
const MAX_ENTRY_LEN: u32 = 64 << 20;
const SEGMENT_SUFFIX: &str = ".wal";
const SEGMENT_DIGITS: usize = 20;
const KIND_RECORD: u8 = 1;
const KIND_INTENT: u8 = 2;
const KIND_DONE: u8 = 3;

/// Settings of a [`RecordJournal`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct JournalConfig {
    /// Longest time appended records may sit unsynced: what a crash can lose.
    /// Default [`DEFAULT_SYNC_INTERVAL`].
    pub sync_interval: Duration,
    /// Size at which a new segment is started. Default [`DEFAULT_SEGMENT_MAX_BYTES`].
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
    /// Intents written ([`RecordJournal::begin_chunk`], and recovered chunks).
    pub chunks_begun: u64,
    /// Done marks written ([`RecordJournal::end_chunk`]).
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
    /// Bytes skipped at the end of segments because an entry was cut short or failed
    /// its checksum (a torn write at a crash).
    pub bytes_discarded: u64,
    /// Segments ignored because their header was unreadable.
    pub segments_discarded: u64,
    /// Gauge: segment files now.
    pub segments: u64,
    /// Gauge: records appended and not yet in a done chunk.
    pub live_records: u64,
    /// Gauge: records appended and not yet in any chunk.
    pub pending_records: u64,
    /// Gauge: chunks begun and not yet ended.
    pub open_chunks: u64,
}

/// A chunk a previous run had handed to a sink without knowing whether it arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveredChunk {
    /// The host identity it was encoded with.
    pub host: String,
    /// The exporter instance it was encoded with (the previous run's).
    pub instance: InstanceId,
    /// The chunk: same window, index, sequence, `last` and records as before.
    pub chunk: Chunk,
}

impl RecoveredChunk {
    /// Its batch ID: the one it had before the crash.
    pub fn batch_id(&self) -> BatchId {
        BatchId {
            host: self.host.clone(),
            instance: self.instance,
            sequence: self.chunk.sequence,
        }
    }

    /// Its frame, encoded under its original host and instance.
    pub fn encode(&self) -> Result<Vec<u8>, SinkError> {
        let encode = |source| SinkError::Encode {
            sequence: self.chunk.sequence,
            source,
        };
        ChunkEncoder::new(self.host.clone(), self.instance)
            .map_err(encode)?
            .encode_to_vec(&self.chunk)
            .map_err(encode)
    }
}

/// What [`RecordJournal::open`] found from a previous run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovered {
    /// Chunks to deliver again under their original batch ID, oldest first; call
    /// [`RecordJournal::end_chunk`] with each one's [`batch_id`](RecoveredChunk::batch_id)
    /// once delivered or spooled.
    pub chunks: Vec<RecoveredChunk>,
    /// Records that were in no chunk, in capture order, to push into the batcher
    /// again. They are already re-journaled: do not append them a second time.
    pub records: Vec<FlowRecord>,
}

impl Recovered {
    /// Whether nothing was recovered.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.records.is_empty()
    }
}

/// A position in the journal: segment number (high 32 bits) and record ordinal.
type Lsn = u64;

fn lsn(segment: u64, ordinal: u32) -> Lsn {
    (segment << 32) | u64::from(ordinal)
}

fn lsn_segment(lsn: Lsn) -> u64 {
    lsn >> 32
}

#[derive(Debug, Serialize, Deserialize)]
struct IntentBody {
    host: String,
    instance: u128,
    sequence: u64,
    window_start_ms: u64,
    window_end_ms: u64,
    index: u32,
    last: bool,
    lsns: Vec<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct DoneBody {
    host: String,
    instance: u128,
    sequence: u64,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    /// Records in it not yet in a done chunk.
    live: u64,
    /// Intents written in it and not yet done.
    open_intents: u64,
}

#[derive(Debug)]
struct OpenIntent {
    segment: u64,
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
    path: PathBuf,
    writer: BufWriter<File>,
    bytes: u64,
    next_ordinal: u32,
    /// Entries are settled: nothing appended since creation.
    empty: bool,
}

/// The write-ahead log of captured records. See the [module docs](self) for the
/// protocol and the file format.
///
/// A synchronous type: `fsync`s happen in [`sync`](RecordJournal::sync),
/// [`sync_if_due`](RecordJournal::sync_if_due) and
/// [`begin_chunk`](RecordJournal::begin_chunk) (about once a second and once per
/// chunk). An async caller may call it directly (each call blocks for at most one
/// `fdatasync`) or from `spawn_blocking`.
#[derive(Debug)]
pub struct RecordJournal {
    dir: PathBuf,
    config: JournalConfig,
    host: String,
    instance: InstanceId,
    active: Active,
    segments: BTreeMap<u64, Segment>,
    pending: PendingMap,
    pending_count: u64,
    intents: HashMap<BatchId, OpenIntent>,
    dirty: bool,
    last_sync: Option<Instant>,
    scratch: Vec<u8>,
    counters: JournalCounters,
}

fn options() -> impl Options + Copy {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
}

/// What a chunk's record is matched to its journal position by: both ends, close and
/// open time and the byte counts, mixed into 64 bits. Computed from the fields (not
/// the encoded record), so matching a chunk costs no second encoding; records that
/// agree on all of these are interchangeable, and are matched in journal order.
fn fingerprint(record: &FlowRecord) -> u64 {
    let nanos = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    };
    let ip = |a: &SocketAddr| match a.ip() {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6) ^ (1 << 127),
    };
    let (local, remote) = (ip(&record.local), ip(&record.remote));
    let words = [
        local as u64,
        (local >> 64) as u64,
        remote as u64,
        (remote >> 64) as u64,
        u64::from(record.local.port()) << 16 | u64::from(record.remote.port()),
        nanos(record.t_end),
        record.t_start.map_or(0, nanos),
        record.stats.bytes_sent,
        record.stats.bytes_received,
    ];
    words.into_iter().fold(0x243F_6A88_85A3_08D3, mix)
}

/// One round of splitmix64's finalizer over `h ^ v`: every input bit reaches about half
/// of the output bits.
fn mix(h: u64, v: u64) -> u64 {
    let mut z = (h ^ v).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hashes a [`fingerprint`] (already mixed) as itself.
#[derive(Default)]
struct FingerprintHasher(u64);

impl Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Pending records by fingerprint.
type PendingMap = HashMap<u64, Positions, BuildHasherDefault<FingerprintHasher>>;

impl RecordJournal {
    /// Opens the journal in `dir` (created if missing) for an exporter run with this
    /// `host` identity and `instance` (the same the run's
    /// [`ChunkEncoder`] uses), and recovers what a previous run left.
    ///
    /// What is recovered is first rewritten into a new segment (so a crash during
    /// recovery loses nothing either) and the old segments are deleted; the
    /// [`Recovered`] value says what the caller must do with it.
    pub fn open(
        dir: impl AsRef<Path>,
        host: impl Into<String>,
        instance: InstanceId,
        config: JournalConfig,
    ) -> Result<(RecordJournal, Recovered), SinkError> {
        let dir = dir.as_ref().to_path_buf();
        if config.sync_interval.is_zero() {
            return Err(SinkError::InvalidConfig {
                key: "journal sync_interval",
                value: format!("{:?}", config.sync_interval),
                reason: "must be more than zero",
            });
        }
        if config.segment_max_bytes < 4096 {
            return Err(SinkError::InvalidConfig {
                key: "journal segment_max_bytes",
                value: config.segment_max_bytes.to_string(),
                reason: "must be at least 4096",
            });
        }
        fs::create_dir_all(&dir).map_err(|e| SinkError::io("create directory", &dir, e))?;
        let mut counters = JournalCounters::default();
        let old = read_segments(&dir, &mut counters)?;
        let number = old.last_number + 1;

        // The new segment is written as .tmp and renamed only once it holds all the
        // live content of the old ones, which it then supersedes.
        let path = segment_path(&dir, number);
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| SinkError::io("create", &tmp, e))?;
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(&MAGIC);
        header[4..6].copy_from_slice(&VERSION.to_le_bytes());
        header[8..16].copy_from_slice(&number.to_le_bytes());
        let mut writer = BufWriter::with_capacity(64 << 10, file);
        writer
            .write_all(&header)
            .map_err(|e| SinkError::io("write", &tmp, e))?;
        counters.segments_created += 1;
        counters.bytes_written += HEADER_LEN as u64;
        let mut segments = BTreeMap::new();
        segments.insert(
            number,
            Segment {
                path: path.clone(),
                live: 0,
                open_intents: 0,
            },
        );
        let mut journal = RecordJournal {
            dir,
            config,
            host: host.into(),
            instance,
            active: Active {
                number,
                path: tmp.clone(),
                writer,
                bytes: HEADER_LEN as u64,
                next_ordinal: 0,
                empty: true,
            },
            segments,
            pending: PendingMap::default(),
            pending_count: 0,
            intents: HashMap::new(),
            dirty: true,
            last_sync: None,
            scratch: Vec::with_capacity(512),
            counters,
        };

        let recovered = journal.rejournal(old.content)?;
        journal.sync()?;
        fs::rename(&tmp, &path).map_err(|e| SinkError::io("rename into place", &tmp, e))?;
        journal.active.path = path;
        sync_dir(&journal.dir)?;
        for old_path in old.paths {
            remove_if_present(&old_path)?;
            journal.counters.segments_deleted += 1;
        }
        sync_dir(&journal.dir)?;
        journal.counters.records_recovered = recovered.records.len() as u64;
        journal.counters.chunks_recovered = recovered.chunks.len() as u64;
        if !recovered.is_empty() {
            tracing::info!(
                dir = %journal.dir.display(),
                records = recovered.records.len(),
                chunks = recovered.chunks.len(),
                "recovered flow records from the journal of a previous run"
            );
        }
        Ok((journal, recovered))
    }

    /// The journal directory.
    pub fn dir(&self) -> &Path {
        &self.dir
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
            ..self.counters
        }
    }

    /// Appends a captured record (buffered: it is durable after the next sync).
    /// [`begin_chunk`](RecordJournal::begin_chunk) finds it again by its fields.
    ///
    /// Fails for a record the wire format cannot carry either (a time before the Unix
    /// epoch): such a record is not journaled.
    pub fn append(&mut self, record: &FlowRecord) -> Result<(), SinkError> {
        let at = self.write_record(record)?;
        self.add_pending(fingerprint(record), at);
        Ok(())
    }

    /// Appends a captured record, as [`append`](RecordJournal::append), and returns
    /// its position in the journal, to be given as the record's tag to
    /// [`MinuteBatcher::push_tagged`](flow_batch::MinuteBatcher::push_tagged):
    /// [`begin_chunk`](RecordJournal::begin_chunk) then takes the chunk's records'
    /// positions from [`Chunk::tags`] instead of searching for each record.
    pub fn append_tagged(&mut self, record: &FlowRecord) -> Result<u64, SinkError> {
        let at = self.write_record(record)?;
        self.pending_count += 1;
        Ok(at)
    }

    /// Writes a record into the active segment, starting a new segment first when the
    /// active one is full: an error means the record was not written (a failed
    /// rotation after the write would leave a journaled record its caller believes
    /// lost, and send it twice after a restart).
    fn write_record(&mut self, record: &FlowRecord) -> Result<Lsn, SinkError> {
        self.rotate_if_full()?;
        self.scratch.clear();
        self.scratch.push(KIND_RECORD);
        // The wire format's record writer: the same bytes as bincode with `options()`,
        // written field by field.
        encode_record(record, &mut self.scratch).map_err(|source| SinkError::JournalEncode {
            local: record.local,
            remote: record.remote,
            source,
        })?;
        self.write_scratch_record()
    }

    fn rotate_if_full(&mut self) -> Result<(), SinkError> {
        if self.active.bytes >= self.config.segment_max_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    /// When [`sync_if_due`](RecordJournal::sync_if_due) will next sync: `None` while
    /// nothing is waiting to be synced.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.dirty {
            return None;
        }
        self.last_sync.map(|t| t + self.config.sync_interval)
    }

    /// Syncs if something was appended and the last sync is at least `sync_interval`
    /// old at `now`. Returns whether it synced. Call it at least every
    /// `sync_interval` (on the exporter's timer, or after each batch of records).
    pub fn sync_if_due(&mut self, now: Instant) -> Result<bool, SinkError> {
        let due = self.dirty
            && self
                .last_sync
                .is_none_or(|t| now.saturating_duration_since(t) >= self.config.sync_interval);
        if due {
            self.sync_at(now)?;
        }
        Ok(due)
    }

    /// Writes out the buffer and `fdatasync`s the active segment now.
    pub fn sync(&mut self) -> Result<(), SinkError> {
        self.sync_at(Instant::now())
    }

    fn sync_at(&mut self, now: Instant) -> Result<(), SinkError> {
        let path = &self.active.path;
        self.active
            .writer
            .flush()
            .map_err(|e| SinkError::io("write", path, e))?;
        self.active
            .writer
            .get_ref()
            .sync_data()
            .map_err(|e| SinkError::io("fdatasync", path, e))?;
        self.counters.syncs += 1;
        self.dirty = false;
        self.last_sync = Some(now);
        Ok(())
    }

    /// Records durably that `chunk` (of this run's host and instance) is about to be
    /// handed to a sink, and which journaled records it holds. Returns its batch ID,
    /// for [`end_chunk`](RecordJournal::end_chunk). Syncs before returning.
    ///
    /// Calling it again for a chunk already begun only returns its ID.
    pub fn begin_chunk(&mut self, chunk: &Chunk) -> Result<BatchId, SinkError> {
        let id = BatchId {
            host: self.host.clone(),
            instance: self.instance,
            sequence: chunk.sequence,
        };
        if self.intents.contains_key(&id) {
            return Ok(id);
        }
        let mut lsns = Vec::with_capacity(chunk.records.len());
        for (i, record) in chunk.records.iter().enumerate() {
            // Tagged by `append_tagged`: the position itself. Otherwise (untagged, or
            // recovered and journaled again at open) found by the record's fields.
            let tagged = chunk.tags.get(i).copied().filter(|&t| t != NO_TAG);
            let found = match tagged {
                Some(at) => {
                    self.pending_count = self.pending_count.saturating_sub(1);
                    Some(at)
                }
                None => self.take_pending(fingerprint(record)),
            };
            match found {
                Some(at) => lsns.push(at),
                None => self.counters.records_unmatched += 1,
            }
        }
        let body = IntentBody {
            host: id.host.clone(),
            instance: id.instance.as_u128(),
            sequence: chunk.sequence,
            window_start_ms: chunk.window.start_ms(),
            window_end_ms: chunk.window.end_ms(),
            index: chunk.index,
            last: chunk.last,
            lsns,
        };
        self.write_intent(id.clone(), &body)?;
        self.sync()?;
        Ok(id)
    }

    /// Records that the chunk `id` (begun here, or recovered) has been delivered or
    /// spooled: its records are no longer needed. Segments left with nothing live are
    /// deleted. Unknown IDs are ignored.
    pub fn end_chunk(&mut self, id: &BatchId) -> Result<(), SinkError> {
        let Some(intent) = self.intents.remove(id) else {
            return Ok(());
        };
        let body = DoneBody {
            host: id.host.clone(),
            instance: id.instance.as_u128(),
            sequence: id.sequence,
        };
        self.encode_entry(KIND_DONE, &body)?;
        self.write_scratch()?;
        self.counters.chunks_ended += 1;
        for (segment, count) in intent.per_segment {
            if let Some(s) = self.segments.get_mut(&segment) {
                s.live = s.live.saturating_sub(count);
            }
        }
        if let Some(s) = self.segments.get_mut(&intent.segment) {
            s.open_intents = s.open_intents.saturating_sub(1);
        }
        self.collect()
    }

    /// Starts a new segment when the active one is full or settled, and deletes the
    /// old segments with nothing live.
    fn collect(&mut self) -> Result<(), SinkError> {
        let settled = |s: &Segment| s.live == 0 && s.open_intents == 0;
        let active_settled = self.segments.get(&self.active.number).is_some_and(settled);
        if !self.active.empty
            && (active_settled || self.active.bytes >= self.config.segment_max_bytes)
        {
            self.rotate()?;
        }
        let deletable: Vec<u64> = self
            .segments
            .iter()
            .take_while(|(n, s)| **n != self.active.number && settled(s))
            .map(|(n, _)| *n)
            .collect();
        if deletable.is_empty() {
            return Ok(());
        }
        // The done marks that settle these segments must be durable first.
        if self.dirty {
            self.sync()?;
        }
        for n in deletable {
            if let Some(s) = self.segments.remove(&n) {
                remove_if_present(&s.path)?;
                self.counters.segments_deleted += 1;
            }
        }
        sync_dir(&self.dir)
    }

    fn rotate(&mut self) -> Result<(), SinkError> {
        self.sync()?;
        let number = self.active.number + 1;
        let path = segment_path(&self.dir, number);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| SinkError::io("create", &path, e))?;
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(&MAGIC);
        header[4..6].copy_from_slice(&VERSION.to_le_bytes());
        let mut writer = BufWriter::with_capacity(64 << 10, file);
        writer
            .write_all(&header)
            .map_err(|e| SinkError::io("write", &path, e))?;
        self.active = Active {
            number,
            path: path.clone(),
            writer,
            bytes: HEADER_LEN as u64,
            next_ordinal: 0,
            empty: true,
        };
        self.segments.insert(
            number,
            Segment {
                path,
                live: 0,
                open_intents: 0,
            },
        );
        self.counters.segments_created += 1;
        self.counters.bytes_written += HEADER_LEN as u64;
        self.sync()?;
        sync_dir(&self.dir)
    }

    /// Writes the recovered content of old segments into the active one and returns
    /// what the caller must redo.
    fn rejournal(&mut self, content: OldContent) -> Result<Recovered, SinkError> {
        let OldContent {
            records,
            intents,
            done,
        } = content;
        let mut covered = HashSet::new();
        for intent in &intents {
            covered.extend(intent.lsns.iter().copied());
        }
        let mut recovered = Recovered::default();
        for (at, (record, bytes)) in &records {
            if covered.contains(at) {
                continue;
            }
            self.scratch.clear();
            self.scratch.push(KIND_RECORD);
            self.scratch.extend_from_slice(bytes);
            let new_at = self.write_scratch_record()?;
            self.add_pending(fingerprint(record), new_at);
            recovered.records.push(record.clone());
        }
        let mut seen = HashSet::new();
        for intent in intents {
            let id = BatchId {
                host: intent.host.clone(),
                instance: InstanceId::new(intent.instance),
                sequence: intent.sequence,
            };
            if done.contains(&id) || !seen.insert(id.clone()) {
                continue;
            }
            let Some(window) = Window::from_millis(intent.window_start_ms, intent.window_end_ms)
            else {
                tracing::warn!(batch_id = %id, "journal intent with an empty window skipped");
                continue;
            };
            let mut chunk_records = Vec::with_capacity(intent.lsns.len());
            let mut lsns = Vec::with_capacity(intent.lsns.len());
            for at in &intent.lsns {
                if let Some((record, bytes)) = records.get(at) {
                    self.scratch.clear();
                    self.scratch.push(KIND_RECORD);
                    self.scratch.extend_from_slice(bytes);
                    lsns.push(self.write_scratch_record()?);
                    chunk_records.push(record.clone());
                }
            }
            let chunk = Chunk::new(
                window,
                intent.index,
                intent.sequence,
                intent.last,
                chunk_records,
            );
            let body = IntentBody { lsns, ..intent };
            self.write_intent(id.clone(), &body)?;
            recovered.chunks.push(RecoveredChunk {
                host: id.host,
                instance: id.instance,
                chunk,
            });
        }
        Ok(recovered)
    }

    fn write_intent(&mut self, id: BatchId, body: &IntentBody) -> Result<(), SinkError> {
        self.encode_entry(KIND_INTENT, body)?;
        self.write_scratch()?;
        let mut per_segment: Vec<(u64, u64)> = Vec::new();
        for at in &body.lsns {
            let segment = lsn_segment(*at);
            match per_segment.last_mut() {
                Some((s, n)) if *s == segment => *n += 1,
                _ => per_segment.push((segment, 1)),
            }
        }
        if let Some(s) = self.segments.get_mut(&self.active.number) {
            s.open_intents += 1;
        }
        self.intents.insert(
            id,
            OpenIntent {
                segment: self.active.number,
                per_segment,
            },
        );
        self.counters.chunks_begun += 1;
        Ok(())
    }

    /// Puts the entry `kind` + `body` into `scratch`.
    fn encode_entry(&mut self, kind: u8, body: &impl Serialize) -> Result<(), SinkError> {
        self.scratch.clear();
        self.scratch.push(kind);
        options()
            .serialize_into(&mut self.scratch, body)
            .map_err(|e| {
                SinkError::io(
                    "encode an entry for",
                    &self.active.path,
                    std::io::Error::other(e),
                )
            })
    }

    /// Writes the record entry in `scratch` and returns its position.
    fn write_scratch_record(&mut self) -> Result<Lsn, SinkError> {
        if self.active.next_ordinal == u32::MAX {
            self.rotate()?;
        }
        let at = lsn(self.active.number, self.active.next_ordinal);
        self.write_scratch()?;
        self.active.next_ordinal += 1;
        if let Some(s) = self.segments.get_mut(&self.active.number) {
            s.live += 1;
        }
        self.counters.records_appended += 1;
        Ok(at)
    }

    /// Writes `scratch` as one entry of the active segment.
    fn write_scratch(&mut self) -> Result<(), SinkError> {
        let len = u32::try_from(self.scratch.len()).unwrap_or(u32::MAX);
        let mut head = [0u8; ENTRY_HEAD_LEN];
        head[..4].copy_from_slice(&len.to_le_bytes());
        head[4..].copy_from_slice(&crc32c::crc32c(&self.scratch).to_le_bytes());
        let path = &self.active.path;
        self.active
            .writer
            .write_all(&head)
            .and_then(|()| self.active.writer.write_all(&self.scratch))
            .map_err(|e| SinkError::io("write", path, e))?;
        let n = (ENTRY_HEAD_LEN + self.scratch.len()) as u64;
        self.active.bytes += n;
        self.active.empty = false;
        self.counters.bytes_written += n;
        self.dirty = true;
        Ok(())
    }

    fn add_pending(&mut self, fp: u64, at: Lsn) {
        self.pending_count += 1;
        match self.pending.get_mut(&fp) {
            None => {
                self.pending.insert(fp, Positions::One(at));
            }
            Some(Positions::One(first)) => {
                let first = *first;
                self.pending
                    .insert(fp, Positions::Many(VecDeque::from([first, at])));
            }
            Some(Positions::Many(q)) => q.push_back(at),
        }
    }

    fn take_pending(&mut self, fp: u64) -> Option<Lsn> {
        let at = match self.pending.get_mut(&fp)? {
            Positions::One(at) => {
                let at = *at;
                self.pending.remove(&fp);
                at
            }
            Positions::Many(q) => {
                let at = q.pop_front()?;
                if q.is_empty() {
                    self.pending.remove(&fp);
                }
                at
            }
        };
        self.pending_count -= 1;
        Some(at)
    }
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!(
        "{number:0width$}{SEGMENT_SUFFIX}",
        width = SEGMENT_DIGITS
    ))
}

fn remove_if_present(path: &Path) -> Result<(), SinkError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SinkError::io("remove", path, e)),
    }
}

/// The live content of the segments a previous run left.
#[derive(Default)]
struct OldContent {
    /// Records by position, with their encoding.
    records: BTreeMap<Lsn, (FlowRecord, Vec<u8>)>,
    intents: Vec<IntentBody>,
    done: HashSet<BatchId>,
}

struct OldSegments {
    last_number: u64,
    paths: Vec<PathBuf>,
    content: OldContent,
}

fn read_segments(dir: &Path, counters: &mut JournalCounters) -> Result<OldSegments, SinkError> {
    let mut numbered = Vec::new();
    let listing = fs::read_dir(dir).map_err(|e| SinkError::io("list", dir, e))?;
    for item in listing {
        let item = item.map_err(|e| SinkError::io("list", dir, e))?;
        let path = item.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(".tmp") {
            // A recovery cut short: its old segments are still here.
            remove_if_present(&path)?;
            continue;
        }
        let Some(number) = name
            .strip_suffix(SEGMENT_SUFFIX)
            .filter(|s| s.len() == SEGMENT_DIGITS && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        numbered.push((number, path));
    }
    numbered.sort();
    let last_number = numbered.last().map_or(0, |(n, _)| *n);

    let mut files = Vec::new();
    let mut supersedes_below = 0;
    for (number, path) in &numbered {
        let bytes = fs::read(path).map_err(|e| SinkError::io("read", path, e))?;
        let header_ok = bytes.len() >= HEADER_LEN
            && bytes[..4] == MAGIC
            && u16::from_le_bytes([bytes[4], bytes[5]]) == VERSION;
        if !header_ok {
            counters.segments_discarded += 1;
            tracing::warn!(file = %path.display(), "journal segment with an unreadable header ignored");
            continue;
        }
        let mut below = [0u8; 8];
        below.copy_from_slice(&bytes[8..16]);
        supersedes_below = supersedes_below.max(u64::from_le_bytes(below));
        files.push((*number, path.clone(), bytes));
    }

    let mut content = OldContent::default();
    for (number, path, bytes) in &files {
        if *number < supersedes_below {
            continue;
        }
        read_entries(*number, path, bytes, &mut content, counters);
    }
    Ok(OldSegments {
        last_number,
        paths: numbered.into_iter().map(|(_, p)| p).collect(),
        content,
    })
}

fn read_entries(
    number: u64,
    path: &Path,
    bytes: &[u8],
    content: &mut OldContent,
    counters: &mut JournalCounters,
) {
    let mut at = HEADER_LEN;
    let mut ordinal: u32 = 0;
    let stop = |at: usize, why: &str, counters: &mut JournalCounters| {
        let skipped = (bytes.len() - at) as u64;
        counters.bytes_discarded += skipped;
        tracing::warn!(
            file = %path.display(),
            offset = at,
            skipped,
            "journal segment ends in a {why} entry (torn write); the rest is ignored"
        );
    };
    while at < bytes.len() {
        let Some(head) = bytes.get(at..at + ENTRY_HEAD_LEN) else {
            return stop(at, "truncated", counters);
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let start = at + ENTRY_HEAD_LEN;
        if len == 0 || len > MAX_ENTRY_LEN {
            return stop(at, "malformed", counters);
        }
        let Some(body) = bytes.get(start..start + len as usize) else {
            return stop(at, "truncated", counters);
        };
        if crc32c::crc32c(body) != crc {
            return stop(at, "corrupt", counters);
        }
        let ok = match body[0] {
            KIND_RECORD => match options().deserialize::<FlowRecord>(&body[1..]) {
                Ok(record) => {
                    content
                        .records
                        .insert(lsn(number, ordinal), (record, body[1..].to_vec()));
                    ordinal += 1;
                    true
                }
                Err(_) => false,
            },
            KIND_INTENT => match options().deserialize::<IntentBody>(&body[1..]) {
                Ok(intent) => {
                    content.intents.push(intent);
                    true
                }
                Err(_) => false,
            },
            KIND_DONE => match options().deserialize::<DoneBody>(&body[1..]) {
                Ok(done) => {
                    content.done.insert(BatchId {
                        host: done.host,
                        instance: InstanceId::new(done.instance),
                        sequence: done.sequence,
                    });
                    true
                }
                Err(_) => false,
            },
            _ => false,
        };
        if !ok {
            return stop(at, "undecodable", counters);
        }
        at = start + len as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> FlowRecord {
        let t_end = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        FlowRecord {
            local: "10.0.0.1:443".parse().expect("addr"),
            remote: "10.0.0.2:50000".parse().expect("addr"),
            direction: flow_capture::Direction::Inbound,
            t_start: Some(t_end - Duration::from_millis(5)),
            t_end,
            close_state: flow_capture::TcpState(7),
            close_reason: flow_capture::CloseReason::Normal,
            stats: flow_capture::SocketStats {
                bytes_sent: 10,
                bytes_received: 20,
                segs_in: 3,
                segs_out: 4,
                retransmits: 0,
                bytes_retransmitted: 0,
                srtt_us: 100,
                rttvar_us: 10,
            },
            local_workload_id: None,
            identity_source: flow_capture::IdentitySource::None(
                flow_capture::UnattributedReason::NoMatch,
            ),
            incomplete: false,
        }
    }

    #[test]
    fn fingerprints_tell_records_apart_by_each_field_they_cover() {
        let base = record();
        assert_eq!(fingerprint(&base), fingerprint(&base.clone()));
        let variants: [fn(&mut FlowRecord); 8] = [
            |r| r.local.set_port(444),
            |r| r.remote.set_port(50001),
            |r| r.remote = "[::ffff:10.0.0.2]:50000".parse().expect("addr"),
            |r| r.local = "10.0.0.3:443".parse().expect("addr"),
            |r| r.t_end += Duration::from_nanos(1),
            |r| r.t_start = None,
            |r| r.stats.bytes_sent += 1,
            |r| r.stats.bytes_received += 1,
        ];
        let mut seen = HashSet::from([fingerprint(&base)]);
        for change in variants {
            let mut r = base.clone();
            change(&mut r);
            assert!(seen.insert(fingerprint(&r)), "{r:?}");
        }
    }

    #[test]
    fn lsn_round_trip() {
        let at = lsn(7, 42);
        assert_eq!(lsn_segment(at), 7);
        assert_eq!(at & 0xffff_ffff, 42);
    }
}
