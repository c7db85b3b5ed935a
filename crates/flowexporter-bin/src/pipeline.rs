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
//! - A chunk the sink kept in memory (its spool could not take it) or could not take
//!   at all keeps its intent open in the journal: its records stay journaled, and the
//!   next start sends the chunk again under its batch ID (the collector drops it if
//!   it already has it). A chunk that failed is not retried in this run.
//! - A chunk spooled whose done mark cannot be written is sent again after a restart,
//!   under its batch ID: a duplicate the collector drops.

use std::time::{Duration, Instant, SystemTime};

use flow_batch::{Chunk, MinuteBatcher, NO_TAG};
use flow_capture::FlowRecord;
use flow_sink::{CollectorSink, RecordJournal, SinkError, collector_sink::Accepted};

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
    /// Chunks the sink could neither spool nor keep in memory; their records stay in
    /// the journal for the next start.
    pub delivery_errors: u64,
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
            // Not durable yet: the open intent keeps its records for the next start.
            Ok(Accepted::InMemory) => {}
            Ok(_) => {
                if let Some(id) = intent
                    && let Err(e) = self.journal.end_chunk(&id)
                {
                    self.journal_failed("marking a chunk done in the journal", &e);
                }
            }
            Err(e) => {
                self.delivery_errors += 1;
                let (sequence, records) = (chunk.sequence, chunk.records.len());
                self.delivery_warnings.warn(|| {
                    format!(
                        "chunk {sequence} ({records} records) could not be spooled or kept; \
                         its records stay in the journal for the next start: {}",
                        flow_sink::error_chain(&e)
                    )
                });
            }
        }
    }

    fn journal_failed(&mut self, doing: &str, e: &SinkError) {
        self.journal_errors += 1;
        self.journal_warnings
            .warn(|| format!("{doing} failed: {}", flow_sink::error_chain(e)));
    }
}
