//! What the attributor has done, and what it holds.

use crate::attribution::RemoteUnattributedReason;

/// Counters and gauges of an [`Attributor`](crate::attribution::Attributor).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttributionStats {
    /// Flows pushed in.
    pub flows_in: u64,
    /// Flows decided and handed out.
    pub flows_out: u64,
    /// Flows attributed from the peer's record.
    pub attributed_peer_record: u64,
    /// Flows attributed from the ownership map.
    pub attributed_heartbeat: u64,
    /// Flows attributed from the static table.
    pub attributed_static: u64,
    /// Flows unattributed, by reason (indexed by [`RemoteUnattributedReason::index`]).
    pub unattributed: [u64; RemoteUnattributedReason::ALL.len()],
    /// Heartbeats applied to the ownership map.
    pub heartbeats: u64,
    /// Heartbeats ignored because they ended before what the map still holds.
    pub heartbeats_too_old: u64,
    /// Times two workloads claimed overlapping time on one IP (each marks a conflict).
    pub conflicts: u64,
    /// Ranges evicted by the size cap (not by retention).
    pub ranges_evicted: u64,
    /// Ranges forgotten because they ended before the retention.
    pub ranges_expired: u64,
    /// Flows held back now.
    pub held: u64,
    /// IPs the ownership map tracks now.
    pub tracked_ips: u64,
    /// Ranges in the ownership map now (conflict and shared marks included).
    pub ranges: u64,
    /// Records in the peer index now.
    pub peer_index_entries: u64,
    /// Records that left the peer index early because it was full (its cap is
    /// `max_held`): a flow whose peer left this way may go unattributed.
    pub peer_index_evicted: u64,
    /// Estimated bytes of the ownership map (IPs, ranges, their allocations).
    pub map_bytes: u64,
}

impl AttributionStats {
    /// Flows unattributed for `reason`.
    pub fn unattributed_for(&self, reason: RemoteUnattributedReason) -> u64 {
        self.unattributed[reason.index()]
    }

    /// Flows unattributed, all reasons.
    pub fn unattributed_total(&self) -> u64 {
        self.unattributed.iter().sum()
    }
}
