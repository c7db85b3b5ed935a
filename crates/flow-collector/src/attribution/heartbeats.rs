//! Heartbeats shared between collector nodes: what one node's records claim about
//! their local IPs, compacted, so that every other node's ownership map learns it.
//!
//! When several collector nodes share a fleet's chunks (behind a load balancer, or a
//! Kafka topic's partitions), each sees only some hosts' records, so each node's
//! ownership map would know only those hosts' IPs. With sharing on
//! ([`AttributionConfig::share_heartbeats`](crate::attribution::AttributionConfig::share_heartbeats)),
//! every record that marks the map (it names its local workload) also goes into a
//! book, per host, IP and claim (a workload, or the connect map's shared mark): the
//! exact union of the records' intervals. The caller drains the book every second or
//! so ([`Attributor::take_heartbeats`](crate::attribution::Attributor::take_heartbeats)),
//! publishes the [`Heartbeat`]s ([`Heartbeat::encode`], keyed by
//! [`Heartbeat::key`]), and every node applies every other node's
//! ([`Attributor::apply_heartbeats`](crate::attribution::Attributor::apply_heartbeats))
//! as if their records had reached it.
//!
//! The union merges only intervals that overlap or touch: joining two of them across
//! a gap could hide another workload's claim in between (which the other node may
//! know) and change what the map answers. The receiving map joins them as it joins
//! its own records' (the merge gap, when nothing else lies between).
//!
//! `docs/heartbeat-topic.md` describes the message format.

use std::{
    borrow::Cow,
    collections::hash_map::Entry,
    fmt,
    hash::{Hash, Hasher},
    net::IpAddr,
};

use flow_batch::wire::MAX_HOST_LEN;
use flow_record::{InvalidWorkloadId, WorkloadId};
use serde::Deserialize;

use crate::attribution::{
    FastMap,
    ip_key::{HostId, IpKey},
    ownership::Mark,
    time::Nanos,
};

/// The version of the message format [`Heartbeat::encode`] writes (its `"v"`).
pub const HEARTBEAT_FORMAT_VERSION: u64 = 1;

/// Largest encoded heartbeat [`Heartbeat::decode`] accepts, bytes (64 KiB). Every
/// heartbeat [`Heartbeat::new`] accepts encodes to less.
pub const MAX_HEARTBEAT_BYTES: usize = 64 * 1024;

/// Most time ranges in one heartbeat. The book splits a longer list into several
/// heartbeats.
pub const MAX_HEARTBEAT_RANGES: usize = 1024;

/// What a heartbeat claims about its IP.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HeartbeatClaim {
    /// The workload owned the IP over the ranges (its records' identity came from
    /// anything but the connect map).
    Owned(WorkloadId),
    /// The IP was shared through the connect map over the ranges (one IPv4, several
    /// workloads told apart by port): the receiving map marks it shared, as widely as
    /// it marks its own connect-map records.
    Shared,
}

/// One node's evidence about one IP, from one host's records, for one claim: the
/// union of the records' intervals, as the ownership map would have received them.
///
/// The ranges are nanoseconds since the Unix epoch, both ends included (the engine's
/// own times), sorted and disjoint, at least one and at most
/// [`MAX_HEARTBEAT_RANGES`]. A Shared claim's ranges are its records' own intervals:
/// the receiving map widens them as it widens its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    host: String,
    ip: IpAddr,
    claim: HeartbeatClaim,
    ranges: Vec<(u64, u64)>,
}

