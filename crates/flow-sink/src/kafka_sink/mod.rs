//! `KafkaSink`: chunks produced to a Kafka topic, through the same durable spool as
//! the [`CollectorSink`](crate::CollectorSink) (feature `kafka`).
//!
//! # The messages
//!
//! One message per chunk, on the topic of [`KafkaSinkConfig::topic`]:
//!
//! - **value**: the chunk's frame, byte for byte what a `CollectorSink` posts
//!   (`docs/wire-format.md`);
//! - **key**: the host ID of the chunk's batch ID (so one host's chunks land in one
//!   partition, in order);
//! - **header** [`BATCH_ID_HEADER`] (`flowexporter-batch-id`): the batch ID in its
//!   text form, `host/instance/sequence`, so that a consumer drops a duplicate
//!   without decoding the frame.
//!
//! The producer is librdkafka's idempotent producer (`enable.idempotence`,
//! `acks=all`: a message is acknowledged once every in-sync replica has it, and the
//! client's own retries neither duplicate nor reorder), made from
//! [`KafkaSettings::producer_config`] with the settings' request timeout as its
//! message timeout, so that every attempt ends: acknowledged, or failed with a kind.
//! It never asks the brokers to create the topic (`allow.auto.create.topics=false`).
//!
//! # Delivery: the spool and the journal are unchanged
//!
//! The sink is the collector sink's machinery with a Kafka producer in place of the
//! HTTP client: [`deliver`](crate::FlowSink::deliver) writes the frame to the spool
//! (`fsync`ed) and returns; one task produces spooled frames oldest first, one at a
//! time, and deletes each once the brokers acknowledged it. Everything the
//! [collector sink's docs](crate::collector_sink) say of the spool, the memory queue
//! for a full disk, the records dropped in a window's completeness, `take_settled`,
//! `flush` and `close` holds word for word: a crash at any point leaves every
//! accepted chunk on disk (or in the caller's journal), and a restarted exporter
//! produces what the spool holds, same bytes, same batch IDs, before anything newer.
//!
//! The guarantee is **at least once**: a frame is deleted only after its
//! acknowledgement, so an acknowledgement lost to a crash, a shut down with a produce
//! in flight or an attempt that timed out after the brokers stored the message
//! produces it again, under the same batch ID. Consumers drop duplicates by the
//! header (the collector does).
//!
//! # What each failure does
//!
//! | outcome of a produce | kind ([`ErrorKind`]) | the sink |
//! | --- | --- | --- |
//! | acknowledged | | forgets the frame |
//! | brokers down or unreachable, timed out, not leader, client queue full | `unreachable`, `queue_full` | retries with backoff ([`RetryPolicy`], for as long as it takes); a warning at most every [`error_log_interval`](KafkaSinkConfig::error_log_interval) |
//! | topic missing, authentication or access refused | `missing_topic`, `authorization` | retries with backoff: an operator can create the topic or grant the access, and nothing is lost meanwhile; an error at most every `error_log_interval` |
//! | the idempotent producer's fatal error | `fatal` | a new producer takes over; retried |
//! | anything else | `other` | retries with backoff; an error at most every `error_log_interval` |
//! | message too large | `message_too_large` | refused for good: moved to `rejected/` with the error, logged at error level, counted |
//!
//! Every failed attempt is counted by its kind
//! ([`KafkaCounters::produce_errors`]). A missing topic or a refused access is
//! retried rather than set aside because setting aside would lose every chunk of
//! the outage for a condition that an operator fixes without touching the exporter;
//! the spool's cap bounds what waits meanwhile, as for any outage.
//!
//! # At start
//!
//! [`start`](KafkaSink::start) refuses what is wrong locally (a malformed setting,
//! a topic name Kafka would refuse, TLS files librdkafka cannot load). It never fails
//! because of the cluster: it asks the cluster for the topic in the background
//! ([`flow_kafka::check_topic`], at most
//! [`topic_check_timeout`](KafkaSinkConfig::topic_check_timeout)), logs the outcome
//! (an unreachable broker, a missing topic or a refused access at error level, with
//! what to do) and keeps it for [`topic_check`](KafkaSink::topic_check), while chunks
//! are spooled and produced as soon as the cluster takes them. An exporter that
//! refused to start would lose every flow of its host until it is started again; one
//! that spools loses nothing. A caller that prefers to stop can call
//! [`flow_kafka::check_topic`] itself before starting the sink.

