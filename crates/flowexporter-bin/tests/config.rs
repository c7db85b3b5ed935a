//! The configuration file, flags and environment variables of `flowexporter run`, as
//! an operator meets them: every class of bad configuration is refused at start with
//! the key's name and what was expected, and the precedence is flag > environment >
//! file > default.

use std::{path::PathBuf, process::Command};

const BIN: &str = env!("CARGO_BIN_EXE_flowexporter");

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fe-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

/// Runs the binary with `args` and `env`; returns (success, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run flowexporter");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_example_is_valid() {
    let out = Command::new(BIN)
        .args(["config", "example"])
        .output()
        .expect("example");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf8");
    assert!(text.contains("[batch]") && text.contains("window"));
    let path = temp_file("example.toml", &text);
    let (ok, err) = run(&["config", "check", path.to_str().expect("path")], &[]);
    assert!(ok, "{err}");
}

#[test]
fn each_class_of_bad_configuration_is_refused_with_the_key() {
    let cases = [
        ("unknown-key.toml", "[batch]\nwindoww = \"5s\"\n", "windoww"),
        (
            "unknown-section.toml",
            "[batching]\nwindow = \"5s\"\n",
            "batching",
        ),
        (
            "wrong-type.toml",
            "[capture]\nring_size = \"big\"\n",
            "ring_size",
        ),
        (
            "bad-duration.toml",
            "[batch]\nwindow = \"soon\"\n",
            "batch.window",
        ),
        (
            "out-of-range.toml",
            "[batch]\nwindow = \"2h\"\n",
            "batch.window",
        ),
        (
            "ring-not-power.toml",
            "[capture]\nring_size = 12345\n",
            "capture.ring_size",
        ),
        (
            "bad-url.toml",
            "[sink]\ncollector = \"collector:9000\"\n",
            "sink.collector",
        ),
        (
            "half-tls.toml",
            "[sink]\nclient_cert = \"/c.pem\"\n",
            "client_key",
        ),
        ("not-toml.toml", "[batch\n", "TOML parse error"),
        (
            "bad-log-level.toml",
            "[logging]\nlevel = \"verbose\"\n",
            "logging.level",
        ),
        (
            "unknown-user.toml",
            "[process]\nuser = \"no-such-user-fe\"\n",
            "process.user",
        ),
    ];
    for (name, text, key) in cases {
        let path = temp_file(name, text);
        let p = path.to_str().expect("path");
        let (ok, err) = run(&["config", "check", p], &[]);
        assert!(!ok, "{name} must be refused");
        assert!(err.contains(key), "{name}: {err}");
        // And `run` refuses it at start, before loading anything.
        let (ok, err) = run(&["run", "--config", p], &[]);
        assert!(!ok, "{name} must stop run");
        assert!(err.contains(key), "{name}: {err}");
    }
    let (ok, err) = run(&["run", "--config", "/nonexistent/flowexporter.toml"], &[]);
    assert!(
        !ok && err.contains("/nonexistent/flowexporter.toml"),
        "{err}"
    );
}

#[test]
fn flags_beat_environment_beats_file() {
    // The file says 2h (out of range): refused when nothing overrides it...
    let path = temp_file("precedence.toml", "[batch]\nwindow = \"2h\"\n");
    let p = path.to_str().expect("path");
    let (ok, err) = run(&["run", "--config", p], &[]);
    assert!(!ok && err.contains("7200s"), "{err}");
    // ...the environment overrides the file: its bad value is the one reported...
    let (ok, err) = run(&["run", "--config", p], &[("FLOWEXPORTER_WINDOW", "3h")]);
    assert!(!ok && err.contains("10800s"), "{err}");
    // ...and a flag overrides both (then run gets as far as its next check: a bad
    // ring size given by the environment).
    let (ok, err) = run(
        &["run", "--config", p, "--window", "5s"],
        &[
            ("FLOWEXPORTER_WINDOW", "3h"),
            ("FLOWEXPORTER_RING_SIZE", "12345"),
        ],
    );
    assert!(!ok, "{err}");
    assert!(
        err.contains("capture.ring_size") && !err.contains("window"),
        "{err}"
    );
}

