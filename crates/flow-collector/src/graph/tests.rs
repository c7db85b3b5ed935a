//! The aggregator on simulated time.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use flow_batch::{
    Completeness, Window,
    wire::{BatchId, InstanceId},
};
use flow_record::{
    CloseReason, Direction, FlowId, IdentitySource, RecordKind, TcpState, WorkloadId,
};

use super::*;
use crate::{
    attribution::{AttributedFlow, RemoteIdentitySource, RemoteUnattributedReason},
    completeness::{WindowReport, WindowStatus},
};

/// 2026-11-30T10:00:00Z.
const T0: u64 = 1_796_032_800;

pub(super) fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + secs)
}

fn batch(host: &str) -> Arc<BatchId> {
    Arc::new(BatchId {
        host: host.into(),
        instance: InstanceId::new(1),
        sequence: 7,
    })
}

/// A flow of `local` (named `workload`) with `remote`, attributed to `remote_workload`
/// from `source`, ending at `t_end`.
pub(super) struct Flow {
    local: &'static str,
    remote: &'static str,
    direction: Direction,
    workload: Option<&'static str>,
    remote_workload: Option<&'static str>,
    source: RemoteIdentitySource,
    t_end: SystemTime,
    bytes: (u64, u64),
    srtt_us: u32,
    close: CloseReason,
    kind: RecordKind,
    flow_id: Option<u64>,
}

impl Flow {
    pub(super) fn out(local: &'static str, remote: &'static str, t_end: SystemTime) -> Flow {
        Flow {
            local,
            remote,
            direction: Direction::Outbound,
            workload: None,
            remote_workload: None,
            source: RemoteIdentitySource::None,
            t_end,
            bytes: (100, 1_000),
            srtt_us: 500,
            close: CloseReason::Normal,
            kind: RecordKind::Final,
            flow_id: None,
        }
    }

    fn inbound(mut self) -> Flow {
        self.direction = Direction::Inbound;
        self
    }

    pub(super) fn names(
        mut self,
        local: &'static str,
        remote: &'static str,
        source: RemoteIdentitySource,
    ) -> Flow {
        self.workload = Some(local);
        self.remote_workload = Some(remote);
        self.source = source;
        self
    }

    fn local_only(mut self, local: &'static str) -> Flow {
        self.workload = Some(local);
        self
    }

    pub(super) fn build(self, host: &str, index: u32) -> AttributedFlow {
        let mut b = flow_testkit::record()
            .local(self.local)
            .remote(self.remote)
            .direction(self.direction)
            .t_end(self.t_end)
            .bytes(self.bytes.0, self.bytes.1)
            .close(TcpState(7), self.close)
            .kind(self.kind)
            .flow_id(self.flow_id.map(|cookie| FlowId {
                boot_id: [1; 16],
                cookie,
            }));
        if let Some(w) = self.workload {
            b = b.workload(w, IdentitySource::IpMap);
        }
        let mut record = b.build();
        record.stats.srtt_us = self.srtt_us;
        let attributed = self.remote_workload.is_some();
        AttributedFlow {
            record,
            batch: batch(host),
            record_index: index,
            remote_workload_id: self
                .remote_workload
                .map(|w| WorkloadId::new(w).expect("id")),
            remote_identity_source: if attributed {
                self.source
            } else {
                RemoteIdentitySource::None
            },
            remote_unattributed_reason: (!attributed)
                .then_some(RemoteUnattributedReason::NoOwnerKnown),
        }
    }
}

fn graph() -> GraphAggregator {
    GraphAggregator::new(GraphConfig::default())
}

fn all(g: &GraphAggregator, from: SystemTime, to: SystemTime) -> GraphResponse {
    g.query(&GraphQuery::new(from, to, None))
}

fn edge<'a>(r: &'a GraphResponse, id: &str) -> &'a GraphEdge {
    r.edges
        .iter()
        .find(|e| e.id == id)
        .unwrap_or_else(|| panic!("no edge {id} in {:#?}", r.edges))
}

