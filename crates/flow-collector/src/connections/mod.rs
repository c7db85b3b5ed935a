//! Connection routing (`--connection-topic`, `docs/kafka.md`): collector nodes that
//! take chunks route each record by its connection ([`connection_partition`]) to a
//! Kafka topic, and every node attributes the records of the partitions it owns, so
//! that both ends' records of a connection meet on one node and N nodes attribute as
//! one would.
//!
//! Here, sans-IO: the message format between the two halves ([`encode_routed`],
//! [`decode_routed`]) and the attributing half's bookkeeping ([`ConnectionStage`]).
//! The Kafka consumer that drives it is `crate::kafka` (feature `kafka`).
//!
//! [`connection_partition`]: crate::attribution::connection_partition

mod message;
mod stage;

pub use message::{
    MAX_ROUTED_RECORDS, ROUTED_FORMAT_VERSION, RoutedDecodeError, RoutedRecords, decode_routed,
    encode_routed, encode_routed_within,
};
pub use stage::{ConnectionStage, ConnectionStageStats};
