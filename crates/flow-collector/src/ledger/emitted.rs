//! Which flows of a stored chunk have been written to the output.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Which flows of a recovered chunk the output holds, as of the last checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Emitted {
    /// None of them (or nothing is known: the chunk came after the checkpoint).
    #[default]
    None,
    /// All of them.
    All,
    /// These record indexes (never empty).
    Some(BTreeSet<u32>),
}

impl Emitted {
    /// Whether the flow at `record_index` was emitted.
    pub fn contains(&self, record_index: u32) -> bool {
        match self {
            Emitted::None => false,
            Emitted::All => true,
            Emitted::Some(set) => set.contains(&record_index),
        }
    }

    /// This set with `more` record indexes (flows the output reports written since
    /// its checkpointed position).
    pub fn with(self, more: impl IntoIterator<Item = u32>) -> Emitted {
        match self {
            Emitted::All => Emitted::All,
            Emitted::None => {
                let set: BTreeSet<u32> = more.into_iter().collect();
                if set.is_empty() {
                    Emitted::None
                } else {
                    Emitted::Some(set)
                }
            }
            Emitted::Some(mut set) => {
                set.extend(more);
                Emitted::Some(set)
            }
        }
    }
}

/// A chunk in the log with flows not yet emitted (in memory: a bit per record).
#[derive(Clone, Debug)]
pub(crate) struct Pending {
    /// Where its entry is.
    pub(crate) position: LogPosition,
    /// Records in the chunk.
    pub(crate) record_count: u32,
    /// One bit per record, set when emitted.
    bits: Vec<u64>,
    /// Bits set.
    emitted: u32,
}

impl Pending {
    /// A chunk none of whose flows has been emitted.
    pub(crate) fn new(position: LogPosition, record_count: u32) -> Pending {
        Pending {
            position,
            record_count,
            bits: vec![0; (record_count as usize).div_ceil(64)],
            emitted: 0,
        }
    }

    /// Notes one flow emitted (an index out of range is ignored).
    pub(crate) fn mark(&mut self, index: u32) {
        if index >= self.record_count {
            return;
        }
        let (word, bit) = ((index / 64) as usize, 1u64 << (index % 64));
        if let Some(w) = self.bits.get_mut(word)
            && *w & bit == 0
        {
            *w |= bit;
            self.emitted += 1;
        }
    }

    /// Whether every flow below index `n` has been emitted.
    pub(crate) fn emitted_below(&self, n: u32) -> bool {
        (0..n.min(self.record_count)).all(|i| {
            self.bits
                .get((i / 64) as usize)
                .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
        })
    }

    /// Whether every flow has been emitted.
    pub(crate) fn is_complete(&self) -> bool {
        self.emitted >= self.record_count
    }

    /// The emitted set as a public value.
    pub(crate) fn to_emitted(&self) -> Emitted {
        if self.emitted == 0 {
            Emitted::None
        } else if self.is_complete() {
            Emitted::All
        } else {
            Emitted::Some(self.indexes().collect())
        }
    }

    fn indexes(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.record_count).filter(|i| {
            self.bits
                .get((i / 64) as usize)
                .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
        })
    }

    /// The emitted set as ranges `[start, end)`, for a checkpoint.
    pub(crate) fn ranges(&self) -> Vec<(u32, u32)> {
        let mut out: Vec<(u32, u32)> = Vec::new();
        for i in self.indexes() {
            match out.last_mut() {
                Some((_, end)) if *end == i => *end = i + 1,
                _ => out.push((i, i + 1)),
            }
        }
        out
    }

    /// A pending chunk from a checkpoint's ranges.
    pub(crate) fn from_ranges(
        position: LogPosition,
        record_count: u32,
        ranges: &[(u32, u32)],
    ) -> Pending {
        let mut p = Pending::new(position, record_count);
        for &(start, end) in ranges {
            for i in start..end.min(record_count) {
                p.mark(i);
            }
        }
        p
    }
}

/// A place in the log: a segment and a byte offset in it. Ordered by segment, then
/// offset.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogPosition {
    /// The segment's sequence number.
    pub segment: u64,
    /// Bytes from the segment's start.
    pub offset: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_ranges_and_sets() {
        let mut p = Pending::new(LogPosition::default(), 130);
        assert_eq!(p.to_emitted(), Emitted::None);
        for i in [0, 1, 2, 64, 129, 129, 500] {
            p.mark(i);
        }
        assert_eq!(p.ranges(), vec![(0, 3), (64, 65), (129, 130)]);
        let back = Pending::from_ranges(LogPosition::default(), 130, &p.ranges());
        assert_eq!(back.to_emitted(), p.to_emitted());
        assert!(p.to_emitted().contains(64) && !p.to_emitted().contains(63));
        for i in 0..130 {
            p.mark(i);
        }
        assert!(p.is_complete());
        assert_eq!(p.to_emitted(), Emitted::All);
        assert_eq!(Emitted::None.with([3]), Emitted::Some([3].into()));
        assert_eq!(Emitted::None.with([]), Emitted::None);
        assert_eq!(Emitted::All.with([3]), Emitted::All);
    }
}
