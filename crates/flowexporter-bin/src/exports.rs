//! The standard exports of `run`: every record as an OpenTelemetry log record to an
//! OTLP/HTTP endpoint (`--otlp-endpoint`, `docs/otlp.md`), and as IPFIX to a flow
//! collector (`--ipfix-collector`, `docs/ipfix.md`). Their flags, their sections of
//! the configuration file (`[otlp]`, `[ipfix]`), their checks, and their sinks, each
//! spooling in a subdirectory of the spool directory of its own.

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::{Context, bail};
use clap::{ArgMatches, Args, ValueEnum};
use flow_batch::wire::InstanceId;
use flow_sink::{
    ClientTls, IpfixCollector, IpfixSink, IpfixSinkConfig, OtlpSink, OtlpSinkConfig, RetryPolicy,
    SpoolConfig, ipfix_sink::DEFAULT_ENTERPRISE_NUMBER, otlp_sink::Compression,
};
use serde::Deserialize;

use crate::{
    config::{ConfigError, fill, shown},
    otlp_headers::{self, Source},
};

/// The subdirectory of `spool.dir` the OTLP sink spools in.
pub const OTLP_SPOOL_SUBDIR: &str = "otlp";
/// The subdirectory of `spool.dir` the IPFIX sink spools in.
pub const IPFIX_SPOOL_SUBDIR: &str = "ipfix";

/// The export options of `flowexporter run`.
#[derive(Clone, Debug, Args)]
pub struct ExportArgs {
    /// Send every record as an OpenTelemetry log record to this OTLP/HTTP endpoint
    /// (protobuf, one request per chunk; e.g. http://otel-collector:4318: `/v1/logs`
    /// is appended unless the URL ends with it). Spooled in the spool directory's
    /// subdirectory `otlp`.
    #[arg(long, env = "FLOWEXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// A header sent with every OTLP request, NAME=VALUE (repeatable), e.g.
    /// `authorization=Bearer TOKEN`. Without the flag: FLOWEXPORTER_OTLP_HEADERS (a
    /// comma-separated list, values percent-decoded), else the file's
    /// `[otlp] headers`. Values are never logged or shown in errors; credentials are
    /// better kept in --otlp-headers-file.
    #[arg(long = "otlp-header", value_name = "NAME=VALUE")]
    pub otlp_headers: Vec<String>,
    /// A file of NAME=VALUE lines (blank lines and `#` comments skipped), headers sent
    /// with every OTLP request besides the listed ones: credentials kept out of the
    /// world-readable configuration (e.g. mode 0640, root:flowexporter). Read at start
    /// and on SIGHUP (so readable by --user).
    #[arg(long, env = "FLOWEXPORTER_OTLP_HEADERS_FILE", value_name = "FILE")]
    pub otlp_headers_file: Option<PathBuf>,
    /// Compression of the OTLP requests.
    #[arg(
        long,
        env = "FLOWEXPORTER_OTLP_COMPRESSION",
        value_enum,
        default_value = "gzip"
    )]
    pub otlp_compression: OtlpCompression,
    /// CA certificate (PEM) to trust for an https OTLP endpoint (default: the
    /// system's).
    #[arg(long, env = "FLOWEXPORTER_OTLP_CA")]
    pub otlp_ca: Option<PathBuf>,
    /// Export every record as IPFIX (RFC 7011) to this collector: udp://HOST:PORT or
    /// tcp://HOST:PORT. Spooled in the spool directory's subdirectory `ipfix`.
    #[arg(long, env = "FLOWEXPORTER_IPFIX_COLLECTOR", value_name = "URL")]
    pub ipfix_collector: Option<String>,
    /// The IANA Private Enterprise Number flowexporter's own IPFIX elements (identity,
    /// TCP statistics, process) are exported under. The default, 32473, is RFC 5612's
    /// number for documentation: set your organisation's where collectors are shared.
    #[arg(long, env = "FLOWEXPORTER_IPFIX_ENTERPRISE_NUMBER", default_value_t = DEFAULT_ENTERPRISE_NUMBER)]
    pub ipfix_enterprise_number: u32,
}

