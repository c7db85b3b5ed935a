//! Replaying the log after a restart.

use std::{
    collections::HashMap,
    fs::File,
    io::{self, BufReader, Seek, SeekFrom},
    os::unix::fs::FileExt,
    time::SystemTime,
};

use flow_batch::wire::BatchId;

use super::{
    LedgerError,
    checkpoint::{CheckpointSource, PendingChunk},
    emitted::{Emitted, LogPosition, Pending},
    entry::{self, ReadError},
    files,
    state::{Ledger, segment_name},
};

/// One retained chunk, replayed by [`Ledger::recover`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RecoveredChunk {
    /// Its batch ID.
    pub batch: BatchId,
    /// When the collector accepted it.
    pub arrival: SystemTime,
    /// The frame as received.
    pub frame: Vec<u8>,
    /// Output slots of the chunk, as counted when it was stored: its records, plus one
    /// when it holds its window's completeness record.
    pub record_count: u32,
    /// Which of its flows the output held as of the checkpoint.
    pub emitted: Emitted,
    /// Where its entry is.
    pub position: LogPosition,
}

/// What [`Ledger::recover`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryStats {
    /// Which checkpoint was used: [`CheckpointSource::Lost`] says both were damaged and
    /// every retained chunk is replayed as not emitted.
    pub checkpoint: CheckpointSource,
    /// Segments read.
    pub segments: u64,
    /// Intact entries replayed.
    pub entries: u64,
    /// Bytes of intact entries replayed.
    pub bytes: u64,
    /// Replayed chunks with flows not emitted as of the checkpoint.
    pub pending_chunks: u64,
    /// Bytes of a torn last entry cut off the end of the last segment (written by a
    /// crash mid-append: never acknowledged).
    pub torn_tail_bytes: u64,
    /// Damaged stretches skipped (a bad checksum, a torn entry not at the log's end).
    pub damaged_regions: u64,
    /// Bytes in them.
    pub damaged_bytes: u64,
    /// Checkpointed pending chunks whose entry is no longer in the log.
    pub pending_missing: u64,
}

/// At most this many bytes after a damaged entry are searched for the next intact one
/// (beyond, the rest of the segment is skipped).
const MAX_SCAN: u64 = 1 << 30;

impl Ledger {
    /// Replays every retained entry, in log order, segment by segment (one entry in
    /// memory at a time), calling `each` with its chunk and what the checkpoint says
    /// was emitted of it; rebuilds the set of stored batch IDs (the checkpoint's plus
    /// every entry's) and the pending chunks. A damaged stretch is skipped and counted
    /// (entries after it in the same segment are found again by their checksum); a
    /// torn tail at the end of the last segment is cut off. Runs once: a second call
    /// replays nothing.
    pub fn recover(
        &mut self,
        mut each: impl FnMut(RecoveredChunk),
    ) -> Result<RecoveryStats, LedgerError> {
        let mut stats = RecoveryStats {
            checkpoint: self.checkpoint_source,
            ..RecoveryStats::default()
        };
        let Some(body) = self.loaded.take() else {
            return Ok(stats);
        };
        let mut checkpointed: HashMap<LogPosition, PendingChunk> =
            body.pending.into_iter().map(|p| (p.position, p)).collect();
        let last = self.segments.keys().next_back().copied();
        let seqs: Vec<u64> = self.segments.keys().copied().collect();
        for seq in seqs {
            let mut replay = Replay {
                seq,
                log_end: body.log_end,
                checkpointed: &mut checkpointed,
                stats: &mut stats,
                each: &mut each,
            };
            self.recover_segment(seq, Some(seq) == last, &mut replay)?;
        }
        stats.pending_missing = checkpointed.len() as u64;
        stats.pending_chunks = self.pending.len() as u64;
        self.covered_end = body.log_end;
        self.covered_unemitted = self.pending.values().map(|p| p.position.segment).collect();
        self.recovered = true;
        if stats.checkpoint == CheckpointSource::Lost {
            tracing::error!(dir = %self.dir.display(),
                "both ledger checkpoints are damaged: every retained chunk is replayed as not emitted");
        }
        Ok(stats)
    }

