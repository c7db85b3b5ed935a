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
    /// Heartbeats applied to the ownership map: the local records' claims and the
    /// time ranges of other nodes' heartbeats.
    pub heartbeats: u64,
    /// Heartbeats ignored because they ended before what the map still holds (local
    /// records and other nodes' ranges).
    pub heartbeats_too_old: u64,
    /// Shared heartbeats taken out for the other nodes
    /// ([`Attributor::take_heartbeats`](crate::attribution::Attributor::take_heartbeats)).
    pub heartbeats_shared_out: u64,
    /// Time ranges in them.
    pub heartbeat_ranges_shared_out: u64,
    /// Keys (host, IP, claim) with claims not taken out yet.
    pub heartbeat_book_entries: u64,
    /// Other nodes' heartbeats applied
    /// ([`Attributor::apply_heartbeats`](crate::attribution::Attributor::apply_heartbeats)).
    pub heartbeats_applied_remote: u64,
    /// Time ranges in them.
    pub heartbeat_ranges_remote: u64,
    /// Of those, ranges ignored because they ended before what the map still holds
    /// (also in [`heartbeats_too_old`](AttributionStats::heartbeats_too_old)).
    pub heartbeat_ranges_remote_too_old: u64,
    /// Other nodes' heartbeats ignored because every workload symbol is taken
    /// (four billion live workloads: never in practice).
    pub heartbeats_remote_refused: u64,
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