mod config;
mod counters;
pub(crate) mod produce;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use flow_batch::{Chunk, wire::BatchId};
pub use flow_kafka::{
    BATCH_ID_HEADER, ErrorKind, KafkaError, KafkaSettings, KafkaTls, Sasl, SaslMechanism,
    TopicInfo, check_topic,
};

pub use self::{
    config::{DEFAULT_MAX_MESSAGE_BYTES, KafkaSinkConfig, check_topic_name},
    counters::KafkaCounters,
};
use self::{counters::KindCounters, produce::KafkaProducer};
use crate::{
    collector_sink::{
        core::{CoreConfig, SinkCore},
        transport::Transport,
    },
    error::SinkError,
    retry::RetryPolicy,
    sink::{Accepted, FlowSink},
};

/// What the topic check at start found ([`KafkaSink::topic_check`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicCheck {
    /// Not answered yet.
    Pending,
    /// The topic exists.
    Found {
        /// Its partitions.
        partitions: u32,
    },
    /// The check failed (the sink runs on, spooling: see the
    /// [module docs](self#at-start)).
    Failed {
        /// How: `unreachable`, `missing_topic`, `authorization`, ...
        kind: ErrorKind,
        /// The error and its causes, as logged.
        message: String,
    },
}

/// Produces chunks to a Kafka topic; see the [module docs](self).
pub struct KafkaSink {
    core: SinkCore,
    producer: Arc<KafkaProducer>,
    kinds: Arc<KindCounters>,
    topic: String,
    check: Arc<Mutex<TopicCheck>>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("destination", &self.core.destination())
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    /// Validates `config`, creates the producer (loading its TLS material), opens the
    /// spool (picking up what a previous run left), starts the task that produces and
    /// the topic check. Fails only for what is wrong locally, never because of the
    /// cluster (see the [module docs](self#at-start)). Must be called inside a tokio
    /// runtime.
    pub fn start(config: KafkaSinkConfig) -> Result<KafkaSink, SinkError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(SinkError::InvalidConfig {
                key: "runtime",
                value: "none".into(),
                reason: "KafkaSink::start must be called inside a tokio runtime",
            });
        }
        check_topic_name(&config.topic)?;
        config.retry.validate()?;
        if config.max_message_bytes < 1000 {
            return Err(SinkError::InvalidConfig {
                key: "kafka max_message_bytes",
                value: config.max_message_bytes.to_string(),
                reason: "must be at least 1000",
            });
        }
        let kafka = &config.kafka;
        let destination = format!("kafka://{}/{}", kafka.brokers, config.topic);
        let request_timeout = kafka.request_timeout;
        let kinds = Arc::new(KindCounters::default());
        let producer = Arc::new(KafkaProducer::new(
            producer_settings(&config).producer_config(Some(request_timeout)),
            config.topic.clone(),
            kafka.brokers.clone(),
            destination.clone(),
            request_timeout,
            Arc::clone(&kinds),
            config.error_log_interval,
        )?);
        let check = Arc::new(Mutex::new(TopicCheck::Pending));
        let core = SinkCore::start(
            CoreConfig {
                destination,
                host: config.host.clone(),
                instance: config.instance,
                transport: Transport::Kafka(Arc::clone(&producer)),
                retry: config.retry.clone(),
                spool_dir: config.spool_dir.clone(),
                spool: config.spool.clone(),
                memory_max_bytes: config.memory_max_bytes,
                memory_max_chunks: config.memory_max_chunks,
                flush_timeout: config.flush_timeout,
            },
            "KafkaSink::start must be called inside a tokio runtime",
        )?;
        tokio::spawn(check_at_start(
            producer_settings(&config),
            config.topic.clone(),
            config.topic_check_timeout,
            Arc::clone(&check),
        ));
        Ok(KafkaSink {
            core,
            producer,
            kinds,
            topic: config.topic,
            check,
        })
    }

    /// `kafka://BROKERS/TOPIC`, as logs and errors name the sink.
    pub fn destination(&self) -> &str {
        self.core.destination()
    }

    /// The topic chunks are produced to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// What the topic check at start found so far.
    pub fn topic_check(&self) -> TopicCheck {
        self.check.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The retry policy in force.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.core.retry_policy()
    }

    /// Replaces the retry policy of the running sink (checked first: on error the
    /// sink keeps the one it had). A sender waiting to retry tries again at once.
    pub fn set_retry_policy(&self, retry: RetryPolicy) -> Result<(), SinkError> {
        self.core
            .replace(Transport::Kafka(Arc::clone(&self.producer)), retry)
    }

    /// A snapshot of the counters (and of the spool's).
    pub fn counters(&self) -> KafkaCounters {
        KafkaCounters::from_parts(self.core.counters(), &self.kinds)
    }

    /// Produces an already encoded frame as it is, keeping its batch ID. Same contract
    /// as [`deliver`](crate::FlowSink::deliver); says where the frame went.
    pub async fn accept_frame(&self, frame: Vec<u8>) -> Result<Accepted, SinkError> {
        self.core.accept_frame(frame).await
    }

    /// [`deliver`](crate::FlowSink::deliver), saying where the chunk went:
    /// [`Accepted::InMemory`] when the spool could not take it.
    pub async fn accept_chunk(&self, chunk: &Chunk) -> Result<Accepted, SinkError> {
        self.core.encode_and_hand_over(chunk, None).await
    }

    /// The batch IDs of the frames kept in memory ([`Accepted::InMemory`]) that were
    /// settled since the last call (see [`CollectorSink::take_settled`](crate::CollectorSink::take_settled)).
    pub fn take_settled(&self) -> Vec<BatchId> {
        self.core.take_settled()
    }

    /// Stops the producing task at once, a produce in flight included (its frame
    /// stays spooled; if the brokers stored it anyway, the next run produces a
    /// duplicate under the same batch ID), writes the frames kept in memory to the
    /// spool if it takes them, and closes the producer (what it still queued is
    /// purged, not sent). Call [`flush`](crate::FlowSink::flush) first to give the
    /// brokers a chance. [`FlowSink::close`] is this.
    pub async fn shut_down(&self) -> Result<(), SinkError> {
        let stopped = self.core.shut_down("kafka sink producer").await;
        self.producer.close().await;
        stopped
    }
}

