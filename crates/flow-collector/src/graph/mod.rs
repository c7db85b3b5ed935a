//! The service dependency graph, sans-IO (`docs/graph.md`): every attributed flow the
//! output takes is aggregated per minute (of its `t_end`, UTC) into edges client ->
//! server `(source node, target node, server port)` with connections, failures by
//! reason, bytes each way, retransmits and an RTT sketch; with the minute's flows and
//! the share unattributed, and the exporter windows that did not add up.
//! [`GraphAggregator::query`] merges the minutes of a range into the answer of
//! `GET /api/v1/graph`.
//!
//! Bounded: minutes older than [`GraphConfig::retention`] are dropped; each node that
//! owns edges (the traced side of the records) keeps at most
//! [`GraphConfig::top_edges`] per minute once the minute is sealed (twice that while
//! it fills), the rest folded into its edge to `other`, counted; and all minutes
//! together hold at most [`GraphConfig::max_edges`] edges (the oldest minutes go
//! first). Time is passed in.

mod aggregator;
mod cumulative;
mod merge;
mod minute;
mod node;
mod query;
mod response;
mod shared;
mod sides;
mod sketch;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use aggregator::GraphAggregator;
pub use minute::EdgeStats;
pub use node::{EdgeKey, Node};
pub use query::{GraphQuery, MAX_RESPONSE_EDGES};
pub use response::{
    Folded, GraphEdge, GraphNode, GraphResponse, IncompleteWindow, RecentFlow, Rtt, WindowCounts,
};
pub(crate) use shared::SharedGraph;
pub use sketch::RttSketch;

/// The path of the graph's read API.
pub const GRAPH_PATH: &str = "/api/v1/graph";

/// Settings of a [`GraphAggregator`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GraphConfig {
    /// Whether the collector aggregates flows and serves the graph (`--no-graph`,
    /// `[graph] enabled = false` turn it off; default on). A [`GraphAggregator`]
    /// used on its own aggregates whatever it is given: the setting is the
    /// collector's.
    pub enabled: bool,
    /// Minutes older than this (before the time passed in) are dropped, and a query
    /// reaching further back is clamped (`--graph-retention`, default 6 hours).
    pub retention: Duration,
    /// Edges each owning node keeps per minute once the minute is sealed; the rest
    /// are folded into its edge to `other` (`--graph-top-edges`, default 50).
    pub top_edges: usize,
    /// Most edges held in all minutes together; above it the oldest minutes are
    /// dropped (`--graph-max-edges`, default 500,000).
    pub max_edges: usize,
    /// Most connections whose interim records are tracked (their cumulative counters
    /// turned into deltas); default 1,000,000.
    pub max_open_connections: usize,
    /// Most connections in the table of connection ends (so that a connection both
    /// ends report is counted once while it is held); the oldest are evicted first,
    /// and the table is full in steady state. About 80 bytes each; default 500,000.
    pub max_matched_connections: usize,
}

impl Default for GraphConfig {
    fn default() -> GraphConfig {
        GraphConfig {
            enabled: true,
            retention: Duration::from_secs(6 * 3600),
            top_edges: 50,
            max_edges: 500_000,
            max_open_connections: 1_000_000,
            max_matched_connections: 500_000,
        }
    }
}

impl GraphConfig {
    /// Sets [`retention`](GraphConfig::retention) (at least a minute).
    pub fn with_retention(mut self, retention: Duration) -> GraphConfig {
        self.retention = retention.max(Duration::from_secs(60));
        self
    }

    /// Sets [`top_edges`](GraphConfig::top_edges) (at least 1).
    pub fn with_top_edges(mut self, top: usize) -> GraphConfig {
        self.top_edges = top.max(1);
        self
    }

    /// Sets [`max_edges`](GraphConfig::max_edges) (at least 1).
    pub fn with_max_edges(mut self, max: usize) -> GraphConfig {
        self.max_edges = max.max(1);
        self
    }

    /// Sets [`enabled`](GraphConfig::enabled).
    pub fn with_enabled(mut self, enabled: bool) -> GraphConfig {
        self.enabled = enabled;
        self
    }

    /// Sets [`max_open_connections`](GraphConfig::max_open_connections) (at least 1).
    pub fn with_max_open_connections(mut self, max: usize) -> GraphConfig {
        self.max_open_connections = max.max(1);
        self
    }

    /// Sets [`max_matched_connections`](GraphConfig::max_matched_connections) (at
    /// least 1).
    pub fn with_max_matched_connections(mut self, max: usize) -> GraphConfig {
        self.max_matched_connections = max.max(1);
        self
    }
}

/// What a [`GraphAggregator`] has done and holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GraphStats {
    /// Edges held now (all minutes).
    pub edges_held: u64,
    /// Minutes held now.
    pub minutes_held: u64,
    /// Flows aggregated (counted in their minute's flows).
    pub flows_aggregated: u64,
    /// Flows that counted no connection: a record of a connection whose other end's
    /// record reached the graph first and counts it.
    pub flows_counted_by_peer: u64,
    /// Flows whose `t_end` was outside the retention (older) or more than 10
    /// minutes ahead: dropped.
    pub flows_out_of_range: u64,
    /// Edges folded into `other` (top N per owner per minute, or the total cap
    /// reached with a single minute held).
    pub edges_folded: u64,
    /// Minutes dropped before their retention because the total cap was reached.
    pub minutes_evicted: u64,
    /// Connections whose interim records are tracked now.
    pub open_connections: u64,
    /// Interim records whose connection could not be tracked (table full): their
    /// cumulative counters were counted whole.
    pub connections_untracked: u64,
    /// Exporter windows' completeness reports aggregated.
    pub windows_reported: u64,
    /// Flows not aggregated because a query held the graph while more than
    /// 100,000 written flows waited for it (the collector's shared graph; always 0
    /// for a [`GraphAggregator`] alone).
    pub flows_dropped_busy: u64,
    /// Connections matched that were forgotten for room before both their final
    /// records came ([`GraphConfig::max_matched_connections`]): a record of their
    /// other end coming later counts them again.
    pub connections_forgotten: u64,
    /// Connections whose ends are matched now.
    pub connections_matched: u64,
}
