//! A snapshot of what the batcher has done.

/// Counters and gauges of a [`MinuteBatcher`](crate::MinuteBatcher), read with
/// [`MinuteBatcher::counters`](crate::MinuteBatcher::counters).
///
/// Counters only grow. At any time
/// `records_in == records_rejected + records_out + buffered_records`: no record is
/// lost inside the batcher.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchCounters {
    /// Records pushed, rejected ones included.
    pub records_in: u64,
    /// Records whose own window had already closed when they arrived; they were placed
    /// in the current window instead.
    pub records_late: u64,
    /// Records whose close time was more than `max_future_skew` ahead of `now`; they
    /// were placed in the current window instead.
    pub records_future: u64,
    /// Records refused because they cannot be encoded (a time before the Unix epoch or
    /// from 10000-01-01 on); each was handed back in [`BatchError::UnencodableRecord`](crate::BatchError::UnencodableRecord).
    pub records_rejected: u64,
    /// Records emitted in chunks.
    pub records_out: u64,
    /// Chunks emitted.
    pub chunks_out: u64,
    /// Chunks emitted before their window closed, because a record or byte limit was
    /// reached.
    pub chunks_split: u64,
    /// Encoded bytes (before compression) of the records emitted.
    pub bytes_out: u64,
    /// Windows closed because their time (plus lateness) had passed.
    pub windows_closed: u64,
    /// Windows closed early by [`MinuteBatcher::flush`](crate::MinuteBatcher::flush).
    pub windows_flushed: u64,
    /// Gauge: windows open now.
    pub open_windows: u64,
    /// Gauge: records buffered in open windows now.
    pub buffered_records: u64,
    /// Gauge: encoded bytes buffered in open windows now.
    pub buffered_bytes: u64,
    /// Gauge: chunks emitted but not yet taken with
    /// [`MinuteBatcher::poll_chunk`](crate::MinuteBatcher::poll_chunk).
    pub pending_chunks: u64,
}
