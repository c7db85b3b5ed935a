//! Chunks a sink failed to take, waiting for their next attempt: bounded, oldest
//! first, retried with exponential backoff and full jitter (sans-IO: the caller
//! passes the time).

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use flow_sink::RetryPolicy;

use super::core::Transmit;

/// How much the backlog holds at most before it drops its oldest chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BacklogLimits {
    /// Chunks. Default 256.
    pub max_chunks: usize,
    /// Records, over all chunks (a record takes about 200 bytes in memory). Default
    /// 100,000 (about 20 MB).
    pub max_records: usize,
}

impl Default for BacklogLimits {
    fn default() -> Self {
        BacklogLimits {
            max_chunks: 256,
            max_records: 100_000,
        }
    }
}

impl BacklogLimits {
    /// Limits of `max_chunks` chunks and `max_records` records (each at least 1).
    pub fn new(max_chunks: usize, max_records: usize) -> BacklogLimits {
        BacklogLimits {
            max_chunks: max_chunks.max(1),
            max_records: max_records.max(1),
        }
    }
}

/// The chunks waiting for the sink, oldest first.
#[derive(Debug)]
pub(crate) struct Backlog {
    queue: VecDeque<Transmit>,
    records: usize,
    /// Failed attempts of the oldest chunk in a row.
    attempts: u32,
    /// When the oldest chunk may be tried again.
    retry_at: Option<Instant>,
    policy: RetryPolicy,
    limits: BacklogLimits,
    rng: fastrand::Rng,
}

impl Backlog {
    /// An empty backlog; `seed` makes its jitter reproducible.
    pub(crate) fn new(policy: RetryPolicy, limits: BacklogLimits, seed: u64) -> Backlog {
        Backlog {
            queue: VecDeque::new(),
            records: 0,
            attempts: 0,
            retry_at: None,
            policy,
            limits,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Chunks waiting.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether the chunk `id` waits here.
    pub(crate) fn contains(&self, id: &flow_batch::wire::BatchId) -> bool {
        self.queue.iter().any(|t| &t.batch_id == id)
    }

    /// When the oldest chunk is due again (`None`: nothing waits, or it is due now).
    pub(crate) fn retry_at(&self) -> Option<Instant> {
        self.retry_at.filter(|_| !self.queue.is_empty())
    }

    /// Queues `t` behind the others (a newer chunk may not overtake an older one);
    /// returns the oldest chunks dropped to keep within the limits.
    pub(crate) fn push_back(&mut self, t: Transmit) -> Vec<Transmit> {
        self.records += t.chunk.records.len();
        self.queue.push_back(t);
        let mut dropped = Vec::new();
        while self.queue.len() > 1
            && (self.queue.len() > self.limits.max_chunks || self.records > self.limits.max_records)
        {
            if let Some(oldest) = self.pop() {
                // The next chunk starts its own count of attempts.
                self.attempts = 0;
                dropped.push(oldest);
            }
        }
        dropped
    }

    /// The oldest chunk, when it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Transmit> {
        if self.retry_at.is_some_and(|at| now < at) {
            return None;
        }
        self.pop()
    }

    fn pop(&mut self) -> Option<Transmit> {
        let t = self.queue.pop_front()?;
        self.records -= t.chunk.records.len();
        Some(t)
    }

    /// The oldest chunk, just tried, failed at `now`: when it may be tried again
    /// (put it back with [`put_back`](Backlog::put_back)), or `None` when the retry
    /// policy gives up on it.
    pub(crate) fn next_attempt(&mut self, now: Instant) -> Option<Duration> {
        self.attempts += 1;
        if !self.policy.may_retry(self.attempts) {
            self.attempts = 0;
            self.retry_at = None;
            return None;
        }
        let wait = self.policy.backoff(self.attempts, self.rng.f64(), None);
        self.retry_at = Some(now + wait);
        Some(wait)
    }

    /// `t`, the oldest, waits at the front again: it failed (after
    /// [`next_attempt`](Backlog::next_attempt)), or was not tried after all (the
    /// exporter is stopping; its attempts unchanged).
    pub(crate) fn put_back(&mut self, t: Transmit) {
        self.records += t.chunk.records.len();
        self.queue.push_front(t);
    }

    /// The oldest chunk was taken: the next one is due at once.
    pub(crate) fn succeeded(&mut self) {
        self.attempts = 0;
        self.retry_at = None;
    }

    /// Makes the oldest chunk due now (one last attempt at shutdown).
    pub(crate) fn due_now(&mut self) {
        self.retry_at = None;
    }

    /// Takes every chunk still waiting.
    pub(crate) fn take_all(&mut self) -> VecDeque<Transmit> {
        self.records = 0;
        self.retry_at = None;
        std::mem::take(&mut self.queue)
    }
}
