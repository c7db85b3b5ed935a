//! The sink's settings: [`IpfixSinkConfig`], and the collector's address
//! ([`IpfixCollector`], parsed from `udp://HOST:PORT` or `tcp://HOST:PORT`).

use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

use flow_batch::wire::InstanceId;

use super::encode::MAX_MESSAGE_LEN;
use crate::{
    collector_sink::{DEFAULT_MEMORY_MAX_BYTES, DEFAULT_MEMORY_MAX_CHUNKS},
    error::SinkError,
    retry::RetryPolicy,
    spool::SpoolConfig,
};

/// Default of [`IpfixSinkConfig::enterprise_number`]: 32473, the Private Enterprise
/// Number RFC 5612 reserves for documentation. The project has no number of its own;
/// see `docs/ipfix.md` for why this default and when to set your own.
pub const DEFAULT_ENTERPRISE_NUMBER: u32 = 32473;

/// Default of [`IpfixSinkConfig::max_message_bytes`] over UDP: 1,400 bytes, a message
/// that fits an Ethernet MTU of 1,500 with the IPv6 and UDP headers (RFC 7011
/// §10.3.3: no IP fragmentation).
pub const DEFAULT_UDP_MESSAGE_BYTES: usize = 1400;

/// Default of [`IpfixSinkConfig::max_message_bytes`] over TCP: the largest message
/// IPFIX allows, 65,535 bytes.
pub const DEFAULT_TCP_MESSAGE_BYTES: usize = MAX_MESSAGE_LEN;

/// The transport of IPFIX messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IpfixProtocol {
    /// UDP (RFC 7011 §10.3): one message per datagram, templates sent again
    /// periodically.
    Udp,
    /// TCP (RFC 7011 §10.4): one connection, templates at its start.
    Tcp,
}

impl IpfixProtocol {
    /// `udp` or `tcp`, as in the URL.
    pub fn as_str(self) -> &'static str {
        match self {
            IpfixProtocol::Udp => "udp",
            IpfixProtocol::Tcp => "tcp",
        }
    }
}

/// Where the messages go: a collector's transport, host and port, from
/// `udp://HOST:PORT` or `tcp://HOST:PORT` (`HOST` a name, resolved at each connect, an
/// IPv4 address, or an IPv6 address in brackets: `udp://[::1]:4739`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IpfixCollector {
    /// UDP or TCP.
    pub protocol: IpfixProtocol,
    /// The host: a name or an address (an IPv6 address without its brackets).
    pub host: String,
    /// The port (IANA's IPFIX port is 4739).
    pub port: u16,
}

/// What is wrong with a collector URL ([`IpfixCollector::parse`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpfixUrlError {
    /// No `udp://` or `tcp://` in front.
    #[error("IPFIX collector {url:?} has no scheme: write udp://HOST:PORT or tcp://HOST:PORT")]
    MissingScheme {
        /// The URL as given.
        url: String,
    },
    /// A scheme other than `udp` and `tcp`.
    #[error("IPFIX collector {url:?}: scheme {scheme:?} is not supported (udp or tcp)")]
    UnsupportedScheme {
        /// The URL as given.
        url: String,
        /// The scheme found.
        scheme: String,
    },
    /// No host before the port.
    #[error("IPFIX collector {url:?} has no host")]
    MissingHost {
        /// The URL as given.
        url: String,
    },
    /// No `:PORT` after the host.
    #[error("IPFIX collector {url:?} has no port (IPFIX's is 4739: udp://HOST:4739)")]
    MissingPort {
        /// The URL as given.
        url: String,
    },
    /// The port is not a number from 1 to 65535.
    #[error("IPFIX collector {url:?}: port {port:?} is not a number from 1 to 65535")]
    InvalidPort {
        /// The URL as given.
        url: String,
        /// The port text found.
        port: String,
    },
    /// Something the URL may not hold: a path, a query, user information, an IPv6
    /// address without brackets, a bracket that does not close.
    #[error("IPFIX collector {url:?}: {what}")]
    Malformed {
        /// The URL as given.
        url: String,
        /// What is wrong.
        what: &'static str,
    },
}

