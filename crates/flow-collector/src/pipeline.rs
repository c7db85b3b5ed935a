//! What happens to a chunk once its body has arrived, and to its flows afterwards:
//! verify, deduplicate against the ledger, store durably, count it in its window,
//! attribute, write out (flows, then windows' completeness records), and checkpoint
//! what was written.
//!
//! [`Pipeline`] is synchronous and called under one lock, from the blocking pool: by
//! a request (`accept`) and by the collector's ticker (`tick`, every
//! [`TICK`](crate::TICK)), which is how held-back flows leave once their time
//! comes. Time is passed in.

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
    time::{Duration, SystemTime},
};

use flow_batch::{
    Completeness,
    wire::{BatchId, ChunkDecoder, ChunkHeader, DecodeLimits, decode_header},
};
use flow_record::FlowRecord;

use crate::{
    CollectorError,
    attribution::{AttributedFlow, Attributor},
    completeness::{Slot, WindowChunk, WindowReport, WindowTracker},
    error::error_chain,
    graph::SharedGraph,
    ledger::{Emitted, Ledger},
    output::{Acknowledgements, FlowKey, FlowOutput},
    stats::{Stats, bump},
};

/// What became of one frame.
pub(crate) enum Stored {
    /// Stored durably (its flows are being attributed).
    Accepted {
        /// Its batch ID.
        batch_id: BatchId,
        /// How many records it held.
        records: usize,
    },
    /// Its batch ID was stored before; nothing stored.
    Duplicate {
        /// Its batch ID.
        batch_id: BatchId,
    },
    /// Not a frame, or a frame with a record the spec refuses; the reason says why.
    Undecodable(String),
    /// The ledger could not be written (a full disk); the reason says why.
    WriteFailed(String),
    /// Too many flows wait to be written out (the output is failing): refused until
    /// it catches up, so that memory stays bounded. Nothing is lost: the sender retries.
    Busy(String),
}

/// Most flows kept in memory while the output fails; above it chunks are refused
/// with 503 until the output takes them.
const MAX_UNWRITTEN: usize = 1_000_000;

/// The window's completeness a chunk's header carries (wire format 2, on a window's
/// last chunk).
fn completeness_of(header: &ChunkHeader) -> Option<Completeness> {
    header.completeness
}

/// What the window tracker needs of a decoded chunk.
fn window_chunk(batch: &Arc<BatchId>, header: &ChunkHeader, records: &[FlowRecord]) -> WindowChunk {
    WindowChunk::new(
        Arc::clone(batch),
        header.window,
        header.chunk_index,
        header.last,
        completeness_of(header),
        records,
    )
}

/// The ledger, the attributor, the window tracker and the output, and what moves
/// between them.
pub(crate) struct Pipeline {
    limits: DecodeLimits,
    decoder: ChunkDecoder,
    ledger: Ledger,
    attributor: Attributor,
    /// Every window's records against its completeness.
    windows: WindowTracker,
    output: Box<dyn FlowOutput>,
    /// The dependency graph: fed what the output took (flows, then completeness
    /// records), read by `GET /api/v1/graph`; writing to it never waits for a
    /// query.
    graph: Arc<SharedGraph>,
    /// The output's acknowledgement book, if its writes are acknowledged later.
    acks: Option<Acknowledgements>,
    /// Decided flows the output has not taken yet (it failed).
    unwritten: Vec<AttributedFlow>,
    /// Completeness records the output has not taken yet.
    unwritten_reports: Vec<WindowReport>,
    /// Flows (and completeness records, and report slots resolved without one)
    /// written but not yet committed: marked emitted in the ledger at the next commit.
    /// Each with the output's acknowledgement mark after its write (0 when the output
    /// does not acknowledge later, or nothing was written): with a Kafka output, only
    /// entries whose writes the brokers acknowledged are marked emitted.
    uncommitted: Vec<(Arc<BatchId>, u32, u64)>,
    /// During and right after recovery: flows of replayed chunks that were already
    /// written before the restart (skipped when they are decided again).
    already_written: HashMap<Arc<BatchId>, Emitted>,
    last_commit: SystemTime,
    /// Something was stored or written since the last checkpoint.
    dirty: bool,
    last_prune: SystemTime,
    commit_interval: Duration,
    /// Ledger entries older than this (and fully emitted) are deleted.
    keep_ledger: Duration,
    last_output_error_log: Option<SystemTime>,
    /// Until then, replayed flows may be decided again: the restart plus the
    /// hold-back, the tolerance and a minute.
    replay_until: SystemTime,
    losses: RecoveryLosses,
}

