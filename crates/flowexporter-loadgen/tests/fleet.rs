//! The fleet simulator against the real attribution engine, at a scale CI affords:
//! nothing may be misattributed (interim records of long-lived connections included),
//! every flow sent must come out exactly once, the share left unattributed must stay
//! within what the faults explain, and every window's completeness record must be
//! right: adding up when all its chunks arrived, not when some were lost.

use std::time::Duration;

use flow_collector::completeness::WindowStatus;
use flowexporter_loadgen::fleet::{
    self, FleetConfig, FleetReport, config::Routing, traffic::ConnKind,
};

/// A small fleet with short-lived workloads (so that IPs change hands often within
/// ten minutes) and every fault.
fn faulty(seed: u64) -> FleetConfig {
    FleetConfig {
        hosts: 20,
        workloads_per_host: 5,
        minutes: 10,
        connections_per_minute: 20,
        seed,
        drop_chunks: 0.05,
        duplicate_chunks: 0.05,
        late_chunks: 0.10,
        reorder_chunks: 0.05,
        max_late: Duration::from_secs(90),
        max_skew: Duration::from_secs(1),
        mean_lifetime: Duration::from_secs(3 * 60),
        // A host's minute is two or three chunks: a dropped one leaves its window
        // with chunks missing, or without its last chunk.
        max_records_per_chunk: 25,
        ..FleetConfig::default()
    }
}

fn run(config: &FleetConfig) -> FleetReport {
    let report = fleet::run(config).expect("the simulation runs");
    println!("{report}");
    report
}

fn assert_sound(report: &FleetReport) {
    assert_eq!(
        report.tally.misattributed,
        0,
        "misattributed flows:\n{}",
        report.examples.join("\n")
    );
    assert!(
        report.counts_add_up(),
        "the counts do not add up:\n{report}"
    );
    assert_eq!(report.tally.unattributed_without_reason, 0);
    // Round robin splits a window's chunks across nodes: no node can judge it.
    assert!(
        !report.windows_judged() || report.windows_are_right(),
        "the windows' completeness records are wrong:\n{report}"
    );
    // Long-lived connections were open across window closes, and every interim
    // record came out (checked like every flow above).
    assert!(report.traffic.of(ConnKind::LongLived) > 0);
    assert!(report.traffic.interim_records > 0);
    assert!(report.collector.interim_out > 0);
}

#[test]
fn a_faulty_fleet_is_never_misattributed_and_every_flow_comes_out_once() {
    let report = run(&faulty(1));
    assert_sound(&report);
    // Every fault happened, and the collector dropped each duplicate.
    let d = report.delivery;
    assert!(
        d.dropped > 0 && d.duplicated > 0 && d.late > 0 && d.reordered > 0,
        "{d:?}"
    );
    assert_eq!(report.collector.duplicates, d.duplicated);
    // Every source of attribution was used.
    let t = &report.tally;
    assert!(t.correct_peer_record > 0 && t.correct_heartbeat > 0 && t.correct_static > 0);
    // Dropped chunks leave windows that do not add up, and say so (a window none of
    // whose chunks arrived has no record).
    let w = &report.windows;
    assert!(
        w.of(WindowStatus::ChunksMissing) + w.of(WindowStatus::LastChunkMissing) > 0,
        "{w:?}"
    );
    assert!(w.adding_up < w.total());
    // Unattributed although the truth had a name. Without faults that is none (see
    // the next test). A dropped chunk takes with it the peer records of its host's
    // minute and the heartbeats that would have covered its workloads' IPs then, so
    // the flows that had their peer in it mostly go unattributed: measured 0.8 to 0.9
    // times the share of flows dropped, over seeds 1 to 12. Allow that share plus 2
    // points (owner changes within the tolerance, shared IPv4s without their peer).
    let dropped = 100.0 * d.records_dropped as f64 / report.traffic.records as f64;
    let answerable = report.unattributed_answerable_percent();
    println!(
        "unattributed: {:.2} % of all flows, {answerable:.2} % of those whose truth had a \
         name; {dropped:.2} % of flows were in dropped chunks",
        report.unattributed_percent(),
    );
    assert!(answerable < dropped + 2.0, "{answerable:.2} % unattributed");
}

