//! Where attributed flows go: a sink behind a trait ([`FlowOutput`]), and the
//! bundled one, JSON lines in a file rotated by size or time ([`JsonLinesOutput`]).

mod json;
mod json_lines;
mod position;
mod rotation;
#[cfg(test)]
mod tests;

pub use json::write_json_line;
pub use json_lines::{JsonLinesOutput, OutputStats};
pub use rotation::Rotation;

use crate::attribution::AttributedFlow;

/// A flow's unique ID: its chunk's batch ID (text form) and its index in the chunk.
pub type FlowKey = (String, u32);

/// Where an output stood at a commit, as the output itself understands it (for the
/// JSON-lines file: the file and its length). Kept in the collector's checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct OutputPosition(pub Vec<u8>);

/// Why an output could not take flows.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
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
/// The collector writes flows, then commits; after a commit succeeded it records the
/// returned position with what has been emitted. After a crash it asks which flows
/// were written after the last recorded position, so that none is written twice.
pub trait FlowOutput: Send + 'static {
    /// Writes `flows` (may buffer).
    fn write(&mut self, flows: &[AttributedFlow]) -> Result<(), OutputError>;
    /// Makes everything written so far durable; returns where the output now stands.
    fn commit(&mut self) -> Result<OutputPosition, OutputError>;
    /// The flows written after `position` (all the output knows of, when `None`).
    fn written_since(
        &mut self,
        position: Option<&OutputPosition>,
    ) -> Result<Vec<FlowKey>, OutputError>;
}
