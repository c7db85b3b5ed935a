//! The collector's one error type, and how an error is written in an answer.

use std::{net::SocketAddr, path::PathBuf};

/// Why a [`FlowCollector`](crate::FlowCollector) could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollectorError {
    /// The output file could not be opened for appending.
    #[error("failed to open {} for appending", .path.display())]
    Output {
        /// The output file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The TLS material could not be loaded or used.
    #[error("failed to {operation} {}", .path.display())]
    Tls {
        /// What was being done (`load TLS certificates from`, ...).
        operation: &'static str,
        /// The PEM file concerned.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    /// The chunk decoder could not be set up (decode limits out of range).
    #[error("failed to set up a chunk decoder")]
    Decoder {
        /// Why.
        #[source]
        source: flow_batch::BatchError,
    },

    /// The ledger (the state directory) could not be opened or recovered.
    #[error("failed to open or recover the ledger")]
    Ledger {
        /// Why.
        #[source]
        source: crate::ledger::LedgerError,
    },

    /// The output could not be opened, or could not say what it holds.
    #[error("failed to open the output")]
    OutputSink {
        /// Why.
        #[source]
        source: crate::output::OutputError,
    },

    /// Kafka (`--kafka-brokers`) could not be used: an unreachable broker, a missing
    /// topic, a refused authorization, the heartbeat topic not read back in time.
    #[cfg(feature = "kafka")]
    #[error("Kafka ({what})")]
    Kafka {
        /// Which part (`output topic`, `heartbeat topic`, `input topic`).
        what: &'static str,
        /// Why.
        #[source]
        source: flow_kafka::KafkaError,
    },

    /// Starting failed for another reason (a task that could not run).
    #[error("failed to start: {0}")]
    Startup(String),

    /// The listening socket could not be bound.
    #[error("failed to listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

/// `error` and its sources, joined with `: ` (for answers, log lines and the
/// binary's error messages).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
