//! The set of stored batch IDs: per `(host, instance)`, the stored sequences as
//! disjoint ranges, and when the run last stored a chunk.
//!
//! A run's sequences are stored nearly in order, so a run costs one range plus one
//! per permanent gap (a chunk its spool dropped, a chunk refused for good). Runs that
//! stored nothing for [`FORGET_RUNS_AFTER`] are forgotten (counted): an exporter
//! retries a chunk long before that, or has dropped it.

use std::collections::{BTreeMap, HashMap};

use flow_batch::wire::{BatchId, InstanceId};
use serde::{Deserialize, Serialize};

/// How long a run that stores nothing is remembered: 7 days.
pub(crate) const FORGET_RUNS_AFTER: u64 = 7 * 86_400;

/// The sequences stored for one exporter run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Seen {
    /// Stored sequences: disjoint, non-adjacent inclusive ranges, first -> last.
    ranges: BTreeMap<u64, u64>,
    /// When the run last stored a chunk, seconds since the epoch.
    last_stored: u64,
}

impl Seen {
    fn contains(&self, sequence: u64) -> bool {
        self.ranges
            .range(..=sequence)
            .next_back()
            .is_some_and(|(_, &last)| sequence <= last)
    }

    fn insert(&mut self, sequence: u64) {
        self.insert_range(sequence, sequence);
    }

    /// Adds `first..=last`, joining the ranges it overlaps or touches.
    fn insert_range(&mut self, first: u64, last: u64) {
        let (mut first, mut last) = (first, last.max(first));
        // A range starting before `first` that reaches it (or touches it).
        if let Some((&s, &l)) = self.ranges.range(..first).next_back()
            && l.saturating_add(1) >= first
        {
            first = s;
            last = last.max(l);
            self.ranges.remove(&s);
        }
        // Ranges starting inside `first..=last + 1`.
        loop {
            let next = self
                .ranges
                .range(first..)
                .next()
                .map(|(&s, &l)| (s, l))
                .filter(|&(s, _)| s <= last.saturating_add(1));
            let Some((s, l)) = next else { break };
            last = last.max(l);
            self.ranges.remove(&s);
        }
        self.ranges.insert(first, last);
    }

    fn merge(&mut self, other: &Seen) {
        for (&first, &last) in &other.ranges {
            self.insert_range(first, last);
        }
        self.last_stored = self.last_stored.max(other.last_stored);
    }

    /// Ranges kept (one, plus one per gap).
    #[cfg(test)]
    fn ranges(&self) -> usize {
        self.ranges.len()
    }
}

/// One exporter run's entry in a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotEntry {
    host: String,
    instance: u128,
    seen: Seen,
}

/// The stored batch IDs.
#[derive(Debug, Default)]
pub(crate) struct Dedup {
    runs: HashMap<String, HashMap<InstanceId, Seen>>,
}

impl Dedup {
    /// Whether `batch` is stored.
    pub(crate) fn contains(&self, batch: &BatchId) -> bool {
        self.runs
            .get(&batch.host)
            .and_then(|runs| runs.get(&batch.instance))
            .is_some_and(|seen| seen.contains(batch.sequence))
    }

    /// Notes `batch` as stored, at `stored_at` (seconds since the epoch).
    pub(crate) fn insert(&mut self, batch: &BatchId, stored_at: u64) {
        let runs = match self.runs.get_mut(&batch.host) {
            Some(runs) => runs,
            None => self.runs.entry(batch.host.clone()).or_default(),
        };
        let seen = runs.entry(batch.instance).or_default();
        seen.insert(batch.sequence);
        seen.last_stored = seen.last_stored.max(stored_at);
    }

    /// Forgets the runs that stored nothing since `cutoff` (seconds since the epoch);
    /// returns how many.
    pub(crate) fn forget_idle(&mut self, cutoff: u64) -> usize {
        let mut forgotten = 0;
        self.runs.retain(|_, runs| {
            let before = runs.len();
            runs.retain(|_, seen| seen.last_stored >= cutoff);
            forgotten += before - runs.len();
            !runs.is_empty()
        });
        forgotten
    }

    /// Hosts with at least one stored batch ID.
    pub(crate) fn hosts(&self) -> usize {
        self.runs.len()
    }

