//! The `flowcollector` binary as an operator runs it: real process, real HTTP, real
//! files. A chunk is stored once across a restart (kill -9 between delivery and retry),
//! flows held back at a crash are written after the restart, bad chunks are refused
//! with a reason and never reach the output, SIGTERM drains, the configuration is
//! checked, and the metrics say what happened.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant, SystemTime},
};

use flow_batch::{
    Chunk, Completeness, Window,
    wire::{ChunkEncoder, InstanceId},
};
use flow_record::{Direction, FlowRecord};

mod common;
use common::{BIN, Collector, frame, metric, record};

/// The output's JSON lines.
fn lines(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("flows.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// Waits until the output has `n` lines (or fails).
fn wait_lines(dir: &Path, n: usize, within: Duration) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + within;
    loop {
        let v = lines(dir);
        if v.len() >= n {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{} lines, waited for {n}: {v:#?}",
            v.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_chunk_retried_after_a_collector_restart_is_stored_once() {
    let dir = tempfile::tempdir().expect("dir");
    let f = frame(
        "host-a",
        1,
        0,
        vec![
            record(
                "10.1.0.1:40000",
                "10.1.0.2:80",
                Some("web"),
                Duration::from_secs(1),
            ),
            record(
                "10.1.0.1:40001",
                "10.1.0.2:80",
                Some("web"),
                Duration::from_secs(1),
            ),
        ],
    );
    let c = Collector::start(dir.path(), &["--hold-back", "0s"]);
    let (status, result, _) = c.post(&f);
    assert_eq!((status, result.as_str()), (200, "accepted"));
    // The acknowledgement is lost and the collector dies before anything else.
    c.crash();
    let c = Collector::start(dir.path(), &["--hold-back", "0s"]);
    let (status, result, body) = c.post(&f);
    assert_eq!((status, result.as_str()), (200, "duplicate"), "{body}");
    c.stop();
    let out = lines(dir.path());
    assert_eq!(out.len(), 2, "{out:#?}");
    let mut indexes: Vec<u64> = out
        .iter()
        .map(|v| v["record_index"].as_u64().expect("index"))
        .collect();
    indexes.sort_unstable();
    assert_eq!(indexes, [0, 1]);
    for v in &out {
        assert_eq!(v["host_id"], "host-a");
        assert_eq!(v["batch_id"], format!("host-a/{:032x}/0", 1));
        assert_eq!(v["local_workload_id"], "web");
    }
}

#[test]
fn flows_held_back_at_a_crash_are_written_after_the_restart_once() {
    let dir = tempfile::tempdir().expect("dir");
    let records: Vec<FlowRecord> = (0..20)
        .map(|i| {
            record(
                &format!("10.2.0.1:{}", 41000 + i),
                "10.2.0.9:443",
                Some("api"),
                Duration::ZERO,
            )
        })
        .collect();
    let c = Collector::start(dir.path(), &["--hold-back", "3s"]);
    assert_eq!(c.post(&frame("host-b", 2, 0, records)).0, 200);
    c.crash(); // held back: nothing written yet
    assert!(lines(dir.path()).is_empty());
    let c = Collector::start(dir.path(), &["--hold-back", "3s"]);
    let out = wait_lines(dir.path(), 20, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1)); // nothing more comes
    c.stop();
    let out2 = lines(dir.path());
    assert_eq!(out2.len(), 20, "{out2:#?}");
    assert_eq!(out.len(), 20);
    for v in &out2 {
        // Nothing runs an exporter at 10.2.0.9.
        assert_eq!(v["remote_identity_source"], "none");
        assert_eq!(v["remote_unattributed_reason"], "no_owner_known");
        assert!(v["remote_workload_id"].is_null());
    }
}

#[test]
fn bad_chunks_are_refused_with_a_reason_and_never_reach_the_output() {
    let dir = tempfile::tempdir().expect("dir");
    let c = Collector::start(dir.path(), &["--hold-back", "0s"]);
    let (status, _, body) = c.post(b"not a frame at all");
    assert_eq!(status, 400);
    assert!(body.contains("bad frame"), "{body}");
    let mut f = frame(
        "host-c",
        3,
        0,
        vec![record(
            "10.3.0.1:40000",
            "10.3.0.2:80",
            None,
            Duration::ZERO,
        )],
    );
    let good = f.clone();
    let last = f.len() - 1;
    f[last] ^= 0xff; // the payload's CRC no longer matches
    let (status, _, body) = c.post(&f);
    assert_eq!(status, 400);
    assert!(
        body.to_lowercase().contains("crc") || body.contains("checksum"),
        "{body}"
    );
    // A refused chunk's batch ID is not remembered: the intact bytes under it are
    // stored.
    let (status, result, body) = c.post(&good);
    assert_eq!((status, result.as_str()), (200, "accepted"), "{body}");
    let (_, _, metrics) = c.get("/metrics");
    assert_eq!(
        metric(
            &metrics,
            "flowcollector_chunks_total{result=\"undecodable\"}"
        ),
        2
    );
    assert_eq!(
        metric(&metrics, "flowcollector_chunks_total{result=\"accepted\"}"),
        1
    );
    c.stop();
    let out = lines(dir.path());
    assert_eq!(out.len(), 1, "only the intact chunk's record: {out:#?}");
    assert_eq!(out[0]["batch_id"], format!("host-c/{:032x}/0", 3));
}

#[test]
fn peers_attribute_each_other_and_the_static_table_names_the_rest() {
    let dir = tempfile::tempdir().expect("dir");
    let owners = dir.path().join("static-owners.txt");
    std::fs::write(&owners, "# databases\n10.9.0.0/16 db:orders\n").expect("owners");
    let c = Collector::start(
        dir.path(),
        &[
            "--hold-back",
            "2s",
            "--static-owners",
            owners.to_str().expect("path"),
        ],
    );
    let client = record(
        "10.4.0.1:40000",
        "10.4.0.2:8080",
        Some("frontend"),
        Duration::ZERO,
    );
    let mut server = record(
        "10.4.0.2:8080",
        "10.4.0.1:40000",
        Some("backend"),
        Duration::ZERO,
    );
    server.direction = Direction::Inbound;
    let to_db = record(
        "10.4.0.1:40001",
        "10.9.3.4:5432",
        Some("frontend"),
        Duration::ZERO,
    );
    assert_eq!(
        c.post(&frame("client-host", 4, 0, vec![client, to_db])).0,
        200
    );
    assert_eq!(c.post(&frame("server-host", 5, 0, vec![server])).0, 200);
    let out = wait_lines(dir.path(), 3, Duration::from_secs(20));
    let find = |port: u64| {
        out.iter()
            .find(|v| v["local_port"] == port)
            .unwrap_or_else(|| panic!("no flow from port {port}: {out:#?}"))
    };
    let client = find(40000);
    assert_eq!(client["remote_workload_id"], "backend");
    assert_eq!(client["remote_identity_source"], "peer_record");
    assert!(client["remote_unattributed_reason"].is_null());
    let server = find(8080);
    assert_eq!(server["remote_workload_id"], "frontend");
    assert_eq!(server["remote_identity_source"], "peer_record");
    let db = find(40001);
    assert_eq!(db["remote_workload_id"], "db:orders");
    assert_eq!(db["remote_identity_source"], "static");
    let (_, _, metrics) = c.get("/metrics");
    assert_eq!(
        metric(
            &metrics,
            "flowcollector_flows_attributed_total{source=\"peer_record\"}"
        ),
        2
    );
    assert_eq!(
        metric(
            &metrics,
            "flowcollector_flows_attributed_total{source=\"static\"}"
        ),
        1
    );
    assert_eq!(metric(&metrics, "flowcollector_flows_out_total"), 3);
    c.stop();
}

#[test]
fn sigterm_writes_what_cannot_wait_as_shutdown() {
    let dir = tempfile::tempdir().expect("dir");
    let c = Collector::start(dir.path(), &["--hold-back", "10m", "--drain-timeout", "1s"]);
    let records = vec![record(
        "10.5.0.1:40000",
        "10.5.0.2:80",
        Some("batch"),
        Duration::ZERO,
    )];
    assert_eq!(c.post(&frame("host-e", 6, 0, records)).0, 200);
    let took = c.stop();
    assert!(took < Duration::from_secs(15), "SIGTERM took {took:?}");
    let out = lines(dir.path());
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(out[0]["remote_unattributed_reason"], "shutdown");
    assert_eq!(out[0]["remote_identity_source"], "none");
}

#[test]
fn a_window_with_its_completeness_gets_a_record_and_metrics() {
    let dir = tempfile::tempdir().expect("dir");
    let c = Collector::start(dir.path(), &["--hold-back", "0s"]);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let start = now - now % 60_000;
    let window = Window::from_millis(start, start + 60_000).expect("window");
    let records = vec![
        record("10.6.0.1:40000", "10.6.0.2:80", Some("w"), Duration::ZERO),
        record("10.6.0.1:40001", "10.6.0.2:80", Some("w"), Duration::ZERO),
    ];
    let mut chunk = Chunk::new(window, 0, 0, true, records);
    // Three closes: two emitted, one lost in the ring buffer.
    chunk.completeness = Some(Completeness {
        closes_seen: 3,
        records_emitted: 2,
        lost_ring_full: 1,
        running_whole_window: true,
        ..Completeness::default()
    });
    let frame = ChunkEncoder::new("host-f", InstanceId::new(7))
        .expect("encoder")
        .encode_to_vec(&chunk)
        .expect("encode");
    assert_eq!(c.post(&frame).0, 200);
    let out = wait_lines(dir.path(), 3, Duration::from_secs(20));
    let windows: Vec<_> = out
        .iter()
        .filter(|v| v["record_type"] == "completeness")
        .collect();
    assert_eq!(windows.len(), 1, "{out:#?}");
    let w = windows[0];
    assert_eq!(w["host_id"], "host-f");
    assert_eq!(w["status"], "all_chunks");
    assert_eq!(
        (&w["closes_seen"], &w["lost_ring_full"]),
        (&3.into(), &1.into())
    );
    assert_eq!(w["records_received"], 2);
    assert_eq!(w["adds_up"], true);
    let (_, _, metrics) = c.get("/metrics");
    assert_eq!(
        metric(
            &metrics,
            "flowcollector_window_completeness_windows_total{status=\"all_chunks\"}"
        ),
        1
    );
    assert_eq!(
        metric(
            &metrics,
            "flowcollector_window_completeness_records_lost_total{reason=\"ring_full\"}"
        ),
        1
    );
    assert_eq!(
        metric(
            &metrics,
            "flowcollector_window_completeness_not_adding_up_total"
        ),
        0
    );
    assert_eq!(metric(&metrics, "flowcollector_flows_out_total"), 2);
    c.stop();
}

/// `flowcollector config check` with `args` and the environment `env`.
fn config_check(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["config", "check"])
        .args(args)
        .envs(env.iter().copied())
        .env_remove("FLOWCOLLECTOR_CONFIG")
        .output()
        .expect("run config check");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn config_check_names_what_is_wrong_and_shows_what_is_in_force() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("config.toml");
    let path = file.to_str().expect("path");
    std::fs::write(
        &file,
        "out = \"/tmp/x.jsonl\"\n[attribution]\nhold_back = \"45s\"\n",
    )
    .expect("write");
    let (ok, text) = config_check(&[path], &[]);
    assert!(ok, "{text}");
    assert!(text.contains("attribution.hold_back = 45s"), "{text}");
    assert!(text.contains("configuration OK"), "{text}");
    // The environment overrides the file, a flag the environment.
    let (ok, text) = config_check(&["--config", path], &[("FLOWCOLLECTOR_HOLD_BACK", "20s")]);
    assert!(ok && text.contains("attribution.hold_back = 20s"), "{text}");
    let (ok, text) = config_check(
        &["--config", path, "--hold-back", "10s"],
        &[("FLOWCOLLECTOR_HOLD_BACK", "20s")],
    );
    assert!(ok && text.contains("attribution.hold_back = 10s"), "{text}");
    assert!(text.contains("completeness.window_grace = 10m"), "{text}");

    std::fs::write(
        &file,
        "out = \"/tmp/x.jsonl\"\n[completeness]\nwindow_grace = \"3m\"\n",
    )
    .expect("write");
    let (ok, text) = config_check(&["--config", path], &[]);
    assert!(
        ok && text.contains("completeness.window_grace = 3m"),
        "{text}"
    );
    let (ok, text) = config_check(&["--config", path, "--window-grace", "0s"], &[]);
    assert!(!ok && text.contains("window_grace"), "{text}");

    std::fs::write(
        &file,
        "out = \"/tmp/x.jsonl\"\n[attribution]\nhold_bak = \"45s\"\n",
    )
    .expect("write");
    let (ok, text) = config_check(&["--config", path], &[]);
    assert!(!ok);
    assert!(text.contains("hold_bak"), "{text}");

    std::fs::write(
        &file,
        "out = \"/tmp/x.jsonl\"\n[attribution]\nhold_back = \"soon\"\n",
    )
    .expect("write");
    let (ok, text) = config_check(&["--config", path], &[]);
    assert!(!ok);
    assert!(
        text.contains("hold_back") && text.contains("soon"),
        "{text}"
    );

    let owners = dir.path().join("owners.txt");
    std::fs::write(&owners, "10.0.0.0/8 ok\n10.1.2.3/8 bad-host-bits\n").expect("write");
    let (ok, text) = config_check(
        &[
            "--out",
            "/tmp/x.jsonl",
            "--static-owners",
            owners.to_str().expect("path"),
        ],
        &[],
    );
    assert!(!ok);
    assert!(text.contains(":2"), "the error names the line: {text}");

    let (ok, text) = config_check(
        &[
            "--out",
            "/tmp/x.jsonl",
            "--hold-back",
            "1m",
            "--peer-wait",
            "2m",
        ],
        &[],
    );
    assert!(!ok);
    assert!(text.contains("peer_wait"), "{text}");
}

#[test]
fn a_state_dir_that_is_a_symlink_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let target = dir.path().join("elsewhere");
    std::fs::create_dir(&target).expect("dir");
    std::os::unix::fs::symlink(&target, dir.path().join("state")).expect("link");
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--out"])
        .arg(dir.path().join("flows.jsonl"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ledger") || err.contains("state"), "{err}");
}

#[test]
fn config_check_shows_and_refuses_kafka_settings() {
    let dir = tempfile::tempdir().expect("dir");
    let password = dir.path().join("password");
    std::fs::write(&password, "s3cret\n").expect("write");
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        format!(
            "state_dir = \"/tmp/state\"\n[kafka]\nbrokers = \"k1:9092,k2:9092\"\noutput_topic = \"flows\"\nheartbeat_topic = \"hb\"\n[kafka.sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"collector\"\npassword_file = \"{}\"\n[kafka.tls]\nenabled = true\n",
            password.display()
        ),
    )
    .expect("write");
    let path = file.to_str().expect("path");
    let (ok, text) = config_check(&[path], &[]);
    assert!(ok, "{text}");
    for line in [
        "kafka.brokers = k1:9092,k2:9092",
        "kafka.output_topic = flows",
        "kafka.heartbeat_topic = hb",
        "kafka.input_topic = (none)",
        "kafka.tls = on",
        "kafka.sasl = SCRAM-SHA-512 as collector",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
    assert!(
        !text.contains("s3cret"),
        "the password is never printed: {text}"
    );
    // The flags and the environment override the file.
    let (ok, text) = config_check(
        &["--config", path, "--input-topic", "chunks", "--group", "g"],
        &[("FLOWCOLLECTOR_OUTPUT_TOPIC", "attributed")],
    );
    assert!(ok, "{text}");
    assert!(text.contains("kafka.output_topic = attributed"), "{text}");
    assert!(text.contains("kafka.input_topic = chunks") && text.contains("kafka.group = g"));
    // Connection routing: the flag, the environment and the group's default.
    let (ok, text) = config_check(
        &["--config", path, "--connection-topic", "conns"],
        &[("FLOWCOLLECTOR_GROUP", "fleet")],
    );
    assert!(ok, "{text}");
    assert!(text.contains("kafka.connection_topic = conns"), "{text}");
    assert!(
        text.contains("kafka.connection_group = fleet-connections"),
        "{text}"
    );
    let (ok, text) = config_check(
        &["--config", path],
        &[
            ("FLOWCOLLECTOR_CONNECTION_TOPIC", "conns"),
            ("FLOWCOLLECTOR_CONNECTION_GROUP", "attributors"),
        ],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("kafka.connection_group = attributors"),
        "{text}"
    );
    // What is wrong is named.
    for (args, wanted) in [
        (
            vec!["--state-dir", "/tmp/s", "--output-topic", "flows"],
            "kafka.brokers (--kafka-brokers)",
        ),
        (
            vec!["--out", "/tmp/x.jsonl", "--kafka-brokers", "k:9092"],
            "given without a topic",
        ),
        (
            vec!["--kafka-brokers", "k:9092", "--output-topic", "flows"],
            "state_dir (--state-dir)",
        ),
        (
            vec![
                "--state-dir",
                "/tmp/s",
                "--kafka-brokers",
                "k:1",
                "--output-topic",
                "f",
                "--connection-topic",
                "c",
            ],
            "kafka.connection_topic (--connection-topic)",
        ),
        (
            vec![
                "--state-dir",
                "/tmp/s",
                "--kafka-brokers",
                "k",
                "--output-topic",
                "f",
            ],
            "is not HOST:PORT",
        ),
        (
            vec![
                "--state-dir",
                "/tmp/s",
                "--kafka-brokers",
                "k:1",
                "--output-topic",
                "a b",
            ],
            "is not a Kafka topic name",
        ),
        (
            vec![
                "--state-dir",
                "/tmp/s",
                "--kafka-brokers",
                "k:1",
                "--output-topic",
                "f",
                "--kafka-sasl-mechanism",
                "GSSAPI",
            ],
            "is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
        ),
    ] {
        let (ok, text) = config_check(&args, &[]);
        assert!(!ok, "{args:?}: {text}");
        assert!(text.contains(wanted), "{args:?}: {wanted} in {text}");
    }
}
