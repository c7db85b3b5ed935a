//! Which end of a connection counts it. A connection between two traced hosts is
//! reported by both; the graph counts it (its connection, its bytes) from the end
//! whose record reached the graph **first**, and from the other end takes only its
//! retransmits (its own segments). The other end's record may come minutes later
//! (a late chunk, an outage, the peer wait over) or carry no workload (a host's own
//! probe): so the ends are matched by address, not by attribution, in a bounded table
//! of the latest connections seen.
//!
//! A connection is keyed by a hash of `(client address, server address)` as both ends
//! orient it, and told apart from an earlier one on the same addresses by its start
//! time (both ends' `t_start`, within [`START_TOLERANCE`] for the hosts' clock skew).
//! The table holds at most [`SidesTable::new`]'s `cap` connections (80 bytes each
//! measured, with the hash table's and the order's slack); the oldest go first,
//! those both of whose ends closed included (kept so that a late interim record
//! still finds its end). Connections only one end reports (to untraced peers) stay
//! until evicted, so the table is full in steady state and covers the latest `cap`
//! connections: at 10,000 new connections a second, the latest 50 s. A connection whose other end's record arrives after it
//! was forgotten is counted again (`docs/graph.md`).

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasher, BuildHasherDefault, Hasher},
    net::SocketAddr,
    time::{Duration, SystemTime},
};

/// The table's keys are already hashes (foldhash, seeded at random per table, so
/// hosts cannot choose addresses that collide): the map uses them as they are.
#[derive(Default)]
struct KeyAsHash(u64);

impl Hasher for KeyAsHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; anything else is folded in, never panics.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Two records of the same addresses are one connection when their starts are this
/// close (clock skew between the hosts, and the handshake). A client reusing its
/// port to the same server within it (TIME_WAIT forbids it unless `tcp_tw_reuse`)
/// would be taken for the same connection.
pub(crate) const START_TOLERANCE: Duration = Duration::from_secs(30);

/// The end whose record counts a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// The client's record counts it.
    Client,
    /// The server's.
    Server,
}

impl Side {
    /// The side of a record whose host is the client when `local_is_client`.
    pub(crate) fn of(local_is_client: bool) -> Side {
        if local_is_client {
            Side::Client
        } else {
            Side::Server
        }
    }
}

/// What a record is to its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Its end counts the connection's traffic (the first end seen, or its only
    /// one).
    Counts {
        /// It is the connection's first final record (of either end): it counts
        /// the connection and its failure.
        close: bool,
    },
    /// The other end counts the connection's traffic.
    Peer {
        /// The minute the counting end's latest record went to.
        counted_in: u64,
        /// It is the connection's first final record: the counting end's final
        /// has not come (lost, or late), so this one counts the connection and its
        /// failure.
        close: bool,
    },
}

/// One connection, packed (24 bytes, 32 with its key).
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Seconds since the epoch of the first record's `t_start` (0: unknown).
    start: u64,
    /// Its place in the eviction order.
    seq: u64,
    /// The minute of the counting end's latest record, less [`MINUTE_BASE`].
    minute: u32,
    /// [`COUNTING_SERVER`], [`CLIENT_CLOSED`], [`SERVER_CLOSED`].
    flags: u8,
}

/// Minutes are kept as offsets from this one (2020-01-01): a `u32` holds 8,000
/// years of them.
const MINUTE_BASE: u64 = 26_297_280;
/// The server's end counts the connection (else the client's).
const COUNTING_SERVER: u8 = 1;
/// The client's final record was seen.
const CLIENT_CLOSED: u8 = 2;
/// The server's final record was seen.
const SERVER_CLOSED: u8 = 4;
/// A final record counted the connection.
const CLOSE_COUNTED: u8 = 8;

fn closed_flag(side: Side) -> u8 {
    match side {
        Side::Client => CLIENT_CLOSED,
        Side::Server => SERVER_CLOSED,
    }
}

fn packed_minute(minute: u64) -> u32 {
    u32::try_from(minute.saturating_sub(MINUTE_BASE)).unwrap_or(u32::MAX)
}

impl Entry {
    fn counting(&self) -> Side {
        if self.flags & COUNTING_SERVER != 0 {
            Side::Server
        } else {
            Side::Client
        }
    }

    fn minute(&self) -> u64 {
        MINUTE_BASE + u64::from(self.minute)
    }
}

