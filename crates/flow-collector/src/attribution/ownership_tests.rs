//! Unit tests of the ownership map.

use std::net::IpAddr;

use super::*;
use crate::attribution::ip_key::Hosts;

const S: Nanos = 1_000_000_000;
/// A base time far from the epoch.
const T0: Nanos = 1_700_000_000 * S;

fn key(ip: &str) -> IpKey {
    let mut hosts = Hosts::default();
    IpKey::new(ip.parse::<IpAddr>().expect("test IP"), hosts.intern("h"))
}

fn id(s: &str) -> WorkloadId {
    WorkloadId::new(s).expect("test ID")
}

/// A map with a merge gap of 30 s and a tolerance of 2 s.
fn map() -> OwnershipMap {
    OwnershipMap::new(30 * S, 2 * S)
}

/// Owned by `w` from `a` to `b` seconds after T0.
fn own(m: &mut OwnershipMap, ip: &str, w: &str, a: u64, b: u64) -> bool {
    m.insert(key(ip), T0 + a * S, T0 + b * S, Claim::Owned(&id(w)))
}

/// The segments of `ip` as (start s, end s, what), seconds after T0 (rounded down).
fn segs(m: &OwnershipMap, ip: &str) -> Vec<(u64, u64, String)> {
    m.segments(&key(ip))
        .into_iter()
        .map(|(a, b, name, mark)| {
            let what = match mark {
                Mark::Owned(_) => name.map_or_else(|| "?".into(), |n| n.as_str().to_owned()),
                Mark::Conflict => "CONFLICT".into(),
                Mark::Shared => "SHARED".into(),
            };
            ((a - T0) / S, (b - T0) / S, what)
        })
        .collect()
}

fn at(m: &OwnershipMap, ip: &str, secs: u64) -> MapAnswer {
    m.lookup(&key(ip), T0 + secs * S)
}

fn seg(a: u64, b: u64, what: &str) -> (u64, u64, String) {
    (a, b, what.to_owned())
}

#[test]
fn heartbeats_of_one_workload_extend_and_merge_within_the_gap() {
    let mut m = map();
    assert!(own(&mut m, "10.0.0.1", "a", 0, 10));
    assert!(own(&mut m, "10.0.0.1", "a", 5, 20));
    assert!(own(&mut m, "10.0.0.1", "a", 50, 60)); // 30 s after 20: joins
    assert_eq!(segs(&m, "10.0.0.1"), vec![seg(0, 60, "a")]);
    assert!(own(&mut m, "10.0.0.1", "a", 91, 95)); // 31 s after 60: a new range
    assert_eq!(
        segs(&m, "10.0.0.1"),
        vec![seg(0, 60, "a"), seg(91, 95, "a")]
    );
    // A heartbeat arriving late, before the first range, within the gap: joins.
    assert!(own(&mut m, "10.0.0.1", "a", 0, 0));
    assert_eq!(m.ranges(), 2);
    // One filling the gap joins both ranges.
    assert!(own(&mut m, "10.0.0.1", "a", 70, 80));
    assert_eq!(segs(&m, "10.0.0.1"), vec![seg(0, 95, "a")]);
    assert_eq!((m.ranges(), m.tracked_ips()), (1, 1));
    let c = m.counters();
    assert_eq!((c.heartbeats, c.conflicts), (6, 0));
}

#[test]
fn no_bridging_across_another_owner() {
    let mut m = map();
    own(&mut m, "10.0.0.1", "a", 0, 10);
    own(&mut m, "10.0.0.1", "b", 13, 16);
    own(&mut m, "10.0.0.1", "a", 20, 30);
    assert_eq!(
        segs(&m, "10.0.0.1"),
        vec![seg(0, 10, "a"), seg(13, 16, "b"), seg(20, 30, "a")]
    );
    assert_eq!(m.counters().conflicts, 0);
    // Between the ranges, a lookup sees both owners: no guess.
    assert_eq!(at(&m, "10.0.0.1", 11), MapAnswer::OwnerChanged);
    assert_eq!(at(&m, "10.0.0.1", 18), MapAnswer::OwnerChanged);
    assert_eq!(at(&m, "10.0.0.1", 5), MapAnswer::Owner(id("a")));
    assert_eq!(at(&m, "10.0.0.1", 25), MapAnswer::Owner(id("a")));
}

