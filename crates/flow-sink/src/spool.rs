//! The durable spool: encoded chunk frames kept on disk until the collector has them.
//!
//! Layout of a spool directory:
//!
//! ```text
//! DIR/00000000000000000042-<instance>-<sequence>.chunk   a frame, exactly as sent
//! DIR/*.tmp                                               a frame being written (removed on open)
//! DIR/corrupt/…                                           frames that failed verification
//! DIR/rejected/….chunk + ….reason                         frames the collector refused for good
//! ```
//!
//! The 20-digit prefix is the spool's own order number: files are replayed in
//! ascending order, which is the order they were spooled, which for one exporter run
//! is the order of their sequence numbers. A file is the frame's exact bytes, so a
//! replayed chunk keeps its batch ID and the collector drops it if it already has it.
//!
//! A frame is written to a `.tmp` file, `fsync`ed, renamed to its final name, and the
//! directory is `fsync`ed, so after a crash a spool file is either whole or absent
//! (a leftover `.tmp` is deleted on [`Spool::open`]). Files are verified (both
//! checksums, full decode) when they are read for sending, not on open, so opening a
//! large spool is quick.
//!
//! The spool is a plain synchronous type; [`CollectorSink`](crate::CollectorSink)
//! calls it from blocking tasks.

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

use flow_batch::wire::{BatchId, DecodeLimits, decode_header, verify_frame};

use crate::error::SinkError;

/// Default size cap of a spool: 1 GiB.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1 << 30;

const SUFFIX: &str = ".chunk";
const TMP_SUFFIX: &str = ".tmp";
const ORDER_DIGITS: usize = 20;
/// Subdirectory of frames that failed verification.
pub const CORRUPT_DIR: &str = "corrupt";
/// Subdirectory of frames the collector refused for good.
pub const REJECTED_DIR: &str = "rejected";

/// What a full spool does with a new chunk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WhenFull {
    /// Delete the oldest spooled chunks until the new one fits (default): during a
    /// long outage the most recent data is kept. Each drop is counted and logged.
    #[default]
    DropOldest,
    /// Refuse the new chunk with [`SinkError::SpoolFull`] and keep the old ones: the
    /// caller decides (a caller with a [`RecordJournal`](crate::RecordJournal) keeps
    /// the records journaled and can try again later).
    RefuseNewest,
}

/// Limits of a [`Spool`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpoolConfig {
    /// Most bytes of frames kept (the `corrupt/` and `rejected/` folders have their
    /// own cap, [`set_aside_max_bytes`](SpoolConfig::set_aside_max_bytes)).
    /// Default [`DEFAULT_SPOOL_MAX_BYTES`].
    pub max_bytes: u64,
    /// What to do when a new frame does not fit.
    pub when_full: WhenFull,
    /// Limits applied when verifying a spooled frame.
    pub decode_limits: DecodeLimits,
    /// Most bytes kept in `rejected/` and `corrupt/` together (frames and their
    /// `.reason` notes); past it the oldest set-aside files are deleted and counted.
    /// Default [`DEFAULT_SET_ASIDE_MAX_BYTES`].
    pub set_aside_max_bytes: u64,
}

/// Default [`SpoolConfig::set_aside_max_bytes`]: 256 MiB. A collector that refuses
/// every chunk (a misconfiguration) would otherwise fill the disk at the rate records
/// are captured.
pub const DEFAULT_SET_ASIDE_MAX_BYTES: u64 = 256 << 20;

impl Default for SpoolConfig {
    fn default() -> SpoolConfig {
        SpoolConfig {
            max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            when_full: WhenFull::default(),
            decode_limits: DecodeLimits::default(),
            set_aside_max_bytes: DEFAULT_SET_ASIDE_MAX_BYTES,
        }
    }
}

impl SpoolConfig {
    /// Sets [`max_bytes`](SpoolConfig::max_bytes).
    pub fn with_max_bytes(mut self, max_bytes: u64) -> SpoolConfig {
        self.max_bytes = max_bytes;
        self
    }

    /// Sets [`when_full`](SpoolConfig::when_full).
    pub fn with_when_full(mut self, when_full: WhenFull) -> SpoolConfig {
        self.when_full = when_full;
        self
    }

    /// Sets [`decode_limits`](SpoolConfig::decode_limits).
    pub fn with_decode_limits(mut self, limits: DecodeLimits) -> SpoolConfig {
        self.decode_limits = limits;
        self
    }

