//! The pipeline's state machine: records in (with the time), chunks out, timers polled.
//!
//! It spawns nothing and awaits nothing, and every decision it makes (which window a
//! record joins, when a window closes, when the journal syncs, when a failed chunk is
//! tried again) follows from the times the caller passes in; the caller hands the
//! chunks it polls to a sink (the exporter's driver does, on tokio). Its only I/O
//! is the optional record journal's file writes (the journal and the rate limits of
//! its warnings read the monotonic clock themselves).
//!
//! What becomes of each chunk, and why nothing stops the pipeline:
//!
//! - A record that cannot be journaled is still batched (`journal_errors`); a crash
//!   before its chunk is delivered loses it.
//! - A chunk's intent is journaled before it is handed out ([`PipelineCore::poll_transmit`]);
//!   when that fails the chunk still goes out (a crash afterwards may send its records
//!   again under a new batch ID: at least once, never lost).
//! - A chunk the sink delivered or kept durably is marked done in the journal. A chunk
//!   the sink kept only in memory ([`Accepted::InMemory`]) keeps its intent open until
//!   the sink names it settled ([`PipelineCore::handle_settled`]): a crash meanwhile
//!   sends it again at the next start, under its batch ID.
//! - A chunk the sink failed to take (`Err`) is kept, with its intent open, and tried
//!   again with exponential backoff and full jitter ([`RetryPolicy`]); the chunks
//!   after it wait behind it (a sink gets chunks in order). What waits is bounded
//!   ([`BacklogLimits`]): past that, the oldest chunk is dropped, counted
//!   (`records_dropped_backlog_full`) and its intent ended. So a sink whose peer is
//!   down loses nothing for as long as the backlog holds, and with a journal, what
//!   still waits at shutdown stays journaled and is replayed at the next start.
//! - A chunk that cannot succeed however often it is tried ([`SinkError::is_permanent`]:
//!   it cannot be encoded, the peer refused it for good, ...), or whose retry policy
//!   ran out, is given up: counted (`delivery_errors`, its records in
//!   `records_dropped`) and its intent ended, so that it does not hold the journal's
//!   segments for the rest of the run.
//! - A failed journal sync is tried again at the next timeout.

use std::{
    collections::VecDeque,
    time::{Duration, Instant, SystemTime},
};

use flow_batch::{
    BatchConfig, BatchCounters, Chunk, Completeness, MinuteBatcher, NO_TAG, Window,
    wire::{BatchId, InstanceId},
};
use flow_record::{FlowRecord, RecordKind};
use flow_sink::{Accepted, RetryPolicy, SinkError, error_chain};

use super::{
    backlog::{Backlog, BacklogLimits},
    completeness::CompletenessBook,
};
use crate::{
    counters::PipelineCounters,
    error::ExporterError,
    journal::{JournalCounters, JournalError, RecordJournal, Recovered},
    ratelimit::RateLimited,
};

/// How often each kind of failure is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// When chunks leave the pipeline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Shipping {
    /// When their window closes (or fills up): one chunk per window and minute, the
    /// collector's batches.
    #[default]
    Windows,
    /// As soon as they are read: every read is cut into chunks at once (still within
    /// window boundaries; windows close as usual). For a terminal or a stream.
    Immediately,
}

/// A chunk to hand to the sink, with its batch ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The chunk.
    pub chunk: Chunk,
    /// Its batch ID (the original one for a replayed chunk).
    pub batch_id: BatchId,
    /// Recovered from the journal after a crash: give it to
    /// [`FlowSink::replay`](flow_sink::FlowSink::replay), not `accept`.
    pub replay: bool,
    /// Whether its intent is open in the journal (to end once the sink has it).
    intent: bool,
}