#[test]
fn without_faults_little_is_left_unattributed() {
    let config = FleetConfig {
        drop_chunks: 0.0,
        duplicate_chunks: 0.0,
        late_chunks: 0.0,
        reorder_chunks: 0.0,
        ..faulty(2)
    };
    let report = run(&config);
    assert_sound(&report);
    assert_eq!(report.delivery.dropped, 0);
    // Every window arrived whole and adds up, and counts every record that came out.
    let w = &report.windows;
    assert_eq!(w.of(WindowStatus::AllChunks), w.total());
    assert_eq!(w.adding_up, w.total());
    assert_eq!(
        w.records_received + w.interim_received,
        report.collector.flows_out
    );
    assert_eq!(report.collector.interim_out, report.traffic.interim_records);
    println!(
        "unattributed without faults: {:.2} % of those whose truth had a name",
        report.unattributed_answerable_percent()
    );
    // Every flow whose truth has a name is attributed: peer records for flows between
    // two exporters, heartbeats for refused connections, the static table for the
    // database and the load balancer; what is left is owner changes within the
    // tolerance, which this seed does not hit (0.0 % measured).
    assert!(
        report.unattributed_answerable_percent() < 0.5,
        "{:.2} %",
        report.unattributed_answerable_percent()
    );
}

#[test]
fn heavy_faults_and_other_seeds_still_misattribute_nothing() {
    for seed in [3, 4, 5] {
        let config = FleetConfig {
            drop_chunks: 0.3,
            duplicate_chunks: 0.3,
            late_chunks: 0.3,
            reorder_chunks: 0.2,
            max_late: Duration::from_secs(200),
            ..faulty(seed)
        };
        assert_sound(&run(&config));
    }
}

#[test]
fn chunks_later_than_the_hold_back_misattribute_nothing() {
    // Up to ten minutes late, five times the hold-back: for the flows decided before
    // them, their records are as good as lost.
    for seed in [1, 2] {
        let config = FleetConfig {
            late_chunks: 0.3,
            max_late: Duration::from_secs(600),
            minutes: 20,
            hosts: 15,
            ..faulty(seed)
        };
        assert!(config.max_late > config.hold_back);
        let report = run(&config);
        assert_sound(&report);
        assert!(report.delivery.late > 0);
    }
}

#[test]
fn a_seed_replays_the_same_run() {
    let (a, b) = (run(&faulty(6)), run(&faulty(6)));
    assert_eq!(a.traffic, b.traffic);
    assert_eq!(a.delivery, b.delivery);
    assert_eq!(a.tally, b.tally);
}