    /// Sets [`set_aside_max_bytes`](SpoolConfig::set_aside_max_bytes).
    pub fn with_set_aside_max_bytes(mut self, max_bytes: u64) -> SpoolConfig {
        self.set_aside_max_bytes = max_bytes;
        self
    }
}

/// What a spool has done, and what it holds now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpoolCounters {
    /// Frames written to the spool.
    pub chunks_spooled: u64,
    /// Bytes of frames written to the spool.
    pub bytes_spooled: u64,
    /// Frames removed after delivery.
    pub chunks_removed: u64,
    /// Frames deleted to make room (full spool, [`WhenFull::DropOldest`]).
    pub chunks_dropped_full: u64,
    /// Bytes of those frames.
    pub bytes_dropped_full: u64,
    /// Records in those frames (from their headers; 0 for an unreadable header).
    pub records_dropped_full: u64,
    /// New frames refused (full spool, [`WhenFull::RefuseNewest`], or a frame larger
    /// than the whole cap).
    pub chunks_refused_full: u64,
    /// Files that failed verification and were moved to `corrupt/`.
    pub corrupt_files: u64,
    /// Files moved to `rejected/` after a permanent refusal.
    pub rejected_files: u64,
    /// Files found in the spool when it was opened.
    pub files_recovered: u64,
    /// Set-aside files (in `rejected/` or `corrupt/`, with their notes) deleted to
    /// keep those folders under [`SpoolConfig::set_aside_max_bytes`].
    pub set_aside_files_deleted: u64,
    /// Gauge: bytes in `rejected/` and `corrupt/` now.
    pub set_aside_bytes: u64,
    /// Gauge: files in the spool now.
    pub files: u64,
    /// Gauge: bytes in the spool now.
    pub bytes: u64,
}

/// A spooled file's position in the replay order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpoolId(u64);

impl SpoolId {
    /// The order number (the file name's prefix).
    pub fn order(self) -> u64 {
        self.0
    }
}

/// A verified frame read from the spool.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SpooledChunk {
    /// Its place in the spool.
    pub id: SpoolId,
    /// Its file.
    pub path: PathBuf,
    /// The frame, as it was spooled.
    pub frame: Vec<u8>,
    /// Its batch ID.
    pub batch_id: BatchId,
    /// Records in it.
    pub records: u32,
}

#[derive(Debug)]
struct Entry {
    id: SpoolId,
    path: PathBuf,
    bytes: u64,
}

/// An on-disk queue of encoded frames, bounded in bytes, replayed oldest first.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    config: SpoolConfig,
    entries: VecDeque<Entry>,
    bytes: u64,
    next_order: u64,
    /// Files in `rejected/` and `corrupt/`, oldest first.
    set_aside: VecDeque<SetAside>,
    set_aside_bytes: u64,
    counters: SpoolCounters,
}

