//! Interim records carry cumulative counters: what one record adds is its counters
//! less the largest seen of the same connection before (`docs/long-lived-connections.md`,
//! "Summing a connection's traffic per window without double counting").

use std::{
    hash::BuildHasher,
    time::{Duration, SystemTime},
};

use flow_record::{FlowId, FlowRecord, RecordKind};

use crate::attribution::FastMap;

/// A connection not heard of for this long (by its records' `t_end`) is forgotten:
/// longer than any exporter window in use (interim records come every window).
pub(crate) const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

/// What one record adds: its counters less what earlier records of its connection
/// already counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Delta {
    /// Bytes the record's host sent.
    pub(crate) sent: u64,
    /// Bytes it received.
    pub(crate) received: u64,
    /// Segments it retransmitted.
    pub(crate) retransmits: u64,
}

/// The largest counters seen of one connection.
#[derive(Clone, Copy, Debug)]
struct Seen {
    max: Delta,
    /// The latest `t_end` of its records.
    last: SystemTime,
    /// Its final record was seen.
    closed: bool,
}

/// The connections seen in interim records, by (host, `flow_id`).
#[derive(Debug)]
pub(crate) struct Cumulative {
    seen: FastMap<(u64, FlowId), Seen>,
    cap: usize,
    /// Interim records of connections not tracked because the table was full: their
    /// counters were taken whole.
    pub(crate) untracked: u64,
}

fn host_hash(host: &str) -> u64 {
    foldhash::fast::FixedState::default().hash_one(host)
}

fn counters(r: &FlowRecord) -> Delta {
    Delta {
        sent: r.stats.bytes_sent,
        received: r.stats.bytes_received,
        retransmits: u64::from(r.stats.retransmits),
    }
}

impl Cumulative {
    /// A table of at most `cap` connections.
    pub(crate) fn new(cap: usize) -> Cumulative {
        Cumulative {
            seen: FastMap::default(),
            cap: cap.max(1),
            untracked: 0,
        }
    }

    /// Connections tracked.
    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }

    /// What `r` (sent by `host`) adds. A final record of a connection never seen in
    /// an interim record adds its counters whole and is not remembered; the first
    /// interim record of a connection adds its counters whole (its traffic before the
    /// exporter started included when `t_start` is null); every later record adds
    /// the growth of each counter over the largest value seen before (never less
    /// than zero).
    pub(crate) fn delta(&mut self, host: &str, r: &FlowRecord, now: SystemTime) -> Delta {
        let whole = counters(r);
        let Some(flow_id) = r.flow_id else {
            return whole;
        };
        let key = (host_hash(host), flow_id);
        let interim = r.record_kind == RecordKind::Interim;
        if !interim && !self.seen.contains_key(&key) {
            return whole;
        }
        if !self.seen.contains_key(&key) && self.seen.len() >= self.cap {
            self.prune(
                now.checked_sub(FORGET_AFTER)
                    .unwrap_or(SystemTime::UNIX_EPOCH),
            );
            if self.seen.len() >= self.cap {
                self.untracked += 1;
                return whole;
            }
        }
        let seen = self.seen.entry(key).or_insert(Seen {
            max: Delta::default(),
            last: r.t_end,
            closed: false,
        });
        let delta = Delta {
            sent: whole.sent.saturating_sub(seen.max.sent),
            received: whole.received.saturating_sub(seen.max.received),
            retransmits: whole.retransmits.saturating_sub(seen.max.retransmits),
        };
        seen.max.sent = seen.max.sent.max(whole.sent);
        seen.max.received = seen.max.received.max(whole.received);
        seen.max.retransmits = seen.max.retransmits.max(whole.retransmits);
        seen.last = seen.last.max(r.t_end);
        seen.closed |= !interim;
        delta
    }

    /// Forgets connections closed, or not heard of, before `cutoff`; when the table is
    /// full, every closed connection too.
    pub(crate) fn prune(&mut self, cutoff: SystemTime) {
        let full = self.seen.len() >= self.cap;
        self.seen
            .retain(|_, s| s.last >= cutoff && !(full && s.closed));
    }
}