/// What is wrong with a heartbeat (decoded from a message, or built with
/// [`Heartbeat::new`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeartbeatDecodeError {
    /// The message is longer than [`MAX_HEARTBEAT_BYTES`].
    #[error("the heartbeat is {len} bytes, more than the {max} allowed", max = MAX_HEARTBEAT_BYTES)]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// The message is not a JSON object of the format's fields and types (or has
    /// fields the format does not define).
    #[error("the heartbeat is not valid: {0}")]
    Json(String),
    /// The message is of another version of the format.
    #[error("the heartbeat is of format version {0}; this collector reads version {v}", v = HEARTBEAT_FORMAT_VERSION)]
    UnsupportedVersion(u64),
    /// The host ID is empty or longer than the wire format allows.
    #[error("the heartbeat's host ID is {len} bytes: it must be 1 to {max}", max = MAX_HOST_LEN)]
    InvalidHost {
        /// Its length.
        len: usize,
    },
    /// The IP is not an IPv4 or IPv6 address.
    #[error("the heartbeat's IP {0:?} is not an IP address")]
    InvalidIp(String),
    /// The claim is neither `owned` nor `shared`.
    #[error("the heartbeat's claim {0:?} is neither \"owned\" nor \"shared\"")]
    UnknownClaim(String),
    /// An `owned` claim without a workload, or a `shared` one with one.
    #[error("an \"owned\" claim needs a workload, a \"shared\" one has none")]
    ClaimWithoutWorkload,
    /// The workload ID is not a valid one.
    #[error("the heartbeat's workload: {0}")]
    InvalidWorkload(InvalidWorkloadId),
    /// No time range.
    #[error("the heartbeat has no time range")]
    NoRanges,
    /// More ranges than [`MAX_HEARTBEAT_RANGES`].
    #[error("the heartbeat has {count} time ranges, more than the {max} allowed", max = MAX_HEARTBEAT_RANGES)]
    TooManyRanges {
        /// How many.
        count: usize,
    },
    /// A range ends before it starts.
    #[error("the heartbeat's time range {index} ends before it starts")]
    RangeReversed {
        /// Its position, from 0.
        index: usize,
    },
    /// A range does not start after the previous one ends (the ranges must be sorted
    /// and disjoint).
    #[error("the heartbeat's time range {index} does not start after the previous one ends")]
    RangesOverlap {
        /// Its position, from 0.
        index: usize,
    },
}

/// The message as JSON (see `docs/heartbeat-topic.md`), as read;
/// [`Heartbeat::encode`] writes the same fields in this order.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    v: u64,
    #[serde(borrow)]
    h: Cow<'a, str>,
    #[serde(borrow)]
    ip: Cow<'a, str>,
    #[serde(borrow)]
    c: Cow<'a, str>,
    #[serde(borrow, default)]
    w: Option<Cow<'a, str>>,
    r: Vec<(u64, u64)>,
}

