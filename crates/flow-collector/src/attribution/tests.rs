//! Scenario tests of the attributor on simulated time.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use flow_batch::wire::{BatchId, InstanceId};
use flow_record::{FlowRecord, IdentitySource, WorkloadId};

use super::*;
use RemoteIdentitySource as Src;
use RemoteUnattributedReason as Why;

/// The simulated epoch of every test: 2023-11-14T22:13:20Z.
const T0_SECS: u64 = 1_700_000_000;

/// `ms` milliseconds after (or before) T0.
fn at(ms: i64) -> SystemTime {
    let t0 = UNIX_EPOCH + Duration::from_secs(T0_SECS);
    if ms >= 0 {
        t0 + Duration::from_millis(ms.unsigned_abs())
    } else {
        t0 - Duration::from_millis(ms.unsigned_abs())
    }
}

const SEC: i64 = 1_000;

/// A record from `local` to `remote` over `[start, end]` (ms after T0; no start:
/// `None`), of workload `w` when given.
fn rec(
    local: &str,
    remote: &str,
    start: Option<i64>,
    end: i64,
    w: Option<(&str, IdentitySource)>,
) -> FlowRecord {
    let b = flow_testkit::record()
        .local(local)
        .remote(remote)
        .t_start(start.map(at))
        .t_end(at(end));
    match w {
        Some((id, source)) => b.workload(id, source).build(),
        None => b.build(),
    }
}

const IP_MAP: IdentitySource = IdentitySource::IpMap;
const CONNECT_MAP: IdentitySource = IdentitySource::ConnectMap;

/// A heartbeat of `w` on `ip` over `[start, end]` ms, as a record of a connection
/// from port 1 to a documentation address (whose own attribution tests ignore).
fn hb(ip: &str, w: &str, start: i64, end: i64) -> FlowRecord {
    rec(
        &format!("{ip}:1"),
        "192.0.2.250:1",
        Some(start),
        end,
        Some((w, IP_MAP)),
    )
}

/// The settings of most tests: hold-back 120 s, peer wait 5 s, tolerance 2 s, merge
/// gap 30 s.
fn config() -> AttributionConfig {
    AttributionConfig::default().with_peer_wait(Duration::from_secs(5))
}

struct Harness {
    a: Attributor,
    sequence: u64,
}

impl Harness {
    fn new(config: AttributionConfig) -> Harness {
        Harness {
            a: Attributor::new(config),
            sequence: 0,
        }
    }

    fn push(&mut self, host: &str, records: Vec<FlowRecord>, now_ms: i64) {
        self.sequence += 1;
        let batch = Arc::new(BatchId {
            host: host.to_owned(),
            instance: InstanceId::new(7),
            sequence: self.sequence,
        });
        self.a.push_chunk(batch, records, at(now_ms));
    }

    fn advance(&mut self, now_ms: i64) {
        self.a.advance(at(now_ms));
    }

    /// The flows decided so far, without the heartbeats' own flows (to 192.0.2.250).
    fn take(&mut self) -> Vec<AttributedFlow> {
        std::iter::from_fn(|| self.a.pop_ready())
            .filter(|f| {
                f.record.remote.ip()
                    != "192.0.2.250"
                        .parse::<std::net::IpAddr>()
                        .ok()
                        .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]))
            })
            .collect()
    }
}

/// What a flow was decided to be.
fn verdict(f: &AttributedFlow) -> (Option<&str>, Src, Option<Why>) {
    (
        f.remote_workload_id.as_ref().map(WorkloadId::as_str),
        f.remote_identity_source,
        f.remote_unattributed_reason,
    )
}

/// The one flow with local port `port`.
fn by_port(flows: &[AttributedFlow], port: u16) -> &AttributedFlow {
    let mut found = flows.iter().filter(|f| f.record.local.port() == port);
    let f = found
        .next()
        .unwrap_or_else(|| panic!("no flow from port {port}: {flows:#?}"));
    assert!(found.next().is_none(), "two flows from port {port}");
    f
}

const HEARTBEAT_A: (Option<&str>, Src, Option<Why>) = (Some("a"), Src::Heartbeat, None);

fn unattributed(why: Why) -> (Option<&'static str>, Src, Option<Why>) {
    (None, Src::None, Some(why))
}

