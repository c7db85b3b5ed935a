//! What the collector has done: the counters behind [`CollectorStats`].

use std::sync::atomic::{AtomicU64, Ordering};

use flow_http::ConnectionStats;

/// What a collector has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CollectorStats {
    /// Requests to the chunk path.
    pub requests: u64,
    /// Chunks stored.
    pub chunks_accepted: u64,
    /// Records in the chunks stored (each becomes one output flow, after attribution).
    pub records_accepted: u64,
    /// Flows written to the output.
    pub flows_written: u64,
    /// Completeness records written to the output (one per exporter window).
    pub completeness_written: u64,
    /// Chunks refused with 503 because too many flows waited for a failing output.
    pub refused_busy: u64,
    /// Output writes or commits that failed (the flows are kept and retried).
    pub output_failures: u64,
    /// Checkpoints that could not be written.
    pub checkpoint_failures: u64,
    /// Chunks answered as duplicates (not stored again).
    pub chunks_duplicate: u64,
    /// Requests answered 400 (undecodable frame).
    pub rejected_undecodable: u64,
    /// Requests answered 408 because the body did not arrive within
    /// [`CollectorOptions::body_read_timeout`](crate::CollectorOptions::body_read_timeout).
    pub body_timeouts: u64,
    /// Requests answered 413.
    pub rejected_too_large: u64,
    /// Requests answered 415.
    pub rejected_content_type: u64,
    /// Chunks answered 503 because the ledger could not store them.
    pub write_failures: u64,
    /// Failures injected ([`FaultInjection`](crate::FaultInjection)), lost acknowledgements included.
    pub faults_injected: u64,
    /// Connections accepted and served.
    pub connections_accepted: u64,
    /// Connections closed as soon as accepted because
    /// [`CollectorOptions::max_connections`](crate::CollectorOptions::max_connections) were open.
    pub connections_refused: u64,
    /// Connections closed by the header read timeout or the idle timeout.
    pub connections_timed_out: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Failed `accept` calls (out of file descriptors, ...), each followed by a short
    /// wait.
    pub accept_errors: u64,
    /// Chunks answered 503 because the output (Kafka) did not acknowledge their flows
    /// within [`CollectorOptions::output_ack_timeout`](crate::CollectorOptions::output_ack_timeout)
    /// (they are stored: the retry is answered `duplicate` once it does).
    pub ack_timeouts: u64,
}

/// The live counters behind [`CollectorStats`] (connections are counted by
/// `flow_http`).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) requests: AtomicU64,
    pub(crate) chunks_accepted: AtomicU64,
    pub(crate) records_accepted: AtomicU64,
    pub(crate) flows_written: AtomicU64,
    pub(crate) completeness_written: AtomicU64,
    pub(crate) refused_busy: AtomicU64,
    pub(crate) output_failures: AtomicU64,
    pub(crate) checkpoint_failures: AtomicU64,
    pub(crate) chunks_duplicate: AtomicU64,
    pub(crate) rejected_undecodable: AtomicU64,
    pub(crate) body_timeouts: AtomicU64,
    pub(crate) rejected_too_large: AtomicU64,
    pub(crate) rejected_content_type: AtomicU64,
    pub(crate) write_failures: AtomicU64,
    pub(crate) faults_injected: AtomicU64,
    pub(crate) ack_timeouts: AtomicU64,
}

impl Stats {
    /// A snapshot, with the connection counters of `connections`.
    pub(crate) fn snapshot(&self, connections: ConnectionStats) -> CollectorStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CollectorStats {
            requests: get(&self.requests),
            chunks_accepted: get(&self.chunks_accepted),
            records_accepted: get(&self.records_accepted),
            flows_written: get(&self.flows_written),
            completeness_written: get(&self.completeness_written),
            refused_busy: get(&self.refused_busy),
            output_failures: get(&self.output_failures),
            checkpoint_failures: get(&self.checkpoint_failures),
            chunks_duplicate: get(&self.chunks_duplicate),
            rejected_undecodable: get(&self.rejected_undecodable),
            body_timeouts: get(&self.body_timeouts),
            rejected_too_large: get(&self.rejected_too_large),
            rejected_content_type: get(&self.rejected_content_type),
            write_failures: get(&self.write_failures),
            faults_injected: get(&self.faults_injected),
            connections_accepted: connections.accepted,
            connections_refused: connections.refused_over_cap,
            connections_timed_out: connections.timed_out,
            connections_open: connections.open,
            accept_errors: connections.accept_errors,
            ack_timeouts: get(&self.ack_timeouts),
        }
    }
}

/// What the attributor, the ledger and the output hold, read under the pipeline's
/// lock.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct PartsSnapshot {
    /// The attributor's counters and sizes.
    pub attribution: crate::attribution::AttributionStats,
    /// The ledger's.
    pub ledger: crate::ledger::LedgerStats,
    /// Decided flows waiting for a failing output.
    pub unwritten: u64,
    /// What the last start's recovery lost or could not tell.
    pub recovery: crate::pipeline::RecoveryLosses,
    /// The window tracker's counters and sizes.
    pub completeness: crate::completeness::CompletenessStats,
}

/// Adds one to `counter`.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
