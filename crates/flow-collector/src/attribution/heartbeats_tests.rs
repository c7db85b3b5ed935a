//! Several collector nodes sharing their heartbeats, on simulated time: each node
//! receives some hosts' chunks, and the heartbeats taken from each are encoded,
//! decoded and applied to the others, as the heartbeat topic carries them.

use std::net::IpAddr;

use super::*;
use crate::attribution::{
    ip_key::{Hosts, IpKey},
    ownership::Mark,
    time::nanos,
};

/// A node with sharing on (the settings of most tests otherwise).
fn node() -> Harness {
    Harness::new(config().with_heartbeat_sharing(true))
}

/// Takes `from`'s heartbeats, sends them through their encoding, and applies them to
/// each of `to` at `now_ms`. Returns how many there were.
fn exchange(from: &mut Harness, to: &mut [&mut Harness], now_ms: i64) -> usize {
    let taken = from.a.take_heartbeats();
    let decoded: Vec<Heartbeat> = taken
        .iter()
        .map(|h| Heartbeat::decode(&h.encode()).expect("a heartbeat decodes"))
        .collect();
    assert_eq!(decoded, taken);
    for node in to {
        node.a.apply_heartbeats(&decoded, at(now_ms));
    }
    taken.len()
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

/// The map's key of a global address.
fn key(addr: &str) -> IpKey {
    IpKey::new(ip(addr), Hosts::default().intern("any"))
}

/// The segments `node`'s map holds for the global address `addr`, with workloads
/// named (each node numbers its own symbols).
fn segments(node: &Harness, addr: &str) -> Vec<(u64, u64, Option<String>, &'static str)> {
    node.a
        .map_segments(&key(addr))
        .into_iter()
        .map(|(start, end, w, mark)| {
            let kind = match mark {
                Mark::Owned(_) => "owned",
                Mark::Conflict => "conflict",
                Mark::Shared => "shared",
            };
            (start, end, w.map(|w| w.as_str().to_owned()), kind)
        })
        .collect()
}

/// A client flow of host `client` (no workload of its own) to `remote`, from port
/// `port`, over `[start, end]` ms.
fn flow(port: u16, remote: &str, start: i64, end: i64) -> FlowRecord {
    rec(&format!("10.0.0.2:{port}"), remote, Some(start), end, None)
}

#[test]
fn a_flow_on_one_node_is_attributed_from_another_nodes_heartbeats() {
    // Host h2's workload "a" owns 10.0.0.1 for the minute before T0; its chunk goes
    // to node B. Host h1's flow to it, from the middle of that minute, goes to node A,
    // whose own hosts never claim 10.0.0.1.
    let (mut a, mut b) = (node(), node());
    let server_chunk = vec![hb("10.0.0.1", "a", -60 * SEC, 0)];
    let client_chunk = vec![flow(50000, "10.0.0.1:443", -30 * SEC, -29 * SEC)];
    b.push("h2", server_chunk.clone(), SEC);
    a.push("h1", client_chunk.clone(), SEC);
    // Without B's heartbeats, A knows no owner: the flow waits.
    a.advance(30 * SEC);
    assert!(a.take().is_empty());
    assert_eq!(a.a.stats().held, 1);
    // B publishes once a second; the heartbeats reach A two seconds later, well
    // within the hold-back: the flow, past its peer wait, is decided at once.
    assert_eq!(exchange(&mut b, &mut [&mut a], 32 * SEC), 1);
    let flows = a.take();
    assert_eq!(verdict(by_port(&flows, 50000)), HEARTBEAT_A);
    // One node receiving both chunks says the same.
    let mut one = Harness::new(config());
    one.push("h2", server_chunk, SEC);
    one.push("h1", client_chunk, SEC);
    one.advance(32 * SEC);
    assert_eq!(verdict(by_port(&one.take(), 50000)), HEARTBEAT_A);
    // And had they arrived after its hold-back, unattributed, as for a lost chunk.
    let (mut a, mut b) = (node(), node());
    b.push("h2", vec![hb("10.0.0.1", "a", -60 * SEC, 0)], SEC);
    a.push(
        "h1",
        vec![flow(50000, "10.0.0.1:443", -30 * SEC, -29 * SEC)],
        SEC,
    );
    a.advance(SEC + 120 * SEC);
    assert_eq!(
        verdict(by_port(&a.take(), 50000)),
        unattributed(Why::NoOwnerKnown)
    );
    exchange(&mut b, &mut [&mut a], 122 * SEC);
    assert!(a.take().is_empty());
    let s = a.a.stats();
    assert_eq!(
        (s.heartbeats_applied_remote, s.heartbeat_ranges_remote),
        (1, 1)
    );
    assert_eq!(b.a.stats().heartbeats_shared_out, 1);
}

#[test]
fn flows_held_before_the_heartbeats_arrive_wait_for_them() {
    // The heartbeats arrive while the flow still waits for its peer: it stays held
    // until the peer wait ends, then the map (now knowing the owner) decides.
    let (mut a, mut b) = (node(), node());
    a.push(
        "h1",
        vec![flow(50000, "10.0.0.1:443", -30 * SEC, -29 * SEC)],
        SEC,
    );
    b.push("h2", vec![hb("10.0.0.1", "a", -60 * SEC, 0)], 2 * SEC);
    exchange(&mut b, &mut [&mut a], 4 * SEC);
    assert!(a.take().is_empty(), "decided before the peer wait ended");
    a.advance(SEC + 5 * SEC);
    assert_eq!(verdict(by_port(&a.take(), 50000)), HEARTBEAT_A);
}

#[test]
fn ip_reuse_across_nodes_never_misattributes() {
    // 10.0.0.7 belongs to h2's "w1" from -600 s to -300 s, then to h3's "w2" from
    // -290 s on. h2's chunks go to node B, h3's to node C, the flows (h1's) to A.
    let old = vec![
        hb("10.0.0.7", "w1", -600 * SEC, -480 * SEC),
        hb("10.0.0.7", "w1", -470 * SEC, -300 * SEC),
    ];
    let new = vec![hb("10.0.0.7", "w2", -290 * SEC, 0)];
    let flows = vec![
        // w1's time, w2's time.
        flow(50001, "10.0.0.7:80", -450 * SEC, -449 * SEC),
        flow(50002, "10.0.0.7:80", -100 * SEC, -99 * SEC),
        // Between the two: nobody.
        flow(50003, "10.0.0.7:80", -295 * SEC, -294 * SEC),
        // At the end of w1's claim: its last heartbeat does not cover the tolerance.
        flow(50004, "10.0.0.7:80", -301 * SEC, -300 * SEC - 500),
        // Just before w2's first heartbeat, short: may have reached w1, whose last
        // records could be lost.
        flow(50005, "10.0.0.7:80", -291 * SEC, -290 * SEC - 500),
        // Just before, but living on into w2's claim: w2's.
        flow(50006, "10.0.0.7:80", -291 * SEC, -280 * SEC),
    ];
    let expected = [
        (50001, (Some("w1"), Src::Heartbeat, None)),
        (50002, (Some("w2"), Src::Heartbeat, None)),
        (50003, unattributed(Why::NoOwnerKnown)),
        (50004, unattributed(Why::OwnerUnconfirmed)),
        (50005, unattributed(Why::OwnerUnconfirmed)),
        (50006, (Some("w2"), Src::Heartbeat, None)),
    ];
    // One node, for reference.
    let mut one = Harness::new(config());
    one.push("h2", old.clone(), SEC);
    one.push("h3", new.clone(), SEC);
    one.push("h1", flows.clone(), SEC);
    one.advance(200 * SEC);
    let out = one.take();
    for (port, v) in expected {
        assert_eq!(verdict(by_port(&out, port)), v, "one node, port {port}");
    }
    // Three nodes, the heartbeats arriving in either order, before or after the
    // flows' peer wait.
    for (b_first, delay) in [(true, 2), (false, 2), (true, 30), (false, 30)] {
        let (mut a, mut b, mut c) = (node(), node(), node());
        b.push("h2", old.clone(), SEC);
        c.push("h3", new.clone(), SEC);
        a.push("h1", flows.clone(), SEC);
        let when = (1 + delay) * SEC;
        if b_first {
            exchange(&mut b, &mut [&mut a, &mut c], when);
            exchange(&mut c, &mut [&mut a, &mut b], when);
        } else {
            exchange(&mut c, &mut [&mut a, &mut b], when);
            exchange(&mut b, &mut [&mut a, &mut c], when);
        }
        a.advance(200 * SEC);
        let out = a.take();
        for (port, v) in expected {
            assert_eq!(
                verdict(by_port(&out, port)),
                v,
                "port {port}, {} first, {delay} s",
                if b_first { "B" } else { "C" }
            );
        }
        // Each node's map ends up the same.
        let s = segments(&a, "10.0.0.7");
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s, segments(&b, "10.0.0.7"));
        assert_eq!(s, segments(&c, "10.0.0.7"));
        assert_eq!(s, segments(&one, "10.0.0.7"));
    }
    // Only w2's heartbeats have arrived (w1's chunk late or lost): the flows to w1
    // just before the handover are never given to w2.
    let (mut a, mut c) = (node(), node());
    c.push("h3", new.clone(), SEC);
    a.push("h1", flows.clone(), SEC);
    exchange(&mut c, &mut [&mut a], 3 * SEC);
    a.advance(200 * SEC);
    let out = a.take();
    for port in [50001, 50003, 50004, 50005] {
        assert_ne!(
            verdict(by_port(&out, port)).0,
            Some("w2"),
            "port {port} given to the new owner"
        );
    }
}

