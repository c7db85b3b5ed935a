//! Command-line interface.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// flowexporter: an eBPF TCP flow exporter. Emits one record per closed TCP socket,
/// with addresses, ports, times and socket statistics.
#[derive(Debug, Parser)]
#[command(name = "flowexporter", version = version(), about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        env = "FLOWEXPORTER_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Which logs are written: a level (error, warn, info, debug, trace, off), or
    /// comma-separated directives such as `info,flow_sink=debug`.
    #[arg(
        long,
        global = true,
        env = "FLOWEXPORTER_LOG",
        default_value = "info",
        value_parser = crate::logging::check_filter
    )]
    pub log_level: String,
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the tracer and print each flow record as it is captured.
    Tail(TailArgs),
    /// Run the exporter: capture, identity, minute batches, delivery to a collector
    /// (or JSON lines on stdout without one).
    Run(Box<RunArgs>),
    /// Probe this host: can it run the exporter? Prints a pass/fail table with what to
    /// do for each failure; the exit status is 0 only if every required check passes.
    Check(Box<CheckArgs>),
    /// Validate a configuration file, or print a commented example.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Read and write the identity maps (local IP -> workload, and
    /// (local IPv4, local port) -> workload) that the tracer consults at capture time.
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// Write the manual pages or print shell completions (for packagers).
    #[command(subcommand, hide = true)]
    Generate(crate::generate::GenerateCommand),
}

/// `flowexporter config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file: unknown keys, wrong types, out-of-range values.
    Check {
        /// The file.
        file: PathBuf,
    },
    /// Print a commented example configuration.
    Example,
}

/// `flowexporter identity ...`.
#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// The IP map: local IP (v4 or v6) -> workload.
    Ip {
        /// What to do.
        #[command(subcommand)]
        op: IpOp,
        /// Where the maps are pinned (on the BPF filesystem).
        #[arg(long, global = true, default_value = flow_capture::identity_maps::DEFAULT_IDENTITY_PIN_DIR)]
        pin_dir: PathBuf,
    },
    /// The connect map: (local IPv4, local port) -> workload; it takes precedence over
    /// the IP map.
    Connect {
        /// What to do.
        #[command(subcommand)]
        op: ConnectOp,
        /// Where the maps are pinned (on the BPF filesystem).
        #[arg(long, global = true, default_value = flow_capture::identity_maps::DEFAULT_IDENTITY_PIN_DIR)]
        pin_dir: PathBuf,
    },
}

/// Operations on the IP map.
#[derive(Debug, Subcommand)]
pub enum IpOp {
    /// Map a local IP to a workload: `set 10.1.2.3 billing`.
    Set {
        /// The local IP.
        ip: IpAddr,
        /// The workload ID (UTF-8, 1 to 64 bytes).
        workload: String,
    },
    /// Remove a local IP's mapping: `rm 10.1.2.3`.
    Rm {
        /// The local IP.
        ip: IpAddr,
    },
    /// List the mappings.
    Ls,
}

/// Operations on the connect map.
#[derive(Debug, Subcommand)]
pub enum ConnectOp {
    /// Map a local IPv4 and port to a workload: `set 10.1.2.3 40001 billing`.
    Set {
        /// The local IPv4 address.
        ip: IpAddr,
        /// The local port.
        port: u16,
        /// The workload ID (UTF-8, 1 to 64 bytes).
        workload: String,
    },
    /// Remove a mapping: `rm 10.1.2.3 40001`.
    Rm {
        /// The local IPv4 address.
        ip: IpAddr,
        /// The local port.
        port: u16,
    },
    /// List the mappings.
    Ls,
}

/// Which certificate field names the workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CertField {
    /// The first URI subject alternative name (SPIFFE style).
    SanUri,
    /// The subject common name.
    Cn,
}

impl From<CertField> for flow_identity::IdentityField {
    fn from(field: CertField) -> flow_identity::IdentityField {
        match field {
            CertField::SanUri => flow_identity::IdentityField::SanUri,
            CertField::Cn => flow_identity::IdentityField::SubjectCn,
        }
    }
}

/// Options of `flowexporter tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also print interim records: every connection still open shortly before each
    /// window (--window) closes, with its counters so far.
    #[arg(long)]
    pub interim: bool,
    /// The window of interim records.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub window: Duration,
    /// Capture and identity options.
    #[command(flatten)]
    pub capture: CaptureArgs,
}