#[test]
fn three_collector_nodes_sharing_heartbeats_misattribute_nothing() {
    for routing in [Routing::ByHost, Routing::RoundRobin] {
        let one = run(&faulty(1));
        let config = FleetConfig {
            nodes: 3,
            routing,
            ..faulty(1)
        };
        let three = run(&config);
        assert_sound(&three);
        assert!(three.passed());
        // The same traffic and faults as on one node; every flow came out once,
        // from the node its chunk reached.
        assert_eq!(three.traffic, one.traffic);
        assert_eq!(three.delivery, one.delivery);
        assert_eq!(three.nodes.len(), 3);
        for node in &three.nodes {
            assert!(node.collector.flows_out > 0, "{node:?}");
            assert_eq!(node.tally.misattributed, 0);
            // Every node published heartbeats and applied the others'.
            assert!(node.collector.heartbeats_out > 0 && node.collector.heartbeats_in > 0);
        }
        let h = &three.collector;
        assert_eq!(h.heartbeat_decode_errors, 0);
        assert_eq!(h.heartbeats_in, 2 * h.heartbeats_out);
        // Compacted: fewer heartbeats than records.
        assert!(h.heartbeats_out < three.traffic.records, "{h:?}");
        // Flows whose peer record reached another node are decided from the
        // heartbeats (or not at all): fewer attributed than on one node. Measured on
        // this seed: 94.2 % on one node, 85.0 % (by host) and 84.9 % (round robin)
        // on three. Flows to a shared IPv4 and short flows the map cannot confirm
        // need their peer's record, which only one node sees.
        println!(
            "attributed: {:.2} % on one node, {:.2} % on three ({}); heartbeats: {:.0} \
             messages and {:.0} bytes per simulated minute per 1,000 hosts",
            one.attributed_percent(),
            three.attributed_percent(),
            routing.as_str(),
            three.heartbeats_per_minute_per_1000_hosts(),
            three.heartbeat_bytes_per_minute_per_1000_hosts(),
        );
        assert!(three.tally.correct_heartbeat > one.tally.correct_heartbeat);
        assert!(three.attributed_percent() > one.attributed_percent() - 15.0);
        // The heartbeats are what attributes across nodes: arriving after the
        // hold-back, too late for every flow, they leave far more unattributed
        // (attributed: 33.8 % by host, 46.7 % round robin), and still nothing
        // misattributed.
        let late = run(&FleetConfig {
            heartbeat_delay: Duration::from_secs(600),
            ..config.clone()
        });
        assert_sound(&late);
        println!(
            "attributed with the heartbeats too late: {:.2} %",
            late.attributed_percent()
        );
        assert!(three.attributed_percent() > late.attributed_percent() + 20.0);
        // A seed replays the same run through the nodes.
        let again = run(&config);
        assert_eq!(again.tally, three.tally);
        assert_eq!(again.collector, three.collector);
    }
}

#[test]
fn many_nodes_and_heavy_faults_still_misattribute_nothing() {
    for (seed, nodes, routing) in [
        (3, 5, Routing::RoundRobin),
        (4, 2, Routing::ByHost),
        (5, 4, Routing::RoundRobin),
        (6, 5, Routing::ByConnection),
        (4, 2, Routing::ByConnection),
    ] {
        let config = FleetConfig {
            drop_chunks: 0.3,
            duplicate_chunks: 0.3,
            late_chunks: 0.3,
            reorder_chunks: 0.2,
            max_late: Duration::from_secs(200),
            nodes,
            routing,
            // Kafka slow: the heartbeats take a minute.
            heartbeat_delay: Duration::from_secs(if seed == 4 { 60 } else { 2 }),
            ..faulty(seed)
        };
        let report = run(&config);
        assert_sound(&report);
        assert_eq!(report.collector.heartbeat_decode_errors, 0);
    }
}

/// The faulty fleet of `seed` through `nodes` nodes routed by connection, with these
/// heartbeat and routing delays.
fn by_connection(seed: u64, nodes: u32, heartbeat: Duration, routing: Duration) -> FleetConfig {
    FleetConfig {
        nodes,
        routing: Routing::ByConnection,
        heartbeat_delay: heartbeat,
        routing_delay: routing,
        ..faulty(seed)
    }
}

