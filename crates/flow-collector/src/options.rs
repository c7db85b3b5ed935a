//! The collector's settings.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use flow_batch::wire::DecodeLimits;
use flow_http::ConnectionLimits;

use crate::{
    FaultInjection, ServerTls, attribution::AttributionConfig, completeness::CompletenessConfig,
    graph::GraphConfig, ledger::LedgerConfig, output::Rotation,
};

/// Settings of a [`FlowCollector`](crate::FlowCollector).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CollectorOptions {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The JSON-lines file attributed flows are appended to (created if missing).
    pub out: PathBuf,
    /// When the output file is rotated (default: never).
    pub rotation: Rotation,
    /// The directory of the ledger: the chunks accepted (synced before they are
    /// acknowledged) and the checkpoint of what was written out. Default: the output
    /// file's path with `.state` appended.
    pub state_dir: PathBuf,
    /// The ledger's settings (`sync` follows [`sync`](CollectorOptions::sync)).
    pub ledger: LedgerConfig,
    /// How flows are attributed: hold-back, retention, static owners.
    pub attribution: AttributionConfig,
    /// How exporter windows are checked for completeness: the grace for missing
    /// chunks, how long reported windows are remembered.
    pub completeness: CompletenessConfig,
    /// The dependency graph served at `GET /api/v1/graph` (`docs/graph.md`): its
    /// retention (default 6 hours), the edges kept per node and minute (default 50)
    /// and in all (default 500,000).
    pub graph: GraphConfig,
    /// How often the output is synced and the checkpoint written (default 1 s). A
    /// crash repeats at most the flows written in the last interval, and only if the
    /// output cannot tell which it holds.
    pub commit_interval: Duration,
    /// At shutdown, the longest to wait for held-back flows to be decided; what is
    /// still held then goes out unattributed with reason `shutdown`. `None` (the
    /// default): the hold-back plus 5 s, so that nothing needs to; see
    /// [`CollectorOptions::drain_timeout()`].
    pub drain_timeout: Option<Duration>,
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
    /// With an output that acknowledges its writes later (Kafka), the longest a chunk's
    /// answer waits for the acknowledgement of every flow written before it; then the
    /// answer is `503` (the chunk is stored: the retry is answered `duplicate` once
    /// the flows are acknowledged). Default 10 s, under the exporter's request timeout.
    pub output_ack_timeout: Duration,
    /// Kafka: flows out, heartbeats shared with the other nodes, chunks in
    /// (`docs/kafka.md`). Default: none.
    #[cfg(feature = "kafka")]
    pub kafka: Option<crate::kafka::KafkaOptions>,
}

impl CollectorOptions {
    /// Defaults: listen on `listen`, write to `out`.
    pub fn new(listen: SocketAddr, out: impl Into<PathBuf>) -> CollectorOptions {
        let out: PathBuf = out.into();
        let mut state_dir = out.clone().into_os_string();
        state_dir.push(".state");
        let attribution = AttributionConfig::default();
        CollectorOptions {
            listen,
            drain_timeout: None,
            attribution,
            completeness: CompletenessConfig::default(),
            graph: GraphConfig::default(),
            out,
            rotation: Rotation::default(),
            state_dir: state_dir.into(),
            ledger: LedgerConfig::default(),
            commit_interval: Duration::from_secs(1),
            limits: DecodeLimits::default(),
            max_body_bytes: (64 << 20) + (64 << 10),
            sync: true,
            tls: None,
            faults: FaultInjection::default(),
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            output_ack_timeout: Duration::from_secs(10),
            #[cfg(feature = "kafka")]
            kafka: None,
        }
    }

    /// Sets [`kafka`](CollectorOptions::kafka).
    #[cfg(feature = "kafka")]
    pub fn with_kafka(mut self, kafka: crate::kafka::KafkaOptions) -> CollectorOptions {
        self.kafka = Some(kafka);
        self
    }

    /// The drain timeout in force: the one set, or the hold-back plus 5 s.
    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout
            .unwrap_or(self.attribution.hold_back + Duration::from_secs(5))
    }

    /// Sets [`attribution`](CollectorOptions::attribution).
    pub fn with_attribution(mut self, attribution: AttributionConfig) -> CollectorOptions {
        self.attribution = attribution;
        self
    }

    /// Sets the hold-back (and the peer wait) of [`attribution`](CollectorOptions::attribution)
    /// (the default drain timeout follows it). Tests that read the output right after
    /// a delivery set zero: every flow is then decided as it arrives.
    pub fn with_hold_back(self, hold_back: Duration) -> CollectorOptions {
        let attribution = self.attribution.clone().with_hold_back(hold_back);
        self.with_attribution(attribution)
    }

    /// Sets [`completeness`](CollectorOptions::completeness).
    pub fn with_completeness(mut self, completeness: CompletenessConfig) -> CollectorOptions {
        self.completeness = completeness;
        self
    }

    /// Sets [`graph`](CollectorOptions::graph).
    pub fn with_graph(mut self, graph: GraphConfig) -> CollectorOptions {
        self.graph = graph;
        self
    }

    /// Sets [`state_dir`](CollectorOptions::state_dir).
    pub fn with_state_dir(mut self, dir: impl Into<PathBuf>) -> CollectorOptions {
        self.state_dir = dir.into();
        self
    }

    /// Sets [`rotation`](CollectorOptions::rotation).
    pub fn with_rotation(mut self, rotation: Rotation) -> CollectorOptions {
        self.rotation = rotation;
        self
    }

    /// Sets [`commit_interval`](CollectorOptions::commit_interval).
    pub fn with_commit_interval(mut self, interval: Duration) -> CollectorOptions {
        self.commit_interval = interval;
        self
    }

    /// Sets [`drain_timeout`](CollectorOptions::drain_timeout).
    pub fn with_drain_timeout(mut self, timeout: Duration) -> CollectorOptions {
        self.drain_timeout = Some(timeout);
        self
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
