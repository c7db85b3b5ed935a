//! The peer index: recent records with a local workload, by connection, so that the
//! two records of one connection (the 4-tuple reversed, overlapping in time) name
//! each other's workload exactly, even on a shared IPv4.
//!
//! Both ends' records of a connection share one entry, under the connection's
//! unordered key (its two ends in a fixed order), and each record says which end
//! wrote it: indexing a record and finding its peer are one probe of the table (the
//! second, right after, finds the entry in the cache). Workloads are the ownership
//! map's interned symbols (4 bytes), which the map keeps alive while the index uses
//! them (see `OwnershipMap::collect_workloads`).
//!
//! The entry also holds the head of the list of held flows waiting for a peer record
//! of the connection (see `held`), so that indexing a record finds them in the same
//! probe; an entry stays while flows wait on it, even with no record left.
//!
//! Sizes (x86-64): a record ([`Rec`]) is 24 bytes, a connection's entry ([`Conn`])
//! 104 bytes (its 44-byte key, the waiting list's head, and up to two records inline;
//! more, after port reuse, spill to the heap), plus a control byte of the table; the departure queue costs 8 bytes a
//! record. So a connection whose two ends both export costs about 60 bytes a record,
//! where the previous index (one entry per direction, an `Arc` workload, a queue of
//! full keys) cost about 170.
//!
//! Entries leave in arrival order, a fixed time after they arrived (the hold-back
//! plus the tolerance), or earlier when the index holds more than its cap.
//!
//! A long connection sends several records from each end: an interim record at the
//! close of every batch window it is open at (`[t_start, snapshot]`), then its final
//! record. A record whose interval overlaps one already indexed for the same end of
//! the connection, naming the same workload, is merged into it (the union of the two
//! intervals, leaving when the newer record would): two records of one end of a
//! 4-tuple that overlap in time are records of one connection, since a 4-tuple is
//! open once at a time on a host. Every lookup answers as it would with both records
//! (an interval overlaps the union exactly when it overlaps one of them, and the
//! workload is the same), so a connection keeps one record per end, inline, however
//! many windows it spans. Records of one end naming different workloads are kept
//! apart, and a flow overlapping both has no peer evidence. The connection's
//! `flow_id` is not needed for this (and records of the other end carry the other
//! host's ID, so it cannot pair the two ends).

use std::{collections::VecDeque, hash::BuildHasher};

use flow_record::FlowRecord;
use hashbrown::{HashTable, hash_table::Entry};

use crate::attribution::{
    held::NIL,
    ip_key::{HostId, IpKey, words_eq},
    time::Nanos,
    workloads::Sym,
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
    #[inline]
    pub(crate) fn of(record: &FlowRecord, host: HostId) -> PeerKey {
        PeerKey {
            local: IpKey::new(record.local.ip(), host),
            remote: IpKey::new(record.remote.ip(), host),
            local_port: record.local.port(),
            remote_port: record.remote.port(),
        }
    }
}

/// A connection without a direction: its two ends (IP key and port), the lesser
/// first, in 11 words (44 bytes).
#[derive(Clone, Copy, Debug, Eq)]
struct ConnKey([u32; 11]);

impl std::hash::Hash for ConnKey {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl PartialEq for ConnKey {
    #[inline]
    fn eq(&self, other: &ConnKey) -> bool {
        words_eq(&self.0, &other.0)
    }
}

/// Which end of its connection wrote a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// The lesser end (its local end is the connection key's first).
    First,
    /// The greater end.
    Second,
    /// Both ends are one (a socket connected to itself): its own peer, as under the
    /// previous index, where the reversed 4-tuple was the same 4-tuple.
    Both,
}

impl Side {
    /// Whether a record of `side` is the peer of a flow of this side.
    pub(crate) fn is_peer_of(self, side: Side) -> bool {
        self != side || side == Side::Both
    }
}

/// A record's connection, ready to probe the index: the key, which end wrote it, and
/// the key's hash (computed once).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnRef {
    key: ConnKey,
    side: Side,
    hash: u64,
}

impl ConnRef {
    /// Which end of the connection the record is.
    pub(crate) fn side(&self) -> Side {
        self.side
    }
}

