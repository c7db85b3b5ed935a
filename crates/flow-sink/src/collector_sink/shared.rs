//! What the sink's handle and its send task share: where frames go, the counters, the
//! settled list, the records dropped per window, and the settings
//! [`reconfigure`](super::CollectorSink::reconfigure) replaces.

use std::{collections::VecDeque, sync::Mutex};

use flow_batch::wire::BatchId;

use super::{DEFAULT_MEMORY_MAX_CHUNKS, counters::Counters, transport::Transport};
use crate::{retry::RetryPolicy, window_losses::WindowLosses};

/// Most settled batch IDs kept for [`CollectorSink::take_settled`](super::CollectorSink::take_settled); past it the oldest
/// are forgotten (a caller that collects them does so every tick).
const MAX_SETTLED: usize = 4 * DEFAULT_MEMORY_MAX_CHUNKS;

/// What the sink and its send task both use.
pub(crate) struct Shared {
    /// Where frames go, for logs and errors: the collector URL, or
    /// `kafka://BROKERS/TOPIC`.
    pub(crate) destination: String,
    pub(crate) counters: Counters,
    /// Batch IDs of frames that left the memory queue, for
    /// [`CollectorSink::take_settled`](super::CollectorSink::take_settled) (a plain getter, so not a message).
    pub(crate) settled: Mutex<VecDeque<BatchId>>,
    /// Records dropped before delivery (spool, disk or memory queue full), per window,
    /// until the window's last chunk reports them; the spool holds a clone.
    pub(crate) losses: WindowLosses,
}

impl Shared {
    /// Notes that the frame `id`, kept in memory, has left the queue for good.
    pub(crate) fn settle(&self, id: BatchId) {
        let mut settled = self.settled.lock().unwrap_or_else(|p| p.into_inner());
        // Never more than a bound, for a caller that does not collect them.
        if settled.len() >= MAX_SETTLED {
            settled.pop_front();
        }
        settled.push_back(id);
    }
}

/// What [`CollectorSink::reconfigure`](super::CollectorSink::reconfigure) replaces: attempts in flight keep the
/// transport they started with.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) transport: Transport,
    pub(crate) retry: RetryPolicy,
}