/// A frame set aside in `rejected/` or `corrupt/`, with its `.reason` note if any.
#[derive(Debug)]
struct SetAside {
    paths: Vec<PathBuf>,
    bytes: u64,
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir` and picks up the frames a previous
    /// run left there. Leftover `.tmp` files (a write cut short by a crash) are
    /// deleted. If the frames found exceed the cap and `when_full` is
    /// [`WhenFull::DropOldest`], the oldest are dropped now.
    pub fn open(dir: impl AsRef<Path>, config: SpoolConfig) -> Result<Spool, SinkError> {
        let dir = dir.as_ref().to_path_buf();
        if config.max_bytes == 0 {
            return Err(SinkError::InvalidConfig {
                key: "spool max_bytes",
                value: "0".into(),
                reason: "must be more than zero",
            });
        }
        fs::create_dir_all(&dir).map_err(|e| SinkError::io("create directory", &dir, e))?;
        let mut found = Vec::new();
        let read = fs::read_dir(&dir).map_err(|e| SinkError::io("list", &dir, e))?;
        for item in read {
            let item = item.map_err(|e| SinkError::io("list", &dir, e))?;
            let path = item.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with(TMP_SUFFIX) {
                tracing::info!(file = %path.display(), "removing a spool file whose write was cut short");
                remove_file(&path)?;
                continue;
            }
            let Some(order) = parse_order(name) else {
                continue;
            };
            let meta = item
                .metadata()
                .map_err(|e| SinkError::io("stat", &path, e))?;
            if !meta.is_file() {
                continue;
            }
            found.push(Entry {
                id: SpoolId(order),
                path,
                bytes: meta.len(),
            });
        }
        found.sort_by_key(|e| e.id);
        let next_order = found.last().map_or(0, |e| e.id.0 + 1);
        let bytes = found.iter().map(|e| e.bytes).sum();
        let set_aside = scan_set_aside(&dir)?;
        let set_aside_bytes = set_aside.iter().map(|s| s.bytes).sum();
        let mut spool = Spool {
            counters: SpoolCounters {
                files_recovered: found.len() as u64,
                ..SpoolCounters::default()
            },
            dir,
            config,
            entries: found.into(),
            bytes,
            next_order,
            set_aside,
            set_aside_bytes,
        };
        spool.trim_set_aside();
        if !spool.entries.is_empty() {
            tracing::info!(
                dir = %spool.dir.display(),
                files = spool.entries.len(),
                bytes = spool.bytes,
                "picked up spooled chunks from a previous run"
            );
        }
        if spool.config.when_full == WhenFull::DropOldest {
            spool.make_room(0)?;
        }
        Ok(spool)
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The limits in force.
    pub fn config(&self) -> &SpoolConfig {
        &self.config
    }

    /// Frames spooled now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no frame is spooled.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes spooled now.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// A snapshot of the counters and gauges.
    pub fn counters(&self) -> SpoolCounters {
        SpoolCounters {
            files: self.entries.len() as u64,
            bytes: self.bytes,
            set_aside_bytes: self.set_aside_bytes,
            ..self.counters
        }
    }

    /// Writes `frame` (an encoded chunk) durably at the end of the queue: when this
    /// returns `Ok`, the file and its directory entry have been `fsync`ed.
    ///
    /// A full spool drops its oldest frames or refuses this one, per
    /// [`WhenFull`]; a frame larger than the whole cap is always refused.
    pub fn push(&mut self, frame: &[u8]) -> Result<SpoolId, SinkError> {
        let header = decode_header(frame, &self.config.decode_limits)
            .map_err(|source| SinkError::InvalidFrame { source })?;
        let len = frame.len() as u64;
        let fits = len <= self.config.max_bytes;
        if fits && self.config.when_full == WhenFull::DropOldest {
            self.make_room(len)?;
        }
        if !fits || self.bytes + len > self.config.max_bytes {
            self.counters.chunks_refused_full += 1;
            tracing::warn!(
                dir = %self.dir.display(),
                batch_id = %header.batch_id(),
                records = header.record_count,
                "spool full: chunk refused"
            );
            return Err(SinkError::SpoolFull {
                path: self.dir.clone(),
                spooled_bytes: self.bytes,
                frame_bytes: len,
                max_bytes: self.config.max_bytes,
            });
        }

        let id = SpoolId(self.next_order);
        let name = format!(
            "{:0width$}-{}-{}{SUFFIX}",
            id.0,
            header.instance,
            header.sequence,
            width = ORDER_DIGITS
        );
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}{TMP_SUFFIX}"));
        write_durably(&tmp, frame)?;
        fs::rename(&tmp, &path).map_err(|e| SinkError::io("rename into place", &tmp, e))?;
        sync_dir(&self.dir)?;
        self.next_order += 1;
        self.bytes += len;
        self.entries.push_back(Entry {
            id,
            path,
            bytes: len,
        });
        self.counters.chunks_spooled += 1;
        self.counters.bytes_spooled += len;
        Ok(id)
    }

    /// The oldest frame, read and verified (header, length and both checksums). A file
    /// that fails verification is moved to `corrupt/`, counted, logged with a warning
    /// naming it, and skipped; the next one is tried.
    pub fn oldest(&mut self) -> Result<Option<SpooledChunk>, SinkError> {
        loop {
            let Some(entry) = self.entries.front() else {
                return Ok(None);
            };
            let (id, path) = (entry.id, entry.path.clone());
            let frame = match fs::read(&path) {
                Ok(frame) => frame,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // Deleted behind our back: nothing to send.
                    tracing::warn!(file = %path.display(), "spool file vanished");
                    self.forget_front();
                    continue;
                }
                Err(e) => return Err(SinkError::io("read", &path, e)),
            };
            // Header and payload checksums, not a full decode: the frame was encoded by
            // this exporter, so what can go wrong with it on disk is what the checksums
            // catch (decoding every chunk again cost more CPU than the rest of the
            // sink); the collector decodes it and refuses what is malformed.
            match verify_frame(&frame, &self.config.decode_limits) {
                Ok(header) => {
                    return Ok(Some(SpooledChunk {
                        id,
                        path,
                        batch_id: header.batch_id(),
                        records: header.record_count,
                        frame,
                    }));
                }
                Err(error) => {
                    let dest = self.set_aside(CORRUPT_DIR, &path)?;
                    self.forget_front();
                    self.counters.corrupt_files += 1;
                    self.track_set_aside(vec![dest.clone()])?;
                    tracing::warn!(
                        file = %path.display(),
                        moved_to = %dest.display(),
                        error = %crate::error_chain(&error),
                        "corrupt spool file skipped"
                    );
                }
            }
        }
    }

    /// Whether `id` is still spooled (not delivered, rejected or dropped).
    pub fn contains(&self, id: SpoolId) -> bool {
        self.entries.iter().any(|e| e.id == id)
    }

    /// Deletes a delivered frame. Returns whether it was still spooled (it may have
    /// been dropped to make room meanwhile).
    pub fn remove(&mut self, id: SpoolId) -> Result<bool, SinkError> {
        let Some(i) = self.entries.iter().position(|e| e.id == id) else {
            return Ok(false);
        };
        let path = self.entries[i].path.clone();
        remove_file(&path)?;
        sync_dir(&self.dir)?;
        self.forget(i);
        self.counters.chunks_removed += 1;
        Ok(true)
    }

    /// Moves a frame the collector refused for good to `rejected/`, next to a
    /// `.reason` file holding `reason` (the status and the start of the response).
    pub fn reject(&mut self, id: SpoolId, reason: &str) -> Result<Option<PathBuf>, SinkError> {
        let Some(i) = self.entries.iter().position(|e| e.id == id) else {
            return Ok(None);
        };
        let path = self.entries[i].path.clone();
        let dest = self.set_aside(REJECTED_DIR, &path)?;
        let mut note = dest.clone().into_os_string();
        note.push(".reason");
        let note = PathBuf::from(note);
        write_durably(&note, reason.as_bytes())?;
        self.forget(i);
        self.counters.rejected_files += 1;
        self.track_set_aside(vec![dest.clone(), note])?;
        Ok(Some(dest))
    }

    /// Drops the oldest frames until `incoming` more bytes fit under the cap.
    fn make_room(&mut self, incoming: u64) -> Result<(), SinkError> {
        while self.bytes + incoming > self.config.max_bytes {
            let Some(entry) = self.entries.front() else {
                break;
            };
            let path = entry.path.clone();
            let bytes = entry.bytes;
            let records = read_record_count(&path, &self.config.decode_limits);
            remove_file(&path)?;
            self.forget_front();
            self.counters.chunks_dropped_full += 1;
            self.counters.bytes_dropped_full += bytes;
            self.counters.records_dropped_full += u64::from(records.unwrap_or(0));
            tracing::warn!(
                file = %path.display(),
                bytes,
                records,
                "spool full: oldest chunk dropped"
            );
        }
        sync_dir(&self.dir)
    }

    /// Moves `path` into the subdirectory `sub`, durably; returns the new path.
    fn set_aside(&self, sub: &str, path: &Path) -> Result<PathBuf, SinkError> {
        let sub_dir = self.dir.join(sub);
        fs::create_dir_all(&sub_dir).map_err(|e| SinkError::io("create directory", &sub_dir, e))?;
        let name = path.file_name().unwrap_or_default();
        let dest = sub_dir.join(name);
        fs::rename(path, &dest).map_err(|e| SinkError::io("move aside", path, e))?;
        sync_dir(&sub_dir)?;
        sync_dir(&self.dir)?;
        Ok(dest)
    }

    /// Counts newly set-aside files and deletes the oldest while `rejected/` and
    /// `corrupt/` hold more than their cap. A file set aside under a name already
    /// there (a chunk replayed after a restart) replaced the earlier one: that entry is
    /// forgotten, not counted twice.
    fn track_set_aside(&mut self, paths: Vec<PathBuf>) -> Result<(), SinkError> {
        if let Some(i) = self
            .set_aside
            .iter()
            .position(|s| s.paths.first() == paths.first())
            && let Some(old) = self.set_aside.remove(i)
        {
            self.set_aside_bytes = self.set_aside_bytes.saturating_sub(old.bytes);
        }
        let bytes = paths
            .iter()
            .filter_map(|p| fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        self.set_aside.push_back(SetAside { paths, bytes });
        self.set_aside_bytes += bytes;
        self.trim_set_aside();
        Ok(())
    }

    /// Deletes the oldest set-aside files while over the cap. A file that cannot be
    /// deleted stops the trimming (logged; tried again next time) rather than failing
    /// the spool operation that set something aside, or the spool's start.
    fn trim_set_aside(&mut self) {
        while self.set_aside_bytes > self.config.set_aside_max_bytes {
            let Some(oldest) = self.set_aside.front() else {
                break;
            };
            if let Some(e) = oldest.paths.iter().find_map(|p| remove_file(p).err()) {
                tracing::warn!(
                    error = %e,
                    "rejected/ and corrupt/ over their cap, and the oldest file could not be deleted"
                );
                break;
            }
            let bytes = oldest.bytes;
            let frame = oldest.paths.first().cloned();
            self.set_aside.pop_front();
            self.set_aside_bytes = self.set_aside_bytes.saturating_sub(bytes);
            self.counters.set_aside_files_deleted += 1;
            if let Some(frame) = frame {
                tracing::warn!(
                    file = %frame.display(),
                    bytes,
                    cap = self.config.set_aside_max_bytes,
                    "rejected/ and corrupt/ over their cap: oldest set-aside chunk deleted"
                );
            }
        }
    }

    fn forget_front(&mut self) {
        self.forget(0);
    }

    fn forget(&mut self, i: usize) {
        if let Some(e) = self.entries.remove(i) {
            self.bytes -= e.bytes;
        }
    }
}

/// The record count in a spool file's header, if it can be read.
fn read_record_count(path: &Path, limits: &DecodeLimits) -> Option<u32> {
    use std::io::Read;
    let mut head = Vec::with_capacity(2048);
    File::open(path)
        .ok()?
        .take(2048)
        .read_to_end(&mut head)
        .ok()?;
    decode_header(&head, limits).ok().map(|h| h.record_count)
}

/// The frames a previous run set aside in `rejected/` and `corrupt/`, with their
/// notes, oldest (by modification time) first.
fn scan_set_aside(dir: &Path) -> Result<VecDeque<SetAside>, SinkError> {
    let mut found = Vec::new();
    for sub in [REJECTED_DIR, CORRUPT_DIR] {
        let sub_dir = dir.join(sub);
        let read = match fs::read_dir(&sub_dir) {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(SinkError::io("list", &sub_dir, e)),
        };
        for item in read {
            let item = item.map_err(|e| SinkError::io("list", &sub_dir, e))?;
            let path = item.path();
            let meta = item
                .metadata()
                .map_err(|e| SinkError::io("stat", &path, e))?;
            if !meta.is_file() || path.extension().is_some_and(|e| e == "reason") {
                continue; // a note counts with its frame
            }
            let mut note = path.clone().into_os_string();
            note.push(".reason");
            let note = PathBuf::from(note);
            let mut set_aside = SetAside {
                paths: vec![path],
                bytes: meta.len(),
            };
            if let Ok(note_meta) = fs::metadata(&note) {
                set_aside.bytes += note_meta.len();
                set_aside.paths.push(note);
            }
            let age = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            found.push((age, set_aside));
        }
    }
    found.sort_by_key(|(age, _)| *age);
    Ok(found.into_iter().map(|(_, s)| s).collect())
}

fn parse_order(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SUFFIX)?;
    let digits = stem.get(..ORDER_DIGITS)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match stem.as_bytes().get(ORDER_DIGITS) {
        None | Some(b'-') => digits.parse().ok(),
        Some(_) => None,
    }
}

/// Writes `bytes` to a new file at `path` and `fsync`s it.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), SinkError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| SinkError::io("create", path, e))?;
    file.write_all(bytes)
        .map_err(|e| SinkError::io("write", path, e))?;
    file.sync_all().map_err(|e| SinkError::io("fsync", path, e))
}

/// `fsync`s a directory, so that entries created, renamed or removed in it persist.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), SinkError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SinkError::io("fsync directory", dir, e))
}

fn remove_file(path: &Path) -> Result<(), SinkError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SinkError::io("remove", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!(parse_order("00000000000000000042-ab-7.chunk"), Some(42));
        assert_eq!(parse_order("00000000000000000042.chunk"), Some(42));
        assert_eq!(parse_order("00000000000000000042-ab-7.chunk.tmp"), None);
        assert_eq!(parse_order("0000000000000000004x-ab-7.chunk"), None);
        assert_eq!(parse_order("000000000000000000421.chunk"), None);
        assert_eq!(parse_order("notes.txt"), None);
    }
}
