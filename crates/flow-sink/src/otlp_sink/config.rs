//! The sink's settings: [`OtlpSinkConfig`], and the endpoint rule.

use std::{path::PathBuf, time::Duration};

use flow_batch::wire::InstanceId;

use super::encode::Compression;
use crate::{
    ClientTls,
    collector_sink::{DEFAULT_MEMORY_MAX_BYTES, DEFAULT_MEMORY_MAX_CHUNKS},
    error::SinkError,
    retry::RetryPolicy,
    spool::SpoolConfig,
};

/// The path of OTLP/HTTP's logs endpoint.
pub const LOGS_PATH: &str = "/v1/logs";

/// The default [`max_request_bytes`](OtlpSinkConfig::max_request_bytes): 4 MiB, under
/// the OpenTelemetry Collector's default body limit (20 MiB) and most vendors'
/// (4 to 5 MB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4 << 20;

/// Settings of an [`OtlpSink`](super::OtlpSink).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct OtlpSinkConfig {
    /// The receiver: an `http://` or `https://` URL. Used as it is when its path ends
    /// in `/v1/logs`, else `/v1/logs` is appended to its path (OTLP's rule for a base
    /// URL): see [`logs_url`].
    pub endpoint: String,
    /// Headers sent with every request (authentication, tenant), in order.
    pub headers: Vec<(String, String)>,
    /// How request bodies are compressed. Default gzip.
    pub compression: Compression,
    /// Most bytes of one request's protobuf, before compression: a chunk whose
    /// records take more is sent as several requests, each a whole
    /// `ExportLogsServiceRequest` (a record larger alone is sent alone). Default
    /// [`DEFAULT_MAX_REQUEST_BYTES`] (4 MiB); at least 1.
    pub max_request_bytes: usize,
    /// The host identity written into every frame: `host.id` of the resource.
    pub host: String,
    /// The host's name for `host.name` of the resource; left out when `None`
    /// (the default).
    pub host_name: Option<String>,
    /// `service.version` of the resource and the scope's version. Default this
    /// crate's version (the workspace's).
    pub service_version: String,
    /// This exporter run (a new one per start: see [`InstanceId::random`]);
    /// `service.instance.id` of the resource.
    pub instance: InstanceId,
    /// Time allowed to connect. Default 5 s.
    pub connect_timeout: Duration,
    /// Time allowed for a whole request, answer included. Default 30 s.
    pub request_timeout: Duration,
    /// TLS settings for an `https://` endpoint (CA, client certificate and key).
    pub tls: ClientTls,
    /// Backoff between attempts.
    pub retry: RetryPolicy,
    /// The spool directory; `None` sends without one (the caller waits, see
    /// [`CollectorSink`](crate::CollectorSink)'s docs on sending without a spool).
    pub spool_dir: Option<PathBuf>,
    /// The spool's limits.
    pub spool: SpoolConfig,
    /// Longest [`flush`](crate::FlowSink::flush) waits for the spool to drain.
    /// Default 30 s.
    pub flush_timeout: Duration,
    /// Most frame bytes kept in memory when the spool cannot take them. Default 64 MiB.
    pub memory_max_bytes: u64,
    /// Most frames kept in memory when the spool cannot take them. Default 1,024.
    pub memory_max_chunks: usize,
    /// Shortest time between two log lines about a receiver's partial success
    /// (log records it rejected). Default 60 s.
    pub error_log_interval: Duration,
}

impl OtlpSinkConfig {
    /// Defaults for sending to `endpoint` as `host`, run `instance`, without a spool.
    pub fn new(
        endpoint: impl Into<String>,
        host: impl Into<String>,
        instance: InstanceId,
    ) -> OtlpSinkConfig {
        OtlpSinkConfig {
            endpoint: endpoint.into(),
            headers: Vec::new(),
            compression: Compression::Gzip,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            host: host.into(),
            host_name: None,
            service_version: env!("CARGO_PKG_VERSION").to_owned(),
            instance,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            tls: ClientTls::default(),
            retry: RetryPolicy::default(),
            spool_dir: None,
            spool: SpoolConfig::default(),
            flush_timeout: Duration::from_secs(30),
            memory_max_bytes: DEFAULT_MEMORY_MAX_BYTES,
            memory_max_chunks: DEFAULT_MEMORY_MAX_CHUNKS,
            error_log_interval: Duration::from_secs(60),
        }
    }