/// Appends `s` as a JSON string, quoted and escaped (serde_json's escaping).
fn json_string(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The version alone, read when a message is not this version's, so that another
/// version's message is told apart from a malformed one.
#[derive(Deserialize)]
struct Version {
    v: u64,
}

const OWNED: &str = "owned";
const SHARED: &str = "shared";

impl Heartbeat {
    /// A heartbeat: `claim` on `ip` (IPv4-mapped IPv6 is taken as IPv4) as `host`
    /// reported it, over `ranges` (nanoseconds since the Unix epoch, both ends
    /// included, sorted and disjoint, 1 to [`MAX_HEARTBEAT_RANGES`]). The error says
    /// what is wrong.
    pub fn new(
        host: impl Into<String>,
        ip: IpAddr,
        claim: HeartbeatClaim,
        ranges: Vec<(u64, u64)>,
    ) -> Result<Heartbeat, HeartbeatDecodeError> {
        let host = host.into();
        if host.is_empty() || host.len() > MAX_HOST_LEN {
            return Err(HeartbeatDecodeError::InvalidHost { len: host.len() });
        }
        check_ranges(&ranges)?;
        Ok(Heartbeat {
            host,
            ip: ip.to_canonical(),
            claim,
            ranges,
        })
    }

    /// A heartbeat from the book, whose ranges are valid by construction.
    pub(crate) fn from_book(
        host: &str,
        ip: IpAddr,
        claim: HeartbeatClaim,
        ranges: Vec<(u64, u64)>,
    ) -> Heartbeat {
        debug_assert!(check_ranges(&ranges).is_ok());
        Heartbeat {
            host: host.to_owned(),
            ip,
            claim,
            ranges,
        }
    }

    /// The host whose records these are (it matters for loopback, link-local and
    /// unspecified IPs, which are the host's own; see the ownership map's keys).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The IP.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// What the records claimed.
    pub fn claim(&self) -> &HeartbeatClaim {
        &self.claim
    }

    /// The time ranges, nanoseconds since the Unix epoch, both ends included, sorted
    /// and disjoint.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// The message key: the IP as text (`10.0.0.1`, `2001:db8::1`), so that one IP's
    /// heartbeats stay in order in one partition. For an IP scoped to its host
    /// (loopback, link-local, unspecified) it is `IP%host`, so that every host's
    /// `127.0.0.1` does not land in one partition.
    pub fn key(&self) -> String {
        if is_scoped(self.ip) {
            format!("{}%{}", self.ip, self.host)
        } else {
            self.ip.to_string()
        }
    }

    /// The message: one JSON object, `{"v":1,"h":HOST,"ip":IP,"c":"owned","w":WORKLOAD,
    /// "r":[[START,END],...]}` (`"c":"shared"` without `"w"`), at most
    /// [`MAX_HEARTBEAT_BYTES`].
    pub fn encode(&self) -> Vec<u8> {
        use std::io::Write;
        let mut out = Vec::with_capacity(96 + self.host.len() + 42 * self.ranges.len());
        let mut n = itoa::Buffer::new();
        out.extend_from_slice(b"{\"v\":");
        out.extend_from_slice(n.format(HEARTBEAT_FORMAT_VERSION).as_bytes());
        out.extend_from_slice(b",\"h\":");
        json_string(&mut out, &self.host);
        out.extend_from_slice(b",\"ip\":\"");
        // Writing into a Vec cannot fail (nor can serde_json's escaping of a str
        // below); were it ever to, the message would be cut short, and every reader
        // would refuse it.
        match self.ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push(b'.');
                    }
                    out.extend_from_slice(n.format(octet).as_bytes());
                }
            }
            IpAddr::V6(v6) => {
                let _ = write!(out, "{v6}");
            }
        }
        out.push(b'"');
        match &self.claim {
            HeartbeatClaim::Owned(w) => {
                out.extend_from_slice(b",\"c\":\"owned\",\"w\":");
                json_string(&mut out, w.as_str());
            }
            HeartbeatClaim::Shared => out.extend_from_slice(b",\"c\":\"shared\""),
        }
        out.extend_from_slice(b",\"r\":[");
        for (i, &(start, end)) in self.ranges.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'[');
            out.extend_from_slice(n.format(start).as_bytes());
            out.push(b',');
            out.extend_from_slice(n.format(end).as_bytes());
            out.push(b']');
        }
        out.extend_from_slice(b"]}");
        out
    }

    /// Reads a message [`encode`](Heartbeat::encode) wrote; the error says what is
    /// wrong with it. Longer than [`MAX_HEARTBEAT_BYTES`], of another format version,
    /// with fields the format does not define, or with ranges out of order: refused.
    pub fn decode(bytes: &[u8]) -> Result<Heartbeat, HeartbeatDecodeError> {
        if bytes.len() > MAX_HEARTBEAT_BYTES {
            return Err(HeartbeatDecodeError::TooLarge { len: bytes.len() });
        }
        let wire: Wire<'_> = match serde_json::from_slice(bytes) {
            Ok(wire) => wire,
            // Another version's message need not have this one's fields: say so
            // rather than what its fields lack.
            Err(e) => {
                return Err(match serde_json::from_slice::<Version>(bytes) {
                    Ok(Version { v }) if v != HEARTBEAT_FORMAT_VERSION => {
                        HeartbeatDecodeError::UnsupportedVersion(v)
                    }
                    _ => HeartbeatDecodeError::Json(e.to_string()),
                });
            }
        };
        if wire.v != HEARTBEAT_FORMAT_VERSION {
            return Err(HeartbeatDecodeError::UnsupportedVersion(wire.v));
        }
        let ip: IpAddr = wire
            .ip
            .parse()
            .map_err(|_| HeartbeatDecodeError::InvalidIp(wire.ip.clone().into_owned()))?;
        let claim = match (&*wire.c, wire.w) {
            (OWNED, Some(w)) => HeartbeatClaim::Owned(
                WorkloadId::new(w.into_owned()).map_err(HeartbeatDecodeError::InvalidWorkload)?,
            ),
            (SHARED, None) => HeartbeatClaim::Shared,
            (OWNED, None) | (SHARED, Some(_)) => {
                return Err(HeartbeatDecodeError::ClaimWithoutWorkload);
            }
            (other, _) => return Err(HeartbeatDecodeError::UnknownClaim(other.to_owned())),
        };
        Heartbeat::new(wire.h.into_owned(), ip, claim, wire.r)
    }
}