/// One record in the index. 24 bytes.
#[derive(Clone, Copy, Debug)]
struct Rec {
    start: Nanos,
    end: Nanos,
    /// The record's sequence number (its low 31 bits; unique among the records in the
    /// index, which are fewer than 2^31), shifted left, and 1 when the greater end
    /// wrote it.
    tag: u32,
    workload: Sym,
}

impl Rec {
    fn seq_bits(&self) -> u32 {
        self.tag >> 1
    }

    /// Whether it is the peer of a record of `side`: written by the other end.
    fn peer_of(&self, side: Side) -> bool {
        let greater = self.tag & 1 == 1;
        match side {
            Side::First => greater,
            Side::Second => !greater,
            Side::Both => true,
        }
    }
}

/// The records of one connection, oldest first: nearly always one or two.
#[derive(Clone, Debug)]
enum Recs {
    One(Rec),
    Two([Rec; 2]),
    Many(Vec<Rec>),
}

impl Recs {
    fn as_slice(&self) -> &[Rec] {
        match self {
            Recs::One(r) => std::slice::from_ref(r),
            Recs::Two(rs) => rs,
            Recs::Many(v) => v,
        }
    }

    /// Merges `rec` into a record of the same end naming the same workload whose
    /// interval overlaps it (the union of the two, under `rec`'s sequence number);
    /// returns whether there was one.
    fn absorb(&mut self, rec: Rec) -> bool {
        let recs: &mut [Rec] = match self {
            Recs::One(r) => std::slice::from_mut(r),
            Recs::Two(rs) => rs,
            Recs::Many(v) => v,
        };
        let same_end = |r: &Rec| (r.tag & 1) == (rec.tag & 1) && r.workload == rec.workload;
        match recs
            .iter_mut()
            .find(|r| same_end(r) && r.start <= rec.end && r.end >= rec.start)
        {
            Some(r) => {
                r.start = r.start.min(rec.start);
                r.end = r.end.max(rec.end);
                r.tag = rec.tag;
                true
            }
            None => false,
        }
    }

    fn push(&mut self, rec: Rec) {
        *self = match std::mem::replace(self, Recs::Many(Vec::new())) {
            Recs::One(a) => Recs::Two([a, rec]),
            Recs::Two([a, b]) => Recs::Many(vec![a, b, rec]),
            Recs::Many(v) if v.is_empty() => Recs::One(rec),
            Recs::Many(mut v) => {
                v.push(rec);
                Recs::Many(v)
            }
        };
    }

    /// Removes the record whose sequence bits are `seq`; returns whether none is left.
    fn remove(&mut self, seq: u32) -> bool {
        match self {
            Recs::One(r) => {
                if r.seq_bits() != seq {
                    return false;
                }
                *self = Recs::Many(Vec::new());
                true
            }
            Recs::Two([a, b]) => {
                if a.seq_bits() == seq {
                    *self = Recs::One(*b);
                } else if b.seq_bits() == seq {
                    *self = Recs::One(*a);
                }
                false
            }
            Recs::Many(v) => {
                v.retain(|r| r.seq_bits() != seq);
                match v.as_slice() {
                    [] => return true,
                    [a] => *self = Recs::One(*a),
                    [a, b] => *self = Recs::Two([*a, *b]),
                    _ => {}
                }
                false
            }
        }
    }
}

/// One connection's entry: its records (none while only held flows wait on it) and
/// the first of the held flows waiting for a peer record of it. 104 bytes.
#[derive(Clone, Debug)]
struct Conn {
    key: ConnKey,
    /// The first held flow's slot in the list of those waiting (`NIL`: none).
    waiters: u32,
    recs: Recs,
}

/// What the index says about a flow's peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PeerAnswer {
    /// No record of the other end overlaps the flow.
    Unknown,
    /// Every overlapping record of the other end names this workload.
    Workload(Sym),
    /// Overlapping records of the other end name different workloads.
    Disagree,
}

/// The most records the index holds whatever its cap: sequence numbers are told
/// apart by their low 31 bits.
const MAX_CAP: usize = (1 << 30) - 1;

