//! What the pipeline itself counted (the batcher, the journal and the sink count their
//! own parts).

/// The pipeline's counters; every place it drops a record is one of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PipelineCounters {
    /// Records read from the source.
    pub records_in: u64,
    /// Records the batcher refused (a time before the Unix epoch; they stay in the
    /// journal, and are dropped from the batch). Dropped, reason `batch_refused`.
    pub batch_refused: u64,
    /// Failed journal operations (append, sync, chunk intent, done mark); the pipeline
    /// went on each time.
    pub journal_errors: u64,
    /// Chunks the sink could neither deliver, keep durably nor keep in memory.
    pub delivery_errors: u64,
    /// Records of those chunks: dropped, reason `delivery_failed`.
    pub records_dropped: u64,
    /// Chunks handed to the sink (new and replayed).
    pub chunks_out: u64,
    /// Chunks recovered from the journal and replayed.
    pub chunks_replayed: u64,
    /// Records recovered from the journal in no chunk, batched again.
    pub records_recovered: u64,
}
