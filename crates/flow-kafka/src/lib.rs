//! Kafka for flowexporter: what the exporter's `KafkaSink` (flow-sink) and the
//! collector's Kafka input, output and heartbeat topic share.
//!
//! - [`KafkaSettings`]: brokers, TLS and SASL, turned into an `rdkafka`
//!   [`ClientConfig`] (with the settings every flowexporter producer needs:
//!   [`KafkaSettings::producer_config`], idempotent, `acks=all`, compressed);
//! - [`check_topic`]: asks the cluster for a topic's partitions at start, so that an
//!   unreachable broker, a missing topic or a refused authorization is a clear,
//!   typed [`KafkaError`] before anything is sent;
//! - [`ErrorKind`]: the kinds errors are counted by in metrics;
//! - the header names the messages carry ([`BATCH_ID_HEADER`], [`FLOW_ID_HEADER`]).
//!
//! The client is rust-rdkafka (librdkafka underneath, built from its vendored source).

mod errors;
mod settings;
mod topic;

pub use errors::{ErrorKind, KafkaError};
pub use rdkafka;
pub use rdkafka::ClientConfig;
pub use settings::{KafkaSettings, KafkaTls, Sasl, SaslMechanism};
pub use topic::{TopicInfo, check_topic};

/// Header of a chunk message (exporter to input topic): the chunk's batch ID, in its
/// text form (`docs/wire-format.md`), so that a consumer can drop a duplicate without
/// decoding the frame.
pub const BATCH_ID_HEADER: &str = "flowexporter-batch-id";

/// Header of a flow message (collector to output topic): the flow's deterministic ID,
/// `<batch ID>/<record index>`; a completeness record's is the same form (see
/// `docs/kafka.md`). A consumer drops a message whose ID it has seen.
pub const FLOW_ID_HEADER: &str = "flowexporter-id";

/// Header of a flow message: what the value holds, `flow` or `completeness`.
pub const KIND_HEADER: &str = "flowexporter-kind";

/// Header of a heartbeat message: the collector node that published it (a node skips
/// its own).
pub const NODE_HEADER: &str = "flowexporter-node";
