//! The ledger: its configuration, its state in memory, appending, checkpoints and
//! pruning.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs::File,
    io::{self, Write},
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
    time::SystemTime,
};

use flow_batch::wire::BatchId;

use super::{
    LedgerError,
    checkpoint::{self, Body, CheckpointSource, PendingChunk},
    dedup::Dedup,
    emitted::{LogPosition, Pending},
    entry, files,
};
use crate::output::OutputPosition;

/// The ledger's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LedgerConfig {
    /// A new segment is started when the next entry would take the current one past
    /// this size (an entry larger than this gets a segment of its own). Default
    /// 64 MiB.
    pub segment_bytes: u64,
    /// `fdatasync` every entry before [`append`](Ledger::append) returns, and sync
    /// checkpoints and the directory (default true). Off only for tests and
    /// benchmarks: a crash may then lose acknowledged chunks.
    pub sync: bool,
}

impl Default for LedgerConfig {
    fn default() -> LedgerConfig {
        LedgerConfig {
            segment_bytes: 64 << 20,
            sync: true,
        }
    }
}

impl LedgerConfig {
    /// Sets [`segment_bytes`](LedgerConfig::segment_bytes) (at least 1).
    pub fn with_segment_bytes(mut self, segment_bytes: u64) -> LedgerConfig {
        self.segment_bytes = segment_bytes.max(1);
        self
    }

    /// Sets [`sync`](LedgerConfig::sync).
    pub fn with_sync(mut self, sync: bool) -> LedgerConfig {
        self.sync = sync;
        self
    }
}

/// What the ledger holds and has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LedgerStats {
    /// Bytes of segments on disk.
    pub bytes: u64,
    /// Segments on disk.
    pub segments: u64,
    /// Entries appended since open.
    pub entries_appended: u64,
    /// Appends that failed (nothing was stored; the chunk was refused).
    pub append_failures: u64,
    /// Stored chunks with flows not yet emitted (as marked so far).
    pub pending_chunks: u64,
    /// Hosts in the set of stored batch IDs.
    pub dedup_hosts: u64,
    /// Exporter runs (host, instance) in the set of stored batch IDs.
    pub dedup_runs: u64,
    /// Checkpoints written since open.
    pub checkpoints: u64,
    /// Checkpoints that could not be written (the previous one stays).
    pub checkpoint_failures: u64,
    /// Segments deleted by pruning since open.
    pub segments_pruned: u64,
    /// Exporter runs forgotten by the set of stored batch IDs after storing nothing
    /// for 7 days.
    pub dedup_runs_forgotten: u64,
    /// Files in the directory that are not the ledger's (odd names, FIFOs,
    /// directories, links), skipped at open.
    pub skipped_files: u64,
}

/// One segment on disk.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct SegmentInfo {
    /// Its size.
    pub(super) bytes: u64,
    /// The latest arrival time of its entries (`None`: no entry, or not read yet).
    pub(super) newest_arrival: Option<SystemTime>,
}

/// The segment appended to.
#[derive(Debug)]
struct Current {
    seq: u64,
    path: PathBuf,
    file: File,
    len: u64,
}

/// The collector's durable chunks, durable deduplication and emission checkpoint
/// (see the [module docs](super)).
#[derive(Debug)]
pub struct Ledger {
    pub(super) dir: PathBuf,
    pub(super) config: LedgerConfig,
    /// Every segment on disk, by sequence number.
    pub(super) segments: BTreeMap<u64, SegmentInfo>,
    /// The checkpoint read at open, until `recover` uses it.
    pub(super) loaded: Option<Body>,
    pub(super) checkpoint_source: CheckpointSource,
    output_position: Option<OutputPosition>,
    pub(super) recovered: bool,
    pub(super) dedup: Dedup,
    /// Chunks in the log with flows not yet emitted.
    pub(super) pending: HashMap<BatchId, Pending>,
    current: Option<Current>,
    /// The sequence number of the next segment.
    next_segment: u64,
    /// As of the last checkpoint written (or read): every entry before this is
    /// covered by it...
    pub(super) covered_end: LogPosition,
    /// ... and fully emitted, unless in one of these segments.
    pub(super) covered_unemitted: BTreeSet<u64>,
    buf: Vec<u8>,
    pub(super) stats: LedgerStats,
    /// Tests: the next write of an entry writes this many bytes, then fails.
    #[cfg(test)]
    pub(super) fail_next_write: Option<usize>,
}

/// A segment's file name: its sequence number, zero-padded to 20 digits.
pub(super) fn segment_name(seq: u64) -> String {
    format!("{seq:020}")
}

