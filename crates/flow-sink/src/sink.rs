//! The one interface every destination of chunks implements.

use std::sync::Arc;

use async_trait::async_trait;
use flow_batch::Chunk;

use crate::error::SinkError;

/// A destination for the chunks a [`MinuteBatcher`](flow_batch::MinuteBatcher) emits.
///
/// The contract:
///
/// - [`deliver`](FlowSink::deliver) returns `Ok` once the chunk has been delivered
///   **or** kept durably (spooled, or set aside as rejected) by the sink: from then on
///   the caller may forget it, and may tell a
///   [`RecordJournal`](crate::RecordJournal) so. It returns `Err` only when the chunk
///   could be neither delivered nor kept; the caller then still owns it.
///   One exception, for sinks that ride out a full disk: a sink may accept a chunk into
///   a bounded memory buffer when it cannot keep it durably, and still return `Ok`.
///   [`CollectorSink`](crate::CollectorSink) does, on a full spool disk; a caller
///   with a journal uses [`CollectorSink::accept_chunk`](crate::CollectorSink::accept_chunk)
///   instead, which says so ([`Accepted::InMemory`](crate::Accepted::InMemory)), keeps
///   such a chunk's intent open, and ends it once
///   [`CollectorSink::take_settled`](crate::CollectorSink::take_settled) names it.
/// - Chunks are delivered one call at a time, in the order of their sequence
///   numbers. A sink may be called from any task.
/// - [`flush`](FlowSink::flush) waits, as far as the sink can, until what it holds in
///   memory or in a spool has gone out; call it on shutdown.
///
/// Composition comes free, as with `tracing` layers: `Box<S>`, `Arc<S>` and `&S` are
/// sinks; `Option<S>` is a sink that does nothing when `None`; `Vec<S>` delivers
/// every chunk to each of its sinks in turn.
///
/// ```
/// use async_trait::async_trait;
/// use flow_batch::Chunk;
/// use flow_sink::{FlowSink, SinkError};
///
/// /// Counts records and drops them.
/// #[derive(Default)]
/// struct Counting(std::sync::atomic::AtomicU64);
///
/// #[async_trait]
/// impl FlowSink for Counting {
///     fn name(&self) -> &str {
///         "counting"
///     }
///
///     async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
///         self.0.fetch_add(chunk.records.len() as u64, std::sync::atomic::Ordering::Relaxed);
///         Ok(())
///     }
/// }
///
/// // A counting sink plus an optional second one that is switched off.
/// let sinks: Vec<Box<dyn FlowSink>> = vec![Box::new(Counting::default()), Box::new(None::<Counting>)];
/// # let _ = sinks;
/// ```
#[async_trait]
pub trait FlowSink: Send + Sync {
    /// A short name for logs and errors (`collector`, `stdout`, `file`, ...).
    fn name(&self) -> &str;

    /// Delivers `chunk`, or keeps it durably; see the trait's contract.
    async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError>;

    /// Waits until what the sink holds has gone out, as far as it can. The default
    /// does nothing.
    async fn flush(&self) -> Result<(), SinkError> {
        Ok(())
    }
}

#[async_trait]
impl<S: FlowSink + ?Sized> FlowSink for Box<S> {
    fn name(&self) -> &str {
        (**self).name()
    }

    async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
        (**self).deliver(chunk).await
    }

    async fn flush(&self) -> Result<(), SinkError> {
        (**self).flush().await
    }
}

#[async_trait]
impl<S: FlowSink + ?Sized> FlowSink for Arc<S> {
    fn name(&self) -> &str {
        (**self).name()
    }

    async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
        (**self).deliver(chunk).await
    }

    async fn flush(&self) -> Result<(), SinkError> {
        (**self).flush().await
    }
}

#[async_trait]
impl<S: FlowSink + ?Sized> FlowSink for &S {
    fn name(&self) -> &str {
        (**self).name()
    }

    async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
        (**self).deliver(chunk).await
    }

    async fn flush(&self) -> Result<(), SinkError> {
        (**self).flush().await
    }
}

/// `None` accepts every chunk and does nothing with it.
#[async_trait]
impl<S: FlowSink> FlowSink for Option<S> {
    fn name(&self) -> &str {
        match self {
            Some(s) => s.name(),
            None => "none",
        }
    }

    async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
        match self {
            Some(s) => s.deliver(chunk).await,
            None => Ok(()),
        }
    }

    async fn flush(&self) -> Result<(), SinkError> {
        match self {
            Some(s) => s.flush().await,
            None => Ok(()),
        }
    }
}

/// Fan-out: every chunk goes to each sink, in order. Every sink is tried even when
/// an earlier one fails; the first failure is returned (as [`SinkError::Sink`], naming
/// the sink) and the others are logged. A caller that retries a failed chunk sends it
/// again to the sinks that had accepted it, so fan-out to sinks that cannot drop
/// duplicates should use sinks that spool rather than fail.
#[async_trait]
impl<S: FlowSink> FlowSink for Vec<S> {
    fn name(&self) -> &str {
        "fan-out"
    }

    async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
        let mut first = None;
        for sink in self {
            if let Err(e) = sink.deliver(chunk).await {
                first = Some(note_failure(first, sink.name(), e));
            }
        }
        first.map_or(Ok(()), Err)
    }

    async fn flush(&self) -> Result<(), SinkError> {
        let mut first = None;
        for sink in self {
            if let Err(e) = sink.flush().await {
                first = Some(note_failure(first, sink.name(), e));
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// Keeps the first failure of a fan-out and logs the later ones.
fn note_failure(first: Option<SinkError>, name: &str, error: SinkError) -> SinkError {
    let error = SinkError::Sink {
        name: name.to_owned(),
        source: Box::new(error),
    };
    match first {
        None => error,
        Some(first) => {
            tracing::warn!(sink = name, error = %crate::error_chain(&error), "fan-out sink failed");
            first
        }
    }
}