#[test]
fn a_connection_between_two_traced_workloads_is_one_edge_counted_once() {
    let mut g = graph();
    let client = Flow::out("10.0.0.1:40000", "10.0.0.2:443", at(30))
        .names("spiffe://a", "spiffe://b", RemoteIdentitySource::PeerRecord)
        .build("host-a", 0);
    // The server's record: bytes the other way round.
    let mut server = Flow::out("10.0.0.2:443", "10.0.0.1:40000", at(30))
        .inbound()
        .names("spiffe://b", "spiffe://a", RemoteIdentitySource::PeerRecord);
    server.bytes = (1_000, 100);
    let server = server.build("host-b", 0);
    g.add_flows(&[client, server], at(40));
    let r = all(&g, at(0), at(60));
    assert_eq!(r.edges.len(), 1, "{:#?}", r.edges);
    let e = edge(&r, "spiffe://a -> spiffe://b:443");
    assert_eq!(
        (e.source.as_str(), e.target.as_str(), e.port),
        ("spiffe://a", "spiffe://b", 443)
    );
    assert_eq!(
        (e.connections, e.bytes_sent, e.bytes_received),
        (1, 100, 1_000)
    );
    assert_eq!(e.recent.len(), 1);
    assert_eq!(e.recent[0].client, "10.0.0.1:40000");
    assert_eq!(e.recent[0].server, "10.0.0.2:443");
    assert_eq!(e.recent[0].flow, format!("{}/0", batch("host-a")));
    assert_eq!(r.flows, 2);
    assert_eq!(r.unattributed_flows, 0);
    assert_eq!(g.stats().flows_counted_by_peer, 1);
    let a = r.nodes.iter().find(|n| n.id == "spiffe://a").expect("a");
    let b = r.nodes.iter().find(|n| n.id == "spiffe://b").expect("b");
    assert_eq!(
        (a.connections_out, a.bytes_out, a.bytes_in),
        (1, 100, 1_000)
    );
    assert_eq!((b.connections_in, b.bytes_in, b.bytes_out), (1, 100, 1_000));
}

#[test]
fn a_clients_record_coming_after_the_servers_does_not_count_the_connection_again() {
    let mut g = graph();
    // The server's record first, named by heartbeats (the client's chunk was late,
    // past the peer wait); the client's record an hour later, into the same minute.
    let mut server = Flow::out("10.0.0.2:443", "10.0.0.1:40000", at(30))
        .inbound()
        .names("spiffe://b", "spiffe://a", RemoteIdentitySource::Heartbeat);
    server.bytes = (1_000, 100);
    let mut server = server.build("host-b", 0);
    server.record.stats.retransmits = 2;
    g.add_flows(&[server], at(40));
    let mut client = Flow::out("10.0.0.1:40000", "10.0.0.2:443", at(31))
        .names("spiffe://a", "spiffe://b", RemoteIdentitySource::Heartbeat)
        .build("host-a", 0);
    client.record.stats.retransmits = 3;
    g.add_flows(&[client], at(3_600));
    let r = all(&g, at(0), at(60));
    assert_eq!(r.edges.len(), 1, "{:#?}", r.edges);
    let e = edge(&r, "spiffe://a -> spiffe://b:443");
    assert_eq!(
        (e.connections, e.bytes_sent, e.bytes_received),
        (1, 100, 1_000)
    );
    // Each end's own retransmitted segments.
    assert_eq!(e.retransmits, 5);
    assert_eq!(r.flows, 2);
    assert_eq!(g.stats().flows_counted_by_peer, 1);
    assert_eq!(g.stats().connections_matched, 1, "kept until evicted");
}

#[test]
fn a_hosts_own_probe_is_counted_once_though_its_record_names_no_workload() {
    let mut g = graph();
    // A kubelet-style probe: the host's own address, no workload, both ends traced.
    let probe = Flow::out("10.0.0.1:52000", "10.0.0.9:8080", at(5)).build("host-a", 0);
    let pod = Flow::out("10.0.0.9:8080", "10.0.0.1:52000", at(5))
        .inbound()
        .local_only("spiffe://pod")
        .build("host-a", 1);
    g.add_flows(&[probe, pod], at(10));
    let r = all(&g, at(0), at(60));
    let connections: u64 = r.edges.iter().map(|e| e.connections).sum();
    assert_eq!(connections, 1, "{:#?}", r.edges);
}

