//! What the Kafka parts did, counted (exported as `flowcollector_kafka_*` metrics).

use std::sync::atomic::{AtomicU64, Ordering};

use flow_kafka::ErrorKind;

/// Counters of the Kafka output, heartbeat topic and input.
#[derive(Debug, Default)]
pub struct KafkaStats {
    /// Flow and completeness messages handed to the producer (retries included).
    pub output_produced: AtomicU64,
    /// Their bytes (values).
    pub output_bytes: AtomicU64,
    /// Flow and completeness messages the brokers acknowledged.
    pub output_acknowledged: AtomicU64,
    /// Messages produced again after a failed delivery.
    pub output_retried: AtomicU64,
    /// Messages given up for good (larger than the brokers accept): counted, logged.
    pub output_dropped_too_large: AtomicU64,
    /// Delivery and produce errors, by [`ErrorKind`] (index order of `ErrorKind::ALL`).
    pub output_errors: [AtomicU64; ErrorKind::ALL.len()],
    /// Heartbeat messages published.
    pub heartbeats_published: AtomicU64,
    /// Their bytes.
    pub heartbeat_bytes_published: AtomicU64,
    /// Heartbeats dropped because the producer refused them (its queue full after a
    /// long outage, or an error): other nodes lack them, which can leave flows
    /// unattributed.
    pub heartbeats_dropped: AtomicU64,
    /// Heartbeat publish errors, by kind.
    pub heartbeat_errors: [AtomicU64; ErrorKind::ALL.len()],
    /// Heartbeat messages consumed (other nodes', live).
    pub heartbeats_consumed: AtomicU64,
    /// Heartbeat messages that did not decode (skipped, logged).
    pub heartbeats_undecodable: AtomicU64,
    /// Heartbeat messages applied while rebuilding the map at start.
    pub heartbeats_rebuilt: AtomicU64,
    /// How long the rebuild took, in microseconds.
    pub rebuild_micros: AtomicU64,
    /// Messages behind the heartbeat topic's end (summed over partitions).
    pub heartbeat_lag: AtomicU64,
    /// Chunk messages consumed from the input topic.
    pub input_consumed: AtomicU64,
    /// Their bytes.
    pub input_bytes: AtomicU64,
    /// Input messages that were not decodable frames (skipped, committed, logged).
    pub input_undecodable: AtomicU64,
    /// Input messages whose batch ID was stored before (dropped).
    pub input_duplicates: AtomicU64,
    /// Input messages the pipeline could not take yet (store failed, busy): read again.
    pub input_retried: AtomicU64,
    /// Offset commits of the input consumer group.
    pub input_commits: AtomicU64,
    /// Messages behind the input topic's end on the partitions this node reads.
    pub input_lag: AtomicU64,
    /// Input messages taken whose offsets wait to be committed (their chunks' flows
    /// not all written and acknowledged yet).
    pub input_uncommitted: AtomicU64,
    /// Records an intake routed to the connection topic (`--connection-topic`).
    pub routed_records: AtomicU64,
    /// Connection-topic messages consumed.
    pub connection_consumed: AtomicU64,
    /// Their bytes.
    pub connection_bytes: AtomicU64,
    /// Records taken from the connection topic (duplicates not counted).
    pub connection_records: AtomicU64,
    /// Records dropped because the same flow (batch ID and index) waited in the
    /// connection stage already.
    pub connection_duplicates: AtomicU64,
    /// Held records let go, undecided, because their partition was taken away (the
    /// next owner decides them).
    pub connection_released: AtomicU64,
    /// Batches with records of this node not yet written or acknowledged.
    pub connection_batches_open: AtomicU64,
    /// Connection-topic messages that did not decode (skipped, committed, logged).
    pub connection_undecodable: AtomicU64,
    /// Attributed flows dropped because their output line could not be encoded
    /// (logged).
    pub connection_dropped: AtomicU64,
    /// Connection-topic partitions this node owns now.
    pub connection_partitions: AtomicU64,
    /// Offset commits of the connection consumer group.
    pub connection_commits: AtomicU64,
    /// Messages behind the connection topic's end on the partitions this node owns.
    pub connection_lag: AtomicU64,
    /// Connection-topic messages taken whose offsets wait to be committed (records
    /// held back, or not yet acknowledged by the output).
    pub connection_uncommitted: AtomicU64,
    /// Consumer errors (input, heartbeat and connection topics), by kind.
    pub consumer_errors: [AtomicU64; ErrorKind::ALL.len()],
}

impl KafkaStats {
    /// Adds `n` to `counter`.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts an error of `kind` in `counters`.
    pub(crate) fn error(counters: &[AtomicU64; ErrorKind::ALL.len()], kind: ErrorKind) {
        counters[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// A counter's value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
