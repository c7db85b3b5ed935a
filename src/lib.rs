//! flowexporter: an embeddable eBPF TCP flow exporter.
//!
//! One record per closed TCP socket on the host: local and remote address and port,
//! start and end time, direction, why it closed, socket statistics, and the local
//! workload identity resolved at capture time. This crate is the exporter as a
//! library: [`Exporter`] owns the whole pipeline
//!
//! ```text
//! RecordSource -> IdentityResolver -> RecordJournal -> MinuteBatcher -> FlowSink
//! (capture)       (flow-identity)     (crash safety)   (flow-batch)     (flow-sink, or yours)
//! ```
//!
//! with crash recovery (chunks in flight at a crash are replayed under their batch
//! IDs, records in no chunk are batched again) and a graceful drain on shutdown, for
//! **any** sink that implements [`FlowSink`](flow_sink::FlowSink). The bundled binary
//! (`flowexporter-bin`) only wires configuration into it.
//!
//! An agent that wants "flowexporter, with my sink":
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use async_trait::async_trait;
//! use flowexporter::{
//!     CaptureSource, Exporter, JournalConfig,
//!     batch::Chunk,
//!     capture::FlowCaptureBuilder,
//!     identity::NoIdentity,
//!     sink::{FlowSink, SinkError},
//! };
//!
//! struct Print;
//!
//! #[async_trait]
//! impl FlowSink for Print {
//!     fn name(&self) -> &str {
//!         "print"
//!     }
//!
//!     async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
//!         println!("{} records in window {:?}", chunk.records.len(), chunk.window);
//!         Ok(())
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let source = CaptureSource::new(FlowCaptureBuilder::new().load()?)?;
//! let exporter = Exporter::builder()
//!     .window(Duration::from_secs(60))
//!     .journal("/var/lib/my-agent/journal", JournalConfig::default())
//!     .build(source, NoIdentity, Print)?;
//! exporter
//!     .run_until(async { tokio::signal::ctrl_c().await.unwrap_or(()) })
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! The parts, re-exported so that an embedding agent depends on one crate:
//!
//! - [`capture`] (`flow-capture`): loads the kernel program and reads typed records.
//! - [`record`] (`flow-record`): the record type, without the loader.
//! - [`identity`] (`flow-identity`): identity resolvers and the identity-map writer.
//! - [`batch`] (`flow-batch`): minute windows, chunks and the collector wire format.
//! - [`sink`] (`flow-sink`): the `FlowSink` trait and the bundled sinks.

mod counters;
mod error;
mod exporter;
pub mod journal;
pub mod pipeline;
mod ratelimit;
pub mod source;

pub use counters::PipelineCounters;
pub use error::ExporterError;
pub use exporter::{
    DEFAULT_SHUTDOWN_TIMEOUT, Exporter, ExporterBuilder, ExporterHandle, Report, View, host_name,
};
pub use journal::{
    JournalConfig, JournalCounters, JournalError, RecordJournal, Recovered, RecoveredChunk,
};
pub use pipeline::{backlog::BacklogLimits, core::Shipping};
pub use source::{CaptureSource, ChannelSource, RecordSource};

pub use flow_batch as batch;
pub use flow_capture as capture;
pub use flow_identity as identity;
pub use flow_record as record;
pub use flow_sink as sink;

/// The README's Rust examples, compiled as doctests so that the library user's quick
/// start stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