/// The sequence number a segment's file name stands for.
fn parse_segment_name(name: &str) -> Option<u64> {
    (name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()))
        .then(|| name.parse().ok())
        .flatten()
}

impl Ledger {
    /// Opens (creating it, mode 0750, if missing) the ledger in `dir` and reads its
    /// checkpoint. Call [`recover`](Ledger::recover) next: appending, checkpointing and
    /// pruning are refused until it ran, and [`contains`](Ledger::contains) knows only
    /// the checkpoint's batch IDs until then.
    pub fn open(dir: &Path, config: LedgerConfig) -> Result<Ledger, LedgerError> {
        let meta = match std::fs::symlink_metadata(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o750)
                    .create(dir)
                    .map_err(|e| LedgerError::io("create", dir, e))?;
                std::fs::symlink_metadata(dir).map_err(|e| LedgerError::io("open", dir, e))?
            }
            other => other.map_err(|e| LedgerError::io("open", dir, e))?,
        };
        if meta.file_type().is_symlink() {
            return Err(LedgerError::NotADirectory {
                path: dir.to_path_buf(),
                what: "a symbolic link",
            });
        }
        if !meta.is_dir() {
            return Err(LedgerError::NotADirectory {
                path: dir.to_path_buf(),
                what: "not a directory",
            });
        }
        let mut stats = LedgerStats::default();
        let mut segments = BTreeMap::new();
        let listing = std::fs::read_dir(dir).map_err(|e| LedgerError::io("list", dir, e))?;
        for item in listing {
            let item = item.map_err(|e| LedgerError::io("list", dir, e))?;
            let name = item.file_name();
            let name = name.to_str().unwrap_or("");
            let file_type = item
                .file_type()
                .map_err(|e| LedgerError::io("list", item.path(), e))?;
            match parse_segment_name(name) {
                Some(seq) if file_type.is_file() => {
                    let bytes = item
                        .metadata()
                        .map_err(|e| LedgerError::io("list", item.path(), e))?
                        .len();
                    segments.insert(
                        seq,
                        SegmentInfo {
                            bytes,
                            newest_arrival: None,
                        },
                    );
                }
                None if [
                    checkpoint::CURRENT,
                    checkpoint::PREVIOUS,
                    checkpoint::TEMPORARY,
                ]
                .contains(&name)
                    && file_type.is_file() => {}
                _ => {
                    stats.skipped_files += 1;
                    tracing::warn!(path = %item.path().display(), "not a ledger file: skipped");
                }
            }
        }
        let (body, checkpoint_source) =
            checkpoint::load(dir).map_err(|e| LedgerError::io("read checkpoint", dir, e))?;
        let mut dedup = Dedup::default();
        dedup.restore(&body.dedup);
        let last_on_disk = segments.keys().next_back().copied().unwrap_or(0);
        let next_segment = last_on_disk.max(body.log_end.segment).saturating_add(1);
        Ok(Ledger {
            dir: dir.to_path_buf(),
            config,
            segments,
            output_position: body.output_position.clone().map(OutputPosition),
            loaded: Some(body),
            checkpoint_source,
            recovered: false,
            dedup,
            pending: HashMap::new(),
            current: None,
            next_segment,
            covered_end: LogPosition::default(),
            covered_unemitted: BTreeSet::new(),
            buf: Vec::new(),
            stats,
            #[cfg(test)]
            fail_next_write: None,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The output's position recorded by the last intact checkpoint (`None` when there
    /// is none).
    pub fn output_position(&self) -> Option<&OutputPosition> {
        self.output_position.as_ref()
    }

    /// Which checkpoint was read at open.
    pub fn checkpoint_source(&self) -> CheckpointSource {
        self.checkpoint_source
    }

    /// Whether the chunk `batch` is stored.
    pub fn contains(&self, batch: &BatchId) -> bool {
        self.dedup.contains(batch)
    }

    /// Stores one chunk: writes its entry (then `fdatasync`s it when
    /// [`LedgerConfig::sync`]) before returning, and adds its batch ID to the stored
    /// set. On failure (`ENOSPC`, `EIO`) the segment is cut back to its length before
    /// and the error returned: nothing of the chunk is stored, and the ledger goes on
    /// (a later append may succeed). Does not check for duplicates: ask
    /// [`contains`](Ledger::contains) first.
    ///
    /// `record_count` is the number of output slots the chunk yields, each marked
    /// emitted with [`mark_emitted`](Ledger::mark_emitted): its records, and for the
    /// collector one more on the first chunk of a window (its completeness record,
    /// see `crate::completeness`).
    pub fn append(
        &mut self,
        batch: &BatchId,
        record_count: u32,
        arrival: SystemTime,
        frame: &[u8],
    ) -> Result<(), LedgerError> {
        if !self.recovered {
            return Err(LedgerError::NotRecovered);
        }
        let result = self.append_entry(batch, record_count, arrival, frame);
        if result.is_err() {
            self.stats.append_failures += 1;
        }
        let position = result?;
        self.stats.entries_appended += 1;
        self.dedup
            .insert(batch, super::recovery::epoch_secs(arrival));
        if record_count > 0 {
            self.pending
                .insert(batch.clone(), Pending::new(position, record_count));
        }
        Ok(())
    }

    /// Writes one entry; returns where it is.
    fn append_entry(
        &mut self,
        batch: &BatchId,
        record_count: u32,
        arrival: SystemTime,
        frame: &[u8],
    ) -> Result<LogPosition, LedgerError> {
        entry::encode(&mut self.buf, batch, record_count, arrival, frame)
            .map_err(|e| LedgerError::io("append", &self.dir, e))?;
        let entry_len = self.buf.len() as u64;
        let full = self.current.as_ref().is_some_and(|c| {
            c.len > 0 && c.len.saturating_add(entry_len) > self.config.segment_bytes
        });
        if full || self.current.is_none() {
            self.start_segment()?;
        }
        let Some(current) = self.current.as_mut() else {
            return Err(LedgerError::NotRecovered);
        };
        let before = current.len;
        #[cfg(test)]
        let injected = self.fail_next_write.take();
        #[cfg(not(test))]
        let injected: Option<usize> = None;
        let written = match injected {
            Some(partial) => current
                .file
                .write_all(self.buf.get(..partial).unwrap_or(&self.buf))
                .and(Err(io::Error::from_raw_os_error(
                    rustix::io::Errno::NOSPC.raw_os_error(),
                ))),
            None => current.file.write_all(&self.buf),
        };
        let (operation, result) = match written {
            Err(e) => ("append", Err(e)),
            Ok(()) if self.config.sync => ("sync", current.file.sync_data()),
            Ok(()) => ("append", Ok(())),
        };
        if let Err(e) = result {
            // Cut the partial entry away. When that fails too, or the sync failed (what
            // the kernel holds of the file is then uncertain), the segment is retired:
            // the next append starts a new one, and recovery skips the damage.
            let cut = current.file.set_len(before);
            let (seq, path) = (current.seq, current.path.clone());
            if cut.is_err() || operation == "sync" {
                self.current = None;
                if let Some(info) = self.segments.get_mut(&seq) {
                    info.bytes = std::fs::symlink_metadata(&path).map_or(info.bytes, |m| m.len());
                }
            }
            return Err(LedgerError::io(operation, path, e));
        }
        current.len += entry_len;
        let position = LogPosition {
            segment: current.seq,
            offset: before,
        };
        let info = self.segments.entry(current.seq).or_default();
        info.bytes = current.len;
        info.newest_arrival = info.newest_arrival.max(Some(arrival));
        Ok(position)
    }

    /// Creates the next segment and makes it the current one.
    fn start_segment(&mut self) -> Result<(), LedgerError> {
        let seq = self.next_segment;
        let path = self.dir.join(segment_name(seq));
        let file =
            files::open_append(&path, true).map_err(|e| LedgerError::io("create", &path, e))?;
        self.next_segment = seq.saturating_add(1);
        if self.config.sync {
            files::sync_dir(&self.dir).map_err(|e| LedgerError::io("sync", &self.dir, e))?;
        }
        self.segments.insert(seq, SegmentInfo::default());
        self.current = Some(Current {
            seq,
            path,
            file,
            len: 0,
        });
        Ok(())
    }

    /// Whether chunk `batch` is stored with flows not yet emitted (as of the last
    /// [`mark_emitted`](Ledger::mark_emitted)): false for a chunk fully emitted, or
    /// never stored.
    pub fn is_pending(&self, batch: &BatchId) -> bool {
        self.pending.contains_key(batch)
    }

    /// Whether the flows `0..n` of chunk `batch` are all emitted (a chunk not pending
    /// is): its records, without the window's completeness record its first chunk
    /// carries in the slot after them.
    pub fn emitted_below(&self, batch: &BatchId, n: u32) -> bool {
        self.pending.get(batch).is_none_or(|p| p.emitted_below(n))
    }

    /// Notes the flow `record_index` of chunk `batch` as written to the output (and
    /// committed by it). Kept in memory until the next [`checkpoint`](Ledger::checkpoint).
    /// A chunk not pending (unknown, or fully emitted) is ignored.
    pub fn mark_emitted(&mut self, batch: &BatchId, record_index: u32) {
        if let Some(p) = self.pending.get_mut(batch) {
            p.mark(record_index);
            if p.is_complete() {
                self.pending.remove(batch);
            }
        }
    }

    /// Notes every flow of chunk `batch` as emitted: for a chunk the caller gives up on
    /// (a stored frame that no longer decodes), so that it does not stay pending, and
    /// its segment unprunable, forever.
    pub fn mark_chunk_emitted(&mut self, batch: &BatchId) {
        self.pending.remove(batch);
    }

    /// Writes a checkpoint atomically (see the module docs): the log's end now, the
    /// set of stored batch IDs, `output` (where the output stood when it committed the
    /// flows marked emitted) and the emitted sets of the chunks still pending. On
    /// failure the previous checkpoint stays in force.
    pub fn checkpoint(&mut self, output: &OutputPosition) -> Result<(), LedgerError> {
        if !self.recovered {
            return Err(LedgerError::NotRecovered);
        }
        let log_end = match &self.current {
            Some(c) => LogPosition {
                segment: c.seq,
                offset: c.len,
            },
            None => LogPosition {
                segment: self.next_segment,
                offset: 0,
            },
        };
        let body = Body {
            log_end,
            output_position: Some(output.0.clone()),
            dedup: self.dedup.snapshot(),
            pending: self
                .pending
                .values()
                .map(|p| PendingChunk {
                    position: p.position,
                    record_count: p.record_count,
                    emitted: p.ranges(),
                })
                .collect(),
        };
        if let Err(e) = checkpoint::store(&self.dir, &body, self.config.sync) {
            self.stats.checkpoint_failures += 1;
            return Err(LedgerError::io(
                "checkpoint",
                self.dir.join(checkpoint::CURRENT),
                e,
            ));
        }
        self.stats.checkpoints += 1;
        self.covered_end = log_end;
        self.covered_unemitted = self.pending.values().map(|p| p.position.segment).collect();
        self.output_position = Some(output.clone());
        Ok(())
    }

    /// Forgets the exporter runs that stored nothing for 7 days before `now`: their
    /// retries have long stopped. Returns how many (also counted in the stats).
    pub fn forget_idle_runs(&mut self, now: SystemTime) -> usize {
        let cutoff =
            super::recovery::epoch_secs(now).saturating_sub(super::dedup::FORGET_RUNS_AFTER);
        let forgotten = self.dedup.forget_idle(cutoff);
        self.stats.dedup_runs_forgotten += forgotten as u64;
        forgotten
    }

    /// Deletes whole segments whose entries all arrived before `older_than` and were
    /// all fully emitted as of the last checkpoint; never the current segment. Returns
    /// how many were deleted. The set of stored batch IDs keeps their IDs.
    pub fn prune(&mut self, older_than: SystemTime) -> Result<usize, LedgerError> {
        if !self.recovered {
            return Err(LedgerError::NotRecovered);
        }
        let current = self.current.as_ref().map(|c| c.seq);
        let doomed: Vec<u64> = self
            .segments
            .iter()
            .filter(|(seq, info)| {
                Some(**seq) != current
                    && (**seq < self.covered_end.segment
                        || (**seq == self.covered_end.segment
                            && info.bytes <= self.covered_end.offset))
                    && !self.covered_unemitted.contains(seq)
                    && info.newest_arrival.is_none_or(|t| t < older_than)
            })
            .map(|(seq, _)| *seq)
            .collect();
        let mut deleted = 0;
        let mut failure = None;
        for seq in doomed {
            let path = self.dir.join(segment_name(seq));
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    self.segments.remove(&seq);
                    deleted += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.segments.remove(&seq);
                }
                Err(e) => {
                    failure = Some(LedgerError::io("prune", path, e));
                    break;
                }
            }
        }
        self.stats.segments_pruned += deleted as u64;
        if deleted > 0 && self.config.sync {
            files::sync_dir(&self.dir).map_err(|e| LedgerError::io("sync", &self.dir, e))?;
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(deleted),
        }
    }

    /// What the ledger holds and has done.
    pub fn stats(&self) -> LedgerStats {
        LedgerStats {
            bytes: self.segments.values().map(|s| s.bytes).sum(),
            segments: self.segments.len() as u64,
            pending_chunks: self.pending.len() as u64,
            dedup_hosts: self.dedup.hosts() as u64,
            dedup_runs: self.dedup.runs() as u64,
            ..self.stats
        }
    }
}
