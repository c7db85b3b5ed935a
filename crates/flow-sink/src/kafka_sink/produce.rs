//! One produce and what its outcome means: the Kafka side of the send task's
//! [`Transport`](crate::collector_sink::transport::Transport).
//!
//! | outcome | kind | the sink |
//! | --- | --- | --- |
//! | delivery report: success | | forgets the frame |
//! | brokers down, timed out, not leader, queue full | `unreachable`, `queue_full` | retries with backoff; a warning at most every `error_log_interval` |
//! | topic missing, access refused | `missing_topic`, `authorization` | retries with backoff (an operator can fix either, nothing is lost meanwhile); an error at most every `error_log_interval` |
//! | the idempotent producer's fatal error | `fatal` | rebuilds the producer, retries with backoff; an error at most every `error_log_interval` |
//! | anything else | `other` | retries with backoff; an error at most every `error_log_interval` |
//! | message too large | `message_too_large` | moves the frame to `rejected/`, counts it, logs an error |
//!
//! Every failed attempt is counted by its kind.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use flow_kafka::{
    BATCH_ID_HEADER, ErrorKind, KafkaError,
    rdkafka::{
        ClientConfig, ClientContext,
        config::RDKafkaLogLevel,
        error::KafkaError as ClientError,
        message::{Header, OwnedHeaders},
        producer::{FutureProducer, FutureRecord, Producer},
        types::RDKafkaErrorCode,
    },
};

use super::counters::KindCounters;
use crate::{
    collector_sink::{
        counters::bump,
        frame::Frame,
        shared::Shared,
        transport::{Attempt, Failure, Refusal},
    },
    error::SinkError,
};

/// The producer type: librdkafka's own log lines and global errors through
/// [`SinkContext`].
type Client = FutureProducer<SinkContext>;

/// Where librdkafka's own log lines and global errors go: `tracing`, at debug level.
/// librdkafka reports every failed connection of an outage (at its error level, once
/// per reconnect); the sink's own lines, rate-limited per kind of failure, are what
/// an operator reads, and `flow_sink=debug` shows librdkafka's too.
struct SinkContext {
    destination: String,
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                tracing::error!(kafka = %self.destination, facility, "librdkafka: {message}")
            }
            _ => {
                tracing::debug!(kafka = %self.destination, facility, ?level, "librdkafka: {message}")
            }
        }
    }

    fn error(&self, error: ClientError, reason: &str) {
        tracing::debug!(kafka = %self.destination, %error, "librdkafka: {reason}");
    }
}

/// The producer the send task produces with, and what it needs to classify and log
/// the outcomes.
pub(crate) struct KafkaProducer {
    /// The producer in use; replaced after a fatal error, taken at shut down.
    producer: Mutex<Option<Arc<Client>>>,
    /// What a replacement is made from.
    config: ClientConfig,
    topic: String,
    brokers: String,
    /// `kafka://BROKERS/TOPIC`.
    destination: String,
    /// How long a produce may wait for room in the client's queue.
    queue_timeout: Duration,
    /// Failed attempts by kind, and producers rebuilt.
    kinds: Arc<KindCounters>,
    /// Shortest time between two log lines of one kind of failure.
    log_interval: Duration,
    /// When each kind was last logged (by [`ErrorKind::index`]).
    logged: Mutex<[Option<Instant>; ErrorKind::ALL.len()]>,
}

impl KafkaProducer {
    /// A producer made from `config` (the settings' `producer_config`).
    pub(crate) fn new(
        config: ClientConfig,
        topic: String,
        brokers: String,
        destination: String,
        queue_timeout: Duration,
        kinds: Arc<KindCounters>,
        log_interval: Duration,
    ) -> Result<KafkaProducer, SinkError> {
        let producer = create(&config, &destination)?;
        Ok(KafkaProducer {
            producer: Mutex::new(Some(Arc::new(producer))),
            config,
            topic,
            brokers,
            destination,
            queue_timeout,
            kinds,
            log_interval,
            logged: Mutex::new([None; ErrorKind::ALL.len()]),
        })
    }