#[test]
fn the_servers_record_counts_when_the_client_is_not_traced() {
    let mut g = graph();
    // The client is an unknown address: its record never came; the server's counts.
    let mut server = Flow::out("10.0.0.2:443", "192.0.2.9:51000", at(10))
        .inbound()
        .local_only("spiffe://b");
    server.bytes = (5_000, 300);
    // And one named by heartbeats (the client's record is missing).
    let named = Flow::out("10.0.0.2:443", "10.0.0.1:41000", at(11))
        .inbound()
        .names("spiffe://b", "spiffe://a", RemoteIdentitySource::Heartbeat);
    g.add_flows(
        &[server.build("host-b", 0), named.build("host-b", 1)],
        at(20),
    );
    let r = all(&g, at(0), at(60));
    let e = edge(&r, "unattributed:192.0.2.9 -> spiffe://b:443");
    assert_eq!(
        (e.connections, e.bytes_sent, e.bytes_received),
        (1, 300, 5_000)
    );
    let e = edge(&r, "spiffe://a -> spiffe://b:443");
    assert_eq!(e.connections, 1);
    assert_eq!((r.flows, r.unattributed_flows), (2, 1));
    assert!((r.unattributed_share - 0.5).abs() < 1e-9);
    let node = r
        .nodes
        .iter()
        .find(|n| n.id == "unattributed:192.0.2.9")
        .expect("node");
    assert_eq!(node.kind, "unattributed");
}

#[test]
fn an_unattributed_remote_is_its_address() {
    let mut g = graph();
    let mut f = Flow::out("10.0.0.1:40000", "198.51.100.7:5432", at(5)).local_only("spiffe://a");
    f.close = CloseReason::Refused;
    let mut t = Flow::out("10.0.0.1:40001", "198.51.100.7:5432", at(6)).local_only("spiffe://a");
    t.close = CloseReason::ConnectTimedOut;
    let ok = Flow::out("10.0.0.1:40002", "198.51.100.7:5432", at(7)).local_only("spiffe://a");
    g.add_flows(
        &[f.build("h", 0), t.build("h", 1), ok.build("h", 2)],
        at(10),
    );
    let r = all(&g, at(0), at(60));
    let e = edge(&r, "spiffe://a -> unattributed:198.51.100.7:5432");
    assert_eq!(e.connections, 3);
    assert_eq!(e.failed_total, 2);
    assert_eq!(e.failed.get("refused"), Some(&1));
    assert_eq!(e.failed.get("connect_timed_out"), Some(&1));
    // Latest first.
    let reasons: Vec<_> = e.recent.iter().map(|f| f.close_reason.clone()).collect();
    assert_eq!(
        reasons,
        [
            Some("normal".into()),
            Some("connect_timed_out".into()),
            Some("refused".into())
        ]
    );
    assert_eq!(r.unattributed_flows, 3);
    let a = r.nodes.iter().find(|n| n.id == "spiffe://a").expect("a");
    assert_eq!(a.failed, 2);
}

#[test]
fn flows_go_to_the_minute_of_their_end_and_queries_take_the_minutes_of_their_range() {
    let mut g = graph();
    let a = Flow::out("10.0.0.1:40000", "10.0.0.2:443", at(59)).local_only("spiffe://a");
    let b = Flow::out("10.0.0.1:40001", "10.0.0.2:443", at(60)).local_only("spiffe://a");
    let c = Flow::out("10.0.0.1:40002", "10.0.0.2:443", at(185)).local_only("spiffe://a");
    g.add_flows(
        &[a.build("h", 0), b.build("h", 1), c.build("h", 2)],
        at(200),
    );
    assert_eq!(g.stats().minutes_held, 3);
    let id = "spiffe://a -> unattributed:10.0.0.2:443";
    let first = all(&g, at(0), at(60));
    assert_eq!((first.minutes, edge(&first, id).connections), (1, 1));
    // A range overlapping a minute takes all of it.
    let two = all(&g, at(30), at(61));
    assert_eq!((two.minutes, edge(&two, id).connections), (2, 2));
    let all3 = all(&g, at(0), at(240));
    assert_eq!(
        (all3.minutes, edge(&all3, id).connections, all3.flows),
        (4, 3, 3)
    );
    // Recent flows are those of the range.
    assert_eq!(edge(&first, id).recent.len(), 1);
    assert_eq!(edge(&all3, id).recent.len(), 3);
    assert_eq!(first.from, "2026-11-30T10:00:00Z");
    assert_eq!(first.to, "2026-11-30T10:01:00Z");
}

