//! Workload IDs interned to 4-byte symbols, so that a range of the ownership map
//! stays small; symbols no range uses any more are collected now and then.

use flow_record::WorkloadId;

use crate::attribution::FastMap;

/// An interned workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Sym(pub(crate) u32);

/// Symbols handed out, and the IDs they stand for.
#[derive(Debug, Default)]
pub(crate) struct Workloads {
    names: Vec<Option<WorkloadId>>,
    index: FastMap<WorkloadId, Sym>,
    free: Vec<u32>,
    /// The last ID interned: records of one workload come in runs, and comparing the
    /// text (often the same allocation) is cheaper than hashing it.
    last: Option<(WorkloadId, Sym)>,
    /// Live symbols after the last collection.
    live_after_collect: usize,
}

impl Workloads {
    /// The symbol of `id`, interned on first sight; `None` when every symbol is taken.
    pub(crate) fn intern(&mut self, id: &WorkloadId) -> Option<Sym> {
        if let Some((last, sym)) = &self.last
            && last.as_str() == id.as_str()
        {
            return Some(*sym);
        }
        let sym = match self.index.get(id) {
            Some(sym) => *sym,
            None => {
                let sym = match self.free.pop() {
                    Some(n) => {
                        self.names[n as usize] = Some(id.clone());
                        Sym(n)
                    }
                    None => {
                        let n = u32::try_from(self.names.len()).ok()?;
                        self.names.push(Some(id.clone()));
                        Sym(n)
                    }
                };
                self.index.insert(id.clone(), sym);
                sym
            }
        };
        self.last = Some((id.clone(), sym));
        Some(sym)
    }

    /// The ID of `sym`.
    pub(crate) fn name(&self, sym: Sym) -> Option<&WorkloadId> {
        self.names.get(sym.0 as usize).and_then(Option::as_ref)
    }

    /// Symbols in use.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether enough symbols were created since the last collection to make one
    /// worth its scan of the map.
    pub(crate) fn wants_collection(&self) -> bool {
        self.len() > 2 * self.live_after_collect + 1024
    }

    /// Frees every symbol not marked in `used` (indexed by symbol).
    pub(crate) fn collect(&mut self, used: &[bool]) {
        self.last = None;
        for (n, slot) in self.names.iter_mut().enumerate() {
            if slot.is_some() && !used.get(n).copied().unwrap_or(false) {
                if let Some(id) = slot.take() {
                    self.index.remove(&id);
                }
                self.free.push(n as u32);
            }
        }
        self.live_after_collect = self.len();
    }

    /// Symbols ever allocated (the size a marking array needs).
    pub(crate) fn capacity(&self) -> usize {
        self.names.len()
    }

    /// Estimated bytes: the tables and the text of each ID.
    pub(crate) fn bytes(&self) -> usize {
        use std::mem::size_of;
        let text: usize = self
            .index
            .keys()
            // An Arc<str>: two counters and the text.
            .map(|id| 16 + id.as_str().len())
            .sum();
        self.names.capacity() * size_of::<Option<WorkloadId>>()
            + self.free.capacity() * size_of::<u32>()
            + self.index.capacity() * (size_of::<(WorkloadId, Sym)>() + 1)
            + text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> WorkloadId {
        WorkloadId::new(s).expect("test ID")
    }

    #[test]
    fn interns_and_collects() {
        let mut w = Workloads::default();
        let a = w.intern(&id("a")).expect("sym");
        let b = w.intern(&id("b")).expect("sym");
        assert_ne!(a, b);
        assert_eq!(w.intern(&id("a")), Some(a));
        assert_eq!(w.intern(&id("b")), Some(b));
        assert_eq!(w.name(a).map(WorkloadId::as_str), Some("a"));
        let mut used = vec![false; w.capacity()];
        used[b.0 as usize] = true;
        w.collect(&used);
        assert_eq!(w.len(), 1);
        assert_eq!(w.name(a), None);
        assert_eq!(w.name(b).map(WorkloadId::as_str), Some("b"));
        // The freed symbol is reused, for another ID.
        let c = w.intern(&id("c")).expect("sym");
        assert_eq!(c, a);
        assert_eq!(w.name(c).map(WorkloadId::as_str), Some("c"));
        assert_eq!(w.intern(&id("b")), Some(b));
        assert!(w.bytes() > 0);
    }
}
