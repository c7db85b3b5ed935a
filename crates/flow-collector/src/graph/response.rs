//! The answer of `GET /api/v1/graph`, field by field as `docs/graph.md` documents it.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::SystemTime};

use flow_batch::wire::BatchId;
use flow_record::{CloseReason, RecordKind};
use serde::Serialize;

/// A time as the JSON writes it: RFC 3339, UTC, whole seconds.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The merged graph of a range.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GraphResponse {
    /// The range's start (RFC 3339, UTC), after clamping.
    pub from: String,
    /// The range's end (exclusive).
    pub to: String,
    /// Minutes the range covers (each minute overlapping it, held or not).
    pub minutes: u64,
    /// The range asked for reached further back than the retention: `from` was moved.
    pub clamped: bool,
    /// The start of the oldest minute the graph holds (`None`: it holds none). Later
    /// than `from` when the collector started since, or the edge cap dropped the
    /// older minutes: the graph knows nothing before it.
    pub held_from: Option<String>,
    /// The collector node that answered (its host name), set by the collector's
    /// handler; each node's graph holds the flows that node wrote.
    pub collector: Option<String>,
    /// More edges matched than [`MAX_RESPONSE_EDGES`](super::MAX_RESPONSE_EDGES): the
    /// lightest were left out (and their nodes, unless another edge has them).
    pub truncated: bool,
    /// The nodes of the edges returned.
    pub nodes: Vec<GraphNode>,
    /// The edges, heaviest first (connections, then bytes).
    pub edges: Vec<GraphEdge>,
    /// Flows (records) aggregated in the range, every node.
    pub flows: u64,
    /// Among them, those whose remote side is unattributed.
    pub unattributed_flows: u64,
    /// `unattributed_flows / flows` (0 without flows).
    pub unattributed_share: f64,
    /// What the top-N bound folded into `other` in the range.
    pub folded: Folded,
    /// Exporter windows starting in the range that were reported.
    pub windows: WindowCounts,
    /// Those that lost records or whose numbers did not add up (at most 1,000,
    /// latest first).
    pub incomplete: Vec<IncompleteWindow>,
}

/// One node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GraphNode {
    /// Its ID: a workload ID (`workload:<id>` for one that reads as another kind's:
    /// `other`, `unattributed:...`, `workload:...`), `unattributed:<ip>` or `other`.
    pub id: String,
    /// `workload`, `unattributed` or `other`.
    pub kind: &'static str,
    /// Connections of the edges where it is the server.
    pub connections_in: u64,
    /// Connections of the edges where it is the client.
    pub connections_out: u64,
    /// Bytes it received (as client: the edges' `bytes_received`; as server: their
    /// `bytes_sent`).
    pub bytes_in: u64,
    /// Bytes it sent.
    pub bytes_out: u64,
    /// Failed connections of every edge it is on.
    pub failed: u64,
}

/// Folded edges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Folded {
    /// Edge-minutes folded (an edge folded in two minutes counts twice).
    pub edges: u64,
    /// Connections in them.
    pub connections: u64,
}

/// Exporter windows reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WindowCounts {
    /// Reported (the collector's completeness records).
    pub reported: u64,
    /// Among them, those that lost records or did not add up.
    pub incomplete: u64,
}

/// One edge.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GraphEdge {
    /// `<source> -> <target>:<port>`, then ` #<source ID length>` when an end's ID
    /// holds ` -> ` ([`EdgeKey::id`](super::EdgeKey::id)).
    pub id: String,
    /// The client node.
    pub source: String,
    /// The server node.
    pub target: String,
    /// The server's port (0 for an edge to or from `other`).
    pub port: u16,
    /// Connections closed.
    pub connections: u64,
    /// Connections closed other than normally, by reason.
    pub failed: BTreeMap<String, u64>,
    /// Their sum.
    pub failed_total: u64,
    /// Payload bytes client -> server.
    pub bytes_sent: u64,
    /// Payload bytes server -> client.
    pub bytes_received: u64,
    /// Segments retransmitted.
    pub retransmits: u64,
    /// RTT percentiles, `null` without samples.
    pub rtt_us: Option<Rtt>,
    /// Its latest flows in the range (at most 5, latest first).
    pub recent: Vec<RecentFlow>,
}

/// RTT percentiles (µs, within [`Rtt::error`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Rtt {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Samples (records with an RTT).
    pub samples: u64,
    /// The bound of the quantiles' relative error: 0.01, doubled each time the
    /// sketch was coarsened because its values spread over more than 128 buckets
    /// (`docs/graph.md`, "The RTT sketch").
    pub error: f64,
}

/// A recent flow of an edge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecentFlow {
    /// `<batch ID>/<record index>`: the flow's key in the collector's output.
    pub flow: String,
    /// Its `t_end` (RFC 3339, milliseconds).
    pub t_end: String,
    /// `final` or `interim`.
    pub record_kind: &'static str,
    /// The client's `ip:port`.
    pub client: String,
    /// The server's `ip:port`.
    pub server: String,
    /// Payload bytes client -> server (the record's, cumulative for a connection).
    pub bytes_sent: u64,
    /// Payload bytes server -> client.
    pub bytes_received: u64,
    /// Why it closed; `null` for an interim record.
    pub close_reason: Option<String>,
}

/// An exporter window that lost records or whose numbers did not add up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IncompleteWindow {
    /// The exporter's host ID.
    pub host: String,
    /// The window's start.
    pub window_start: String,
    /// Its end.
    pub window_end: String,
    /// `all_chunks`, `chunks_missing` or `last_chunk_missing`.
    pub status: &'static str,
    /// Records lost, as far as known: lost in the ring buffer and the exporter's
    /// spool, and expected but not received; `null` without the last chunk.
    pub records_lost: Option<u64>,
}

/// A recent flow as it is held.
#[derive(Clone, Debug)]
pub(crate) struct RecentEntry {
    pub(crate) batch: Arc<BatchId>,
    pub(crate) index: u32,
    pub(crate) t_end: SystemTime,
    pub(crate) kind: RecordKind,
    pub(crate) client: SocketAddr,
    pub(crate) server: SocketAddr,
    pub(crate) bytes_sent: u64,
    pub(crate) bytes_received: u64,
    pub(crate) close_reason: CloseReason,
}

impl RecentEntry {
    /// Its JSON.
    pub(crate) fn to_json(&self) -> RecentFlow {
        let interim = self.kind == RecordKind::Interim;
        RecentFlow {
            flow: format!("{}/{}", self.batch, self.index),
            t_end: humantime::format_rfc3339_millis(self.t_end).to_string(),
            record_kind: if interim { "interim" } else { "final" },
            client: self.client.to_string(),
            server: self.server.to_string(),
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
            close_reason: (!interim).then(|| self.close_reason.as_str().into_owned()),
        }
    }
}
