//! The durable spool: encoded chunk frames kept on disk until the collector has them.
//!
//! Layout of a spool directory:
//!
//! ```text
//! DIR/00000000000000000042-<instance>-<sequence>.chunk   a frame, exactly as sent
//! DIR/*.chunk.tmp                                         a frame being written (removed on open)
//! DIR/corrupt/…                                           frames that failed verification or could not be read
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
//! (a leftover `.tmp` is deleted on [`Spool::open`]). Files are verified (header and
//! payload checksums) when they are read for sending, not on open, so opening a
//! large spool is quick.
//!
//! The spool directory is hostile ground ([`StateDir`]): every entry is reached
//! relative to the directory's descriptor, never through a link; only regular files
//! carrying the spool's own names are read or deleted; a link, FIFO, socket, device
//! or directory found under one of those names is moved aside (to `corrupt/`, or
//! renamed in place) and counted ([`SpoolCounters::foreign_entries`]), and so is a
//! `corrupt` or `rejected` that is not a real directory. A file that cannot be read
//! (permissions, I/O errors) or is larger than any frame can be is set aside too and
//! the next one is sent: one bad file never stops delivery. A full disk (`ENOSPC`,
//! `EDQUOT`) while spooling drops the oldest spooled frames to make room (counted
//! apart from the cap's drops), and refuses the new frame only when nothing is left
//! to drop. What the spool creates is private: directories `0700`, files `0600`.
//!
//! The spool is a plain synchronous type; [`CollectorSink`](crate::CollectorSink)
//! calls it from blocking tasks.

use std::{
    collections::VecDeque,
    ffi::{OsStr, OsString},
    io::{self, Read, Write},
    path::{Path, PathBuf},
};

use flow_batch::wire::{
    BatchId, ChunkHeader, DecodeLimits, MAX_HEADER_LEN, decode_header, verify_frame,
};

use crate::{
    error::SinkError,
    state_dir::{EntryKind, StateDir, free_name},
    window_losses::WindowLosses,
};

/// Default size cap of a spool: 1 GiB.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1 << 30;

const SUFFIX: &str = ".chunk";
const TMP_SUFFIX: &str = ".tmp";
const REASON_SUFFIX: &str = ".reason";
/// What an entry that is not ours is renamed to, when it cannot go to `corrupt/`.
const NOT_OURS_SUFFIX: &str = ".not-ours";
const ORDER_DIGITS: usize = 20;
/// Subdirectory of frames that failed verification or could not be read.
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
    /// caller decides (a caller with a [`RecordJournal`](https://docs.rs/flowexporter) keeps
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
    /// Frames deleted because the disk was full (`ENOSPC`, `EDQUOT`) while a new frame
    /// was written, to make room for it ([`WhenFull::DropOldest`]); the spool's own
    /// cap was not reached.
    pub chunks_dropped_no_space: u64,
    /// Bytes of those frames.
    pub bytes_dropped_no_space: u64,
    /// Records in those frames (from their headers; 0 for an unreadable header).
    pub records_dropped_no_space: u64,
    /// New frames the spool could not write because the disk was full and nothing
    /// was left to drop (or [`WhenFull::RefuseNewest`] forbade dropping):
    /// [`Spool::push`] returned [`SinkError::Io`] with `ENOSPC` or `EDQUOT`.
    pub chunks_refused_no_space: u64,
    /// Files that failed verification (header, length or a checksum) or were larger
    /// than any frame can be, and were set aside in `corrupt/`.
    pub corrupt_files: u64,
    /// Spool files that could not be read (permission denied, I/O error, or not a
    /// regular file any more: a link, FIFO or directory put in a chunk's place), set
    /// aside in `corrupt/` when they could be moved, else skipped until the next start.
    pub unreadable_files: u64,
    /// Entries found under one of the spool's names that are not what the spool
    /// makes: a link, FIFO, socket, device or directory named like a chunk, or a
    /// `corrupt`/`rejected` that is not a real directory. Moved aside (never
    /// followed, never deleted).
    pub foreign_entries: u64,
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
    name: OsString,
    bytes: u64,
}