/// `--otlp-compression`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpCompression {
    /// gzip (`Content-Encoding: gzip`).
    Gzip,
    /// Uncompressed.
    None,
}

/// The `[otlp]` table of the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpSection {
    endpoint: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    headers_file: Option<PathBuf>,
    compression: Option<OtlpCompression>,
    ca: Option<PathBuf>,
}

/// The `[ipfix]` table of the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpfixSection {
    collector: Option<String>,
    enterprise_number: Option<u32>,
}

/// Fills every export option that neither a flag nor its variable set from the file.
pub fn apply(args: &mut ExportArgs, otlp: OtlpSection, ipfix: IpfixSection, m: &ArgMatches) {
    fill(
        m,
        "otlp_endpoint",
        &mut args.otlp_endpoint,
        otlp.endpoint.map(Some),
    );
    // The flag, else the variable, else the file (the variable is read here, not by
    // clap, so that a comma never splits a flag's value and clap never shows a value).
    let from_env = std::env::var(otlp_headers::HEADERS_ENV)
        .ok()
        .map(|v| otlp_headers::from_env(&v));
    let from_file = otlp
        .headers
        .map(|h| h.into_iter().map(|(k, v)| format!("{k}={v}")).collect());
    fill(
        m,
        "otlp_headers",
        &mut args.otlp_headers,
        from_env.or(from_file),
    );
    fill(
        m,
        "otlp_headers_file",
        &mut args.otlp_headers_file,
        otlp.headers_file.map(Some),
    );
    fill(
        m,
        "otlp_compression",
        &mut args.otlp_compression,
        otlp.compression,
    );
    fill(m, "otlp_ca", &mut args.otlp_ca, otlp.ca.map(Some));
    fill(
        m,
        "ipfix_collector",
        &mut args.ipfix_collector,
        ipfix.collector.map(Some),
    );
    fill(
        m,
        "ipfix_enterprise_number",
        &mut args.ipfix_enterprise_number,
        ipfix.enterprise_number,
    );
}

/// What `run` exports to, checked.
#[derive(Clone, Debug, Default)]
pub struct Targets {
    /// The OTLP endpoint as given, with its headers.
    pub otlp: Option<OtlpTarget>,
    /// The IPFIX collector.
    pub ipfix: Option<IpfixCollector>,
}

/// `--otlp-endpoint` and its headers, checked.
#[derive(Clone, Debug)]
pub struct OtlpTarget {
    /// The endpoint as given (checked: `/v1/logs` is appended when missing).
    pub endpoint: String,
    /// `(name, value)` pairs.
    pub headers: Vec<(String, String)>,
}