impl From<IpfixUrlError> for SinkError {
    fn from(error: IpfixUrlError) -> SinkError {
        let (url, reason) = match &error {
            IpfixUrlError::MissingScheme { url } => {
                (url, "has no scheme: udp://HOST:PORT or tcp://HOST:PORT")
            }
            IpfixUrlError::UnsupportedScheme { url, .. } => (url, "the scheme must be udp or tcp"),
            IpfixUrlError::MissingHost { url } => (url, "has no host"),
            IpfixUrlError::MissingPort { url } => (url, "has no port"),
            IpfixUrlError::InvalidPort { url, .. } => {
                (url, "the port must be a number from 1 to 65535")
            }
            IpfixUrlError::Malformed { url, what } => (url, *what),
        };
        SinkError::InvalidConfig {
            key: "ipfix collector",
            value: format!("{url:?}"),
            reason,
        }
    }
}

impl IpfixCollector {
    /// Parses `udp://HOST:PORT` or `tcp://HOST:PORT`; the error names what is wrong.
    pub fn parse(url: &str) -> Result<IpfixCollector, IpfixUrlError> {
        let owned = || url.to_owned();
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(IpfixUrlError::MissingScheme { url: owned() });
        };
        let protocol = match scheme.to_ascii_lowercase().as_str() {
            "udp" => IpfixProtocol::Udp,
            "tcp" => IpfixProtocol::Tcp,
            _ => {
                return Err(IpfixUrlError::UnsupportedScheme {
                    url: owned(),
                    scheme: scheme.to_owned(),
                });
            }
        };
        let malformed = |what| IpfixUrlError::Malformed { url: owned(), what };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err(malformed("a collector URL has no path, query or fragment"));
        }
        if rest.contains('@') {
            return Err(malformed("a collector URL has no user information"));
        }
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let Some((host, after)) = bracketed.split_once(']') else {
                return Err(malformed("the IPv6 address's '[' has no ']'"));
            };
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(malformed("the host in brackets is not an IPv6 address"));
            }
            let port = match after.strip_prefix(':') {
                Some(port) => Some(port),
                None if after.is_empty() => None,
                None => return Err(malformed("only ':PORT' may follow the IPv6 address")),
            };
            (host, port)
        } else {
            match rest.split_once(':') {
                Some((host, port)) => {
                    if port.contains(':') {
                        return Err(malformed(
                            "an IPv6 address goes in brackets: udp://[::1]:4739",
                        ));
                    }
                    (host, Some(port))
                }
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(IpfixUrlError::MissingHost { url: owned() });
        }
        if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(malformed("the host holds a space or a control character"));
        }
        let Some(port) = port.filter(|p| !p.is_empty()) else {
            return Err(IpfixUrlError::MissingPort { url: owned() });
        };
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => p,
            _ => {
                return Err(IpfixUrlError::InvalidPort {
                    url: owned(),
                    port: port.to_owned(),
                });
            }
        };
        Ok(IpfixCollector {
            protocol,
            host: host.to_owned(),
            port,
        })
    }
}

impl FromStr for IpfixCollector {
    type Err = IpfixUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IpfixCollector::parse(s)
    }
}

/// `udp://HOST:PORT` or `tcp://HOST:PORT` (an IPv6 address in brackets).
impl fmt::Display for IpfixCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(
                f,
                "{}://[{}]:{}",
                self.protocol.as_str(),
                self.host,
                self.port
            )
        } else {
            write!(
                f,
                "{}://{}:{}",
                self.protocol.as_str(),
                self.host,
                self.port
            )
        }
    }
}