/// An on-disk queue of encoded frames, bounded in bytes, replayed oldest first.
#[derive(Debug)]
pub struct Spool {
    root: StateDir,
    config: SpoolConfig,
    entries: VecDeque<Entry>,
    bytes: u64,
    next_order: u64,
    /// Files in `rejected/` and `corrupt/`, oldest first.
    set_aside: VecDeque<SetAside>,
    set_aside_bytes: u64,
    counters: SpoolCounters,
    /// Where a [`CollectorSink`](crate::CollectorSink) notes the records of each
    /// window dropped to make room, for the window's completeness.
    losses: Option<WindowLosses>,
}

/// A frame set aside in `rejected/` or `corrupt/`, with its `.reason` note if any
/// (or a note whose frame is gone).
#[derive(Debug)]
struct SetAside {
    /// [`REJECTED_DIR`] or [`CORRUPT_DIR`].
    sub: &'static str,
    /// The frame first, then its note.
    names: Vec<OsString>,
    bytes: u64,
}

/// Why the oldest frames are dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DropCause {
    /// Over [`SpoolConfig::max_bytes`].
    Full,
    /// The disk is full (`ENOSPC`, `EDQUOT`).
    NoSpace,
}

/// Why a spool file is set aside in `corrupt/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Failed verification, or larger than any frame.
    Corrupt,
    /// Could not be read.
    Unreadable,
}

impl Spool {
    /// Opens (creating if needed, `0700`) the spool in `dir` and picks up the frames a
    /// previous run left there. Leftover `.tmp` files (a write cut short by a crash)
    /// are deleted. Entries named like chunks that are not regular files (links,
    /// FIFOs, directories), and a `corrupt` or `rejected` that is not a directory,
    /// are moved aside and counted ([`SpoolCounters::foreign_entries`]). If the frames
    /// found exceed the cap and `when_full` is [`WhenFull::DropOldest`], the oldest
    /// are dropped now.
    pub fn open(dir: impl AsRef<Path>, config: SpoolConfig) -> Result<Spool, SinkError> {
        Spool::open_noting_losses(dir.as_ref(), config, None)
    }

