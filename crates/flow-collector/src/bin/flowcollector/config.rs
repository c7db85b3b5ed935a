//! The configuration of `flowcollector`: flags, environment variables and a TOML file.
//!
//! Precedence, highest first: a command-line flag, its environment variable
//! (`FLOWCOLLECTOR_<FLAG>`, e.g. `FLOWCOLLECTOR_HOLD_BACK=30s`), the configuration
//! file (`--config FILE`, default [`DEFAULT_CONFIG`] when it exists), the built-in
//! default. Unknown keys, wrong types and out-of-range values are refused at start,
//! naming the key (or flag) and what was expected.

use std::{
    fs::OpenOptions,
    io::Read,
    net::SocketAddr,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use flow_collector::{
    CollectorOptions, ServerTls,
    attribution::{AttributionConfig, StaticOwners},
    completeness::CompletenessConfig,
    graph::GraphConfig,
    kafka::KafkaOptions,
    output::Rotation,
};
use flow_kafka::{KafkaSettings, KafkaTls, Sasl, SaslMechanism};
use serde::Deserialize;

use crate::cli::{RunArgs, size};

/// Where the configuration is read from when `--config` is not given.
pub(crate) const DEFAULT_CONFIG: &str = "/etc/flowcollector/config.toml";

/// Largest configuration file read (1 MiB).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// A commented example configuration (`flowcollector config example`).
pub(crate) const EXAMPLE: &str = r#"# flowcollector configuration (TOML). Every key is optional except out (here or
# --out); a flag or its environment variable (FLOWCOLLECTOR_<FLAG>) overrides a key.

listen = "127.0.0.1:9000"                       # chunks (POST /v1/chunks), GET /metrics, the graph (GET /, /api/v1/graph)
out = "/var/lib/flowcollector/flows.jsonl"      # attributed flows, JSON lines
state_dir = "/var/lib/flowcollector/state"      # ledger: stored chunks, dedup, checkpoint

[output]
rotate_size = "256MiB"       # rotate the output past this size
rotate_every = "1h"          # ... or this age
rotate_keep = 48             # rotated files kept (default: all)

[attribution]
hold_back = "2m"             # longest a flow waits for heartbeats of its remote IP
peer_wait = "2m"             # longest a flow waits for its peer's record (<= hold_back)
clock_tolerance = "2s"       # clock skew between hosts + handshake time
merge_gap = "30s"            # heartbeats of one workload this close join into one range
retention = "1h"             # ownership ranges kept this long
max_ranges = 4000000         # ownership map size cap (oldest evicted, counted)
max_held = 2000000           # flows held back at most
# static_owners = "/etc/flowcollector/static-owners.txt"   # "<IP or CIDR> <name>" lines

[completeness]
window_grace = "10m"         # how long an exporter window waits for missing chunks

[graph]                      # the dependency graph, GET /api/v1/graph (docs/graph.md)
enabled = true               # false (or --no-graph): no aggregation, GET / and the API 404
retention = "6h"             # minutes kept (queries further back are clamped)
top_edges = 50               # edges per node and minute; the rest folded into "other"
max_edges = 500000           # edges in all minutes; the oldest minutes go first

[server]
max_body_bytes = "64MiB"
sync = true                  # fdatasync the ledger before acknowledging a chunk
max_connections = 1024
header_read_timeout = "30s"
idle_timeout = "30s"
body_read_timeout = "30s"
drain_timeout = "2m5s"       # at SIGTERM, longest wait for held flows

# [tls]
# cert = "/etc/flowcollector/tls/cert.pem"
# key = "/etc/flowcollector/tls/key.pem"
# client_ca = "/etc/flowcollector/tls/exporters-ca.pem"

# Kafka (docs/kafka.md): several nodes behind a load balancer share heartbeats, flows
# go to a topic, chunks may come from one. Topics are never created by flowcollector.
# [kafka]
# brokers = "kafka-1:9092,kafka-2:9092"
# output_topic = "flows"               # instead of out: one message per flow
# heartbeat_topic = "flow-heartbeats"  # the same on every node of the fleet
# input_topic = "flow-chunks"          # chunks from `flowexporter run --kafka-topic`
# group = "flowcollector"              # consumer group of input_topic
# connection_topic = "flow-connections" # route records by connection: N nodes attribute as one
# connection_group = "flowcollector-connections"
# node_id = "collector-1"              # default: host name + random suffix
# compression = "zstd"
# rebuild_timeout = "5m"               # longest the heartbeat rebuild may take at start
# check_timeout = "30s"                # longest the start waits for the brokers
# ack_timeout = "10s"                  # longest a chunk's answer waits for Kafka
# [kafka.tls]
# ca = "/etc/flowcollector/kafka-ca.pem"
# cert = "/etc/flowcollector/kafka-client.pem"
# key = "/etc/flowcollector/kafka-client.key"
# [kafka.sasl]
# mechanism = "SCRAM-SHA-512"
# username = "flowcollector"
# password_file = "/etc/flowcollector/kafka-password"
# [kafka.properties]                   # more librdkafka properties, as it names them
# "queue.buffering.max.kbytes" = "262144"
"#;

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// A key or flag has a wrong value.
    #[error("{key}: {reason}")]
    Invalid {
        /// The key in the file and its flag, e.g. `attribution.hold_back (--hold-back)`.
        key: &'static str,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// The configuration file could not be read or parsed.
    #[error("configuration file {}: {reason}", .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The static owners table was refused.
    #[error("attribution.static_owners (--static-owners)")]
    StaticOwners(#[source] flow_collector::attribution::StaticOwnersError),
}

/// A duration written as text (`"2m"`).
#[derive(Debug, Clone, Copy)]
struct TextDuration(Duration);

impl<'de> Deserialize<'de> for TextDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(TextDuration)
            .map_err(|e| serde::de::Error::custom(format!("{text:?}: {e} (e.g. \"2m\", \"90s\")")))
    }
}

