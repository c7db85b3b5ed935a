//! The aggregator: flows and completeness reports in, minutes held, queries answered.

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, SystemTime},
};

use flow_record::{CloseReason, RecordKind};

use super::{
    GraphConfig, GraphStats,
    cumulative::{Cumulative, FORGET_AFTER},
    minute::{EdgeStats, Minute},
    node::{EdgeKey, Node, Oriented},
    response::{IncompleteWindow, RecentEntry, rfc3339},
    sides::{Role, Side, SidesTable},
};
use crate::{
    attribution::{AttributedFlow, FastMap},
    completeness::WindowReport,
};

/// Recent flows kept per edge (over all minutes).
pub(crate) const RECENT_PER_EDGE: usize = 5;

/// Recent flows are kept for at most [`GraphConfig::max_edges`] / this many edges
/// (an edge held in many minutes has one list).
pub(crate) const RECENT_EDGES_DIVISOR: usize = 10;

/// Incomplete windows kept (the latest).
pub(crate) const MAX_INCOMPLETE: usize = 10_000;

/// A minute is sealed (folded down to the top N for good) this long after its end.
pub(crate) const SEAL_AFTER: Duration = Duration::from_secs(120);

/// Flows ending further ahead of the time passed in than this are dropped.
pub(crate) const MAX_AHEAD: Duration = Duration::from_secs(600);

/// The minute of `t` (Unix seconds / 60), `None` before 1970.
pub(crate) fn minute_of(t: SystemTime) -> Option<u64> {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs() / 60)
}

/// The start of minute `m`.
pub(crate) fn minute_start(m: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(m.saturating_mul(60))
}

/// The service dependency graph of the last [`GraphConfig::retention`], by minute.
#[derive(Debug)]
pub struct GraphAggregator {
    pub(super) config: GraphConfig,
    pub(super) minutes: BTreeMap<u64, Minute>,
    cumulative: Cumulative,
    /// Which end counts each connection.
    sides: SidesTable,
    /// The latest flows of every edge, latest first.
    pub(super) recent: FastMap<EdgeKey, Vec<RecentEntry>>,
    /// Windows that did not add up: (window end, JSON), oldest first.
    pub(super) incomplete: VecDeque<(SystemTime, SystemTime, IncompleteWindow)>,
    edges_held: usize,
    stats: GraphStats,
    last_prune: Option<SystemTime>,
}

impl GraphAggregator {
    /// An empty graph.
    pub fn new(config: GraphConfig) -> GraphAggregator {
        GraphAggregator {
            cumulative: Cumulative::new(config.max_open_connections),
            sides: SidesTable::new(config.max_matched_connections),
            config,
            minutes: BTreeMap::new(),
            recent: FastMap::default(),
            incomplete: VecDeque::new(),
            edges_held: 0,
            stats: GraphStats::default(),
            last_prune: None,
        }
    }

    /// Its settings.
    pub fn config(&self) -> &GraphConfig {
        &self.config
    }

    /// Its counters and sizes.
    pub fn stats(&self) -> GraphStats {
        GraphStats {
            edges_held: self.edges_held as u64,
            minutes_held: self.minutes.len() as u64,
            open_connections: self.cumulative.len() as u64,
            connections_untracked: self.cumulative.untracked,
            connections_forgotten: self.sides.forgotten,
            connections_matched: self.sides.len() as u64,
            ..self.stats
        }
    }

    /// The oldest minute held at `now`.
    fn oldest_minute(&self, now: SystemTime) -> u64 {
        now.checked_sub(self.config.retention)
            .and_then(minute_of)
            .unwrap_or(0)
    }

    /// Aggregates flows the output took, at `now`.
    ///
    /// Within `flows`, the clients' records go first: when both ends of a connection
    /// come together, the client's counts it (its view of a failure: `refused`,
    /// `reset`, where the server's says `aborted`), as when they come apart the
    /// first to arrive does.
    pub fn add_flows(&mut self, flows: &[AttributedFlow], now: SystemTime) {
        self.advance(now);
        for client_side in [true, false] {
            for flow in flows {
                if Oriented::local_is_client(&flow.record) == client_side {
                    self.add_flow(flow, now);
                }
            }
        }
    }