/// What recovery found.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Recovered {
    pub(crate) chunks: u64,
    pub(crate) flows_pending: u64,
    pub(crate) damaged_chunks: u64,
}

/// What recovery lost or could not tell, for the metrics (all zero after a clean
/// stop).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryLosses {
    /// Flows of stored chunks that no longer decode: lost (a chunk that held its
    /// window's completeness record counts that too).
    pub flows_undecodable: u64,
    /// Damaged stretches of the ledger skipped (their chunks are lost).
    pub damaged_regions: u64,
    /// Bytes in them.
    pub damaged_bytes: u64,
    /// Chunks the checkpoint listed as not fully written that the log no longer
    /// holds: their unwritten flows are lost.
    pub pending_missing: u64,
    /// 1 when no intact checkpoint was found and every retained chunk was replayed
    /// (flows may be written twice).
    pub checkpoint_lost: u64,
}

impl Pipeline {
    /// Ties the parts together and replays what the ledger holds: every retained chunk
    /// goes through the attributor again with its original arrival time (rebuilding
    /// the ownership map and the held flows), and only the flows not written before
    /// are written.
    pub(crate) fn recover(
        options: &crate::CollectorOptions,
        ledger: Ledger,
        attributor: Attributor,
        mut output: Box<dyn FlowOutput>,
        now: SystemTime,
        stats: &Stats,
    ) -> Result<(Pipeline, Recovered), CollectorError> {
        let limits = options.limits;
        // The ledger keeps what rebuilding the map after a restart needs.
        let keep_ledger = options.attribution.retention + options.attribution.hold_back;
        let commit_interval = options.commit_interval;
        let decoder =
            ChunkDecoder::new(limits).map_err(|source| CollectorError::Decoder { source })?;
        // Flows the output holds beyond the position of the last checkpoint: written,
        // but the crash came before the ledger heard of it.
        let written: Vec<FlowKey> = output
            .written_since(ledger.output_position())
            .map_err(|source| CollectorError::OutputSink { source })?;
        let mut written_by_batch: HashMap<String, Vec<u32>> = HashMap::new();
        for (batch, index) in written {
            written_by_batch.entry(batch).or_default().push(index);
        }
        let mut pipeline = Pipeline {
            limits,
            decoder,
            ledger,
            attributor,
            windows: WindowTracker::new(options.completeness.clone()),
            graph: Arc::new(SharedGraph::new(options.graph.clone())),
            acks: output.acknowledgements(),
            output,
            unwritten: Vec::new(),
            unwritten_reports: Vec::new(),
            uncommitted: Vec::new(),
            already_written: HashMap::new(),
            last_commit: now,
            dirty: true,
            last_prune: now,
            commit_interval,
            keep_ledger,
            last_output_error_log: None,
            replay_until: now
                + options.attribution.hold_back
                + options.attribution.tolerance
                + Duration::from_secs(60),
            losses: RecoveryLosses::default(),
        };
        let mut recovered = Recovered::default();
        // The ledger streams its chunks; decoding needs &mut self, so each is decoded
        // as it comes (the closure borrows only the decoder and the attributor).
        let Pipeline {
            ledger,
            decoder,
            attributor,
            windows,
            already_written,
            unwritten,
            ..
        } = &mut pipeline;
        windows.set_replaying(true);
        let mut undecodable = Vec::new();
        let mut flows_undecodable = 0u64;
        let stats_recovery = ledger
            .recover(|chunk| {
                let batch = Arc::new(chunk.batch);
                let mut emitted = chunk.emitted;
                if let Some(extra) = written_by_batch.remove(&batch.to_string()) {
                    emitted = emitted.with(extra);
                }
                match decoder.decode(&chunk.frame) {
                    Ok(decoded) => {
                        recovered.chunks += 1;
                        // The window's report slot is one more than the records.
                        let records = decoded.records.len();
                        let slot = if chunk.record_count as usize == records + 1 {
                            let index = u32::try_from(records).unwrap_or(u32::MAX);
                            if emitted.contains(index) {
                                Slot::Written
                            } else {
                                Slot::Unwritten
                            }
                        } else {
                            Slot::None
                        };
                        windows.observe(
                            &window_chunk(&batch, &decoded.header, &decoded.records),
                            slot,
                            chunk.arrival,
                        );
                        // Fully written chunks too: their flows are decided again.
                        already_written.insert(Arc::clone(&batch), emitted);
                        attributor.push_chunk(batch, decoded.records, chunk.arrival);
                        attributor.advance(chunk.arrival);
                        // Only what the output does not hold is kept: an hour of
                        // replayed flows is never in memory at once.
                        while let Some(flow) = attributor.pop_ready() {
                            if !is_written(already_written, &flow.batch, flow.record_index) {
                                recovered.flows_pending += 1;
                                unwritten.push(flow);
                            }
                        }
                    }
                    Err(e) => {
                        recovered.damaged_chunks += 1;
                        tracing::error!(batch = %batch, error = %error_chain(&e),
                            "a stored chunk no longer decodes; its flows are lost");
                        flows_undecodable += u64::from(chunk.record_count);
                        undecodable.push(batch);
                    }
                }
            })
            .map_err(|source| CollectorError::Ledger { source })?;
        windows.set_replaying(false);
        tracing::info!(?stats_recovery, "ledger recovered");
        let losses = RecoveryLosses {
            flows_undecodable,
            damaged_regions: stats_recovery.damaged_regions,
            damaged_bytes: stats_recovery.damaged_bytes,
            pending_missing: stats_recovery.pending_missing,
            checkpoint_lost: u64::from(matches!(
                stats_recovery.checkpoint,
                crate::ledger::CheckpointSource::Lost
            )),
        };
        // What the output holds beyond the checkpoint, the ledger must hear of, or the
        // next checkpoint would list it as unwritten again; a chunk that no longer
        // decodes will never be written and must not keep its segment forever.
        for (batch, emitted) in already_written.iter() {
            if let Emitted::Some(indexes) = emitted {
                for index in indexes {
                    ledger.mark_emitted(batch, *index);
                }
            }
        }
        for batch in &undecodable {
            ledger.mark_chunk_emitted(batch);
        }
        pipeline.losses = losses;
        pipeline.pump(now, stats);
        // A checkpoint at once: from now on the output's position is known, so a crash
        // before the first periodic commit cannot make the next start write again
        // what this one wrote.
        pipeline.commit(now, stats);
        Ok((pipeline, recovered))
    }