/// A size written as text (`"256MiB"`) or a number of bytes.
#[derive(Debug, Clone, Copy)]
struct TextSize(u64);

impl<'de> Deserialize<'de> for TextSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(TextSize(n)),
            Raw::Text(t) => size(&t).map(TextSize).map_err(serde::de::Error::custom),
        }
    }
}

/// The file's top level.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    out: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    #[serde(default)]
    output: OutputSection,
    #[serde(default)]
    attribution: AttributionSection,
    #[serde(default)]
    completeness: CompletenessSection,
    #[serde(default)]
    graph: GraphSection,
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    tls: TlsSection,
    #[serde(default)]
    kafka: KafkaSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KafkaSection {
    brokers: Option<String>,
    output_topic: Option<String>,
    heartbeat_topic: Option<String>,
    input_topic: Option<String>,
    group: Option<String>,
    connection_topic: Option<String>,
    connection_group: Option<String>,
    node_id: Option<String>,
    compression: Option<String>,
    rebuild_timeout: Option<TextDuration>,
    check_timeout: Option<TextDuration>,
    ack_timeout: Option<TextDuration>,
    #[serde(default)]
    tls: KafkaTlsSection,
    #[serde(default)]
    sasl: KafkaSaslSection,
    #[serde(default)]
    properties: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KafkaTlsSection {
    enabled: Option<bool>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KafkaSaslSection {
    mechanism: Option<String>,
    username: Option<String>,
    password_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputSection {
    rotate_size: Option<TextSize>,
    rotate_every: Option<TextDuration>,
    rotate_keep: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttributionSection {
    hold_back: Option<TextDuration>,
    peer_wait: Option<TextDuration>,
    clock_tolerance: Option<TextDuration>,
    merge_gap: Option<TextDuration>,
    retention: Option<TextDuration>,
    max_ranges: Option<usize>,
    max_held: Option<usize>,
    static_owners: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompletenessSection {
    window_grace: Option<TextDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GraphSection {
    enabled: Option<bool>,
    retention: Option<TextDuration>,
    top_edges: Option<usize>,
    max_edges: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    max_body_bytes: Option<TextSize>,
    sync: Option<bool>,
    max_connections: Option<usize>,
    header_read_timeout: Option<TextDuration>,
    idle_timeout: Option<TextDuration>,
    body_read_timeout: Option<TextDuration>,
    drain_timeout: Option<TextDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
}

/// The configuration in force: the collector's options, and the file it came from.
#[derive(Debug)]
pub(crate) struct Resolved {
    /// What to start the collector with.
    pub(crate) options: CollectorOptions,
    /// The configuration file read, if any.
    pub(crate) file: Option<PathBuf>,
}

/// Reads the file (if any) and combines it with `args` (flags and environment).
pub(crate) fn resolve(args: &RunArgs) -> Result<Resolved, ConfigError> {
    let file_path = match &args.config {
        Some(path) => Some(path.clone()),
        None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()),
    };
    let file = match &file_path {
        Some(path) => read(path)?,
        None => FileConfig::default(),
    };
    let invalid = |key: &'static str, reason: String| ConfigError::Invalid { key, reason };

    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9000)));
    let output_topic = args
        .output_topic
        .clone()
        .or(file.kafka.output_topic.clone());
    let out = match (args.out.clone().or(file.out.clone()), &output_topic) {
        (Some(out), _) => out,
        // Flows go to Kafka: no file is opened; the ledger needs its directory.
        (None, Some(_)) => match args.state_dir.clone().or(file.state_dir.clone()) {
            Some(dir) => dir.join("flows.jsonl"),
            None => {
                return Err(invalid(
                    "state_dir (--state-dir)",
                    "required with kafka.output_topic (--output-topic) when out (--out) is not set: the ledger's directory".into(),
                ));
            }
        },
        (None, None) => {
            return Err(invalid(
                "out (--out)",
                "required: the JSON-lines file attributed flows are written to (or kafka.output_topic, --output-topic)".into(),
            ));
        }
    };
    let d = |flag: Option<Duration>, key: Option<TextDuration>| flag.or(key.map(|t| t.0));
    let a = &file.attribution;
    let defaults = AttributionConfig::default();
    let hold_back = d(args.hold_back, a.hold_back).unwrap_or(defaults.hold_back);
    let peer_wait = d(args.peer_wait, a.peer_wait).unwrap_or(hold_back);
    if peer_wait > hold_back {
        return Err(invalid(
            "attribution.peer_wait (--peer-wait)",
            format!(
                "{} is longer than the hold-back ({}); a flow never waits longer than the hold-back",
                humantime::format_duration(peer_wait),
                humantime::format_duration(hold_back)
            ),
        ));
    }
    let retention = d(args.retention, a.retention).unwrap_or(defaults.retention);
    if retention < hold_back {
        return Err(invalid(
            "attribution.retention (--retention)",
            "must be at least the hold-back: a held flow is looked up in ranges that old".into(),
        ));
    }
    let max_ranges = args
        .max_ranges
        .or(a.max_ranges)
        .unwrap_or(defaults.max_ranges);
    if max_ranges == 0 {
        return Err(invalid(
            "attribution.max_ranges (--max-ranges)",
            "must be at least 1".into(),
        ));
    }
    let max_held = args.max_held.or(a.max_held).unwrap_or(defaults.max_held);
    if max_held == 0 {
        return Err(invalid(
            "attribution.max_held (--max-held)",
            "must be at least 1".into(),
        ));
    }
    let static_path = args.static_owners.clone().or(a.static_owners.clone());
    let static_owners = match &static_path {
        Some(path) => StaticOwners::load(path).map_err(ConfigError::StaticOwners)?,
        None => StaticOwners::default(),
    };
    let attribution = AttributionConfig::default()
        .with_hold_back(hold_back)
        .with_peer_wait(peer_wait)
        .with_tolerance(d(args.clock_tolerance, a.clock_tolerance).unwrap_or(defaults.tolerance))
        .with_merge_gap(d(args.merge_gap, a.merge_gap).unwrap_or(defaults.merge_gap))
        .with_retention(retention)
        .with_max_ranges(max_ranges)
        .with_max_held(max_held)
        .with_static_owners(static_owners);

    let o = &file.output;
    let mut rotation = Rotation::default();
    rotation.max_bytes = args.rotate_size.or(o.rotate_size.map(|s| s.0));
    rotation.max_age = d(args.rotate_every, o.rotate_every);
    rotation.keep = args.rotate_keep.or(o.rotate_keep);
    if rotation.max_bytes == Some(0) || rotation.max_age == Some(Duration::ZERO) {
        return Err(invalid(
            "output.rotate_size / output.rotate_every",
            "must be more than zero (leave it out to never rotate)".into(),
        ));
    }

    let grace = d(args.window_grace, file.completeness.window_grace)
        .unwrap_or(CompletenessConfig::default().grace);
    if grace.is_zero() {
        return Err(invalid(
            "completeness.window_grace (--window-grace)",
            "must be more than zero: a window's chunks need time to arrive".into(),
        ));
    }
    let completeness = CompletenessConfig::default().with_grace(grace);

    let g = &file.graph;
    let defaults = GraphConfig::default();
    let graph_retention = d(args.graph_retention, g.retention).unwrap_or(defaults.retention);
    if graph_retention < Duration::from_secs(60) {
        return Err(invalid(
            "graph.retention (--graph-retention)",
            "must be at least a minute: the graph is kept by minute".into(),
        ));
    }
    let top_edges = args
        .graph_top_edges
        .or(g.top_edges)
        .unwrap_or(defaults.top_edges);
    let max_edges = args
        .graph_max_edges
        .or(g.max_edges)
        .unwrap_or(defaults.max_edges);
    if top_edges == 0 || max_edges == 0 {
        return Err(invalid(
            "graph.top_edges / graph.max_edges (--graph-top-edges, --graph-max-edges)",
            "must be more than zero".into(),
        ));
    }
    let enabled = !args.no_graph && g.enabled.unwrap_or(true);
    let graph = defaults
        .with_enabled(enabled)
        .with_retention(graph_retention)
        .with_top_edges(top_edges)
        .with_max_edges(max_edges);

    let s = &file.server;
    let mut options = CollectorOptions::new(listen, out)
        .with_attribution(attribution)
        .with_completeness(completeness)
        .with_graph(graph)
        .with_rotation(rotation);
    if let Some(dir) = args.state_dir.clone().or(file.state_dir) {
        options = options.with_state_dir(dir);
    }
    if let Some(max) = args.max_body_bytes.or(s.max_body_bytes.map(|t| t.0)) {
        let max = usize::try_from(max).map_err(|_| {
            invalid(
                "server.max_body_bytes (--max-body-bytes)",
                "too large".into(),
            )
        })?;
        options = options.with_max_body_bytes(max);
    }
    let sync = if args.no_sync {
        false
    } else {
        s.sync.unwrap_or(true)
    };
    options = options.with_sync(sync);
    if let Some(max) = args.max_connections.or(s.max_connections) {
        options = options.with_max_connections(max);
    }
    if let Some(t) = d(args.header_read_timeout, s.header_read_timeout) {
        options = options.with_header_read_timeout(t);
    }
    if let Some(t) = d(args.idle_timeout, s.idle_timeout) {
        options = options.with_idle_timeout(t);
    }
    if let Some(t) = d(args.body_read_timeout, s.body_read_timeout) {
        options = options.with_body_read_timeout(t);
    }
    if let Some(t) = d(args.drain_timeout, s.drain_timeout) {
        options = options.with_drain_timeout(t);
    }
    let cert = args.tls_cert.clone().or(file.tls.cert.clone());
    let key = args.tls_key.clone().or(file.tls.key.clone());
    let client_ca = args.client_ca.clone().or(file.tls.client_ca.clone());
    match (cert, key) {
        (Some(cert), Some(key)) => {
            let mut tls = ServerTls::new(cert, key);
            if let Some(ca) = client_ca {
                tls = tls.with_client_ca(ca);
            }
            options = options.with_tls(tls);
        }
        (None, None) if client_ca.is_none() => {}
        _ => {
            return Err(invalid(
                "tls.cert / tls.key / tls.client_ca (--tls-cert, --tls-key, --client-ca)",
                "a certificate needs its key, and a client CA needs both".into(),
            ));
        }
    }
    if let Some(kafka) = kafka_options(args, &file.kafka, output_topic)? {
        options = options.with_kafka(kafka);
    }
    if let Some(t) = d(args.output_ack_timeout, file.kafka.ack_timeout) {
        if t.is_zero() {
            return Err(invalid(
                "kafka.ack_timeout (--output-ack-timeout)",
                "must be more than zero".into(),
            ));
        }
        options.output_ack_timeout = t;
    }
    Ok(Resolved {
        options,
        file: file_path,
    })
}

/// The Kafka options, if any topic is configured.
fn kafka_options(
    args: &RunArgs,
    k: &KafkaSection,
    output_topic: Option<String>,
) -> Result<Option<KafkaOptions>, ConfigError> {
    let invalid = |key: &'static str, reason: String| ConfigError::Invalid { key, reason };
    let heartbeat_topic = args.heartbeat_topic.clone().or(k.heartbeat_topic.clone());
    let input_topic = args.input_topic.clone().or(k.input_topic.clone());
    let connection_topic = args.connection_topic.clone().or(k.connection_topic.clone());
    let brokers = args.kafka_brokers.clone().or(k.brokers.clone());
    let any_topic = output_topic.is_some()
        || heartbeat_topic.is_some()
        || input_topic.is_some()
        || connection_topic.is_some();
    let Some(brokers) = brokers else {
        if any_topic {
            return Err(invalid(
                "kafka.brokers (--kafka-brokers)",
                "required with a Kafka topic (--output-topic, --heartbeat-topic, --input-topic)"
                    .into(),
            ));
        }
        return Ok(None);
    };
    if !any_topic {
        return Err(invalid(
            "kafka.brokers (--kafka-brokers)",
            "given without a topic: name --output-topic, --heartbeat-topic or --input-topic".into(),
        ));
    }
    for (key, topic) in [
        ("kafka.output_topic (--output-topic)", &output_topic),
        (
            "kafka.heartbeat_topic (--heartbeat-topic)",
            &heartbeat_topic,
        ),
        ("kafka.input_topic (--input-topic)", &input_topic),
        (
            "kafka.connection_topic (--connection-topic)",
            &connection_topic,
        ),
    ] {
        if let Some(topic) = topic
            && !valid_topic(topic)
        {
            return Err(invalid(
                key,
                format!("{topic:?} is not a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)"),
            ));
        }
    }
    if connection_topic.is_some() && (output_topic.is_none() || heartbeat_topic.is_none()) {
        return Err(invalid(
            "kafka.connection_topic (--connection-topic)",
            "routing records by connection needs --output-topic and --heartbeat-topic (every node attributes some connections and shares its heartbeats)".into(),
        ));
    }
    let kafka_error = |key: &'static str| {
        move |e: flow_kafka::KafkaError| ConfigError::Invalid {
            key,
            reason: e.to_string(),
        }
    };
    let mut settings =
        KafkaSettings::new(&brokers).map_err(kafka_error("kafka.brokers (--kafka-brokers)"))?;
    if let Some(codec) = args.kafka_compression.clone().or(k.compression.clone()) {
        settings = settings
            .with_compression(&codec)
            .map_err(kafka_error("kafka.compression (--kafka-compression)"))?;
    }
    let ca = args.kafka_ca.clone().or(k.tls.ca.clone());
    let cert = args.kafka_cert.clone().or(k.tls.cert.clone());
    let key = args.kafka_key.clone().or(k.tls.key.clone());
    if cert.is_some() != key.is_some() {
        return Err(invalid(
            "kafka.tls.cert / kafka.tls.key (--kafka-cert, --kafka-key)",
            "a client certificate needs its key".into(),
        ));
    }
    if args.kafka_tls || k.tls.enabled == Some(true) || ca.is_some() || cert.is_some() {
        settings = settings.with_tls(KafkaTls {
            ca_file: ca,
            cert_file: cert,
            key_file: key,
        });
    }
    let mechanism = args
        .kafka_sasl_mechanism
        .clone()
        .or(k.sasl.mechanism.clone());
    if let Some(mechanism) = mechanism {
        let mechanism = SaslMechanism::parse(&mechanism)
            .map_err(kafka_error("kafka.sasl.mechanism (--kafka-sasl-mechanism)"))?;
        let username = args
            .kafka_sasl_username
            .clone()
            .or(k.sasl.username.clone())
            .ok_or_else(|| {
                invalid(
                    "kafka.sasl.username (--kafka-sasl-username)",
                    "required with a SASL mechanism".into(),
                )
            })?;
        let path = args
            .kafka_sasl_password_file
            .clone()
            .or(k.sasl.password_file.clone())
            .ok_or_else(|| {
                invalid(
                    "kafka.sasl.password_file (--kafka-sasl-password-file)",
                    "required with a SASL mechanism".into(),
                )
            })?;
        let password = read_secret(&path).map_err(|reason| {
            invalid(
                "kafka.sasl.password_file (--kafka-sasl-password-file)",
                format!("{}: {reason}", path.display()),
            )
        })?;
        settings = settings.with_sasl(Sasl {
            mechanism,
            username,
            password,
        });
    }
    for (key, value) in &k.properties {
        settings = settings.with_property(key, value);
    }
    let mut kafka = KafkaOptions::new(settings);
    kafka.output_topic = output_topic;
    kafka.heartbeat_topic = heartbeat_topic;
    kafka.input_topic = input_topic;
    if let Some(group) = args.group.clone().or(k.group.clone()) {
        kafka.group = group;
    }
    kafka.connection_topic = connection_topic;
    kafka.connection_group = args.connection_group.clone().or(k.connection_group.clone());
    if kafka.connection_topic.is_some() && kafka.connection_group() == kafka.group {
        return Err(invalid(
            "kafka.connection_group (--connection-group)",
            format!(
                "{:?} is also the input's group (--group): give the connection topic a group of its own, or the two consumers rebalance together",
                kafka.group
            ),
        ));
    }
    if let Some(node) = args.node_id.clone().or(k.node_id.clone()) {
        kafka.node_id = node;
    }
    if let Some(t) = args
        .heartbeat_rebuild_timeout
        .or(k.rebuild_timeout.map(|t| t.0))
    {
        kafka.rebuild_timeout = t;
    }
    if let Some(t) = args.kafka_check_timeout.or(k.check_timeout.map(|t| t.0)) {
        kafka.check_timeout = t;
    }
    Ok(Some(kafka))
}

/// Whether `topic` is a legal Kafka topic name.
fn valid_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// The first line of a secret file: a regular file (not followed if a link, never
/// waited on) of at most 4 KiB.
fn read_secret(path: &Path) -> Result<String, String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| format!("cannot open it: {e}"))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot stat it: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut text = String::new();
    file.take(4096)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read it as UTF-8 text: {e}"))?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err("is empty".into());
    }
    Ok(line.to_owned())
}