    /// [`open`](Spool::open), noting in `losses` the records of every frame dropped to
    /// make room (full spool, full disk), by window; from the frames dropped on open
    /// on.
    pub(crate) fn open_noting_losses(
        path: &Path,
        config: SpoolConfig,
        losses: Option<WindowLosses>,
    ) -> Result<Spool, SinkError> {
        if config.max_bytes == 0 {
            return Err(SinkError::InvalidConfig {
                key: "spool max_bytes",
                value: "0".into(),
                reason: "must be more than zero",
            });
        }
        let root = StateDir::open(path).map_err(|e| SinkError::io("open directory", path, e))?;
        let items = root
            .list()
            .map_err(|e| SinkError::io("list", root.path(), e))?;
        let mut spool = Spool {
            root,
            config,
            entries: VecDeque::new(),
            bytes: 0,
            next_order: 0,
            set_aside: VecDeque::new(),
            set_aside_bytes: 0,
            counters: SpoolCounters::default(),
            losses,
        };
        let mut found = Vec::new();
        for item in items {
            let Some(name) = item.name_str() else {
                continue;
            };
            let tmp_of = name.strip_suffix(TMP_SUFFIX);
            let Some(order) = parse_order(tmp_of.unwrap_or(name)) else {
                continue; // not ours: left alone (corrupt/ and rejected/ are checked below)
            };
            if item.kind != EntryKind::File {
                spool.move_foreign(&item.name, item.kind);
                continue;
            }
            if tmp_of.is_some() {
                let file = spool.root.join(&item.name);
                tracing::info!(file = %file.display(), "removing a spool file whose write was cut short");
                if let Err(e) = spool.root.remove_file(&item.name) {
                    tracing::warn!(file = %file.display(), error = %e, "could not remove a spool file whose write was cut short");
                }
                continue;
            }
            let bytes = match spool.root.size_and_mtime(&item.name) {
                Ok(Some((len, _, _))) => len,
                Ok(None) => continue, // gone meanwhile
                Err(e) => {
                    // Reading it will tell whether it is usable.
                    tracing::warn!(file = %spool.root.join(&item.name).display(), error = %e, "could not stat a spool file");
                    0
                }
            };
            found.push(Entry {
                id: SpoolId(order),
                name: item.name,
                bytes,
            });
        }
        found.sort_by_key(|e| e.id);
        spool.next_order = found.last().map_or(0, |e| e.id.0 + 1);
        spool.bytes = found.iter().map(|e| e.bytes).sum();
        spool.counters.files_recovered = found.len() as u64;
        spool.entries = found.into();
        spool.scan_set_aside();
        spool.trim_set_aside();
        if !spool.entries.is_empty() {
            tracing::info!(
                dir = %spool.root.path().display(),
                files = spool.entries.len(),
                bytes = spool.bytes,
                "picked up spooled chunks from a previous run"
            );
        }
        if spool.config.when_full == WhenFull::DropOldest {
            spool.make_room(0);
        }
        Ok(spool)
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        self.root.path()
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
    ///
    /// A full disk (`ENOSPC`, `EDQUOT` while writing, syncing or renaming) does not
    /// fail at once: the partial file is removed and, with [`WhenFull::DropOldest`],
    /// the oldest frames are dropped one at a time (counted in
    /// [`chunks_dropped_no_space`](SpoolCounters::chunks_dropped_no_space)) until the
    /// frame fits. Only when nothing is left to drop is the frame refused: a
    /// [`SinkError::Io`] whose source has the operating system's `ENOSPC` (or
    /// `EDQUOT`), counted in
    /// [`chunks_refused_no_space`](SpoolCounters::chunks_refused_no_space). The next
    /// push tries again, so the spool works again as soon as there is space.
    pub fn push(&mut self, frame: &[u8]) -> Result<SpoolId, SinkError> {
        self.push_frame(frame, true)
    }

    /// Like [`push`](Spool::push), except that a full disk never costs a spooled
    /// frame: `ENOSPC`/`EDQUOT` is returned at once (and not counted), for a caller
    /// that has somewhere else to keep the frame for a while (the collector sink's
    /// memory queue) and would rather not lose older data to make room.
    pub fn push_keeping_oldest(&mut self, frame: &[u8]) -> Result<SpoolId, SinkError> {
        self.push_frame(frame, false)
    }

    fn push_frame(&mut self, frame: &[u8], drop_for_space: bool) -> Result<SpoolId, SinkError> {
        let header = decode_header(frame, &self.config.decode_limits)
            .map_err(|source| SinkError::InvalidFrame { source })?;
        let len = frame.len() as u64;
        let fits = len <= self.config.max_bytes;
        if fits && self.config.when_full == WhenFull::DropOldest {
            self.make_room(len);
        }
        if !fits || self.bytes + len > self.config.max_bytes {
            self.counters.chunks_refused_full += 1;
            tracing::warn!(
                dir = %self.root.path().display(),
                batch_id = %header.batch_id(),
                records = header.record_count,
                "spool full: chunk refused"
            );
            return Err(SinkError::SpoolFull {
                path: self.root.path().to_path_buf(),
                spooled_bytes: self.bytes,
                frame_bytes: len,
                max_bytes: self.config.max_bytes,
            });
        }

        let id = SpoolId(self.next_order);
        let name = OsString::from(format!(
            "{:0width$}-{}-{}{SUFFIX}",
            id.0,
            header.instance,
            header.sequence,
            width = ORDER_DIGITS
        ));
        let mut cleared = false;
        loop {
            match self.write_chunk(&name, frame) {
                Ok(()) => break,
                Err((operation, error)) if is_no_space(&error) => {
                    if !drop_for_space {
                        return Err(SinkError::io(operation, self.root.join(&name), error));
                    }
                    if self.config.when_full == WhenFull::DropOldest && !self.entries.is_empty() {
                        self.drop_front(DropCause::NoSpace);
                        continue;
                    }
                    self.counters.chunks_refused_no_space += 1;
                    tracing::warn!(
                        dir = %self.root.path().display(),
                        batch_id = %header.batch_id(),
                        records = header.record_count,
                        error = %error,
                        "disk full and nothing left to drop: chunk not spooled"
                    );
                    return Err(SinkError::io(operation, self.root.join(&name), error));
                }
                Err((operation, error)) => {
                    // A link, FIFO or directory planted under the name of the file
                    // being written (or its .tmp) is not ours: moved aside, once.
                    let mut tmp = name.clone();
                    tmp.push(TMP_SUFFIX);
                    let mut moved = false;
                    for n in [&tmp, &name] {
                        if !cleared
                            && let Ok(Some(kind)) = self.root.kind(n)
                            && kind != EntryKind::File
                        {
                            self.move_foreign(n, kind);
                            moved = true;
                        }
                    }
                    if moved {
                        cleared = true;
                        continue;
                    }
                    return Err(SinkError::io(operation, self.root.join(&name), error));
                }
            }
        }
        self.next_order += 1;
        self.bytes += len;
        self.entries.push_back(Entry {
            id,
            name,
            bytes: len,
        });
        self.counters.chunks_spooled += 1;
        self.counters.bytes_spooled += len;
        Ok(id)
    }

    /// Writes `frame` to `name.tmp`, `fsync`s it, renames it to `name` and `fsync`s
    /// the directory. On failure nothing is left behind (neither the `.tmp` nor a
    /// file renamed into place whose directory entry could not be synced).
    fn write_chunk(&self, name: &OsStr, frame: &[u8]) -> Result<(), (&'static str, io::Error)> {
        let mut tmp = name.to_os_string();
        tmp.push(TMP_SUFFIX);
        let written = (|| {
            let mut file = self.root.create_file(&tmp).map_err(|e| ("create", e))?;
            file.write_all(frame).map_err(|e| ("write", e))?;
            file.sync_all().map_err(|e| ("fsync", e))?;
            drop(file);
            self.root
                .rename(&tmp, &self.root, name)
                .map_err(|e| ("rename into place", e))
        })();
        if let Err(failed) = written {
            if let Err(e) = self.root.remove_file(&tmp) {
                tracing::warn!(file = %self.root.join(&tmp).display(), error = %e, "could not remove a partial spool file");
            }
            return Err(failed);
        }
        if let Err(e) = self.root.sync() {
            if let Err(e) = self.root.remove_file(name) {
                tracing::warn!(file = %self.root.join(name).display(), error = %e, "could not remove a spool file whose directory entry was not synced");
            }
            return Err(("fsync directory", e));
        }
        Ok(())
    }

    /// The oldest frame, read (at most the largest frame
    /// [`decode_limits`](SpoolConfig::decode_limits) allow) and verified (header,
    /// length and both checksums).
    ///
    /// A file that fails verification or is too large is moved to `corrupt/`
    /// ([`corrupt_files`](SpoolCounters::corrupt_files)); a file that cannot be read
    /// (permission denied, an I/O error, a link, FIFO or directory in its place) is
    /// moved there too ([`unreadable_files`](SpoolCounters::unreadable_files)), or
    /// skipped until the next start if it cannot be moved. Each is logged with a
    /// warning naming it, and the next one is tried. An error is returned only for
    /// what is not about one file (the process out of file descriptors or memory):
    /// the caller retries later.
    pub fn oldest(&mut self) -> Result<Option<SpooledChunk>, SinkError> {
        let max = max_frame_len(&self.config.decode_limits);
        loop {
            let Some(entry) = self.entries.front() else {
                return Ok(None);
            };
            let (id, name) = (entry.id, entry.name.clone());
            let path = self.root.join(&name);
            let frame = match self.root.read_bounded(&name, max) {
                Ok(frame) => frame,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // Deleted behind our back: nothing to send.
                    tracing::warn!(file = %path.display(), "spool file vanished");
                    self.forget_front();
                    continue;
                }
                Err(e) if is_transient(&e) => return Err(SinkError::io("read", &path, e)),
                Err(e) if e.kind() == io::ErrorKind::FileTooLarge => {
                    self.set_aside_front(Fault::Corrupt, &e);
                    continue;
                }
                Err(e) => {
                    self.set_aside_front(Fault::Unreadable, &e);
                    continue;
                }
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
                Err(error) => self.set_aside_front(Fault::Corrupt, &error),
            }
        }
    }