    fn current(&self) -> Option<Arc<Client>> {
        self.producer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Takes the producer out and drops it on the blocking pool (dropping a producer
    /// purges the messages it still queues, waits up to 500 ms for their reports and
    /// joins its threads). Called once the send task stopped: nothing is produced
    /// afterwards, and a message purged was not acknowledged, so its frame is still
    /// spooled.
    pub(crate) async fn close(&self) {
        let taken = self
            .producer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(producer) = taken {
            let _ = tokio::task::spawn_blocking(move || drop(producer)).await;
        }
    }

    /// One produce of `frame`: key = the batch ID's host, header
    /// [`BATCH_ID_HEADER`] = the batch ID, value = the frame's bytes. Classified and
    /// counted.
    pub(crate) async fn produce(self: Arc<Self>, shared: Arc<Shared>, frame: Frame) -> Attempt {
        let counters = &shared.counters;
        bump(&counters.requests, 1);
        let Some(producer) = self.current() else {
            return Attempt::Retry {
                failure: Failure::Kafka(KafkaError::Client {
                    what: "produce",
                    source: ClientError::Canceled,
                }),
                retry_after: None,
            };
        };
        let id = frame.batch_id.to_string();
        let headers = OwnedHeaders::new().insert(Header {
            key: BATCH_ID_HEADER,
            value: Some(id.as_str()),
        });
        let record = FutureRecord::to(&self.topic)
            .key(frame.batch_id.host.as_str())
            .payload(&frame.bytes[..])
            .headers(headers);
        let started = Instant::now();
        let produced = producer.send(record, self.queue_timeout).await;
        match produced {
            Ok(delivery) => {
                bump(&counters.requests_timed, 1);
                bump(
                    &counters.request_time_ns,
                    started.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64,
                );
                bump(&counters.chunks_sent, 1);
                bump(&counters.records_sent, u64::from(frame.records));
                bump(&counters.bytes_sent, frame.bytes.len() as u64);
                tracing::trace!(
                    batch_id = %id,
                    partition = delivery.partition,
                    offset = delivery.offset,
                    "chunk produced"
                );
                Attempt::Delivered
            }
            Err((error, _message)) => {
                drop(producer);
                self.failed(&shared, &frame, error).await
            }
        }
    }

    /// A failed produce of `frame`: counted by kind, logged (rate-limited), the
    /// producer rebuilt after a fatal error; rejected only when the message is too
    /// large.
    async fn failed(&self, shared: &Shared, frame: &Frame, error: ClientError) -> Attempt {
        bump(&shared.counters.transport_errors, 1);
        let mut kind = ErrorKind::of(&error);
        // The idempotent producer stops for good after a fatal error (its messages
        // fail with a code of their own, or with the cause): a new one takes over.
        let fatal = self.current().and_then(|p| p.client().fatal_error());
        if let Some((code, reason)) = &fatal {
            kind = ErrorKind::Fatal;
            self.rebuild(*code, reason).await;
        }
        self.kinds.count(kind);
        let error = self.typed(error);
        if kind == ErrorKind::MessageTooLarge {
            return Attempt::Reject(Refusal::Kafka(error));
        }
        self.log(kind, frame, &error);
        Attempt::Retry {
            failure: Failure::Kafka(error),
            retry_after: None,
        }
    }

    /// Replaces the producer after the fatal error `code` (the old one is dropped off
    /// the runtime: dropping joins its threads).
    async fn rebuild(&self, code: RDKafkaErrorCode, reason: &str) {
        match create(&self.config, &self.destination) {
            Ok(fresh) => {
                let old = self
                    .producer
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .replace(Arc::new(fresh));
                self.kinds.rebuilt();
                tracing::error!(
                    kafka = %self.destination,
                    %code,
                    reason,
                    "the Kafka producer hit a fatal error; a new producer takes over (the chunk is produced again under its batch ID)"
                );
                let _ = tokio::task::spawn_blocking(move || drop(old)).await;
            }
            Err(error) => tracing::error!(
                kafka = %self.destination,
                %code,
                reason,
                error = %crate::error_chain(&error),
                "the Kafka producer hit a fatal error and a new one could not be made; trying again later"
            ),
        }
    }

    /// The client's error as the typed error it means: a missing topic and a refused
    /// access say so, with the topic and the brokers.
    fn typed(&self, source: ClientError) -> KafkaError {
        let code = source.rdkafka_error_code();
        match ErrorKind::of(&source) {
            ErrorKind::MissingTopic => KafkaError::MissingTopic {
                topic: self.topic.clone(),
                brokers: self.brokers.clone(),
            },
            ErrorKind::Authorization => KafkaError::Authorization {
                topic: self.topic.clone(),
                brokers: self.brokers.clone(),
                code: code.unwrap_or(RDKafkaErrorCode::Authentication),
            },
            ErrorKind::Unreachable => KafkaError::Unreachable {
                brokers: self.brokers.clone(),
                source,
            },
            _ => KafkaError::Client {
                what: "produce",
                source,
            },
        }
    }

    /// Logs a failure of `kind`: at most once per `log_interval` for each kind (an
    /// outage or a missing topic fails every attempt), at debug level in between.
    fn log(&self, kind: ErrorKind, frame: &Frame, error: &KafkaError) {
        let due = {
            let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
            let last = &mut logged[kind.index()];
            let due = last.is_none_or(|at| at.elapsed() >= self.log_interval);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        let error = crate::error_chain(error);
        let kafka = &self.destination;
        let batch_id = &frame.batch_id;
        let name = kind.as_str();
        if !due {
            tracing::debug!(%kafka, %batch_id, kind = name, %error, "producing a chunk failed; retrying");
            return;
        }
        match kind {
            ErrorKind::Unreachable | ErrorKind::QueueFull => tracing::warn!(
                %kafka,
                %batch_id,
                kind = name,
                %error,
                "producing a chunk to Kafka failed; chunks stay spooled and are retried"
            ),
            _ => tracing::error!(
                %kafka,
                %batch_id,
                kind = name,
                %error,
                "producing a chunk to Kafka failed; chunks stay spooled and are retried until this is fixed"
            ),
        }
    }
}

/// A producer from `config`.
fn create(config: &ClientConfig, destination: &str) -> Result<Client, SinkError> {
    let context = SinkContext {
        destination: destination.to_owned(),
    };
    config
        .create_with_context(context)
        .map_err(|source| SinkError::Kafka {
            destination: destination.to_owned(),
            what: "creating the producer",
            source: Box::new(KafkaError::Client {
                what: "producer creation",
                source,
            }),
        })
}
