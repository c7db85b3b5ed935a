//! Remote attribution, sans-IO: who owned a flow's remote IP at the time of the flow.
//!
//! Every record an exporter sends is also a heartbeat: "workload W owned local IP X
//! from `t_start` to `t_end`". The [`Attributor`] keeps, per IP, the time ranges in
//! which each workload owned it (the ownership map), an index of recent records by
//! connection 4-tuple (so that the two records of one connection, when both ends run
//! an exporter, name each other exactly), and the flows it cannot decide yet (held
//! back until the heartbeats of the same minute arrive, at most
//! [`AttributionConfig::hold_back`]). It never guesses: a flow it cannot attribute
//! safely goes out unattributed with a [`RemoteUnattributedReason`].
//!
//! Several collector nodes, each receiving some hosts' chunks, share their records'
//! claims: with [`AttributionConfig::share_heartbeats`] on, a node keeps them
//! compacted (one [`Heartbeat`] per host, IP and claim, the exact union of the
//! records' intervals) for [`Attributor::take_heartbeats`]; the caller publishes
//! them ([`Heartbeat::encode`]) and every other node applies them
//! ([`Attributor::apply_heartbeats`]) as if the records had reached it.
//!
//! No clocks, threads or files here: the caller passes the time in (`now`, the
//! collector's wall clock) and takes decided flows out, so tests run on simulated
//! time. `docs/attribution.md` describes the algorithm and its limits.
//!
//! The modules: the settings (config), the engine (engine), the ownership map
//! (ownership) with its interned workloads (workloads) and rate-limited conflict log
//! (conflict_log), the peer index (peers), the held flows (held), IP keys scoped to
//! their host (ip_key), times (time), the static table (static_owners), and the
//! heartbeats collector nodes share (heartbeats).

mod config;
mod conflict_log;
mod engine;
mod flow;
mod heartbeats;
mod held;
mod ip_key;
mod ownership;
mod peers;
mod routing;
mod static_owners;
mod stats;
pub(crate) mod time;
mod workloads;

#[cfg(test)]
mod tests;

pub use config::AttributionConfig;
pub use engine::Attributor;
pub use flow::{AttributedFlow, RemoteIdentitySource, RemoteUnattributedReason};
pub use heartbeats::{
    HEARTBEAT_FORMAT_VERSION, Heartbeat, HeartbeatClaim, HeartbeatDecodeError, MAX_HEARTBEAT_BYTES,
    MAX_HEARTBEAT_RANGES,
};
pub use routing::{connection_hash, connection_partition};
pub use static_owners::{StaticOwners, StaticOwnersError};
pub use stats::AttributionStats;

/// The hash map of the engine's hot paths: foldhash, seeded per map.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