    /// Whether `id` is still spooled (not delivered, rejected or dropped).
    pub fn contains(&self, id: SpoolId) -> bool {
        self.entries.iter().any(|e| e.id == id)
    }

    /// Deletes a delivered frame. Returns whether it was still spooled (it may have
    /// been dropped to make room meanwhile). A file that cannot be deleted is
    /// forgotten all the same (logged): the collector has it, and drops it as a
    /// duplicate if the next start sends it again.
    pub fn remove(&mut self, id: SpoolId) -> Result<bool, SinkError> {
        let Some(i) = self.entries.iter().position(|e| e.id == id) else {
            return Ok(false);
        };
        let name = self.entries[i].name.clone();
        self.forget(i);
        self.counters.chunks_removed += 1;
        let removed = self.root.remove_file(&name).and_then(|_| self.root.sync());
        if let Err(e) = removed {
            tracing::warn!(
                file = %self.root.join(&name).display(),
                error = %e,
                "a delivered chunk could not be deleted from the spool; the next start may send it again"
            );
        }
        Ok(true)
    }

    /// Moves a frame the collector refused for good to `rejected/`, next to a
    /// `.reason` file holding `reason` (the status and the start of the response).
    ///
    /// Returns where it went. Neither a full disk nor anything else about the
    /// set-aside folder fails this: a note that cannot be written is skipped, and a
    /// frame that cannot be moved stays where it is, forgotten until the next start
    /// (`Ok(None)`); both are logged.
    pub fn reject(&mut self, id: SpoolId, reason: &str) -> Result<Option<PathBuf>, SinkError> {
        let Some(i) = self.entries.iter().position(|e| e.id == id) else {
            return Ok(None);
        };
        let name = self.entries[i].name.clone();
        self.forget(i);
        self.counters.rejected_files += 1;
        let (dir, dest) = match self.move_file_to(REJECTED_DIR, &name) {
            Ok(moved) => moved,
            Err(e) => {
                tracing::warn!(
                    file = %self.root.join(&name).display(),
                    error = %e,
                    "a chunk the collector refused could not be moved to rejected/: left in place, not sent again before the next start"
                );
                return Ok(None);
            }
        };
        let mut note = dest.clone();
        note.push(REASON_SUFFIX);
        let path = dir.join(&dest);
        let mut names = vec![dest];
        match write_note(&dir, &note, reason) {
            Ok(()) => names.push(note),
            Err(e) => {
                if let Err(e) = dir.remove_file(&note) {
                    tracing::debug!(error = %e, "could not remove a partial note");
                }
                tracing::warn!(
                    file = %dir.join(&note).display(),
                    error = %e,
                    reason,
                    "the note saying why a chunk was rejected could not be written; skipped"
                );
            }
        }
        self.track_set_aside(REJECTED_DIR, &dir, names);
        Ok(Some(path))
    }