#[test]
fn edges_beyond_the_top_n_of_a_node_are_folded_into_other_and_counted() {
    let mut g = GraphAggregator::new(GraphConfig::default().with_top_edges(2));
    let remotes = [
        "10.0.1.1:443",
        "10.0.1.2:443",
        "10.0.1.3:443",
        "10.0.1.4:443",
        "10.0.1.5:443",
    ];
    let mut flows = Vec::new();
    let mut index = 0;
    // Remote i gets i + 1 connections: the two heaviest are .5 and .4.
    for (i, remote) in remotes.iter().enumerate() {
        for _ in 0..=i {
            flows.push(
                Flow::out("10.0.0.1:40000", remote, at(10))
                    .local_only("spiffe://a")
                    .build("h", index),
            );
            index += 1;
        }
    }
    g.add_flows(&flows, at(20));
    // While the minute fills, up to 2N = 4 edges are held; the fifth (.5, with one
    // connection then) folds them down to the 2 heaviest (.4 and .3); .5's later
    // connections make its edge again.
    let r = all(&g, at(0), at(60));
    assert_eq!(r.folded.edges, 3, "{:#?}", r.edges);
    let other = edge(&r, "spiffe://a -> other:0");
    assert_eq!(other.connections, r.folded.connections);
    assert_eq!(other.connections, 1 + 2 + 1);
    assert_eq!(
        edge(&r, "spiffe://a -> unattributed:10.0.1.5:443").connections,
        4
    );
    let total: u64 = r.edges.iter().map(|e| e.connections).sum();
    assert_eq!(total, 15);
    assert_eq!(
        r.nodes.iter().find(|n| n.id == "other").map(|n| n.kind),
        Some("other")
    );
    // Sealed a while after the minute: at most N (+ other).
    g.add_flows(
        &[Flow::out("10.0.0.1:40000", "10.0.1.9:443", at(11))
            .local_only("spiffe://a")
            .build("h", 99)],
        at(21),
    );
    assert_eq!(all(&g, at(0), at(60)).edges.len(), 5);
    // Sealed: the two heaviest (.4 and .5, 4 connections each) and other.
    g.advance(at(60 + 180));
    let r = all(&g, at(0), at(60));
    assert_eq!(r.edges.len(), 3, "{:#?}", r.edges);
    assert_eq!(r.edges.iter().map(|e| e.connections).sum::<u64>(), 16);
    assert_eq!(
        edge(&r, "spiffe://a -> unattributed:10.0.1.5:443").connections,
        4
    );
    assert_eq!(
        edge(&r, "spiffe://a -> unattributed:10.0.1.4:443").connections,
        4
    );
    assert_eq!(edge(&r, "spiffe://a -> other:0").connections, 8);
    assert_eq!(r.folded.edges, 5);
    assert_eq!(g.stats().edges_folded, r.folded.edges);
    assert_eq!(g.stats().edges_held, 3);
}

#[test]
fn minutes_older_than_the_retention_are_dropped_and_queries_clamped() {
    let mut g =
        GraphAggregator::new(GraphConfig::default().with_retention(Duration::from_secs(300)));
    let old = Flow::out("10.0.0.1:40000", "10.0.0.2:443", at(0)).local_only("spiffe://a");
    let new = Flow::out("10.0.0.1:40001", "10.0.0.2:443", at(240)).local_only("spiffe://a");
    g.add_flows(&[old.build("h", 0), new.build("h", 1)], at(250));
    assert_eq!(g.stats().minutes_held, 2);
    // Time passes: the first minute leaves the retention.
    g.advance(at(361));
    assert_eq!(g.stats().minutes_held, 1);
    assert_eq!(g.stats().edges_held, 1);
    // A flow already outside it is not aggregated.
    let late = Flow::out("10.0.0.1:40002", "10.0.0.2:443", at(1)).local_only("spiffe://a");
    g.add_flows(&[late.build("h", 2)], at(362));
    assert_eq!(g.stats().flows_out_of_range, 1);
    let q = GraphQuery::parse(
        Some("from=0&to=1796033200"),
        at(400),
        Duration::from_secs(300),
    )
    .expect("query");
    assert!(q.clamped);
    assert_eq!(q.from, at(100));
    let r = g.query(&q);
    assert!(r.clamped);
    assert_eq!(r.flows, 1);
}

#[test]
fn the_total_cap_drops_the_oldest_minutes_first() {
    let mut g = GraphAggregator::new(GraphConfig::default().with_max_edges(2));
    let f = |secs, port: &'static str, i| {
        Flow::out("10.0.0.1:40000", port, at(secs))
            .local_only("spiffe://a")
            .build("h", i)
    };
    g.add_flows(&[f(0, "10.0.0.2:1", 0), f(1, "10.0.0.2:2", 1)], at(100));
    g.add_flows(&[f(61, "10.0.0.2:3", 2)], at(100));
    assert_eq!(g.stats().minutes_evicted, 1);
    assert_eq!(g.stats().edges_held, 1);
    // One minute alone over the cap: new edges go into other.
    g.add_flows(
        &[
            f(62, "10.0.0.2:4", 3),
            f(63, "10.0.0.2:5", 4),
            f(64, "10.0.0.2:6", 5),
        ],
        at(100),
    );
    let r = all(&g, at(60), at(120));
    assert_eq!(edge(&r, "spiffe://a -> other:0").connections, 2);
    assert_eq!(
        r.folded,
        Folded {
            edges: 2,
            connections: 2
        }
    );
    assert_eq!(g.stats().edges_held, 3);
}