/// Asserts `run` stopped at its configuration: no log line (logging starts after the
/// configuration is read), so nothing was loaded.
fn refused_before_loading(err: &str) {
    assert!(
        !err.contains("capabilities")
            && !err.contains("tracing TCP closes")
            && !err.contains("INFO"),
        "run got past its configuration: {err}"
    );
}

#[test]
fn collector_and_host_id_are_checked_before_anything_is_loaded() {
    let long = format!("[sink]\nhost_id = \"{}\"\n", "h".repeat(2000));
    let cases = [
        (
            "no-host.toml",
            "[sink]\ncollector = \"http://\"\n",
            "sink.collector",
            "no host",
        ),
        (
            "no-host-s.toml",
            "[sink]\ncollector = \"https://:9000/x\"\n",
            "sink.collector",
            "no host",
        ),
        (
            "bad-port.toml",
            "[sink]\ncollector = \"http://c:99999\"\n",
            "sink.collector",
            "port",
        ),
        (
            "bad-ipv4.toml",
            "[sink]\ncollector = \"http://1.2.3.256\"\n",
            "sink.collector",
            "invalid IPv4 address",
        ),
        (
            "bad-host-char.toml",
            "[sink]\ncollector = \"http://exa%mple\"\n",
            "sink.collector",
            "invalid international domain name",
        ),
        (
            "empty-host-id.toml",
            "[sink]\nhost_id = \"\"\n",
            "sink.host_id",
            "empty",
        ),
        (
            "long-host-id.toml",
            long.as_str(),
            "sink.host_id",
            "at most 1024",
        ),
        (
            "ctl-host-id.toml",
            "[sink]\nhost_id = \"web\\u001b[2J\"\n",
            "sink.host_id",
            "U+001B at byte 3",
        ),
    ];
    for (name, text, key, why) in cases {
        let path = temp_file(name, text);
        let p = path.to_str().expect("path");
        let (ok, err) = run(&["config", "check", p], &[]);
        assert!(!ok, "{name} must be refused");
        assert!(err.contains(key) && err.contains(why), "{name}: {err}");
        assert!(!err.contains('\u{1b}'), "{name}: raw ESC in {err:?}");
        let (ok, err) = run(&["run", "--config", p], &[]);
        assert!(!ok, "{name} must stop run");
        assert!(err.contains(key) && err.contains(why), "{name}: {err}");
        refused_before_loading(&err);
    }
    // The 2,000-byte value is not echoed whole.
    let path = temp_file("long-host-id.toml", &long);
    let (_, err) = run(&["config", "check", path.to_str().expect("path")], &[]);
    assert!(err.len() < 600, "{err}");
    // Flags and environment variables are checked the same way.
    for (args, env) in [
        (vec!["run", "--collector", "http://"], vec![]),
        (vec!["run", "--host-id", ""], vec![]),
        (vec!["run"], vec![("FLOWEXPORTER_COLLECTOR", "http:///v1")]),
        (vec!["run"], vec![("FLOWEXPORTER_HOST_ID", "a\tb")]),
    ] {
        let (ok, err) = run(&args, &env);
        assert!(!ok, "{args:?} {env:?} must stop run");
        assert!(err.contains("sink."), "{err}");
        refused_before_loading(&err);
    }
    // What the wire format takes is accepted.
    let good = format!(
        "[sink]\ncollector = \"https://[::1]:9443/base\"\nhost_id = \"{}\"\n",
        "h".repeat(1024)
    );
    let path = temp_file("good-sink.toml", &good);
    let (ok, err) = run(&["config", "check", path.to_str().expect("path")], &[]);
    assert!(ok, "{err}");
}