#[test]
fn overlapping_owners_conflict_and_the_overlap_is_never_used() {
    let mut m = map();
    own(&mut m, "10.0.0.1", "a", 0, 100);
    own(&mut m, "10.0.0.1", "b", 40, 60);
    assert_eq!(
        segs(&m, "10.0.0.1"),
        vec![seg(0, 39, "a"), seg(40, 60, "CONFLICT"), seg(60, 100, "a")]
    );
    assert_eq!(m.counters().conflicts, 1);
    assert_eq!(at(&m, "10.0.0.1", 50), MapAnswer::Conflicting);
    // Within the tolerance of the conflict: still conflicting.
    assert_eq!(at(&m, "10.0.0.1", 38), MapAnswer::Conflicting);
    assert_eq!(at(&m, "10.0.0.1", 10), MapAnswer::Owner(id("a")));
    assert_eq!(at(&m, "10.0.0.1", 90), MapAnswer::Owner(id("a")));
    // More heartbeats of either over the conflict do not undo it, nor count again.
    own(&mut m, "10.0.0.1", "b", 45, 55);
    own(&mut m, "10.0.0.1", "a", 41, 59);
    assert_eq!(at(&m, "10.0.0.1", 50), MapAnswer::Conflicting);
    assert_eq!(m.counters().conflicts, 1);
    // B over the rest of A's range: conflicts too, joined with the first mark.
    own(&mut m, "10.0.0.1", "b", 55, 120);
    assert_eq!(
        segs(&m, "10.0.0.1"),
        vec![
            seg(0, 39, "a"),
            seg(40, 100, "CONFLICT"),
            seg(100, 120, "b")
        ]
    );
    assert_eq!(m.counters().conflicts, 2);
}

#[test]
fn shared_marks_from_the_connect_map() {
    let mut m = map();
    let k = key("10.0.0.5");
    assert!(m.insert(k, T0, T0 + 10 * S, Claim::Shared));
    assert!(m.insert(k, T0 + 30 * S, T0 + 40 * S, Claim::Shared)); // joins within the gap
    assert_eq!(segs(&m, "10.0.0.5"), vec![seg(0, 40, "SHARED")]);
    assert_eq!(at(&m, "10.0.0.5", 20), MapAnswer::Shared);
    // An owner over a shared span: shared stays, the rest is owned.
    own(&mut m, "10.0.0.5", "a", 35, 80);
    assert_eq!(
        segs(&m, "10.0.0.5"),
        vec![seg(0, 40, "SHARED"), seg(40, 80, "a")]
    );
    assert_eq!(at(&m, "10.0.0.5", 41), MapAnswer::Shared);
    assert_eq!(at(&m, "10.0.0.5", 60), MapAnswer::Owner(id("a")));
    // A shared mark over an owner's span takes it.
    assert!(m.insert(k, T0 + 60 * S, T0 + 70 * S, Claim::Shared));
    assert_eq!(
        segs(&m, "10.0.0.5"),
        vec![
            seg(0, 40, "SHARED"),
            seg(40, 59, "a"),
            seg(60, 70, "SHARED"),
            seg(70, 80, "a")
        ]
    );
    assert_eq!(at(&m, "10.0.0.5", 65), MapAnswer::Shared);
    assert_eq!(m.counters().conflicts, 0);
}

