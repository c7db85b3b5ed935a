//! Where attributed flows go: a sink behind a trait ([`FlowOutput`]), and the
//! bundled one, JSON lines in a file rotated by size or time ([`JsonLinesOutput`]).

mod acknowledgements;
mod json;
mod json_lines;
mod position;
mod rotation;
#[cfg(test)]
mod tests;

pub use acknowledgements::Acknowledgements;
pub use json::{write_completeness_line, write_json_line};
pub use json_lines::{JsonLinesOutput, OutputStats};
pub use rotation::Rotation;

use crate::{attribution::AttributedFlow, completeness::WindowReport};

/// A flow's unique ID: its chunk's batch ID (text form) and its index in the chunk.
/// A completeness record has one too: the batch ID of the first chunk of its window
/// the collector received, and that chunk's record count.
pub type FlowKey = (String, u32);

/// Where an output stood at a commit, as the output itself understands it (for the
/// JSON-lines file: the file and its length). Kept in the collector's checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct OutputPosition(pub Vec<u8>);

/// Why an output could not take flows.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    /// The destination has not acknowledged everything written (a Kafka cluster that
    /// is down or refuses the messages); nothing is lost: the writes are kept and
    /// retried, and the commit is tried again.
    #[error("{destination}: {outstanding} writes not acknowledged within {}{}", humantime::format_duration(*.waited), .last_error.as_deref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    NotAcknowledged {
        /// Where the writes go (`kafka topic flows on 10.0.0.1:9092`).
        destination: String,
        /// Writes still outstanding.
        outstanding: u64,
        /// How long the commit waited.
        waited: std::time::Duration,
        /// The destination's last error, if any.
        last_error: Option<String>,
    },
    /// Writing, syncing or rotating failed.
    #[error("{operation} {}", .path.display())]
    Io {
        /// What was being done (`write`, `sync`, `rotate`, `open`).
        operation: &'static str,
        /// The file concerned.
        path: std::path::PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

/// Where attributed flows go. Called from one thread; calls may block.
///
/// The collector writes flows (and completeness records), then commits; after a
/// commit succeeded it records the returned position with what has been emitted.
/// After a crash it asks which flows were written after the last recorded position,
/// so that none is written twice.
pub trait FlowOutput: Send + 'static {
    /// Writes `flows` (may buffer).
    fn write(&mut self, flows: &[AttributedFlow]) -> Result<(), OutputError>;
    /// Writes the completeness records of exporter windows (one per window, see
    /// [`WindowReport`] and `docs/collector-output.md`); may buffer, and is
    /// committed with the flows. A failure is retried like a failed
    /// [`write`](FlowOutput::write).
    ///
    /// The default drops them: an output that keeps only flows needs nothing more
    /// (the windows are still counted in the collector's metrics). An output that
    /// keeps them should also report their keys ([`WindowReport::batch`],
    /// [`WindowReport::record_index`]) from
    /// [`written_since`](FlowOutput::written_since), or one written after the last
    /// commit may be written again after a crash.
    fn write_completeness(&mut self, reports: &[WindowReport]) -> Result<(), OutputError> {
        let _ = reports;
        Ok(())
    }
    /// Makes everything written so far durable; returns where the output now stands.
    fn commit(&mut self) -> Result<OutputPosition, OutputError>;
    /// The flows (and completeness records) written after `position` (all the output
    /// knows of, when `None`).
    fn written_since(
        &mut self,
        position: Option<&OutputPosition>,
    ) -> Result<Vec<FlowKey>, OutputError>;
    /// For an output whose destination acknowledges writes later (Kafka): the book
    /// its writes are numbered in. The collector then answers a chunk `2xx` only once
    /// every flow written before the answer is acknowledged
    /// ([`CollectorOptions::output_ack_timeout`](crate::CollectorOptions::output_ack_timeout)).
    /// Default `None`: a file output's writes are as durable as its commit, and the
    /// ledger holds the chunk.
    fn acknowledgements(&self) -> Option<Acknowledgements> {
        None
    }
    /// Why the output wants no more input now (too many writes wait for its
    /// destination), if it does: the collector then refuses chunks with `503` until it
    /// catches up. Default: never.
    fn backpressure(&self) -> Option<String> {
        None
    }
}
