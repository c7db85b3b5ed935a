//! A real Kafka-protocol broker for tests: `tansu` 0.6.0 (`.ci/run` installs it under
//! `$HOME/.cache/flowexporter/`), started on a free loopback port, with topics created
//! by its own CLI; and topics read back with an independent client (kafka-python, in
//! the virtualenv `.ci/run` makes), never only with ours.
//!
//! A test that needs the broker and cannot find it fails with a message saying how to
//! install it: it never passes by skipping.

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

/// Where a broker keeps its data.
#[derive(Clone, Debug)]
pub enum Storage {
    /// In memory: gone when it stops.
    Memory,
    /// A SQLite file: kept across a stop and a start.
    Sqlite(PathBuf),
}

/// The tansu binary: `$FLOWEXPORTER_TANSU`, else the one `.ci/run` caches, else
/// `tansu` on `PATH`.
pub fn tansu_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FLOWEXPORTER_TANSU") {
        return PathBuf::from(path);
    }
    let cached = cache_dir().join("tansu-0.6.0/bin/tansu");
    if cached.is_file() {
        return cached;
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let candidate = dir.join("tansu");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "the Kafka broker tansu is not installed: run .ci/run, or `cargo install tansu \
         --version 0.6.0 --locked --features dynostore,libsql --root {}`",
        cache_dir().join("tansu-0.6.0").display()
    )
}

/// The Python that has kafka-python: `$FLOWEXPORTER_PYTHON`, else the virtualenv
/// `.ci/run` makes ([`crate::python::binary`]).
pub fn python_binary() -> PathBuf {
    crate::python::binary()
}

pub(crate) fn cache_dir() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/flowexporter")
}

/// A running tansu broker on `127.0.0.1:<port>`; killed when dropped.
pub struct Broker {
    port: u16,
    storage: Storage,
    child: Option<Child>,
    log: PathBuf,
}

impl Broker {
    /// Starts a broker with `storage` on a free port and waits until it accepts
    /// connections.
    pub fn start(storage: Storage) -> Broker {
        let port = crate::free_port();
        let log = std::env::temp_dir().join(format!("tansu-{port}.log"));
        let mut broker = Broker {
            port,
            storage,
            child: None,
            log,
        };
        broker.spawn();
        broker
    }

    /// A broker in memory.
    pub fn in_memory() -> Broker {
        Broker::start(Storage::Memory)
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        // tansu reads a SQLite URL's path relative to its working directory.
        let (storage, cwd) = match &self.storage {
            Storage::Memory => (format!("memory://tansu-{}/", self.port), None),
            Storage::Sqlite(path) => (
                format!(
                    "sqlite://{}",
                    path.file_name().unwrap_or_default().to_string_lossy()
                ),
                path.parent().map(Path::to_path_buf),
            ),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = Command::new(tansu_binary());
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        let child = command
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", &storage])
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", tansu_binary().display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {} within 30 s; its log: {}",
                self.port,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates `topic` with `partitions` partitions (tansu's own CLI).
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let out = Command::new(tansu_binary())
            .args([
                "topic",
                "create",
                topic,
                "--partitions",
                &partitions.to_string(),
            ])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tansu topic create {topic}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops it (SIGKILL: a broker that dies; what a SQLite broker stored survives).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts it again on the same port, with the same storage.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every message of `topic`, read with kafka-python.
    pub fn read_topic(&self, topic: &str) -> Vec<Message> {
        read_topic(&self.address(), topic)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A message as kafka-python read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Its partition.
    pub partition: u32,
    /// Its offset.
    pub offset: u64,
    /// Its key (UTF-8 text; `None` when it had none or it was not text).
    pub key: Option<String>,
    /// Its headers, in order (values that are UTF-8 text).
    pub headers: Vec<(String, String)>,
    /// Its value (its bytes: base64-decoded when they were not UTF-8 text).
    pub value: Vec<u8>,
}

impl Message {
    /// The value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value as text.
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.value).unwrap()
    }
}

/// Every message of `topic` on `brokers`, read with kafka-python (the script
/// `scripts/kafka_read.py` of this crate).
pub fn read_topic(brokers: &str, topic: &str) -> Vec<Message> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka_read.py");
    let out = Command::new(python_binary())
        .arg(&script)
        .args([brokers, topic, "60"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kafka_read.py {brokers} {topic}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(parse_message)
        .collect()
}

fn parse_message(line: &str) -> Message {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let bytes = |v: &serde_json::Value| -> Option<Vec<u8>> {
        match v {
            serde_json::Value::String(s) => Some(s.clone().into_bytes()),
            serde_json::Value::Object(o) => Some(decode_base64(o["base64"].as_str()?)),
            _ => None,
        }
    };
    let headers = v["headers"]
        .as_object()
        .map(|h| {
            h.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    Message {
        partition: v["partition"].as_u64().unwrap() as u32,
        offset: v["offset"].as_u64().unwrap(),
        key: v["key"].as_str().map(str::to_owned),
        headers,
        value: bytes(&v["value"]).unwrap_or_default(),
    }
}

fn decode_base64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter(|c| *c != b'=') {
        let Some(v) = ALPHABET.iter().position(|a| *a == c) else {
            continue;
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