#[test]
fn first_connection_just_before_the_servers_first_heartbeat() {
    // The server's workload "a" owned nothing before; its first record starts at T0.
    // The clients' sockets opened 0.3 s before (connect precedes accept), and with
    // their clocks 1 s ahead or behind.
    for (client_start, skew) in [(-300, 0), (-300, SEC), (-300, -SEC)] {
        let mut h = Harness::new(config());
        // The collector has known the fleet for ten minutes, and nobody owned
        // 10.0.0.1 in that time.
        h.push(
            "other",
            vec![hb("10.9.9.9", "z", -600 * SEC, -599 * SEC)],
            -600 * SEC,
        );
        let start = client_start + skew;
        h.push(
            "client",
            vec![rec(
                "10.0.0.2:50000",
                "10.0.0.1:443",
                Some(start),
                start + 100,
                Some(("c", IP_MAP)),
            )],
            SEC,
        );
        h.push("server", vec![hb("10.0.0.1", "a", 0, 200)], 2 * SEC);
        h.advance(SEC + 4_999);
        assert!(h.take().is_empty(), "decided before the peer wait ended");
        h.advance(SEC + 5_000);
        let flows = h.take();
        assert_eq!(flows.len(), 1);
        let f = by_port(&flows, 50000);
        assert_eq!(verdict(f), HEARTBEAT_A, "skew {skew}");
        assert_eq!(f.host_id(), "client");
        assert_eq!(f.record_index, 0);
    }
    // Had another workload owned the IP up to a second before: no guess.
    let mut h = Harness::new(config());
    h.push("old", vec![hb("10.0.0.1", "old", -60 * SEC, -SEC)], 0);
    h.push(
        "client",
        vec![rec("10.0.0.2:50000", "10.0.0.1:443", Some(-300), 0, None)],
        SEC,
    );
    h.push("server", vec![hb("10.0.0.1", "a", 0, 200)], 2 * SEC);
    h.advance(6 * SEC);
    assert_eq!(
        verdict(by_port(&h.take(), 50000)),
        unattributed(Why::OwnerChanged)
    );
    // Had it owned the IP until a minute before (its last records lost, so its claim
    // ends early), the short flow may have reached it: not confirmed, never "a".
    // A flow that outlived the tolerance into "a"'s claim was "a"'s.
    let mut h = Harness::new(config());
    h.push(
        "old",
        vec![hb("10.0.0.1", "old", -600 * SEC, -60 * SEC)],
        -600 * SEC,
    );
    h.push(
        "client",
        vec![
            rec("10.0.0.2:50000", "10.0.0.1:443", Some(-300), 0, None),
            rec("10.0.0.2:50001", "10.0.0.1:443", Some(-300), 5 * SEC, None),
        ],
        SEC,
    );
    h.push("server", vec![hb("10.0.0.1", "a", 0, 200 * SEC)], 2 * SEC);
    h.advance(200 * SEC);
    let flows = h.take();
    assert_eq!(
        verdict(by_port(&flows, 50000)),
        unattributed(Why::OwnerUnconfirmed)
    );
    assert_eq!(verdict(by_port(&flows, 50001)), HEARTBEAT_A);
}

#[test]
fn shared_ipv4_through_the_connect_map_is_told_apart_by_peer_records() {
    let mut h = Harness::new(config());
    // Workloads "a" (port 8080) and "b" (port 9090) share 10.0.0.5 on host "shared";
    // client "c" on 10.0.0.9 calls both.
    h.push(
        "client",
        vec![
            rec(
                "10.0.0.9:40001",
                "10.0.0.5:8080",
                Some(0),
                500,
                Some(("c", IP_MAP)),
            ),
            rec(
                "10.0.0.9:40002",
                "10.0.0.5:9090",
                Some(10),
                510,
                Some(("c", IP_MAP)),
            ),
            // A flow to the shared IP whose other end sends no record.
            rec(
                "10.0.0.9:40003",
                "10.0.0.5:7070",
                Some(20),
                520,
                Some(("c", IP_MAP)),
            ),
        ],
        SEC,
    );
    h.push(
        "shared",
        vec![
            rec(
                "10.0.0.5:8080",
                "10.0.0.9:40001",
                Some(5),
                495,
                Some(("a", CONNECT_MAP)),
            ),
            rec(
                "10.0.0.5:9090",
                "10.0.0.9:40002",
                Some(15),
                505,
                Some(("b", CONNECT_MAP)),
            ),
        ],
        2 * SEC,
    );
    // Decided as soon as the peers arrived, both ways.
    let flows = h.take();
    assert_eq!(flows.len(), 4);
    assert_eq!(
        verdict(by_port(&flows, 40001)),
        (Some("a"), Src::PeerRecord, None)
    );
    assert_eq!(
        verdict(by_port(&flows, 40002)),
        (Some("b"), Src::PeerRecord, None)
    );
    assert_eq!(
        verdict(by_port(&flows, 8080)),
        (Some("c"), Src::PeerRecord, None)
    );
    assert_eq!(
        verdict(by_port(&flows, 9090)),
        (Some("c"), Src::PeerRecord, None)
    );
    // The map knows only that the address is shared.
    h.advance(SEC + 5 * SEC);
    let flows = h.take();
    assert_eq!(
        verdict(by_port(&flows, 40003)),
        unattributed(Why::SharedAddress)
    );
    let s = h.a.stats();
    assert_eq!(s.flows_in, 5);
    assert_eq!(s.flows_out, 5);
    assert_eq!(s.attributed_peer_record, 4);
    assert_eq!(s.attributed_heartbeat, 0);
    assert_eq!(s.attributed_static, 0);
    assert_eq!(s.unattributed_for(Why::SharedAddress), 1);
    assert_eq!(s.unattributed_total(), 1);
    assert_eq!(s.heartbeats, 5);
    assert_eq!(s.conflicts, 0);
    assert_eq!(s.held, 0);
    assert_eq!(s.tracked_ips, 2);
    assert_eq!(s.ranges, 2);
    assert_eq!(s.peer_index_entries, 5);
    assert!(s.map_bytes > 0);
}

#[test]
fn ip_reuse_old_flows_old_owner_new_flows_new_owner() {
    let mut h = Harness::new(config());
    h.push(
        "h1",
        vec![
            hb("10.0.0.7", "a", 0, 20 * SEC),
            hb("10.0.0.7", "a", 40 * SEC, 60 * SEC),
        ],
        60 * SEC,
    );
    h.push(
        "h2",
        vec![
            hb("10.0.0.7", "b", 61 * SEC, 100 * SEC),
            hb("10.0.0.7", "b", 300 * SEC, 400 * SEC),
        ],
        400 * SEC,
    );
    h.push(
        "client",
        vec![
            rec(
                "10.0.0.2:1001",
                "10.0.0.7:80",
                Some(30 * SEC),
                31 * SEC,
                None,
            ),
            rec(
                "10.0.0.2:1002",
                "10.0.0.7:80",
                Some(350 * SEC),
                351 * SEC,
                None,
            ),
            rec("10.0.0.2:1003", "10.0.0.7:80", Some(60_500), 70 * SEC, None),
            rec(
                "10.0.0.2:1004",
                "10.0.0.7:80",
                Some(80 * SEC),
                81 * SEC,
                None,
            ),
        ],
        401 * SEC,
    );
    h.advance(406 * SEC);
    let flows = h.take();
    assert_eq!(verdict(by_port(&flows, 1001)), HEARTBEAT_A);
    assert_eq!(
        verdict(by_port(&flows, 1002)),
        (Some("b"), Src::Heartbeat, None)
    );
    assert_eq!(
        verdict(by_port(&flows, 1003)),
        unattributed(Why::OwnerChanged)
    );
    assert_eq!(
        verdict(by_port(&flows, 1004)),
        (Some("b"), Src::Heartbeat, None)
    );
    assert_eq!(h.a.stats().conflicts, 0);
}