/// The connections seen lately, by their addresses.
#[derive(Debug)]
pub(crate) struct SidesTable {
    entries: HashMap<u64, Entry, BuildHasherDefault<KeyAsHash>>,
    /// Hashes a connection's addresses into its key.
    keys: foldhash::fast::RandomState,
    /// `(key, seq)` in the order the connections were first seen.
    order: VecDeque<(u64, u64)>,
    next_seq: u64,
    cap: usize,
    /// Connections evicted for room: mostly connections only one end reports (to
    /// untraced peers), which stay until evicted; a later record of an evicted
    /// connection's other end counts it again.
    pub(crate) forgotten: u64,
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl SidesTable {
    /// A table of at most `cap` connections.
    pub(crate) fn new(cap: usize) -> SidesTable {
        SidesTable {
            entries: HashMap::default(),
            keys: foldhash::fast::RandomState::default(),
            order: VecDeque::new(),
            next_seq: 0,
            cap: cap.max(1),
            forgotten: 0,
        }
    }

    /// Connections held.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The role of a record of the connection `client` -> `server` started at
    /// `t_start`, from `side`, going to minute `minute`; `last` when it is the
    /// connection's final record from that side.
    pub(crate) fn role(
        &mut self,
        client: SocketAddr,
        server: SocketAddr,
        t_start: Option<SystemTime>,
        side: Side,
        minute: u64,
        last: bool,
    ) -> Role {
        let key = self.keys.hash_one((client, server));
        let start = t_start.map_or(0, secs);
        let closed = if last { closed_flag(side) } else { 0 };
        if let Some(entry) = self.entries.get_mut(&key) {
            // An end has one final record: a second one from an end already closed
            // is a new connection on the same addresses.
            let same = (entry.start == 0
                || start == 0
                || entry.start.abs_diff(start) <= START_TOLERANCE.as_secs())
                && entry.flags & closed == 0;
            // Records come in any order (a late chunk brings a connection's interim
            // records after its final one): the start alone tells connections apart.
            // A connection both of whose ends closed stays (until evicted): a late
            // interim record of it is still its end's.
            if same {
                if entry.start == 0 {
                    entry.start = start;
                }
                let close = last && entry.flags & CLOSE_COUNTED == 0;
                if close {
                    entry.flags |= CLOSE_COUNTED;
                }
                entry.flags |= closed;
                return if entry.counting() == side {
                    entry.minute = entry.minute.max(packed_minute(minute));
                    Role::Counts { close }
                } else {
                    Role::Peer {
                        counted_in: entry.minute(),
                        close,
                    }
                };
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let counting = match side {
            Side::Client => 0,
            Side::Server => COUNTING_SERVER,
        };
        self.entries.insert(
            key,
            Entry {
                start,
                seq,
                minute: packed_minute(minute),
                flags: counting | closed | if last { CLOSE_COUNTED } else { 0 },
            },
        );
        self.order.push_back((key, seq));
        self.make_room();
        Role::Counts { close: last }
    }

    /// Forgets the oldest connections beyond the cap; drops the places in the order
    /// of connections already done once they outnumber the live ones.
    fn make_room(&mut self) {
        while self.entries.len() > self.cap {
            let Some((key, seq)) = self.order.pop_front() else {
                return;
            };
            if let Some(entry) = self.entries.get(&key).filter(|e| e.seq == seq) {
                // One both of whose ends closed is forgotten at no risk.
                let done =
                    entry.flags & (CLIENT_CLOSED | SERVER_CLOSED) == CLIENT_CLOSED | SERVER_CLOSED;
                self.entries.remove(&key);
                self.forgotten += u64::from(!done);
            }
        }
        if self.order.len() > 2 * self.entries.len().max(1024) {
            let entries = &self.entries;
            self.order
                .retain(|(key, seq)| entries.get(key).is_some_and(|e| e.seq == *seq));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minute of 2026.
    const M: u64 = 29_400_000;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    fn at(secs: u64) -> Option<SystemTime> {
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs))
    }

    /// `Counts` with `close`.
    fn counts(close: bool) -> Role {
        Role::Counts { close }
    }

    /// `Peer` of minute `counted_in` with `close`.
    fn peer(counted_in: u64, close: bool) -> Role {
        Role::Peer { counted_in, close }
    }

    #[test]
    fn the_first_end_seen_counts_and_the_other_is_its_peer_even_much_later() {
        let mut t = SidesTable::new(10);
        let (c, s) = (addr("10.0.0.1:40000"), addr("10.0.0.2:443"));
        assert_eq!(t.role(c, s, at(0), Side::Server, M + 5, true), counts(true));
        // The client's record, 30 s of skew later, an hour late.
        assert_eq!(
            t.role(c, s, at(30), Side::Client, M + 65, true),
            peer(M + 5, false)
        );
        // Both ends closed: kept until evicted, and a late interim record of either
        // end still finds its role.
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.role(c, s, at(30), Side::Client, M + 3, false),
            peer(M + 5, false)
        );
    }

    #[test]
    fn interim_records_keep_their_roles_and_the_first_final_counts_the_close() {
        let mut t = SidesTable::new(10);
        let (c, s) = (addr("10.0.0.1:40000"), addr("10.0.0.2:443"));
        assert_eq!(
            t.role(c, s, at(0), Side::Client, M + 1, false),
            counts(false)
        );
        assert_eq!(
            t.role(c, s, at(0), Side::Server, M + 1, false),
            peer(M + 1, false)
        );
        assert_eq!(t.role(c, s, at(0), Side::Client, M + 3, true), counts(true));
        assert_eq!(
            t.role(c, s, at(0), Side::Server, M + 3, true),
            peer(M + 3, false)
        );
    }

    #[test]
    fn the_peers_final_counts_the_close_when_the_counting_ends_has_not_come() {
        let mut t = SidesTable::new(10);
        let (c, s) = (addr("10.0.0.1:40000"), addr("10.0.0.2:443"));
        // The client's interim records count the traffic; its final is lost.
        assert_eq!(
            t.role(c, s, at(0), Side::Client, M + 1, false),
            counts(false)
        );
        assert_eq!(
            t.role(c, s, at(0), Side::Server, M + 2, true),
            peer(M + 1, true)
        );
        // Were it only late, it counts no second close.
        assert_eq!(
            t.role(c, s, at(0), Side::Client, M + 2, true),
            counts(false)
        );
    }

    #[test]
    fn the_same_addresses_later_are_a_new_connection() {
        let mut t = SidesTable::new(10);
        let (c, s) = (addr("10.0.0.1:40000"), addr("10.0.0.2:443"));
        assert_eq!(t.role(c, s, at(0), Side::Client, M + 1, true), counts(true));
        // The client's port reused 90 s later: another connection.
        assert_eq!(
            t.role(c, s, at(90), Side::Client, M + 2, true),
            counts(true)
        );
        // Its server's record, 20 s of skew apart.
        assert_eq!(
            t.role(c, s, at(70), Side::Server, M + 2, true),
            peer(M + 2, false)
        );
        // Started ten minutes later: another connection.
        assert_eq!(
            t.role(c, s, at(690), Side::Server, M + 12, true),
            counts(true)
        );
    }

    #[test]
    fn an_interim_record_coming_after_its_final_one_keeps_the_counting_end() {
        let mut t = SidesTable::new(10);
        let (c, s) = (addr("10.0.0.1:40000"), addr("10.0.0.2:443"));
        assert_eq!(
            t.role(c, s, at(0), Side::Server, M + 1, false),
            counts(false)
        );
        assert_eq!(
            t.role(c, s, at(0), Side::Client, M + 3, true),
            peer(M + 1, true)
        );
        // The client's interim record of minute 2, late.
        assert_eq!(
            t.role(c, s, at(0), Side::Client, M + 2, false),
            peer(M + 1, false)
        );
        assert_eq!(
            t.role(c, s, at(0), Side::Server, M + 3, true),
            counts(false)
        );
    }

    #[test]
    fn the_oldest_connections_go_first_and_only_unfinished_ones_count_as_forgotten() {
        let mut t = SidesTable::new(2);
        let s = addr("10.0.0.2:443");
        for port in 0..3 {
            let c = addr(&format!("10.0.0.1:{}", 40_000 + port));
            assert_eq!(t.role(c, s, at(0), Side::Client, M + 1, true), counts(true));
        }
        assert_eq!(t.len(), 2);
        assert_eq!(t.forgotten, 1);
        // The first one's server record: its client's entry is gone, it counts.
        let first = addr("10.0.0.1:40000");
        assert_eq!(
            t.role(first, s, at(0), Side::Server, M + 1, true),
            counts(true)
        );
        assert_eq!(t.forgotten, 2);
        // Both ends of the third: evicted later at no risk, not counted.
        let third = addr("10.0.0.1:40002");
        assert_eq!(
            t.role(third, s, at(0), Side::Server, M + 1, true),
            peer(M + 1, false)
        );
        let fourth = addr("10.0.0.1:40003");
        t.role(fourth, s, at(0), Side::Client, M + 1, true);
        t.role(addr("10.0.0.1:40004"), s, at(0), Side::Client, M + 1, true);
        assert_eq!(t.forgotten, 3, "the third (done) went at no count");
    }
}