#[test]
fn sketches_merge_across_minutes_within_the_error() {
    let mut one = RttSketch::default();
    let mut other = RttSketch::default();
    let mut all_values = Vec::new();
    for i in 1..=10_000u32 {
        let v = 100 + i * 37 % 9_000;
        all_values.push(v);
        if i % 2 == 0 { one.add(v) } else { other.add(v) }
    }
    one.merge(&other);
    all_values.sort_unstable();
    for q in [0.5, 0.99] {
        let exact = f64::from(all_values[(q * (all_values.len() - 1) as f64) as usize]);
        let got = one.quantile(q).expect("samples");
        assert!(
            (got - exact).abs() <= exact * one.relative_error() + 1.0,
            "q{q}: {got} vs {exact}"
        );
    }
    assert_eq!(one.count(), 10_000);
    // Through the aggregator: two minutes, p50 and p99 of both.
    let mut g = graph();
    let mut flows = Vec::new();
    // 190 at 1 ms in the first minute, 10 at 50 ms in the second.
    for i in 0..200u32 {
        let (secs, rtt) = if i < 190 { (30, 1_000) } else { (90, 50_000) };
        let mut f = Flow::out("10.0.0.1:40000", "10.0.0.2:443", at(secs)).local_only("spiffe://a");
        f.srtt_us = rtt;
        flows.push(f.build("h", i));
    }
    g.add_flows(&flows, at(200));
    let r = all(&g, at(0), at(120));
    let rtt = edge(&r, "spiffe://a -> unattributed:10.0.0.2:443")
        .rtt_us
        .expect("rtt");
    assert_eq!(rtt.samples, 200);
    assert!((990..=1_010).contains(&rtt.p50), "{rtt:?}");
    assert!((49_500..=50_500).contains(&rtt.p99), "{rtt:?}");
}

#[test]
fn the_workload_filter_keeps_the_edges_touching_it() {
    let mut g = graph();
    let ab = Flow::out("10.0.0.1:40000", "10.0.0.2:443", at(1)).names(
        "spiffe://a",
        "spiffe://b",
        RemoteIdentitySource::Heartbeat,
    );
    let bc = Flow::out("10.0.0.2:40000", "10.0.0.3:5432", at(2)).names(
        "spiffe://b",
        "spiffe://c",
        RemoteIdentitySource::Heartbeat,
    );
    let cd = Flow::out("10.0.0.3:40000", "10.0.0.4:80", at(3)).names(
        "spiffe://c",
        "spiffe://d",
        RemoteIdentitySource::Heartbeat,
    );
    g.add_flows(
        &[ab.build("h", 0), bc.build("h", 1), cd.build("h", 2)],
        at(10),
    );
    let r = g.query(&GraphQuery::new(at(0), at(60), Some("spiffe://b".into())));
    let ids: Vec<_> = r.edges.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&"spiffe://a -> spiffe://b:443"));
    assert!(ids.contains(&"spiffe://b -> spiffe://c:5432"));
    let nodes: Vec<_> = r.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(nodes, ["spiffe://a", "spiffe://b", "spiffe://c"]);
    let r = g.query(&GraphQuery::new(
        at(0),
        at(60),
        Some("unattributed:10.0.0.9".into()),
    ));
    assert!(r.edges.is_empty());
}

#[test]
fn interim_records_add_their_growth_and_connections_count_at_the_close() {
    let mut g = graph();
    let step = |secs, kind, sent, i| {
        let mut f = Flow::out("10.0.0.1:40000", "10.0.0.2:5432", at(secs)).local_only("spiffe://a");
        f.kind = kind;
        f.bytes = (sent, sent * 2);
        f.flow_id = Some(42);
        f.build("h", i)
    };
    g.add_flows(
        &[
            step(50, RecordKind::Interim, 100, 0),
            step(110, RecordKind::Interim, 250, 1),
            // A duplicate changes nothing.
            step(110, RecordKind::Interim, 250, 2),
            step(130, RecordKind::Final, 300, 3),
            // A snapshot racing the close, with smaller counters: nothing either.
            step(131, RecordKind::Interim, 290, 4),
        ],
        at(200),
    );
    let id = "spiffe://a -> unattributed:10.0.0.2:5432";
    let per_minute: Vec<_> = (0..3)
        .map(|m| {
            let r = all(&g, at(60 * m), at(60 * m + 60));
            let e = edge(&r, id);
            (e.connections, e.bytes_sent, e.bytes_received)
        })
        .collect();
    assert_eq!(per_minute, [(0, 100, 200), (0, 150, 300), (1, 50, 100)]);
    let r = all(&g, at(0), at(180));
    assert_eq!(edge(&r, id).bytes_sent, 300);
    assert_eq!(edge(&r, id).recent[0].record_kind, "interim");
    assert_eq!(edge(&r, id).recent[0].close_reason, None);
}