#[test]
fn compaction_keeps_one_heartbeat_per_host_ip_and_claim_with_the_exact_union() {
    let mut a = node();
    a.push(
        "h1",
        vec![
            // "a" on 10.0.0.1: two overlapping records, one touching, and one after
            // a gap (which stays apart: another workload may have claimed the gap).
            hb("10.0.0.1", "a", 0, 10 * SEC),
            hb("10.0.0.1", "a", 5 * SEC, 20 * SEC),
            hb("10.0.0.1", "a", 40 * SEC, 50 * SEC),
            hb("10.0.0.1", "a", 20 * SEC, 21 * SEC),
            // "b" on the same IP: its own heartbeat.
            hb("10.0.0.1", "b", 30 * SEC, 35 * SEC),
            // A connect-map record: shared.
            rec(
                "10.0.0.5:8080",
                "10.0.0.9:1",
                Some(SEC),
                2 * SEC,
                Some(("s", CONNECT_MAP)),
            ),
            // Loopback: scoped to the host.
            hb("127.0.0.1", "a", 0, SEC),
            // No workload: no claim.
            rec("10.0.0.6:1", "10.0.0.9:2", Some(0), SEC, None),
        ],
        60 * SEC,
    );
    a.push("h2", vec![hb("127.0.0.1", "a", 0, SEC)], 60 * SEC);
    assert_eq!(a.a.stats().heartbeat_book_entries, 5);
    let taken = a.a.take_heartbeats();
    let ns = |ms: i64| nanos(at(ms));
    type Described<'a> = (String, IpAddr, Option<&'a str>, Vec<(u64, u64)>);
    let described: Vec<Described<'_>> = taken
        .iter()
        .map(|h| {
            let w = match h.claim() {
                HeartbeatClaim::Owned(w) => Some(w.as_str()),
                HeartbeatClaim::Shared => None,
            };
            (h.host().to_owned(), h.ip(), w, h.ranges().to_vec())
        })
        .collect();
    assert_eq!(
        described,
        [
            (
                "h1".to_owned(),
                ip("10.0.0.1"),
                Some("a"),
                vec![(ns(0), ns(21 * SEC)), (ns(40 * SEC), ns(50 * SEC))]
            ),
            (
                "h1".to_owned(),
                ip("10.0.0.1"),
                Some("b"),
                vec![(ns(30 * SEC), ns(35 * SEC))]
            ),
            (
                "h1".to_owned(),
                ip("10.0.0.5"),
                None,
                vec![(ns(SEC), ns(2 * SEC))]
            ),
            (
                "h1".to_owned(),
                ip("127.0.0.1"),
                Some("a"),
                vec![(ns(0), ns(SEC))]
            ),
            (
                "h2".to_owned(),
                ip("127.0.0.1"),
                Some("a"),
                vec![(ns(0), ns(SEC))]
            ),
        ]
    );
    let s = a.a.stats();
    assert_eq!(
        (
            s.heartbeats_shared_out,
            s.heartbeat_ranges_shared_out,
            s.heartbeat_book_entries
        ),
        (5, 6, 0)
    );
    // Drained: nothing more until more records come.
    assert!(a.a.take_heartbeats().is_empty());
    // Without sharing, nothing is kept.
    let mut off = Harness::new(config());
    off.push("h1", vec![hb("10.0.0.1", "a", 0, SEC)], SEC);
    assert!(off.a.take_heartbeats().is_empty());
    assert_eq!(off.a.stats().heartbeat_book_entries, 0);
}