    fn add_flow(&mut self, flow: &AttributedFlow, now: SystemTime) {
        let r = &flow.record;
        let newest = minute_of(now + MAX_AHEAD).unwrap_or(0);
        let m = match minute_of(r.t_end) {
            Some(m) if m >= self.oldest_minute(now) && m <= newest => m,
            _ => {
                self.stats.flows_out_of_range += 1;
                return;
            }
        };
        self.stats.flows_aggregated += 1;
        let oriented = Oriented::of(flow);
        // Every record moves its connection's running maximum, counted or not.
        let mut delta = self.cumulative.delta(flow.host_id(), r, now);
        let minute = self.minutes.entry(m).or_default();
        minute.flows += 1;
        if flow.remote_workload_id.is_none() {
            minute.unattributed += 1;
        }
        let side = Side::of(oriented.local_is_client);
        let role = self.sides.role(
            oriented.client,
            oriented.server,
            r.t_start,
            side,
            m,
            r.record_kind == RecordKind::Final,
        );
        let (close, peer) = match role {
            Role::Counts { close } => (close, false),
            Role::Peer { counted_in, close } => {
                if !close {
                    self.stats.flows_counted_by_peer += 1;
                    self.add_peer_retransmits(&oriented, [m, counted_in], delta.retransmits);
                    return;
                }
                // The counting end's final record has not come (lost, or late):
                // this one counts the connection and its failure, on its own edge,
                // with its retransmits; the traffic stays the counting end's.
                delta.sent = 0;
                delta.received = 0;
                (true, true)
            }
        };
        let owner = oriented.owner().clone();
        let owner_is_source = oriented.local_is_client;
        let mut key = oriented.key.clone();
        let exists = minute
            .owners
            .get(&owner)
            .is_some_and(|edges| edges.contains_key(&key));
        if !exists && self.edges_held >= self.config.max_edges {
            self.evict_before(m);
        }
        let Some(minute) = self.minutes.get_mut(&m) else {
            return;
        };
        if !exists && self.edges_held >= self.config.max_edges {
            // Still full with this minute alone: into the owner's `other` edge.
            minute.folded_edges += 1;
            self.stats.edges_folded += 1;
            if close {
                minute.folded_connections += 1;
            }
            key = EdgeKey::other_of(&owner, owner_is_source);
        }
        let edges = minute.owners.entry(owner.clone()).or_default();
        let before = edges.len();
        let stats = edges.entry(key).or_insert_with(|| EdgeStats {
            owner_is_source,
            ..EdgeStats::default()
        });
        if close {
            stats.connections += 1;
            if r.close_reason != CloseReason::Normal {
                stats.add_failed(r.close_reason, 1);
            }
        }
        let (to_server, to_client) = if oriented.local_is_client {
            (delta.sent, delta.received)
        } else {
            (delta.received, delta.sent)
        };
        // Hosts' counters: saturate rather than wrap.
        stats.bytes_sent = stats.bytes_sent.saturating_add(to_server);
        stats.bytes_received = stats.bytes_received.saturating_add(to_client);
        stats.retransmits = stats.retransmits.saturating_add(delta.retransmits);
        if !peer {
            stats.rtt.add(r.stats.srtt_us);
        }
        let added = edges.len() - before;
        self.edges_held += added;
        if added > 0 {
            let limit = self.config.top_edges.saturating_mul(2);
            if minute.budget_used(&owner) > limit {
                let folded_before = minute.folded_edges;
                let removed = minute.fold(&owner, self.config.top_edges);
                self.stats.edges_folded += minute.folded_edges - folded_before;
                self.edges_held -= removed;
            }
        }
        self.remember_recent(flow, &oriented);
    }

    /// Adds the retransmits of a record whose connection the other end's record
    /// counts (its host's own segments, which that record does not carry) to the
    /// edge the other end keeps, in the first of `minutes` that holds it; an edge
    /// the other end names differently (another attribution) or that was folded
    /// since does not get them.
    fn add_peer_retransmits(&mut self, oriented: &Oriented, minutes: [u64; 2], retransmits: u64) {
        if retransmits == 0 {
            return;
        }
        // The counting end is the other one: it owns the edge.
        let owner = if oriented.local_is_client {
            &oriented.key.target
        } else {
            &oriented.key.source
        };
        for m in minutes {
            if let Some(stats) = self
                .minutes
                .get_mut(&m)
                .and_then(|minute| minute.owners.get_mut(owner))
                .and_then(|edges| edges.get_mut(&oriented.key))
            {
                stats.retransmits = stats.retransmits.saturating_add(retransmits);
                return;
            }
        }
    }

    /// Keeps `flow` among its edge's latest.
    fn remember_recent(&mut self, flow: &AttributedFlow, oriented: &Oriented) {
        let cap = (self.config.max_edges / RECENT_EDGES_DIVISOR).max(1);
        if !self.recent.contains_key(&oriented.key) && self.recent.len() >= cap {
            self.forget_stalest_recent();
        }
        let r = &flow.record;
        let (bytes_sent, bytes_received) = if oriented.local_is_client {
            (r.stats.bytes_sent, r.stats.bytes_received)
        } else {
            (r.stats.bytes_received, r.stats.bytes_sent)
        };
        let entry = RecentEntry {
            batch: flow.batch.clone(),
            index: flow.record_index,
            t_end: r.t_end,
            kind: r.record_kind,
            client: oriented.client,
            server: oriented.server,
            bytes_sent,
            bytes_received,
            close_reason: r.close_reason,
        };
        let list = self.recent.entry(oriented.key.clone()).or_default();
        let at = list
            .iter()
            .position(|e| e.t_end < entry.t_end)
            .unwrap_or(list.len());
        if at < RECENT_PER_EDGE {
            // Grown one entry at a time: most edges hold one or two flows.
            if list.len() == RECENT_PER_EDGE {
                list.pop();
            } else if list.len() == list.capacity() {
                list.reserve_exact(1);
            }
            list.insert(at, entry);
        }
    }

