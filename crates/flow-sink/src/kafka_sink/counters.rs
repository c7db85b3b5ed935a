//! What a Kafka sink has done: [`KafkaCounters`], and the failed attempts by kind.

use std::sync::atomic::{AtomicU64, Ordering};

use flow_kafka::ErrorKind;

use crate::{CollectorCounters, spool::SpoolCounters};

/// What a [`KafkaSink`](super::KafkaSink) has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KafkaCounters {
    /// Chunks handed to [`deliver`](crate::FlowSink::deliver) and accepted (spooled,
    /// kept in memory when the spool could not take them, or produced without a
    /// spool).
    pub chunks_accepted: u64,
    /// Messages (one per chunk) the brokers acknowledged (`acks=all`).
    pub messages_produced: u64,
    /// Records in those messages.
    pub records_produced: u64,
    /// Bytes of those messages' values (the frames).
    pub bytes_produced: u64,
    /// Produce attempts made.
    pub produce_attempts: u64,
    /// Attempts that failed and were retried.
    pub retries: u64,
    /// Failed attempts, by [`ErrorKind`] (read with
    /// [`produce_errors`](KafkaCounters::produce_errors)).
    pub produce_errors_by_kind: [u64; ErrorKind::ALL.len()],
    /// Producers replaced after the idempotent producer's fatal error.
    pub producers_rebuilt: u64,
    /// Chunks refused for good (larger than the brokers allow), moved to `rejected/`.
    pub chunks_rejected: u64,
    /// Records in those chunks.
    pub records_rejected: u64,
    /// Chunks given up on without a spool (retry budget spent).
    pub chunks_failed: u64,
    /// Total time of the produces the brokers acknowledged, ns (with
    /// `produces_timed`, the mean time to an acknowledgement).
    pub produce_time_ns: u64,
    /// Produces that `produce_time_ns` covers.
    pub produces_timed: u64,
    /// Chunks the spool could not take (an I/O error: disk full, quota, EIO), kept in
    /// memory instead and produced from there.
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
    /// Chunks in memory now, waiting to be produced (a gauge).
    pub memory_chunks: u64,
    /// Frame bytes in memory now (a gauge).
    pub memory_bytes: u64,
    /// The spool's counters, when there is a spool.
    pub spool: Option<SpoolCounters>,
}

impl KafkaCounters {
    /// Failed produce attempts of `kind`.
    pub fn produce_errors(&self, kind: ErrorKind) -> u64 {
        self.produce_errors_by_kind[kind.index()]
    }

    /// Failed produce attempts of every kind.
    pub fn produce_errors_total(&self) -> u64 {
        self.produce_errors_by_kind.iter().sum()
    }

    /// The send task's counters (`c`, named as a collector sink's) with the Kafka
    /// sink's own (`kinds`).
    pub(crate) fn from_parts(c: CollectorCounters, kinds: &KindCounters) -> KafkaCounters {
        let mut errors = [0; ErrorKind::ALL.len()];
        for (slot, counter) in errors.iter_mut().zip(&kinds.errors) {
            *slot = counter.load(Ordering::Relaxed);
        }
        KafkaCounters {
            chunks_accepted: c.chunks_accepted,
            messages_produced: c.chunks_sent,
            records_produced: c.records_sent,
            bytes_produced: c.bytes_sent,
            produce_attempts: c.requests,
            retries: c.retries,
            produce_errors_by_kind: errors,
            producers_rebuilt: kinds.rebuilt.load(Ordering::Relaxed),
            chunks_rejected: c.chunks_rejected,
            records_rejected: c.records_rejected,
            chunks_failed: c.chunks_failed,
            produce_time_ns: c.request_time_ns,
            produces_timed: c.requests_timed,
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

/// Failed attempts by kind, and producers rebuilt: what only a Kafka sink counts.
#[derive(Debug, Default)]
pub(crate) struct KindCounters {
    errors: [AtomicU64; ErrorKind::ALL.len()],
    rebuilt: AtomicU64,
}

impl KindCounters {
    /// Counts a failed attempt of `kind`.
    pub(crate) fn count(&self, kind: ErrorKind) {
        self.errors[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a producer rebuilt.
    pub(crate) fn rebuilt(&self) {
        self.rebuilt.fetch_add(1, Ordering::Relaxed);
    }
}