    /// Exporter runs with at least one stored batch ID.
    pub(crate) fn runs(&self) -> usize {
        self.runs.values().map(HashMap::len).sum()
    }

    /// Everything, for a checkpoint.
    pub(crate) fn snapshot(&self) -> Vec<SnapshotEntry> {
        let mut out = Vec::with_capacity(self.runs());
        for (host, runs) in &self.runs {
            for (instance, seen) in runs {
                out.push(SnapshotEntry {
                    host: host.clone(),
                    instance: instance.as_u128(),
                    seen: seen.clone(),
                });
            }
        }
        out
    }

    /// Adds a checkpoint's snapshot.
    pub(crate) fn restore(&mut self, snapshot: &[SnapshotEntry]) {
        for e in snapshot {
            self.runs
                .entry(e.host.clone())
                .or_default()
                .entry(InstanceId::new(e.instance))
                .or_default()
                .merge(&e.seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(host: &str, instance: u128, sequence: u64) -> BatchId {
        BatchId {
            host: host.into(),
            instance: InstanceId::new(instance),
            sequence,
        }
    }

    #[test]
    fn gaps_runs_and_snapshots() {
        let mut d = Dedup::default();
        for q in [0, 1, 3, 5] {
            d.insert(&id("a", 1, q), 100);
        }
        d.insert(&id("b", 2, 9), 100);
        assert!(d.contains(&id("a", 1, 1)) && d.contains(&id("a", 1, 5)));
        assert!(!d.contains(&id("a", 1, 2)) && !d.contains(&id("a", 2, 0)));
        assert!(d.contains(&id("b", 2, 9)) && !d.contains(&id("b", 2, 8)));
        assert_eq!((d.hosts(), d.runs()), (2, 2));
        let mut back = Dedup::default();
        back.insert(&id("a", 1, 2), 50);
        back.restore(&d.snapshot());
        for q in [0, 1, 2, 3, 5] {
            assert!(back.contains(&id("a", 1, q)), "{q}");
        }
        assert!(!back.contains(&id("a", 1, 4)) && !back.contains(&id("a", 1, 6)));
        let seen = &back.runs["a"][&InstanceId::new(1)];
        assert_eq!((seen.ranges(), seen.last_stored), (2, 100));
    }

    #[test]
    fn a_permanent_gap_costs_one_range_not_every_later_sequence() {
        let mut d = Dedup::default();
        for q in (0..10_000u64).filter(|q| *q != 17) {
            d.insert(&id("a", 1, q), 1);
        }
        assert!(!d.contains(&id("a", 1, 17)) && d.contains(&id("a", 1, 9_999)));
        assert_eq!(d.runs["a"][&InstanceId::new(1)].ranges(), 2);
        // Out of order and overlapping merges join up.
        let mut s = Seen::default();
        for (a, b) in [
            (10, 20),
            (30, 40),
            (21, 29),
            (5, 9),
            (0, 2),
            (41, 41),
            (3, 3),
        ] {
            s.insert_range(a, b);
        }
        assert_eq!(
            s.ranges.iter().map(|(a, b)| (*a, *b)).collect::<Vec<_>>(),
            vec![(0, 3), (5, 41)]
        );
        s.insert_range(4, 4);
        assert_eq!(s.ranges(), 1);
    }

    #[test]
    fn idle_runs_are_forgotten() {
        let mut d = Dedup::default();
        d.insert(&id("a", 1, 0), 100);
        d.insert(&id("a", 2, 0), 200);
        d.insert(&id("b", 3, 0), 50);
        assert_eq!(d.forget_idle(150), 2);
        assert_eq!((d.hosts(), d.runs()), (1, 1));
        assert!(d.contains(&id("a", 2, 0)) && !d.contains(&id("a", 1, 0)));
    }

    #[test]
    fn never_overflows_at_the_last_sequence() {
        let mut d = Dedup::default();
        d.insert(&id("a", 1, u64::MAX), 0);
        d.insert(&id("a", 1, u64::MAX - 1), 0);
        assert!(d.contains(&id("a", 1, u64::MAX)) && !d.contains(&id("a", 1, 0)));
        assert_eq!(d.runs["a"][&InstanceId::new(1)].ranges(), 1);
    }
}