    /// Verifies, deduplicates and stores one frame, then attributes what it can.
    pub(crate) fn accept(
        &mut self,
        frame: &[u8],
        now: SystemTime,
        fail_writes: bool,
        stats: &Stats,
    ) -> Stored {
        let header = match decode_header(frame, &self.limits) {
            Ok(h) => h,
            Err(e) => {
                bump(&stats.rejected_undecodable);
                return Stored::Undecodable(format!("bad frame header: {}", error_chain(&e)));
            }
        };
        let batch_id = header.batch_id();
        if self.ledger.contains(&batch_id) {
            bump(&stats.chunks_duplicate);
            return Stored::Duplicate { batch_id };
        }
        if self.unwritten() >= MAX_UNWRITTEN {
            bump(&stats.refused_busy);
            return Stored::Busy(format!(
                "{} flows wait for the output; try again later",
                self.unwritten()
            ));
        }
        if let Some(reason) = self.output.backpressure() {
            bump(&stats.refused_busy);
            return Stored::Busy(reason);
        }
        let decoded = match self.decoder.decode(frame) {
            Ok(d) => d,
            Err(e) => {
                bump(&stats.rejected_undecodable);
                tracing::warn!(%batch_id, error = %error_chain(&e), "undecodable chunk");
                return Stored::Undecodable(format!("bad frame: {}", error_chain(&e)));
            }
        };
        let records = decoded.records.len();
        let batch = Arc::new(batch_id.clone());
        let window = window_chunk(&batch, &decoded.header, &decoded.records);
        // The first chunk of a window stores one slot more: its completeness record.
        let slot = self.windows.wants_slot(&batch, decoded.header.window, now);
        let count = u32::try_from(records + usize::from(slot)).unwrap_or(u32::MAX);
        let stored = if fail_writes {
            Err(crate::ledger::LedgerError::injected())
        } else {
            self.ledger.append(&batch_id, count, now, frame)
        };
        if let Err(e) = stored {
            bump(&stats.write_failures);
            tracing::error!(%batch_id, error = %error_chain(&e), "storing a chunk failed");
            return Stored::WriteFailed(format!("cannot store the chunk: {}", error_chain(&e)));
        }
        self.dirty = true;
        bump(&stats.chunks_accepted);
        stats
            .records_accepted
            .fetch_add(records as u64, Ordering::Relaxed);
        self.windows.observe(
            &window,
            if slot { Slot::Unwritten } else { Slot::None },
            now,
        );
        self.attributor.push_chunk(batch, decoded.records, now);
        self.pump(now, stats);
        Stored::Accepted { batch_id, records }
    }