impl ExportArgs {
    /// The export targets, refusing a malformed URL or header, naming the key and the
    /// flag.
    pub fn targets(&self) -> anyhow::Result<Targets> {
        let otlp = match &self.otlp_endpoint {
            Some(endpoint) => {
                flow_sink::otlp_sink::logs_url(endpoint).map_err(|e| {
                    ConfigError::InvalidValue {
                        key: "otlp.endpoint",
                        flag: "--otlp-endpoint",
                        value: shown(endpoint),
                        reason: flow_sink::error_chain(&e),
                    }
                })?;
                let mut headers = self
                    .otlp_headers
                    .iter()
                    .enumerate()
                    .map(|(i, h)| otlp_headers::parse(h, Source::Listed, i + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                if let Some(path) = &self.otlp_headers_file {
                    for (i, h) in otlp_headers::read_file(path)?.iter().enumerate() {
                        headers.push(otlp_headers::parse(h, Source::File, i + 1)?);
                    }
                }
                Some(OtlpTarget {
                    endpoint: endpoint.clone(),
                    headers,
                })
            }
            None => {
                if !self.otlp_headers.is_empty()
                    || self.otlp_headers_file.is_some()
                    || self.otlp_ca.is_some()
                {
                    bail!(
                        "otlp.headers, otlp.headers_file or otlp.ca (--otlp-header, --otlp-headers-file, --otlp-ca) is set but otlp.endpoint (--otlp-endpoint) is not: give the endpoint, or remove them"
                    );
                }
                None
            }
        };
        let ipfix = self
            .ipfix_collector
            .as_deref()
            .map(|url| {
                IpfixCollector::parse(url).map_err(|e| ConfigError::InvalidValue {
                    key: "ipfix.collector",
                    flag: "--ipfix-collector",
                    value: shown(url),
                    reason: e.to_string(),
                })
            })
            .transpose()?;
        let pen = self.ipfix_enterprise_number;
        if pen == 0 || pen == flow_sink::ipfix_sink::REVERSE_PEN {
            return Err(ConfigError::InvalidValue {
                key: "ipfix.enterprise_number",
                flag: "--ipfix-enterprise-number",
                value: pen.to_string(),
                reason: format!(
                    "0 is IANA's own elements and {} RFC 5103's reverse elements: give your organisation's Private Enterprise Number",
                    flow_sink::ipfix_sink::REVERSE_PEN
                ),
            }
            .into());
        }
        Ok(Targets { otlp, ipfix })
    }

    /// The OTLP sink's TLS settings (the system's roots unless `--otlp-ca`).
    pub fn otlp_tls(&self) -> ClientTls {
        match &self.otlp_ca {
            Some(ca) => ClientTls::default().with_ca_file(ca),
            None => ClientTls::default(),
        }
    }

    /// The header names (never their values: they may be secrets), for logs.
    pub fn otlp_header_names(&self) -> String {
        let names: Vec<&str> = self
            .otlp_headers
            .iter()
            .map(|h| h.split_once('=').map_or(h.as_str(), |(n, _)| n))
            .collect();
        names.join(",")
    }
}

/// What the export sinks are started with besides their targets.
pub struct Common<'a> {
    /// The host ID of every chunk.
    pub host: &'a str,
    /// This run.
    pub instance: InstanceId,
    /// The spool directory (each sink spools in its subdirectory).
    pub spool_dir: &'a std::path::Path,
    /// The spool's limits.
    pub spool: SpoolConfig,
    /// Backoff between attempts.
    pub retry: RetryPolicy,
    /// Longest a flush waits when stopping.
    pub flush_timeout: std::time::Duration,
}

/// The OTLP sink, when there is an endpoint.
pub fn otlp_sink(
    args: &ExportArgs,
    target: Option<OtlpTarget>,
    common: &Common<'_>,
) -> anyhow::Result<Option<OtlpSink>> {
    let Some(target) = target else {
        return Ok(None);
    };
    let mut config = OtlpSinkConfig::new(target.endpoint, common.host, common.instance)
        .with_compression(match args.otlp_compression {
            OtlpCompression::Gzip => Compression::Gzip,
            OtlpCompression::None => Compression::None,
        })
        .with_host_name(flowexporter::host_name())
        .with_tls(args.otlp_tls())
        .with_spool_dir(common.spool_dir.join(OTLP_SPOOL_SUBDIR))
        .with_spool(common.spool.clone())
        .with_retry(common.retry.clone())
        .with_flush_timeout(common.flush_timeout);
    for (name, value) in target.headers {
        config = config.with_header(name, value);
    }
    OtlpSink::start(config)
        .map(Some)
        .context("starting the OTLP sink")
}

/// The IPFIX sink, when there is a collector.
pub fn ipfix_sink(
    args: &ExportArgs,
    target: Option<IpfixCollector>,
    common: &Common<'_>,
) -> anyhow::Result<Option<IpfixSink>> {
    let Some(collector) = target else {
        return Ok(None);
    };
    let config = IpfixSinkConfig::new(collector, common.host, common.instance)
        .with_enterprise_number(args.ipfix_enterprise_number)
        .with_spool_dir(common.spool_dir.join(IPFIX_SPOOL_SUBDIR))
        .with_spool(common.spool.clone())
        .with_retry(common.retry.clone())
        .with_flush_timeout(common.flush_timeout);
    IpfixSink::start(config)
        .map(Some)
        .context("starting the IPFIX sink")
}
