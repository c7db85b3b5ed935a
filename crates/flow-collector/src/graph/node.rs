//! The graph's nodes and edges, and how a flow is oriented client -> server.

use std::{fmt, net::IpAddr, net::SocketAddr};

use flow_record::{Direction, WorkloadId};

use crate::attribution::AttributedFlow;

/// A node of the graph. Its ID (as [`Display`](fmt::Display) writes it) is unique:
/// a workload ID that could be read as another kind's (`other`, or one starting
/// `unattributed:` or `workload:`) is written `workload:<id>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Node {
    /// A workload (its ID, e.g. `spiffe://prod/api`).
    Workload(WorkloadId),
    /// An address no workload could be named for: `unattributed:<ip>`.
    Unattributed(IpAddr),
    /// The edges of one workload folded beyond the top N: `other`.
    Other,
}

impl Node {
    /// `workload`, `unattributed` or `other` (the JSON's `kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Workload(_) => "workload",
            Node::Unattributed(_) => "unattributed",
            Node::Other => "other",
        }
    }

    /// Whether `id` is this node's ID (as [`Display`](fmt::Display) writes it),
    /// without allocating.
    pub fn matches(&self, id: &str) -> bool {
        match self {
            Node::Workload(w) if escaped(w.as_str()) => {
                id.strip_prefix(WORKLOAD_PREFIX) == Some(w.as_str())
            }
            Node::Workload(w) => w.as_str() == id,
            Node::Unattributed(ip) => id
                .strip_prefix("unattributed:")
                .and_then(|s| s.parse::<IpAddr>().ok())
                .is_some_and(|parsed| parsed == *ip),
            Node::Other => id == "other",
        }
    }
}

impl Ord for Node {
    /// Workloads (by ID), then unattributed addresses, then `other`.
    fn cmp(&self, other: &Node) -> std::cmp::Ordering {
        match (self, other) {
            (Node::Workload(a), Node::Workload(b)) => a.as_str().cmp(b.as_str()),
            (Node::Unattributed(a), Node::Unattributed(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Node {
    fn partial_cmp(&self, other: &Node) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Node {
    fn rank(&self) -> u8 {
        match self {
            Node::Workload(_) => 0,
            Node::Unattributed(_) => 1,
            Node::Other => 2,
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Workload(w) if escaped(w.as_str()) => write!(f, "{WORKLOAD_PREFIX}{w}"),
            Node::Workload(w) => f.write_str(w.as_str()),
            Node::Unattributed(ip) => write!(f, "unattributed:{ip}"),
            Node::Other => f.write_str("other"),
        }
    }
}

/// What a workload ID that could be read as another kind's is written after.
const WORKLOAD_PREFIX: &str = "workload:";

/// Whether the workload ID `id` is written `workload:<id>`: it is `other` or starts
/// with `unattributed:` or `workload:` (so that no two nodes share an ID, and the
/// prefix is read back unambiguously).
fn escaped(id: &str) -> bool {
    id == "other" || id.starts_with("unattributed:") || id.starts_with(WORKLOAD_PREFIX)
}

/// An edge: client node -> server node, on the server's port (0 for a folded edge).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeKey {
    /// The client (the side that called `connect()`).
    pub source: Node,
    /// The server (the side that accepted).
    pub target: Node,
    /// The server's port.
    pub port: u16,
}

impl EdgeKey {
    /// The edge's stable ID: `<source> -> <target>:<port>`. When an end's ID holds
    /// ` -> ` (so `a -> b -> c:1` could be `a` to `b -> c` or `a -> b` to `c`), the
    /// source ID's length in bytes follows, ` #<n>`: that fixes the split, and no
    /// plain ID ends so (it ends with the port). It depends on the edge alone, so it is
    /// the same in every query.
    pub fn id(&self) -> String {
        EdgeKey::id_of(
            &self.source.to_string(),
            &self.target.to_string(),
            self.port,
        )
    }

    /// [`EdgeKey::id`] from its ends' IDs, for a caller that writes them anyway.
    pub(crate) fn id_of(source: &str, target: &str, port: u16) -> String {
        if source.contains(" -> ") || target.contains(" -> ") {
            format!("{source} -> {target}:{port} #{}", source.len())
        } else {
            format!("{source} -> {target}:{port}")
        }
    }

    /// Whether the edge touches the node whose ID is `id`.
    pub fn touches(&self, id: &str) -> bool {
        self.source.matches(id) || self.target.matches(id)
    }

    /// The edge of `owner` that its folded edges go to: `owner -> other:0` when the
    /// owner is the client, `other -> owner:0` when it is the server.
    pub(crate) fn other_of(owner: &Node, owner_is_source: bool) -> EdgeKey {
        if owner_is_source {
            EdgeKey {
                source: owner.clone(),
                target: Node::Other,
                port: 0,
            }
        } else {
            EdgeKey {
                source: Node::Other,
                target: owner.clone(),
                port: 0,
            }
        }
    }

    /// Whether this is a folded edge (one end is `other`).
    pub fn is_other(&self) -> bool {
        self.source == Node::Other || self.target == Node::Other
    }
}

/// One flow, oriented client -> server.
#[derive(Clone, Debug)]
pub(crate) struct Oriented {
    /// The edge.
    pub(crate) key: EdgeKey,
    /// Whether the record's host is the client.
    pub(crate) local_is_client: bool,
    /// The client's address and port.
    pub(crate) client: SocketAddr,
    /// The server's address and port.
    pub(crate) server: SocketAddr,
}

impl Oriented {
    /// Orients `flow`. The record's host is the client for an outbound record, the
    /// server for an inbound one; for `unknown` (a socket older than the exporter) the
    /// end with the higher (port, address) is taken as the client (ephemeral ports are
    /// high), which both ends of a connection compute alike.
    /// Which end's record counts a connection reported by both is for the
    /// aggregator's [`SidesTable`](super::sides::SidesTable).
    pub(crate) fn of(flow: &AttributedFlow) -> Oriented {
        let r = &flow.record;
        let local = match &r.local_workload_id {
            Some(w) => Node::Workload(w.clone()),
            None => Node::Unattributed(r.local.ip()),
        };
        let remote = match &flow.remote_workload_id {
            Some(w) => Node::Workload(w.clone()),
            None => Node::Unattributed(r.remote.ip()),
        };
        let local_is_client = Oriented::local_is_client(r);
        if local_is_client {
            Oriented {
                key: EdgeKey {
                    source: local,
                    target: remote,
                    port: r.remote.port(),
                },
                local_is_client,
                client: r.local,
                server: r.remote,
            }
        } else {
            Oriented {
                key: EdgeKey {
                    source: remote,
                    target: local,
                    port: r.local.port(),
                },
                local_is_client,
                client: r.remote,
                server: r.local,
            }
        }
    }

    /// Whether `r`'s host is the connection's client (see [`Oriented::of`]).
    pub(crate) fn local_is_client(r: &flow_record::FlowRecord) -> bool {
        match r.direction {
            Direction::Outbound => true,
            Direction::Inbound => false,
            Direction::Unknown => (r.local.port(), r.local.ip()) > (r.remote.port(), r.remote.ip()),
        }
    }

    /// The node that owns the edge for the top-N bound: the record's own side.
    pub(crate) fn owner(&self) -> &Node {
        if self.local_is_client {
            &self.key.source
        } else {
            &self.key.target
        }
    }
}
