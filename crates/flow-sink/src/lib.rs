//! Where flowexporter's records go.
//!
//! - [`FlowSink`]: the one async interface every destination of chunks implements,
//!   with blanket impls so that `Option<S>` (optional), `Vec<S>` (fan-out), `Box<S>`
//!   and `Arc<S>` are sinks too.
//! - [`StdoutSink`] and [`FileSink`]: JSON lines with the field set of
//!   `flowexporter tail --json` ([`json`]).
//! - [`CollectorSink`]: HTTP POST of encoded chunk frames to a collector, with
//!   timeouts, retries ([`RetryPolicy`]: exponential backoff, full jitter), a durable
//!   on-disk [`Spool`] and optional mutual TLS. `docs/collector-protocol.md` describes
//!   the HTTP exchange.
//! - [`http_server`]: the HTTP/1.1 server loop (connection caps and timeouts) of the
//!   reference collector (the `flow-collector` crate) and of the exporter's metrics
//!   endpoint.
//!
//! The library emits `tracing` events and installs nothing process-wide.

pub mod collector_sink;
mod error;
pub mod http_server;
pub mod json;
mod json_sink;
pub mod retry;
mod sink;
pub mod spool;
pub mod state_dir;

pub use collector_sink::{
    CHUNK_CONTENT_TYPE, CHUNKS_PATH, ClientTls, CollectorConfig, CollectorCounters, CollectorSink,
    RESULT_HEADER,
};
pub use error::SinkError;
pub use json_sink::{FileSink, JsonSinkCounters, StdoutSink, encode_chunk};
pub use retry::{Disposition, RetryPolicy};
pub use sink::{Accepted, FlowSink};
pub use spool::{Spool, SpoolConfig, SpoolCounters, WhenFull};

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