#[async_trait]
impl FlowSink for KafkaSink {
    fn name(&self) -> &str {
        "kafka"
    }

    async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
        self.accept_chunk(chunk).await.map(|_| ())
    }

    /// Encodes `chunk` under `id`, so that the message's batch ID is the one the
    /// caller's journal knows.
    async fn accept(&self, chunk: &Chunk, id: &BatchId) -> Result<Accepted, SinkError> {
        self.core.encode_and_hand_over(chunk, Some(id)).await
    }

    fn take_settled(&self) -> Vec<BatchId> {
        KafkaSink::take_settled(self)
    }

    async fn flush(&self) -> Result<(), SinkError> {
        self.core.flush().await
    }

    async fn close(&self) -> Result<(), SinkError> {
        self.shut_down().await
    }
}

/// The cluster settings with what the sink's producer needs under the caller's own
/// properties (which still win): no topic created by asking for it, messages as
/// large as a frame, and a missing topic reported as such (not as a timed out
/// message) within the attempt.
fn producer_settings(config: &KafkaSinkConfig) -> KafkaSettings {
    let mut settings = config.kafka.clone();
    let propagation_ms = (settings.request_timeout / 2)
        .as_millis()
        .clamp(1, 30_000)
        .to_string();
    let ours = [
        ("allow.auto.create.topics", "false".to_owned()),
        ("message.max.bytes", config.max_message_bytes.to_string()),
        ("topic.metadata.propagation.max.ms", propagation_ms),
    ];
    let mut extra: Vec<(String, String)> =
        ours.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    extra.append(&mut settings.extra);
    settings.extra = extra;
    settings
}

/// The topic check at start: asks the cluster (on the blocking pool), logs what it
/// found and keeps it in `check`.
async fn check_at_start(
    settings: KafkaSettings,
    topic: String,
    timeout: std::time::Duration,
    check: Arc<Mutex<TopicCheck>>,
) {
    let brokers = settings.brokers.clone();
    let asked = topic.clone();
    let found = tokio::task::spawn_blocking(move || check_topic(&settings, &asked, timeout)).await;
    let outcome = match found {
        Ok(Ok(info)) => {
            tracing::info!(
                %brokers,
                topic,
                partitions = info.partitions,
                "Kafka topic found; producing chunks to it"
            );
            TopicCheck::Found {
                partitions: info.partitions,
            }
        }
        Ok(Err(error)) => {
            let message = crate::error_chain(&error);
            tracing::error!(
                %brokers,
                topic,
                kind = error.kind().as_str(),
                error = %message,
                "Kafka topic check at start failed; chunks are spooled and produced once the cluster takes them"
            );
            TopicCheck::Failed {
                kind: error.kind(),
                message,
            }
        }
        // The runtime is shutting down.
        Err(_) => return,
    };
    *check.lock().unwrap_or_else(|p| p.into_inner()) = outcome;
}
