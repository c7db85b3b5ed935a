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

use crate::config::{ConfigError, fill, shown};

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
    /// A header sent with every OTLP request, NAME=VALUE (repeatable; the variable
    /// takes a comma-separated list), e.g. `authorization=Bearer TOKEN`.
    #[arg(
        long = "otlp-header",
        env = "FLOWEXPORTER_OTLP_HEADERS",
        value_name = "NAME=VALUE",
        value_delimiter = ','
    )]
    pub otlp_headers: Vec<String>,
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
    let headers = otlp
        .headers
        .map(|h| h.into_iter().map(|(k, v)| format!("{k}={v}")).collect());
    fill(m, "otlp_headers", &mut args.otlp_headers, headers);
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
                let headers = self
                    .otlp_headers
                    .iter()
                    .map(|h| header(h))
                    .collect::<Result<_, _>>()?;
                Some(OtlpTarget {
                    endpoint: endpoint.clone(),
                    headers,
                })
            }
            None => {
                if !self.otlp_headers.is_empty() || self.otlp_ca.is_some() {
                    bail!(
                        "otlp.headers or otlp.ca (--otlp-header, --otlp-ca) is set but otlp.endpoint (--otlp-endpoint) is not: give the endpoint, or remove them"
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

/// One `NAME=VALUE` header: a token name and a value without control characters.
fn header(text: &str) -> Result<(String, String), ConfigError> {
    let invalid = |reason: &str| ConfigError::InvalidValue {
        key: "otlp.headers",
        flag: "--otlp-header",
        // The name only: the value may be a secret.
        value: shown(text.split_once('=').map_or(text, |(n, _)| n)),
        reason: reason.to_owned(),
    };
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| invalid("expected NAME=VALUE"))?;
    let name = name.trim();
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(invalid(
            "the name must be an HTTP token (letters, digits, -_.)",
        ));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(invalid("the value holds a control character"));
    }
    Ok((name.to_owned(), value.trim().to_owned()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_is_a_token_name_and_a_value() {
        assert_eq!(
            header("authorization=Bearer a=b").ok(),
            Some(("authorization".into(), "Bearer a=b".into()))
        );
        for bad in ["no-equals", "=value", "bad name=v", "x=a\nb"] {
            let error = header(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                error.starts_with("otlp.headers (--otlp-header)"),
                "{bad}: {error}"
            );
        }
        // A refused header never shows its value.
        let error = header("x=sec\nret")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!error.contains("sec"), "{error}");
    }
}
