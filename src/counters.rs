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
    /// Journal operations that returned an error (a record that cannot be encoded;
    /// a journal that cannot write degrades instead, counted in its own counters); the
    /// pipeline went on each time.
    pub journal_errors: u64,
    /// Chunks given up: the sink failed in a way retrying cannot fix
    /// (`SinkError::is_permanent`), or the retry policy ran out.
    pub delivery_errors: u64,
    /// Records of those chunks: dropped, reason `delivery_failed`.
    pub records_dropped: u64,
    /// Failed attempts to hand a chunk to the sink that will be tried again.
    pub delivery_retries: u64,
    /// Records of the oldest waiting chunks dropped because the backlog of chunks the
    /// sink did not take reached its limits: reason `backlog_full`.
    pub records_dropped_backlog_full: u64,
    /// Records still waiting for the sink at shutdown without a journal to keep
    /// them: lost, reason `unsent_at_stop`.
    pub records_unsent_at_stop: u64,
    /// Chunks still waiting for the sink at shutdown, left journaled for the next
    /// start to replay.
    pub chunks_left_in_journal: u64,
    /// Gauge: chunks waiting for their next attempt.
    pub chunks_waiting: u64,
    /// Chunks made ready for the sink (new ones, when the batcher closed them, and
    /// replays), whether or not the sink took them.
    pub chunks_out: u64,
    /// Chunks recovered from the journal and replayed.
    pub chunks_replayed: u64,
    /// Records recovered from the journal in no chunk, batched again.
    pub records_recovered: u64,
    /// Snapshots of the open connections taken (one per window).
    pub interim_snapshots: u64,
    /// Snapshots that failed (logged; the window goes without interim records).
    pub interim_snapshot_failures: u64,
    /// Interim records taken (one per open connection per window).
    pub interim_records: u64,
    /// Gauge: how long the last snapshot took, µs.
    pub interim_last_snapshot_us: u64,
}
