//! The record pipeline of `flowexporter run` with a collector: journal -> minute
//! batcher -> collector sink, every chunk announced in the journal before it leaves.
//!
//! No failure of the journal or of the sink stops the pipeline: each is logged
//! (rate-limited), counted, and the records concerned are kept where they can be.
//!
//! - A record that cannot be journaled is still batched (counted in
//!   `journal_errors`); a crash before its chunk is spooled loses it.
//! - A failed journal sync is tried again at the next tick.
//! - A chunk whose intent cannot be journaled is still delivered (a crash after that
//!   may send its records again under a new batch ID: at least once, not lost).
//! - A chunk the sink kept in memory (its spool could not take it) keeps its intent
//!   open in the journal while it is there: its records stay journaled, and a crash
//!   meanwhile sends the chunk again at the next start under its batch ID (the
//!   collector drops it if it already has it). Once the sink settles it (delivered,
//!   rejected, dropped from the memory queue, or spooled at close: see
//!   [`CollectorSink::take_settled`]), [`Pipeline::settle`] (each tick, and at
//!   shutdown) marks it done, so that the journal can delete its segments again.
//! - A chunk the sink could not take at all (a frame larger than the whole memory
//!   queue, an error of the spool other than I/O such as a frame larger than its cap,
//!   an encoding failure) is given up: its intent is ended at once, so that it does
//!   not hold the journal's segments for the rest of the run, and its records are
//!   counted in `records_dropped` (reason `delivery_failed`). Retrying it a moment
//!   later would fail the same way.
//! - A chunk spooled whose done mark cannot be written is sent again after a restart,
//!   under its batch ID: a duplicate the collector drops.

use std::time::{Duration, Instant, SystemTime};

use flow_batch::{Chunk, MinuteBatcher, NO_TAG, wire::BatchId};
use flow_capture::FlowRecord;
use flow_sink::{CollectorSink, SinkError, collector_sink::Accepted};
use flowexporter::RecordJournal;

use crate::ratelimit::RateLimited;

/// How often each kind of failure is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Records in, chunks out to the collector.
pub struct Pipeline {
    /// The batcher (sans-IO; driven with the wall clock here).
    pub batcher: MinuteBatcher,
    /// The write-ahead journal of captured records.
    pub journal: RecordJournal,
    /// Where chunks go.
    pub sink: CollectorSink,
    /// Records the batcher refused (counted; they stay in the journal).
    pub refused: u64,
    /// Failed journal operations (append, sync, chunk intent, done mark); the pipeline
    /// went on each time.
    pub journal_errors: u64,
    /// Chunks the sink could neither spool nor keep in memory (given up).
    pub delivery_errors: u64,
    /// Records of those chunks: lost (their intents are ended).
    pub records_dropped: u64,
    /// Warnings about single records, rate-limited.
    pub warnings: RateLimited,
    /// Warnings about journal failures, rate-limited.
    journal_warnings: RateLimited,
    /// Warnings about failed deliveries, rate-limited.
    delivery_warnings: RateLimited,
}

impl Pipeline {
    /// A pipeline of these parts, nothing counted yet.
    pub fn new(batcher: MinuteBatcher, journal: RecordJournal, sink: CollectorSink) -> Pipeline {
        Pipeline {
            batcher,
            journal,
            sink,
            refused: 0,
            journal_errors: 0,
            delivery_errors: 0,
            records_dropped: 0,
            warnings: RateLimited::new(WARN_EVERY),
            journal_warnings: RateLimited::new(WARN_EVERY),
            delivery_warnings: RateLimited::new(WARN_EVERY),
        }
    }

    /// Journals records read together and hands them to the batcher, each tagged with
    /// its journal position (so that the chunk it ends up in names its records'
    /// positions directly). The records of one read share one clock reading.
    pub fn push_all(&mut self, records: impl IntoIterator<Item = FlowRecord>) {
        let now = SystemTime::now();
        for record in records {
            match self.journal.append_tagged(&record) {
                Ok(at) => self.batch(record, at, now),
                Err(e) => {
                    self.journal_errors += 1;
                    self.warnings
                        .warn(|| format!("record not journaled: {}", flow_sink::error_chain(&e)));
                    self.batch(record, NO_TAG, now);
                }
            }
        }
    }