#[test]
fn applied_heartbeats_build_the_map_the_records_would() {
    // Records of several workloads, each on its own IP, in an order that is not the
    // time order, with overlaps, gaps within the merge gap and gaps beyond it.
    let mut records = Vec::new();
    for (i, w) in ["a", "b", "c", "d"].into_iter().enumerate() {
        let ip = format!("10.0.1.{i}");
        let base = i as i64 * 7 * SEC;
        for (s, e) in [
            (100, 130),
            (0, 20),
            (10, 25),
            (50, 55),
            (200, 210),
            (26, 27),
            (260, 300),
        ] {
            records.push(hb(&ip, w, base + s * SEC, base + e * SEC));
        }
    }
    records.push(rec(
        "10.0.1.9:8080",
        "10.0.0.9:1",
        Some(SEC),
        2 * SEC,
        Some(("s", CONNECT_MAP)),
    ));
    let (mut direct, mut source, mut remote) = (node(), node(), node());
    direct.push("h1", records.clone(), 400 * SEC);
    source.push("h1", records, 400 * SEC);
    exchange(&mut source, &mut [&mut remote], 401 * SEC);
    let addrs: Vec<String> = [0, 1, 2, 3, 9]
        .iter()
        .map(|i| format!("10.0.1.{i}"))
        .collect();
    for addr in &addrs {
        assert!(segments(&direct, addr).len() >= 2 || addr == "10.0.1.9");
        assert_eq!(segments(&remote, addr), segments(&direct, addr), "{addr}");
    }
    // Applying them again changes nothing (a node reading its own heartbeats back,
    // or the topic replayed).
    let before: Vec<_> = addrs.iter().map(|a| segments(&remote, a)).collect();
    let ranges = remote.a.stats().ranges;
    let mut again = node();
    again.push(
        "h1",
        vec![hb("10.0.1.0", "a", 100 * SEC, 101 * SEC)],
        400 * SEC,
    );
    let taken = again.a.take_heartbeats();
    remote.a.apply_heartbeats(&taken, at(402 * SEC));
    remote.a.apply_heartbeats(&taken, at(402 * SEC));
    let own = direct.a.take_heartbeats();
    direct.a.apply_heartbeats(&own, at(402 * SEC));
    let after: Vec<_> = addrs.iter().map(|a| segments(&remote, a)).collect();
    assert_eq!(before, after);
    assert_eq!(remote.a.stats().ranges, ranges);
    assert_eq!(remote.a.stats().conflicts, 0);
    for addr in &addrs {
        assert_eq!(segments(&remote, addr), segments(&direct, addr), "{addr}");
    }
}

