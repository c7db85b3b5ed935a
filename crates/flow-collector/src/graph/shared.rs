//! The aggregator as the collector shares it: the writers (the pipeline, the
//! attributing half of connection routing) never wait for a query. A query holds the
//! aggregator for as long as it merges its range (`docs/performance.md`: 0.22-0.24 s
//! over the whole retention at the edge cap, 1.4-1.7 s when every minute's edges are
//! new); flows written
//! meanwhile wait in an inbox, handed over without a copy, and the next writer or
//! query to hold the aggregator adds them first. The inbox is bounded: beyond
//! [`INBOX_MAX_FLOWS`] flows, what comes is not aggregated and is counted
//! ([`GraphStats::flows_dropped_busy`]).

use std::{
    mem,
    sync::{Mutex, MutexGuard, TryLockError},
    time::SystemTime,
};

use super::{GraphAggregator, GraphConfig, GraphQuery, GraphResponse, GraphStats};
use crate::{attribution::AttributedFlow, completeness::WindowReport};

/// Most flows waiting for the aggregator while it answers a query: about a quarter
/// of a second of one node's highest rate (`docs/performance.md`), 280 bytes each
/// plus their workload IDs, so at most about 35 MB.
pub(crate) const INBOX_MAX_FLOWS: usize = 100_000;

/// What waits for the aggregator: batches of flows and of completeness reports,
/// each with the time it was written at (added flows first, then reports, each in
/// the order they were put here).
#[derive(Default)]
struct Inbox {
    flows: Vec<(SystemTime, Vec<AttributedFlow>)>,
    flow_count: usize,
    reports: Vec<(SystemTime, Vec<WindowReport>)>,
    /// Flows not aggregated because the inbox was full.
    dropped: u64,
}

/// The dependency graph shared by its writers and its readers.
pub(crate) struct SharedGraph {
    /// [`GraphConfig::enabled`]: when off, nothing is aggregated.
    enabled: bool,
    aggregator: Mutex<GraphAggregator>,
    inbox: Mutex<Inbox>,
    /// The counters as last read, answered while a query holds the aggregator.
    last_stats: Mutex<GraphStats>,
}

impl SharedGraph {
    /// An empty graph configured by `config`.
    pub(crate) fn new(config: GraphConfig) -> SharedGraph {
        SharedGraph {
            enabled: config.enabled,
            aggregator: Mutex::new(GraphAggregator::new(config)),
            inbox: Mutex::new(Inbox::default()),
            last_stats: Mutex::new(GraphStats::default()),
        }
    }

    /// Aggregates `flows` (taken by the output) at `now`: at once when no query
    /// holds the aggregator, else after it (never waiting for it).
    pub(crate) fn add_flows(&self, flows: Vec<AttributedFlow>, now: SystemTime) {
        if flows.is_empty() || !self.enabled {
            return;
        }
        match self.try_aggregator() {
            Some(mut aggregator) => {
                self.catch_up(&mut aggregator);
                aggregator.add_flows(&flows, now);
            }
            None => {
                let mut inbox = self.inbox();
                if inbox.flow_count + flows.len() > INBOX_MAX_FLOWS {
                    inbox.dropped += flows.len() as u64;
                } else {
                    inbox.flow_count += flows.len();
                    inbox.flows.push((now, flows));
                }
            }
        }
    }

    /// Aggregates window completeness reports at `now`, like
    /// [`add_flows`](SharedGraph::add_flows) (reports are few: never dropped).
    pub(crate) fn add_reports(&self, reports: &[WindowReport], now: SystemTime) {
        if reports.is_empty() || !self.enabled {
            return;
        }
        match self.try_aggregator() {
            Some(mut aggregator) => {
                self.catch_up(&mut aggregator);
                aggregator.add_reports(reports, now);
            }
            None => self.inbox().reports.push((now, reports.to_vec())),
        }
    }

    /// Answers `query` at `now`, after aggregating what waited.
    pub(crate) fn query(&self, query: &GraphQuery, now: SystemTime) -> GraphResponse {
        let mut aggregator = self.aggregator.lock().unwrap_or_else(|p| p.into_inner());
        self.catch_up(&mut aggregator);
        aggregator.advance(now);
        aggregator.query(query)
    }

    /// Its counters and sizes: as last read while a query (or a writer) holds the
    /// aggregator, never waiting for it.
    pub(crate) fn stats(&self) -> GraphStats {
        let mut stats = match self.try_aggregator() {
            Some(mut aggregator) => {
                self.catch_up(&mut aggregator);
                let stats = aggregator.stats();
                *self.last_stats.lock().unwrap_or_else(|p| p.into_inner()) = stats;
                stats
            }
            None => *self.last_stats.lock().unwrap_or_else(|p| p.into_inner()),
        };
        stats.flows_dropped_busy = self.inbox().dropped;
        stats
    }

    /// The aggregator, if nobody holds it.
    fn try_aggregator(&self) -> Option<MutexGuard<'_, GraphAggregator>> {
        match self.aggregator.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds what waited in the inbox to `aggregator` (held by the caller): its flows
    /// in the order they were put there, then its reports.
    fn catch_up(&self, aggregator: &mut GraphAggregator) {
        let (flows, reports) = {
            let mut inbox = self.inbox();
            if inbox.flows.is_empty() && inbox.reports.is_empty() {
                return;
            }
            inbox.flow_count = 0;
            (mem::take(&mut inbox.flows), mem::take(&mut inbox.reports))
        };
        for (at, batch) in flows {
            aggregator.add_flows(&batch, at);
        }
        for (at, batch) in reports {
            aggregator.add_reports(&batch, at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        attribution::RemoteIdentitySource,
        graph::tests::{Flow, at},
    };

    fn flows(n: usize, t: SystemTime) -> Vec<AttributedFlow> {
        (0..n)
            .map(|i| {
                Flow::out("10.0.0.1:40000", "10.0.0.2:443", t)
                    .names("a", "b", RemoteIdentitySource::Heartbeat)
                    .build("host-a", u32::try_from(i).expect("index"))
            })
            .collect()
    }

    #[test]
    fn flows_written_while_a_query_holds_the_aggregator_wait_and_count_after_it() {
        let graph = SharedGraph::new(GraphConfig::default());
        let t = at(30);
        graph.add_flows(flows(2, t), t);
        {
            // A query in progress.
            let _held = graph.aggregator.lock().expect("lock");
            graph.add_flows(flows(3, t), t);
            assert_eq!(graph.inbox().flow_count, 3);
        }
        let answer = graph.query(&GraphQuery::new(at(0), at(120), None), at(60));
        assert_eq!(answer.flows, 5);
        assert_eq!(answer.edges.len(), 1);
        assert_eq!(answer.edges[0].connections, 5);
        assert_eq!(graph.inbox().flow_count, 0);
        assert_eq!(graph.stats().flows_dropped_busy, 0);
    }

    #[test]
    fn a_full_inbox_drops_and_counts_instead_of_waiting() {
        let graph = SharedGraph::new(GraphConfig::default());
        let t = at(30);
        {
            let _held = graph.aggregator.lock().expect("lock");
            graph.add_flows(flows(INBOX_MAX_FLOWS - 1, t), t);
            graph.add_flows(flows(2, t), t);
            graph.add_flows(flows(1, t), t);
            assert_eq!(graph.inbox().flow_count, INBOX_MAX_FLOWS);
        }
        assert_eq!(graph.stats().flows_dropped_busy, 2);
        let answer = graph.query(&GraphQuery::new(at(0), at(120), None), at(60));
        assert_eq!(answer.flows, INBOX_MAX_FLOWS as u64);
    }
}
