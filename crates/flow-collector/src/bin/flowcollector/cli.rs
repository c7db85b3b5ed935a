//! The command line of `flowcollector`. Every run option can also come from its
//! environment variable (`FLOWCOLLECTOR_<OPTION>`) or from the configuration file;
//! see `config.rs` for the precedence.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

/// Parses a duration such as `2m`, `90s`, `500ms`.
fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (e.g. 2m, 90s, 500ms)"))
}

/// Parses a size such as `256MiB`, `1G`, `4096`.
pub(crate) fn size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 256MiB, 1G, 4096)"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" | "KiB" => 1 << 10,
        "M" | "MB" | "MiB" => 1 << 20,
        "G" | "GB" | "GiB" => 1 << 30,
        "T" | "TB" | "TiB" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (B, KiB, MiB, GiB, TiB)"
            ));
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// `flowcollector`: receives flowexporter chunks, stores them once, attributes the
/// remote side of every flow and writes JSON lines.
#[derive(Debug, Parser)]
#[command(
    name = "flowcollector",
    version,
    about = "Receives flowexporter chunks, stores them durably once, and attributes the remote side of every flow from the exporters' heartbeats",
    args_conflicts_with_subcommands = true
)]
pub(crate) struct Cli {
    /// What to do (default: run).
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    /// How to run.
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the collector (the default).
    Run(Box<RunArgs>),
    /// Check or print configuration.
    Config {
        /// What to do with it.
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Write the manual pages or print shell completions (for packagers).
    #[command(subcommand, hide = true)]
    Generate(crate::generate::GenerateCommand),
}

/// `flowcollector config ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum ConfigAction {
    /// Load the configuration (file, environment, flags) as `run` would, check every
    /// value (the static owners file included), print the result and exit 0, or name
    /// what is wrong and exit 1.
    Check {
        /// The configuration file to check (as the exporter's `config check FILE`);
        /// the same as `--config FILE`.
        file: Option<PathBuf>,
        /// Flags and environment, as for `run`.
        #[command(flatten)]
        args: Box<RunArgs>,
    },
    /// Print a commented example configuration file.
    Example,
}