#[test]
fn lookup_answers() {
    let mut m = map();
    assert_eq!(at(&m, "10.0.0.1", 5), MapAnswer::NoOwner);
    own(&mut m, "10.0.0.1", "a", 0, 10);
    own(&mut m, "10.0.0.1", "b", 100, 110);
    assert_eq!(at(&m, "10.0.0.1", 5), MapAnswer::Owner(id("a")));
    // Within the tolerance after the end, and before the start: one claimant, but
    // its claim does not cover the time with the tolerance to spare.
    assert_eq!(at(&m, "10.0.0.1", 12), MapAnswer::Unconfirmed);
    assert_eq!(at(&m, "10.0.0.1", 9), MapAnswer::Unconfirmed);
    assert_eq!(at(&m, "10.0.0.1", 98), MapAnswer::Unconfirmed);
    // A flow that began just before b's first heartbeat and lived on into it.
    let k = key("10.0.0.1");
    assert_eq!(
        m.lookup_flow(&k, T0 + 98 * S, T0 + 103 * S),
        MapAnswer::Owner(id("b"))
    );
    assert_eq!(
        m.lookup_flow(&k, T0 + 98 * S, T0 + 101 * S),
        MapAnswer::Unconfirmed
    );
    // Beyond it: nothing.
    assert_eq!(at(&m, "10.0.0.1", 13), MapAnswer::NoOwner);
    assert_eq!(at(&m, "10.0.0.1", 50), MapAnswer::NoOwner);
    assert_eq!(at(&m, "10.0.0.2", 5), MapAnswer::NoOwner);
    // A handover within the tolerance.
    own(&mut m, "10.0.0.3", "a", 0, 10);
    own(&mut m, "10.0.0.3", "b", 11, 20);
    assert_eq!(at(&m, "10.0.0.3", 10), MapAnswer::OwnerChanged);
    assert_eq!(at(&m, "10.0.0.3", 7), MapAnswer::Owner(id("a")));
    assert_eq!(at(&m, "10.0.0.3", 14), MapAnswer::Owner(id("b")));
}

#[test]
fn nanosecond_edges() {
    let mut m = OwnershipMap::new(0, 0);
    let k = key("10.0.0.1");
    m.insert(k, 100, 200, Claim::Owned(&id("a")));
    // Touching joins even with no merge gap; one nanosecond apart too; two do not.
    m.insert(k, 201, 300, Claim::Owned(&id("a")));
    assert_eq!(m.ranges(), 1);
    m.insert(k, 302, 400, Claim::Owned(&id("a")));
    assert_eq!(m.ranges(), 2);
    // A claim sharing one nanosecond with another owner conflicts on it.
    m.insert(k, 400, 500, Claim::Owned(&id("b")));
    assert_eq!(m.lookup(&k, 400), MapAnswer::Conflicting);
    assert_eq!(m.lookup(&k, 399), MapAnswer::Owner(id("a")));
    assert_eq!(m.lookup(&k, 401), MapAnswer::Owner(id("b")));
    // The end of time.
    m.insert(k, u64::MAX - 10, u64::MAX, Claim::Owned(&id("c")));
    m.insert(k, u64::MAX - 20, u64::MAX, Claim::Owned(&id("c")));
    assert_eq!(m.lookup(&k, u64::MAX), MapAnswer::Owner(id("c")));
    m.insert(k, u64::MAX - 5, u64::MAX, Claim::Owned(&id("d")));
    assert_eq!(m.lookup(&k, u64::MAX), MapAnswer::Conflicting);
}

#[test]
fn retention_forgets_old_ranges_and_raises_the_horizon() {
    let mut m = map();
    own(&mut m, "10.0.0.1", "a", 0, 10);
    own(&mut m, "10.0.0.1", "b", 100, 110);
    own(&mut m, "10.0.0.2", "c", 5, 20);
    assert_eq!(m.next_expiry(60 * S), Some(T0 + 11 * S + 60 * S));
    m.expire(T0 + 50 * S);
    assert_eq!(m.horizon(), T0 + 50 * S);
    assert_eq!(segs(&m, "10.0.0.1"), vec![seg(100, 110, "b")]);
    assert_eq!(segs(&m, "10.0.0.2"), vec![]);
    assert_eq!((m.ranges(), m.tracked_ips()), (1, 1));
    assert_eq!(m.counters().expired, 2);
    // Lookups reaching back to the horizon; heartbeats ending before it.
    assert_eq!(at(&m, "10.0.0.1", 5), MapAnswer::BeforeRetention);
    assert_eq!(at(&m, "10.0.0.1", 52), MapAnswer::BeforeRetention);
    assert_eq!(at(&m, "10.0.0.1", 53), MapAnswer::NoOwner);
    assert_eq!(at(&m, "10.0.0.1", 105), MapAnswer::Owner(id("b")));
    assert!(!own(&mut m, "10.0.0.9", "a", 40, 50));
    assert!(own(&mut m, "10.0.0.9", "a", 40, 51));
    let c = m.counters();
    assert_eq!((c.heartbeats_too_old, c.heartbeats), (1, 4));
    m.expire(T0 + 200 * S);
    assert_eq!(
        (m.ranges(), m.tracked_ips(), m.counters().expired),
        (0, 0, 4)
    );
    assert_eq!(m.next_expiry(60 * S), None);
}

