//! `flowexporter run --kafka-brokers ... --kafka-topic ...` end to end with real
//! processes: the exporter binary, a real Kafka-protocol broker (tansu), real TCP
//! connections; the topic read back with an independent client (kafka-python) and
//! every frame decoded with flow-batch's decoder.

mod common;

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use common::*;
use flow_batch::wire::{ChunkDecoder, DecodeLimits};
use flow_collector::FaultInjection;
use flow_testkit::kafka::{Broker, Message};

const TOPIC: &str = "flowexporter-chunks";
const BATCH_ID_HEADER: &str = "flowexporter-batch-id";

/// Starts the exporter producing to `brokers` (topic [`TOPIC`]), with the host ID
/// `test-host`, 1 s retry backoff, spool and journal in `scratch`, and `extra`
/// arguments; returns once it has attached, with its log lines.
fn start_exporter_kafka(brokers: &str, scratch: &Scratch, extra: &[&str]) -> (Exporter, Logs) {
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--kafka-brokers", brokers, "--kafka-topic", TOPIC])
        .args([
            "--window",
            "1s",
            "--retry-max-backoff",
            "1s",
            "--host-id",
            "test-host",
        ])
        .arg("--spool-dir")
        .arg(scratch.path("spool"))
        .arg("--journal-dir")
        .arg(scratch.path("journal"))
        .arg("--pin-dir")
        .arg(scratch.pins())
        .args(extra)
        .stdout(Stdio::null());
    let (child, logs) = spawn_logged(cmd);
    (Exporter::new(child), logs)
}

/// The final records in `messages`, as `flowexporter tail --json` writes them (the
/// collector's field names), each message checked first: keyed by the host, its
/// header the batch ID its frame carries.
fn records_in(messages: &[Message]) -> Vec<serde_json::Value> {
    let mut decoder = ChunkDecoder::new(DecodeLimits::default()).expect("decoder");
    let mut records = Vec::new();
    for m in messages {
        assert_eq!(m.key.as_deref(), Some("test-host"), "the key is the host");
        let chunk = decoder.decode(&m.value).expect("a valid frame");
        assert_eq!(
            m.header(BATCH_ID_HEADER),
            Some(chunk.header.batch_id().to_string().as_str()),
            "the header is the frame's batch ID"
        );
        for record in &chunk.records {
            let mut line = Vec::new();
            flow_sink::json::write_line(&mut line, record).expect("JSON");
            let v: serde_json::Value = serde_json::from_slice(&line).expect("a JSON line");
            if v["record_kind"] == "final" {
                records.push(v);
            }
        }
    }
    records
}

/// The records of connections to `port`, counted by identity (local end, remote end,
/// close time): each must be 1.
fn count_for(records: &[serde_json::Value], port: u16) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for v in records
        .iter()
        .filter(|v| v["local_port"] == port || v["remote_port"] == port)
    {
        let key = format!(
            "{}:{}>{}:{}@{}",
            v["local_ip"], v["local_port"], v["remote_ip"], v["remote_port"], v["t_end"]
        );
        *seen.entry(key).or_insert(0) += 1;
    }
    seen
}

