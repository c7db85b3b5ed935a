//! The set of stored batch IDs: per `(host, instance)`, the highest contiguous
//! sequence and the stored sequences above it.

use std::collections::{BTreeSet, HashMap};

use flow_batch::wire::{BatchId, InstanceId};
use serde::{Deserialize, Serialize};

/// The sequences stored for one exporter run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Seen {
    /// Every sequence below this is stored.
    contiguous: u64,
    /// Stored sequences at or above `contiguous`.
    above: BTreeSet<u64>,
}

impl Seen {
    fn contains(&self, sequence: u64) -> bool {
        sequence < self.contiguous || self.above.contains(&sequence)
    }

    fn insert(&mut self, sequence: u64) {
        if sequence < self.contiguous {
            return;
        }
        self.above.insert(sequence);
        // u64::MAX itself stays in `above`: `contiguous` cannot pass it.
        while self.contiguous < u64::MAX && self.above.remove(&self.contiguous) {
            self.contiguous += 1;
        }
    }

    fn merge(&mut self, other: &Seen) {
        if other.contiguous > self.contiguous {
            self.contiguous = other.contiguous;
            self.above = self.above.split_off(&other.contiguous);
        }
        for q in &other.above {
            self.insert(*q);
        }
        // Sequences of `self.above` that `other.contiguous` made contiguous.
        while self.contiguous < u64::MAX && self.above.remove(&self.contiguous) {
            self.contiguous += 1;
        }
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

    /// Notes `batch` as stored.
    pub(crate) fn insert(&mut self, batch: &BatchId) {
        let runs = match self.runs.get_mut(&batch.host) {
            Some(runs) => runs,
            None => self.runs.entry(batch.host.clone()).or_default(),
        };
        runs.entry(batch.instance)
            .or_default()
            .insert(batch.sequence);
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
            d.insert(&id("a", 1, q));
        }
        d.insert(&id("b", 2, 9));
        assert!(d.contains(&id("a", 1, 1)) && d.contains(&id("a", 1, 5)));
        assert!(!d.contains(&id("a", 1, 2)) && !d.contains(&id("a", 2, 0)));
        assert!(d.contains(&id("b", 2, 9)) && !d.contains(&id("b", 2, 8)));
        assert_eq!((d.hosts(), d.runs()), (2, 2));
        let mut back = Dedup::default();
        back.insert(&id("a", 1, 2));
        back.restore(&d.snapshot());
        for q in [0, 1, 2, 3, 5] {
            assert!(back.contains(&id("a", 1, q)), "{q}");
        }
        assert!(!back.contains(&id("a", 1, 4)) && !back.contains(&id("a", 1, 6)));
        let seen = &back.runs["a"][&InstanceId::new(1)];
        assert_eq!((seen.contiguous, seen.above.len()), (4, 1));
    }

    #[test]
    fn never_overflows_at_the_last_sequence() {
        let mut d = Dedup::default();
        d.insert(&id("a", 1, u64::MAX));
        assert!(d.contains(&id("a", 1, u64::MAX)) && !d.contains(&id("a", 1, 0)));
    }
}
