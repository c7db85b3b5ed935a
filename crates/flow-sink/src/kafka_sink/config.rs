//! The sink's settings: [`KafkaSinkConfig`], and the check of a topic name.

use std::{path::PathBuf, time::Duration};

use flow_batch::wire::InstanceId;
use flow_kafka::KafkaSettings;

use crate::{
    collector_sink::{DEFAULT_MEMORY_MAX_BYTES, DEFAULT_MEMORY_MAX_CHUNKS},
    error::SinkError,
    retry::RetryPolicy,
    spool::SpoolConfig,
};

/// Default of [`KafkaSinkConfig::max_message_bytes`]: 8 MiB, above the largest frame
/// the exporter's batcher makes (4 MiB of records before compression).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 8 << 20;

/// Settings of a [`KafkaSink`](super::KafkaSink).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct KafkaSinkConfig {
    /// The cluster: brokers, TLS, SASL, compression, request timeout (a produce
    /// attempt ends after [`KafkaSettings::request_timeout`], acknowledged or not).
    pub kafka: KafkaSettings,
    /// The topic chunks are produced to (it must exist: the sink never creates it).
    pub topic: String,
    /// The host identity written into every frame (and the messages' key).
    pub host: String,
    /// This exporter run (a new one per start: see [`InstanceId::random`]).
    pub instance: InstanceId,
    /// Backoff between attempts.
    pub retry: RetryPolicy,
    /// The spool directory; `None` produces without one (the caller waits, see
    /// [`CollectorSink`](crate::CollectorSink)'s docs on sending without a spool).
    pub spool_dir: Option<PathBuf>,
    /// The spool's limits.
    pub spool: SpoolConfig,
    /// Longest [`flush`](crate::FlowSink::flush) waits for the spool to drain.
    /// Default 30 s.
    pub flush_timeout: Duration,
    /// Most frame bytes kept in memory when the spool cannot take them. Default 64 MiB.
    pub memory_max_bytes: u64,
    /// Most frames kept in memory when the spool cannot take them. Default 1,024.
    pub memory_max_chunks: usize,
    /// Shortest time between two log lines about one kind of failed produce (an
    /// outage, a missing topic or a refused access fails every attempt). Default 60 s.
    pub error_log_interval: Duration,
    /// Longest the topic check at start waits for the cluster. Default 10 s.
    pub topic_check_timeout: Duration,
    /// The producer's largest message (`message.max.bytes`). The topic's
    /// `max.message.bytes` (and the brokers' `message.max.bytes`) must allow as much,
    /// or a large chunk is refused for good. Default [`DEFAULT_MAX_MESSAGE_BYTES`].
    pub max_message_bytes: usize,
}

impl KafkaSinkConfig {
    /// Defaults for producing to `topic` on the cluster of `kafka`, as `host`, run
    /// `instance`, without a spool.
    pub fn new(
        kafka: KafkaSettings,
        topic: impl Into<String>,
        host: impl Into<String>,
        instance: InstanceId,
    ) -> KafkaSinkConfig {
        KafkaSinkConfig {
            kafka,
            topic: topic.into(),
            host: host.into(),
            instance,
            retry: RetryPolicy::default(),
            spool_dir: None,
            spool: SpoolConfig::default(),
            flush_timeout: Duration::from_secs(30),
            memory_max_bytes: DEFAULT_MEMORY_MAX_BYTES,
            memory_max_chunks: DEFAULT_MEMORY_MAX_CHUNKS,
            error_log_interval: Duration::from_secs(60),
            topic_check_timeout: Duration::from_secs(10),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }

    /// Sets [`spool_dir`](KafkaSinkConfig::spool_dir).
    pub fn with_spool_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spool_dir = Some(dir.into());
        self
    }

    /// Sets [`spool`](KafkaSinkConfig::spool).
    pub fn with_spool(mut self, spool: SpoolConfig) -> Self {
        self.spool = spool;
        self
    }

    /// Sets [`retry`](KafkaSinkConfig::retry).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets [`flush_timeout`](KafkaSinkConfig::flush_timeout).
    pub fn with_flush_timeout(mut self, d: Duration) -> Self {
        self.flush_timeout = d;
        self
    }

    /// Sets [`memory_max_bytes`](KafkaSinkConfig::memory_max_bytes) and
    /// [`memory_max_chunks`](KafkaSinkConfig::memory_max_chunks).
    pub fn with_memory_queue(mut self, max_bytes: u64, max_chunks: usize) -> Self {
        self.memory_max_bytes = max_bytes;
        self.memory_max_chunks = max_chunks;
        self
    }

    /// Sets [`error_log_interval`](KafkaSinkConfig::error_log_interval).
    pub fn with_error_log_interval(mut self, d: Duration) -> Self {
        self.error_log_interval = d;
        self
    }

    /// Sets [`topic_check_timeout`](KafkaSinkConfig::topic_check_timeout).
    pub fn with_topic_check_timeout(mut self, d: Duration) -> Self {
        self.topic_check_timeout = d;
        self
    }

    /// Sets [`max_message_bytes`](KafkaSinkConfig::max_message_bytes).
    pub fn with_max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }
}

/// Checks a Kafka topic name as [`KafkaSink::start`](super::KafkaSink::start) does:
/// 1 to 249 characters of ASCII letters, digits, `.`, `_` and `-`, and neither `.`
/// nor `..` (Kafka's own rule). A configuration check can call it to refuse exactly
/// what `start` would refuse.
pub fn check_topic_name(topic: &str) -> Result<(), SinkError> {
    let invalid = |reason| SinkError::InvalidConfig {
        key: "kafka topic",
        value: format!("{topic:?}"),
        reason,
    };
    if topic.is_empty() {
        return Err(invalid("is empty"));
    }
    if topic.len() > 249 {
        return Err(invalid("is longer than 249 characters"));
    }
    if topic == "." || topic == ".." {
        return Err(invalid("may not be \".\" or \"..\""));
    }
    if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(invalid(
            "may hold only ASCII letters, digits, '.', '_' and '-'",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafkas_rule() {
        for good in ["flows", "flow-chunks.v1", "a_b", &"t".repeat(249)] {
            assert!(check_topic_name(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            (".", "may not be"),
            ("..", "may not be"),
            ("flows/x", "only ASCII"),
            ("fl ows", "only ASCII"),
            ("flöws", "only ASCII"),
            (&"t".repeat(250), "249"),
        ] {
            let error = check_topic_name(bad).expect_err(bad).to_string();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }
}
