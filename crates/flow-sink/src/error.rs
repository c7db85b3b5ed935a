//! The crate's one error type.

use std::{io, path::PathBuf};

use flow_batch::BatchError;

/// Everything that can go wrong in `flow-sink`: configuration, files, HTTP, Kafka and
/// encoding.
///
/// A sink returns an error only when a chunk could be neither delivered nor kept
/// durably (see [`FlowSink::deliver`](crate::FlowSink::deliver)); failures it recovers
/// from (a retried request, a corrupt spool file set aside) are counted and logged
/// instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// A custom sink's own failure (for sinks outside this crate:
    /// `SinkError::other(e)`); it shows as the wrapped error does.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync + 'static>),

    /// A configuration value is out of range or malformed.
    #[error("invalid sink configuration: `{key}` = {value}: {reason}")]
    InvalidConfig {
        /// The configuration key.
        key: &'static str,
        /// The rejected value, printed.
        value: String,
        /// What the value must be instead.
        reason: &'static str,
    },

    /// A file or directory operation failed.
    #[error("failed to {operation} {}", .path.display())]
    Io {
        /// What was being done (`create`, `fsync`, `rename`, ...).
        operation: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// Writing to standard output failed.
    #[error("failed to write to standard output")]
    Stdout {
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// A chunk could not be encoded into a frame.
    #[error("chunk {sequence} could not be encoded")]
    Encode {
        /// The chunk's sequence number.
        sequence: u64,
        /// Why the encoder refused it.
        #[source]
        source: BatchError,
    },

    /// Bytes handed over as a frame are not a valid one.
    #[error("not a valid chunk frame")]
    InvalidFrame {
        /// What the decoder found wrong.
        #[source]
        source: BatchError,
    },

    /// An encoder or decoder could not be set up.
    #[error("failed to {operation}")]
    Codec {
        /// What was being set up.
        operation: &'static str,
        /// Why.
        #[source]
        source: BatchError,
    },

    /// The TLS material of a collector sink could not be loaded.
    #[error("invalid TLS {what} in {}", .path.display())]
    Tls {
        /// `client certificate and key` or `CA certificate`.
        what: &'static str,
        /// The PEM file.
        path: PathBuf,
        /// Why it was refused.
        #[source]
        source: reqwest::Error,
    },

    /// The HTTP client could not be built.
    #[error("failed to build the HTTP client for {url}")]
    HttpClient {
        /// The collector URL.
        url: String,
        /// Why.
        #[source]
        source: reqwest::Error,
    },

    /// A request to the collector failed without an HTTP answer (connection refused,
    /// reset, timed out) and was not retried further.
    #[error("request to {url} failed")]
    Transport {
        /// The collector URL.
        url: String,
        /// The client's error.
        #[source]
        source: reqwest::Error,
    },

    /// The collector answered with a retriable status and the retry budget ran out.
    #[error("collector {url} answered {status} after {attempts} attempts")]
    Unavailable {
        /// The collector URL.
        url: String,
        /// The last HTTP status.
        status: u16,
        /// Attempts made.
        attempts: u32,
    },

    /// The collector refused a chunk for good (a 4xx other than 408 and 429, or a
    /// redirect). Retrying the same bytes cannot succeed.
    #[error("collector {url} rejected batch {batch_id} with status {status}: {body}")]
    Rejected {
        /// The collector URL.
        url: String,
        /// The batch ID of the refused chunk.
        batch_id: String,
        /// The HTTP status.
        status: u16,
        /// The start of the response body.
        body: String,
    },

    /// A Kafka producer could not be set up, or producing a chunk failed and was not
    /// retried further (a sink without a spool whose attempts ran out).
    #[cfg(feature = "kafka")]
    #[error("Kafka {destination}: {what} failed")]
    Kafka {
        /// `kafka://BROKERS/TOPIC`.
        destination: String,
        /// What was being done.
        what: &'static str,
        /// The Kafka error (boxed: it is large, and rare).
        #[source]
        source: Box<flow_kafka::KafkaError>,
    },

    /// Kafka refused a chunk for good (a message larger than the brokers or the topic
    /// allow). Producing the same bytes again cannot succeed.
    #[cfg(feature = "kafka")]
    #[error("Kafka {destination} refused batch {batch_id} for good")]
    KafkaRejected {
        /// `kafka://BROKERS/TOPIC`.
        destination: String,
        /// The batch ID of the refused chunk.
        batch_id: String,
        /// The Kafka error (boxed: it is large, and rare).
        #[source]
        source: Box<flow_kafka::KafkaError>,
    },

    /// Delivering a chunk to an OTLP endpoint or an IPFIX collector failed and was
    /// not retried further (a sink without a spool whose attempts ran out).
    #[error("{destination}: {what} failed")]
    Delivery {
        /// Where the chunk was going (`otlp+http://...`, `ipfix+udp://...`).
        destination: String,
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A peer refused a chunk for good: sending the same chunk again cannot succeed.
    #[error("{destination} refused batch {batch_id} for good: {reason}")]
    DeliveryRejected {
        /// Where the chunk was going.
        destination: String,
        /// The batch ID of the refused chunk.
        batch_id: String,
        /// Why.
        reason: String,
    },

    /// The spool is full and configured to refuse new chunks.
    #[error(
        "spool {} is full: {spooled_bytes} bytes spooled, {frame_bytes} more would exceed the cap of {max_bytes}",
        .path.display()
    )]
    SpoolFull {
        /// The spool directory.
        path: PathBuf,
        /// Bytes spooled now.
        spooled_bytes: u64,
        /// Size of the refused frame.
        frame_bytes: u64,
        /// The cap.
        max_bytes: u64,
    },

    /// One sink of a fan-out failed.
    #[error("sink `{name}` failed")]
    Sink {
        /// The failing sink's [`name`](crate::FlowSink::name).
        name: String,
        /// Its error.
        #[source]
        source: Box<SinkError>,
    },

    /// The sink was shut down (or its sending task ended): it takes no more chunks.
    #[error("the sink for {url} is shut down")]
    Closed {
        /// The collector URL.
        url: String,
    },

    /// A background task of the sink panicked or was cancelled.
    #[error("background task `{task}` ended abnormally")]
    Task {
        /// Which task.
        task: &'static str,
        /// Its join error.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl SinkError {
    /// An [`SinkError::Io`] for `operation` on `path`.
    pub fn io(operation: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        SinkError::Io {
            operation,
            path: path.into(),
            source,
        }
    }
}

impl SinkError {
    /// Wraps a custom sink's error ([`SinkError::Other`]).
    pub fn other(
        error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> SinkError {
        SinkError::Other(error.into())
    }
}

impl SinkError {
    /// Whether trying the same chunk again cannot succeed: it cannot be encoded, it
    /// is not a valid frame, the configuration is wrong, or the collector (or Kafka)
    /// refused it for good, or it is larger than the whole spool. Everything else (I/O, a peer that is down, a full spool, a sink that
    /// is closed or whose task died, a custom sink's failure) says nothing against the
    /// chunk: the exporter's pipeline keeps it (journaled) and retries it with
    /// backoff. A fan-out's failure is as permanent as the failure of the sink it
    /// names.
    pub fn is_permanent(&self) -> bool {
        match self {
            SinkError::Encode { .. }
            | SinkError::InvalidFrame { .. }
            | SinkError::InvalidConfig { .. }
            | SinkError::Rejected { .. } => true,
            #[cfg(feature = "kafka")]
            SinkError::KafkaRejected { .. } => true,
            // A frame larger than the whole spool never fits, however long it waits.
            SinkError::SpoolFull {
                frame_bytes,
                max_bytes,
                ..
            } => frame_bytes > max_bytes,
            SinkError::Sink { source, .. } => source.is_permanent(),
            _ => false,
        }
    }
}
