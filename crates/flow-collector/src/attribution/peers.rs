//! The peer index: recent records with a local workload, by connection 4-tuple, so
//! that the two records of one connection (the 4-tuple reversed, overlapping in
//! time) name each other's workload exactly, even on a shared IPv4.
//!
//! Entries leave in arrival order, a fixed time after they arrived (the hold-back
//! plus the tolerance), or earlier when the index holds more than its cap.

use std::collections::{VecDeque, hash_map::Entry};

use flow_record::{FlowRecord, WorkloadId};

use crate::attribution::{
    FastMap,
    ip_key::{HostId, IpKey},
    time::Nanos,
};

/// A connection as one end sees it: (local IP, local port, remote IP, remote port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PeerKey {
    pub(crate) local: IpKey,
    pub(crate) remote: IpKey,
    pub(crate) local_port: u16,
    pub(crate) remote_port: u16,
}

impl PeerKey {
    /// The key of `record`, reported by `host`.
    pub(crate) fn of(record: &FlowRecord, host: HostId) -> PeerKey {
        PeerKey {
            local: IpKey::new(record.local.ip(), host),
            remote: IpKey::new(record.remote.ip(), host),
            local_port: record.local.port(),
            remote_port: record.remote.port(),
        }
    }

    /// The same connection seen from the other end.
    pub(crate) fn reversed(&self) -> PeerKey {
        PeerKey {
            local: self.remote,
            remote: self.local,
            local_port: self.remote_port,
            remote_port: self.local_port,
        }
    }
}

/// One record in the index.
#[derive(Clone, Debug)]
struct PeerEntry {
    start: Nanos,
    end: Nanos,
    seq: u64,
    workload: WorkloadId,
}

/// The records of one 4-tuple: nearly always one.
#[derive(Clone, Debug)]
enum Slot {
    One(PeerEntry),
    Many(Vec<PeerEntry>),
}

impl Slot {
    fn entries(&self) -> &[PeerEntry] {
        match self {
            Slot::One(e) => std::slice::from_ref(e),
            Slot::Many(v) => v,
        }
    }
}

/// What the index says about a flow's peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PeerAnswer {
    /// No record of the other end overlaps the flow.
    Unknown,
    /// Every overlapping record of the other end names this workload.
    Workload(WorkloadId),
    /// Overlapping records of the other end name different workloads.
    Disagree,
}

/// Recent records by 4-tuple.
#[derive(Debug)]
pub(crate) struct PeerIndex {
    map: FastMap<PeerKey, Slot>,
    /// (leaves at, seq, key), in arrival order.
    fifo: VecDeque<(Nanos, u64, PeerKey)>,
    next_seq: u64,
    cap: usize,
}

impl PeerIndex {
    /// An empty index of at most `cap` records.
    pub(crate) fn new(cap: usize) -> PeerIndex {
        PeerIndex {
            map: FastMap::default(),
            fifo: VecDeque::new(),
            next_seq: 0,
            cap: cap.max(1),
        }
    }