    /// Adds a header sent with every request.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets [`compression`](OtlpSinkConfig::compression).
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Sets [`max_request_bytes`](OtlpSinkConfig::max_request_bytes).
    pub fn with_max_request_bytes(mut self, bytes: usize) -> Self {
        self.max_request_bytes = bytes;
        self
    }

    /// Sets [`host_name`](OtlpSinkConfig::host_name).
    pub fn with_host_name(mut self, name: impl Into<String>) -> Self {
        self.host_name = Some(name.into());
        self
    }

    /// Sets [`tls`](OtlpSinkConfig::tls).
    pub fn with_tls(mut self, tls: ClientTls) -> Self {
        self.tls = tls;
        self
    }

    /// Sets [`connect_timeout`](OtlpSinkConfig::connect_timeout) and
    /// [`request_timeout`](OtlpSinkConfig::request_timeout).
    pub fn with_timeouts(mut self, connect: Duration, request: Duration) -> Self {
        self.connect_timeout = connect;
        self.request_timeout = request;
        self
    }

    /// Sets [`spool_dir`](OtlpSinkConfig::spool_dir).
    pub fn with_spool_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spool_dir = Some(dir.into());
        self
    }

    /// Sets [`spool`](OtlpSinkConfig::spool).
    pub fn with_spool(mut self, spool: SpoolConfig) -> Self {
        self.spool = spool;
        self
    }

    /// Sets [`retry`](OtlpSinkConfig::retry).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets [`flush_timeout`](OtlpSinkConfig::flush_timeout).
    pub fn with_flush_timeout(mut self, d: Duration) -> Self {
        self.flush_timeout = d;
        self
    }

    /// Sets [`memory_max_bytes`](OtlpSinkConfig::memory_max_bytes) and
    /// [`memory_max_chunks`](OtlpSinkConfig::memory_max_chunks).
    pub fn with_memory_queue(mut self, max_bytes: u64, max_chunks: usize) -> Self {
        self.memory_max_bytes = max_bytes;
        self.memory_max_chunks = max_chunks;
        self
    }

    /// Sets [`error_log_interval`](OtlpSinkConfig::error_log_interval).
    pub fn with_error_log_interval(mut self, d: Duration) -> Self {
        self.error_log_interval = d;
        self
    }
}

/// The URL requests go to for `endpoint`: `endpoint` itself when its path ends in
/// [`LOGS_PATH`], else with `/v1/logs` appended to its path (`http://h:4318` and
/// `http://h:4318/` give `http://h:4318/v1/logs`, `https://h/otlp` gives
/// `https://h/otlp/v1/logs`). Refused unless it is an `http` or `https` URL with a
/// host, without credentials or a fragment. A configuration check can call it to
/// refuse exactly what [`OtlpSink::start`](super::OtlpSink::start) would refuse.
pub fn logs_url(endpoint: &str) -> Result<String, SinkError> {
    let invalid = |reason| SinkError::InvalidConfig {
        key: "otlp endpoint",
        value: endpoint.to_owned(),
        reason,
    };
    let mut url = reqwest::Url::parse(endpoint).map_err(|_| invalid("is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("must be an http:// or https:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "may not hold credentials (send them in a header instead)",
        ));
    }
    if url.fragment().is_some() {
        return Err(invalid("may not have a fragment"));
    }
    if !url.path().ends_with(LOGS_PATH) {
        let path = format!("{}{LOGS_PATH}", url.path().trim_end_matches('/'));
        url.set_path(&path);
    }
    Ok(url.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_logs_path_is_appended_to_a_base_url_and_kept_on_a_full_one() {
        for (given, sent) in [
            ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/logs"),
            ("http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/logs"),
            (
                "https://otel.example/otlp",
                "https://otel.example/otlp/v1/logs",
            ),
            (
                "https://otel.example/otlp/",
                "https://otel.example/otlp/v1/logs",
            ),
            ("http://h:4318/v1/logs", "http://h:4318/v1/logs"),
            ("http://h/custom/v1/logs", "http://h/custom/v1/logs"),
            ("http://h:4318?tenant=a", "http://h:4318/v1/logs?tenant=a"),
        ] {
            assert_eq!(logs_url(given).expect(given), sent, "{given}");
        }
        for (bad, why) in [
            ("", "not a URL"),
            ("otel:4318", "http://"),
            ("ftp://h/", "http://"),
            ("http://u:p@h/", "credentials"),
            ("http://h/#x", "fragment"),
        ] {
            let error = logs_url(bad).expect_err(bad).to_string();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }
}