#[test]
fn overlapping_claims_are_conflicts_and_never_attribute() {
    let mut h = Harness::new(config());
    h.push("h1", vec![hb("10.0.0.7", "a", 0, 100 * SEC)], 100 * SEC);
    h.push(
        "h2",
        vec![hb("10.0.0.7", "b", 40 * SEC, 60 * SEC)],
        100 * SEC,
    );
    h.push(
        "client",
        vec![
            rec(
                "10.0.0.2:1001",
                "10.0.0.7:80",
                Some(50 * SEC),
                51 * SEC,
                None,
            ),
            rec(
                "10.0.0.2:1002",
                "10.0.0.7:80",
                Some(10 * SEC),
                11 * SEC,
                None,
            ),
            rec(
                "10.0.0.2:1003",
                "10.0.0.7:80",
                Some(61 * SEC),
                62 * SEC,
                None,
            ),
        ],
        101 * SEC,
    );
    h.advance(106 * SEC);
    let flows = h.take();
    assert_eq!(
        verdict(by_port(&flows, 1001)),
        unattributed(Why::ConflictingOwners)
    );
    assert_eq!(verdict(by_port(&flows, 1002)), HEARTBEAT_A);
    // 1 s after the conflict, within the tolerance.
    assert_eq!(
        verdict(by_port(&flows, 1003)),
        unattributed(Why::ConflictingOwners)
    );
    let s = h.a.stats();
    assert_eq!(
        (s.conflicts, s.unattributed_for(Why::ConflictingOwners)),
        (1, 2)
    );
}

#[test]
fn hold_back_expiry_no_owner_known_or_no_start_time() {
    let mut h = Harness::new(config());
    h.push(
        "client",
        vec![
            rec("10.0.0.2:1001", "10.0.0.8:80", Some(0), SEC, None),
            rec("10.0.0.2:1002", "10.0.0.8:80", None, SEC, None),
        ],
        2 * SEC,
    );
    assert_eq!(h.a.next_deadline(), Some(at(7 * SEC)));
    h.advance(7 * SEC);
    assert!(h.take().is_empty());
    assert_eq!(h.a.stats().held, 2);
    // Now only the hold-back (and the peer index's expiry) remain.
    assert_eq!(h.a.next_deadline(), Some(at(122 * SEC)));
    h.advance(122 * SEC - 1);
    assert!(h.take().is_empty());
    h.advance(122 * SEC);
    let flows = h.take();
    assert_eq!(
        verdict(by_port(&flows, 1001)),
        unattributed(Why::NoOwnerKnown)
    );
    assert_eq!(
        verdict(by_port(&flows, 1002)),
        unattributed(Why::NoStartTime)
    );
    assert_eq!(h.a.stats().held, 0);
}

#[test]
fn heartbeats_arriving_during_the_hold_back_decide_at_once() {
    let mut h = Harness::new(config());
    h.push(
        "client",
        vec![
            rec("10.0.0.2:1001", "10.0.0.8:80", Some(0), SEC, None),
            rec("10.0.0.2:1002", "10.0.0.8:80", None, SEC, None),
            rec("10.0.0.2:1003", "10.0.0.9:80", Some(0), SEC, None),
        ],
        2 * SEC,
    );
    h.advance(7 * SEC);
    assert!(h.take().is_empty());
    // 10.0.0.8's owner reports 30 s later: its flows go out without waiting for an
    // advance; the other one keeps waiting.
    h.push(
        "server",
        vec![hb("10.0.0.8", "a", -10 * SEC, 30 * SEC)],
        30 * SEC,
    );
    let flows = h.take();
    assert_eq!(flows.len(), 2);
    assert_eq!(verdict(by_port(&flows, 1001)), HEARTBEAT_A);
    assert_eq!(verdict(by_port(&flows, 1002)), HEARTBEAT_A);
    // A heartbeat far from the flow's time leaves it waiting.
    h.push(
        "server",
        vec![hb("10.0.0.9", "b", 60 * SEC, 61 * SEC)],
        61 * SEC,
    );
    assert!(h.take().is_empty());
    // 1003, and the flows of the two heartbeats' own records.
    assert_eq!(h.a.stats().held, 3);
}

