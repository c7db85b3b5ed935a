//! [`ConnectionLimits`]: the caps and timeouts of one server.

use std::time::Duration;

/// Limits on the connections of one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionLimits {
    /// Connections open at once; one more is closed as soon as it is accepted. Taken
    /// as at least 1 (and at most tokio's `Semaphore::MAX_PERMITS`).
    pub max_connections: usize,
    /// Time a peer has to send a request's headers, counted from when the server
    /// waits for them (so also the longest a keep-alive connection stays idle between
    /// requests).
    pub header_read_timeout: Duration,
    /// A connection on which nothing was read or written for this long, while no
    /// request is being handled, is closed.
    pub idle_timeout: Duration,
    /// Wait after a failed `accept` before the next one.
    pub accept_backoff: Duration,
}

impl ConnectionLimits {
    /// `max_connections` at once (at least 1), `header_read_timeout` for headers,
    /// `idle_timeout` without traffic; 100 ms of backoff after a failed `accept`.
    pub fn new(
        max_connections: usize,
        header_read_timeout: Duration,
        idle_timeout: Duration,
    ) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: max_connections.max(1),
            header_read_timeout,
            idle_timeout,
            accept_backoff: Duration::from_millis(100),
        }
    }

    /// Sets [`accept_backoff`](ConnectionLimits::accept_backoff).
    pub fn with_accept_backoff(mut self, backoff: Duration) -> ConnectionLimits {
        self.accept_backoff = backoff;
        self
    }
}
