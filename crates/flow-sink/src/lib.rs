//! Where flowexporter's records go.
//!
//! - [`FlowSink`]: the one async interface every destination of chunks implements,
//!   with blanket impls so that `Option<S>` (optional), `Vec<S>` (fan-out), `Box<S>`
//!   and `Arc<S>` are sinks too.
//! - [`StdoutSink`] and [`FileSink`]: JSON lines with the field set of
//!   `flowexporter tail --json` ([`json`], re-exported from `flow_record::json`);
//!   [`TerminalSink`]: a table (or JSON lines) for a person at a terminal.
//! - [`CollectorSink`]: HTTP POST of encoded chunk frames to a collector, with
//!   timeouts, retries ([`RetryPolicy`]: exponential backoff, full jitter), a durable
//!   on-disk [`Spool`] and optional mutual TLS. `docs/collector-protocol.md` describes
//!   the HTTP exchange; its constants ([`CHUNKS_PATH`], [`CHUNK_CONTENT_TYPE`],
//!   [`RESULT_HEADER`]) are re-exported from `flow_batch::wire`.
//! - `KafkaSink` (cargo feature `kafka`): the same frames, spool and retries, produced
//!   to a Kafka topic instead (`kafka_sink`).
//! - `IpfixSink` (cargo feature `ipfix`): the records of the same spooled frames
//!   exported as IPFIX (RFC 7011) to a flow collector over UDP or TCP (`ipfix_sink`,
//!   `docs/ipfix.md`).
//! - `OtlpSink` (cargo feature `otlp`): every record an OpenTelemetry log record,
//!   sent as OTLP/HTTP protobuf to a `/v1/logs` endpoint, through the same spool and
//!   retries (`otlp_sink`).
//!
//! The library emits `tracing` events and installs nothing process-wide.
//!
//! A sink of your own is one method; the trait's other methods have defaults that
//! keep the exporter's crash guarantees for a sink that delivers or fails:
//!
//! ```
//! use async_trait::async_trait;
//! use flow_batch::Chunk;
//! use flow_sink::{FlowSink, SinkError};
//!
//! /// Prints how many bytes each chunk's connections moved.
//! struct Bytes;
//!
//! #[async_trait]
//! impl FlowSink for Bytes {
//!     fn name(&self) -> &str {
//!         "bytes"
//!     }
//!
//!     async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
//!         let bytes: u64 = chunk
//!             .records
//!             .iter()
//!             .map(|r| r.stats.bytes_sent + r.stats.bytes_received)
//!             .sum();
//!         println!("window {:?}: {bytes} bytes", chunk.window);
//!         Ok(())
//!     }
//! }
//!
//! // Fan-out to ours and to the JSON lines on stdout: a Vec of sinks is a sink.
//! let sinks: Vec<Box<dyn FlowSink>> = vec![Box::new(Bytes), Box::new(flow_sink::StdoutSink::new())];
//! # let _ = sinks;
//! ```

pub mod collector_sink;
mod error;
#[cfg(feature = "ipfix")]
pub mod ipfix_sink;
mod json_sink;
#[cfg(feature = "kafka")]
pub mod kafka_sink;
#[cfg(feature = "otlp")]
pub mod otlp_sink;
pub mod retry;
mod sink;
pub mod spool;
pub mod state_dir;
mod terminal_sink;
mod window_losses;

pub use collector_sink::{
    CHUNK_CONTENT_TYPE, CHUNKS_PATH, ClientTls, CollectorConfig, CollectorCounters, CollectorSink,
    RESULT_HEADER,
};
pub use error::SinkError;
/// The JSON-line form of a record (the `flowexporter tail --json` fields), from
/// `flow-record`.
pub use flow_record::json;
#[cfg(feature = "ipfix")]
pub use ipfix_sink::{
    IpfixCollector, IpfixCounters, IpfixProtocol, IpfixSink, IpfixSinkConfig, IpfixUrlError,
};
pub use json_sink::{FileSink, JsonSinkCounters, StdoutSink, encode_chunk};
#[cfg(feature = "kafka")]
pub use kafka_sink::{KafkaCounters, KafkaSink, KafkaSinkConfig, TopicCheck};
#[cfg(feature = "otlp")]
pub use otlp_sink::{OtlpCounters, OtlpSink, OtlpSinkConfig};
pub use retry::{Disposition, RetryPolicy};
pub use sink::{Accepted, FlowSink};
pub use spool::{Spool, SpoolConfig, SpoolCounters, WhenFull};
pub use terminal_sink::{TABLE_HEADER, TerminalFormat, TerminalSink, write_record};

/// `error` and its sources, joined with `: ` (for log lines).
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
