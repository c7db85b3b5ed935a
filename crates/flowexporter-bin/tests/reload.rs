//! SIGHUP end to end, with the real exporter: the configuration file is read again and
//! its live keys applied (identity certificate, log level, the collector's TLS
//! material), restart-only changes are named in a warning, flags keep their
//! precedence, and an invalid file changes nothing while records keep flowing.

mod common;

use std::{
    io::BufRead,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use common::*;
use flow_collector::{CollectorOptions, FaultInjection, FlowCollector, ServerTls};

/// A configuration file with the certificate `cert`, the log level `level`, the poll
/// interval `poll_ms` and the retry backoff `backoff` (which the tests' exporter also
/// gets as a flag).
fn config_text(cert: &Path, level: &str, poll_ms: u32, backoff: &str) -> String {
    format!(
        "[capture]\npoll_ms = {poll_ms}\n\n[identity]\ncertificate = \"{}\"\n\n[sink]\nretry_max_backoff = \"{backoff}\"\n\n[logging]\nlevel = \"{level}\"\n",
        cert.display()
    )
}

fn reloads(metrics_addr: &str, result: &str) -> u64 {
    metric(
        &scrape(metrics_addr),
        &format!("flowexporter_config_reloads_total{{result=\"{result}\"}} "),
    )
}

#[test]
fn sighup_applies_live_keys_and_names_the_restart_only_ones() {
    let scratch = Scratch::new("reload-live");
    let rt = runtime();
    let out = scratch.path("flows.jsonl");
    let (a, b) = (scratch.path("a.pem"), scratch.path("b.pem"));
    write_cert(&a, "spiffe://x/a");
    write_cert(&b, "spiffe://x/b");
    let config = scratch.path("config.toml");
    write_file(&config, &config_text(&a, "info", 50, "60s"));
    let collector_port = free_port();
    let collector = start_collector(&rt, collector_port, &out, FaultInjection::default());
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let config_arg = config.display().to_string();
    let (exporter, mut logs) = start_exporter_logged(
        collector_port,
        &scratch,
        "1s",
        &["--config", &config_arg, "--metrics-addr", &metrics_addr],
    );
    let before = connections(3);
    assert!(
        workloads_for(&out, before, 6)
            .iter()
            .all(|w| w == "spiffe://x/a")
    );

    // The same file again: reloaded, nothing to apply.
    signal(&exporter, libc::SIGHUP);
    logs.wait_for(&["SIGHUP: configuration reloaded", "applied: nothing"]);

    // The certificate and the log level change (live), the poll interval too (restart
    // only), and the backoff, which a flag sets: the flag still wins, nothing changes.
    write_file(&config, &config_text(&b, "debug", 20, "30s"));
    signal(&exporter, libc::SIGHUP);
    let warning = logs.wait_for(&["capture.poll_ms changed from 50 to 20"]);
    assert!(
        warning.contains("WARN") && warning.contains("needs a restart"),
        "{warning}"
    );
    let applied = logs.wait_for(&["SIGHUP: configuration reloaded", "applied:"]);
    let b_arg = b.display().to_string();
    assert!(
        applied.contains(&format!("identity.certificate = {b_arg}"))
            && applied.contains("logging.level = \"debug\""),
        "{applied}"
    );
    assert!(
        !applied.contains("retry_max_backoff") && !applied.contains("poll_ms"),
        "{applied}"
    );
    // Logged at debug level only, so only by this second reload: the configuration in
    // force, with the restart-only value as it was and the flag's backoff.
    let in_force = logs.wait_for(&["SIGHUP: configuration in force"]);
    assert!(
        in_force.contains("capture.poll_ms = 50")
            && in_force.contains("sink.retry_max_backoff = 1s"),
        "{in_force}"
    );
    assert_eq!(
        logs.all()
            .iter()
            .filter(|l| l.contains("configuration in force"))
            .count(),
        1
    );

    let after = connections(3);
    assert!(
        workloads_for(&out, after, 6)
            .iter()
            .all(|w| w == "spiffe://x/b")
    );
    std::thread::sleep(Duration::from_millis(1500)); // one more refresh of the metrics
    assert_eq!(reloads(&metrics_addr, "applied"), 2);
    assert_eq!(reloads(&metrics_addr, "failed"), 0);
    stop(exporter);
    rt.block_on(collector.shutdown());
}

#[test]
fn sighup_with_an_invalid_configuration_keeps_the_one_in_force() {
    let scratch = Scratch::new("reload-invalid");
    let rt = runtime();
    let out = scratch.path("flows.jsonl");
    let (a, b) = (scratch.path("a.pem"), scratch.path("b.pem"));
    write_cert(&a, "spiffe://x/a");
    write_cert(&b, "spiffe://x/b");
    let config = scratch.path("config.toml");
    let certificate =
        |cert: &PathBuf| format!("[identity]\ncertificate = \"{}\"\n", cert.display());
    write_file(&config, &certificate(&a));
    let collector_port = free_port();
    let collector = start_collector(&rt, collector_port, &out, FaultInjection::default());
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let config_arg = config.display().to_string();
    let (exporter, mut logs) = start_exporter_logged(
        collector_port,
        &scratch,
        "1s",
        &["--config", &config_arg, "--metrics-addr", &metrics_addr],
    );
    // Each file also names the other certificate, which must not be applied either.
    let bad = [
        ("[batch]\nwindoww = \"5s\"\n", "windoww"),
        ("[capture]\nring_size = 12345\n", "capture.ring_size"),
        ("[sink]\nretry_max_backoff = 5\n", "retry_max_backoff"),
        ("[logging]\nlevel = \"verbose\"\n", "logging.level"),
    ];
    for (text, key) in bad {
        write_file(&config, &format!("{}\n{text}", certificate(&b)));
        signal(&exporter, libc::SIGHUP);
        let line = logs.wait_for(&["SIGHUP: configuration not reloaded"]);
        assert!(
            line.contains("ERROR") && line.contains(key),
            "{key}: {line}"
        );
        let port = connections(2);
        assert!(
            workloads_for(&out, port, 4)
                .iter()
                .all(|w| w == "spiffe://x/a"),
            "after a refused {key}"
        );
    }
    // The file gone: refused, naming it.
    std::fs::remove_file(&config).expect("remove");
    signal(&exporter, libc::SIGHUP);
    logs.wait_for(&["SIGHUP: configuration not reloaded", &config_arg]);
    std::thread::sleep(Duration::from_millis(1500)); // one more refresh of the metrics
    assert_eq!(reloads(&metrics_addr, "failed"), 5);
    assert_eq!(reloads(&metrics_addr, "applied"), 0);
    assert!(
        !logs
            .all()
            .iter()
            .any(|l| l.contains("configuration reloaded")),
        "nothing was applied"
    );
    stop(exporter);
    rt.block_on(collector.shutdown());
}

fn tls_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../flow-sink/tests/tls")
        .join(name)
}