#[test]
fn static_table_is_consulted_after_the_heartbeats() -> Result<(), StaticOwnersError> {
    let table = StaticOwners::parse(
        "10.9.0.0/16 static-net\n10.9.1.1 static-one\n10.9.3.3 static-three\n",
        std::path::Path::new("owners"),
    )?;
    let mut h = Harness::new(config().with_static_owners(table));
    h.push(
        "servers",
        vec![
            hb("10.9.1.1", "a", 0, 10 * SEC),
            hb("10.9.2.2", "x", 0, 10 * SEC),
            hb("10.9.2.2", "y", 0, 10 * SEC),
        ],
        10 * SEC,
    );
    h.push(
        "client",
        vec![
            rec("10.0.0.2:1001", "10.9.1.1:80", Some(5 * SEC), 6 * SEC, None),
            rec("10.0.0.2:1002", "10.9.1.2:80", Some(5 * SEC), 6 * SEC, None),
            rec("10.0.0.2:1003", "10.9.2.2:80", Some(5 * SEC), 6 * SEC, None),
            rec("10.0.0.2:1004", "10.9.3.3:80", Some(5 * SEC), 6 * SEC, None),
            rec("10.0.0.2:1005", "10.8.0.1:80", Some(5 * SEC), 6 * SEC, None),
        ],
        10 * SEC,
    );
    // Heartbeat before static; a conflict is not overridden by the table.
    h.advance(15 * SEC);
    let flows = h.take();
    assert_eq!(flows.len(), 2);
    assert_eq!(verdict(by_port(&flows, 1001)), HEARTBEAT_A);
    assert_eq!(
        verdict(by_port(&flows, 1003)),
        unattributed(Why::ConflictingOwners)
    );
    // The table only at the hold-back deadline, longest prefix first.
    h.advance(130 * SEC);
    let flows = h.take();
    assert_eq!(
        verdict(by_port(&flows, 1002)),
        (Some("static-net"), Src::Static, None)
    );
    assert_eq!(
        verdict(by_port(&flows, 1004)),
        (Some("static-three"), Src::Static, None)
    );
    assert_eq!(
        verdict(by_port(&flows, 1005)),
        unattributed(Why::NoOwnerKnown)
    );
    assert_eq!(h.a.stats().attributed_static, 2);
    Ok(())
}

#[test]
fn retention_gives_before_retention() {
    let config = config().with_retention(Duration::from_secs(600));
    let mut h = Harness::new(config);
    h.push("server", vec![hb("10.0.0.7", "a", 0, 10 * SEC)], 10 * SEC);
    h.advance(500 * SEC);
    assert_eq!(h.a.stats().ranges, 1);
    h.advance(700 * SEC);
    let s = h.a.stats();
    assert_eq!((s.ranges, s.tracked_ips, s.ranges_expired), (0, 0, 1));
    // A late flow of that time, and a late heartbeat of that time.
    h.push(
        "client",
        vec![rec(
            "10.0.0.2:1001",
            "10.0.0.7:80",
            Some(5 * SEC),
            6 * SEC,
            None,
        )],
        700 * SEC,
    );
    h.push("server", vec![hb("10.0.0.7", "a", 0, 10 * SEC)], 700 * SEC);
    assert_eq!(h.a.stats().heartbeats_too_old, 1);
    h.advance(705 * SEC);
    let flows = h.take();
    assert_eq!(
        verdict(by_port(&flows, 1001)),
        unattributed(Why::BeforeRetention)
    );
}

#[test]
fn eviction_by_the_size_cap_gives_before_retention() {
    let mut h = Harness::new(config().with_max_ranges(10));
    let beats = (0..20i64)
        .map(|i| {
            hb(
                &format!("10.0.1.{i}"),
                "w",
                i * SEC - 3 * SEC,
                i * SEC + 3 * SEC,
            )
        })
        .collect();
    h.push("servers", beats, 20 * SEC);
    let s = h.a.stats();
    assert!(s.ranges <= 9, "{s:?}");
    assert_eq!(s.ranges_evicted, 20 - s.ranges);
    assert_eq!(s.ranges_expired, 0);
    h.push(
        "client",
        vec![
            rec("10.0.0.2:1001", "10.0.1.0:80", Some(0), 100, None),
            rec(
                "10.0.0.2:1002",
                "10.0.1.19:80",
                Some(19 * SEC),
                19 * SEC + 100,
                None,
            ),
        ],
        21 * SEC,
    );
    h.advance(26 * SEC);
    let flows = h.take();
    assert_eq!(
        verdict(by_port(&flows, 1001)),
        unattributed(Why::BeforeRetention)
    );
    assert_eq!(
        verdict(by_port(&flows, 1002)),
        (Some("w"), Src::Heartbeat, None)
    );
}

#[test]
fn max_held_sends_the_oldest_out() {
    let mut h = Harness::new(config().with_max_held(3));
    for port in 1001..=1005u16 {
        h.push(
            "client",
            vec![rec(
                &format!("10.0.0.2:{port}"),
                "10.0.0.8:80",
                Some(0),
                SEC,
                None,
            )],
            i64::from(port - 1000) * 10,
        );
    }
    let flows = h.take();
    assert_eq!(flows.len(), 2);
    assert_eq!(
        verdict(by_port(&flows, 1001)),
        unattributed(Why::HoldBackFull)
    );
    assert_eq!(
        verdict(by_port(&flows, 1002)),
        unattributed(Why::HoldBackFull)
    );
    let s = h.a.stats();
    assert_eq!((s.held, s.unattributed_for(Why::HoldBackFull)), (3, 2));
    // Past its peer wait (without an advance since), the oldest takes the map's
    // answer when it has one.
    let mut h = Harness::new(config().with_max_held(1));
    h.push(
        "client",
        vec![rec("10.0.0.2:1001", "10.0.0.8:80", Some(0), SEC, None)],
        SEC,
    );
    // This heartbeat's own record is a flow too: two held.
    // (Covering the flow's start with the tolerance to spare.)
    h.push(
        "server",
        vec![hb("10.0.0.8", "a", -5 * SEC, 5 * SEC)],
        6 * SEC,
    );
    let flows = h.take();
    assert_eq!(flows.len(), 1);
    assert_eq!(verdict(by_port(&flows, 1001)), HEARTBEAT_A);
    assert_eq!(h.a.stats().held, 1);
}