    /// Drops the oldest frames until `incoming` more bytes fit under the cap.
    fn make_room(&mut self, incoming: u64) {
        let mut dropped = false;
        while self.bytes + incoming > self.config.max_bytes && !self.entries.is_empty() {
            self.drop_front(DropCause::Full);
            dropped = true;
        }
        if dropped && let Err(e) = self.root.sync() {
            tracing::warn!(dir = %self.root.path().display(), error = %e, "fsync of the spool directory failed");
        }
    }

    /// Deletes the oldest frame and counts it under `cause`. One that cannot be
    /// deleted (or is not a regular file any more) is forgotten all the same, and
    /// logged; the next start finds it again.
    fn drop_front(&mut self, cause: DropCause) {
        let Some(entry) = self.entries.front() else {
            return;
        };
        let (name, bytes) = (entry.name.clone(), entry.bytes);
        let header = read_header(&self.root, &name, &self.config.decode_limits);
        let records = header.as_ref().map(|h| h.record_count);
        if let (Some(losses), Some(header)) = (&self.losses, &header) {
            losses.dropped(header);
        }
        let removed = self.root.remove_file(&name);
        self.forget_front();
        let records_n = u64::from(records.unwrap_or(0));
        let what = match cause {
            DropCause::Full => {
                self.counters.chunks_dropped_full += 1;
                self.counters.bytes_dropped_full += bytes;
                self.counters.records_dropped_full += records_n;
                "spool full: oldest chunk dropped"
            }
            DropCause::NoSpace => {
                self.counters.chunks_dropped_no_space += 1;
                self.counters.bytes_dropped_no_space += bytes;
                self.counters.records_dropped_no_space += records_n;
                "disk full: oldest chunk dropped to make room"
            }
        };
        let file = self.root.join(&name);
        match removed {
            Ok(_) => tracing::warn!(file = %file.display(), bytes, records, "{what}"),
            Err(e) => tracing::warn!(
                file = %file.display(),
                bytes,
                records,
                error = %e,
                "{what}, but its file could not be deleted"
            ),
        }
    }

