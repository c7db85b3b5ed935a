//! What an OTLP sink has done: [`OtlpCounters`], and what only it counts.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{CollectorCounters, spool::SpoolCounters};

/// What an [`OtlpSink`](super::OtlpSink) has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OtlpCounters {
    /// Chunks handed to [`deliver`](crate::FlowSink::deliver) and accepted (spooled,
    /// kept in memory when the spool could not take them, or sent without a spool).
    pub chunks_accepted: u64,
    /// Chunks done with, every request of theirs accepted (2xx) (but single
    /// records refused as too large, [`log_records_too_large`](Self::log_records_too_large)).
    pub chunks_sent: u64,
    /// Requests the receiver accepted (2xx): one per chunk, or several for a chunk
    /// larger than [`max_request_bytes`](super::OtlpSinkConfig::max_request_bytes)
    /// (with `chunks_sent`, the requests per chunk).
    pub requests_sent: u64,
    /// Log records in those requests (one per flow record).
    pub log_records_sent: u64,
    /// Request body bytes of those requests, as sent (compressed).
    pub bytes_sent: u64,
    /// Requests the receiver refused as too large (413) that were split in two
    /// halves and sent again (a steady count says: lower `max_request_bytes` to the
    /// receiver's limit).
    pub requests_split_on_413: u64,
    /// Log records the receiver refused alone as too large (413): left out for
    /// good, logged; the rest of their chunks is delivered.
    pub log_records_too_large: u64,
    /// Log records the receiver said it rejected in a 2xx answer's
    /// `partial_success` (not retried: the receiver has them, or will never take
    /// them).
    pub log_records_rejected_by_receiver: u64,
    /// 2xx answers that carried such a partial success.
    pub partial_successes: u64,
    /// HTTP requests made (attempts, whatever their answer).
    pub requests: u64,
    /// Attempts that failed and were retried.
    pub retries: u64,
    /// Attempts that got no HTTP answer (refused, reset, timed out, TLS).
    pub transport_errors: u64,
    /// Attempts answered with a retriable status (408, 429, 502, 503, 504).
    pub retriable_statuses: u64,
    /// Chunks refused for good (any other status; a spooled frame that could not be
    /// decoded), moved to `rejected/` (the records of their requests already
    /// accepted, if any, included).
    pub chunks_rejected: u64,
    /// Records in those chunks.
    pub records_rejected: u64,
    /// Chunks given up on without a spool (retry budget spent).
    pub chunks_failed: u64,
    /// Total time spent in requests that got an HTTP answer, ns (with
    /// `requests_timed`, the receiver's mean latency).
    pub request_time_ns: u64,
    /// Requests that got an HTTP answer (the ones `request_time_ns` covers).
    pub requests_timed: u64,
    /// CPU time spent decoding chunks and building and compressing requests, ns (a
    /// retried chunk is decoded and encoded again).
    pub build_time_ns: u64,
    /// Chunks the spool could not take (an I/O error: disk full, quota, EIO), kept in
    /// memory instead and sent from there.
    pub chunks_unspooled: u64,
    /// Records in those chunks.
    pub records_unspooled: u64,
    /// Chunks kept in memory that were written to the spool later.
    pub chunks_respooled: u64,
    /// Chunks kept in memory that were dropped (the memory queue full).
    pub chunks_dropped_memory: u64,
    /// Records in those chunks.
    pub records_dropped_memory: u64,
    /// Frame bytes in those chunks.
    pub bytes_dropped_memory: u64,
    /// Chunks still in memory at close that the spool could not take (left to the
    /// caller's record journal).
    pub chunks_unsaved_at_close: u64,
    /// Records in those chunks.
    pub records_unsaved_at_close: u64,
    /// Records of frames dropped before delivery that a window's completeness
    /// reports (`lost_spool`), as for a
    /// [collector sink](crate::CollectorCounters::records_lost_spool_reported).
    pub records_lost_spool_reported: u64,
    /// Records of frames dropped too late for their window's completeness.
    pub records_lost_spool_unreported: u64,
    /// Records dropped of windows forgotten before their last chunk came.
    pub records_lost_spool_forgotten: u64,
    /// Chunks in memory now, waiting to be sent (a gauge).
    pub memory_chunks: u64,
    /// Frame bytes in memory now (a gauge).
    pub memory_bytes: u64,
    /// The spool's counters, when there is a spool.
    pub spool: Option<SpoolCounters>,
}

impl OtlpCounters {
    /// The send task's counters (`c`, named as a collector sink's) with the OTLP
    /// sink's own (`own`).
    pub(crate) fn from_parts(c: CollectorCounters, own: &OwnCounters) -> OtlpCounters {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        OtlpCounters {
            chunks_accepted: c.chunks_accepted,
            chunks_sent: c.chunks_sent,
            requests_sent: get(&own.requests_sent),
            log_records_sent: c.records_sent,
            bytes_sent: c.bytes_sent,
            requests_split_on_413: get(&own.requests_split_on_413),
            log_records_too_large: get(&own.log_records_too_large),
            log_records_rejected_by_receiver: get(&own.log_records_rejected),
            partial_successes: get(&own.partial_successes),
            requests: c.requests,
            retries: c.retries,
            transport_errors: c.transport_errors,
            retriable_statuses: c.retriable_statuses,
            chunks_rejected: c.chunks_rejected,
            records_rejected: c.records_rejected,
            chunks_failed: c.chunks_failed,
            request_time_ns: c.request_time_ns,
            requests_timed: c.requests_timed,
            build_time_ns: get(&own.build_time_ns),
            chunks_unspooled: c.chunks_unspooled,
            records_unspooled: c.records_unspooled,
            chunks_respooled: c.chunks_respooled,
            chunks_dropped_memory: c.chunks_dropped_memory,
            records_dropped_memory: c.records_dropped_memory,
            bytes_dropped_memory: c.bytes_dropped_memory,
            chunks_unsaved_at_close: c.chunks_unsaved_at_close,
            records_unsaved_at_close: c.records_unsaved_at_close,
            records_lost_spool_reported: c.records_lost_spool_reported,
            records_lost_spool_unreported: c.records_lost_spool_unreported,
            records_lost_spool_forgotten: c.records_lost_spool_forgotten,
            memory_chunks: c.memory_chunks,
            memory_bytes: c.memory_bytes,
            spool: c.spool,
        }
    }
}

/// What only an OTLP sink counts.
#[derive(Debug, Default)]
pub(crate) struct OwnCounters {
    pub(crate) log_records_rejected: AtomicU64,
    pub(crate) partial_successes: AtomicU64,
    pub(crate) build_time_ns: AtomicU64,
    pub(crate) requests_sent: AtomicU64,
    pub(crate) requests_split_on_413: AtomicU64,
    pub(crate) log_records_too_large: AtomicU64,
}