#[test]
fn drain_decides_everything() -> Result<(), StaticOwnersError> {
    let table = StaticOwners::parse("10.0.0.8 static\n", std::path::Path::new("owners"))?;
    let mut h = Harness::new(config().with_static_owners(table));
    h.push(
        "client",
        vec![
            rec("10.0.0.2:1001", "10.0.0.8:80", Some(0), SEC, None),
            rec("10.0.0.2:1002", "10.0.0.9:80", Some(0), SEC, None),
        ],
        SEC,
    );
    h.push(
        "client",
        vec![
            rec("10.0.0.2:1003", "10.0.0.8:80", Some(0), SEC, None),
            rec("10.0.0.2:1004", "10.0.0.7:80", Some(0), SEC, None),
        ],
        4 * SEC,
    );
    h.push("server", vec![hb("10.0.0.7", "a", 0, SEC)], 4 * SEC);
    // At 7 s the first two have waited for their peer; the last two have not.
    h.a.drain(at(7 * SEC));
    let flows = h.take();
    assert_eq!(flows.len(), 4);
    assert_eq!(
        verdict(by_port(&flows, 1001)),
        (Some("static"), Src::Static, None)
    );
    assert_eq!(
        verdict(by_port(&flows, 1002)),
        unattributed(Why::NoOwnerKnown)
    );
    assert_eq!(verdict(by_port(&flows, 1003)), unattributed(Why::Shutdown));
    assert_eq!(verdict(by_port(&flows, 1004)), unattributed(Why::Shutdown));
    assert_eq!(h.a.stats().held, 0);
    assert_eq!(h.a.next_deadline().filter(|t| *t < at(100 * SEC)), None);
    Ok(())
}

#[test]
fn loopback_addresses_of_two_hosts_never_mix() {
    let mut h = Harness::new(config());
    h.push(
        "h1",
        vec![
            hb("127.0.0.1", "a", 0, 10 * SEC),
            hb("169.254.1.1", "a", 0, 10 * SEC),
        ],
        10 * SEC,
    );
    h.push(
        "h2",
        vec![
            hb("127.0.0.1", "b", 0, 10 * SEC),
            hb("169.254.1.1", "b", 0, 10 * SEC),
            // h2's server side of a connection from 127.0.0.1:5000: not h1's peer.
            rec(
                "127.0.0.1:8080",
                "127.0.0.1:5000",
                Some(SEC),
                2 * SEC,
                Some(("b", IP_MAP)),
            ),
        ],
        10 * SEC,
    );
    h.push(
        "h1",
        vec![
            // Without a workload: not a heartbeat, only a flow.
            rec("127.0.0.1:5000", "127.0.0.1:8080", Some(SEC), 2 * SEC, None),
            rec("10.0.0.1:5001", "169.254.1.1:80", Some(SEC), 2 * SEC, None),
        ],
        10 * SEC,
    );
    assert!(h.take().iter().all(|f| f.host_id() != "h1"));
    h.advance(15 * SEC);
    let flows: Vec<_> = h
        .take()
        .into_iter()
        .filter(|f| f.host_id() == "h1")
        .collect();
    assert_eq!(verdict(by_port(&flows, 5000)), HEARTBEAT_A);
    assert_eq!(verdict(by_port(&flows, 5001)), HEARTBEAT_A);
    let s = h.a.stats();
    assert_eq!((s.conflicts, s.tracked_ips), (0, 4));
}

#[test]
fn a_peer_arriving_later_decides_at_once() {
    let mut h = Harness::new(config());
    h.push(
        "client",
        vec![rec(
            "10.0.0.2:1001",
            "10.0.0.8:80",
            Some(0),
            SEC,
            Some(("c", IP_MAP)),
        )],
        SEC,
    );
    h.push(
        "server",
        vec![rec(
            "10.0.0.8:80",
            "10.0.0.2:1001",
            Some(100),
            900,
            Some(("s", IP_MAP)),
        )],
        3 * SEC,
    );
    let flows = h.take();
    assert_eq!(flows.len(), 2);
    assert_eq!(
        verdict(by_port(&flows, 1001)),
        (Some("s"), Src::PeerRecord, None)
    );
    assert_eq!(
        verdict(by_port(&flows, 80)),
        (Some("c"), Src::PeerRecord, None)
    );
    // After the peer wait, while waiting for heartbeats, a peer still wins, even
    // over the heartbeat its own record is.
    h.push(
        "client",
        vec![rec(
            "10.0.0.2:1003",
            "10.0.0.9:80",
            Some(0),
            SEC,
            Some(("c", IP_MAP)),
        )],
        SEC,
    );
    h.advance(7 * SEC);
    assert!(h.take().is_empty());
    h.push(
        "server",
        vec![rec(
            "10.0.0.9:80",
            "10.0.0.2:1003",
            Some(100),
            900,
            Some(("s2", IP_MAP)),
        )],
        8 * SEC,
    );
    let flows = h.take();
    assert_eq!(
        verdict(by_port(&flows, 1003)),
        (Some("s2"), Src::PeerRecord, None)
    );
    assert_eq!(h.a.stats().attributed_peer_record, 4);
}