impl fmt::Display for Heartbeat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.claim {
            HeartbeatClaim::Owned(w) => write!(f, "{} owned {}", w, self.ip)?,
            HeartbeatClaim::Shared => write!(f, "{} shared", self.ip)?,
        }
        write!(f, " (host {}, {} ranges)", self.host, self.ranges.len())
    }
}

/// Whether `ip` means something different on every host (see `ip_key`).
fn is_scoped(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Checks that `ranges` are 1 to [`MAX_HEARTBEAT_RANGES`], each in order, sorted and
/// disjoint.
fn check_ranges(ranges: &[(u64, u64)]) -> Result<(), HeartbeatDecodeError> {
    if ranges.is_empty() {
        return Err(HeartbeatDecodeError::NoRanges);
    }
    if ranges.len() > MAX_HEARTBEAT_RANGES {
        return Err(HeartbeatDecodeError::TooManyRanges {
            count: ranges.len(),
        });
    }
    let mut previous_end = None;
    for (index, &(start, end)) in ranges.iter().enumerate() {
        if start > end {
            return Err(HeartbeatDecodeError::RangeReversed { index });
        }
        if previous_end.is_some_and(|p| start <= p) {
            return Err(HeartbeatDecodeError::RangesOverlap { index });
        }
        previous_end = Some(end);
    }
    Ok(())
}

/// What the book files a record's claim under: its host, its IP (scoped to the host
/// when the IP is), and its mark (a workload's symbol, or shared).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BookKey {
    pub(crate) ip: IpKey,
    pub(crate) host: HostId,
    pub(crate) mark: Mark,
}

impl Hash for BookKey {
    /// Four words, rather than the derived field by field (a length, five words, a
    /// discriminant...): this is hashed for every record pushed.
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        let w = self.ip.words();
        let (tag, sym) = match self.mark {
            Mark::Owned(sym) => (0u32, sym.0),
            Mark::Shared => (1, 0),
            Mark::Conflict => (2, 0),
        };
        let pair = |hi: u32, lo: u32| (u64::from(hi) << 32) | u64::from(lo);
        state.write_u64(pair(w[0], w[1]));
        state.write_u64(pair(w[2], w[3]));
        state.write_u64(pair(w[4], self.host.index()));
        state.write_u64(pair(tag, sym));
    }
}

/// One key's ranges: one inline (most keys, whose records of a second overlap), or
/// more on the heap.
#[derive(Debug)]
enum Ranges {
    One((Nanos, Nanos)),
    Many(Vec<(Nanos, Nanos)>),
}

impl Ranges {
    fn into_vec(self) -> Vec<(Nanos, Nanos)> {
        match self {
            Ranges::One(r) => vec![r],
            Ranges::Many(v) => v,
        }
    }
}

/// The local records' claims since the last take: per key, the union of their
/// intervals, sorted and disjoint (intervals that overlap or touch are merged, no
/// others). About 64 bytes a key (its slot in the table), and 16 bytes more a range
/// when it has more than one.
#[derive(Debug, Default)]
pub(crate) struct Book {
    entries: FastMap<BookKey, Ranges>,
}

impl Book {
    /// Adds a record's claim: `mark` on `ip` over `[start, end]`, from `host`.
    #[inline]
    pub(crate) fn add(&mut self, key: BookKey, start: Nanos, end: Nanos) {
        let (start, end) = (start.min(end), end);
        match self.entries.entry(key) {
            Entry::Vacant(v) => {
                v.insert(Ranges::One((start, end)));
            }
            Entry::Occupied(mut o) => match o.get_mut() {
                Ranges::One(r) => {
                    if start <= r.1.saturating_add(1) && end.saturating_add(1) >= r.0 {
                        *r = (r.0.min(start), r.1.max(end));
                    } else {
                        let mut v = Vec::with_capacity(4);
                        v.push(*r);
                        union_add(&mut v, start, end);
                        *o.get_mut() = Ranges::Many(v);
                    }
                }
                Ranges::Many(v) => union_add(v, start, end),
            },
        }
    }