    /// Replays one segment.
    fn recover_segment(
        &mut self,
        seq: u64,
        is_last: bool,
        replay: &mut Replay<'_, impl FnMut(RecoveredChunk)>,
    ) -> Result<(), LedgerError> {
        let path = self.dir.join(segment_name(seq));
        let opened = if is_last {
            files::open_read_write(&path)
        } else {
            files::open_read(&path)
        };
        let file = opened.map_err(|e| LedgerError::io("read segment", &path, e))?;
        let read_error = |e: io::Error| LedgerError::io("read segment", &path, e);
        let mut size = file.metadata().map_err(read_error)?.len();
        replay.stats.segments += 1;
        let mut reader = BufReader::with_capacity(256 << 10, &file);
        let mut offset = 0u64;
        while offset < size {
            match entry::read(&mut reader, size - offset) {
                Ok((e, len)) => {
                    replay.stats.bytes += len;
                    self.replay_entry(
                        e,
                        LogPosition {
                            segment: seq,
                            offset,
                        },
                        replay,
                    );
                    offset += len;
                }
                Err(ReadError::Io(e)) => return Err(read_error(e)),
                Err(ReadError::Damaged) => {
                    match next_intact(&file, offset, size).map_err(read_error)? {
                        Some(next) => {
                            replay.stats.damaged_regions += 1;
                            replay.stats.damaged_bytes += next - offset;
                            tracing::warn!(segment = %path.display(), offset, skipped = next - offset,
                                "damaged ledger entry skipped");
                            reader.seek(SeekFrom::Start(next)).map_err(read_error)?;
                            offset = next;
                        }
                        None if is_last && size - offset <= MAX_SCAN => {
                            file.set_len(offset).map_err(read_error)?;
                            if self.config.sync {
                                file.sync_data().map_err(read_error)?;
                            }
                            replay.stats.torn_tail_bytes += size - offset;
                            tracing::warn!(segment = %path.display(), offset, cut = size - offset,
                                "torn tail of the ledger cut off");
                            size = offset;
                        }
                        None => {
                            replay.stats.damaged_regions += 1;
                            replay.stats.damaged_bytes += size - offset;
                            tracing::warn!(segment = %path.display(), offset, skipped = size - offset,
                                "damaged end of a ledger segment skipped");
                            break;
                        }
                    }
                }
            }
        }
        if let Some(info) = self.segments.get_mut(&seq) {
            info.bytes = size;
        }
        Ok(())
    }

    /// Takes one intact entry into the state and hands it to the caller.
    fn replay_entry(
        &mut self,
        e: entry::Entry,
        position: LogPosition,
        replay: &mut Replay<'_, impl FnMut(RecoveredChunk)>,
    ) {
        replay.stats.entries += 1;
        self.dedup.insert(&e.batch, epoch_secs(e.arrival));
        if let Some(info) = self.segments.get_mut(&replay.seq) {
            info.newest_arrival = info.newest_arrival.max(Some(e.arrival));
        }
        let pending = if position < replay.log_end {
            replay
                .checkpointed
                .remove(&position)
                .map(|p| Pending::from_ranges(position, e.record_count, &p.emitted))
        } else {
            Some(Pending::new(position, e.record_count))
        };
        let emitted = match pending {
            Some(p) if !p.is_complete() => {
                let emitted = p.to_emitted();
                self.pending.insert(e.batch.clone(), p);
                emitted
            }
            _ => Emitted::All,
        };
        (replay.each)(RecoveredChunk {
            batch: e.batch,
            arrival: e.arrival,
            frame: e.frame,
            record_count: e.record_count,
            emitted,
            position,
        });
    }
}

/// What replaying one segment works with.
struct Replay<'a, F> {
    seq: u64,
    log_end: LogPosition,
    checkpointed: &'a mut HashMap<LogPosition, PendingChunk>,
    stats: &'a mut RecoveryStats,
    each: &'a mut F,
}

/// The offset of the first intact entry after the damaged one at `offset`, if any
/// (reads at most [`MAX_SCAN`] bytes; beyond, gives up).
fn next_intact(file: &File, offset: u64, size: u64) -> io::Result<Option<u64>> {
    let start = offset + 1;
    if start >= size || size - start > MAX_SCAN {
        return Ok(None);
    }
    let mut rest = vec![0u8; (size - start) as usize];
    file.read_exact_at(&mut rest, start)?;
    Ok(entry::find_next(&rest, 0).map(|at| start + at as u64))
}

/// Seconds since the epoch (0 before it).
pub(super) fn epoch_secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