#[test]
fn windows_that_do_not_add_up_are_listed() {
    let mut g = graph();
    let start = (T0 + 60) * 1000;
    let report = |host: &str, lost: u64| WindowReport {
        batch: batch(host),
        record_index: 3,
        instance: InstanceId::new(1),
        window: Window::from_millis(start, start + 60_000).expect("window"),
        status: WindowStatus::AllChunks,
        completeness: Some(Completeness {
            closes_seen: 3 + lost,
            records_emitted: 3,
            lost_ring_full: lost,
            running_whole_window: true,
            ..Completeness::default()
        }),
        chunks_expected: Some(1),
        chunks_received: 1,
        records_received: 3,
        interim_records_received: 0,
    };
    g.add_reports(&[report("good", 0), report("lossy", 4)], at(200));
    let r = all(&g, at(0), at(180));
    assert_eq!((r.windows.reported, r.windows.incomplete), (2, 1));
    assert_eq!(r.incomplete.len(), 1);
    let w = &r.incomplete[0];
    assert_eq!(w.host, "lossy");
    assert_eq!(w.window_start, "2026-11-30T10:01:00Z");
    assert_eq!(w.window_end, "2026-11-30T10:02:00Z");
    assert_eq!(w.records_lost, Some(4));
    assert_eq!(w.status, "all_chunks");
    assert!(all(&g, at(0), at(60)).incomplete.is_empty());
}

#[test]
fn unknown_direction_takes_the_higher_port_as_the_client() {
    let mut g = graph();
    let mut f = Flow::out("10.0.0.2:5432", "10.0.0.1:40000", at(1)).local_only("spiffe://db");
    f.direction = Direction::Unknown;
    g.add_flows(&[f.build("h", 0)], at(10));
    let r = all(&g, at(0), at(60));
    assert_eq!(r.edges[0].id, "unattributed:10.0.0.1 -> spiffe://db:5432");
}

#[test]
fn query_parameters_are_checked() {
    let now = at(3_600);
    let day = Duration::from_secs(86_400);
    let q = GraphQuery::parse(None, now, day).expect("default");
    assert_eq!((q.from, q.to, q.clamped), (at(2_700), now, false));
    let q = GraphQuery::parse(
        Some("from=2026-11-30T10:00:00Z&to=1796033400&workload=spiffe%3A%2F%2Fa"),
        now,
        day,
    )
    .expect("parsed");
    assert_eq!((q.from, q.to), (at(0), at(600)));
    assert_eq!(q.workload.as_deref(), Some("spiffe://a"));
    for (bad, names) in [
        ("from=yesterday", "from:"),
        ("to=2026-11-30T10:00:00+01:00", "to:"),
        ("from=600&to=600", "from:"),
        ("colour=red", "colour:"),
        ("workload=", "workload:"),
        ("to=253402300800", "to:"),
        ("from=99999999999999999999999", "from:"),
        ("to=10000-01-01T00:00:00Z", "to:"),
        ("workload=a&workload=b", "workload:"),
    ] {
        let e = GraphQuery::parse(Some(bad), now, day).expect_err(bad);
        assert!(e.starts_with(names), "{bad}: {e}");
        assert!(!e.contains('\n'));
    }
}

