//! A flow with its remote side decided.

use std::sync::Arc;

use flow_batch::wire::BatchId;
use flow_record::{FlowRecord, WorkloadId};

/// Where a flow's remote workload came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemoteIdentitySource {
    /// The other end's own record of the same connection (the 4-tuple reversed,
    /// overlapping in time) named its local workload.
    PeerRecord,
    /// The ownership map: the heartbeats of one workload, and no other, cover the
    /// remote IP at the flow's time.
    Heartbeat,
    /// The static table (`--static-owners`), consulted after the heartbeats.
    Static,
    /// Unattributed; [`AttributedFlow::remote_unattributed_reason`] says why.
    None,
}

impl RemoteIdentitySource {
    /// The name in the output: `peer_record`, `heartbeat`, `static`, `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            RemoteIdentitySource::PeerRecord => "peer_record",
            RemoteIdentitySource::Heartbeat => "heartbeat",
            RemoteIdentitySource::Static => "static",
            RemoteIdentitySource::None => "none",
        }
    }
}

/// Why a flow's remote side is unattributed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RemoteUnattributedReason {
    /// No workload's heartbeats (and no static entry) cover the remote IP near the
    /// flow's time, after holding the flow back as long as configured.
    NoOwnerKnown,
    /// Two workloads claimed the remote IP at overlapping times near the flow's time.
    ConflictingOwners,
    /// The remote IP passed from one workload to another too close to the flow's time
    /// to tell which one it reached.
    OwnerChanged,
    /// One workload claims the remote IP near the flow's time, but its heartbeats do
    /// not confirm it: they do not cover the flow's time with the clock tolerance to
    /// spare, and the flow did not outlive the tolerance into them. The flow may have
    /// reached the previous (or next) owner, whose records were lost.
    OwnerUnconfirmed,
    /// The remote IP is shared by several workloads through the connect map (one
    /// IPv4, workloads told apart by port): only the peer's own record can say which
    /// one, and it did not arrive.
    SharedAddress,
    /// The flow has no start time (its socket predates the exporter) and nothing
    /// covers the remote IP at its end.
    NoStartTime,
    /// The flow's time is older than what the ownership map still holds (retention,
    /// or ranges evicted by the size cap).
    BeforeRetention,
    /// The hold-back queue was full: the oldest held flow went out undecided.
    HoldBackFull,
    /// The collector stopped before the flow could wait long enough.
    Shutdown,
}

impl RemoteUnattributedReason {
    /// Every reason, in a fixed order (for metrics).
    pub const ALL: [RemoteUnattributedReason; 9] = [
        RemoteUnattributedReason::NoOwnerKnown,
        RemoteUnattributedReason::ConflictingOwners,
        RemoteUnattributedReason::OwnerChanged,
        RemoteUnattributedReason::OwnerUnconfirmed,
        RemoteUnattributedReason::SharedAddress,
        RemoteUnattributedReason::NoStartTime,
        RemoteUnattributedReason::BeforeRetention,
        RemoteUnattributedReason::HoldBackFull,
        RemoteUnattributedReason::Shutdown,
    ];

    /// The name in the output: `no_owner_known`, `conflicting_owners`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            RemoteUnattributedReason::NoOwnerKnown => "no_owner_known",
            RemoteUnattributedReason::ConflictingOwners => "conflicting_owners",
            RemoteUnattributedReason::OwnerChanged => "owner_changed",
            RemoteUnattributedReason::OwnerUnconfirmed => "owner_unconfirmed",
            RemoteUnattributedReason::SharedAddress => "shared_address",
            RemoteUnattributedReason::NoStartTime => "no_start_time",
            RemoteUnattributedReason::BeforeRetention => "before_retention",
            RemoteUnattributedReason::HoldBackFull => "hold_back_full",
            RemoteUnattributedReason::Shutdown => "shutdown",
        }
    }

    /// Its position in [`ALL`](RemoteUnattributedReason::ALL).
    pub fn index(self) -> usize {
        RemoteUnattributedReason::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or(0)
    }
}

/// One exporter record with its remote side decided.
#[derive(Clone, Debug, PartialEq)]
pub struct AttributedFlow {
    /// The record as the exporter sent it.
    pub record: FlowRecord,
    /// The chunk it came in (shared by the chunk's flows); its `host` is the host ID.
    pub batch: Arc<BatchId>,
    /// Its position in the chunk, from 0: with the batch ID, a flow's unique ID.
    pub record_index: u32,
    /// The remote workload, `None` when unattributed.
    pub remote_workload_id: Option<WorkloadId>,
    /// Where [`remote_workload_id`](AttributedFlow::remote_workload_id) came from.
    pub remote_identity_source: RemoteIdentitySource,
    /// Why it is unattributed; `None` when attributed.
    pub remote_unattributed_reason: Option<RemoteUnattributedReason>,
}

impl AttributedFlow {
    /// The host ID of the exporter that sent it.
    pub fn host_id(&self) -> &str {
        &self.batch.host
    }
}
