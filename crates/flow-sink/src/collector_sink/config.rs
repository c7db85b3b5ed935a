//! The sink's settings: [`CollectorConfig`], [`ClientTls`], and the check of the
//! collector URL.

use std::{path::PathBuf, time::Duration};

use flow_batch::wire::InstanceId;

use super::{CHUNKS_PATH, DEFAULT_MEMORY_MAX_BYTES, DEFAULT_MEMORY_MAX_CHUNKS};
use crate::{error::SinkError, retry::RetryPolicy, spool::SpoolConfig};

/// TLS settings of a collector sink. Without a `ca_file` the server is verified
/// against the bundled Mozilla roots; with one, against that file's certificates only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientTls {
    /// PEM file of the CA certificate(s) that signed the collector's certificate.
    pub ca_file: Option<PathBuf>,
    /// PEM file of this host's certificate (chain), for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// PEM file of that certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub client_key: Option<PathBuf>,
}

impl ClientTls {
    /// Verify the collector with the CA certificate(s) in `path`.
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> ClientTls {
        self.ca_file = Some(path.into());
        self
    }

    /// Present the certificate in `cert` with the key in `key` (mutual TLS), e.g. the
    /// host's identity certificate.
    pub fn with_client_identity(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> ClientTls {
        self.client_cert = Some(cert.into());
        self.client_key = Some(key.into());
        self
    }
}

/// Settings of a [`CollectorSink`](super::CollectorSink).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CollectorConfig {
    /// The collector: `http://` or `https://`; the path defaults to [`CHUNKS_PATH`].
    pub url: String,
    /// The host identity written into every frame.
    pub host: String,
    /// This exporter run (a new one per start: see [`InstanceId::random`]).
    pub instance: InstanceId,
    /// Time allowed to connect. Default 5 s.
    pub connect_timeout: Duration,
    /// Time allowed for a whole request, answer included. Default 30 s.
    pub request_timeout: Duration,
    /// Backoff between attempts.
    pub retry: RetryPolicy,
    /// The spool directory; `None` sends without one (see the module docs).
    pub spool_dir: Option<PathBuf>,
    /// The spool's limits.
    pub spool: SpoolConfig,
    /// TLS settings for `https://` URLs.
    pub tls: ClientTls,
    /// Longest [`flush`](crate::FlowSink::flush) waits for the spool to drain.
    /// Default 30 s.
    pub flush_timeout: Duration,
    /// Most frame bytes kept in memory when the spool cannot take them (see the
    /// [module docs](super#when-the-spool-cannot-take-a-chunk)). Default 64 MiB.
    pub memory_max_bytes: u64,
    /// Most frames kept in memory when the spool cannot take them. Default 1,024.
    pub memory_max_chunks: usize,
}

impl CollectorConfig {
    /// Defaults for sending to `url` as `host`, run `instance`, without a spool.
    pub fn new(url: impl Into<String>, host: impl Into<String>, instance: InstanceId) -> Self {
        CollectorConfig {
            url: url.into(),
            host: host.into(),
            instance,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            spool_dir: None,
            spool: SpoolConfig::default(),
            tls: ClientTls::default(),
            flush_timeout: Duration::from_secs(30),
            memory_max_bytes: DEFAULT_MEMORY_MAX_BYTES,
            memory_max_chunks: DEFAULT_MEMORY_MAX_CHUNKS,
        }
    }

    /// Sets [`spool_dir`](CollectorConfig::spool_dir).
    pub fn with_spool_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spool_dir = Some(dir.into());
        self
    }

    /// Sets [`spool`](CollectorConfig::spool).
    pub fn with_spool(mut self, spool: SpoolConfig) -> Self {
        self.spool = spool;
        self
    }

    /// Sets [`retry`](CollectorConfig::retry).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets [`connect_timeout`](CollectorConfig::connect_timeout).
    pub fn with_connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Sets [`request_timeout`](CollectorConfig::request_timeout).
    pub fn with_request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// Sets [`tls`](CollectorConfig::tls).
    pub fn with_tls(mut self, tls: ClientTls) -> Self {
        self.tls = tls;
        self
    }

    /// Sets [`flush_timeout`](CollectorConfig::flush_timeout).
    pub fn with_flush_timeout(mut self, d: Duration) -> Self {
        self.flush_timeout = d;
        self
    }

    /// Sets [`memory_max_bytes`](CollectorConfig::memory_max_bytes) and
    /// [`memory_max_chunks`](CollectorConfig::memory_max_chunks).
    pub fn with_memory_queue(mut self, max_bytes: u64, max_chunks: usize) -> Self {
        self.memory_max_bytes = max_bytes;
        self.memory_max_chunks = max_chunks;
        self
    }
}

/// Checks a collector URL as [`CollectorSink::start`](super::CollectorSink::start) does, and returns the URL
/// chunks are posted to: `url` parsed (an `http` or `https` URL with a host), with the
/// default path `/v1/chunks` filled in when it has none. A configuration check can
/// call it to refuse exactly what `start` would refuse.
pub fn chunk_url(url: &str) -> Result<String, SinkError> {
    let invalid = |reason| SinkError::InvalidConfig {
        key: "collector url",
        value: url.to_owned(),
        reason,
    };
    let mut parsed = reqwest::Url::parse(url).map_err(|e| invalid(parse_failure(&e)))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if parsed.host_str().is_none() {
        return Err(invalid("no host"));
    }
    if parsed.path() == "/" || parsed.path().is_empty() {
        parsed.set_path(CHUNKS_PATH);
    }
    Ok(parsed.into())
}

/// Why a URL did not parse, as a static text: the parser's own message when it is
/// one of those known, else a generic one.
fn parse_failure(error: &impl std::fmt::Display) -> &'static str {
    const KNOWN: [&str; 9] = [
        "invalid IPv4 address",
        "invalid IPv6 address",
        "invalid international domain name",
        "invalid domain character",
        "invalid port number",
        "empty host",
        "relative URL without a base",
        "relative URL with a cannot-be-a-base base",
        "URLs more than 4 GB are not supported",
    ];
    let text = error.to_string();
    KNOWN
        .into_iter()
        .find(|k| text == *k)
        .unwrap_or("not a URL")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_gets_the_default_path() {
        assert_eq!(
            chunk_url("http://127.0.0.1:9000").expect("url"),
            "http://127.0.0.1:9000/v1/chunks"
        );
        assert_eq!(
            chunk_url("https://collector.example/ingest").expect("url"),
            "https://collector.example/ingest"
        );
        assert!(chunk_url("ftp://x/").is_err());
        assert!(chunk_url("not a url").is_err());
        for (bad, why) in [
            ("http://1.2.3.256", "invalid IPv4 address"),
            ("http://exa%mple", "invalid international domain name"),
        ] {
            let err = chunk_url(bad).expect_err(bad).to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