#[test]
fn the_json_has_the_documented_shape() {
    let mut g = graph();
    let f = Flow::out("10.0.0.1:40000", "10.0.0.2:443", at(1)).names(
        "spiffe://a",
        "spiffe://b",
        RemoteIdentitySource::Heartbeat,
    );
    g.add_flows(&[f.build("h", 0)], at(10));
    let v = serde_json::to_value(all(&g, at(0), at(60))).expect("json");
    for key in [
        "from",
        "to",
        "minutes",
        "clamped",
        "truncated",
        "nodes",
        "edges",
        "flows",
        "unattributed_flows",
        "unattributed_share",
        "folded",
        "windows",
        "incomplete",
    ] {
        assert!(v.get(key).is_some(), "{key} missing in {v}");
    }
    let e = &v["edges"][0];
    for key in [
        "id",
        "source",
        "target",
        "port",
        "connections",
        "failed",
        "failed_total",
        "bytes_sent",
        "bytes_received",
        "retransmits",
        "rtt_us",
        "recent",
    ] {
        assert!(e.get(key).is_some(), "{key} missing in {e}");
    }
    let p50 = e["rtt_us"]["p50"].as_u64().expect("p50");
    assert!((495..=505).contains(&p50), "{p50}");
    assert_eq!(
        v["folded"],
        serde_json::json!({"edges": 0, "connections": 0})
    );
    assert_eq!(v["nodes"][0]["kind"], "workload");
}

#[test]
fn new_edges_keep_getting_recent_flows_once_the_lists_are_full() {
    // 20 edge-minutes: recent lists for at most 2 edges.
    let mut g = GraphAggregator::new(GraphConfig::default().with_max_edges(20));
    for (i, port) in [441u16, 442, 443].into_iter().enumerate() {
        let remote: &'static str = Box::leak(format!("10.0.0.2:{port}").into_boxed_str());
        let f = Flow::out("10.0.0.1:40000", remote, at(10 * i as u64))
            .names("spiffe://a", "spiffe://b", RemoteIdentitySource::Heartbeat)
            .build("h", i as u32);
        g.add_flows(&[f], at(40));
    }
    let r = all(&g, at(0), at(60));
    assert_eq!(r.edges.len(), 3);
    // The newest edge has its flow; the stalest list made room.
    assert_eq!(edge(&r, "spiffe://a -> spiffe://b:443").recent.len(), 1);
    assert_eq!(edge(&r, "spiffe://a -> spiffe://b:441").recent.len(), 0);
}

#[test]
fn a_window_reported_far_ahead_opens_no_minute() {
    let mut g = graph();
    let start = (T0 + 86_400) * 1000;
    let ahead = WindowReport {
        batch: batch("skewed"),
        record_index: 0,
        instance: InstanceId::new(1),
        window: Window::from_millis(start, start + 60_000).expect("window"),
        status: WindowStatus::AllChunks,
        completeness: None,
        chunks_expected: Some(1),
        chunks_received: 1,
        records_received: 0,
        interim_records_received: 0,
    };
    g.add_reports(&[ahead], at(60));
    assert_eq!(g.stats().minutes_held, 0);
}

#[test]
fn a_connection_whose_counting_ends_final_is_lost_is_counted_from_the_other_end() {
    let mut g = graph();
    // The client's interim record counts the traffic; its final record is lost.
    let mut interim = Flow::out("10.0.0.1:40000", "10.0.0.2:443", at(30)).names(
        "spiffe://a",
        "spiffe://b",
        RemoteIdentitySource::Heartbeat,
    );
    interim.kind = RecordKind::Interim;
    interim.flow_id = Some(7);
    g.add_flows(&[interim.build("host-a", 0)], at(35));
    // The server's final record: reset.
    let mut server = Flow::out("10.0.0.2:443", "10.0.0.1:40000", at(50))
        .inbound()
        .names("spiffe://b", "spiffe://a", RemoteIdentitySource::Heartbeat);
    server.close = CloseReason::Reset;
    server.bytes = (5_000, 500);
    g.add_flows(&[server.build("host-b", 0)], at(55));
    let r = all(&g, at(0), at(60));
    assert_eq!(r.edges.len(), 1, "{:#?}", r.edges);
    let e = edge(&r, "spiffe://a -> spiffe://b:443");
    assert_eq!(e.connections, 1);
    assert_eq!(e.failed.get("reset"), Some(&1), "{:?}", e.failed);
    // The traffic is the client's interim record's alone.
    assert_eq!((e.bytes_sent, e.bytes_received), (100, 1_000));
}