/// Records in, chunks out; see the [module docs](self).
#[derive(Debug)]
pub struct PipelineCore {
    batcher: MinuteBatcher,
    journal: Option<RecordJournal>,
    host: String,
    instance: InstanceId,
    shipping: Shipping,
    /// Chunks recovered from the journal, handed out before any new one.
    replays: VecDeque<Transmit>,
    /// Chunks the sink failed to take, waiting for their next attempt.
    backlog: Backlog,
    counters: PipelineCounters,
    completeness: CompletenessBook,
    record_warnings: RateLimited,
    journal_warnings: RateLimited,
    delivery_warnings: RateLimited,
}

impl PipelineCore {
    /// A core batching with `batch`, journaling in `journal` when given, naming its
    /// chunks `(host, instance, sequence)`.
    pub fn new(
        batch: BatchConfig,
        shipping: Shipping,
        journal: Option<RecordJournal>,
        host: impl Into<String>,
        instance: InstanceId,
    ) -> Result<PipelineCore, ExporterError> {
        Ok(PipelineCore {
            completeness: CompletenessBook::new(),
            batcher: MinuteBatcher::new(batch)?,
            journal,
            host: host.into(),
            instance,
            shipping,
            replays: VecDeque::new(),
            backlog: Backlog::new(
                RetryPolicy::default(),
                BacklogLimits::default(),
                instance.as_u128() as u64,
            ),
            counters: PipelineCounters::default(),
            record_warnings: RateLimited::new(WARN_EVERY),
            journal_warnings: RateLimited::new(WARN_EVERY),
            delivery_warnings: RateLimited::new(WARN_EVERY),
        })
    }

    /// Retries chunks the sink failed to take with `policy`, keeping at most `limits`
    /// of them waiting (defaults: [`RetryPolicy::default`], retrying for as long as the
    /// backlog holds; [`BacklogLimits::default`]).
    pub fn with_delivery_retry(mut self, policy: RetryPolicy, limits: BacklogLimits) -> Self {
        self.backlog = Backlog::new(policy, limits, self.instance.as_u128() as u64);
        self
    }

    /// Reports every window: each one is kept open from `now` on even without records,
    /// so that it closes with a last chunk, and the completeness given for it with
    /// [`supply_completeness`](PipelineCore::supply_completeness) before it closes
    /// rides on that chunk (with the interim records batched in the window, and the
    /// journal's losses at recovery added to the first one).
    pub fn report_windows(&mut self, now: SystemTime) {
        self.completeness.enabled = true;
        self.batcher.open_current(now);
    }

    /// The windows that close at `now` (or, at shutdown with `all`, every open
    /// window) whose completeness was not supplied yet, oldest first.
    pub fn windows_to_report(&self, now: SystemTime, all: bool) -> Vec<Window> {
        if !self.completeness.enabled {
            return Vec::new();
        }
        let windows: Vec<Window> = match all {
            true => self.batcher.open_windows().collect(),
            false => self.batcher.closing_at(now).collect(),
        };
        windows
            .into_iter()
            .filter(|w| !self.completeness.has(*w))
            .collect()
    }

    /// Counts a snapshot of the open connections (its records are pushed as usual).
    pub fn count_snapshot(&mut self, snapshot: &flow_capture::Snapshot) {
        self.counters.interim_snapshots += 1;
        self.counters.interim_records += snapshot.records.len() as u64;
        self.counters.interim_last_snapshot_us = snapshot.elapsed.as_micros() as u64;
    }

    /// Counts a snapshot that failed.
    pub fn count_failed_snapshot(&mut self) {
        self.counters.interim_snapshot_failures += 1;
    }

    /// The source's counts for `window`, to ride on its last chunk.
    pub fn supply_completeness(&mut self, window: Window, counts: Completeness) {
        self.completeness.supply(window, counts);
    }