#[test]
fn scoped_and_shared_claims_travel_with_their_host() {
    let (mut a, mut b) = (node(), node());
    // h1's loopback service "a", and a connect-map workload on its shared IPv4; both
    // reach node A.
    a.push(
        "h1",
        vec![
            hb("127.0.0.1", "a", -60 * SEC, 0),
            rec(
                "10.0.0.5:8080",
                "10.0.0.9:1",
                Some(-60 * SEC),
                0,
                Some(("s", CONNECT_MAP)),
            ),
        ],
        SEC,
    );
    exchange(&mut a, &mut [&mut b], 3 * SEC);
    // On node B: h1's own loopback flow is "a"'s; h2's is nobody's; a flow to the
    // shared IPv4 without its peer is shared_address.
    b.push(
        "h1",
        vec![rec(
            "127.0.0.1:50000",
            "127.0.0.1:8080",
            Some(-30 * SEC),
            -29 * SEC,
            None,
        )],
        4 * SEC,
    );
    b.push(
        "h2",
        vec![
            rec(
                "127.0.0.1:50001",
                "127.0.0.1:8080",
                Some(-30 * SEC),
                -29 * SEC,
                None,
            ),
            flow(50002, "10.0.0.5:8080", -30 * SEC, -29 * SEC),
        ],
        4 * SEC,
    );
    b.advance(4 * SEC + 120 * SEC);
    let out = b.take();
    assert_eq!(verdict(by_port(&out, 50000)), HEARTBEAT_A);
    assert_eq!(
        verdict(by_port(&out, 50001)),
        unattributed(Why::NoOwnerKnown)
    );
    assert_eq!(
        verdict(by_port(&out, 50002)),
        unattributed(Why::SharedAddress)
    );
    // B shares nothing it did not receive from its own hosts' records.
    assert!(b.a.take_heartbeats().is_empty());
}

