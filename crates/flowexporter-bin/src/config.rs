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
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use clap::{ArgMatches, FromArgMatches, parser::ValueSource};
use flow_sink::{ClientTls, RetryPolicy};
use serde::Deserialize;

use crate::cli::{CertField, Cli, Command, LogFormat, RunArgs};

/// Where the configuration is read from when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/flowexporter/config.toml";

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

[sink]
# collector = "http://collector.example:9000"   # without it: JSON lines on stdout
# host_id = "web-17"         # default: the hostname
retry_max_backoff = "60s"
# collector_ca = "/etc/flowexporter/collector-ca.pem"
# client_cert = "/etc/flowexporter/host.pem"
# client_key = "/etc/flowexporter/host.key"

[spool]
dir = "/var/lib/flowexporter/spool"
max_bytes = 1073741824       # past it the oldest chunks are dropped (and counted)

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
    capture: CaptureSection,
    #[serde(default)]
    identity: IdentitySection,
    #[serde(default)]
    batch: BatchSection,
    #[serde(default)]
    sink: SinkSection,
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
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the configuration file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("configuration file {}", path.display()))
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

/// Whether the argument `id` came from its built-in default (so a file may set it).
fn defaulted(m: &ArgMatches, id: &str) -> bool {
    matches!(m.value_source(id), None | Some(ValueSource::DefaultValue))
}

/// Fills every option that neither a flag nor its environment variable set from the
/// file.
fn apply(config: &mut RunConfig, file: FileConfig, m: &ArgMatches) -> anyhow::Result<()> {
    macro_rules! set {
        ($id:literal, $field:expr, $value:expr) => {
            if defaulted(m, $id)
                && let Some(v) = $value
            {
                $field = v;
            }
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

    /// The collector sink's retry policy.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default().with_max_backoff(self.retry_max_backoff)
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
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        bail!("sink.collector (--collector) = {url:?}: expected an http:// or https:// URL");
    }
    if args.client_cert.is_some() != args.client_key.is_some() {
        bail!(
            "sink.client_cert and sink.client_key (--client-cert, --client-key): give both or neither"
        );
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
