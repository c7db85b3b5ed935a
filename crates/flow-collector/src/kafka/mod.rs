//! Kafka for the collector (`docs/kafka.md`): attributed flows out to a topic
//! ([`KafkaOutput`]), ownership heartbeats shared with the other collector nodes
//! through a heartbeat topic (the heartbeat topic: published every second,
//! followed by a reader thread, and read back at start before anything is
//! attributed), and chunks in from an input topic as a consumer group
//! (the input: offsets committed once the chunk's flows are acknowledged).
//!
//! [`KafkaOptions`] says which of them a collector runs; they are independent: a
//! node can take chunks over HTTP and write flows to Kafka, or read chunks from
//! Kafka and write JSON lines, and share heartbeats either way.

pub(crate) mod connections;
mod heartbeat_topic;
pub(crate) mod input;
mod offsets;
mod output;
mod stats;

use std::time::Duration;

pub use flow_kafka::{KafkaError, KafkaSettings};
pub use heartbeat_topic::RebuildReport;
pub(crate) use heartbeat_topic::{HeartbeatPublisher, follow, rebuild};
pub use output::{ConnectionRoute, KafkaOutput, KafkaOutputConfig};
pub use stats::KafkaStats;

/// How often a node publishes the heartbeats it extracted.
pub const HEARTBEAT_PUBLISH_INTERVAL: Duration = Duration::from_secs(1);

/// The Kafka parts a collector runs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct KafkaOptions {
    /// The cluster.
    pub settings: KafkaSettings,
    /// Attributed flows go to this topic instead of the JSON-lines file
    /// (`--output-topic`).
    pub output_topic: Option<String>,
    /// Heartbeats are shared with the other nodes through this topic
    /// (`--heartbeat-topic`).
    pub heartbeat_topic: Option<String>,
    /// Chunks are also read from this topic, as a member of [`group`](KafkaOptions::group)
    /// (`--input-topic`).
    pub input_topic: Option<String>,
    /// The consumer group of the input (`--group`, default `flowcollector`).
    pub group: String,
    /// Route every chunk's records by connection through this topic, and attribute
    /// the records of the partitions this node owns (`--connection-topic`; needs the
    /// output and heartbeat topics). See `docs/kafka.md`, "Connection routing".
    pub connection_topic: Option<String>,
    /// The consumer group of the connection topic (`--connection-group`, default
    /// the input group's name followed by `-connections`).
    pub connection_group: Option<String>,
    /// This node's name in the heartbeats it publishes (`--node-id`; default the host
    /// name and a random suffix, so that two nodes never share one).
    pub node_id: String,
    /// Longest the heartbeat topic's rebuild may take at start (default 5 minutes);
    /// beyond it the collector does not start.
    pub rebuild_timeout: Duration,
    /// Longest the start waits for the brokers to answer the topic checks (default
    /// 30 s).
    pub check_timeout: Duration,
}

impl KafkaOptions {
    /// Nothing enabled yet, on the cluster of `settings`.
    pub fn new(settings: KafkaSettings) -> KafkaOptions {
        KafkaOptions {
            settings,
            output_topic: None,
            heartbeat_topic: None,
            input_topic: None,
            group: "flowcollector".to_owned(),
            connection_topic: None,
            connection_group: None,
            node_id: default_node_id(),
            rebuild_timeout: Duration::from_secs(300),
            check_timeout: Duration::from_secs(30),
        }
    }

    /// Sets [`output_topic`](KafkaOptions::output_topic).
    pub fn with_output_topic(mut self, topic: impl Into<String>) -> KafkaOptions {
        self.output_topic = Some(topic.into());
        self
    }

    /// Sets [`heartbeat_topic`](KafkaOptions::heartbeat_topic).
    pub fn with_heartbeat_topic(mut self, topic: impl Into<String>) -> KafkaOptions {
        self.heartbeat_topic = Some(topic.into());
        self
    }

    /// Sets [`input_topic`](KafkaOptions::input_topic) and [`group`](KafkaOptions::group).
    pub fn with_input(
        mut self,
        topic: impl Into<String>,
        group: impl Into<String>,
    ) -> KafkaOptions {
        self.input_topic = Some(topic.into());
        self.group = group.into();
        self
    }

    /// Sets [`connection_topic`](KafkaOptions::connection_topic).
    pub fn with_connection_topic(mut self, topic: impl Into<String>) -> KafkaOptions {
        self.connection_topic = Some(topic.into());
        self
    }

    /// The connection topic's consumer group: [`connection_group`](KafkaOptions::connection_group)
    /// or `<group>-connections`.
    pub fn connection_group(&self) -> String {
        self.connection_group
            .clone()
            .unwrap_or_else(|| format!("{}-connections", self.group))
    }

    /// Sets [`node_id`](KafkaOptions::node_id).
    pub fn with_node_id(mut self, node: impl Into<String>) -> KafkaOptions {
        self.node_id = node.into();
        self
    }
}

/// The host name and 8 random hex digits.
fn default_node_id() -> String {
    let host = match crate::host_name() {
        "" => "node",
        name => name,
    };
    let random = std::collections::hash_map::RandomState::new();
    let suffix = std::hash::BuildHasher::hash_one(&random, std::process::id()) as u32;
    format!("{host}-{suffix:08x}")
}