    /// Takes what the journal recovered from a previous run: its chunks in flight are
    /// handed out first (as replays, under their original batch IDs), its records in
    /// no chunk are batched again (already journaled: not appended twice).
    pub fn recover(&mut self, recovered: Recovered, now: SystemTime) {
        if !recovered.is_empty() {
            tracing::info!(
                chunks = recovered.chunks.len(),
                records = recovered.records.len(),
                "recovered from the journal"
            );
        }
        if let Some(lost) = self.journal.as_ref().map(|j| j.counters().bad_entries) {
            self.completeness.journal_lost(lost);
        }
        for rc in recovered.chunks {
            self.counters.chunks_replayed += 1;
            self.replays.push_back(Transmit {
                batch_id: rc.batch_id(),
                chunk: rc.chunk,
                replay: true,
                intent: true,
            });
        }
        for record in recovered.records {
            self.counters.records_recovered += 1;
            // Counted before windows are reported (`report_windows` comes after
            // recovery); the book drops what is never asked for.
            let replayed = (record.record_kind == RecordKind::Final)
                .then(|| self.batcher.window_for(record.t_end, now));
            if self.batch(record, NO_TAG, now)
                && let Some(window) = replayed
            {
                self.completeness.replayed(window);
            }
        }
        self.ship_if_immediate();
    }

    /// Journals records read together and batches them, each tagged with its journal
    /// position (so that the chunk it ends up in names its records directly). `now`
    /// is when they were read.
    pub fn push(&mut self, records: impl IntoIterator<Item = FlowRecord>, now: SystemTime) {
        for record in records {
            self.counters.records_in += 1;
            let tag = match self.journal.as_mut().map(|j| j.append_tagged(&record)) {
                None => NO_TAG,
                Some(Ok(at)) => at,
                Some(Err(e)) => {
                    self.counters.journal_errors += 1;
                    self.record_warnings
                        .warn(|| format!("record not journaled: {}", error_chain(&e)));
                    NO_TAG
                }
            };
            let _ = self.batch(record, tag, now);
        }
        self.ship_if_immediate();
    }

    /// Batches `record`; returns whether the batcher took it. An interim record is
    /// counted in the window the batcher put it in.
    fn batch(&mut self, record: FlowRecord, tag: u64, now: SystemTime) -> bool {
        let interim = (record.record_kind == RecordKind::Interim)
            .then(|| self.batcher.window_for(record.t_end, now));
        match self.batcher.push_tagged(record, tag, now) {
            Ok(()) => {
                if let Some(window) = interim {
                    self.completeness.interim(window);
                }
                true
            }
            Err(e) => {
                self.counters.batch_refused += 1;
                self.record_warnings
                    .warn(|| format!("record refused by the batcher: {e}"));
                false
            }
        }
    }

    fn ship_if_immediate(&mut self) {
        if self.shipping == Shipping::Immediately {
            self.batcher.ship_open();
        }
    }