    /// Sets the oldest frame aside in `corrupt/` for `fault`, counts and logs it, and
    /// forgets it.
    fn set_aside_front(&mut self, fault: Fault, error: &dyn std::error::Error) {
        let Some(entry) = self.entries.front() else {
            return;
        };
        let name = entry.name.clone();
        self.forget_front();
        let (what, counter) = match fault {
            Fault::Corrupt => ("corrupt spool file", &mut self.counters.corrupt_files),
            Fault::Unreadable => ("unreadable spool file", &mut self.counters.unreadable_files),
        };
        *counter += 1;
        let path = self.root.join(&name);
        let error = crate::error_chain(error);
        let kind = match self.root.kind(&name) {
            Ok(Some(kind)) => kind,
            Ok(None) => {
                tracing::warn!(file = %path.display(), error, "{what} skipped (and gone since)");
                return;
            }
            Err(_) => EntryKind::Other,
        };
        let moved = if kind == EntryKind::File {
            self.move_file_to(CORRUPT_DIR, &name).map(|(dir, dest)| {
                let path = dir.join(&dest);
                self.track_set_aside(CORRUPT_DIR, &dir, vec![dest]);
                path
            })
        } else {
            self.move_not_ours(&name)
        };
        match moved {
            Ok(dest) => tracing::warn!(
                file = %path.display(),
                kind = kind.describe(),
                moved_to = %dest.display(),
                error,
                "{what} skipped"
            ),
            Err(e) => tracing::warn!(
                file = %path.display(),
                kind = kind.describe(),
                error,
                move_error = %e,
                "{what} skipped; it could not be moved to corrupt/ and stays until the next start"
            ),
        }
    }

    /// An entry named like a chunk (or a `.tmp`) found by [`Spool::open`] that is not
    /// a regular file: moved aside, counted, logged.
    fn move_foreign(&mut self, name: &OsStr, kind: EntryKind) {
        let path = self.root.join(name);
        match self.move_not_ours(name) {
            Ok(dest) => {
                self.counters.foreign_entries += 1;
                tracing::warn!(
                    file = %path.display(),
                    kind = kind.describe(),
                    moved_to = %dest.display(),
                    "not a spool file (not a regular file): moved aside, not followed"
                );
            }
            Err(e) => tracing::warn!(
                file = %path.display(),
                kind = kind.describe(),
                error = %e,
                "not a spool file (not a regular file), and it could not be moved aside: ignored"
            ),
        }
    }