/// Recent records by connection.
#[derive(Debug)]
pub(crate) struct PeerIndex {
    table: HashTable<Conn>,
    hasher: foldhash::fast::RandomState,
    /// The hash of each record's connection, in arrival order: the record at
    /// position i has sequence number `front_seq + i`.
    fifo: VecDeque<u64>,
    front_seq: u64,
    /// (leaves at, the sequence number after the last record leaving then), in
    /// arrival order: one per distinct departure time.
    departures: VecDeque<(Nanos, u64)>,
    cap: usize,
    /// Records that left before their time because the index was full.
    evicted: u64,
}

impl PeerIndex {
    /// An empty index of at most `cap` records.
    pub(crate) fn new(cap: usize) -> PeerIndex {
        PeerIndex {
            table: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            fifo: VecDeque::new(),
            front_seq: 0,
            departures: VecDeque::new(),
            cap: cap.clamp(1, MAX_CAP),
            evicted: 0,
        }
    }

    /// Records that left before their time because the index was full (their
    /// connection's other end may then find no peer: unattributed, never wrong).
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted
    }

    /// The connection of a flow whose own key is `key`.
    #[inline]
    pub(crate) fn conn(&self, key: &PeerKey) -> ConnRef {
        let local = key.local.words();
        let remote = key.remote.words();
        let (l, r) = ((local, key.local_port), (remote, key.remote_port));
        let (side, (a, a_port), (b, b_port)) = match l.cmp(&r) {
            std::cmp::Ordering::Less => (Side::First, l, r),
            std::cmp::Ordering::Greater => (Side::Second, r, l),
            std::cmp::Ordering::Equal => (Side::Both, l, r),
        };
        let ports = (u32::from(a_port) << 16) | u32::from(b_port);
        let key = ConnKey([
            a[0], a[1], a[2], a[3], a[4], b[0], b[1], b[2], b[3], b[4], ports,
        ]);
        ConnRef {
            key,
            side,
            hash: self.hasher.hash_one(key),
        }
    }

    /// Indexes a record of `workload` over `[start, end]` of the connection `conn`,
    /// until `leaves_at`. Returns the first held flow of the connection's waiting
    /// list (`NIL`: none).
    pub(crate) fn insert(
        &mut self,
        conn: &ConnRef,
        start: Nanos,
        end: Nanos,
        workload: Sym,
        leaves_at: Nanos,
    ) -> u32 {
        let seq = self.front_seq + self.fifo.len() as u64;
        let greater = u32::from(conn.side == Side::Second);
        let rec = Rec {
            start,
            end,
            tag: ((seq as u32) << 1) | greater,
            workload,
        };
        let hasher = &self.hasher;
        let waiters =
            match self
                .table
                .entry(conn.hash, |c| c.key == conn.key, |c| hasher.hash_one(c.key))
            {
                Entry::Occupied(mut o) => {
                    let c = o.get_mut();
                    // A later record of the same connection's same end (interim
                    // records, then the final one): one record, widened. The one it
                    // replaces finds nothing to remove when its time is up.
                    if !c.recs.absorb(rec) {
                        c.recs.push(rec);
                    }
                    c.waiters
                }
                Entry::Vacant(v) => {
                    v.insert(Conn {
                        key: conn.key,
                        waiters: NIL,
                        recs: Recs::One(rec),
                    });
                    NIL
                }
            };
        self.fifo.push_back(conn.hash);
        match self.departures.back_mut() {
            Some((at, until)) if *at == leaves_at => *until = seq + 1,
            _ => self.departures.push_back((leaves_at, seq + 1)),
        }
        while self.fifo.len() > self.cap {
            self.pop_oldest();
            self.evicted += 1;
        }
        waiters
    }

    /// Makes `slot` the first held flow waiting on `conn`; returns the previous
    /// first (`NIL`: none).
    pub(crate) fn swap_waiters(&mut self, conn: &ConnRef, slot: u32) -> u32 {
        let hasher = &self.hasher;
        match self
            .table
            .entry(conn.hash, |c| c.key == conn.key, |c| hasher.hash_one(c.key))
        {
            Entry::Occupied(mut o) => std::mem::replace(&mut o.get_mut().waiters, slot),
            Entry::Vacant(v) => {
                v.insert(Conn {
                    key: conn.key,
                    waiters: slot,
                    recs: Recs::Many(Vec::new()),
                });
                NIL
            }
        }
    }

    /// Sets the first held flow waiting on `conn` (`NIL`: none is left; the entry
    /// goes when it holds no record either).
    pub(crate) fn set_waiters(&mut self, conn: &ConnRef, slot: u32) {
        if let Ok(mut o) = self.table.find_entry(conn.hash, |c| c.key == conn.key) {
            let c = o.get_mut();
            c.waiters = slot;
            if slot == NIL && c.recs.as_slice().is_empty() {
                o.remove();
            }
        }
    }

    /// Removes the records whose time is up at `now`.
    pub(crate) fn expire(&mut self, now: Nanos) {
        while let Some(&(at, until)) = self.departures.front() {
            if at > now {
                break;
            }
            if self.front_seq >= until || self.fifo.is_empty() {
                self.departures.pop_front();
                continue;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        let Some(hash) = self.fifo.pop_front() else {
            return;
        };
        let seq = (self.front_seq as u32) & (u32::MAX >> 1);
        self.front_seq += 1;
        // The entry of this hash holding this record: sequence numbers are unique.
        if let Ok(mut o) = self.table.find_entry(hash, |c| {
            c.recs.as_slice().iter().any(|r| r.seq_bits() == seq)
        }) && o.get_mut().recs.remove(seq)
            && o.get().waiters == NIL
        {
            o.remove();
        }
        while self
            .departures
            .front()
            .is_some_and(|(_, until)| *until <= self.front_seq)
        {
            self.departures.pop_front();
        }
    }

    /// The peer of a flow of the connection `conn` which covers `[lo, hi]` (its
    /// interval widened by the tolerance): the other end's records overlapping it.
    #[inline]
    pub(crate) fn lookup(&self, conn: &ConnRef, lo: Nanos, hi: Nanos) -> PeerAnswer {
        let Some(c) = self.table.find(conn.hash, |c| c.key == conn.key) else {
            return PeerAnswer::Unknown;
        };
        let mut found: Option<Sym> = None;
        for r in c.recs.as_slice() {
            if r.peer_of(conn.side) && r.start <= hi && r.end >= lo {
                match found {
                    Some(w) if w != r.workload => return PeerAnswer::Disagree,
                    _ => found = Some(r.workload),
                }
            }
        }
        found.map_or(PeerAnswer::Unknown, PeerAnswer::Workload)
    }

    /// The peer of a flow whose own key is `flow` (see [`lookup`](PeerIndex::lookup)).
    pub(crate) fn lookup_key(&self, flow: &PeerKey, lo: Nanos, hi: Nanos) -> PeerAnswer {
        self.lookup(&self.conn(flow), lo, hi)
    }

    /// Marks in `used` (indexed by symbol) every workload the index names.
    pub(crate) fn mark_used(&self, used: &mut [bool]) {
        for c in &self.table {
            for r in c.recs.as_slice() {
                if let Some(u) = used.get_mut(r.workload.0 as usize) {
                    *u = true;
                }
            }
        }
    }

    /// Connections in the table (tests).
    #[cfg(test)]
    pub(crate) fn table_len(&self) -> usize {
        self.table.len()
    }

    /// When the oldest record leaves.
    pub(crate) fn next_expiry(&self) -> Option<Nanos> {
        self.departures.front().map(|(at, _)| *at)
    }

    /// Records in the index (a record merged into an earlier one of its connection
    /// counts until its own time is up).
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

    const SRV: Sym = Sym(7);
    const OTHER: Sym = Sym(8);

    fn insert(index: &mut PeerIndex, k: PeerKey, start: Nanos, end: Nanos, w: Sym, at: Nanos) {
        let conn = index.conn(&k);
        index.insert(&conn, start, end, w, at);
    }

    #[test]
    fn finds_the_reversed_tuple_overlapping_in_time() {
        let mut index = PeerIndex::new(100);
        let server = key("10.0.0.1", 443, "10.0.0.2", 5000);
        let client = key("10.0.0.2", 5000, "10.0.0.1", 443);
        insert(&mut index, server, 100, 200, SRV, 1_000);
        assert_eq!(
            index.lookup_key(&client, 150, 160),
            PeerAnswer::Workload(SRV)
        );
        // Touching counts; no overlap does not.
        assert_eq!(
            index.lookup_key(&client, 200, 300),
            PeerAnswer::Workload(SRV)
        );
        assert_eq!(index.lookup_key(&client, 201, 300), PeerAnswer::Unknown);
        assert_eq!(index.lookup_key(&client, 0, 99), PeerAnswer::Unknown);
        // Another port, or the same direction, is not the peer.
        assert_eq!(
            index.lookup_key(&key("10.0.0.2", 5001, "10.0.0.1", 443), 150, 160),
            PeerAnswer::Unknown
        );
        assert_eq!(index.lookup_key(&server, 150, 160), PeerAnswer::Unknown);
        // The client's own record shares the entry, and is the server's peer.
        insert(&mut index, client, 100, 200, OTHER, 1_000);
        assert_eq!(
            index.lookup_key(&server, 150, 160),
            PeerAnswer::Workload(OTHER)
        );
        assert_eq!(
            index.lookup_key(&client, 150, 160),
            PeerAnswer::Workload(SRV)
        );
        // A second record naming another workload: no evidence.
        insert(&mut index, server, 150, 250, OTHER, 1_001);
        assert_eq!(index.lookup_key(&client, 150, 160), PeerAnswer::Disagree);
        assert_eq!(
            index.lookup_key(&client, 210, 220),
            PeerAnswer::Workload(OTHER)
        );
        assert_eq!(index.len(), 3);
        index.expire(1_000);
        assert_eq!(index.len(), 1);
        assert_eq!(
            index.lookup_key(&client, 150, 160),
            PeerAnswer::Workload(OTHER)
        );
        assert_eq!(index.lookup_key(&server, 150, 160), PeerAnswer::Unknown);
        assert_eq!(index.next_expiry(), Some(1_001));
        index.expire(1_001);
        assert_eq!(index.lookup_key(&client, 150, 160), PeerAnswer::Unknown);
        assert_eq!((index.len(), index.table.len()), (0, 0));
        assert_eq!(index.next_expiry(), None);
    }

    #[test]
    fn interim_and_final_records_of_one_end_merge_into_one() {
        let mut index = PeerIndex::new(100);
        let server = key("10.0.0.1", 443, "10.0.0.2", 5000);
        let client = key("10.0.0.2", 5000, "10.0.0.1", 443);
        // A connection open from 100 to 350: interim records at 200 and 300 (its
        // windows' closes), the final one at 350, from both ends.
        for (i, end) in [200, 300, 350].into_iter().enumerate() {
            let at = 1_000 + 100 * i as u64;
            insert(&mut index, server, 100, end, SRV, at);
            insert(&mut index, client, 99, end + 1, OTHER, at);
        }
        let c = index.conn(&client);
        let entry = index
            .table
            .find(c.hash, |e| e.key == c.key)
            .expect("the connection's entry");
        // One record per end, inline, covering the union.
        let recs: Vec<(Nanos, Nanos)> = entry
            .recs
            .as_slice()
            .iter()
            .map(|r| (r.start, r.end))
            .collect();
        assert_eq!(recs, [(100, 350), (99, 351)]);
        assert_eq!(
            index.lookup_key(&client, 340, 345),
            PeerAnswer::Workload(SRV)
        );
        assert_eq!(
            index.lookup_key(&server, 90, 100),
            PeerAnswer::Workload(OTHER)
        );
        // The merged record leaves with the newest record it absorbed.
        index.expire(1_100);
        assert_eq!(
            index.lookup_key(&client, 150, 160),
            PeerAnswer::Workload(SRV)
        );
        index.expire(1_200);
        assert_eq!(index.lookup_key(&client, 150, 160), PeerAnswer::Unknown);
        assert_eq!((index.len(), index.table.len()), (0, 0));
    }

    #[test]
    fn records_of_one_end_naming_different_workloads_stay_apart() {
        let mut index = PeerIndex::new(100);
        let server = key("10.0.0.1", 443, "10.0.0.2", 5000);
        let client = key("10.0.0.2", 5000, "10.0.0.1", 443);
        insert(&mut index, server, 100, 200, SRV, 1_000);
        insert(&mut index, server, 100, 300, OTHER, 1_001);
        assert_eq!(index.lookup_key(&client, 150, 160), PeerAnswer::Disagree);
        assert_eq!(
            index.lookup_key(&client, 250, 260),
            PeerAnswer::Workload(OTHER)
        );
        // Records of one end that do not overlap (port reuse) stay apart too.
        insert(&mut index, server, 400, 500, SRV, 1_002);
        assert_eq!(
            index.lookup_key(&client, 450, 460),
            PeerAnswer::Workload(SRV)
        );
        assert_eq!(index.lookup_key(&client, 350, 360), PeerAnswer::Unknown);
    }

    #[test]
    fn a_socket_connected_to_itself_is_its_own_peer() {
        let mut index = PeerIndex::new(100);
        let own = key("127.0.0.1", 7000, "127.0.0.1", 7000);
        insert(&mut index, own, 100, 200, SRV, 1_000);
        assert_eq!(index.lookup_key(&own, 150, 160), PeerAnswer::Workload(SRV));
    }

    #[test]
    fn port_reuse_spills_and_leaves_in_order() {
        let mut index = PeerIndex::new(100);
        let server = key("10.0.0.1", 443, "10.0.0.2", 5000);
        let client = key("10.0.0.2", 5000, "10.0.0.1", 443);
        for i in 0..5u64 {
            insert(
                &mut index,
                server,
                i * 100,
                i * 100 + 50,
                Sym(i as u32),
                1_000 + i,
            );
        }
        for i in 0..5u64 {
            assert_eq!(
                index.lookup_key(&client, i * 100 + 10, i * 100 + 20),
                PeerAnswer::Workload(Sym(i as u32))
            );
        }
        index.expire(1_002);
        assert_eq!(index.len(), 2);
        assert_eq!(index.lookup_key(&client, 110, 120), PeerAnswer::Unknown);
        assert_eq!(
            index.lookup_key(&client, 410, 420),
            PeerAnswer::Workload(Sym(4))
        );
        let mut used = vec![false; 6];
        index.mark_used(&mut used);
        assert_eq!(used, [false, false, false, true, true, false]);
    }

    #[test]
    fn cap_drops_the_oldest() {
        let mut index = PeerIndex::new(2);
        for port in 1..=3 {
            insert(
                &mut index,
                key("10.0.0.1", port, "10.0.0.2", 9),
                0,
                10,
                SRV,
                100,
            );
        }
        assert_eq!(index.len(), 2);
        assert_eq!(index.evicted(), 1);
        assert_eq!(
            index.lookup_key(&key("10.0.0.2", 9, "10.0.0.1", 1), 0, 10),
            PeerAnswer::Unknown
        );
        assert_eq!(
            index.lookup_key(&key("10.0.0.2", 9, "10.0.0.1", 3), 0, 10),
            PeerAnswer::Workload(SRV)
        );
        assert_eq!(index.next_expiry(), Some(100));
        index.expire(100);
        assert_eq!((index.len(), index.table.len()), (0, 0));
    }

    /// The sizes the module documentation gives.
    #[test]
    fn entry_sizes() {
        use std::mem::size_of;
        assert_eq!(size_of::<ConnKey>(), 44);
        assert_eq!(size_of::<Rec>(), 24);
        assert_eq!(size_of::<Conn>(), 104);
    }

    #[test]
    fn an_entry_stays_while_flows_wait_on_it() {
        let mut index = PeerIndex::new(100);
        let server = key("10.0.0.1", 443, "10.0.0.2", 5000);
        let client = key("10.0.0.2", 5000, "10.0.0.1", 443);
        let (sc, cc) = (index.conn(&server), index.conn(&client));
        assert!(cc.side().is_peer_of(sc.side()) && !cc.side().is_peer_of(cc.side()));
        // A held client flow waits on the connection before any record of it.
        assert_eq!(index.swap_waiters(&cc, 3), NIL);
        assert_eq!((index.len(), index.table.len()), (0, 1));
        assert_eq!(index.insert(&sc, 100, 200, SRV, 1_000), 3);
        index.expire(1_000);
        // The record left; the waiting list did not.
        assert_eq!((index.len(), index.table.len()), (0, 1));
        assert_eq!(index.swap_waiters(&cc, 4), 3);
        index.set_waiters(&cc, NIL);
        assert_eq!(index.table.len(), 0);
    }
}