#[test]
fn kafka_options_are_checked_before_anything_is_loaded() {
    let password = temp_file("kafka-password", "s3cret\n");
    let empty_password = temp_file("kafka-empty-password", "\n");
    let good_sasl = format!(
        "[kafka]\nbrokers = \"b1:9092,b2:9092\"\ntopic = \"flows\"\nsasl_mechanism = \"scram-sha-512\"\nsasl_username = \"fe\"\nsasl_password_file = \"{}\"\nca = \"/etc/ca.pem\"\n",
        password.display()
    );
    let empty_sasl = good_sasl.replace(
        &password.display().to_string(),
        &empty_password.display().to_string(),
    );
    let missing_sasl = good_sasl.replace(&password.display().to_string(), "/nonexistent/pw");
    let cases = [
        (
            "kafka-no-topic.toml",
            "[kafka]\nbrokers = \"127.0.0.1:9092\"\n".to_owned(),
            "kafka.topic",
            "give both or neither",
        ),
        (
            "kafka-no-brokers.toml",
            "[kafka]\ntopic = \"flows\"\n".to_owned(),
            "kafka.topic (--kafka-topic) is set but kafka.brokers",
            "give the brokers",
        ),
        (
            "kafka-orphan-ca.toml",
            "[kafka]\nca = \"/etc/ca.pem\"\n".to_owned(),
            "kafka.ca",
            "kafka.brokers",
        ),
        (
            "kafka-bad-brokers.toml",
            "[kafka]\nbrokers = \"kafka.example\"\ntopic = \"flows\"\n".to_owned(),
            "kafka.brokers",
            "HOST:PORT",
        ),
        (
            "kafka-bad-topic.toml",
            "[kafka]\nbrokers = \"k:9092\"\ntopic = \"flows/x\"\n".to_owned(),
            "kafka.topic",
            "only ASCII letters",
        ),
        (
            "kafka-bad-compression.toml",
            "[kafka]\nbrokers = \"k:9092\"\ntopic = \"t\"\ncompression = \"brotli\"\n".to_owned(),
            "kafka.compression",
            "zstd",
        ),
        (
            "kafka-half-identity.toml",
            "[kafka]\nbrokers = \"k:9092\"\ntopic = \"t\"\ncert = \"/c.pem\"\n".to_owned(),
            "kafka.cert and kafka.key",
            "both or neither",
        ),
        (
            "kafka-half-sasl.toml",
            "[kafka]\nbrokers = \"k:9092\"\ntopic = \"t\"\nsasl_mechanism = \"PLAIN\"\n".to_owned(),
            "kafka.sasl_username",
            "all three or none",
        ),
        (
            "kafka-bad-mechanism.toml",
            good_sasl.replace("scram-sha-512", "GSSAPI"),
            "kafka.sasl_mechanism",
            "SCRAM-SHA-512",
        ),
        (
            "kafka-empty-password.toml",
            empty_sasl,
            "kafka.sasl_password_file",
            "no password",
        ),
        (
            "kafka-missing-password.toml",
            missing_sasl,
            "kafka.sasl_password_file",
            "/nonexistent/pw",
        ),
        (
            "kafka-unknown-key.toml",
            "[kafka]\nbroker = \"k:9092\"\n".to_owned(),
            "broker",
            "unknown field",
        ),
    ];
    for (name, text, key, why) in &cases {
        let path = temp_file(name, text);
        let p = path.to_str().expect("path");
        let (ok, err) = run(&["config", "check", p], &[]);
        assert!(!ok, "{name} must be refused");
        assert!(err.contains(key) && err.contains(why), "{name}: {err}");
        let (ok, err) = run(&["run", "--config", p], &[]);
        assert!(!ok, "{name} must stop run");
        assert!(err.contains(key) && err.contains(why), "{name}: {err}");
        refused_before_loading(&err);
    }
    // Flags and environment variables are checked the same way.
    for (args, env, key) in [
        (
            vec!["run", "--kafka-brokers", "k:9092"],
            vec![],
            "kafka.topic",
        ),
        (vec!["run", "--kafka-topic", "t"], vec![], "kafka.brokers"),
        (
            vec!["run"],
            vec![
                ("FLOWEXPORTER_KAFKA_BROKERS", "k:0"),
                ("FLOWEXPORTER_KAFKA_TOPIC", "t"),
            ],
            "kafka.brokers",
        ),
        (
            vec!["run", "--kafka-brokers", "k:9092", "--kafka-topic", "t"],
            vec![("FLOWEXPORTER_KAFKA_COMPRESSION", "xz")],
            "kafka.compression",
        ),
    ] {
        let (ok, err) = run(&args, &env);
        assert!(!ok, "{args:?} {env:?} must stop run");
        assert!(err.contains(key), "{args:?} {env:?}: {err}");
        refused_before_loading(&err);
    }
    // A whole Kafka table, TLS and SASL included, is accepted; its password is never
    // echoed.
    let path = temp_file("good-kafka.toml", &good_sasl);
    let (ok, err) = run(&["config", "check", path.to_str().expect("path")], &[]);
    assert!(ok, "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

/// Runs the binary with `args`, killing it after 20 s; returns (success, stderr, peak
/// resident set in KiB).
// The child is reaped by `wait4` (for its resource usage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn run_measured(args: &[&str]) -> (bool, String, i64) {
    use std::{
        io::Read,
        process::Stdio,
        time::{Duration, Instant},
    };
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start flowexporter");
    let pid = child.id() as libc::pid_t;
    let deadline = Instant::now() + Duration::from_secs(20);
    let (status, rusage) = loop {
        let mut status = 0;
        // SAFETY: a zeroed rusage is a valid out-parameter.
        let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waiting for our own child, with valid out-parameters.
        let rc = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut rusage) };
        assert!(rc >= 0, "wait4: {}", std::io::Error::last_os_error());
        if rc == pid {
            break (status, rusage);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("flowexporter {args:?} did not finish in 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (ok, err, rusage.ru_maxrss)
}

#[test]
fn a_huge_configuration_file_is_refused_without_reading_it() {
    use std::io::Write;
    let path = temp_file("huge.toml", "");
    {
        // 25 MB of valid TOML: a real key, then comment lines.
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        writeln!(f, "[batch]\nwindow = \"5s\"").expect("write");
        let line = format!("# {}\n", "x".repeat(98));
        for _ in 0..250_000 {
            f.write_all(line.as_bytes()).expect("write");
        }
        f.flush().expect("flush");
    }
    assert!(std::fs::metadata(&path).expect("meta").len() >= 25_000_000);
    let p = path.to_str().expect("path");
    for args in [
        ["config", "check", p].as_slice(),
        ["run", "--config", p].as_slice(),
    ] {
        let (ok, err, peak_kib) = run_measured(args);
        assert!(!ok, "{args:?} accepted a 25 MB file");
        assert!(
            err.contains("huge.toml") && err.contains("1048576 bytes"),
            "{err}"
        );
        // It was 925 MB; the file is never read, so a few MB of process is all.
        assert!(peak_kib < 64 * 1024, "peak {peak_kib} KiB: {err}");
        refused_before_loading(&err);
    }
    std::fs::remove_file(&path).expect("remove");

    // Exactly the limit is fine; one byte more is not.
    let mut text = String::from("[batch]\nwindow = \"5s\"\n");
    while text.len() < (1 << 20) - 100 {
        text.push_str(&format!("# {}\n", "x".repeat(97)));
    }
    text.push('#');
    while text.len() < 1 << 20 {
        text.push('x');
    }
    let at_limit = temp_file("at-limit.toml", &text);
    let (ok, err) = run(&["config", "check", at_limit.to_str().expect("path")], &[]);
    assert!(ok, "{err}");
    text.push('x');
    let over = temp_file("over-limit.toml", &text);
    let (ok, err) = run(&["config", "check", over.to_str().expect("path")], &[]);
    assert!(!ok && err.contains("over-limit.toml"), "{err}");
}

#[test]
fn a_fifo_or_a_directory_is_not_a_configuration_file() {
    let dir = std::env::temp_dir().join(format!("fe-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let fifo = dir.join("config.fifo");
    let _ = std::fs::remove_file(&fifo);
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: `c` is a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let f = fifo.to_str().expect("path");
    // Nobody writes to the FIFO: a blocking open or read would never return.
    for args in [
        ["config", "check", f].as_slice(),
        ["run", "--config", f].as_slice(),
    ] {
        let (ok, err, _) = run_measured(args);
        assert!(!ok, "{args:?} accepted a FIFO");
        assert!(
            err.contains("config.fifo")
                && err.contains("not a regular file")
                && err.contains("FIFO"),
            "{err}"
        );
        refused_before_loading(&err);
    }
    std::fs::remove_file(&fifo).expect("remove");
    let d = dir.to_str().expect("path");
    let (ok, err) = run(&["config", "check", d], &[]);
    assert!(!ok && err.contains("directory"), "{err}");
    // `--config /dev/null` still means "no file".
    let (ok, err) = run(&["config", "check", "/dev/null"], &[]);
    assert!(ok, "{err}");
}
