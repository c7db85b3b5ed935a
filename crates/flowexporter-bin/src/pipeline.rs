//! The record pipeline of `flowexporter run` with a collector: journal -> minute
//! batcher -> collector sink, every chunk announced in the journal before it leaves.

use std::time::{Instant, SystemTime};

use flow_batch::{MinuteBatcher, NO_TAG};
use flow_capture::FlowRecord;
use flow_sink::{CollectorSink, FlowSink, RecordJournal, SinkError};

use crate::ratelimit::RateLimited;

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
    /// Warnings about single records, rate-limited.
    pub warnings: RateLimited,
}

impl Pipeline {
    /// Journals records read together and hands them to the batcher, each tagged with
    /// its journal position (so that the chunk it ends up in names its records'
    /// positions directly). The records of one read share one clock reading.
    pub fn push_all(&mut self, records: impl IntoIterator<Item = FlowRecord>) {
        let now = SystemTime::now();
        for record in records {
            match self.journal.append_tagged(&record) {
                Ok(at) => self.batch(record, at, now),
                Err(e) => {
                    self.warnings.warn(|| format!("record not journaled: {e}"));
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

    /// Closes windows that are due and syncs the journal when due.
    pub fn tick(&mut self) -> Result<(), SinkError> {
        self.batcher.handle_timeout(SystemTime::now());
        self.journal.sync_if_due(Instant::now())?;
        Ok(())
    }

    /// Sends every ready chunk: intent in the journal, deliver (or spool), done.
    pub async fn drain(&mut self) -> Result<(), SinkError> {
        while let Some(chunk) = self.batcher.poll_chunk() {
            let id = self.journal.begin_chunk(&chunk)?;
            self.sink.deliver(&chunk).await?;
            self.journal.end_chunk(&id)?;
        }
        Ok(())
    }
}
