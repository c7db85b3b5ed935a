//! An independent OTLP/HTTP logs receiver for tests: `scripts/otlp_receiver.py`, a
//! Python `http.server` that decodes every request with the OpenTelemetry project's
//! own protobuf definitions (opentelemetry-proto, in the tests' virtualenv) and
//! appends one JSON line per request (`MessageToDict`, proto field names, with the
//! path and headers it saw) to a file the test reads.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use serde_json::Value;

/// The receiver's script.
pub const RECEIVER_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/otlp_receiver.py");

/// A running receiver; killed when dropped.
pub struct Receiver {
    child: Child,
    out: PathBuf,
}

impl Receiver {
    /// Starts the receiver on 127.0.0.1:`port`, answering its first requests as `plan`
    /// says (a comma-separated list of `STATUS[:RETRY_AFTER]` or `partial:N`; then
    /// 200), writing what it decoded to `out`; waits until it listens.
    pub fn start(port: u16, out: &Path, plan: &str) -> Receiver {
        let mut child = Command::new(crate::python::binary())
            .arg(RECEIVER_SCRIPT)
            .args(["--port", &port.to_string(), "--out"])
            .arg(out)
            .args(["--plan", plan])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the Python OTLP receiver");
        let stdout = child.stdout.take().expect("its stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the receiver's first line");
        assert_eq!(
            line.trim(),
            "listening",
            "the receiver did not start (opentelemetry-proto missing from the venv? {})",
            crate::python::PACKAGES
        );
        Receiver {
            child,
            out: out.to_owned(),
        }
    }

    /// Every request it got, in order.
    pub fn requests(&self) -> Vec<Value> {
        requests_in(&self.out)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The requests a receiver wrote to `out`, in order.
pub fn requests_in(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line from the receiver"))
        .collect()
}

/// The log records of a decoded request (its one resource's one scope).
pub fn log_records(request: &Value) -> &Vec<Value> {
    static EMPTY: Vec<Value> = Vec::new();
    request["request"]["resource_logs"][0]["scope_logs"][0]["log_records"]
        .as_array()
        .unwrap_or(&EMPTY)
}

/// `(key, value)` of an attribute list as decoded (`value` is the AnyValue object).
pub fn attributes(list: &Value) -> Vec<(String, Value)> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|kv| {
                    (
                        kv["key"].as_str().unwrap_or_default().to_owned(),
                        kv["value"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
