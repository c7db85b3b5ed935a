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