    /// Makes room among the recent-flow lists: drops the tenth of them whose latest
    /// flow is the oldest (a new edge's flows matter more than an edge's quiet for
    /// hours). O(lists) once every tenth of the cap's insertions.
    fn forget_stalest_recent(&mut self) {
        let mut latest: Vec<(SystemTime, &EdgeKey)> = self
            .recent
            .iter()
            .map(|(key, list)| {
                (
                    list.first().map_or(SystemTime::UNIX_EPOCH, |e| e.t_end),
                    key,
                )
            })
            .collect();
        if latest.is_empty() {
            return;
        }
        // Exactly the tenth (at least one), however many share a time.
        let cut = (latest.len() / 10).min(latest.len() - 1);
        latest.select_nth_unstable_by_key(cut, |(t, _)| *t);
        let stalest: Vec<EdgeKey> = latest[..=cut].iter().map(|(_, k)| (*k).clone()).collect();
        for key in stalest {
            self.recent.remove(&key);
        }
    }

    /// Drops the oldest minutes (never `keep` or later) until the total is under the cap.
    fn evict_before(&mut self, keep: u64) {
        while self.edges_held >= self.config.max_edges {
            let Some((&m, _)) = self.minutes.first_key_value() else {
                return;
            };
            if m >= keep {
                return;
            }
            if let Some(minute) = self.minutes.remove(&m) {
                self.edges_held -= minute.edges();
                self.stats.minutes_evicted += 1;
            }
        }
    }

    /// Aggregates exporter windows' completeness reports the output took.
    pub fn add_reports(&mut self, reports: &[WindowReport], now: SystemTime) {
        self.advance(now);
        let oldest = self.oldest_minute(now);
        let newest = minute_of(now + MAX_AHEAD).unwrap_or(0);
        for report in reports {
            // As flows: a window older than the retention or more than 10 minutes
            // ahead (a host's clock far off) opens no minute.
            let Some(m) =
                minute_of(report.window_start()).filter(|m| (oldest..=newest).contains(m))
            else {
                continue;
            };
            self.stats.windows_reported += 1;
            let minute = self.minutes.entry(m).or_default();
            minute.windows_reported += 1;
            let records_lost = report.completeness.map(|c| {
                let received = report.records_received + report.interim_records_received;
                c.lost_ring_full
                    .saturating_add(c.lost_spool)
                    .saturating_add(c.records_expected().saturating_sub(received))
            });
            let journal_lost = report.completeness.is_some_and(|c| c.lost_journal > 0);
            if report.adds_up() && records_lost == Some(0) && !journal_lost {
                continue;
            }
            minute.windows_incomplete += 1;
            let json = IncompleteWindow {
                host: report.host_id().to_string(),
                window_start: rfc3339(report.window_start()),
                window_end: rfc3339(report.window_end()),
                status: report.status.as_str(),
                records_lost,
            };
            self.incomplete
                .push_back((report.window_start(), report.window_end(), json));
            if self.incomplete.len() > MAX_INCOMPLETE {
                self.incomplete.pop_front();
            }
        }
    }

    /// Drops what the retention no longer covers and seals minutes past their end.
    pub fn advance(&mut self, now: SystemTime) {
        let oldest = self.oldest_minute(now);
        while let Some((&m, _)) = self.minutes.first_key_value() {
            if m >= oldest {
                break;
            }
            if let Some(minute) = self.minutes.remove(&m) {
                self.edges_held -= minute.edges();
            }
        }
        let sealable = now
            .checked_sub(SEAL_AFTER + Duration::from_secs(60))
            .and_then(minute_of);
        if let Some(last) = sealable {
            let top = self.config.top_edges;
            // Every unsealed minute, not only the latest run of them: a late flow may
            // have opened a minute older than sealed ones.
            for (_, minute) in self.minutes.range_mut(..=last).rev() {
                if minute.sealed {
                    continue;
                }
                minute.sealed = true;
                let owners: Vec<Node> = minute
                    .owners
                    .iter()
                    .filter(|(_, e)| e.len() > top)
                    .map(|(o, _)| o.clone())
                    .collect();
                for owner in owners {
                    let folded_before = minute.folded_edges;
                    self.edges_held -= minute.fold(&owner, top);
                    self.stats.edges_folded += minute.folded_edges - folded_before;
                }
            }
        }
        let due = self
            .last_prune
            .is_none_or(|t| now.duration_since(t).unwrap_or_default() >= Duration::from_secs(60));
        if due {
            self.last_prune = Some(now);
            let cutoff = now
                .checked_sub(self.config.retention)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            self.recent.retain(|_, list| {
                list.retain(|e| e.t_end >= cutoff);
                !list.is_empty()
            });
            while self.incomplete.front().is_some_and(|w| w.1 < cutoff) {
                self.incomplete.pop_front();
            }
            self.cumulative.prune(
                now.checked_sub(FORGET_AFTER)
                    .unwrap_or(SystemTime::UNIX_EPOCH),
            );
        }
    }

    /// Edges held (all minutes).
    pub fn edges_held(&self) -> usize {
        self.edges_held
    }
}