    /// Keys with claims not taken yet.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Marks in `used` (indexed by symbol) the workloads the book names, so that the
    /// map does not free their symbols before they are taken.
    pub(crate) fn mark_used(&self, used: &mut [bool]) {
        for key in self.entries.keys() {
            if let Mark::Owned(sym) = key.mark
                && let Some(u) = used.get_mut(sym.0 as usize)
            {
                *u = true;
            }
        }
    }

    /// Takes every claim out, in a fixed order (by IP, host and mark), so that a run
    /// replays the same way whatever the hash maps' seeds.
    pub(crate) fn drain(&mut self) -> Vec<(BookKey, Vec<(Nanos, Nanos)>)> {
        let mut out: Vec<_> = self
            .entries
            .drain()
            .map(|(k, r)| (k, r.into_vec()))
            .collect();
        out.sort_unstable_by_key(|(k, _)| {
            let mark = match k.mark {
                Mark::Owned(sym) => (0, sym.0),
                Mark::Shared => (1, 0),
                Mark::Conflict => (2, 0),
            };
            (k.ip, k.host.index(), mark)
        });
        out
    }
}

/// Adds `[start, end]` to `ranges` (sorted, disjoint, none touching another), merging
/// it with the ranges it overlaps or touches.
pub(crate) fn union_add(ranges: &mut Vec<(Nanos, Nanos)>, start: Nanos, end: Nanos) {
    let (start, end) = (start.min(end), end);
    // The common case: at or after the last range (records come roughly in order).
    match ranges.last_mut() {
        None => {
            ranges.push((start, end));
            return;
        }
        Some(last) if start > last.1.saturating_add(1) => {
            ranges.push((start, end));
            return;
        }
        Some(last) if start >= last.0 => {
            last.1 = last.1.max(end);
            return;
        }
        Some(_) => {}
    }
    // The ranges it overlaps or touches are `lo..hi`.
    let lo = ranges.partition_point(|r| r.1.saturating_add(1) < start);
    let hi = ranges.partition_point(|r| r.0 <= end.saturating_add(1));
    if lo >= hi {
        ranges.insert(lo, (start, end));
        return;
    }
    let merged = (start.min(ranges[lo].0), end.max(ranges[hi - 1].1));
    ranges[lo] = merged;
    ranges.drain(lo + 1..hi);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_book_keeps_one_range_inline_and_more_apart() {
        let mut hosts = crate::attribution::ip_key::Hosts::default();
        let host = hosts.intern("h");
        let key = BookKey {
            ip: IpKey::new(ip("10.0.0.1"), host),
            host,
            mark: Mark::Shared,
        };
        let other = BookKey {
            mark: Mark::Owned(crate::attribution::workloads::Sym(3)),
            ..key
        };
        let mut book = Book::default();
        // Overlapping, touching from either side, reversed: one range.
        for (s, e) in [(10, 20), (15, 30), (31, 40), (5, 9), (50, 45)] {
            book.add(key, s, e);
        }
        book.add(other, 100, 200);
        assert_eq!(book.len(), 2);
        let mut used = vec![false; 5];
        book.mark_used(&mut used);
        assert_eq!(used, [false, false, false, true, false]);
        let drained = book.drain();
        assert_eq!(drained.len(), 2);
        // Owned before shared.
        assert_eq!(drained[0], (other, vec![(100, 200)]));
        assert_eq!(drained[1], (key, vec![(5, 40), (45, 45)]));
        assert_eq!(book.len(), 0);
        // A gap: the second range goes to the heap, and more join it.
        book.add(key, 10, 20);
        book.add(key, 30, 40);
        book.add(key, 0, 5);
        book.add(key, 21, 29);
        assert_eq!(book.drain(), [(key, vec![(0, 5), (10, 40)])]);
    }

    fn id(s: &str) -> WorkloadId {
        WorkloadId::new(s).expect("test ID")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test IP")
    }

    #[test]
    fn the_union_merges_only_what_overlaps_or_touches() {
        let mut r = Vec::new();
        for (s, e) in [(10, 20), (21, 30), (40, 50), (35, 36), (0, 5), (100, 100)] {
            union_add(&mut r, s, e);
        }
        // 21 touches 20; 35..36 lies in the gap and stays apart; so does 0..5.
        assert_eq!(r, [(0, 5), (10, 30), (35, 36), (40, 50), (100, 100)]);
        // One range bridging three.
        union_add(&mut r, 6, 37);
        assert_eq!(r, [(0, 37), (40, 50), (100, 100)]);
        // Inside one: nothing changes.
        union_add(&mut r, 41, 49);
        assert_eq!(r, [(0, 37), (40, 50), (100, 100)]);
        // Extending the last, touching from the left, a reversed interval (a point).
        union_add(&mut r, 90, 101);
        union_add(&mut r, 38, 39);
        union_add(&mut r, 200, 150);
        assert_eq!(r, [(0, 50), (90, 101), (150, 150)]);
        // The ends of time.
        union_add(&mut r, u64::MAX - 1, u64::MAX);
        union_add(&mut r, u64::MAX, u64::MAX);
        assert_eq!(r.last(), Some(&(u64::MAX - 1, u64::MAX)));
    }

    #[test]
    fn encode_and_decode_round_trip() {
        let owned = Heartbeat::new(
            "host-1",
            ip("10.0.0.1"),
            HeartbeatClaim::Owned(id("ns/pod-\"a\"\\é")),
            vec![(1, 2), (1_700_000_000_123_456_789, u64::MAX)],
        )
        .expect("valid");
        let bytes = owned.encode();
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            "{\"v\":1,\"h\":\"host-1\",\"ip\":\"10.0.0.1\",\"c\":\"owned\",\
             \"w\":\"ns/pod-\\\"a\\\"\\\\é\",\"r\":[[1,2],[1700000000123456789,18446744073709551615]]}"
        );
        assert_eq!(Heartbeat::decode(&bytes), Ok(owned.clone()));
        assert_eq!(owned.key(), "10.0.0.1");
        let shared = Heartbeat::new(
            "h2",
            ip("::ffff:10.0.0.9"),
            HeartbeatClaim::Shared,
            vec![(5, 5)],
        )
        .expect("valid");
        assert_eq!(shared.ip(), ip("10.0.0.9"));
        let bytes = shared.encode();
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            r#"{"v":1,"h":"h2","ip":"10.0.0.9","c":"shared","r":[[5,5]]}"#
        );
        assert_eq!(Heartbeat::decode(&bytes), Ok(shared));
        // Scoped IPs are keyed with their host; IPv6 round trips.
        let lo = Heartbeat::new(
            "h3",
            ip("::1"),
            HeartbeatClaim::Owned(id("w")),
            vec![(1, 9)],
        )
        .expect("valid");
        assert_eq!(lo.key(), "::1%h3");
        assert_eq!(Heartbeat::decode(&lo.encode()), Ok(lo));
        // The largest heartbeat fits the limit.
        let big = Heartbeat::new(
            "h".repeat(MAX_HOST_LEN),
            ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            HeartbeatClaim::Owned(id(&"w".repeat(64))),
            (0..MAX_HEARTBEAT_RANGES as u64)
                .map(|i| (u64::MAX - 2 * i - 1, u64::MAX - 2 * i))
                .rev()
                .collect(),
        )
        .expect("valid");
        let bytes = big.encode();
        assert!(bytes.len() < MAX_HEARTBEAT_BYTES, "{}", bytes.len());
        assert_eq!(Heartbeat::decode(&bytes), Ok(big));
    }

    #[test]
    fn bad_messages_say_what_is_wrong() {
        use HeartbeatDecodeError as E;
        let decode = |s: &str| Heartbeat::decode(s.as_bytes());
        let ok = r#"{"v":1,"h":"h","ip":"10.0.0.1","c":"owned","w":"w","r":[[1,2]]}"#;
        assert!(decode(ok).is_ok());
        type Expected = fn(&E) -> bool;
        let cases: &[(&str, Expected)] = &[
            ("", |e| matches!(e, E::Json(_))),
            ("[1]", |e| matches!(e, E::Json(_))),
            (r#"{"h":"h"}"#, |e| matches!(e, E::Json(_))),
            (r#"{"v":2,"anything":"else"}"#, |e| {
                matches!(e, E::UnsupportedVersion(2))
            }),
            (
                r#"{"v":0,"h":"h","ip":"10.0.0.1","c":"owned","w":"w","r":[[1,2]]}"#,
                |e| matches!(e, E::UnsupportedVersion(0)),
            ),
            (
                r#"{"v":1,"h":"h","ip":"10.0.0.1","c":"owned","w":"w","r":[[1,2]],"x":1}"#,
                |e| matches!(e, E::Json(_)),
            ),
            (
                r#"{"v":1,"h":"","ip":"10.0.0.1","c":"owned","w":"w","r":[[1,2]]}"#,
                |e| matches!(e, E::InvalidHost { len: 0 }),
            ),
            (
                r#"{"v":1,"h":"h","ip":"10.0.0","c":"owned","w":"w","r":[[1,2]]}"#,
                |e| matches!(e, E::InvalidIp(s) if s == "10.0.0"),
            ),
            (
                r#"{"v":1,"h":"h","ip":"10.0.0.1","c":"mine","w":"w","r":[[1,2]]}"#,
                |e| matches!(e, E::UnknownClaim(s) if s == "mine"),
            ),
            (
                r#"{"v":1,"h":"h","ip":"10.0.0.1","c":"owned","r":[[1,2]]}"#,
                |e| matches!(e, E::ClaimWithoutWorkload),
            ),
            (
                r#"{"v":1,"h":"h","ip":"10.0.0.1","c":"shared","w":"w","r":[[1,2]]}"#,
                |e| matches!(e, E::ClaimWithoutWorkload),
            ),
            (
                r#"{"v":1,"h":"h","ip":"10.0.0.1","c":"owned","w":"a\u0007","r":[[1,2]]}"#,
                |e| matches!(e, E::InvalidWorkload(_)),
            ),
            (
                r#"{"v":1,"h":"h","ip":"10.0.0.1","c":"owned","w":"w","r":[]}"#,
                |e| matches!(e, E::NoRanges),
            ),
            (
                r#"{"v":1,"h":"h","ip":"10.0.0.1","c":"owned","w":"w","r":[[2,1]]}"#,
                |e| matches!(e, E::RangeReversed { index: 0 }),
            ),
            (
                r#"{"v":1,"h":"h","ip":"10.0.0.1","c":"owned","w":"w","r":[[1,5],[5,6]]}"#,
                |e| matches!(e, E::RangesOverlap { index: 1 }),
            ),
            (
                r#"{"v":1,"h":"h","ip":"10.0.0.1","c":"owned","w":"w","r":[[-1,5]]}"#,
                |e| matches!(e, E::Json(_)),
            ),
            (
                r#"{"v":1,"h":"h","ip":"10.0.0.1","c":"owned","w":"w","r":[[1,18446744073709551616]]}"#,
                |e| matches!(e, E::Json(_)),
            ),
            (
                r#"{"v":1,"h":"h","ip":"10.0.0.1","c":"owned","w":"w","r":[[1,2,3]]}"#,
                |e| matches!(e, E::Json(_)),
            ),
        ];
        for (text, expected) in cases {
            match decode(text) {
                Err(e) => assert!(expected(&e), "{text}: {e:?}"),
                Ok(h) => panic!("{text} decoded: {h:?}"),
            }
        }
        // Too many ranges.
        let ranges: Vec<String> = (0..=MAX_HEARTBEAT_RANGES)
            .map(|i| format!("[{},{}]", 2 * i, 2 * i))
            .collect();
        let many = format!(
            r#"{{"v":1,"h":"h","ip":"10.0.0.1","c":"shared","r":[{}]}}"#,
            ranges.join(",")
        );
        assert_eq!(
            decode(&many),
            Err(E::TooManyRanges {
                count: MAX_HEARTBEAT_RANGES + 1
            })
        );
        // Too large, before anything is parsed.
        let huge = vec![b' '; MAX_HEARTBEAT_BYTES + 1];
        assert_eq!(
            Heartbeat::decode(&huge),
            Err(E::TooLarge {
                len: MAX_HEARTBEAT_BYTES + 1
            })
        );
        // Errors read as sentences.
        assert_eq!(
            E::RangesOverlap { index: 3 }.to_string(),
            "the heartbeat's time range 3 does not start after the previous one ends"
        );
    }
}