/// The options of `run` (and of `config check`).
#[derive(Debug, Default, Args, Clone)]
pub(crate) struct RunArgs {
    /// Configuration file (TOML). Default: /etc/flowcollector/config.toml when it exists.
    #[arg(long, env = "FLOWCOLLECTOR_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Address to listen on for chunks (and GET /metrics). Default 127.0.0.1:9000.
    #[arg(long, env = "FLOWCOLLECTOR_LISTEN")]
    pub(crate) listen: Option<SocketAddr>,
    /// JSON-lines file attributed flows are appended to.
    #[arg(long, env = "FLOWCOLLECTOR_OUT")]
    pub(crate) out: Option<PathBuf>,
    /// Directory of the ledger (stored chunks, deduplication, checkpoint). Default:
    /// the output path with .state appended.
    #[arg(long, env = "FLOWCOLLECTOR_STATE_DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// Rotate the output when it exceeds this size (e.g. 256MiB).
    #[arg(long, env = "FLOWCOLLECTOR_ROTATE_SIZE", value_parser = size)]
    pub(crate) rotate_size: Option<u64>,
    /// Rotate the output when it is older than this (e.g. 1h).
    #[arg(long, env = "FLOWCOLLECTOR_ROTATE_EVERY", value_parser = duration)]
    pub(crate) rotate_every: Option<Duration>,
    /// Keep at most this many rotated output files (default: all).
    #[arg(long, env = "FLOWCOLLECTOR_ROTATE_KEEP")]
    pub(crate) rotate_keep: Option<usize>,
    /// Longest a flow is held back waiting for heartbeats that cover its remote IP,
    /// then written unattributed. Default 2m.
    #[arg(long, env = "FLOWCOLLECTOR_HOLD_BACK", value_parser = duration)]
    pub(crate) hold_back: Option<Duration>,
    /// Longest a flow waits for its peer's record before the ownership map is used.
    /// Default: the hold-back.
    #[arg(long, env = "FLOWCOLLECTOR_PEER_WAIT", value_parser = duration)]
    pub(crate) peer_wait: Option<Duration>,
    /// Clock skew between hosts plus handshake time: a lookup considers every range
    /// within this of the flow's time, and attributes only if one workload holds
    /// them all. Default 2s.
    #[arg(long, env = "FLOWCOLLECTOR_CLOCK_TOLERANCE", value_parser = duration)]
    pub(crate) clock_tolerance: Option<Duration>,
    /// Heartbeats of one workload on one IP at most this far apart join into one
    /// range. Default 30s.
    #[arg(long, env = "FLOWCOLLECTOR_MERGE_GAP", value_parser = duration)]
    pub(crate) merge_gap: Option<Duration>,
    /// Ownership ranges older than this are forgotten. Default 1h.
    #[arg(long, env = "FLOWCOLLECTOR_RETENTION", value_parser = duration)]
    pub(crate) retention: Option<Duration>,
    /// Most ranges in the ownership map; the oldest are evicted above it. Default 4000000.
    #[arg(long, env = "FLOWCOLLECTOR_MAX_RANGES")]
    pub(crate) max_ranges: Option<usize>,
    /// Most flows held back at once. Default 2000000.
    #[arg(long, env = "FLOWCOLLECTOR_MAX_HELD")]
    pub(crate) max_held: Option<usize>,
    /// Table of IPs/CIDRs of things that run no exporter: one "IP-or-CIDR name"
    /// per line. Consulted after the heartbeats.
    #[arg(long, env = "FLOWCOLLECTOR_STATIC_OWNERS")]
    pub(crate) static_owners: Option<PathBuf>,
    /// How long an exporter window waits for its missing chunks before its
    /// completeness record is written (after its last chunk, or without it after the
    /// window's end or its latest chunk). Default 10m.
    #[arg(long, env = "FLOWCOLLECTOR_WINDOW_GRACE", value_parser = duration)]
    pub(crate) window_grace: Option<Duration>,
    /// Turn the dependency graph off: no aggregation, and GET / and /api/v1/graph
    /// answer 404 (the page and the API sit on the chunk port every host reaches).
    #[arg(long, env = "FLOWCOLLECTOR_NO_GRAPH")]
    pub(crate) no_graph: bool,
    /// How long the dependency graph (GET /api/v1/graph) keeps its minutes; a query
    /// reaching further back is clamped. Default 6h.
    #[arg(long, env = "FLOWCOLLECTOR_GRAPH_RETENTION", value_parser = duration)]
    pub(crate) graph_retention: Option<Duration>,
    /// Edges each node of the dependency graph keeps per minute; the rest are folded
    /// into its edge to "other" (counted). Default 50.
    #[arg(long, env = "FLOWCOLLECTOR_GRAPH_TOP_EDGES")]
    pub(crate) graph_top_edges: Option<usize>,
    /// Most edges the dependency graph holds in all its minutes; above it the oldest
    /// minutes are dropped (counted). Default 500000.
    #[arg(long, env = "FLOWCOLLECTOR_GRAPH_MAX_EDGES")]
    pub(crate) graph_max_edges: Option<usize>,
    /// At SIGTERM, the longest to wait for held flows to be decided; the rest are
    /// written unattributed (reason shutdown). Default: the hold-back plus 5s.
    #[arg(long, env = "FLOWCOLLECTOR_DRAIN_TIMEOUT", value_parser = duration)]
    pub(crate) drain_timeout: Option<Duration>,
    /// Largest request body accepted, in bytes or with a unit (413 above).
    #[arg(long, env = "FLOWCOLLECTOR_MAX_BODY_BYTES", value_parser = size)]
    pub(crate) max_body_bytes: Option<u64>,
    /// Do not fdatasync the ledger before acknowledging a chunk (faster, not durable).
    #[arg(long, env = "FLOWCOLLECTOR_NO_SYNC")]
    pub(crate) no_sync: bool,
    /// Connections open at once; more are closed as soon as they are accepted.
    #[arg(long, env = "FLOWCOLLECTOR_MAX_CONNECTIONS")]
    pub(crate) max_connections: Option<usize>,
    /// Time a client has to send a request's headers (also the keep-alive idle limit).
    #[arg(long, env = "FLOWCOLLECTOR_HEADER_READ_TIMEOUT", value_parser = duration)]
    pub(crate) header_read_timeout: Option<Duration>,
    /// A connection without traffic for this long is closed.
    #[arg(long, env = "FLOWCOLLECTOR_IDLE_TIMEOUT", value_parser = duration)]
    pub(crate) idle_timeout: Option<Duration>,
    /// Time a client has to send a whole request body (408 after it).
    #[arg(long, env = "FLOWCOLLECTOR_BODY_READ_TIMEOUT", value_parser = duration)]
    pub(crate) body_read_timeout: Option<Duration>,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "FLOWCOLLECTOR_TLS_CERT")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "FLOWCOLLECTOR_TLS_KEY")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Require client certificates signed by the CA(s) in this PEM file (mutual TLS).
    #[arg(long, env = "FLOWCOLLECTOR_CLIENT_CA")]
    pub(crate) client_ca: Option<PathBuf>,
    /// Kafka bootstrap brokers, HOST:PORT[,HOST:PORT...]: needed by the topics below.
    #[arg(long, env = "FLOWCOLLECTOR_KAFKA_BROKERS")]
    pub(crate) kafka_brokers: Option<String>,
    /// Write attributed flows to this Kafka topic (one message per flow) instead of
    /// --out; a chunk is answered 2xx once its flows are acknowledged.
    #[arg(long, env = "FLOWCOLLECTOR_OUTPUT_TOPIC")]
    pub(crate) output_topic: Option<String>,
    /// Share ownership heartbeats with the other collector nodes through this topic
    /// (every node of one fleet names the same one).
    #[arg(long, env = "FLOWCOLLECTOR_HEARTBEAT_TOPIC")]
    pub(crate) heartbeat_topic: Option<String>,
    /// Also consume chunks from this topic (as written by `flowexporter run
    /// --kafka-topic`), as a member of --group.
    #[arg(long, env = "FLOWCOLLECTOR_INPUT_TOPIC")]
    pub(crate) input_topic: Option<String>,
    /// Consumer group of --input-topic. Default flowcollector.
    #[arg(long, env = "FLOWCOLLECTOR_GROUP")]
    pub(crate) group: Option<String>,
    /// Route every chunk's records by connection through this topic, and attribute
    /// the records of this node's partitions, so that N nodes attribute as one
    /// (docs/kafka.md, "Connection routing"). Needs --output-topic and
    /// --heartbeat-topic; every node of the fleet names the same one.
    #[arg(long, env = "FLOWCOLLECTOR_CONNECTION_TOPIC")]
    pub(crate) connection_topic: Option<String>,
    /// Consumer group of --connection-topic. Default: --group followed by
    /// "-connections".
    #[arg(long, env = "FLOWCOLLECTOR_CONNECTION_GROUP")]
    pub(crate) connection_group: Option<String>,
    /// This node's name in the heartbeats it publishes. Default: host name and a
    /// random suffix.
    #[arg(long, env = "FLOWCOLLECTOR_NODE_ID")]
    pub(crate) node_id: Option<String>,
    /// Producer compression: zstd (default), lz4, snappy, gzip or none.
    #[arg(long, env = "FLOWCOLLECTOR_KAFKA_COMPRESSION")]
    pub(crate) kafka_compression: Option<String>,
    /// TLS to the brokers, checked against the CA(s) in this PEM file.
    #[arg(long, env = "FLOWCOLLECTOR_KAFKA_CA")]
    pub(crate) kafka_ca: Option<PathBuf>,
    /// Client certificate (PEM) for brokers that require one (needs --kafka-key).
    #[arg(long, env = "FLOWCOLLECTOR_KAFKA_CERT")]
    pub(crate) kafka_cert: Option<PathBuf>,
    /// The PEM private key of --kafka-cert.
    #[arg(long, env = "FLOWCOLLECTOR_KAFKA_KEY")]
    pub(crate) kafka_key: Option<PathBuf>,
    /// Use TLS to the brokers with the system's CAs (implied by --kafka-ca).
    #[arg(long, env = "FLOWCOLLECTOR_KAFKA_TLS")]
    pub(crate) kafka_tls: bool,
    /// SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
    #[arg(long, env = "FLOWCOLLECTOR_KAFKA_SASL_MECHANISM")]
    pub(crate) kafka_sasl_mechanism: Option<String>,
    /// SASL user name.
    #[arg(long, env = "FLOWCOLLECTOR_KAFKA_SASL_USERNAME")]
    pub(crate) kafka_sasl_username: Option<String>,
    /// File holding the SASL password (its first line).
    #[arg(long, env = "FLOWCOLLECTOR_KAFKA_SASL_PASSWORD_FILE")]
    pub(crate) kafka_sasl_password_file: Option<PathBuf>,
    /// Longest the start waits for the brokers to describe each topic (an unreachable
    /// broker is an error after it). Default 30s.
    #[arg(long, env = "FLOWCOLLECTOR_KAFKA_CHECK_TIMEOUT", value_parser = duration)]
    pub(crate) kafka_check_timeout: Option<Duration>,
    /// Longest the start may spend reading the heartbeat topic back. Default 5m.
    #[arg(long, env = "FLOWCOLLECTOR_HEARTBEAT_REBUILD_TIMEOUT", value_parser = duration)]
    pub(crate) heartbeat_rebuild_timeout: Option<Duration>,
    /// With --output-topic, the longest a chunk's answer waits for Kafka's
    /// acknowledgement of its flows (503 after it). Default 10s.
    #[arg(long, env = "FLOWCOLLECTOR_OUTPUT_ACK_TIMEOUT", value_parser = duration)]
    pub(crate) output_ack_timeout: Option<Duration>,
}
