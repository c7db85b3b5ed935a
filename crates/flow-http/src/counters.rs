//! [`ConnectionCounters`]: what a server's connections did.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

/// What a server's connections did, shared with whoever reports it.
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    pub(crate) accepted: AtomicU64,
    pub(crate) refused_over_cap: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
    open: AtomicU64,
}

/// A snapshot of [`ConnectionCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// Connections accepted and served.
    pub accepted: u64,
    /// Connections closed at once because `max_connections` were open.
    pub refused_over_cap: u64,
    /// Connections closed by the header read timeout or the idle timeout.
    pub timed_out: u64,
    /// Failed `accept` calls (each followed by the backoff).
    pub accept_errors: u64,
    /// Connections open now.
    pub open: u64,
}

impl ConnectionCounters {
    /// The counts so far.
    pub fn snapshot(&self) -> ConnectionStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ConnectionStats {
            accepted: get(&self.accepted),
            refused_over_cap: get(&self.refused_over_cap),
            timed_out: get(&self.timed_out),
            accept_errors: get(&self.accept_errors),
            open: get(&self.open),
        }
    }
}

/// Adds one to `counter`.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Counts one open connection for as long as it lives.
pub(crate) struct OpenGuard(Arc<ConnectionCounters>);

impl OpenGuard {
    /// Counts a connection as open until the guard is dropped.
    pub(crate) fn open(counters: Arc<ConnectionCounters>) -> OpenGuard {
        counters.open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(counters)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}