/// Options of `flowexporter check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The identity pin directory to check.
    #[arg(long, default_value = flow_capture::identity_maps::DEFAULT_IDENTITY_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// An identity certificate to check (PEM).
    #[arg(long)]
    pub identity_cert: Option<PathBuf>,
    /// Which certificate field names the workload.
    #[arg(long, value_enum, default_value = "san-uri")]
    pub identity_field: CertField,
    /// Spool and journal directories to check for writability.
    #[arg(long = "state-dir")]
    pub state_dirs: Vec<PathBuf>,
    /// A Kafka topic to check (with --kafka-brokers and --kafka-topic): the brokers
    /// answer, the topic exists, the credentials are accepted.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The exports to check: the OTLP endpoint takes an empty logs request
    /// (--otlp-endpoint), the IPFIX collector's name resolves and, over TCP, it
    /// accepts a connection (--ipfix-collector).
    #[command(flatten)]
    pub exports: crate::exports::ExportArgs,
}

/// Where `run` produces chunks to Kafka (beside, or instead of, a collector), and how
/// it reaches the brokers. The `[kafka]` table of the configuration file.
#[derive(Clone, Debug, Default, Args)]
pub struct KafkaArgs {
    /// Produce minute batches to Kafka: the bootstrap brokers, HOST:PORT[,HOST:PORT...]
    /// (with --kafka-topic).
    #[arg(long, env = "FLOWEXPORTER_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// The topic chunks are produced to (it must exist: the exporter never creates it).
    #[arg(long, env = "FLOWEXPORTER_KAFKA_TOPIC")]
    pub kafka_topic: Option<String>,
    /// Talk to the brokers over TLS, checked against the system's CAs unless
    /// --kafka-ca is given (implied by --kafka-ca and --kafka-cert).
    #[arg(long, env = "FLOWEXPORTER_KAFKA_TLS")]
    pub kafka_tls: bool,
    /// CA certificate(s) (PEM) the brokers' certificates are checked against.
    #[arg(long, env = "FLOWEXPORTER_KAFKA_CA")]
    pub kafka_ca: Option<PathBuf>,
    /// Client certificate (PEM), for brokers that require one.
    #[arg(long, env = "FLOWEXPORTER_KAFKA_CERT")]
    pub kafka_cert: Option<PathBuf>,
    /// Private key (PEM) of --kafka-cert.
    #[arg(long, env = "FLOWEXPORTER_KAFKA_KEY")]
    pub kafka_key: Option<PathBuf>,
    /// SASL mechanism: PLAIN (over TLS only, in practice), SCRAM-SHA-256 or
    /// SCRAM-SHA-512 (with --kafka-sasl-username and --kafka-sasl-password-file).
    #[arg(long, env = "FLOWEXPORTER_KAFKA_SASL_MECHANISM")]
    pub kafka_sasl_mechanism: Option<String>,
    /// SASL user name.
    #[arg(long, env = "FLOWEXPORTER_KAFKA_SASL_USERNAME")]
    pub kafka_sasl_username: Option<String>,
    /// File holding the SASL password (its first line; read at start, never given on
    /// the command line).
    #[arg(long, env = "FLOWEXPORTER_KAFKA_SASL_PASSWORD_FILE")]
    pub kafka_sasl_password_file: Option<PathBuf>,
    /// Producer compression: none (default: a chunk's records are zstd-compressed
    /// already), zstd, lz4, snappy or gzip.
    #[arg(long, env = "FLOWEXPORTER_KAFKA_COMPRESSION", default_value = "none")]
    pub kafka_compression: String,
}

