//! flowexporter: an embeddable eBPF TCP flow exporter.
//!
//! One record per closed TCP socket on the host: local and remote address and port,
//! start and end time, direction, why it closed, and socket statistics. This crate
//! re-exports the parts so that an embedding agent can depend on one crate:
//!
//! - [`capture`] (`flow-capture`): loads the kernel program and reads typed records.
//! - [`identity`] (`flow-identity`): the identity certificate, the identity-map writer
//!   API, and the resolver that completes records' identity.
//! - [`batch`] (`flow-batch`): minute windows, chunks and the collector wire format.
//! - [`sink`] (`flow-sink`): where records go.
//!
//! The bundled binary is the `flowexporter-bin` package (`flowexporter tail`).

pub mod journal;

pub use journal::{JournalConfig, JournalCounters, RecordJournal, Recovered, RecoveredChunk};

pub use flow_batch as batch;
pub use flow_capture as capture;
pub use flow_identity as identity;
pub use flow_sink as sink;

/// The README's Rust examples, compiled as doctests so that the library user's quick
/// start stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
