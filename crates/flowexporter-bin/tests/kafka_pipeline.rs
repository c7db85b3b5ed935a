//! The whole pipeline on Kafka, for real: the `flowexporter` binary traces real TCP
//! connections (IPv4 and IPv6) and produces its chunks to an input topic; a collector
//! node consumes that topic as a consumer group, attributes every flow and writes it
//! to an output topic; an independent client (kafka-python) reads the output back.
//! Every record of the test's connections must arrive attributed (both ends are on
//! this host and traced, so each names the other: `peer_record`), once by its ID,
//! field by field.

mod common;

use std::{
    collections::HashMap,
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{Exporter, Scratch, exchange, runtime, spawn_logged, write_cert, write_file};
use flow_collector::{
    CollectorOptions, FlowCollector,
    kafka::{KafkaOptions, KafkaSettings},
};
use flow_testkit::kafka::Broker;

const WORKLOAD: &str = "spiffe://e2e/shop";

/// The output topic's final flows of connections to `server`, by flow ID.
fn flows_of(
    broker: &Broker,
    servers: &[SocketAddr],
) -> (HashMap<String, serde_json::Value>, usize) {
    let mut by_id = HashMap::new();
    let mut messages = 0;
    for m in broker.read_topic("flows") {
        if m.header("flowexporter-kind") != Some("flow") {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&m.value).expect("JSON");
        if v["record_kind"] != "final" {
            continue;
        }
        let ours = servers.iter().any(|s| {
            let port = serde_json::Value::from(s.port());
            let ip = serde_json::Value::from(s.ip().to_string());
            (v["local_port"] == port && v["local_ip"] == ip)
                || (v["remote_port"] == port && v["remote_ip"] == ip)
        });
        if ours {
            messages += 1;
            let id = m.header("flowexporter-id").expect("an ID").to_owned();
            by_id.insert(id, v);
        }
    }
    (by_id, messages)
}

#[test]
fn real_connections_go_exporter_kafka_collector_kafka_attributed_once_by_id() {
    pipeline("kafka-pipeline", false);
}

/// The same, with the collector routing records by connection through a connection
/// topic (`--connection-topic`) and attributing them in its connection consumer:
/// loopback connections (scoped to the host) route with the host's name.
#[test]
fn real_connections_routed_by_connection_are_attributed_once_by_id() {
    pipeline("kafka-pipeline-routed", true);
}

fn pipeline(name: &str, route: bool) {
    flow_testkit::mount_kernel_filesystems();
    let scratch = Scratch::new(name);
    let broker = Broker::in_memory();
    broker.create_topic("chunks", 2);
    broker.create_topic("flows", 3);
    broker.create_topic("heartbeats", 2);
    broker.create_topic("connections", 4);
    let rt = runtime();
    let settings = KafkaSettings::new(&broker.address()).expect("brokers");
    let kafka = KafkaOptions::new(settings)
        .with_input("chunks", "collectors")
        .with_output_topic("flows")
        .with_heartbeat_topic("heartbeats")
        .with_node_id("node-1");
    let kafka = if route {
        kafka.with_connection_topic("connections")
    } else {
        kafka
    };
    let options = CollectorOptions::new(
        "127.0.0.1:0".parse().expect("addr"),
        scratch.path("unused.jsonl"),
    )
    .with_hold_back(Duration::from_secs(5))
    .with_kafka(kafka);
    let collector = rt
        .block_on(FlowCollector::start(options))
        .expect("collector");

    let cert = scratch.path("identity.pem");
    write_cert(&cert, WORKLOAD);
    let config = scratch.path("config.toml");
    write_file(
        &config,
        &format!("[identity]\ncertificate = \"{}\"\n", cert.display()),
    );
    let mut cmd = Command::new(common::BIN);
    cmd.args([
        "run",
        "--kafka-brokers",
        &broker.address(),
        "--kafka-topic",
        "chunks",
    ])
    .args([
        "--window",
        "2s",
        "--retry-max-backoff",
        "1s",
        "--host-id",
        "e2e-host",
    ])
    .arg("--config")
    .arg(&config)
    .arg("--spool-dir")
    .arg(scratch.path("spool"))
    .arg("--journal-dir")
    .arg(scratch.path("journal"))
    .arg("--pin-dir")
    .arg(scratch.pins())
    .stdout(Stdio::null());
    let (child, _logs) = spawn_logged(cmd);
    let exporter = Exporter::new(child);

    let mut connections = Vec::new();
    for (i, ip) in ["127.0.0.1", "::1", "127.0.0.1", "::1"].iter().enumerate() {
        connections.push((exchange(ip, 1000 * (i + 1)), 1000 * (i + 1)));
    }
    let servers: Vec<SocketAddr> = connections.iter().map(|((s, _), _)| *s).collect();
    let want = connections.len() * 2;
    let deadline = Instant::now() + Duration::from_secs(90);
    let (flows, messages) = loop {
        let (flows, messages) = flows_of(&broker, &servers);
        if flows.len() >= want || Instant::now() > deadline {
            break (flows, messages);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        flows.len(),
        want,
        "both ends of every connection: {flows:#?}"
    );
    assert_eq!(messages, want, "each flow once (no crash, no rebalance)");
    for ((server, client), bytes) in &connections {
        let end = |local: &SocketAddr, remote: &SocketAddr| {
            let found: Vec<&serde_json::Value> = flows
                .values()
                .filter(|v| {
                    v["local_ip"] == local.ip().to_string()
                        && v["local_port"] == local.port()
                        && v["remote_ip"] == remote.ip().to_string()
                        && v["remote_port"] == remote.port()
                })
                .collect();
            assert_eq!(found.len(), 1, "{local} -> {remote}: {flows:#?}");
            found[0].clone()
        };
        let c = end(client, server);
        let s = end(server, client);
        let bytes = *bytes as u64;
        assert_eq!(c["direction"], "outbound");
        assert_eq!(s["direction"], "inbound");
        assert_eq!(
            (c["bytes_sent"].as_u64(), c["bytes_received"].as_u64()),
            (Some(bytes), Some(2 * bytes))
        );
        assert_eq!(
            (s["bytes_sent"].as_u64(), s["bytes_received"].as_u64()),
            (Some(2 * bytes), Some(bytes))
        );
        for v in [&c, &s] {
            assert_eq!(v["host_id"], "e2e-host");
            assert_eq!(v["local_workload_id"], WORKLOAD);
            assert_eq!(v["identity_source"], "certificate");
            assert_eq!(v["remote_workload_id"], WORKLOAD, "{v}");
            assert_eq!(v["remote_identity_source"], "peer_record", "{v}");
            assert!(v["remote_unattributed_reason"].is_null());
            assert!(v["flow_id"].is_string(), "{v}");
        }
        // The two ends of one connection are two flows with IDs of their own.
        assert_ne!(c["record_index"], s["record_index"]);
    }
    if route {
        let stats = collector.kafka_stats().expect("kafka");
        assert!(
            flow_collector::kafka::KafkaStats::get(&stats.routed_records) >= want as u64,
            "the records went through the connection topic"
        );
    }
    exporter.stop();
    rt.block_on(collector.shutdown());
}