#[test]
fn the_size_cap_evicts_the_oldest_ends() {
    let mut m = map();
    // 20 IPs, each one range ending at i seconds (oldest first), and one IP with an
    // early range and a late one.
    for i in 0..20u64 {
        own(&mut m, &format!("10.0.1.{i}"), "w", i, i + 100);
    }
    own(&mut m, "10.0.0.1", "a", 0, 50);
    own(&mut m, "10.0.0.1", "b", 500, 600);
    assert_eq!(m.ranges(), 22);
    m.enforce_cap(30);
    assert_eq!(m.ranges(), 22);
    m.enforce_cap(20); // down to 18
    assert!(m.ranges() <= 18, "{}", m.ranges());
    let c = m.counters();
    assert_eq!(c.evicted, 22 - m.ranges() as u64);
    assert_eq!(c.expired, 0);
    // The early range of 10.0.0.1 went first; its late one stays.
    assert_eq!(segs(&m, "10.0.0.1"), vec![seg(500, 600, "b")]);
    assert_eq!(segs(&m, "10.0.1.0"), vec![]);
    assert_eq!(segs(&m, "10.0.1.19"), vec![seg(19, 119, "w")]);
    // The horizon is the last evicted end: what ended then may be gone.
    let horizon = m.horizon();
    assert!((T0 + 100 * S..T0 + 119 * S).contains(&horizon), "{horizon}");
    assert_eq!(at(&m, "10.0.0.1", 40), MapAnswer::BeforeRetention);
    assert_eq!(at(&m, "10.0.1.19", 110), MapAnswer::Owner(id("w")));
}

#[test]
fn a_late_early_heartbeat_refiles_its_ip() {
    let mut m = map();
    own(&mut m, "10.0.0.1", "a", 1000, 1010);
    // An earlier range arrives later: the IP must be found by the early bucket.
    own(&mut m, "10.0.0.1", "b", 10, 20);
    m.expire(T0 + 500 * S);
    assert_eq!(segs(&m, "10.0.0.1"), vec![seg(1000, 1010, "a")]);
    assert_eq!(m.counters().expired, 1);
    m.expire(T0 + 2000 * S);
    assert_eq!(m.tracked_ips(), 0);
}

#[test]
fn unused_workload_symbols_are_collected() {
    let mut m = map();
    for i in 0..3000u64 {
        own(
            &mut m,
            &format!("10.1.{}.{}", i / 256, i % 256),
            &format!("w{i}"),
            i,
            i + 10,
        );
    }
    m.expire(T0 + 3000 * S);
    m.collect_workloads();
    assert!(m.workloads.len() <= 10, "{}", m.workloads.len());
    assert_eq!(at(&m, "10.1.11.183", 3004), MapAnswer::Owner(id("w2999")));
}

#[test]
fn map_bytes_follow_the_ranges() {
    assert_eq!(size_of::<Segment>(), 24);
    assert_eq!(size_of::<(IpKey, IpEntry)>(), 64);
    let mut m = map();
    let empty = m.bytes();
    // 1,000 IPs whose ranges end within 10 s.
    for i in 0..1000u64 {
        own(
            &mut m,
            &format!("10.2.{}.{}", i / 256, i % 256),
            "w",
            i / 100,
            i / 100,
        );
    }
    let full = m.bytes();
    let per_ip = (full - empty) / 1000;
    assert!((80..200).contains(&per_ip), "{per_ip} bytes an IP");
}

#[test]
fn conflicts_keep_an_example() {
    let mut m = map();
    own(&mut m, "10.0.0.1", "a", 0, 10);
    own(&mut m, "10.0.0.1", "b", 5, 15);
    let ex = m.log.example.clone().expect("an example");
    assert_eq!(ex.ip, "10.0.0.1".parse::<IpAddr>().expect("ip"));
    assert_eq!((ex.first, ex.second), (id("a"), id("b")));
    m.log_conflicts(T0);
}
