//! The configuration file of `flowexporter run` (TOML), and how it combines with flags
//! and environment variables.
//!
//! Precedence, highest first: a command-line flag, its environment variable
//! (`FLOWEXPORTER_<FLAG>`, e.g. `FLOWEXPORTER_WINDOW=5s`), the configuration file
//! (`--config FILE`, default `/etc/flowexporter/config.toml` when it exists), the
//! built-in default. Unknown keys, wrong types and out-of-range values are refused at
//! start, naming the key and what was expected; on SIGHUP the same [`load`] reads the
//! file again (see `reload.rs`).

use std::{
    fmt,
    fs::OpenOptions,
    io::{self, Read},
    net::{Ipv6Addr, SocketAddr},
    os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use clap::{ArgMatches, FromArgMatches, parser::ValueSource};
use flow_sink::{
    ClientTls, RetryPolicy,
    kafka_sink::{KafkaSettings, KafkaTls, Sasl, SaslMechanism},
};
use serde::Deserialize;

use crate::cli::{CertField, Cli, Command, KafkaArgs, LogFormat, RunArgs};

/// Where the configuration is read from when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/flowexporter/config.toml";

/// Largest configuration file read, in bytes (1 MiB; the example is about 2 KiB). A
/// larger file is refused before it is read, so checking or loading a configuration
/// never costs more than a small, fixed amount of memory.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Why a configuration was refused, before anything was loaded. (The remaining checks
/// report through `anyhow` with the same wording: the key, then what was expected.)
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// A key's value is malformed or out of range.
    InvalidValue {
        /// The key in the file, e.g. `sink.collector`.
        key: &'static str,
        /// The flag that sets it too, e.g. `--collector`.
        flag: &'static str,
        /// The value, escaped and shortened for display.
        value: String,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// The configuration file is larger than [`MAX_CONFIG_BYTES`].
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The configuration file is not a regular file (a FIFO, a directory, a device).
    NotRegularFile {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// The configuration file could not be opened or read, or is not UTF-8.
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::InvalidValue {
                key,
                flag,
                value,
                reason,
            } => write!(f, "{key} ({flag}) = {value}: {reason}"),
            ConfigError::FileTooLarge { path, limit } => write!(
                f,
                "configuration file {}: larger than the limit of {limit} bytes (1 MiB)",
                path.display()
            ),
            ConfigError::NotRegularFile { path, kind } => write!(
                f,
                "configuration file {}: not a regular file (it is a {kind})",
                path.display()
            ),
            ConfigError::Read { path, .. } => {
                write!(f, "reading the configuration file {}", path.display())
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A commented example configuration (`flowexporter config example`).
pub const EXAMPLE: &str = r#"# flowexporter configuration (TOML). Every key is optional; a flag or its
# environment variable (FLOWEXPORTER_<FLAG>) overrides the key.

[capture]
ring_size = 4194304          # bytes; a power of two, multiple of the page size
poll_ms = 200                # drain interval when the kernel has not woken the reader

[identity]
pin_dir = "/sys/fs/bpf/flowexporter"   # where the identity maps are pinned
# certificate = "/etc/flowexporter/host.pem"
field = "san-uri"            # "san-uri" or "cn"

[batch]
window = "60s"               # 1s to 1h, on wall-clock boundaries
interim = true               # an interim record per open connection at each window's close

[sink]
# collector = "http://collector.example:9000"   # without it: JSON lines on stdout
# host_id = "web-17"         # default: the hostname
retry_max_backoff = "60s"
# collector_ca = "/etc/flowexporter/collector-ca.pem"
# client_cert = "/etc/flowexporter/host.pem"
# client_key = "/etc/flowexporter/host.key"

[kafka]
# brokers = "kafka-1.example:9092,kafka-2.example:9092"   # produce chunks to Kafka
# topic = "flowexporter-chunks"   # must exist (never created); with brokers
tls = false                  # TLS to the brokers (implied by ca or cert)
# ca = "/etc/flowexporter/kafka-ca.pem"
# cert = "/etc/flowexporter/host.pem"
# key = "/etc/flowexporter/host.key"
# sasl_mechanism = "SCRAM-SHA-512"   # PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
# sasl_username = "flowexporter"
# sasl_password_file = "/etc/flowexporter/kafka-password"
compression = "none"         # frames are zstd already; or zstd, lz4, snappy, gzip

[otlp]
# endpoint = "http://otel-collector.example:4318"   # every record as an OTLP log record
# headers = { x-tenant = "shop" }
# headers_file = "/etc/flowexporter/otlp-headers"   # NAME=VALUE lines: credentials (mode 0640)
compression = "gzip"         # or "none"
# ca = "/etc/flowexporter/otlp-ca.pem"

[ipfix]
# collector = "udp://nfcapd.example:4739"   # every record as IPFIX; or tcp://HOST:PORT
enterprise_number = 32473    # of our own elements; RFC 5612's documentation number

[spool]
dir = "/var/lib/flowexporter/spool"   # Kafka, OTLP, IPFIX spool in subdirectories kafka, otlp, ipfix
max_bytes = 1073741824       # each sink's spool: past it the oldest chunks are dropped (and counted)

[journal]
dir = "/var/lib/flowexporter/journal"
sync = "1s"                  # a crash loses at most about this much

[metrics]
# addr = "127.0.0.1:9101"    # Prometheus text at http://ADDR/metrics

[logging]
format = "text"              # "text" or "json"
level = "info"               # a level, or directives such as "info,flow_sink=debug"

[process]
# user = "flowexporter"      # run as this user once the kernel program is loaded
"#;

/// The file's shape: sections of optional keys; anything else is refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    otlp: crate::exports::OtlpSection,
    #[serde(default)]
    ipfix: crate::exports::IpfixSection,
    #[serde(default)]
    capture: CaptureSection,
    #[serde(default)]
    identity: IdentitySection,
    #[serde(default)]
    batch: BatchSection,
    #[serde(default)]
    sink: SinkSection,
    #[serde(default)]
    kafka: KafkaSection,
    #[serde(default)]
    spool: DirSection,
    #[serde(default)]
    journal: JournalSection,
    #[serde(default)]
    metrics: MetricsSection,
    #[serde(default)]
    logging: LoggingSection,
    #[serde(default)]
    process: ProcessSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaptureSection {
    ring_size: Option<u32>,
    poll_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentitySection {
    pin_dir: Option<PathBuf>,
    certificate: Option<PathBuf>,
    field: Option<FieldName>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum FieldName {
    SanUri,
    Cn,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchSection {
    window: Option<String>,
    interim: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SinkSection {
    collector: Option<String>,
    host_id: Option<String>,
    retry_max_backoff: Option<String>,
    collector_ca: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KafkaSection {
    brokers: Option<String>,
    topic: Option<String>,
    tls: Option<bool>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    sasl_mechanism: Option<String>,
    sasl_username: Option<String>,
    sasl_password_file: Option<PathBuf>,
    compression: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirSection {
    dir: Option<PathBuf>,
    max_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JournalSection {
    dir: Option<PathBuf>,
    sync: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsSection {
    addr: Option<SocketAddr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoggingSection {
    format: Option<LogName>,
    level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessSection {
    user: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum LogName {
    Text,
    Json,
}

/// Everything `run` is configured with: flags, environment variables, the file and the
/// defaults, combined and validated.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The options of `run`.
    pub args: RunArgs,
    /// How logs are written (`--log-format`, `logging.format`).
    pub log_format: LogFormat,
    /// Which logs are written (`--log-level`, `FLOWEXPORTER_LOG`, `logging.level`).
    pub log_level: String,
    /// The configuration file that was read, if any.
    pub file: Option<PathBuf>,
}

/// Reads `run`'s configuration: the flags and environment variables in `matches` (the
/// whole command line), over the file `file` (default: the one `--config` names, or
/// the default file when it exists), over the defaults; then validates it.
pub fn load(matches: &ArgMatches, file: Option<&Path>) -> anyhow::Result<RunConfig> {
    let cli = Cli::from_arg_matches(matches)?;
    let (Command::Run(args), Some(("run", run_matches))) = (cli.command, matches.subcommand())
    else {
        bail!("internal: the command line is not one of `run`");
    };
    let mut config = RunConfig {
        args: *args,
        log_format: cli.log_format,
        log_level: cli.log_level,
        file: None,
    };
    config.file = file
        .map(Path::to_path_buf)
        .or_else(|| path_for(&config.args));
    if let Some(path) = &config.file {
        let file = read(path)?;
        apply(&mut config, file, run_matches)?;
    }
    validate(&config)?;
    Ok(config)
}

/// Reads and parses a configuration file; errors name the file, the key and what was
/// expected (TOML's own messages do).
fn read(path: &Path) -> anyhow::Result<FileConfig> {
    let text = read_bounded(path, MAX_CONFIG_BYTES)?;
    toml::from_str(&text).with_context(|| format!("configuration file {}", path.display()))
}

/// The text of the configuration file at `path`, which must be a regular file of at
/// most `limit` bytes of UTF-8 (or the null device, which reads as empty).
///
/// The file is opened non-blocking, so a FIFO (or a device) at the path cannot hold the
/// open up, and its type and size are taken from the open file itself; the read is
/// bounded too, for a file that grows meanwhile or reports no size.
fn read_bounded(path: &Path, limit: u64) -> Result<String, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(read_error)?;
    let meta = file.metadata().map_err(read_error)?;
    let kind = meta.file_type();
    if kind.is_char_device() && meta.rdev() == libc::makedev(1, 3) {
        // `--config /dev/null`: the usual way to say "no file" (and not read the
        // default one); it reads as empty.
        return Ok(String::new());
    }
    if !kind.is_file() {
        return Err(ConfigError::NotRegularFile {
            path: path.to_path_buf(),
            kind: if kind.is_dir() {
                "directory"
            } else if kind.is_fifo() {
                "FIFO"
            } else if kind.is_socket() {
                "socket"
            } else if kind.is_char_device() {
                "character device"
            } else if kind.is_block_device() {
                "block device"
            } else {
                "special file"
            },
        });
    }
    let too_large = || ConfigError::FileTooLarge {
        path: path.to_path_buf(),
        limit,
    };
    if meta.len() > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|e| read_error(io::Error::new(io::ErrorKind::InvalidData, e)))
}

fn duration(key: &str, value: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(value).with_context(|| {
        format!("key `{key}`: expected a duration such as \"60s\" or \"1m\", found {value:?}")
    })
}

/// The file named by `--config`, or the default one when it exists.
fn path_for(args: &RunArgs) -> Option<PathBuf> {
    args.config.clone().or_else(|| {
        Path::new(DEFAULT_CONFIG)
            .exists()
            .then(|| PathBuf::from(DEFAULT_CONFIG))
    })
}

/// Sets `field` to `value` (from the file) when neither a flag nor its variable set
/// the argument `id`.
pub(crate) fn fill<T>(m: &ArgMatches, id: &str, field: &mut T, value: Option<T>) {
    if defaulted(m, id)
        && let Some(v) = value
    {
        *field = v;
    }
}

/// Whether the argument `id` came from its built-in default (so a file may set it).
fn defaulted(m: &ArgMatches, id: &str) -> bool {
    matches!(m.value_source(id), None | Some(ValueSource::DefaultValue))
}

/// Fills every option that neither a flag nor its environment variable set from the
/// file.
fn apply(config: &mut RunConfig, file: FileConfig, m: &ArgMatches) -> anyhow::Result<()> {
    macro_rules! set {
        ($id:literal, $field:expr, $value:expr) => {
            fill(m, $id, &mut $field, $value)
        };
    }
    let args = &mut config.args;
    let c = &mut args.capture;
    set!("ring_size", c.ring_size, file.capture.ring_size);
    set!("poll_ms", c.poll_ms, file.capture.poll_ms);
    set!("pin_dir", c.pin_dir, file.identity.pin_dir.map(Some));
    set!(
        "identity_cert",
        c.identity_cert,
        file.identity.certificate.map(Some)
    );
    set!(
        "identity_field",
        c.identity_field,
        file.identity.field.map(|f| match f {
            FieldName::SanUri => CertField::SanUri,
            FieldName::Cn => CertField::Cn,
        })
    );
    let window = file
        .batch
        .window
        .map(|w| duration("batch.window", &w))
        .transpose()?;
    set!("window", args.window, window);
    set!("interim", args.interim, file.batch.interim);
    set!("collector", args.collector, file.sink.collector.map(Some));
    set!("host_id", args.host_id, file.sink.host_id.map(Some));
    let backoff = file
        .sink
        .retry_max_backoff
        .map(|d| duration("sink.retry_max_backoff", &d))
        .transpose()?;
    set!("retry_max_backoff", args.retry_max_backoff, backoff);
    set!(
        "collector_ca",
        args.collector_ca,
        file.sink.collector_ca.map(Some)
    );
    set!(
        "client_cert",
        args.client_cert,
        file.sink.client_cert.map(Some)
    );
    set!(
        "client_key",
        args.client_key,
        file.sink.client_key.map(Some)
    );
    crate::exports::apply(&mut args.exports, file.otlp, file.ipfix, m);
    let k = &mut args.kafka;
    let f = file.kafka;
    set!("kafka_brokers", k.kafka_brokers, f.brokers.map(Some));
    set!("kafka_topic", k.kafka_topic, f.topic.map(Some));
    set!("kafka_tls", k.kafka_tls, f.tls);
    set!("kafka_ca", k.kafka_ca, f.ca.map(Some));
    set!("kafka_cert", k.kafka_cert, f.cert.map(Some));
    set!("kafka_key", k.kafka_key, f.key.map(Some));
    set!(
        "kafka_sasl_mechanism",
        k.kafka_sasl_mechanism,
        f.sasl_mechanism.map(Some)
    );
    set!(
        "kafka_sasl_username",
        k.kafka_sasl_username,
        f.sasl_username.map(Some)
    );
    set!(
        "kafka_sasl_password_file",
        k.kafka_sasl_password_file,
        f.sasl_password_file.map(Some)
    );
    set!("kafka_compression", k.kafka_compression, f.compression);
    set!("spool_dir", args.spool_dir, file.spool.dir);
    set!(
        "spool_max_bytes",
        args.spool_max_bytes,
        file.spool.max_bytes
    );
    set!("journal_dir", args.journal_dir, file.journal.dir);
    let sync = file
        .journal
        .sync
        .map(|d| duration("journal.sync", &d))
        .transpose()?;
    set!("journal_sync", args.journal_sync, sync);
    set!(
        "metrics_addr",
        args.metrics_addr,
        file.metrics.addr.map(Some)
    );
    set!("user", args.user, file.process.user.map(Some));
    set!(
        "log_format",
        config.log_format,
        file.logging.format.map(|f| match f {
            LogName::Text => LogFormat::Text,
            LogName::Json => LogFormat::Json,
        })
    );
    set!("log_level", config.log_level, file.logging.level);
    Ok(())
}

impl RunArgs {
    /// The collector sink's TLS settings (the system's roots and no client
    /// certificate unless set).
    pub fn collector_tls(&self) -> ClientTls {
        let mut tls = ClientTls::default();
        if let Some(ca) = &self.collector_ca {
            tls = tls.with_ca_file(ca);
        }
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            tls = tls.with_client_identity(cert, key);
        }
        tls
    }

    /// The retry policy of the collector and Kafka sinks.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default().with_max_backoff(self.retry_max_backoff)
    }

    /// Whether chunks go anywhere (a collector, Kafka, an OTLP endpoint, an IPFIX
    /// collector): then records are batched, journaled and spooled; otherwise they are
    /// JSON lines on stdout.
    pub fn sends_chunks(&self) -> bool {
        self.collector.is_some()
            || self.kafka.kafka_brokers.is_some()
            || self.exports.otlp_endpoint.is_some()
            || self.exports.ipfix_collector.is_some()
    }

    /// Where the Kafka sink spools: the subdirectory `kafka` of the spool directory
    /// (the collector sink's spool leaves entries of other names alone).
    pub fn kafka_spool_dir(&self) -> PathBuf {
        self.spool_dir.join(KAFKA_SPOOL_SUBDIR)
    }
}

/// The subdirectory of `spool.dir` the Kafka sink spools in.
pub const KAFKA_SPOOL_SUBDIR: &str = "kafka";

/// Kafka's settings and topic, when `--kafka-brokers` is given: the settings checked,
/// the SASL password read from its file (the first line).
#[derive(Clone, Debug)]
pub struct KafkaTarget {
    /// How to reach the cluster.
    pub settings: KafkaSettings,
    /// The topic.
    pub topic: String,
}

impl KafkaArgs {
    /// The Kafka settings and topic these options name (`None` without
    /// `--kafka-brokers`), checked as the Kafka sink will use them, with the SASL
    /// password read from its file. Errors name the key and the flag.
    pub fn target(&self) -> anyhow::Result<Option<KafkaTarget>> {
        let Some(brokers) = &self.kafka_brokers else {
            if let Some((key, flag)) = self.set_without_brokers() {
                bail!(
                    "{key} ({flag}) is set but kafka.brokers (--kafka-brokers) is not: give the brokers, or remove it"
                );
            }
            return Ok(None);
        };
        let Some(topic) = &self.kafka_topic else {
            bail!(
                "kafka.brokers and kafka.topic (--kafka-brokers, --kafka-topic): give both or neither"
            );
        };
        let invalid = |key, flag, value: &str, reason: String| ConfigError::InvalidValue {
            key,
            flag,
            value: shown(value),
            reason,
        };
        // A malformed setting's own reason: the key and the value are said already.
        let reason = |e: &flow_sink::kafka_sink::KafkaError| match e {
            flow_sink::kafka_sink::KafkaError::InvalidSetting { reason, .. } => reason.clone(),
            other => other.to_string(),
        };
        let mut settings = KafkaSettings::new(brokers).map_err(|e| {
            invalid(
                "kafka.brokers",
                "--kafka-brokers",
                brokers,
                format!("{}; expected HOST:PORT[,HOST:PORT...]", reason(&e)),
            )
        })?;
        if let Err(e) = flow_sink::kafka_sink::check_topic_name(topic) {
            let why = match &e {
                flow_sink::SinkError::InvalidConfig { reason, .. } => (*reason).to_owned(),
                other => other.to_string(),
            };
            return Err(invalid("kafka.topic", "--kafka-topic", topic, why).into());
        }
        settings = settings
            .with_compression(&self.kafka_compression)
            .map_err(|e| {
                invalid(
                    "kafka.compression",
                    "--kafka-compression",
                    &self.kafka_compression,
                    reason(&e),
                )
            })?;
        if self.kafka_cert.is_some() != self.kafka_key.is_some() {
            bail!("kafka.cert and kafka.key (--kafka-cert, --kafka-key): give both or neither");
        }
        if self.kafka_tls || self.kafka_ca.is_some() || self.kafka_cert.is_some() {
            settings = settings.with_tls(KafkaTls {
                ca_file: self.kafka_ca.clone(),
                cert_file: self.kafka_cert.clone(),
                key_file: self.kafka_key.clone(),
            });
        }
        if let Some(sasl) = self.sasl()? {
            settings = settings.with_sasl(sasl);
        }
        Ok(Some(KafkaTarget {
            settings,
            topic: topic.clone(),
        }))
    }

    /// The first Kafka option set without brokers, as (key, flag).
    fn set_without_brokers(&self) -> Option<(&'static str, &'static str)> {
        [
            (self.kafka_topic.is_some(), "kafka.topic", "--kafka-topic"),
            (self.kafka_tls, "kafka.tls", "--kafka-tls"),
            (self.kafka_ca.is_some(), "kafka.ca", "--kafka-ca"),
            (self.kafka_cert.is_some(), "kafka.cert", "--kafka-cert"),
            (self.kafka_key.is_some(), "kafka.key", "--kafka-key"),
            (
                self.kafka_sasl_mechanism.is_some(),
                "kafka.sasl_mechanism",
                "--kafka-sasl-mechanism",
            ),
            (
                self.kafka_sasl_username.is_some(),
                "kafka.sasl_username",
                "--kafka-sasl-username",
            ),
            (
                self.kafka_sasl_password_file.is_some(),
                "kafka.sasl_password_file",
                "--kafka-sasl-password-file",
            ),
        ]
        .into_iter()
        .find_map(|(set, key, flag)| set.then_some((key, flag)))
    }

    /// SASL, when a mechanism is given: the user name and the password (read from its
    /// file) must be given too.
    fn sasl(&self) -> anyhow::Result<Option<Sasl>> {
        let (mechanism, username, password_file) = match (
            &self.kafka_sasl_mechanism,
            &self.kafka_sasl_username,
            &self.kafka_sasl_password_file,
        ) {
            (None, None, None) => return Ok(None),
            (Some(m), Some(u), Some(p)) => (m, u, p),
            _ => bail!(
                "kafka.sasl_mechanism, kafka.sasl_username and kafka.sasl_password_file (--kafka-sasl-mechanism, --kafka-sasl-username, --kafka-sasl-password-file): give all three or none"
            ),
        };
        let mechanism = SaslMechanism::parse(mechanism).map_err(|e| ConfigError::InvalidValue {
            key: "kafka.sasl_mechanism",
            flag: "--kafka-sasl-mechanism",
            value: shown(mechanism),
            reason: match e {
                flow_sink::kafka_sink::KafkaError::InvalidSetting { reason, .. } => reason,
                other => other.to_string(),
            },
        })?;
        let bytes = flow_sink::state_dir::read_regular_file(password_file, 64 << 10).with_context(
            || {
                format!(
                    "kafka.sasl_password_file (--kafka-sasl-password-file): reading {}",
                    password_file.display()
                )
            },
        )?;
        let text = String::from_utf8(bytes).map_err(|_| {
            anyhow::anyhow!(
                "kafka.sasl_password_file (--kafka-sasl-password-file): {} is not UTF-8 text",
                password_file.display()
            )
        })?;
        let password = text.lines().next().unwrap_or_default().to_owned();
        if password.is_empty() {
            bail!(
                "kafka.sasl_password_file (--kafka-sasl-password-file): {} holds no password on its first line",
                password_file.display()
            );
        }
        Ok(Some(Sasl {
            mechanism,
            username: username.clone(),
            password,
        }))
    }
}

/// Refuses out-of-range values, naming the key (file) and the flag.
fn validate(config: &RunConfig) -> anyhow::Result<()> {
    if let Err(e) = crate::logging::check_filter(&config.log_level) {
        bail!(
            "logging.level (--log-level, FLOWEXPORTER_LOG) = {:?}: {e}",
            config.log_level
        );
    }
    let args = &config.args;
    if let Some(name) = &args.user {
        crate::user::ServiceUser::lookup(name)
            .with_context(|| format!("process.user (--user) = {name:?}"))?;
    }
    let ring = u64::from(args.capture.ring_size);
    if !ring.is_power_of_two() || ring % 4096 != 0 || ring > 1 << 30 {
        bail!(
            "capture.ring_size (--ring-size) = {ring}: expected a power of two, a multiple of 4096, at most 1 GiB"
        );
    }
    if args.capture.poll_ms == 0 || args.capture.poll_ms > 10_000 {
        bail!(
            "capture.poll_ms (--poll-ms) = {}: expected 1 to 10000",
            args.capture.poll_ms
        );
    }
    if args.window < Duration::from_secs(1) || args.window > Duration::from_secs(3600) {
        bail!(
            "batch.window (--window) = {:?}: expected 1s to 1h",
            args.window
        );
    }
    if args.journal_sync.is_zero() || args.journal_sync > Duration::from_secs(60) {
        bail!(
            "journal.sync (--journal-sync) = {:?}: expected more than 0 and at most 60s",
            args.journal_sync
        );
    }
    if args.spool_max_bytes < 1 << 20 {
        bail!(
            "spool.max_bytes (--spool-max-bytes) = {}: expected at least 1 MiB",
            args.spool_max_bytes
        );
    }
    if args.retry_max_backoff < Duration::from_millis(500) {
        bail!(
            "sink.retry_max_backoff (--retry-max-backoff) = {:?}: expected at least 500ms",
            args.retry_max_backoff
        );
    }
    if let Some(url) = &args.collector
        && let Err(reason) = check_collector(url)
    {
        return Err(ConfigError::InvalidValue {
            key: "sink.collector",
            flag: "--collector",
            value: shown(url),
            reason,
        }
        .into());
    }
    if let Some(host) = &args.host_id
        && let Err(reason) = check_host_id(host)
    {
        return Err(ConfigError::InvalidValue {
            key: "sink.host_id",
            flag: "--host-id",
            value: shown(host),
            reason,
        }
        .into());
    }
    if args.client_cert.is_some() != args.client_key.is_some() {
        bail!(
            "sink.client_cert and sink.client_key (--client-cert, --client-key): give both or neither"
        );
    }
    args.kafka.target()?;
    args.exports.targets()?;
    Ok(())
}

/// A value for an error message: quoted and escaped (no control character reaches the
/// terminal), and cut after 64 characters.
pub(crate) fn shown(value: &str) -> String {
    const SHOWN: usize = 64;
    match value.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{:?}... ({} bytes)", &value[..cut], value.len()),
        None => format!("{value:?}"),
    }
}

/// The first control character of `value` and its byte offset, if any.
fn control_character(value: &str) -> Option<(usize, char)> {
    value.char_indices().find(|(_, c)| c.is_control())
}

/// Checks a collector URL the way the collector sink will use it: `http://` or
/// `https://`, then a host (a name, an IPv4 address or a bracketed IPv6 address), an
/// optional port, an optional path. Returns what is wrong.
fn check_collector(url: &str) -> Result<(), String> {
    const EXPECTED: &str =
        "expected an http:// or https:// URL with a host, such as http://collector.example:9000";
    if let Some((at, c)) = url
        .char_indices()
        .find(|(_, c)| c.is_control() || c.is_whitespace())
    {
        return Err(format!(
            "it contains {} (U+{:04X}) at byte {at}; {EXPECTED}",
            if c.is_control() {
                "a control character"
            } else {
                "white space"
            },
            u32::from(c)
        ));
    }
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return Err(EXPECTED.into());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Credentials (`user:password@`) are the sink's business; the host follows them.
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match host_port.strip_prefix('[') {
        Some(bracketed) => {
            let Some((v6, after)) = bracketed.split_once(']') else {
                return Err(format!("the host has an unclosed '['; {EXPECTED}"));
            };
            if v6.parse::<Ipv6Addr>().is_err() {
                return Err(format!("[{v6}] is not an IPv6 address; {EXPECTED}"));
            }
            let port = match after {
                "" => None,
                _ => match after.strip_prefix(':') {
                    Some(port) => Some(port),
                    None => return Err(format!("unexpected {after:?} after the host; {EXPECTED}")),
                },
            };
            (v6, port)
        }
        None => match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    if host.is_empty() {
        return Err(format!("the URL has no host; {EXPECTED}"));
    }
    if !host_port.starts_with('[')
        && let Some(c) = host.chars().find(|c| "<>[]\\^|:".contains(*c))
    {
        return Err(format!("the host {host:?} contains {c:?}; {EXPECTED}"));
    }
    if let Some(port) = port
        && !port.is_empty()
        && port.parse::<u16>().is_err()
    {
        return Err(format!(
            "the port {port:?} is not a number from 0 to 65535; {EXPECTED}"
        ));
    }
    // What the sink itself will refuse when it starts (an invalid IPv4 address, a
    // character not allowed in a host name, ...): the same parser, asked now.
    if let Err(e) = flow_sink::collector_sink::chunk_url(url) {
        let reason = match &e {
            flow_sink::SinkError::InvalidConfig { reason, .. } => (*reason).to_string(),
            other => other.to_string(),
        };
        return Err(format!(
            "the collector sink refuses it: {reason}; {EXPECTED}"
        ));
    }
    Ok(())
}

/// Checks a host ID: it names this host in every chunk header (wire format: 1 to
/// `MAX_HOST_LEN` bytes of UTF-8) and in logs, so it may not be empty, too long, or
/// hold control characters.
fn check_host_id(host: &str) -> Result<(), String> {
    use flow_batch::wire::MAX_HOST_LEN;
    if host.is_empty() {
        return Err(format!(
            "empty; expected 1 to {MAX_HOST_LEN} bytes naming this host (or no host_id, for the hostname)"
        ));
    }
    if host.len() > MAX_HOST_LEN {
        return Err(format!(
            "{} bytes long; the wire format allows at most {MAX_HOST_LEN}",
            host.len()
        ));
    }
    if let Some((at, c)) = control_character(host) {
        return Err(format!(
            "it contains the control character U+{:04X} at byte {at}; expected printable text",
            u32::from(c)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_parses() {
        let file: FileConfig = toml::from_str(EXAMPLE).expect("the example is valid");
        assert_eq!(file.capture.ring_size, Some(4 << 20));
        assert_eq!(file.batch.window.as_deref(), Some("60s"));
    }

    #[test]
    fn the_packaged_configuration_is_the_example_with_the_service_user() {
        let packaged = include_str!("../../../packaging/deb/flowexporter/config.toml");
        let body = packaged
            .find("# flowexporter configuration (TOML).")
            .map(|at| &packaged[at..])
            .expect("the example's first line in the packaged file");
        let want = EXAMPLE.replace(
            "# user = \"flowexporter\"      # run as this user once the kernel program is loaded",
            "user = \"flowexporter\"        # run as this user once the kernel program is loaded (created by the package)",
        );
        assert_eq!(
            body, want,
            "regenerate packaging/deb/flowexporter/config.toml from EXAMPLE"
        );
        let file: FileConfig = toml::from_str(packaged).expect("the packaged file is valid");
        let _ = file;
    }

    #[test]
    fn collector_urls_need_a_scheme_and_a_host() {
        for good in [
            "http://collector:9000",
            "https://collector.example",
            "http://127.0.0.1:9000/base/",
            "https://[::1]:9443",
            "http://user:secret@collector:80/x?y#z",
            "http://collector:",
        ] {
            assert_eq!(check_collector(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("http://", "no host"),
            ("https://", "no host"),
            ("http:///v1", "no host"),
            ("http://:9000", "no host"),
            ("http://user@/x", "no host"),
            ("http://?x", "no host"),
            ("collector:9000", "expected an http:// or https:// URL"),
            ("ftp://collector", "expected an http:// or https:// URL"),
            ("http://[::1", "unclosed"),
            ("http://[nope]:80", "not an IPv6 address"),
            ("http://[::1]x", "after the host"),
            ("http://a:b:80", "contains ':'"),
            ("http://host:99999", "port"),
            ("http://host:http", "port"),
            ("http://col lector", "white space"),
            ("http://collector\u{1b}[2J", "control character"),
            ("http://1.2.3.256", "invalid IPv4 address"),
            ("http://exa%mple", "invalid international domain name"),
            ("http://1.2.3.256:9000/v1", "the collector sink refuses it"),
        ] {
            let err = check_collector(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn host_ids_fit_the_wire_format() {
        use flow_batch::wire::MAX_HOST_LEN;
        assert_eq!(check_host_id("web-17"), Ok(()));
        assert_eq!(check_host_id(&"h".repeat(MAX_HOST_LEN)), Ok(()));
        assert!(check_host_id("").expect_err("empty").contains("empty"));
        let err = check_host_id(&"h".repeat(2000)).expect_err("long");
        assert!(err.contains("2000 bytes") && err.contains("1024"), "{err}");
        let err = check_host_id("web\u{1b}17").expect_err("ESC");
        assert!(err.contains("U+001B at byte 3"), "{err}");
        assert!(check_host_id("web\n17").is_err());
        assert!(check_host_id("web\u{85}").is_err());
        // Shown shortened and escaped in the error.
        let shown = shown(&"h".repeat(2000));
        assert!(shown.len() < 100 && shown.contains("2000 bytes"), "{shown}");
        assert_eq!(super::shown("a\u{1b}b"), "\"a\\u{1b}b\"");
    }

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fe-config-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        dir.join(name)
    }

    #[test]
    fn reading_is_bounded_to_regular_files() {
        let path = temp_path("bounded.toml");
        std::fs::write(&path, "x".repeat(100)).expect("write");
        assert_eq!(read_bounded(&path, 100).expect("at the limit").len(), 100);
        let err = read_bounded(&path, 99).expect_err("over the limit");
        assert!(
            matches!(err, ConfigError::FileTooLarge { limit: 99, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("bounded.toml"), "{err}");

        let fifo = temp_path("fifo.toml");
        let _ = std::fs::remove_file(&fifo);
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: `c` is a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // No writer: a blocking open would wait forever.
        let err = read_bounded(&fifo, MAX_CONFIG_BYTES).expect_err("FIFO");
        assert!(
            matches!(err, ConfigError::NotRegularFile { kind: "FIFO", .. }),
            "{err}"
        );
        let err = read_bounded(&std::env::temp_dir(), MAX_CONFIG_BYTES).expect_err("dir");
        assert!(err.to_string().contains("directory"), "{err}");
        // The null device is the usual "no file"; other devices are refused.
        assert_eq!(read_bounded(Path::new("/dev/null"), 1).expect("null"), "");
        let err = read_bounded(Path::new("/dev/zero"), MAX_CONFIG_BYTES).expect_err("zero");
        assert!(err.to_string().contains("character device"), "{err}");

        std::fs::write(&path, [b'a', 0xff]).expect("write");
        let err = read_bounded(&path, MAX_CONFIG_BYTES).expect_err("not UTF-8");
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
        let _ = std::fs::remove_file(&fifo);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_named() {
        let err = toml::from_str::<FileConfig>("[batch]\nwindoww = \"5s\"\n").expect_err("unknown");
        assert!(err.to_string().contains("windoww"), "{err}");
        let err =
            toml::from_str::<FileConfig>("[capture]\nring_size = \"big\"\n").expect_err("type");
        let text = err.to_string();
        assert!(
            text.contains("ring_size") || text.contains("capture"),
            "{text}"
        );
        assert!(duration("batch.window", "soon").is_err());
    }
}
