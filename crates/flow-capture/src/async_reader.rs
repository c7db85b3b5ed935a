//! The async reader on tokio: the ring's fd in an `AsyncFd`, plus the poll timer.

use std::{collections::VecDeque, time::Duration};

use futures::Stream;
use tokio::io::unix::AsyncFd;

use crate::{FlowRecord, error::CaptureError, reader::FlowReader};

/// Async wrapper around a [`FlowReader`].
pub struct AsyncFlowReader {
    inner: AsyncFd<FlowReader>,
    interval: Duration,
}

impl AsyncFlowReader {
    /// Registers the reader with the current tokio runtime.
    pub fn new(reader: FlowReader) -> Result<AsyncFlowReader, CaptureError> {
        let interval = reader.poll_interval();
        // SAFETY: the reader owns the ring's fd and neither closes nor replaces it while
        // the `AsyncFd` owns the reader.
        let inner =
            unsafe { AsyncFd::register_with_interest(reader, tokio::io::Interest::READABLE) }
                .map_err(|e| CaptureError::Io {
                    operation: "registering the ring buffer with tokio",
                    source: e.into_parts().1,
                })?;
        Ok(AsyncFlowReader { inner, interval })
    }

    /// Waits until records are available (woken by the kernel, or on the poll timer)
    /// and appends them to `out`; returns how many were appended (at least one).
    pub async fn next_batch(&mut self, out: &mut Vec<FlowRecord>) -> Result<usize, CaptureError> {
        loop {
            let n = self.drain(out);
            if n > 0 {
                return Ok(n);
            }
            tokio::select! {
                guard = self.inner.readable() => {
                    let mut guard = guard.map_err(|source| CaptureError::Io {
                        operation: "waiting on the ring buffer",
                        source,
                    })?;
                    guard.clear_ready();
                }
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// Appends every record now in the ring to `out` without waiting (use it to drain
    /// after detaching, on shutdown).
    pub fn drain(&mut self, out: &mut Vec<FlowRecord>) -> usize {
        self.inner.get_mut().read_available(|r| out.push(r))
    }

    /// The wrapped reader.
    pub fn get_ref(&self) -> &FlowReader {
        self.inner.get_ref()
    }

    /// The records as a stream, one at a time.
    pub fn into_stream(self) -> impl Stream<Item = Result<FlowRecord, CaptureError>> {
        futures::stream::unfold(
            (self, VecDeque::new(), Vec::new()),
            |(mut reader, mut queue, mut batch)| async move {
                if queue.is_empty() {
                    if let Err(e) = reader.next_batch(&mut batch).await {
                        return Some((Err(e), (reader, queue, batch)));
                    }
                    queue.extend(batch.drain(..));
                }
                let record = queue.pop_front()?;
                Some((Ok(record), (reader, queue, batch)))
            },
        )
    }
}