/// Settings of an [`IpfixSink`](super::IpfixSink).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct IpfixSinkConfig {
    /// Where the messages go.
    pub collector: IpfixCollector,
    /// The host identity written into every spooled frame (and, unless
    /// [`observation_domain_id`](IpfixSinkConfig::observation_domain_id) is set, what
    /// the observation domain is derived from).
    pub host: String,
    /// This exporter run (a new one per start: see [`InstanceId::random`]).
    pub instance: InstanceId,
    /// Backoff between attempts.
    pub retry: RetryPolicy,
    /// The spool directory; `None` exports without one (the caller waits, see
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
    /// Shortest time between two log lines about failed attempts (an outage fails
    /// every attempt). Default 60 s.
    pub error_log_interval: Duration,
    /// The Private Enterprise Number our own elements are exported under. Default
    /// [`DEFAULT_ENTERPRISE_NUMBER`] (32473, RFC 5612's documentation number); set the
    /// number your organisation registered with IANA where collectors are shared.
    pub enterprise_number: u32,
    /// The observation domain ID of every message; `None` (the default) derives it
    /// from each frame's host ID
    /// ([`observation_domain_for`](super::observation_domain_for)), so every exporter
    /// host is its own domain.
    pub observation_domain_id: Option<u32>,
    /// Largest message, bytes ([`MIN_MESSAGE_BYTES`](super::MIN_MESSAGE_BYTES) to
    /// 65,535). Default [`DEFAULT_UDP_MESSAGE_BYTES`] over UDP (one datagram, no IP
    /// fragments), [`DEFAULT_TCP_MESSAGE_BYTES`] over TCP.
    pub max_message_bytes: usize,
    /// UDP: the templates are sent again once this long has passed since they were
    /// last sent (before the next message), so that a collector that started (or
    /// restarted) since decodes what follows. Default 60 s. Not used over TCP, where
    /// they are sent once at the start of each connection.
    pub template_refresh_interval: Duration,
    /// UDP: the templates are also sent again after this many data messages; 0 (the
    /// default) for the interval alone.
    pub template_refresh_messages: u32,
    /// TCP: longest a connection attempt (name resolution included) takes before the
    /// attempt fails and is retried. Default 10 s. UDP: longest the name resolution
    /// takes.
    pub connect_timeout: Duration,
    /// Longest one frame's messages take to leave: to be written and, over TCP,
    /// acknowledged by the collector's host. A collector that stops reading fails the
    /// attempt after this long (the connection is dropped and the frame retried).
    /// Default 30 s.
    pub write_timeout: Duration,
}

impl IpfixSinkConfig {
    /// Defaults for exporting to `collector` as `host`, run `instance`, without a
    /// spool.
    pub fn new(
        collector: IpfixCollector,
        host: impl Into<String>,
        instance: InstanceId,
    ) -> IpfixSinkConfig {
        let max_message_bytes = match collector.protocol {
            IpfixProtocol::Udp => DEFAULT_UDP_MESSAGE_BYTES,
            IpfixProtocol::Tcp => DEFAULT_TCP_MESSAGE_BYTES,
        };
        IpfixSinkConfig {
            collector,
            host: host.into(),
            instance,
            retry: RetryPolicy::default(),
            spool_dir: None,
            spool: SpoolConfig::default(),
            flush_timeout: Duration::from_secs(30),
            memory_max_bytes: DEFAULT_MEMORY_MAX_BYTES,
            memory_max_chunks: DEFAULT_MEMORY_MAX_CHUNKS,
            error_log_interval: Duration::from_secs(60),
            enterprise_number: DEFAULT_ENTERPRISE_NUMBER,
            observation_domain_id: None,
            max_message_bytes,
            template_refresh_interval: Duration::from_secs(60),
            template_refresh_messages: 0,
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
        }
    }

    /// [`new`](IpfixSinkConfig::new) with the collector parsed from `url`
    /// (`udp://HOST:PORT` or `tcp://HOST:PORT`).
    pub fn from_url(
        url: &str,
        host: impl Into<String>,
        instance: InstanceId,
    ) -> Result<IpfixSinkConfig, IpfixUrlError> {
        Ok(IpfixSinkConfig::new(
            IpfixCollector::parse(url)?,
            host,
            instance,
        ))
    }

