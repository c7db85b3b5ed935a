//! A query: the minutes of a range merged into one graph.

use std::{collections::BTreeMap, time::SystemTime};

use crate::attribution::FastMap;

use super::{
    GraphAggregator, GraphQuery, MAX_RESPONSE_EDGES,
    aggregator::{minute_of, minute_start},
    minute::EdgeStats,
    node::{EdgeKey, Node},
    response::{Folded, GraphEdge, GraphNode, GraphResponse, Rtt, WindowCounts, rfc3339},
};

/// Most incomplete windows one answer lists.
const MAX_RESPONSE_INCOMPLETE: usize = 1_000;

impl GraphAggregator {
    /// The graph of `query`'s range: the minutes overlapping `[from, to)` merged
    /// (counters summed, sketches merged), the edges touching `query.workload` (all
    /// when `None`), at most [`MAX_RESPONSE_EDGES`].
    pub fn query(&self, query: &GraphQuery) -> GraphResponse {
        let first = minute_of(query.from).unwrap_or(0);
        // The minutes that start before `to`.
        let end = query
            .to
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs().div_ceil(60));
        let mut merged: FastMap<&EdgeKey, EdgeStats> = FastMap::default();
        let mut flows = 0;
        let mut unattributed = 0;
        let mut folded = Folded::default();
        let mut windows = WindowCounts::default();
        for (_, minute) in self.minutes.range(first..end.max(first)) {
            flows += minute.flows;
            unattributed += minute.unattributed;
            folded.edges += minute.folded_edges;
            folded.connections += minute.folded_connections;
            windows.reported += minute.windows_reported;
            windows.incomplete += minute.windows_incomplete;
            for edges in minute.owners.values() {
                for (key, stats) in edges {
                    if query.workload.as_deref().is_some_and(|w| !key.touches(w)) {
                        continue;
                    }
                    merged.entry(key).or_default().merge(stats);
                }
            }
        }
        let mut ranked: Vec<(&EdgeKey, EdgeStats)> = merged.into_iter().collect();
        ranked.sort_by(|a, b| {
            let weight = |s: &EdgeStats| (s.connections, s.bytes_sent + s.bytes_received);
            weight(&b.1).cmp(&weight(&a.1)).then_with(|| a.0.cmp(b.0))
        });
        let truncated = ranked.len() > MAX_RESPONSE_EDGES;
        ranked.truncate(MAX_RESPONSE_EDGES);
        let mut nodes: BTreeMap<&Node, GraphNode> = BTreeMap::new();
        let mut edges = Vec::with_capacity(ranked.len());
        for (key, stats) in &ranked {
            add_to_nodes(&mut nodes, key, stats);
            edges.push(self.edge_json(key, stats, query));
        }
        let start = minute_start(first);
        let incomplete = self
            .incomplete
            .iter()
            .rev()
            .filter(|(s, e, _)| *s < query.to && *e > start)
            .take(MAX_RESPONSE_INCOMPLETE)
            .map(|(_, _, json)| json.clone())
            .collect();
        GraphResponse {
            from: rfc3339(query.from),
            to: rfc3339(query.to),
            minutes: end.saturating_sub(first),
            clamped: query.clamped,
            held_from: self
                .minutes
                .first_key_value()
                .map(|(&m, _)| rfc3339(minute_start(m))),
            collector: None,
            truncated,
            nodes: nodes.into_values().collect(),
            edges,
            flows,
            unattributed_flows: unattributed,
            unattributed_share: if flows == 0 {
                0.0
            } else {
                unattributed as f64 / flows as f64
            },
            folded,
            windows,
            incomplete,
        }
    }

    /// One edge's JSON, with its recent flows in the range.
    fn edge_json(&self, key: &EdgeKey, stats: &EdgeStats, query: &GraphQuery) -> GraphEdge {
        let recent = self
            .recent
            .get(key)
            .map(|list| {
                list.iter()
                    .filter(|e| e.t_end >= query.from && e.t_end < query.to)
                    .map(|e| e.to_json())
                    .collect()
            })
            .unwrap_or_default();
        let rtt_us = stats
            .rtt
            .quantile(0.5)
            .zip(stats.rtt.quantile(0.99))
            .map(|(p50, p99)| Rtt {
                p50: p50.round() as u64,
                p99: p99.round() as u64,
                samples: stats.rtt.count(),
                error: (stats.rtt.relative_error() * 10_000.0).round() / 10_000.0,
            });
        let (source, target) = (key.source.to_string(), key.target.to_string());
        GraphEdge {
            id: EdgeKey::id_of(&source, &target, key.port),
            source,
            target,
            port: key.port,
            connections: stats.connections,
            failed: stats
                .failed
                .iter()
                .map(|(r, n)| (r.as_str().into_owned(), *n))
                .collect(),
            failed_total: stats.failed_total(),
            bytes_sent: stats.bytes_sent,
            bytes_received: stats.bytes_received,
            retransmits: stats.retransmits,
            rtt_us,
            recent,
        }
    }
}

/// Adds an edge's counters to its two nodes.
fn add_to_nodes<'a>(nodes: &mut BTreeMap<&'a Node, GraphNode>, key: &'a EdgeKey, s: &EdgeStats) {
    let failed = s.failed_total();
    {
        let client = nodes_entry(nodes, &key.source);
        client.connections_out = client.connections_out.saturating_add(s.connections);
        client.bytes_out = client.bytes_out.saturating_add(s.bytes_sent);
        client.bytes_in = client.bytes_in.saturating_add(s.bytes_received);
        client.failed = client.failed.saturating_add(failed);
    }
    if key.target != key.source {
        let server = nodes_entry(nodes, &key.target);
        server.failed = server.failed.saturating_add(failed);
    }
    let server = nodes_entry(nodes, &key.target);
    server.connections_in = server.connections_in.saturating_add(s.connections);
    server.bytes_in = server.bytes_in.saturating_add(s.bytes_sent);
    server.bytes_out = server.bytes_out.saturating_add(s.bytes_received);
}

/// The node's entry, made when missing.
fn nodes_entry<'a, 'b>(
    nodes: &'b mut BTreeMap<&'a Node, GraphNode>,
    n: &'a Node,
) -> &'b mut GraphNode {
    nodes.entry(n).or_insert_with(|| GraphNode {
        id: n.to_string(),
        kind: n.kind(),
        connections_in: 0,
        connections_out: 0,
        bytes_in: 0,
        bytes_out: 0,
        failed: 0,
    })
}