#[test]
fn a_peer_with_another_tuple_or_time_is_not_used() {
    let mut h = Harness::new(config());
    h.push(
        "server",
        vec![
            // Right tuple, 10 s later.
            rec(
                "10.0.0.8:80",
                "10.0.0.2:1001",
                Some(20 * SEC),
                21 * SEC,
                Some(("s", IP_MAP)),
            ),
            // Another client port.
            rec(
                "10.0.0.8:80",
                "10.0.0.2:2002",
                Some(0),
                SEC,
                Some(("s", IP_MAP)),
            ),
            // Same direction as the flow (not reversed).
            rec(
                "10.0.0.2:1003",
                "10.0.0.8:80",
                Some(0),
                SEC,
                Some(("s", IP_MAP)),
            ),
        ],
        SEC,
    );
    h.push(
        "client",
        vec![
            rec("10.0.0.2:1001", "10.0.0.8:80", Some(0), 10 * SEC, None),
            // Long enough to outlive the tolerance into the server's first heartbeat.
            rec("10.0.0.2:1002", "10.0.0.8:80", Some(0), 3 * SEC, None),
        ],
        SEC,
    );
    assert!(
        h.take()
            .iter()
            .all(|f| ![1001, 1002].contains(&f.record.local.port()))
    );
    h.advance(6 * SEC);
    let flows = h.take();
    // The map decides instead: the server IP is "s" then.
    assert_eq!(
        verdict(by_port(&flows, 1001)),
        (Some("s"), Src::Heartbeat, None)
    );
    assert_eq!(
        verdict(by_port(&flows, 1002)),
        (Some("s"), Src::Heartbeat, None)
    );
    // Within the tolerance of the flow's end: a peer.
    h.push(
        "server",
        vec![rec(
            "10.0.0.8:80",
            "10.0.0.2:3003",
            Some(12 * SEC),
            13 * SEC,
            Some(("s", IP_MAP)),
        )],
        7 * SEC,
    );
    h.push(
        "client",
        vec![rec("10.0.0.2:3003", "10.0.0.8:80", Some(0), 10 * SEC, None)],
        7 * SEC,
    );
    assert_eq!(
        verdict(by_port(&h.take(), 3003)),
        (Some("s"), Src::PeerRecord, None)
    );
}

#[test]
fn disagreeing_peers_are_no_evidence() {
    let mut h = Harness::new(config());
    h.push(
        "server",
        vec![
            rec(
                "10.0.0.8:80",
                "10.0.0.2:1001",
                Some(0),
                SEC,
                Some(("s", IP_MAP)),
            ),
            rec(
                "10.0.0.8:80",
                "10.0.0.2:1001",
                Some(0),
                SEC,
                Some(("t", IP_MAP)),
            ),
        ],
        SEC,
    );
    h.push(
        "client",
        vec![rec("10.0.0.2:1001", "10.0.0.8:80", Some(0), SEC, None)],
        SEC,
    );
    assert!(h.take().iter().all(|f| f.record.local.port() != 1001));
    h.advance(6 * SEC);
    assert_eq!(
        verdict(by_port(&h.take(), 1001)),
        unattributed(Why::ConflictingOwners)
    );
}

#[test]
fn peer_index_entries_leave_after_hold_back_and_tolerance() {
    let mut h = Harness::new(config());
    h.push(
        "server",
        vec![rec(
            "10.0.0.8:80",
            "10.0.0.2:1001",
            Some(0),
            SEC,
            Some(("s", IP_MAP)),
        )],
        SEC,
    );
    assert_eq!(h.a.stats().peer_index_entries, 1);
    h.advance(SEC + 122 * SEC - 1);
    assert_eq!(h.a.stats().peer_index_entries, 1);
    h.advance(SEC + 122 * SEC);
    assert_eq!(h.a.stats().peer_index_entries, 0);
}

#[test]
fn clock_going_back_is_ignored() {
    let mut h = Harness::new(config());
    h.push(
        "client",
        vec![rec("10.0.0.2:1001", "10.0.0.8:80", Some(0), SEC, None)],
        100 * SEC,
    );
    h.advance(50 * SEC);
    h.push(
        "client",
        vec![rec("10.0.0.2:1002", "10.0.0.8:80", Some(0), SEC, None)],
        10 * SEC,
    );
    // Both held as of 100 s.
    assert_eq!(h.a.next_deadline(), Some(at(105 * SEC)));
    h.advance(105 * SEC);
    h.advance(220 * SEC);
    assert_eq!(h.take().len(), 2);
}

/// The records of synthetic chunk `c`: the server's record (a heartbeat, and the
/// peer of the next one) and the client's record of a connection, alternately;
/// 10,000 server IPs of 1,000 workloads.
fn synthetic_chunk(c: usize, chunk: usize, workloads: &[WorkloadId]) -> Vec<FlowRecord> {
    let mut records = Vec::with_capacity(chunk);
    for i in 0..chunk / 2 {
        let n = c * chunk / 2 + i;
        let server = n % 10_000;
        let server_ip = std::net::Ipv4Addr::new(10, 1, (server / 256) as u8, (server % 256) as u8);
        let client_ip = std::net::Ipv4Addr::new(10, 200, ((n / 256) % 256) as u8, (n % 256) as u8);
        let port = 1024 + (n % 60_000) as u16;
        let t = at((n as i64) / 5); // 5,000 connections a simulated second
        let mut server_rec = flow_testkit::record()
            .local((server_ip, 443))
            .remote((client_ip, port))
            .t_end(t)
            .build();
        server_rec.local_workload_id = Some(workloads[server % workloads.len()].clone());
        server_rec.identity_source = IP_MAP;
        let mut client_rec = flow_testkit::record()
            .local((client_ip, port))
            .remote((server_ip, 443))
            .t_end(t)
            .build();
        client_rec.local_workload_id = Some(workloads[0].clone());
        client_rec.identity_source = IP_MAP;
        records.push(server_rec);
        records.push(client_rec);
    }
    records
}

