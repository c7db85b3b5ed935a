//! The collector's settings.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use flow_batch::wire::DecodeLimits;
use flow_http::ConnectionLimits;

use crate::{FaultInjection, ServerTls};

/// Settings of a [`FlowCollector`](crate::FlowCollector).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CollectorOptions {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The JSON-lines file records are appended to (created if missing).
    pub out: PathBuf,
    /// Limits for decoding frames.
    pub limits: DecodeLimits,
    /// Largest request body accepted (413 above). Default 64 MiB + 64 KiB.
    pub max_body_bytes: usize,
    /// `fdatasync` the output before acknowledging a chunk (default true).
    pub sync: bool,
    /// Serve HTTPS (optionally requiring client certificates) instead of HTTP.
    pub tls: Option<ServerTls>,
    /// Misbehaviour for tests.
    pub faults: FaultInjection,
    /// Connections open at once; one more is closed as soon as it is accepted.
    /// Default 1024.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, counted from when the collector
    /// waits for them: also the longest a keep-alive connection stays idle between
    /// requests. Default 30 s.
    pub header_read_timeout: Duration,
    /// A connection on which nothing was read or written for this long, while no
    /// request is being handled, is closed. Default 30 s.
    pub idle_timeout: Duration,
    /// Time a client has to send a whole request body once its headers arrived (`408`
    /// after it). Default 30 s, the exporter's own default request timeout.
    pub body_read_timeout: Duration,
}

impl CollectorOptions {
    /// Defaults: listen on `listen`, write to `out`.
    pub fn new(listen: SocketAddr, out: impl Into<PathBuf>) -> CollectorOptions {
        CollectorOptions {
            listen,
            out: out.into(),
            limits: DecodeLimits::default(),
            max_body_bytes: (64 << 20) + (64 << 10),
            sync: true,
            tls: None,
            faults: FaultInjection::default(),
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
        }
    }

    /// Sets [`max_connections`](CollectorOptions::max_connections) (at least 1).
    pub fn with_max_connections(mut self, max: usize) -> CollectorOptions {
        self.max_connections = max.max(1);
        self
    }

    /// Sets [`header_read_timeout`](CollectorOptions::header_read_timeout).
    pub fn with_header_read_timeout(mut self, timeout: Duration) -> CollectorOptions {
        self.header_read_timeout = timeout;
        self
    }

    /// Sets [`idle_timeout`](CollectorOptions::idle_timeout).
    pub fn with_idle_timeout(mut self, timeout: Duration) -> CollectorOptions {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`body_read_timeout`](CollectorOptions::body_read_timeout).
    pub fn with_body_read_timeout(mut self, timeout: Duration) -> CollectorOptions {
        self.body_read_timeout = timeout;
        self
    }

    pub(crate) fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits::new(
            self.max_connections,
            self.header_read_timeout,
            self.idle_timeout,
        )
    }

    /// Sets [`tls`](CollectorOptions::tls).
    pub fn with_tls(mut self, tls: ServerTls) -> CollectorOptions {
        self.tls = Some(tls);
        self
    }

    /// Sets [`faults`](CollectorOptions::faults).
    pub fn with_faults(mut self, faults: FaultInjection) -> CollectorOptions {
        self.faults = faults;
        self
    }

    /// Sets [`max_body_bytes`](CollectorOptions::max_body_bytes).
    pub fn with_max_body_bytes(mut self, max: usize) -> CollectorOptions {
        self.max_body_bytes = max;
        self
    }

    /// Sets [`sync`](CollectorOptions::sync).
    pub fn with_sync(mut self, sync: bool) -> CollectorOptions {
        self.sync = sync;
        self
    }
}
