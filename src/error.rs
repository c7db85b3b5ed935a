//! What can stop the exporter, or keep it from starting.

use flow_batch::BatchError;
use flow_capture::CaptureError;

/// Why the exporter could not start, or stopped early.
///
/// Failures of single records, of the journal or of a sink while running do not stop
/// it: they are counted ([`PipelineCounters`](crate::PipelineCounters)) and logged
/// (rate-limited), and the records concerned are kept where they can be.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExporterError {
    /// The kernel capture failed (loading, or reading its ring buffer).
    #[error("the kernel capture failed")]
    Capture(#[from] CaptureError),
    /// A record source of the embedder's failed.
    #[error("the record source failed")]
    Source(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// The batching configuration is invalid.
    #[error("invalid batching configuration")]
    Batch(#[from] BatchError),
    /// The record journal could not be opened (it is the only journal failure that
    /// stops anything: a journal that fails later degrades, counted).
    #[error("the record journal could not be opened")]
    Journal(#[source] crate::journal::JournalError),
    /// A setting given to the builder is invalid.
    #[error("invalid exporter setting `{key}`: {reason}")]
    InvalidSetting {
        /// The builder setting.
        key: &'static str,
        /// What it must be instead.
        reason: String,
    },
    /// The pipeline's thread could not be started, or ended without an answer.
    #[error("the pipeline thread {0}")]
    Thread(&'static str),
}

impl ExporterError {
    /// Wraps a record source's error ([`ExporterError::Source`]).
    pub fn source(error: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        ExporterError::Source(error.into())
    }
}