/// Pushes 1,000,000 synthetic flows (1,000 a chunk, one chunk every 100 ms, each
/// connection's two records) through an attributor already in its steady state
/// (1,000,000 flows before: the peer index full of the last 122 s), and prints
/// flows/s. Run with `cargo test --release -p flowcollector --lib
/// attribution::tests::throughput -- --ignored --nocapture`; with
/// `SHARE_HEARTBEATS=1` in the environment, heartbeat sharing is on and its
/// heartbeats are taken and encoded every simulated second (10 chunks), timed apart.
#[test]
#[ignore = "a measurement: run in release mode"]
fn throughput() {
    const WARM_UP: usize = 1_500_000;
    const FLOWS: usize = 1_000_000;
    const CHUNK: usize = 1_000;
    let share = std::env::var_os("SHARE_HEARTBEATS").is_some_and(|v| v == "1");
    let mut a = Attributor::new(AttributionConfig::default().with_heartbeat_sharing(share));
    let (mut sharing, mut messages, mut bytes) = (Duration::ZERO, 0usize, 0usize);
    let workloads: Vec<WorkloadId> = (0..1_000)
        .map(|i| WorkloadId::new(format!("k8s:prod/service-{i}")).expect("ID"))
        .collect();
    let batch = Arc::new(BatchId {
        host: "bench".into(),
        instance: InstanceId::new(1),
        sequence: 0,
    });
    let mut engine = Duration::ZERO;
    let mut decided = Vec::with_capacity(2 * CHUNK);
    let mut out = 0usize;
    for c in 0..(WARM_UP + FLOWS) / CHUNK {
        let records = synthetic_chunk(c, CHUNK, &workloads);
        let now = at((c as i64) * 100);
        let started = std::time::Instant::now();
        a.push_chunk(batch.clone(), records, now);
        a.advance(now);
        decided.extend(std::iter::from_fn(|| a.pop_ready()));
        if c * CHUNK >= WARM_UP {
            engine += started.elapsed();
            out += decided.len();
        }
        decided.clear();
        if share && c % 10 == 9 {
            let taking = std::time::Instant::now();
            let heartbeats = a.take_heartbeats();
            let encoded: usize = heartbeats.iter().map(|h| h.encode().len()).sum();
            if c * CHUNK >= WARM_UP {
                sharing += taking.elapsed();
                messages += heartbeats.len();
                bytes += encoded;
            }
        }
    }
    let s = a.stats();
    println!(
        "{FLOWS} flows in {engine:?}: {:.0} flows/s, {:.0} ns a flow (out {out}, held {}, \
         peer {}, ranges {}, ips {}, map {} bytes, peer index {})",
        FLOWS as f64 / engine.as_secs_f64(),
        engine.as_nanos() as f64 / FLOWS as f64,
        s.held,
        s.attributed_peer_record,
        s.ranges,
        s.tracked_ips,
        s.map_bytes,
        s.peer_index_entries,
    );
    if share {
        println!(
            "sharing: {messages} heartbeats ({bytes} bytes) taken and encoded in {sharing:?}: \
             {:.0} ns a flow",
            sharing.as_nanos() as f64 / FLOWS as f64
        );
    }
    assert_eq!(s.flows_in, (WARM_UP + FLOWS) as u64);
    assert_eq!(s.attributed_peer_record, (WARM_UP + FLOWS) as u64);
}

#[test]
fn a_shared_ipv4_stays_shared_even_where_the_hosts_own_records_claim_it() {
    let mut h = Harness::new(config());
    // Host "shared" on 10.0.0.5: a container connects out through the connect map at
    // 0-1 s; the host's own service (certificate identity) answers on the same IP
    // from 100 to 200 s.
    h.push(
        "shared",
        vec![
            rec(
                "10.0.0.5:40001",
                "10.0.0.9:443",
                Some(0),
                SEC,
                Some(("container-a", CONNECT_MAP)),
            ),
            rec(
                "10.0.0.5:22",
                "10.0.0.7:50000",
                Some(100 * SEC),
                200 * SEC,
                Some(("host", IdentitySource::Certificate)),
            ),
        ],
        SEC,
    );
    // A flow to the shared IP at 150 s whose peer record never comes (lost, or a
    // refused port): the map sees only "host" near it, but the IP is shared.
    h.push(
        "client",
        vec![rec(
            "10.0.0.8:50001",
            "10.0.0.5:8080",
            Some(150 * SEC),
            151 * SEC,
            None,
        )],
        2 * SEC,
    );
    h.advance(200 * SEC);
    assert_eq!(
        verdict(by_port(&h.take(), 50001)),
        unattributed(Why::SharedAddress)
    );
}

/// `record` as an interim record of the connection `cookie` (on a host whose boot ID
/// is all `boot`).
fn interim(mut record: FlowRecord, boot: u8, cookie: u64) -> FlowRecord {
    record.record_kind = flow_record::RecordKind::Interim;
    record.flow_id = Some(flow_record::FlowId {
        boot_id: [boot; 16],
        cookie,
    });
    record
}

/// `record` as the final record of the connection `cookie`.
fn last(mut record: FlowRecord, boot: u8, cookie: u64) -> FlowRecord {
    record.flow_id = Some(flow_record::FlowId {
        boot_id: [boot; 16],
        cookie,
    });
    record
}

#[test]
fn a_host_holding_only_long_connections_is_attributable_from_its_interim_records() {
    // A database host: workload "a" on 10.0.0.1 holds a pool of connections opened
    // half an hour ago and never closed. Without interim records it sends nothing;
    // with them, every window's close says "a owned 10.0.0.1 from the open until
    // now".
    let db_records = |window_end_s: i64| {
        (0..3)
            .map(|i| {
                interim(
                    rec(
                        &format!("10.0.0.1:{}", 5432),
                        &format!("10.0.0.{}:{}", 50 + i, 40000 + i),
                        Some(-1_800 * SEC),
                        window_end_s * SEC,
                        Some(("a", IP_MAP)),
                    ),
                    1,
                    100 + i as u64,
                )
            })
            .collect::<Vec<_>>()
    };
    // A client's short connection at 90 s whose peer record (the database's) is
    // lost: only heartbeats can name its remote.
    let client = || {
        rec(
            "10.0.0.2:1001",
            "10.0.0.1:5432",
            Some(90 * SEC),
            91 * SEC,
            None,
        )
    };
    for with_interim in [true, false] {
        let mut h = Harness::new(config());
        if with_interim {
            h.push("db", db_records(60), 61 * SEC);
        }
        h.push("client", vec![client()], 92 * SEC);
        if with_interim {
            h.push("db", db_records(120), 121 * SEC);
        }
        h.advance(92 * SEC + 120 * SEC);
        let flows = h.take();
        let f = by_port(&flows, 1001);
        if with_interim {
            assert_eq!(verdict(f), HEARTBEAT_A);
        } else {
            assert_eq!(verdict(f), unattributed(Why::NoOwnerKnown));
        }
    }
}