#[test]
fn sighup_reads_rotated_client_certificates_again() {
    let scratch = Scratch::new("reload-mtls");
    let rt = runtime();
    let out = scratch.path("flows.jsonl");
    let port = free_port();
    let tls = ServerTls::new(tls_fixture("server.pem"), tls_fixture("server.key"))
        .with_client_ca(tls_fixture("ca.pem"));
    let options = CollectorOptions::new(([127, 0, 0, 1], port).into(), &out)
        .with_hold_back(std::time::Duration::ZERO)
        .with_tls(tls);
    let collector = rt
        .block_on(FlowCollector::start(options))
        .expect("collector");
    // The client certificate's paths never change; at first the files hold one the
    // collector refuses (it is for servers only).
    let (cert, key) = (scratch.path("client.pem"), scratch.path("client.key"));
    std::fs::copy(tls_fixture("server.pem"), &cert).expect("copy");
    std::fs::copy(tls_fixture("server.key"), &key).expect("copy");
    let (ca_arg, cert_arg, key_arg) = (
        tls_fixture("ca.pem").display().to_string(),
        cert.display().to_string(),
        key.display().to_string(),
    );
    let (exporter, mut logs) = start_exporter_at(
        &format!("https://127.0.0.1:{port}"),
        &scratch,
        "1s",
        &[
            "--collector-ca",
            &ca_arg,
            "--client-cert",
            &cert_arg,
            "--client-key",
            &key_arg,
        ],
    );
    let flows = connections(5);
    std::thread::sleep(Duration::from_secs(3)); // windows close; every attempt refused
    assert!(records_for(&out, flows).is_empty());
    assert_eq!(collector.stats().chunks_accepted, 0);

    // Rotation: new files in place, then SIGHUP.
    write_file(
        &cert,
        &std::fs::read_to_string(tls_fixture("client.pem")).expect("pem"),
    );
    write_file(
        &key,
        &std::fs::read_to_string(tls_fixture("client.key")).expect("key"),
    );
    signal(&exporter, libc::SIGHUP);
    logs.wait_for(&["SIGHUP: configuration reloaded"]);
    assert_exactly_once(&wait_for(&out, flows, 10, Duration::from_secs(15)), 10);
    stop(exporter);
    rt.block_on(collector.shutdown());
}

#[test]
fn sighup_without_a_collector_reloads_and_keeps_printing() {
    let scratch = Scratch::new("sighup-stdout");
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--pin-dir"])
        .arg(scratch.pins())
        .stdout(Stdio::piped());
    let (mut exporter, mut logs) = spawn_logged(cmd);
    let stdout = exporter.stdout.take().expect("stdout");
    let (tx, records) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    signal(&exporter, libc::SIGHUP);
    logs.wait_for(&["SIGHUP: configuration reloaded"]);
    let port = connections(2);
    let mut seen = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while seen < 4 && std::time::Instant::now() < deadline {
        if let Ok(line) = records.recv_timeout(Duration::from_millis(200)) {
            let v: serde_json::Value = serde_json::from_str(&line).expect("JSON line");
            if (v["local_port"] == port || v["remote_port"] == port)
                && v["record_kind"] != "interim"
            {
                seen += 1;
            }
        }
    }
    assert_eq!(seen, 4, "records after SIGHUP");
    stop(exporter);
}
