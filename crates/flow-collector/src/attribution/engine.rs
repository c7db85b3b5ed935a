//! The attributor: heartbeats in, decided flows out.

use std::{sync::Arc, time::SystemTime};

use flow_batch::wire::BatchId;
use flow_record::FlowRecord;

use crate::attribution::{AttributedFlow, AttributionConfig, AttributionStats};

/// Attributes the remote side of flows from the heartbeats of every host (sans-IO).
#[derive(Debug)]
pub struct Attributor {
    config: AttributionConfig,
}

impl Attributor {
    /// An empty attributor.
    pub fn new(config: AttributionConfig) -> Attributor {
        Attributor { config }
    }

    /// The settings in force.
    pub fn config(&self) -> &AttributionConfig {
        &self.config
    }

    /// Takes one chunk's records, received at `now`: each is a heartbeat for its local
    /// IP (when it names its local workload), a candidate peer for other flows, and a
    /// flow to attribute. Flows that can be decided at once become ready.
    pub fn push_chunk(&mut self, batch: Arc<BatchId>, records: Vec<FlowRecord>, now: SystemTime) {
        let _ = (batch, records, now);
        todo!()
    }

    /// Decides what the passing of time allows: flows whose peer wait or hold-back
    /// ended, flows whose remote IP received heartbeats; expires old ranges.
    pub fn advance(&mut self, now: SystemTime) {
        let _ = now;
        todo!()
    }

    /// The next decided flow, if any.
    pub fn pop_ready(&mut self) -> Option<AttributedFlow> {
        todo!()
    }

    /// When [`advance`](Attributor::advance) has something to do next.
    pub fn next_deadline(&self) -> Option<SystemTime> {
        todo!()
    }

    /// Decides every held flow now (at shutdown): peer record or, once its peer wait
    /// is over, the ownership map and the static table as at its deadline; a flow
    /// that could still have waited for them goes out unattributed, `shutdown`.
    pub fn drain(&mut self, now: SystemTime) {
        let _ = now;
        todo!()
    }

    /// Counters and sizes.
    pub fn stats(&self) -> AttributionStats {
        todo!()
    }
}
