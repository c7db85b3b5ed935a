//! One minute of the graph: every edge's counters, by the node that owns it (the
//! traced side of the records that made it), and the minute's totals.

use flow_record::CloseReason;

use crate::attribution::FastMap;

use super::{
    node::{EdgeKey, Node},
    sketch::RttSketch,
};

/// An edge's counters in one minute (or merged over several).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EdgeStats {
    /// Whether the owner is the edge's source (client); else its target.
    pub(crate) owner_is_source: bool,
    /// Connections closed (final records).
    pub connections: u64,
    /// Connections closed other than normally, by reason.
    pub failed: Vec<(CloseReason, u64)>,
    /// Payload bytes client -> server.
    pub bytes_sent: u64,
    /// Payload bytes server -> client.
    pub bytes_received: u64,
    /// Segments retransmitted by the side whose record counted.
    pub retransmits: u64,
    /// Smoothed RTTs of the records (µs).
    pub rtt: RttSketch,
}

impl EdgeStats {
    /// Adds one failure of `reason`.
    pub(crate) fn add_failed(&mut self, reason: CloseReason, n: u64) {
        match self.failed.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, count)) => *count += n,
            None => self.failed.push((reason, n)),
        }
    }

    /// Failed connections, all reasons.
    pub fn failed_total(&self) -> u64 {
        self.failed.iter().map(|(_, n)| n).sum()
    }

    /// Adds `other`'s counters.
    pub fn merge(&mut self, other: &EdgeStats) {
        self.connections += other.connections;
        for &(reason, n) in &other.failed {
            self.add_failed(reason, n);
        }
        // Hosts' counters: saturate rather than wrap.
        self.bytes_sent = self.bytes_sent.saturating_add(other.bytes_sent);
        self.bytes_received = self.bytes_received.saturating_add(other.bytes_received);
        self.retransmits = self.retransmits.saturating_add(other.retransmits);
        self.rtt.merge(&other.rtt);
    }

    /// What ranks an edge for the top N: connections, then bytes.
    fn weight(&self) -> (u64, u64) {
        (
            self.connections,
            self.bytes_sent.saturating_add(self.bytes_received),
        )
    }
}

/// One minute.
#[derive(Debug, Default)]
pub(crate) struct Minute {
    /// Edges by owner.
    pub(crate) owners: FastMap<Node, FastMap<EdgeKey, EdgeStats>>,
    /// Flows (records) aggregated, counted or not.
    pub(crate) flows: u64,
    /// Among them, those whose remote side is unattributed.
    pub(crate) unattributed: u64,
    /// Edges folded into `other` (an edge folded twice counts twice).
    pub(crate) folded_edges: u64,
    /// Connections in them.
    pub(crate) folded_connections: u64,
    /// Exporter windows starting in this minute that were reported.
    pub(crate) windows_reported: u64,
    /// Among them, those whose numbers did not add up.
    pub(crate) windows_incomplete: u64,
    /// Folded down to the top N once for good.
    pub(crate) sealed: bool,
}

impl Minute {
    /// Edges held.
    pub(crate) fn edges(&self) -> usize {
        self.owners.values().map(|edges| edges.len()).sum()
    }

    /// Folds `owner`'s edges beyond the `keep` heaviest into its `other` edges;
    /// returns how many edges that removed (net).
    pub(crate) fn fold(&mut self, owner: &Node, keep: usize) -> usize {
        let Some(edges) = self.owners.get_mut(owner) else {
            return 0;
        };
        let mut ranked: Vec<(EdgeKey, (u64, u64))> = edges
            .iter()
            .filter(|(k, _)| !k.is_other())
            .map(|(k, s)| (k.clone(), s.weight()))
            .collect();
        if ranked.len() <= keep {
            return 0;
        }
        let before = edges.len();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        for (key, _) in ranked.drain(keep..) {
            let Some(stats) = edges.remove(&key) else {
                continue;
            };
            self.folded_edges += 1;
            self.folded_connections += stats.connections;
            let other = EdgeKey::other_of(owner, stats.owner_is_source);
            edges
                .entry(other)
                .or_insert_with(|| EdgeStats {
                    owner_is_source: stats.owner_is_source,
                    ..EdgeStats::default()
                })
                .merge(&stats);
        }
        before.saturating_sub(edges.len())
    }

    /// Edges `owner` holds that count toward the top N (not its `other` edges).
    pub(crate) fn budget_used(&self, owner: &Node) -> usize {
        self.owners
            .get(owner)
            .map_or(0, |e| e.len() - e.keys().filter(|k| k.is_other()).count())
    }
}