/// Options of `flowexporter run`. Each can also be set by its environment variable
/// (`FLOWEXPORTER_<OPTION>`) or in the configuration file; a flag wins over its
/// variable, which wins over the file.
#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    /// Configuration file (TOML; `flowexporter config example` prints one). Default:
    /// /etc/flowexporter/config.toml when it exists.
    #[arg(long, env = "FLOWEXPORTER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Send minute batches to this collector (e.g. http://collector:9000). Without it
    /// (and without --kafka-brokers), records are written to stdout as JSON lines as
    /// soon as they are captured.
    #[arg(long, env = "FLOWEXPORTER_COLLECTOR")]
    pub collector: Option<String>,
    /// Batch window, on wall-clock boundaries (e.g. 60s, 5s, 1m).
    #[arg(long, env = "FLOWEXPORTER_WINDOW", default_value = "60s", value_parser = humantime::parse_duration)]
    pub window: Duration,
    /// Whether every connection still open shortly before a window closes yields an
    /// interim record in that window (counters so far, the same flow_id as its final
    /// record).
    #[arg(long, env = "FLOWEXPORTER_INTERIM", default_value_t = true, action = clap::ArgAction::Set)]
    pub interim: bool,
    /// Where chunks wait until the collector takes them (bounded, survives restarts);
    /// chunks for Kafka wait in its subdirectory `kafka`, with a cap of their own.
    #[arg(
        long,
        env = "FLOWEXPORTER_SPOOL_DIR",
        default_value = "/var/lib/flowexporter/spool"
    )]
    pub spool_dir: PathBuf,
    /// Largest spool, in bytes; past it the oldest chunks are dropped and counted.
    #[arg(long, env = "FLOWEXPORTER_SPOOL_MAX_BYTES", default_value_t = 1 << 30)]
    pub spool_max_bytes: u64,
    /// Write-ahead journal of captured records (a crash loses at most about one
    /// journal sync interval of them).
    #[arg(
        long,
        env = "FLOWEXPORTER_JOURNAL_DIR",
        default_value = "/var/lib/flowexporter/journal"
    )]
    pub journal_dir: PathBuf,
    /// How often the journal is synced to disk.
    #[arg(long, env = "FLOWEXPORTER_JOURNAL_SYNC", default_value = "1s", value_parser = humantime::parse_duration)]
    pub journal_sync: Duration,
    /// Longest wait between two attempts to reach the collector or Kafka (backoff is
    /// exponential from 0.5 s, with full jitter; retries never stop while a spool
    /// holds the chunk).
    #[arg(long, env = "FLOWEXPORTER_RETRY_MAX_BACKOFF", default_value = "60s", value_parser = humantime::parse_duration)]
    pub retry_max_backoff: Duration,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9101).
    #[arg(long, env = "FLOWEXPORTER_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// This host's identity in batch headers (default: the hostname).
    #[arg(long, env = "FLOWEXPORTER_HOST_ID")]
    pub host_id: Option<String>,
    /// CA certificate (PEM) to trust for an https collector (default: the system's).
    #[arg(long, env = "FLOWEXPORTER_COLLECTOR_CA")]
    pub collector_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, e.g. the host's identity certificate.
    #[arg(long, env = "FLOWEXPORTER_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,
    /// Private key (PEM) of --client-cert.
    #[arg(long, env = "FLOWEXPORTER_CLIENT_KEY")]
    pub client_key: Option<PathBuf>,
    /// Kafka: where chunks are produced, and how the brokers are reached.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The standard exports: OTLP and IPFIX.
    #[command(flatten)]
    pub exports: crate::exports::ExportArgs,
    /// Run as this user (and its groups) once the kernel program is loaded and the
    /// spool and journal directories are handed to it; files read later (the
    /// configuration on SIGHUP, certificates, keys) must be readable by it.
    #[arg(long, env = "FLOWEXPORTER_USER")]
    pub user: Option<String>,
    /// Capture and identity options.
    #[command(flatten)]
    pub capture: CaptureArgs,
}

/// Options shared by `tail` and `run`: the capture core and identity.
/// The binary's default drain interval. The ring is drained on this timer when the
/// kernel has not woken the reader: every wakeup of an idle exporter costs CPU (at
/// 50 ms, 3.0 ms of CPU per second idle; at 200 ms, 0.85 ms, docs/performance.md),
/// while the kernel wakes the reader early at any real load, so records never wait
/// for the timer to avoid a full ring.
pub const DEFAULT_POLL_MS: u64 = 200;

#[derive(Clone, Debug, Args)]
pub struct CaptureArgs {
    /// Ring buffer size in bytes (power of two, multiple of the page size).
    #[arg(long, env = "FLOWEXPORTER_RING_SIZE", default_value_t = flow_capture::DEFAULT_RING_SIZE)]
    pub ring_size: u32,
    /// Drain interval in milliseconds when the kernel has not woken the reader (it
    /// does once 512 KiB, or a quarter of the ring, wait).
    #[arg(long, env = "FLOWEXPORTER_POLL_MS", default_value_t = DEFAULT_POLL_MS)]
    pub poll_ms: u64,
    /// The host's identity certificate (PEM): records the identity maps do not
    /// attribute get its identity.
    #[arg(long, env = "FLOWEXPORTER_IDENTITY_CERT")]
    pub identity_cert: Option<PathBuf>,
    /// Which certificate field names the workload.
    #[arg(
        long,
        env = "FLOWEXPORTER_IDENTITY_FIELD",
        value_enum,
        default_value = "san-uri"
    )]
    pub identity_field: CertField,
    /// Where the identity maps are pinned. Default: /sys/fs/bpf/flowexporter when the
    /// BPF filesystem is mounted (otherwise the maps stay private, with a warning).
    #[arg(long, env = "FLOWEXPORTER_PIN_DIR")]
    pub pin_dir: Option<PathBuf>,
}

fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        format!(
            "{} (kernel object {})",
            env!("CARGO_PKG_VERSION"),
            flow_capture::kernel_object_id()
        )
    })
}