#[test]
fn connection_routing_through_three_nodes_misattributes_nothing_and_every_flow_comes_out_once() {
    let one = run(&faulty(1));
    let config = FleetConfig {
        nodes: 3,
        routing: Routing::ByConnection,
        ..faulty(1)
    };
    let three = run(&config);
    assert_sound(&three);
    assert!(three.passed());
    // The same traffic and faults as on one node: each duplicate dropped by the
    // intake its host's chunks reach, each window judged there.
    assert_eq!(three.traffic, one.traffic);
    assert_eq!(three.delivery, one.delivery);
    assert_eq!(three.collector.duplicates, three.delivery.duplicated);
    assert!(three.windows_judged() && three.windows_are_right());
    assert_eq!(three.windows.reported, one.windows.reported);
    assert_eq!(three.windows.adding_up, one.windows.adding_up);
    // Every record of every chunk taken in was routed once (undecided by the
    // intake's route-only attributor), and pushed once by the node owning its
    // partition: every node takes chunks in, attributes records, publishes its
    // intake's heartbeats and applies every node's, its own intake's included.
    let c = &three.collector;
    assert!(three.routed_records_add_up());
    assert_eq!(c.intake_errors, 0);
    assert_eq!(c.routed_records_out, three.expected_out());
    assert_eq!(c.routed_records_in, c.records_in);
    assert!(c.routed_messages_out > 0 && c.routed_decode_errors == 0);
    assert_eq!(c.heartbeat_decode_errors, 0);
    assert_eq!(c.heartbeats_in, 3 * c.heartbeats_out);
    for node in &three.nodes {
        let n = &node.collector;
        assert!(n.frames > 0 && n.routed_records_out > 0, "{node:?}");
        assert!(n.routed_records_in > 0 && n.flows_out == n.routed_records_in);
        assert!(n.heartbeats_out > 0 && n.heartbeats_in == c.heartbeats_out);
        assert_eq!(node.tally.misattributed, 0);
    }
    // The intakes publish the heartbeats, each of the claims of the chunks it took
    // in: no more than by host (the same chunks reach the same nodes, whose
    // attributors keep the same claims), and in fact the very same messages; the
    // attributing halves publish none (when they did, a host's claims went out
    // once per node its records were routed to: 1.4 to 2.9 times as many).
    let by_host = run(&FleetConfig {
        nodes: 3,
        ..faulty(1)
    });
    let h = &by_host.collector;
    assert!(c.heartbeats_out <= h.heartbeats_out);
    assert_eq!(
        (
            c.heartbeats_out,
            c.heartbeat_bytes_out,
            c.heartbeat_ranges_out
        ),
        (
            h.heartbeats_out,
            h.heartbeat_bytes_out,
            h.heartbeat_ranges_out
        )
    );
    assert_eq!(
        three.heartbeats_per_minute_per_1000_hosts(),
        by_host.heartbeats_per_minute_per_1000_hosts()
    );
    // The intake writes each chunk's records of one partition as one message.
    assert!(c.routed_messages_out <= three.delivery.chunks * 12);
    // A seed replays the same run through the nodes.
    let again = run(&config);
    assert_eq!(again.tally, three.tally);
    assert_eq!(again.collector, three.collector);
}

#[test]
fn connection_routing_attributes_the_flows_one_node_attributes() {
    for seed in [1, 2, 3] {
        let one = run(&faulty(seed));
        // Without delays, three nodes routed by connection decide every flow exactly
        // as one node does: both ends' records meet on one node (the peer index), and
        // every node's map receives every claim at once (the heartbeats).
        let zero = run(&by_connection(seed, 3, Duration::ZERO, Duration::ZERO));
        assert_sound(&zero);
        assert_eq!(zero.tally, one.tally, "seed {seed}");
        // So does one node routing to itself.
        let alone = run(&by_connection(seed, 1, Duration::ZERO, Duration::ZERO));
        assert_eq!(alone.tally, one.tally, "seed {seed}");
        // The routing delay (50 ms), with the heartbeats as late, changes nothing
        // here: a record waits its peer longer than that (measured: identical on
        // seeds 1 to 8).
        let defaults = FleetConfig::default();
        let routed = run(&by_connection(
            seed,
            3,
            defaults.routing_delay,
            defaults.routing_delay,
        ));
        assert_sound(&routed);
        assert_eq!(routed.tally, one.tally, "seed {seed}");
        // The intake publishes the heartbeats as it takes the chunk in: with no
        // heartbeat delay, every node has the chunk's claims 50 ms before its
        // records, whose peer wait and hold-back therefore end 50 ms later, by
        // when the map may know more. The peer record and the static table decide
        // the same flows; the map a few more (measured on seeds 1 to 8: 0 to 5 of
        // about 8,000, none fewer), nothing misattributed.
        let early = run(&by_connection(
            seed,
            3,
            Duration::ZERO,
            defaults.routing_delay,
        ));
        assert_sound(&early);
        assert_eq!(
            early.tally.correct_peer_record,
            one.tally.correct_peer_record
        );
        assert_eq!(early.tally.correct_static, one.tally.correct_static);
        assert!(early.tally.correct_heartbeat >= one.tally.correct_heartbeat);
        assert!(
            early.tally.correct() - one.tally.correct() <= 10,
            "seed {seed}"
        );
        // With the default delays, the peer record decides exactly the flows it
        // decides on one node; the heartbeats, 2 s late, attribute a few fewer from
        // the map (measured on seeds 1 to 8: 0 to 17 of about 8,000 flows).
        let late = run(&by_connection(
            seed,
            3,
            defaults.heartbeat_delay,
            defaults.routing_delay,
        ));
        assert_sound(&late);
        assert_eq!(
            late.tally.correct_peer_record,
            one.tally.correct_peer_record
        );
        assert_eq!(late.tally.correct_static, one.tally.correct_static);
        assert!(late.tally.correct() <= one.tally.correct());
        assert!(
            late.attributed_percent() > one.attributed_percent() - 0.5,
            "seed {seed}: {:.2} % against {:.2} %",
            late.attributed_percent(),
            one.attributed_percent()
        );
        // Routed by host, the peer index is split across the nodes: the gap that
        // connection routing closes (measured: 85.0 % against 94.2 % on seed 1).
        let by_host = run(&FleetConfig {
            nodes: 3,
            ..faulty(seed)
        });
        assert_sound(&by_host);
        println!(
            "seed {seed}: attributed {:.2} % on one node; through 3 nodes {:.2} % by \
             connection ({:.2} % without delays), {:.2} % by host",
            one.attributed_percent(),
            late.attributed_percent(),
            zero.attributed_percent(),
            by_host.attributed_percent(),
        );
        assert!(by_host.attributed_percent() < one.attributed_percent() - 5.0);
        assert!(late.attributed_percent() > by_host.attributed_percent() + 5.0);
    }
}