/// Waits until the topic holds `want` distinct records for each port of `ports`;
/// returns the final records.
fn wait_for_topic(broker: &Broker, ports: &[(u16, usize)]) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let records = records_in(&broker.read_topic(TOPIC));
        let done = ports
            .iter()
            .all(|(port, want)| count_for(&records, *port).len() >= *want);
        if done || Instant::now() > deadline {
            return records;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// One connection to a fresh listener on `::1` that sends `bytes` bytes from the
/// client; returns (listener port, client port).
fn exchange(bytes: usize) -> (u16, u16) {
    let listener = TcpListener::bind("[::1]:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    client.write_all(&vec![7u8; bytes]).expect("write");
    let mut buf = vec![0u8; bytes];
    server.read_exact(&mut buf).expect("read");
    let client_port = client.local_addr().expect("local").port();
    drop(client);
    drop(server);
    (port, client_port)
}

fn parse_time(v: &serde_json::Value) -> SystemTime {
    humantime::parse_rfc3339(v.as_str().expect("time string")).expect("RFC 3339")
}

#[test]
fn run_produces_the_records_of_real_connections_to_kafka_once_each() {
    let scratch = Scratch::new("kafka");
    let broker = Broker::in_memory();
    broker.create_topic(TOPIC, 2);
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let (exporter, mut logs) = start_exporter_kafka(
        &broker.address(),
        &scratch,
        &["--metrics-addr", &metrics_addr],
    );
    logs.wait_for(&["Kafka topic found"]);

    let before = SystemTime::now();
    let (port, client_port) = exchange(4_321);
    let after = SystemTime::now();
    let many = connections(30);
    let records = wait_for_topic(&broker, &[(port, 2), (many, 60)]);
    assert_exactly_once(&count_for(&records, many), 60);

    // The client end of the exchange, field by field.
    let client = records
        .iter()
        .find(|v| v["local_port"] == client_port && v["remote_port"] == port)
        .expect("the client's record");
    assert_eq!(client["local_ip"], "::1");
    assert_eq!(client["remote_ip"], "::1");
    assert_eq!(client["direction"], "outbound");
    assert_eq!(client["bytes_sent"], 4_321);
    assert_eq!(client["bytes_received"], 0);
    assert_eq!(client["close_reason"], "normal");
    assert_eq!(client["close_state"], "FIN_WAIT2");
    assert_eq!(client["identity_source"], "none");
    assert!(client["local_workload_id"].is_null());
    for key in ["segs_in", "segs_out", "retransmits", "srtt_us"] {
        assert!(client[key].is_u64(), "{key}: {client}");
    }
    let (start, end) = (parse_time(&client["t_start"]), parse_time(&client["t_end"]));
    assert!(before <= start && start <= end && end <= after, "{client}");
    // And the server end.
    let server = records
        .iter()
        .find(|v| v["local_port"] == port && v["remote_port"] == client_port)
        .expect("the server's record");
    assert_eq!(server["direction"], "inbound");
    assert_eq!(server["bytes_received"], 4_321);

    // The metrics follow (refreshed every second).
    std::thread::sleep(Duration::from_millis(1500));
    let text = scrape(&metrics_addr);
    assert!(
        metric(&text, "flowexporter_kafka_messages_produced_total ") >= 1,
        "{text}"
    );
    assert!(
        metric(&text, "flowexporter_kafka_produced_records_total ") >= 62,
        "{text}"
    );
    assert!(metric(&text, "flowexporter_kafka_produced_bytes_total ") > 0);
    assert_eq!(
        metric(
            &text,
            r#"flowexporter_kafka_produce_errors_total{kind="missing_topic"} "#
        ),
        0
    );
    assert!(
        text.contains("# TYPE flowexporter_kafka_spool_files gauge"),
        "{text}"
    );
    // No collector: no collector families.
    assert!(!text.contains("flowexporter_chunks_sent"), "{text}");

    exporter.stop();
    // What the stop flushed too: still every record once, every message a frame of
    // this host with its batch ID as header.
    let messages = broker.read_topic(TOPIC);
    let mut ids: Vec<&str> = messages
        .iter()
        .filter_map(|m| m.header(BATCH_ID_HEADER))
        .collect();
    let produced = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), produced, "a batch produced twice");
    let records = records_in(&messages);
    assert_exactly_once(&count_for(&records, many), 60);
    assert_exactly_once(&count_for(&records, port), 2);
    // The Kafka sink spools in its own subdirectory, empty once all is produced.
    let kafka_spool = scratch.path("spool").join("kafka");
    let left = std::fs::read_dir(&kafka_spool)
        .expect("the Kafka spool")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".chunk"))
        .count();
    assert_eq!(left, 0, "chunks left in {}", kafka_spool.display());
}

#[test]
fn run_sends_every_record_to_the_collector_and_to_kafka_alike() {
    let scratch = Scratch::new("kafka-both");
    let rt = runtime();
    let out = scratch.path("flows.jsonl");
    let collector_port = free_port();
    let collector = start_collector(&rt, collector_port, &out, FaultInjection::default());
    let broker = Broker::in_memory();
    broker.create_topic(TOPIC, 1);
    let collector_url = format!("http://127.0.0.1:{collector_port}");
    let (exporter, mut logs) = start_exporter_kafka(
        &broker.address(),
        &scratch,
        &["--collector", &collector_url],
    );
    logs.wait_for(&["Kafka topic found"]);
    let port = connections(25);
    let by_collector = wait_for(&out, port, 50, Duration::from_secs(30));
    let in_kafka = wait_for_topic(&broker, &[(port, 50)]);
    exporter.stop();
    assert_exactly_once(&by_collector, 50);
    assert_exactly_once(&count_for(&in_kafka, port), 50);
    // The same records: both sinks got every chunk.
    let collector_keys: Vec<_> = records_for(&out, port).into_keys().collect();
    let kafka = count_for(&records_in(&broker.read_topic(TOPIC)), port);
    assert_exactly_once(&kafka, 50);
    for key in collector_keys {
        assert!(kafka.contains_key(&key), "{key} not in Kafka");
    }
    rt.block_on(collector.shutdown());
}

#[test]
fn check_asks_the_cluster_for_the_topic_and_names_what_is_wrong() {
    let scratch = Scratch::new("kafka-check");
    let broker = Broker::in_memory();
    broker.create_topic(TOPIC, 3);
    let check = |topic: &str| {
        let out = Command::new(BIN)
            .arg("check")
            .arg("--pin-dir")
            .arg(scratch.pins())
            .arg("--state-dir")
            .arg(scratch.path("state"))
            .args(["--kafka-brokers", &broker.address(), "--kafka-topic", topic])
            .output()
            .expect("run flowexporter check");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let row = stdout
            .lines()
            .find(|l| l.starts_with("kafka topic  "))
            .unwrap_or_else(|| panic!("no kafka topic row in:\n{stdout}"))
            .to_owned();
        (out.status.success(), row)
    };
    let (ok, row) = check(TOPIC);
    assert!(
        ok && row.contains("pass") && row.contains("3 partition(s)"),
        "{row}"
    );
    let (ok, row) = check("no-such-topic");
    assert!(!ok, "{row}");
    assert!(
        row.contains("fail") && row.contains("\"no-such-topic\" does not exist"),
        "{row}"
    );
}