    /// When the core next needs the caller: the close of the oldest open window (wall
    /// clock: call [`handle_timeout`](PipelineCore::handle_timeout)), or the journal's
    /// next sync or the next attempt of a failed chunk (monotonic: call
    /// `handle_timeout`, then [`poll_transmit`](PipelineCore::poll_transmit)),
    /// whichever the caller's timer reaches first.
    pub fn poll_timeout(&self) -> (Option<SystemTime>, Option<Instant>) {
        let sync = self.journal.as_ref().and_then(RecordJournal::poll_timeout);
        let retry = self.backlog.retry_at();
        let mono = match (sync, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        (self.batcher.poll_timeout(), mono)
    }

    /// Closes the windows that are due at `now` and syncs the journal when due at
    /// `mono`. A failed sync is logged and counted, and tried again next time.
    pub fn handle_timeout(&mut self, now: SystemTime, mono: Instant) {
        self.batcher.handle_timeout(now);
        if self.completeness.enabled {
            self.batcher.open_current(now);
        }
        if let Some(Err(e)) = self.journal.as_mut().map(|j| j.sync_if_due(mono)) {
            self.journal_failed("syncing the journal", &e);
        }
    }

    /// The next chunk to hand to the sink at `now`: a failed chunk whose next attempt
    /// is due, else replays, else the batcher's ready chunks (`None` while a failed
    /// chunk waits for its next attempt: newer chunks wait behind it). A new chunk's
    /// intent is journaled first. Report what the sink did with it to
    /// [`handle_accepted`](PipelineCore::handle_accepted).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.backlog.is_empty() {
            return self.next_new();
        }
        // Newer chunks queue behind the failed one, within the backlog's limits.
        while let Some(t) = self.next_new() {
            for dropped in self.backlog.push_back(t) {
                let records = dropped.chunk.records.len() as u64;
                self.counters.records_dropped_backlog_full += records;
                self.delivery_warnings.warn(|| {
                    format!(
                        "the sink has not taken chunks for a while and the backlog is full: \
                         chunk {} ({records} records) is dropped",
                        dropped.batch_id
                    )
                });
                self.end_intent(&dropped);
            }
        }
        self.backlog.pop_due(now)
    }

    /// The next chunk not yet handed out: a replay, else a ready chunk of the batcher.
    fn next_new(&mut self) -> Option<Transmit> {
        if let Some(replay) = self.replays.pop_front() {
            self.counters.chunks_out += 1;
            return Some(replay);
        }
        let mut chunk = self.batcher.poll_chunk()?;
        if chunk.last {
            chunk.completeness = self.completeness.take(chunk.window);
        }
        self.counters.chunks_out += 1;
        let (batch_id, intent) = match self.journal.as_mut().map(|j| j.begin_chunk(&chunk)) {
            Some(Ok(id)) => (id, true),
            Some(Err(e)) => {
                self.journal_failed("announcing a chunk in the journal", &e);
                (self.batch_id(&chunk), false)
            }
            None => (self.batch_id(&chunk), false),
        };
        Some(Transmit {
            chunk,
            batch_id,
            replay: false,
            intent,
        })
    }

    fn batch_id(&self, chunk: &Chunk) -> BatchId {
        BatchId {
            host: self.host.clone(),
            instance: self.instance,
            sequence: chunk.sequence,
        }
    }

    /// What the sink did at `now` with `sent` (see the [module docs](self)).
    pub fn handle_accepted(
        &mut self,
        sent: Transmit,
        result: Result<Accepted, SinkError>,
        now: Instant,
    ) {
        match result {
            // Not durable yet: the open intent keeps its records until settled.
            Ok(Accepted::InMemory) => self.backlog.succeeded(),
            Ok(_) => {
                self.backlog.succeeded();
                self.end_intent(&sent);
            }
            Err(e) if e.is_permanent() => {
                self.backlog.succeeded();
                self.give_up(sent, &e);
            }
            Err(e) => {
                let (what, records) = (describe(&sent), sent.chunk.records.len());
                match self.backlog.next_attempt(now) {
                    Some(wait) => {
                        self.backlog.put_back(sent);
                        self.counters.delivery_retries += 1;
                        let waiting = self.backlog.len();
                        self.delivery_warnings.warn(|| {
                            format!(
                                "{what} ({records} records) was not taken, trying again in \
                                 {wait:?} ({waiting} chunks waiting): {}",
                                error_chain(&e)
                            )
                        });
                    }
                    None => self.give_up(sent, &e),
                }
            }
        }
    }

    /// `sent` was not handed to the sink after all (the exporter is stopping): it
    /// waits for its next attempt like a failed chunk, without counting an attempt.
    pub fn put_back(&mut self, sent: Transmit) {
        self.backlog.put_back(sent);
    }

    /// Counts `sent` and its records as dropped, logs `e`, and ends its intent.
    fn give_up(&mut self, sent: Transmit, e: &SinkError) {
        let records = sent.chunk.records.len();
        self.counters.delivery_errors += 1;
        self.counters.records_dropped += records as u64;
        let what = describe(&sent);
        self.delivery_warnings.warn(|| {
            format!(
                "{what} ({records} records) could be neither delivered nor kept; \
                 its records are dropped: {}",
                error_chain(e)
            )
        });
        self.end_intent(&sent);
    }

    /// Makes a failed chunk that waits due now: one last attempt at shutdown.
    pub fn retry_now(&mut self) {
        self.backlog.due_now();
    }

    /// At shutdown, after the last attempts: the chunks the sink has not taken (those
    /// waiting for another attempt, and any not handed out yet). With a journal their
    /// records stay journaled (intents open, or records in no intent), so that the
    /// next start replays or batches them again (counted in `chunks_left_in_journal`);
    /// without one they are lost (counted in `records_unsent_at_stop`). Returns how
    /// many chunks were left.
    pub fn abandon_backlog(&mut self) -> usize {
        let mut left: Vec<Transmit> = self.backlog.take_all().into();
        left.extend(self.replays.drain(..));
        while let Some(chunk) = self.batcher.poll_chunk() {
            left.push(Transmit {
                batch_id: self.batch_id(&chunk),
                chunk,
                replay: false,
                intent: false,
            });
        }
        for t in &left {
            match self.journal.is_some() {
                true => self.counters.chunks_left_in_journal += 1,
                false => self.counters.records_unsent_at_stop += t.chunk.records.len() as u64,
            }
        }
        if !left.is_empty() {
            let c = self.counters;
            tracing::warn!(
                chunks = left.len(),
                left_in_journal = c.chunks_left_in_journal,
                records_lost = c.records_unsent_at_stop,
                "the sink did not take every chunk before the stop"
            );
        }
        left.len()
    }

    fn end_intent(&mut self, sent: &Transmit) {
        if sent.intent {
            self.end_chunk(&sent.batch_id);
        }
    }

    /// The sink settled these chunks it had kept in memory: their intents end, unless
    /// the chunk waits to be tried again (one member of a fan-out kept it in memory,
    /// another failed): its intent stays open until the retry succeeds.
    pub fn handle_settled(&mut self, ids: impl IntoIterator<Item = BatchId>) {
        for id in ids {
            if !self.backlog.contains(&id) {
                self.end_chunk(&id);
            }
        }
    }

    fn end_chunk(&mut self, id: &BatchId) {
        if let Some(Err(e)) = self.journal.as_mut().map(|j| j.end_chunk(id)) {
            self.journal_failed("marking a chunk done in the journal", &e);
        }
    }

    /// Closes every open window at once (shutdown): their last chunks become ready.
    pub fn close_windows(&mut self, now: SystemTime) {
        self.batcher.flush(now);
    }

    /// Syncs the journal now (at shutdown); a failure is logged and counted.
    pub fn sync(&mut self) {
        if let Some(Err(e)) = self.journal.as_mut().map(RecordJournal::sync) {
            self.journal_failed("syncing the journal", &e);
        }
    }

    fn journal_failed(&mut self, doing: &str, e: &JournalError) {
        self.counters.journal_errors += 1;
        self.journal_warnings
            .warn(|| format!("{doing} failed: {}", error_chain(e)));
    }

    /// The pipeline's own counters.
    pub fn counters(&self) -> PipelineCounters {
        PipelineCounters {
            chunks_waiting: self.backlog.len() as u64,
            ..self.counters
        }
    }

    /// The batcher's counters.
    pub fn batch_counters(&self) -> BatchCounters {
        self.batcher.counters()
    }

    /// The journal's counters, when there is a journal.
    pub fn journal_counters(&self) -> Option<JournalCounters> {
        self.journal.as_ref().map(RecordJournal::counters)
    }

    /// The batching configuration in force.
    pub fn batch_config(&self) -> &BatchConfig {
        self.batcher.config()
    }
}

/// `chunk <batch ID>`, or `recovered chunk <batch ID>` for a replay.
fn describe(t: &Transmit) -> String {
    match t.replay {
        true => format!("recovered chunk {}", t.batch_id),
        false => format!("chunk {}", t.batch_id),
    }
}