    /// Sets [`spool_dir`](IpfixSinkConfig::spool_dir).
    pub fn with_spool_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spool_dir = Some(dir.into());
        self
    }

    /// Sets [`spool`](IpfixSinkConfig::spool).
    pub fn with_spool(mut self, spool: SpoolConfig) -> Self {
        self.spool = spool;
        self
    }

    /// Sets [`retry`](IpfixSinkConfig::retry).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets [`flush_timeout`](IpfixSinkConfig::flush_timeout).
    pub fn with_flush_timeout(mut self, d: Duration) -> Self {
        self.flush_timeout = d;
        self
    }

    /// Sets [`memory_max_bytes`](IpfixSinkConfig::memory_max_bytes) and
    /// [`memory_max_chunks`](IpfixSinkConfig::memory_max_chunks).
    pub fn with_memory_queue(mut self, max_bytes: u64, max_chunks: usize) -> Self {
        self.memory_max_bytes = max_bytes;
        self.memory_max_chunks = max_chunks;
        self
    }

    /// Sets [`error_log_interval`](IpfixSinkConfig::error_log_interval).
    pub fn with_error_log_interval(mut self, d: Duration) -> Self {
        self.error_log_interval = d;
        self
    }

    /// Sets [`enterprise_number`](IpfixSinkConfig::enterprise_number).
    pub fn with_enterprise_number(mut self, pen: u32) -> Self {
        self.enterprise_number = pen;
        self
    }

    /// Sets [`observation_domain_id`](IpfixSinkConfig::observation_domain_id).
    pub fn with_observation_domain_id(mut self, id: u32) -> Self {
        self.observation_domain_id = Some(id);
        self
    }

    /// Sets [`max_message_bytes`](IpfixSinkConfig::max_message_bytes).
    pub fn with_max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// Sets [`template_refresh_interval`](IpfixSinkConfig::template_refresh_interval)
    /// and [`template_refresh_messages`](IpfixSinkConfig::template_refresh_messages).
    pub fn with_template_refresh(mut self, interval: Duration, messages: u32) -> Self {
        self.template_refresh_interval = interval;
        self.template_refresh_messages = messages;
        self
    }

    /// Sets [`connect_timeout`](IpfixSinkConfig::connect_timeout) and
    /// [`write_timeout`](IpfixSinkConfig::write_timeout).
    pub fn with_timeouts(mut self, connect: Duration, write: Duration) -> Self {
        self.connect_timeout = connect;
        self.write_timeout = write;
        self
    }

    /// Checks what [`IpfixSink::start`](super::IpfixSink::start) checks.
    pub fn validate(&self) -> Result<(), SinkError> {
        self.retry.validate()?;
        let positive = |key, d: Duration| {
            if d.is_zero() {
                Err(SinkError::InvalidConfig {
                    key,
                    value: format!("{d:?}"),
                    reason: "must be more than zero",
                })
            } else {
                Ok(())
            }
        };
        positive(
            "ipfix template_refresh_interval",
            self.template_refresh_interval,
        )?;
        positive("ipfix connect_timeout", self.connect_timeout)?;
        positive("ipfix write_timeout", self.write_timeout)?;
        // The encoder checks the message size and the enterprise number.
        super::encode::IpfixEncoder::new(self.enterprise_number, self.max_message_bytes)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_urls_parse() {
        let c = IpfixCollector::parse("udp://127.0.0.1:4739").expect("udp");
        assert_eq!(
            (c.protocol, c.host.as_str(), c.port),
            (IpfixProtocol::Udp, "127.0.0.1", 4739)
        );
        let c = IpfixCollector::parse("TCP://[::1]:9995/").expect("tcp v6");
        assert_eq!(
            (c.protocol, c.host.as_str(), c.port),
            (IpfixProtocol::Tcp, "::1", 9995)
        );
        assert_eq!(c.to_string(), "tcp://[::1]:9995");
        let c: IpfixCollector = "udp://collector.example:4739".parse().expect("name");
        assert_eq!(c.host, "collector.example");
    }

    #[test]
    fn bad_collector_urls_say_what_is_wrong() {
        for (url, why) in [
            ("127.0.0.1:4739", "no scheme"),
            ("http://c:4739", "not supported"),
            ("udp://:4739", "no host"),
            ("udp://c", "no port"),
            ("udp://c:", "no port"),
            ("udp://c:0", "not a number from 1"),
            ("udp://c:65536", "not a number from 1"),
            ("udp://c:+12", "not a number from 1"),
            ("udp://c:47x", "not a number from 1"),
            ("udp://::1:4739", "brackets"),
            ("udp://[::1:4739", "no ']'"),
            ("udp://[nothost]:4739", "not an IPv6"),
            ("udp://[::1]x:4739", "only ':PORT'"),
            ("udp://[::1]", "no port"),
            ("udp://c:4739/path", "no path"),
            ("udp://u@c:4739", "user information"),
            ("udp://c c:4739", "space"),
        ] {
            let error = IpfixCollector::parse(url).expect_err(url).to_string();
            assert!(error.contains(why), "{url}: {error}");
            let sink_error = SinkError::from(IpfixCollector::parse(url).expect_err(url));
            assert!(
                sink_error.to_string().contains("ipfix collector"),
                "{sink_error}"
            );
        }
    }
}