    /// What time allows: held flows whose wait is over, the output, a commit and
    /// ledger pruning when due.
    pub(crate) fn tick(&mut self, now: SystemTime, stats: &Stats) {
        self.pump(now, stats);
        if now.duration_since(self.last_commit).unwrap_or_default() >= self.commit_interval {
            self.commit(now, stats);
        }
        if now.duration_since(self.last_prune).unwrap_or_default() >= Duration::from_secs(60) {
            self.last_prune = now;
            self.ledger.forget_idle_runs(now);
            let cutoff = now
                .checked_sub(self.keep_ledger)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            match self.ledger.prune(cutoff) {
                Ok(n) if n > 0 => tracing::debug!(segments = n, "ledger pruned"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %error_chain(&e), "pruning the ledger failed"),
            }
        }
    }

    /// Decides every held flow now (at shutdown) and writes and commits everything.
    pub(crate) fn drain(&mut self, now: SystemTime, stats: &Stats) {
        self.attributor.drain(now);
        self.pump(now, stats);
        // An output acknowledged later gets a last chance to acknowledge everything,
        // so that what it has is marked emitted (else it is written again at the next
        // start).
        if let Some(acks) = &self.acks {
            let _ = self.output.commit();
            acks.wait_blocking(acks.mark(), Duration::from_secs(10));
        }
        self.commit(now, stats);
    }

    #[cfg(feature = "kafka")]
    /// Whether the flows of chunk `batch` (its first `records`, when known: not the
    /// window's completeness record a first chunk also carries, which waits for the
    /// window's grace) are all written and committed (acknowledged, for Kafka): the
    /// input's offsets wait for it.
    pub(crate) fn flows_written(&self, batch: &BatchId, records: Option<u32>) -> bool {
        match records {
            Some(n) => self.ledger.emitted_below(batch, n),
            None => !self.ledger.is_pending(batch),
        }
    }

    /// The dependency graph it feeds.
    pub(crate) fn graph(&self) -> Arc<SharedGraph> {
        Arc::clone(&self.graph)
    }

    /// The output's acknowledgement book, if its writes are acknowledged later.
    pub(crate) fn output_acknowledgements(&self) -> Option<crate::output::Acknowledgements> {
        self.output.acknowledgements()
    }

    #[cfg(feature = "kafka")]
    /// Other nodes' heartbeats: applied to the ownership map, then whatever they
    /// decide is written.
    pub(crate) fn apply_heartbeats(
        &mut self,
        heartbeats: &[crate::attribution::Heartbeat],
        now: SystemTime,
        stats: &Stats,
    ) {
        self.attributor.apply_heartbeats(heartbeats, now);
        self.pump(now, stats);
    }

    #[cfg(feature = "kafka")]
    /// The heartbeats extracted since the last call, compacted (for the other nodes).
    pub(crate) fn take_heartbeats(&mut self) -> Vec<crate::attribution::Heartbeat> {
        self.attributor.take_heartbeats()
    }

    /// Flows held back by the attributor.
    pub(crate) fn held(&self) -> u64 {
        self.attributor.stats().held
    }

    /// Flows and completeness records waiting for the output.
    pub(crate) fn unwritten(&self) -> usize {
        self.unwritten.len() + self.unwritten_reports.len()
    }

    /// Snapshots of the parts, for stats and metrics.
    pub(crate) fn snapshot(&self) -> crate::stats::PartsSnapshot {
        crate::stats::PartsSnapshot {
            attribution: self.attributor.stats(),
            ledger: self.ledger.stats(),
            unwritten: self.unwritten() as u64,
            recovery: self.losses,
            completeness: self.windows.stats(),
        }
    }

    /// Moves decided flows, then reported windows, to the output.
    fn pump(&mut self, now: SystemTime, stats: &Stats) {
        self.attributor.advance(now);
        while let Some(flow) = self.attributor.pop_ready() {
            if !self.already_written.is_empty()
                && is_written(&self.already_written, &flow.batch, flow.record_index)
            {
                continue;
            }
            self.unwritten.push(flow);
        }
        self.windows.advance(now);
        while let Some(report) = self.windows.pop_report() {
            if !self.already_written.is_empty()
                && is_written(&self.already_written, &report.batch, report.record_index)
            {
                continue;
            }
            self.unwritten_reports.push(report);
        }
        while let Some(slot) = self.windows.pop_silent() {
            self.uncommitted.push((slot.0, slot.1, 0));
        }
        if !self.write_flows(now, stats) {
            return;
        }
        self.write_reports(now, stats);
    }