/// Reads and parses the configuration file: a regular file (never waited on: opened
/// non-blocking) of at most 1 MiB of UTF-8.
fn read(path: &Path) -> Result<FileConfig, ConfigError> {
    let fail = |reason: String| ConfigError::File {
        path: path.to_path_buf(),
        reason,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| fail(format!("cannot open it: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| fail(format!("cannot stat it: {e}")))?;
    if !meta.is_file() {
        return Err(fail("not a regular file".into()));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(fail(format!("larger than {MAX_CONFIG_BYTES} bytes")));
    }
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| fail(format!("cannot read it as UTF-8 text: {e}")))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(fail(format!("larger than {MAX_CONFIG_BYTES} bytes")));
    }
    toml::from_str(&text).map_err(|e| fail(e.to_string()))
}

/// What `config check` prints: every setting in force.
pub(crate) fn describe(resolved: &Resolved) -> String {
    let o = &resolved.options;
    let a = &o.attribution;
    let fmt = |d: Duration| humantime::format_duration(d).to_string();
    let mut lines = vec![
        format!(
            "configuration file: {}",
            resolved
                .file
                .as_ref()
                .map_or("(none)".into(), |p| p.display().to_string())
        ),
        format!("listen = {}", o.listen),
        format!("out = {}", o.out.display()),
        format!("state_dir = {}", o.state_dir.display()),
        format!("output.rotate_size = {:?}", o.rotation.max_bytes),
        format!("output.rotate_every = {:?}", o.rotation.max_age.map(fmt)),
        format!("output.rotate_keep = {:?}", o.rotation.keep),
        format!("attribution.hold_back = {}", fmt(a.hold_back)),
        format!("attribution.peer_wait = {}", fmt(a.peer_wait)),
        format!("attribution.clock_tolerance = {}", fmt(a.tolerance)),
        format!("attribution.merge_gap = {}", fmt(a.merge_gap)),
        format!("attribution.retention = {}", fmt(a.retention)),
        format!("attribution.max_ranges = {}", a.max_ranges),
        format!("attribution.max_held = {}", a.max_held),
        format!(
            "attribution.static_owners = {} entries",
            a.static_owners.len()
        ),
        format!("completeness.window_grace = {}", fmt(o.completeness.grace)),
        format!("graph.enabled = {}", o.graph.enabled),
        format!("graph.retention = {}", fmt(o.graph.retention)),
        format!("graph.top_edges = {}", o.graph.top_edges),
        format!("graph.max_edges = {}", o.graph.max_edges),
        format!("server.max_body_bytes = {}", o.max_body_bytes),
        format!("server.sync = {}", o.sync),
        format!("server.max_connections = {}", o.max_connections),
        format!(
            "server.header_read_timeout = {}",
            fmt(o.header_read_timeout)
        ),
        format!("server.idle_timeout = {}", fmt(o.idle_timeout)),
        format!("server.body_read_timeout = {}", fmt(o.body_read_timeout)),
        format!("server.drain_timeout = {}", fmt(o.drain_timeout())),
        format!("tls = {}", if o.tls.is_some() { "on" } else { "off" }),
    ];
    match &o.kafka {
        Some(k) => {
            let topic = |t: &Option<String>| t.clone().unwrap_or_else(|| "(none)".into());
            lines.push(format!("kafka.brokers = {}", k.settings.brokers));
            lines.push(format!("kafka.output_topic = {}", topic(&k.output_topic)));
            lines.push(format!(
                "kafka.heartbeat_topic = {}",
                topic(&k.heartbeat_topic)
            ));
            lines.push(format!("kafka.input_topic = {}", topic(&k.input_topic)));
            lines.push(format!("kafka.group = {}", k.group));
            lines.push(format!(
                "kafka.connection_topic = {}",
                topic(&k.connection_topic)
            ));
            if k.connection_topic.is_some() {
                lines.push(format!("kafka.connection_group = {}", k.connection_group()));
            }
            lines.push(format!("kafka.node_id = {}", k.node_id));
            lines.push(format!("kafka.compression = {}", k.settings.compression));
            lines.push(format!(
                "kafka.tls = {}",
                if k.settings.tls.is_some() {
                    "on"
                } else {
                    "off"
                }
            ));
            lines.push(format!(
                "kafka.sasl = {}",
                k.settings.sasl.as_ref().map_or("off".into(), |s| format!(
                    "{} as {}",
                    s.mechanism.as_str(),
                    s.username
                ))
            ));
            lines.push(format!(
                "kafka.rebuild_timeout = {}",
                fmt(k.rebuild_timeout)
            ));
            lines.push(format!("kafka.ack_timeout = {}", fmt(o.output_ack_timeout)));
        }
        None => lines.push("kafka = off".into()),
    }
    lines.push("configuration OK".into());
    lines.join("\n")
}