    /// Hands an already journaled record (recovered after a restart) to the batcher;
    /// the journal finds it again by its fields.
    pub fn push_journaled(&mut self, record: FlowRecord) {
        self.batch(record, NO_TAG, SystemTime::now());
    }

    fn batch(&mut self, record: FlowRecord, tag: u64, now: SystemTime) {
        if let Err(e) = self.batcher.push_tagged(record, tag, now) {
            self.refused += 1;
            self.warnings
                .warn(|| format!("record refused by the batcher: {e}"));
        }
    }

    /// Closes windows that are due and syncs the journal when due. A failed sync is
    /// logged and counted, and tried again next time.
    pub fn tick(&mut self) {
        self.settle();
        self.batcher.handle_timeout(SystemTime::now());
        if let Err(e) = self.journal.sync_if_due(Instant::now()) {
            self.journal_failed("syncing the journal", &e);
        }
    }

    /// Syncs the journal now (at shutdown); a failure is logged and counted.
    pub fn sync(&mut self) {
        if let Err(e) = self.journal.sync() {
            self.journal_failed("syncing the journal", &e);
        }
    }

    /// Marks done in the journal the chunks the sink kept in memory and has settled
    /// since (see the module docs). Call it after the sink's `shut_down` too.
    pub fn settle(&mut self) {
        for id in self.sink.take_settled() {
            self.end_chunk(&id);
        }
    }

    /// Marks `id` done in the journal; a failure is logged and counted.
    pub fn end_chunk(&mut self, id: &BatchId) {
        if let Err(e) = self.journal.end_chunk(id) {
            self.journal_failed("marking a chunk done in the journal", &e);
        }
    }

    /// Gives up a chunk of `records` records the sink could not take: counts it and
    /// its records as dropped, logs `error`, and ends its intent (`id`).
    pub fn give_up(&mut self, id: Option<&BatchId>, what: &str, records: usize, e: &SinkError) {
        self.delivery_errors += 1;
        self.records_dropped += records as u64;
        self.delivery_warnings.warn(|| {
            format!(
                "{what} ({records} records) could be neither spooled nor kept in memory; \
                 its records are dropped: {}",
                flow_sink::error_chain(e)
            )
        });
        if let Some(id) = id {
            self.end_chunk(id);
        }
    }

    /// Sends every ready chunk: intent in the journal, deliver (or spool), done.
    /// Failures are logged and counted (see the module docs for what becomes of the
    /// chunk); the next chunk is sent all the same.
    pub async fn drain(&mut self) {
        while let Some(chunk) = self.batcher.poll_chunk() {
            self.send(&chunk).await;
        }
    }

    async fn send(&mut self, chunk: &Chunk) {
        let intent = match self.journal.begin_chunk(chunk) {
            Ok(id) => Some(id),
            Err(e) => {
                self.journal_failed("announcing a chunk in the journal", &e);
                None
            }
        };
        match self.sink.accept_chunk(chunk).await {
            // Not durable yet: the open intent keeps its records until the sink
            // settles it (`settle`).
            Ok(Accepted::InMemory) => {}
            Ok(_) => {
                if let Some(id) = intent {
                    self.end_chunk(&id);
                }
            }
            Err(e) => {
                let what = format!("chunk {}", chunk.sequence);
                self.give_up(intent.as_ref(), &what, chunk.records.len(), &e);
            }
        }
    }

    fn journal_failed(&mut self, doing: &str, e: &SinkError) {
        self.journal_errors += 1;
        self.journal_warnings
            .warn(|| format!("{doing} failed: {}", flow_sink::error_chain(e)));
    }
}