#[test]
fn heartbeats_older_than_the_map_are_ignored_and_counted() {
    let mut a = Harness::new(
        config()
            .with_heartbeat_sharing(true)
            .with_retention(Duration::from_secs(600)),
    );
    let mut old = node();
    old.push("h2", vec![hb("10.0.0.1", "a", 0, SEC)], SEC);
    let taken = old.a.take_heartbeats();
    a.push("h1", vec![hb("10.0.0.2", "b", 0, SEC)], SEC);
    a.advance(700 * SEC);
    a.a.apply_heartbeats(&taken, at(700 * SEC));
    let s = a.a.stats();
    assert_eq!(s.heartbeat_ranges_remote, 1);
    assert_eq!(s.heartbeat_ranges_remote_too_old, 1);
    assert_eq!(s.heartbeats_too_old, 1);
    assert!(segments(&a, "10.0.0.1").is_empty());
}

#[test]
fn the_book_keeps_its_workloads_named_while_the_map_forgets_them() {
    // 1,100 workloads claim an IP each, then the map forgets them all (retention)
    // and frees their symbols (the peer index, capped at 10 records, keeps only the
    // last ten); new workloads take the symbols over. The claims not taken yet still
    // name the workloads that made them.
    let mut a = Harness::new(
        config()
            .with_heartbeat_sharing(true)
            .with_retention(Duration::from_secs(60))
            .with_max_held(10),
    );
    let first: Vec<FlowRecord> = (0..1100)
        .map(|i| {
            hb(
                &format!("10.1.{}.{}", i / 256, i % 256),
                &format!("old-{i}"),
                -10 * SEC,
                -9 * SEC,
            )
        })
        .collect();
    a.push("h1", first, 0);
    a.advance(300 * SEC);
    assert_eq!(a.a.stats().ranges, 0);
    let second: Vec<FlowRecord> = (0..1100)
        .map(|i| {
            hb(
                &format!("10.2.{}.{}", i / 256, i % 256),
                &format!("new-{i}"),
                290 * SEC,
                300 * SEC,
            )
        })
        .collect();
    a.push("h1", second, 300 * SEC);
    let taken = a.a.take_heartbeats();
    assert_eq!(taken.len(), 2200);
    for h in &taken {
        let HeartbeatClaim::Owned(w) = h.claim() else {
            panic!("{h}");
        };
        let IpAddr::V4(v4) = h.ip() else {
            panic!("{h}");
        };
        let [_, second, third, fourth] = v4.octets();
        let i = usize::from(third) * 256 + usize::from(fourth);
        let expected = match second {
            1 => format!("old-{i}"),
            _ => format!("new-{i}"),
        };
        assert_eq!(w.as_str(), expected, "{h}");
    }
}
