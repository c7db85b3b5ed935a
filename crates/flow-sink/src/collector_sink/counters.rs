//! What a collector sink has done: [`CollectorCounters`], the atomics behind them and
//! the gauges the send task publishes.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{spool::SpoolCounters, window_losses::LossCounts};

/// What a collector sink has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CollectorCounters {
    /// Chunks handed to [`deliver`](crate::FlowSink::deliver) and accepted (spooled,
    /// kept in memory when the spool could not take them, or sent without a spool).
    pub chunks_accepted: u64,
    /// Chunks the collector acknowledged (2xx).
    pub chunks_sent: u64,
    /// Records in those chunks.
    pub records_sent: u64,
    /// Frame bytes in those chunks.
    pub bytes_sent: u64,
    /// Acknowledged chunks the collector reported as duplicates.
    pub chunks_duplicate: u64,
    /// HTTP requests made.
    pub requests: u64,
    /// Attempts that failed and were retried.
    pub retries: u64,
    /// Attempts that got no HTTP answer (refused, reset, timed out, TLS).
    pub transport_errors: u64,
    /// Attempts answered with a retriable status (408, 429, 5xx).
    pub retriable_statuses: u64,
    /// Chunks refused for good (other 4xx, 3xx), moved to `rejected/`.
    pub chunks_rejected: u64,
    /// Records in those chunks.
    pub records_rejected: u64,
    /// Chunks given up on without a spool (retry budget spent).
    pub chunks_failed: u64,
    /// Total time spent in requests that got an HTTP answer, ns (with `requests_timed`
    /// it gives the collector's mean latency).
    pub request_time_ns: u64,
    /// Requests that got an HTTP answer (the ones `request_time_ns` covers).
    pub requests_timed: u64,
    /// Chunks the spool could not take (an I/O error: disk full, quota, EIO), kept in
    /// memory instead and sent from there.
    pub chunks_unspooled: u64,
    /// Records in those chunks.
    pub records_unspooled: u64,
    /// Chunks kept in memory that were written to the spool later, once it took a
    /// chunk again (durable from then on).
    pub chunks_respooled: u64,
    /// Chunks kept in memory that were dropped: the oldest, to make room for a newer
    /// one, or at [`shut_down`](super::CollectorSink::shut_down) when the spool still could not take
    /// them.
    pub chunks_dropped_memory: u64,
    /// Chunks still in memory at close that the spool could not take: not settled, so
    /// a caller's record journal sends them again at its next start (a caller without
    /// one loses them).
    pub chunks_unsaved_at_close: u64,
    /// Records in those chunks.
    pub records_unsaved_at_close: u64,
    /// Records in those chunks.
    pub records_dropped_memory: u64,
    /// Frame bytes in those chunks.
    pub bytes_dropped_memory: u64,
    /// Records of frames dropped before delivery (from a full spool, for a full disk,
    /// from a full memory queue) that were added to the
    /// [`lost_spool`](flow_batch::Completeness::lost_spool) of their window's last
    /// chunk (see the [module docs](super#records-dropped-and-the-windows-completeness)).
    /// Should that last chunk be dropped in turn, its own records count as unreported.
    pub records_lost_spool_reported: u64,
    /// Records of frames dropped too late to be reported so: after their window's
    /// last chunk was encoded (often to make room for it), in the last chunk itself,
    /// or of a window whose last chunk carried no completeness.
    pub records_lost_spool_unreported: u64,
    /// Records dropped of windows forgotten before their last chunk came, because
    /// more windows than the sink remembers (64) had drops waiting.
    pub records_lost_spool_forgotten: u64,
    /// Chunks in memory now, waiting to be sent (a gauge).
    pub memory_chunks: u64,
    /// Frame bytes in memory now (a gauge).
    pub memory_bytes: u64,
    /// The spool's counters, when there is a spool.
    pub spool: Option<SpoolCounters>,
}

/// The live counters behind [`CollectorCounters`] (the gauges come from [`Gauges`]).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) chunks_accepted: AtomicU64,
    pub(crate) chunks_sent: AtomicU64,
    pub(crate) records_sent: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) chunks_duplicate: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) transport_errors: AtomicU64,
    pub(crate) retriable_statuses: AtomicU64,
    pub(crate) chunks_rejected: AtomicU64,
    pub(crate) records_rejected: AtomicU64,
    pub(crate) chunks_failed: AtomicU64,
    pub(crate) request_time_ns: AtomicU64,
    pub(crate) requests_timed: AtomicU64,
    pub(crate) chunks_unspooled: AtomicU64,
    pub(crate) records_unspooled: AtomicU64,
    pub(crate) chunks_dropped_memory: AtomicU64,
    pub(crate) chunks_unsaved_at_close: AtomicU64,
    pub(crate) records_unsaved_at_close: AtomicU64,
    pub(crate) chunks_respooled: AtomicU64,
    pub(crate) records_dropped_memory: AtomicU64,
    pub(crate) bytes_dropped_memory: AtomicU64,
}

impl Counters {
    /// A snapshot, with the send task's latest `gauges` and what became of the records
    /// dropped (`losses`).
    pub(crate) fn snapshot(&self, gauges: &Gauges, losses: LossCounts) -> CollectorCounters {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CollectorCounters {
            chunks_accepted: get(&self.chunks_accepted),
            chunks_sent: get(&self.chunks_sent),
            records_sent: get(&self.records_sent),
            bytes_sent: get(&self.bytes_sent),
            chunks_duplicate: get(&self.chunks_duplicate),
            requests: get(&self.requests),
            retries: get(&self.retries),
            transport_errors: get(&self.transport_errors),
            retriable_statuses: get(&self.retriable_statuses),
            chunks_rejected: get(&self.chunks_rejected),
            records_rejected: get(&self.records_rejected),
            chunks_failed: get(&self.chunks_failed),
            request_time_ns: get(&self.request_time_ns),
            requests_timed: get(&self.requests_timed),
            chunks_unspooled: get(&self.chunks_unspooled),
            records_unspooled: get(&self.records_unspooled),
            chunks_dropped_memory: get(&self.chunks_dropped_memory),
            chunks_unsaved_at_close: get(&self.chunks_unsaved_at_close),
            records_unsaved_at_close: get(&self.records_unsaved_at_close),
            chunks_respooled: get(&self.chunks_respooled),
            records_dropped_memory: get(&self.records_dropped_memory),
            bytes_dropped_memory: get(&self.bytes_dropped_memory),
            records_lost_spool_reported: losses.reported,
            records_lost_spool_unreported: losses.unreported,
            records_lost_spool_forgotten: losses.forgotten,
            memory_chunks: gauges.memory_chunks as u64,
            memory_bytes: gauges.memory_bytes,
            spool: gauges.spool,
        }
    }
}

/// Adds `n` to `counter`.
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// What waits to be sent, as the send task last published it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Gauges {
    /// Frames in the spool.
    pub(crate) spooled: usize,
    /// Frames in the memory queue.
    pub(crate) memory_chunks: usize,
    /// Their bytes.
    pub(crate) memory_bytes: u64,
    /// The spool's counters, when there is a spool.
    pub(crate) spool: Option<SpoolCounters>,
}

impl Gauges {
    /// Frames waiting in the spool and in memory (0 when drained): what flush waits on.
    pub(crate) fn backlog(&self) -> usize {
        self.spooled + self.memory_chunks
    }
}