    /// Moves the regular file `name` of the spool into `sub` under the same name
    /// (replacing an earlier copy of it, but not a link, FIFO or directory planted
    /// there: then under a free name), durably; returns the folder and the new name.
    fn move_file_to(
        &mut self,
        sub: &'static str,
        name: &OsStr,
    ) -> io::Result<(StateDir, OsString)> {
        let dir = self.open_sub(sub, true)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{sub}/ could not be created"),
            )
        })?;
        let dest = match dir.kind(name)? {
            Some(kind) if kind != EntryKind::File => free_name(&dir, name)?,
            _ => name.to_os_string(),
        };
        self.root.rename(name, &dir, &dest)?;
        self.sync_after_move(&dir);
        Ok((dir, dest))
    }

    /// Moves entry `name` of the spool (not a regular file, or not ours) aside
    /// without following or replacing anything: into `corrupt/` under a free name,
    /// or, failing that, renamed in place to `name.not-ours`.
    fn move_not_ours(&mut self, name: &OsStr) -> io::Result<PathBuf> {
        let into_corrupt = self.open_sub(CORRUPT_DIR, true).and_then(|dir| {
            let dir = dir.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
            let dest = free_name(&dir, name)?;
            self.root.rename(name, &dir, &dest)?;
            self.sync_after_move(&dir);
            Ok(dir.join(dest))
        });
        match into_corrupt {
            Ok(dest) => Ok(dest),
            Err(first) => {
                let mut aside = name.to_os_string();
                aside.push(NOT_OURS_SUFFIX);
                let aside = free_name(&self.root, &aside)?;
                self.root
                    .rename(name, &self.root, &aside)
                    .map_err(|_| first)?;
                if let Err(e) = self.root.sync() {
                    tracing::warn!(dir = %self.root.path().display(), error = %e, "fsync of the spool directory failed");
                }
                Ok(self.root.join(aside))
            }
        }
    }

    fn sync_after_move(&self, dir: &StateDir) {
        for d in [dir, &self.root] {
            if let Err(e) = d.sync() {
                tracing::warn!(dir = %d.path().display(), error = %e, "fsync of a spool directory failed");
            }
        }
    }

    /// Opens `corrupt/` or `rejected/` (creating it when `create`) without following a
    /// link. One that is not a directory (a link, a file, a FIFO) is not ours: it is
    /// renamed aside to `<sub>.not-ours` (never followed or deleted), counted in
    /// [`SpoolCounters::foreign_entries`], and a real directory is made in its place.
    fn open_sub(&mut self, sub: &'static str, create: bool) -> io::Result<Option<StateDir>> {
        match self.root.sub(sub, create) {
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                let kind = self.root.kind(sub)?.unwrap_or(EntryKind::Other);
                let mut aside = OsString::from(sub);
                aside.push(NOT_OURS_SUFFIX);
                let aside = free_name(&self.root, &aside)?;
                if let Err(e) = self.root.rename(sub, &self.root, &aside) {
                    tracing::warn!(
                        dir = %self.root.join(sub).display(),
                        kind = kind.describe(),
                        error = %e,
                        "not a directory of the spool's, and it could not be renamed aside"
                    );
                    return Err(e);
                }
                self.counters.foreign_entries += 1;
                tracing::warn!(
                    dir = %self.root.join(sub).display(),
                    kind = kind.describe(),
                    moved_to = %self.root.join(&aside).display(),
                    "not a directory of the spool's: renamed aside (not followed), a real directory made in its place"
                );
                if let Err(e) = self.root.sync() {
                    tracing::warn!(dir = %self.root.path().display(), error = %e, "fsync of the spool directory failed");
                }
                self.root.sub(sub, true)
            }
            other => other,
        }
    }

    /// Finds what a previous run set aside in `rejected/` and `corrupt/`: regular
    /// files with the spool's names (frames, and their `.reason` notes, counted with
    /// them), oldest (by modification time) first. Anything else there is not ours
    /// and is neither counted nor ever deleted.
    fn scan_set_aside(&mut self) {
        let mut found = Vec::new();
        for sub in [REJECTED_DIR, CORRUPT_DIR] {
            let dir = match self.open_sub(sub, false) {
                Ok(Some(dir)) => dir,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(dir = %self.root.join(sub).display(), error = %e, "could not open a set-aside folder");
                    continue;
                }
            };
            let items = match dir.list() {
                Ok(items) => items,
                Err(e) => {
                    tracing::warn!(dir = %dir.path().display(), error = %e, "could not list a set-aside folder");
                    continue;
                }
            };
            let files: std::collections::HashSet<&OsStr> = items
                .iter()
                .filter(|i| i.kind == EntryKind::File)
                .map(|i| i.name.as_os_str())
                .collect();
            for item in &items {
                if item.kind != EntryKind::File {
                    continue;
                }
                let Some(name) = item.name_str() else {
                    continue;
                };
                let names = if let Some(frame) = name.strip_suffix(REASON_SUFFIX) {
                    if parse_order(frame).is_none() || files.contains(OsStr::new(frame)) {
                        continue; // not ours, or counted with its frame
                    }
                    vec![item.name.clone()] // a note whose frame is gone
                } else if parse_order(name).is_some() {
                    let mut note = item.name.clone();
                    note.push(REASON_SUFFIX);
                    if files.contains(note.as_os_str()) {
                        vec![item.name.clone(), note]
                    } else {
                        vec![item.name.clone()]
                    }
                } else {
                    continue;
                };
                let mut bytes = 0;
                let mut age = (0, 0);
                for (i, n) in names.iter().enumerate() {
                    if let Ok(Some((len, secs, nanos))) = dir.size_and_mtime(n) {
                        bytes += len;
                        if i == 0 {
                            age = (secs, nanos);
                        }
                    }
                }
                found.push((age, SetAside { sub, names, bytes }));
            }
        }
        found.sort_by_key(|(age, _)| *age);
        self.set_aside_bytes = found.iter().map(|(_, s)| s.bytes).sum();
        self.set_aside = found.into_iter().map(|(_, s)| s).collect();
    }

    /// Counts newly set-aside files and deletes the oldest while `rejected/` and
    /// `corrupt/` hold more than their cap. A file set aside under a name already
    /// there (a chunk replayed after a restart) replaced the earlier one: that entry is
    /// forgotten, not counted twice.
    fn track_set_aside(&mut self, sub: &'static str, dir: &StateDir, names: Vec<OsString>) {
        if let Some(i) = self
            .set_aside
            .iter()
            .position(|s| s.sub == sub && s.names.first() == names.first())
            && let Some(old) = self.set_aside.remove(i)
        {
            self.set_aside_bytes = self.set_aside_bytes.saturating_sub(old.bytes);
        }
        let bytes = names
            .iter()
            .filter_map(|n| dir.size_and_mtime(n).ok().flatten())
            .map(|(len, _, _)| len)
            .sum();
        self.set_aside.push_back(SetAside { sub, names, bytes });
        self.set_aside_bytes += bytes;
        self.trim_set_aside();
    }

    /// Deletes the oldest set-aside files while over the cap: only regular files with
    /// the spool's names, reached without following links. A file that cannot be
    /// deleted stops the trimming (logged; tried again next time) rather than failing
    /// the spool operation that set something aside, or the spool's start; one that
    /// is no longer a regular file is not ours: left alone and forgotten.
    fn trim_set_aside(&mut self) {
        while self.set_aside_bytes > self.config.set_aside_max_bytes {
            let Some(sub) = self.set_aside.front().map(|s| s.sub) else {
                break;
            };
            let dir = match self.open_sub(sub, false) {
                Ok(dir) => dir,
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "rejected/ and corrupt/ over their cap, and {sub}/ could not be opened"
                    );
                    break;
                }
            };
            let Some(oldest) = self.set_aside.front() else {
                break;
            };
            let mut deleted = false;
            let mut failed = None;
            if let Some(dir) = &dir {
                for (i, name) in oldest.names.iter().enumerate() {
                    match dir.remove_file(name) {
                        Ok(removed) => deleted |= removed && i == 0,
                        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                            tracing::warn!(
                                file = %dir.join(name).display(),
                                error = %e,
                                "a set-aside file is not a regular file any more: left alone"
                            );
                        }
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
            }
            if let Some(e) = failed {
                tracing::warn!(
                    error = %e,
                    "rejected/ and corrupt/ over their cap, and the oldest file could not be deleted"
                );
                break;
            }
            let bytes = oldest.bytes;
            let frame = dir
                .as_ref()
                .zip(oldest.names.first())
                .map(|(d, n)| d.join(n));
            self.set_aside.pop_front();
            self.set_aside_bytes = self.set_aside_bytes.saturating_sub(bytes);
            if deleted {
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
    }

    fn forget_front(&mut self) {
        self.forget(0);
    }

    fn forget(&mut self, i: usize) {
        if let Some(e) = self.entries.remove(i) {
            self.bytes = self.bytes.saturating_sub(e.bytes);
        }
    }
}