#[test]
fn every_record_of_a_long_connection_is_attributed_by_its_peer_once() {
    // Client "c" (10.0.0.2:50000) to server "a" (10.0.0.1:443), open from 10 s to
    // 150 s: both ends send an interim record at the 60 s and 120 s windows' closes
    // and a final record, each in its own window's chunk.
    let mut h = Harness::new(config());
    let client = |end: i64| {
        rec(
            "10.0.0.2:50000",
            "10.0.0.1:443",
            Some(10 * SEC),
            end,
            Some(("c", IP_MAP)),
        )
    };
    let server = |end: i64| {
        rec(
            "10.0.0.1:443",
            "10.0.0.2:50000",
            Some(10 * SEC + 300),
            end + 200,
            Some(("a", IP_MAP)),
        )
    };
    h.push("client", vec![interim(client(60 * SEC), 2, 7)], 61 * SEC);
    h.push("server", vec![interim(server(60 * SEC), 1, 9)], 62 * SEC);
    h.push("client", vec![interim(client(120 * SEC), 2, 7)], 121 * SEC);
    h.push("server", vec![interim(server(120 * SEC), 1, 9)], 122 * SEC);
    // The two ends' records of one connection share one entry of the peer index.
    assert_eq!(h.a.peer_connections(), 1);
    h.push("client", vec![last(client(150 * SEC), 2, 7)], 181 * SEC);
    h.push("server", vec![last(server(150 * SEC), 1, 9)], 182 * SEC);
    h.advance(190 * SEC);
    let flows = h.take();
    assert_eq!(flows.len(), 6, "one line per record: {flows:#?}");
    for f in &flows {
        let expected = if f.host_id() == "client" { "a" } else { "c" };
        assert_eq!(verdict(f), (Some(expected), Src::PeerRecord, None), "{f:?}");
    }
    let kinds: Vec<(&str, flow_record::RecordKind)> = flows
        .iter()
        .map(|f| (f.host_id(), f.record.record_kind))
        .collect();
    use flow_record::RecordKind::{Final, Interim};
    for host in ["client", "server"] {
        let of_host: Vec<_> = kinds
            .iter()
            .filter(|(h, _)| *h == host)
            .map(|k| k.1)
            .collect();
        assert_eq!(of_host, [Interim, Interim, Final], "{host}");
    }
}

#[test]
fn an_interim_record_is_decided_as_a_final_record_ending_at_its_snapshot() {
    // The scenarios of IP reuse, conflicts and first connections, each flow sent once
    // as a final record and once as an interim one: the same verdicts.
    let scenario = |kind: flow_record::RecordKind| {
        let mut h = Harness::new(config());
        h.push(
            "other",
            vec![hb("10.9.9.9", "z", -600 * SEC, -599 * SEC)],
            -600 * SEC,
        );
        h.push(
            "h1",
            vec![
                hb("10.0.0.7", "a", 0, 20 * SEC),
                hb("10.0.0.7", "a", 40 * SEC, 60 * SEC),
                hb("10.0.0.8", "a", 0, 100 * SEC),
            ],
            60 * SEC,
        );
        h.push(
            "h2",
            vec![
                hb("10.0.0.7", "b", 61 * SEC, 100 * SEC),
                hb("10.0.0.8", "b", 40 * SEC, 60 * SEC),
                hb("10.0.0.9", "b", 100 * SEC, 160 * SEC),
            ],
            100 * SEC,
        );
        let flows = [
            ("10.0.0.7:80", Some(30 * SEC), 31 * SEC),
            ("10.0.0.7:80", Some(60_500), 70 * SEC),
            ("10.0.0.7:80", Some(80 * SEC), 81 * SEC),
            ("10.0.0.8:80", Some(50 * SEC), 51 * SEC),
            ("10.0.0.8:80", Some(10 * SEC), 11 * SEC),
            ("10.0.0.9:80", Some(99 * SEC), 99_500),
            ("10.0.0.9:80", Some(99 * SEC), 110 * SEC),
            ("10.0.0.9:80", None, 110 * SEC),
            ("10.0.0.6:80", Some(99 * SEC), 110 * SEC),
        ];
        let records = flows
            .iter()
            .enumerate()
            .map(|(i, (remote, start, end))| {
                let mut r = rec(
                    &format!("10.0.0.2:{}", 1000 + i),
                    remote,
                    *start,
                    *end,
                    None,
                );
                r.record_kind = kind;
                r
            })
            .collect();
        h.push("client", records, 111 * SEC);
        h.advance(111 * SEC + 120 * SEC);
        let mut out: Vec<(u16, Option<String>, Src, Option<Why>)> = h
            .take()
            .iter()
            .map(|f| {
                let (w, s, r) = verdict(f);
                (f.record.local.port(), w.map(str::to_owned), s, r)
            })
            .collect();
        out.sort_by_key(|v| v.0);
        out
    };
    let finals = scenario(flow_record::RecordKind::Final);
    assert_eq!(finals.len(), 9);
    assert_eq!(finals, scenario(flow_record::RecordKind::Interim));
    // The scenarios cover attributed and unattributed verdicts alike.
    assert!(finals.iter().any(|v| v.1.is_some()) && finals.iter().any(|v| v.1.is_none()));
}

#[path = "heartbeats_tests.rs"]
mod heartbeats_tests;