    /// Indexes a record of `workload` over `[start, end]` under `key`, until
    /// `leaves_at`.
    pub(crate) fn insert(
        &mut self,
        key: PeerKey,
        start: Nanos,
        end: Nanos,
        workload: &WorkloadId,
        leaves_at: Nanos,
    ) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let entry = PeerEntry {
            start,
            end,
            seq,
            workload: workload.clone(),
        };
        match self.map.entry(key) {
            Entry::Vacant(v) => {
                v.insert(Slot::One(entry));
            }
            Entry::Occupied(mut o) => {
                let slot = o.get_mut();
                match slot {
                    Slot::Many(v) => v.push(entry),
                    Slot::One(first) => {
                        let first = first.clone();
                        *slot = Slot::Many(vec![first, entry]);
                    }
                }
            }
        }
        self.fifo.push_back((leaves_at, seq, key));
        while self.fifo.len() > self.cap {
            self.pop_oldest();
        }
    }

    /// Removes the records whose time is up at `now`.
    pub(crate) fn expire(&mut self, now: Nanos) {
        while self.fifo.front().is_some_and(|(at, _, _)| *at <= now) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        let Some((_, seq, key)) = self.fifo.pop_front() else {
            return;
        };
        // One probe of the table: the entry is removed through its handle.
        let Entry::Occupied(mut occupied) = self.map.entry(key) else {
            return;
        };
        match occupied.get_mut() {
            Slot::One(_) => {
                occupied.remove();
            }
            Slot::Many(v) => {
                v.retain(|e| e.seq != seq);
                match v.len() {
                    0 => {
                        occupied.remove();
                    }
                    1 => {
                        if let Some(last) = v.pop() {
                            *occupied.get_mut() = Slot::One(last);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// The peer of a flow whose own key is `flow` and which covers `[lo, hi]` (its
    /// interval widened by the tolerance).
    pub(crate) fn lookup(&self, flow: &PeerKey, lo: Nanos, hi: Nanos) -> PeerAnswer {
        let Some(slot) = self.map.get(&flow.reversed()) else {
            return PeerAnswer::Unknown;
        };
        let mut found: Option<&WorkloadId> = None;
        for e in slot.entries() {
            if e.start <= hi && e.end >= lo {
                match found {
                    Some(w) if w != &e.workload => return PeerAnswer::Disagree,
                    _ => found = Some(&e.workload),
                }
            }
        }
        found.map_or(PeerAnswer::Unknown, |w| PeerAnswer::Workload(w.clone()))
    }

    /// When the oldest record leaves.
    pub(crate) fn next_expiry(&self) -> Option<Nanos> {
        self.fifo.front().map(|(at, _, _)| *at)
    }

    /// Records in the index.
    pub(crate) fn len(&self) -> usize {
        self.fifo.len()
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::attribution::ip_key::Hosts;

    fn key(local: &str, lport: u16, remote: &str, rport: u16) -> PeerKey {
        let mut hosts = Hosts::default();
        let h = hosts.intern("h");
        let ip = |s: &str| IpKey::new(s.parse::<IpAddr>().expect("test IP"), h);
        PeerKey {
            local: ip(local),
            remote: ip(remote),
            local_port: lport,
            remote_port: rport,
        }
    }

    fn id(s: &str) -> WorkloadId {
        WorkloadId::new(s).expect("test ID")
    }

    #[test]
    fn finds_the_reversed_tuple_overlapping_in_time() {
        let mut index = PeerIndex::new(100);
        let server = key("10.0.0.1", 443, "10.0.0.2", 5000);
        let client = key("10.0.0.2", 5000, "10.0.0.1", 443);
        index.insert(server, 100, 200, &id("srv"), 1_000);
        assert_eq!(
            index.lookup(&client, 150, 160),
            PeerAnswer::Workload(id("srv"))
        );
        // Touching counts; no overlap does not.
        assert_eq!(
            index.lookup(&client, 200, 300),
            PeerAnswer::Workload(id("srv"))
        );
        assert_eq!(index.lookup(&client, 201, 300), PeerAnswer::Unknown);
        assert_eq!(index.lookup(&client, 0, 99), PeerAnswer::Unknown);
        // Another port, or the same direction, is not the peer.
        assert_eq!(
            index.lookup(&key("10.0.0.2", 5001, "10.0.0.1", 443), 150, 160),
            PeerAnswer::Unknown
        );
        assert_eq!(index.lookup(&server, 150, 160), PeerAnswer::Unknown);
        // A second record naming another workload: no evidence.
        index.insert(server, 150, 250, &id("other"), 1_001);
        assert_eq!(index.lookup(&client, 150, 160), PeerAnswer::Disagree);
        assert_eq!(
            index.lookup(&client, 210, 220),
            PeerAnswer::Workload(id("other"))
        );
        assert_eq!(index.len(), 2);
        index.expire(1_000);
        assert_eq!(index.len(), 1);
        assert_eq!(
            index.lookup(&client, 150, 160),
            PeerAnswer::Workload(id("other"))
        );
        assert_eq!(index.next_expiry(), Some(1_001));
        index.expire(1_001);
        assert_eq!(index.lookup(&client, 150, 160), PeerAnswer::Unknown);
        assert_eq!((index.len(), index.map.len()), (0, 0));
    }

    #[test]
    fn cap_drops_the_oldest() {
        let mut index = PeerIndex::new(2);
        for port in 1..=3 {
            index.insert(key("10.0.0.1", port, "10.0.0.2", 9), 0, 10, &id("a"), 100);
        }
        assert_eq!(index.len(), 2);
        assert_eq!(
            index.lookup(&key("10.0.0.2", 9, "10.0.0.1", 1), 0, 10),
            PeerAnswer::Unknown
        );
        assert_eq!(
            index.lookup(&key("10.0.0.2", 9, "10.0.0.1", 3), 0, 10),
            PeerAnswer::Workload(id("a"))
        );
    }
}