/// `fleet --graph-json FILE` writes the run's dependency graph as the graph API
/// answers it: workload nodes and the edges between them, every connection counted
/// once (both ends' records, in order or with chunks late past the peer wait, and a
/// host's own probes whose records name no workload).
#[test]
fn the_graph_of_a_run_is_written_as_the_api_answers_it() {
    for late in [&[][..], &["--late-chunks", "0.5", "--max-late", "6m"][..]] {
        let (report, graph) = fleet_graph(late);
        let nodes = graph["nodes"].as_array().expect("nodes");
        let edges = graph["edges"].as_array().expect("edges");
        assert!(nodes.iter().any(|n| n["kind"] == "workload"));
        assert_eq!(graph["truncated"], false);
        assert_eq!(graph["folded"]["edges"], 0);
        assert_eq!(
            graph["flows"], report["flows"],
            "every flow aggregated ({late:?})"
        );
        let connections: u64 = edges
            .iter()
            .map(|e| e["connections"].as_u64().expect("connections"))
            .sum();
        assert_eq!(
            Some(connections),
            report["connections"].as_u64(),
            "every connection once ({late:?})"
        );
        // Every edge's ends are among the nodes.
        let ids: std::collections::HashSet<&str> =
            nodes.iter().filter_map(|n| n["id"].as_str()).collect();
        for e in edges {
            for end in ["source", "target"] {
                let id = e[end].as_str().expect("an edge's end");
                assert!(ids.contains(id), "{id} is not a node");
            }
        }
    }
}

/// Runs a small fleet with `extra` arguments; its JSON report and its graph.
fn fleet_graph(extra: &[&str]) -> (serde_json::Value, serde_json::Value) {
    let path = std::env::temp_dir().join(format!("fleet-graph-{}.json", std::process::id()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flowexporter-loadgen"))
        .args(["fleet", "--hosts", "8", "--workloads-per-host", "4"])
        .args(["--minutes", "4", "--connections-per-minute", "12", "--json"])
        .args(extra)
        .arg("--graph-json")
        .arg(&path)
        .output()
        .expect("the load generator runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&path).expect("the graph was written");
    let _ = std::fs::remove_file(&path);
    let graph = serde_json::from_str(&text).expect("the graph is JSON");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .expect("the JSON report is the last line");
    (report, graph)
}