#[test]
fn a_late_minute_behind_sealed_ones_is_sealed_too() {
    let mut g = GraphAggregator::new(GraphConfig::default().with_top_edges(1));
    let flow = |remote: &'static str, t: SystemTime, i: u32| {
        Flow::out("10.0.0.1:40000", remote, t)
            .local_only("spiffe://a")
            .build("h", i)
    };
    // Minute 10, sealed three minutes after it ends.
    g.add_flows(&[flow("10.0.1.1:443", at(600), 0)], at(610));
    g.advance(at(900));
    // A late chunk opens minute 5 with two edges (2N while it fills).
    g.add_flows(
        &[
            flow("10.0.1.1:443", at(300), 1),
            flow("10.0.1.1:443", at(301), 2),
            flow("10.0.1.2:443", at(302), 3),
        ],
        at(905),
    );
    g.advance(at(910));
    let r = all(&g, at(300), at(360));
    assert_eq!(r.edges.len(), 2, "{:#?}", r.edges);
    assert_eq!(
        edge(&r, "spiffe://a -> unattributed:10.0.1.1:443").connections,
        2
    );
    assert_eq!(edge(&r, "spiffe://a -> other:0").connections, 1);
}

#[test]
fn workload_ids_that_read_as_other_kinds_get_node_ids_of_their_own() {
    let mut g = graph();
    // A workload named `other` calls an address nobody owns, 10.0.0.9; a workload
    // named `unattributed:10.0.0.9` calls one named `workload:x`.
    let a = Flow::out("10.0.0.1:40000", "10.0.0.9:80", at(30))
        .local_only("other")
        .build("host-a", 0);
    let b = Flow::out("10.0.0.3:40000", "10.0.0.4:443", at(30))
        .names(
            "unattributed:10.0.0.9",
            "workload:x",
            RemoteIdentitySource::Heartbeat,
        )
        .build("host-b", 0);
    g.add_flows(&[a, b], at(40));
    let r = all(&g, at(0), at(60));
    let nodes: Vec<(&str, &str)> = r.nodes.iter().map(|n| (n.id.as_str(), n.kind)).collect();
    assert_eq!(
        nodes,
        [
            ("workload:other", "workload"),
            ("workload:unattributed:10.0.0.9", "workload"),
            ("workload:workload:x", "workload"),
            ("unattributed:10.0.0.9", "unattributed"),
        ]
    );
    edge(&r, "workload:other -> unattributed:10.0.0.9:80");
    edge(
        &r,
        "workload:unattributed:10.0.0.9 -> workload:workload:x:443",
    );
    let only = |id: &str| -> Vec<String> {
        g.query(&GraphQuery::new(at(0), at(60), Some(id.into())))
            .edges
            .into_iter()
            .map(|e| e.id)
            .collect()
    };
    assert_eq!(
        only("unattributed:10.0.0.9"),
        ["workload:other -> unattributed:10.0.0.9:80"]
    );
    assert_eq!(
        only("workload:other"),
        ["workload:other -> unattributed:10.0.0.9:80"]
    );
    assert_eq!(
        only("workload:unattributed:10.0.0.9"),
        ["workload:unattributed:10.0.0.9 -> workload:workload:x:443"]
    );
    assert_eq!(
        only("workload:workload:x"),
        ["workload:unattributed:10.0.0.9 -> workload:workload:x:443"]
    );
    assert!(only("other").is_empty());
    assert!(only("workload:x").is_empty());
}

#[test]
fn edges_whose_ids_read_alike_get_ids_of_their_own() {
    let mut g = graph();
    // `a` -> `b -> c` and `a -> b` -> `c`, both on port 1: `a -> b -> c:1` twice.
    let one = Flow::out("10.0.0.1:40000", "10.0.0.2:1", at(30))
        .names("a", "b -> c", RemoteIdentitySource::Heartbeat)
        .build("host-a", 0);
    let mut two = Flow::out("10.0.0.3:40000", "10.0.0.4:1", at(30)).names(
        "a -> b",
        "c",
        RemoteIdentitySource::Heartbeat,
    );
    // Heavier, so it comes first in the answer.
    two.bytes = (10_000, 10_000);
    let two = two.build("host-b", 0);
    g.add_flows(&[one, two], at(40));
    let r = all(&g, at(0), at(60));
    let ids: Vec<(&str, &str, &str)> = r
        .edges
        .iter()
        .map(|e| (e.id.as_str(), e.source.as_str(), e.target.as_str()))
        .collect();
    assert_eq!(
        ids,
        [
            ("a -> b -> c:1 #6", "a -> b", "c"),
            ("a -> b -> c:1 #1", "a", "b -> c"),
        ]
    );
    // The same IDs when a filter leaves one edge: they depend on the edge alone.
    let filtered = g.query(&GraphQuery::new(at(0), at(60), Some("a".into())));
    assert_eq!(filtered.edges.len(), 1);
    assert_eq!(filtered.edges[0].id, "a -> b -> c:1 #1");
}
