//! What an IPFIX sink has done: [`IpfixCounters`], and the atomics only it keeps.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{CollectorCounters, spool::SpoolCounters};

/// What an [`IpfixSink`](super::IpfixSink) has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IpfixCounters {
    /// Chunks handed to [`deliver`](crate::FlowSink::deliver) and accepted (spooled,
    /// kept in memory when the spool could not take them, or exported without a
    /// spool).
    pub chunks_accepted: u64,
    /// Chunks whose messages all left (UDP: sent; TCP: written and acknowledged by
    /// the collector's host).
    pub chunks_exported: u64,
    /// Records in those chunks (each one data record).
    pub records_exported: u64,
    /// Export attempts made (one per try of a chunk).
    pub attempts: u64,
    /// Attempts that failed and were retried.
    pub retries: u64,
    /// Attempts that failed: no connection, a send or write error, a timeout.
    pub failed_attempts: u64,
    /// Of those, the ones that timed out (connect, or write and acknowledgement).
    pub timeouts: u64,
    /// IPFIX messages sent, templates included (those of failed attempts too).
    pub messages_sent: u64,
    /// Bytes of those messages.
    pub message_bytes_sent: u64,
    /// Template messages among them (at the start of each transport session, and
    /// each UDP template refresh).
    pub template_messages_sent: u64,
    /// Transport sessions opened: UDP sockets, TCP connections.
    pub sessions_opened: u64,
    /// Chunks refused for good (a spooled frame that does not decode), moved to
    /// `rejected/`.
    pub chunks_rejected: u64,
    /// Records in those chunks.
    pub records_rejected: u64,
    /// Chunks given up on without a spool (retry budget spent).
    pub chunks_failed: u64,
    /// Total time of the attempts that succeeded, ns (with `attempts_timed`, the mean
    /// time to export a chunk).
    pub export_time_ns: u64,
    /// Attempts that `export_time_ns` covers.
    pub attempts_timed: u64,
    /// Chunks the spool could not take (an I/O error: disk full, quota, EIO), kept in
    /// memory instead and exported from there.
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
    /// reports, as for a
    /// [collector sink](crate::CollectorCounters::records_lost_spool_reported) (the
    /// completeness itself is not exported over IPFIX: see the module docs).
    pub records_lost_spool_reported: u64,
    /// Records of frames dropped too late for their window's completeness.
    pub records_lost_spool_unreported: u64,
    /// Records dropped of windows forgotten before their last chunk came.
    pub records_lost_spool_forgotten: u64,
    /// Chunks in memory now, waiting to be exported (a gauge).
    pub memory_chunks: u64,
    /// Frame bytes in memory now (a gauge).
    pub memory_bytes: u64,
    /// The spool's counters, when there is a spool.
    pub spool: Option<SpoolCounters>,
}

impl IpfixCounters {
    /// The send task's counters (`c`, named as a collector sink's) with the IPFIX
    /// sink's own.
    pub(crate) fn from_parts(c: CollectorCounters, own: &OwnCounters) -> IpfixCounters {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        IpfixCounters {
            chunks_accepted: c.chunks_accepted,
            chunks_exported: c.chunks_sent,
            records_exported: c.records_sent,
            attempts: c.requests,
            retries: c.retries,
            failed_attempts: c.transport_errors,
            timeouts: get(&own.timeouts),
            messages_sent: get(&own.messages),
            message_bytes_sent: get(&own.message_bytes),
            template_messages_sent: get(&own.template_messages),
            sessions_opened: get(&own.sessions),
            chunks_rejected: c.chunks_rejected,
            records_rejected: c.records_rejected,
            chunks_failed: c.chunks_failed,
            export_time_ns: c.request_time_ns,
            attempts_timed: c.requests_timed,
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

/// What only an IPFIX sink counts.
#[derive(Debug, Default)]
pub(crate) struct OwnCounters {
    pub(crate) timeouts: AtomicU64,
    pub(crate) messages: AtomicU64,
    pub(crate) message_bytes: AtomicU64,
    pub(crate) template_messages: AtomicU64,
    pub(crate) sessions: AtomicU64,
}
