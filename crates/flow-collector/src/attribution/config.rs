//! How long to wait, how much to keep.

use std::time::Duration;

use crate::attribution::StaticOwners;

/// Settings of an [`Attributor`](crate::attribution::Attributor).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AttributionConfig {
    /// Longest a flow is held back waiting for heartbeats that cover its remote IP
    /// (counted from its arrival at the collector), then it goes out unattributed
    /// (`--hold-back`, default 2 minutes).
    pub hold_back: Duration,
    /// Longest a flow waits for its peer's record before the ownership map is used
    /// (`--peer-wait`, default: as long as `hold_back`; never longer).
    pub peer_wait: Duration,
    /// How far apart two hosts' clocks may be, plus the time a handshake takes: a
    /// lookup at time t considers every range within `t ± tolerance`, and attributes
    /// only if all of them belong to one workload (`--clock-tolerance`, default 2 s).
    pub tolerance: Duration,
    /// Two heartbeats of one workload on one IP at most this far apart, with no other
    /// claim between them, join into one range (`--merge-gap`, default 30 s).
    pub merge_gap: Duration,
    /// Ranges that ended longer ago than this are forgotten (`--retention`, default
    /// 1 hour).
    pub retention: Duration,
    /// Most ranges kept in the ownership map; above it the oldest are evicted and
    /// counted (`--max-ranges`, default 4,000,000).
    pub max_ranges: usize,
    /// Most flows held back at once; above it the oldest goes out unattributed
    /// (`hold_back_full`) (`--max-held`, default 2,000,000).
    pub max_held: usize,
    /// IPs and CIDRs of things that run no exporter (`--static-owners`).
    pub static_owners: StaticOwners,
    /// Keep the claims of the records pushed in, compacted, for
    /// [`Attributor::take_heartbeats`](crate::attribution::Attributor::take_heartbeats)
    /// to hand to the other collector nodes (default: off; without it, nothing is
    /// kept and pushing a chunk costs nothing more). Applying other nodes' heartbeats
    /// ([`Attributor::apply_heartbeats`](crate::attribution::Attributor::apply_heartbeats))
    /// works either way.
    pub share_heartbeats: bool,
    /// Decide nothing: every record pushed leaves at once with its remote side
    /// undecided (source `none`, no reason), no heartbeat or peer entry kept (default
    /// off). What a collector node's intake runs when its chunks' records are routed
    /// by connection to the nodes that attribute them (`--connection-topic`,
    /// `docs/kafka.md`).
    pub route_only: bool,
}

impl Default for AttributionConfig {
    fn default() -> AttributionConfig {
        AttributionConfig {
            hold_back: Duration::from_secs(120),
            peer_wait: Duration::from_secs(120),
            tolerance: Duration::from_secs(2),
            merge_gap: Duration::from_secs(30),
            retention: Duration::from_secs(3600),
            max_ranges: 4_000_000,
            max_held: 2_000_000,
            static_owners: StaticOwners::default(),
            share_heartbeats: false,
            route_only: false,
        }
    }
}

impl AttributionConfig {
    /// Sets [`hold_back`](AttributionConfig::hold_back), and `peer_wait` to the same.
    pub fn with_hold_back(mut self, hold_back: Duration) -> AttributionConfig {
        self.hold_back = hold_back;
        self.peer_wait = hold_back;
        self
    }

    /// Sets [`peer_wait`](AttributionConfig::peer_wait) (capped at `hold_back`).
    pub fn with_peer_wait(mut self, peer_wait: Duration) -> AttributionConfig {
        self.peer_wait = peer_wait;
        self
    }

    /// Sets [`tolerance`](AttributionConfig::tolerance).
    pub fn with_tolerance(mut self, tolerance: Duration) -> AttributionConfig {
        self.tolerance = tolerance;
        self
    }

    /// Sets [`merge_gap`](AttributionConfig::merge_gap).
    pub fn with_merge_gap(mut self, merge_gap: Duration) -> AttributionConfig {
        self.merge_gap = merge_gap;
        self
    }

    /// Sets [`retention`](AttributionConfig::retention).
    pub fn with_retention(mut self, retention: Duration) -> AttributionConfig {
        self.retention = retention;
        self
    }

    /// Sets [`max_ranges`](AttributionConfig::max_ranges).
    pub fn with_max_ranges(mut self, max: usize) -> AttributionConfig {
        self.max_ranges = max;
        self
    }

    /// Sets [`max_held`](AttributionConfig::max_held).
    pub fn with_max_held(mut self, max: usize) -> AttributionConfig {
        self.max_held = max;
        self
    }

    /// Sets [`static_owners`](AttributionConfig::static_owners).
    pub fn with_static_owners(mut self, owners: StaticOwners) -> AttributionConfig {
        self.static_owners = owners;
        self
    }

    /// Sets [`share_heartbeats`](AttributionConfig::share_heartbeats).
    pub fn with_heartbeat_sharing(mut self, share: bool) -> AttributionConfig {
        self.share_heartbeats = share;
        self
    }
}