    /// Writes the decided flows; returns whether none is left unwritten.
    fn write_flows(&mut self, now: SystemTime, stats: &Stats) -> bool {
        if self.unwritten.is_empty() {
            return true;
        }
        match self.output.write(&self.unwritten) {
            Ok(()) => {
                stats
                    .flows_written
                    .fetch_add(self.unwritten.len() as u64, Ordering::Relaxed);
                let mark = self.output_mark();
                self.uncommitted.extend(
                    self.unwritten
                        .iter()
                        .map(|f| (Arc::clone(&f.batch), f.record_index, mark)),
                );
                let flows = std::mem::take(&mut self.unwritten);
                // Not when the attributor only routes (`route_only`): the output
                // routed undecided records to the connection topic, and the
                // attributing half feeds the graph once they are decided.
                if !self.attributor.config().route_only {
                    self.graph.add_flows(flows, now);
                }
                true
            }
            Err(e) => {
                self.output_failed(now, stats, &e);
                false
            }
        }
    }

    /// Writes the reported windows' completeness records.
    fn write_reports(&mut self, now: SystemTime, stats: &Stats) {
        if self.unwritten_reports.is_empty() {
            return;
        }
        match self.output.write_completeness(&self.unwritten_reports) {
            Ok(()) => {
                stats
                    .completeness_written
                    .fetch_add(self.unwritten_reports.len() as u64, Ordering::Relaxed);
                self.graph.add_reports(&self.unwritten_reports, now);
                let mark = self.output_mark();
                self.uncommitted.extend(
                    self.unwritten_reports
                        .drain(..)
                        .map(|r| (Arc::clone(&r.batch), r.record_index, mark)),
                );
            }
            Err(e) => self.output_failed(now, stats, &e),
        }
    }

    /// Counts a failed write, and logs it at most every 10 s.
    fn output_failed(&mut self, now: SystemTime, stats: &Stats, e: &crate::output::OutputError) {
        bump(&stats.output_failures);
        let due = self
            .last_output_error_log
            .is_none_or(|t| now.duration_since(t).unwrap_or_default() >= Duration::from_secs(10));
        if due {
            self.last_output_error_log = Some(now);
            tracing::error!(error = %error_chain(e), waiting = self.unwritten(),
                "writing the output failed; flows are kept and retried");
        }
    }

    /// The output's acknowledgement mark now (every write so far is below it), or 0
    /// for an output that does not acknowledge later.
    fn output_mark(&self) -> u64 {
        self.acks.as_ref().map_or(0, Acknowledgements::mark)
    }

    /// Makes the output durable, then tells the ledger what it holds.
    fn commit(&mut self, now: SystemTime, stats: &Stats) {
        self.last_commit = now;
        // An idle collector syncs and checkpoints nothing.
        if !self.dirty && self.uncommitted.is_empty() {
            return;
        }
        let position = match self.output.commit() {
            Ok(p) => p,
            Err(e) => {
                bump(&stats.output_failures);
                tracing::warn!(error = %error_chain(&e), "committing the output failed");
                return;
            }
        };
        // With an output acknowledged later, only what the destination acknowledged
        // is emitted; the rest waits for a later commit.
        let acknowledged = self
            .acks
            .as_ref()
            .map_or(u64::MAX, Acknowledgements::acknowledged_below);
        let mut waiting = Vec::new();
        for (batch, index, mark) in self.uncommitted.drain(..) {
            if mark <= acknowledged {
                self.ledger.mark_emitted(&batch, index);
            } else {
                waiting.push((batch, index, mark));
            }
        }
        self.uncommitted = waiting;
        match self.ledger.checkpoint(&position) {
            Ok(()) => self.dirty = false,
            Err(e) => {
                bump(&stats.checkpoint_failures);
                tracing::warn!(error = %error_chain(&e), "writing the checkpoint failed");
            }
        }
        // Replayed chunks are decided within one hold-back of the restart.
        if !self.already_written.is_empty() && now >= self.replay_until {
            self.already_written = HashMap::new();
        }
    }
}

/// Whether the flow (or completeness record) at `index` of `batch` was written before
/// the restart.
fn is_written(already: &HashMap<Arc<BatchId>, Emitted>, batch: &Arc<BatchId>, index: u32) -> bool {
    already.get(batch).is_some_and(|e| e.contains(index))
}

#[cfg(test)]
#[path = "pipeline_tests.rs"]
mod tests;