/// The largest file a frame within `limits` can be: the largest header (the fixed
/// part, the longest host name, a completeness block, the checksum) and the largest
/// payload.
fn max_frame_len(limits: &DecodeLimits) -> u64 {
    MAX_HEADER_LEN as u64 + limits.max_payload_len as u64
}

/// The disk (or the quota) is full.
fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// An error about the process, not the file: out of descriptors or memory.
fn is_transient(e: &io::Error) -> bool {
    use rustix::io::Errno;
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::OutOfMemory
    ) || [Errno::MFILE, Errno::NFILE, Errno::NOMEM]
        .iter()
        .any(|errno| e.raw_os_error() == Some(errno.raw_os_error()))
}

/// A spool file's header (its record count, its window), if it can be read.
fn read_header(dir: &StateDir, name: &OsStr, limits: &DecodeLimits) -> Option<ChunkHeader> {
    let mut head = Vec::with_capacity(MAX_HEADER_LEN);
    dir.open_file(name)
        .ok()?
        .take(MAX_HEADER_LEN as u64)
        .read_to_end(&mut head)
        .ok()?;
    decode_header(&head, limits).ok()
}

/// Writes a `.reason` note (`0600`) and `fsync`s it and its folder.
fn write_note(dir: &StateDir, name: &OsStr, text: &str) -> io::Result<()> {
    let mut file = dir.create_file(name)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    dir.sync()
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
