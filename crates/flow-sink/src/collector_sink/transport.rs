//! How a frame leaves: one attempt over a transport (an HTTP POST to a collector, or a
//! Kafka produce), and what its outcome means for the send task. The send task, the
//! spool, the memory queue and the retry loop are the same whatever the transport;
//! only the attempt and the wording of its failures differ.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use super::{counters::bump, frame::Frame, response, shared::Shared};
use crate::error::SinkError;

/// What carries frames: a collector's HTTP client, or a Kafka producer.
#[derive(Clone)]
pub(crate) enum Transport {
    /// POST to the collector URL ([`Shared::destination`]).
    Http(reqwest::Client),
    /// Produce to a Kafka topic.
    #[cfg(feature = "kafka")]
    Kafka(Arc<crate::kafka_sink::produce::KafkaProducer>),
    /// A carrier of a sink module of its own (OTLP, IPFIX).
    #[cfg_attr(not(any(feature = "otlp", feature = "ipfix")), allow(dead_code))]
    Carrier(Arc<dyn FrameCarrier>),
}

/// What carries frames for a sink module that is neither the collector's HTTP nor
/// Kafka: one attempt per frame, classified as [`Attempt`]. The send task, spool,
/// memory queue and retries stay the collector sink's.
pub(crate) trait FrameCarrier: Send + Sync {
    /// One attempt to deliver `frame`; owns what it uses.
    fn attempt(self: Arc<Self>, shared: Arc<Shared>, frame: Frame) -> AttemptFuture;
}

/// One attempt in flight; owns what it uses, so that the send task goes on with other
/// work while it runs.
pub(crate) type AttemptFuture = Pin<Box<dyn Future<Output = Attempt> + Send>>;

impl Transport {
    /// One attempt to deliver `frame`, classified and counted.
    pub(crate) fn attempt(&self, shared: Arc<Shared>, frame: Frame) -> AttemptFuture {
        match self {
            Transport::Http(client) => Box::pin(response::post(client.clone(), shared, frame)),
            #[cfg(feature = "kafka")]
            Transport::Kafka(producer) => Box::pin(Arc::clone(producer).produce(shared, frame)),
            Transport::Carrier(carrier) => Arc::clone(carrier).attempt(shared, frame),
        }
    }
}

/// The outcome of one attempt.
#[derive(Debug)]
pub(crate) enum Attempt {
    /// The peer has the frame (a 2xx; a produce the brokers acknowledged).
    Delivered,
    /// Try again later.
    Retry {
        /// Why this attempt failed: what a caller gets once its attempts run out.
        failure: Failure,
        /// The peer's `Retry-After`, if it gave one.
        retry_after: Option<Duration>,
    },
    /// Refused for good: these bytes will never be taken.
    Reject(Refusal),
}

/// Why an attempt failed, in a way worth retrying.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The collector answered with a retriable status (408, 429, 5xx).
    Status(u16),
    /// No HTTP answer (refused, reset, timed out, TLS).
    Transport(reqwest::Error),
    /// A Kafka produce failed (brokers down or timed out, topic missing, access
    /// refused, ...).
    #[cfg(feature = "kafka")]
    Kafka(flow_kafka::KafkaError),
    /// A carrier's attempt failed (a connection refused or reset, a send that
    /// failed, ...).
    #[cfg_attr(not(any(feature = "otlp", feature = "ipfix")), allow(dead_code))]
    Carrier {
        /// What was being done, for the error (`sending IPFIX messages`).
        what: &'static str,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Failure {
    /// The error a caller without a spool gets once `attempts` attempts failed.
    pub(crate) fn into_error(self, destination: &str, attempts: u32) -> SinkError {
        let url = destination.to_owned();
        match self {
            Failure::Status(status) => SinkError::Unavailable {
                url,
                status,
                attempts,
            },
            Failure::Transport(source) => SinkError::Transport { url, source },
            #[cfg(feature = "kafka")]
            Failure::Kafka(source) => SinkError::Kafka {
                destination: url,
                what: "producing a chunk",
                source: Box::new(source),
            },
            Failure::Carrier { what, source } => SinkError::Delivery {
                destination: url,
                what,
                source,
            },
        }
    }
}

/// Why a frame was refused for good.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The collector answered with a status that is neither success nor retriable.
    Status {
        /// The answer's status.
        status: u16,
        /// The start of its body.
        body: String,
    },
    /// Kafka refused the message for good (larger than the brokers allow).
    #[cfg(feature = "kafka")]
    Kafka(flow_kafka::KafkaError),
    /// A carrier refused it for good (a peer's answer that retrying cannot change).
    #[cfg_attr(not(any(feature = "otlp", feature = "ipfix")), allow(dead_code))]
    Carrier {
        /// Why, as logged and kept next to the frame in `rejected/`.
        reason: String,
    },
}

impl Refusal {
    /// The note kept next to the frame in `rejected/`.
    pub(crate) fn note(&self, destination: &str) -> String {
        match self {
            Refusal::Status { status, body } => {
                format!("HTTP {status} from {destination}\n{body}\n")
            }
            #[cfg(feature = "kafka")]
            Refusal::Kafka(error) => {
                format!("Kafka {destination}: {}\n", crate::error_chain(error))
            }
            Refusal::Carrier { reason } => format!("{destination}: {reason}\n"),
        }
    }

    /// Counts and logs `frame`, refused for good, once it is set aside (or its caller
    /// told).
    pub(crate) fn count(&self, shared: &Shared, frame: &Frame) {
        bump(&shared.counters.chunks_rejected, 1);
        bump(&shared.counters.records_rejected, u64::from(frame.records));
        match self {
            Refusal::Status { status, body } => tracing::error!(
                url = %shared.destination,
                batch_id = %frame.batch_id,
                records = frame.records,
                status,
                body,
                "collector rejected a chunk for good; not retrying it"
            ),
            #[cfg(feature = "kafka")]
            Refusal::Kafka(error) => tracing::error!(
                kafka = %shared.destination,
                batch_id = %frame.batch_id,
                records = frame.records,
                bytes = frame.bytes.len(),
                error = %crate::error_chain(error),
                "Kafka refused a chunk for good; not retrying it (kept in the spool's rejected/)"
            ),
            Refusal::Carrier { reason } => tracing::error!(
                destination = %shared.destination,
                batch_id = %frame.batch_id,
                records = frame.records,
                reason,
                "chunk refused for good; not retrying it (kept in the spool's rejected/)"
            ),
        }
    }

    /// The error a caller without a spool gets.
    pub(crate) fn into_error(self, destination: &str, frame: &Frame) -> SinkError {
        match self {
            Refusal::Status { status, body } => SinkError::Rejected {
                url: destination.to_owned(),
                batch_id: frame.batch_id.to_string(),
                status,
                body,
            },
            #[cfg(feature = "kafka")]
            Refusal::Kafka(source) => SinkError::KafkaRejected {
                destination: destination.to_owned(),
                batch_id: frame.batch_id.to_string(),
                source: Box::new(source),
            },
            Refusal::Carrier { reason } => SinkError::DeliveryRejected {
                destination: destination.to_owned(),
                batch_id: frame.batch_id.to_string(),
                reason,
            },
        }
    }
}
