//! The flowexporter collector: an HTTP server that receives the exporters' chunk
//! frames, verifies them, stores each once (durably, before acknowledging it), and
//! attributes the remote side of every flow from the heartbeats every record carries
//! (`docs/attribution.md`); attributed flows go to a [`FlowOutput`],
//! by default JSON lines in [`CollectorOptions::out`] (`docs/collector-output.md`).
//!
//! The `flowcollector` binary of this crate runs it; the exporter's tests use it as
//! their peer over loopback (with a zero hold-back, so a chunk's flows are written
//! before it is acknowledged), with [`FaultInjection`] to make it fail, lose
//! acknowledgements or answer slowly.
//!
//! ```
//! use flow_collector::{CollectorOptions, FlowCollector};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let options = CollectorOptions::new("127.0.0.1:0".parse()?, dir.path().join("flows.jsonl"));
//! let collector = FlowCollector::start(options).await?;
//! // Point a `flow_sink::CollectorSink` at this URL.
//! assert!(collector.url().ends_with("/v1/chunks"));
//! collector.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Answers (see `docs/collector-protocol.md`): `200` with
//! `Flowexporter-Result: accepted` for a chunk stored in the ledger and `duplicate`
//! for a batch ID already stored (before or after a restart); `400` for a frame that
//! breaks a decoding rule of `docs/wire-format.md` (nothing of it is stored, its batch
//! ID is not remembered); `404` for another path; `405` for another method; `413` for
//! a body over the limit; `415` for another content type; `408` for a body that does
//! not arrive within [`CollectorOptions::body_read_timeout`]; `503` when the ledger
//! cannot store the chunk (a full disk) or too many decided flows wait for a failing
//! output. Each answer's body is one line of text saying why. `GET /metrics` answers
//! with the metrics.
//!
//! Connections are served by `flow_http`: at most
//! [`CollectorOptions::max_connections`] at once, closed after
//! [`CollectorOptions::header_read_timeout`] without a request's headers and after
//! [`CollectorOptions::idle_timeout`] without traffic; a failing `accept` (out of file
//! descriptors) makes it wait and go on.
//!
//! Deduplication is durable: a chunk's batch ID is written with it in the ledger
//! ([`CollectorOptions::state_dir`]), and every checkpoint carries the whole set, so
//! a chunk retried across a restart or a crash is answered `duplicate`. After a crash
//! the ledger is replayed through the attributor and only flows the output does not
//! hold are written.
//!
//! Every exporter window's records are counted against the completeness its last
//! chunk carries, and one completeness record per window goes to the output too
//! ([`completeness`], `docs/collector-output.md`).
//!
//! The modules: [`attribution`] (the sans-IO engine), [`completeness`] (the sans-IO
//! window tracker), [`ledger`] (durable chunks,
//! durable deduplication, the checkpoint), [`output`] (the [`FlowOutput`]
//! trait and the JSON-lines file), the pipeline that ties them (pipeline), the
//! request handler (handler), the connection loop (server), the metrics (metrics),
//! [`CollectorOptions`] (options), [`FaultInjection`] (faults), [`ServerTls`] (tls) and
//! [`CollectorStats`] (stats).

pub mod attribution;
pub mod completeness;
pub mod connections;
mod error;
mod faults;
pub mod graph;
mod handler;
#[cfg(feature = "kafka")]
pub mod kafka;
mod kafka_runtime;
pub mod ledger;
mod metrics;
mod options;
pub mod output;
mod page;
mod pipeline;
mod server;
mod stats;
mod tls;

use std::{
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use flow_batch::wire::CHUNKS_PATH;
use flow_http::ConnectionCounters;
use tokio::sync::watch;

pub use error::{CollectorError, error_chain};
pub use faults::FaultInjection;
pub use options::CollectorOptions;
pub use pipeline::RecoveryLosses;
pub use stats::{CollectorStats, PartsSnapshot};
pub use tls::ServerTls;

use crate::{
    attribution::Attributor,
    ledger::Ledger,
    output::{Acknowledgements, FlowOutput, JsonLinesOutput},
    pipeline::Pipeline,
    stats::Stats,
};

/// How often held-back flows are looked at, the output written and (every
/// [`CollectorOptions::commit_interval`]) committed.
pub const TICK: Duration = Duration::from_millis(250);

/// This machine's host name (`/proc/sys/kernel/hostname`, read once, at most 256
/// bytes); empty when it cannot be read. Names the node in graph answers and in its
/// default Kafka node ID.
pub(crate) fn host_name() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        let mut name = String::new();
        let read = std::fs::File::open("/proc/sys/kernel/hostname").and_then(|f| {
            use std::io::Read;
            f.take(256).read_to_string(&mut name)
        });
        match read {
            Ok(_) => name.trim().to_owned(),
            Err(_) => String::new(),
        }
    })
}

/// What the connection tasks share.
struct State {
    options: CollectorOptions,
    faults: Mutex<FaultInjection>,
    /// Used on the blocking pool only.
    pipeline: Mutex<Pipeline>,
    /// The dependency graph the pipeline feeds and `GET /api/v1/graph` reads.
    graph: Arc<graph::SharedGraph>,
    stats: Stats,
    connections: Arc<ConnectionCounters>,
    /// The output's acknowledgement book, when a chunk's answer waits for it (Kafka).
    acks: Option<Acknowledgements>,
    /// The Kafka parts running (heartbeats, input), if any.
    kafka: Option<kafka_runtime::KafkaRuntime>,
    /// Graph queries answered at once ([`handler::GRAPH_QUERIES`]): more are
    /// refused (`503`) rather than queued on the blocking pool the pipeline runs on.
    graph_queries: tokio::sync::Semaphore,
}

impl State {
    /// What the attributor (the attributing half's, when records are routed by
    /// connection), the ledger and the output hold now.
    async fn parts(self: &Arc<State>) -> PartsSnapshot {
        let mut parts = self
            .with_pipeline(|p, _| p.snapshot())
            .await
            .unwrap_or_default();
        if self.kafka.is_none() {
            return parts;
        }
        let state = Arc::clone(self);
        let stage = tokio::task::spawn_blocking(move || {
            state
                .kafka
                .as_ref()
                .and_then(kafka_runtime::KafkaRuntime::attribution_stats)
        })
        .await
        .ok()
        .flatten();
        if let Some(stage) = stage {
            // The attributing half decides; the intake publishes the heartbeats.
            let intake = parts.attribution;
            parts.attribution = crate::attribution::AttributionStats {
                heartbeats_shared_out: intake.heartbeats_shared_out,
                heartbeat_ranges_shared_out: intake.heartbeat_ranges_shared_out,
                heartbeat_book_entries: intake.heartbeat_book_entries,
                ..stage
            };
        }
        parts
    }

    /// Runs `f` on the pipeline, on the blocking pool.
    async fn with_pipeline<T: Send + 'static>(
        self: &Arc<State>,
        f: impl FnOnce(&mut Pipeline, &Stats) -> T + Send + 'static,
    ) -> Option<T> {
        let state = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut pipeline = state.pipeline.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut pipeline, &state.stats)
        })
        .await
        .ok()
    }
}

/// A running collector.
pub struct FlowCollector {
    local_addr: SocketAddr,
    state: Arc<State>,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    ticker: tokio::task::JoinHandle<()>,
}

impl Drop for FlowCollector {
    /// A collector dropped without [`shutdown`](FlowCollector::shutdown) stops its
    /// Kafka threads (they hold the state; nothing else would end them).
    fn drop(&mut self) {
        if let Some(kafka) = &self.state.kafka {
            kafka.signal_stop();
        }
    }
}

impl std::fmt::Debug for FlowCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowCollector")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl FlowCollector {
    /// Opens the ledger and the output, replays what the ledger holds (flows not yet
    /// written are decided and written again), binds the address and starts serving
    /// in background tasks.
    pub async fn start(options: CollectorOptions) -> Result<FlowCollector, CollectorError> {
        FlowCollector::start_inner(options, None).await
    }

    /// Like [`start`](FlowCollector::start), with attributed flows going to `output`
    /// instead of the JSON-lines file [`CollectorOptions::out`] (which is then not
    /// opened): a database, a message bus, your own format. The ledger and the
    /// checkpoint work the same; after a crash `output` is asked
    /// ([`FlowOutput::written_since`]) which flows it already holds.
    pub async fn start_with_output(
        options: CollectorOptions,
        output: Box<dyn FlowOutput>,
    ) -> Result<FlowCollector, CollectorError> {
        FlowCollector::start_inner(options, Some(output)).await
    }

    async fn start_inner(
        options: CollectorOptions,
        output: Option<Box<dyn FlowOutput>>,
    ) -> Result<FlowCollector, CollectorError> {
        let acceptor = options.tls.as_ref().map(ServerTls::acceptor).transpose()?;
        let prepared = {
            let options = options.clone();
            tokio::task::spawn_blocking(move || kafka_runtime::prepare(&options))
                .await
                .map_err(|e| CollectorError::Startup(e.to_string()))??
        };
        let (output, prepared) = kafka_runtime::output(prepared, output);
        let (opened, stats, mut prepared) = {
            let options = options.clone();
            tokio::task::spawn_blocking(move || {
                let stats = Stats::default();
                let mut attribution = options.attribution.clone();
                attribution.share_heartbeats |= kafka_runtime::shares_heartbeats(&prepared);
                attribution.route_only = kafka_runtime::routes_connections(&prepared);
                let mut attributor = Attributor::new(attribution);
                let prepared = kafka_runtime::rebuild(prepared, &mut attributor)?;
                open_pipeline(&options, output, attributor, &stats).map(|p| (p, stats, prepared))
            })
            .await
            .map_err(|e| CollectorError::Startup(e.to_string()))??
        };
        let acks = opened.output_acknowledgements();
        let bind_error = |source| CollectorError::Bind {
            addr: options.listen,
            source,
        };
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let state = Arc::new(State {
            faults: Mutex::new(options.faults.clone()),
            graph: opened.graph(),
            pipeline: Mutex::new(opened),
            options,
            stats,
            connections: Arc::new(ConnectionCounters::default()),
            acks,
            kafka: prepared.as_mut().map(kafka_runtime::KafkaStart::runtime),
            graph_queries: tokio::sync::Semaphore::new(handler::GRAPH_QUERIES),
        });
        if let Some(prepared) = prepared {
            prepared.run(&state)?;
        }
        let (shutdown, rx) = watch::channel(false);
        let server = tokio::spawn(server::serve(listener, acceptor, Arc::clone(&state), rx));
        let ticker = tokio::spawn(tick_forever(Arc::clone(&state)));
        tracing::info!(addr = %local_addr, out = %state.options.out.display(),
            state_dir = %state.options.state_dir.display(), "collector listening");
        Ok(FlowCollector {
            local_addr,
            state,
            shutdown,
            server,
            ticker,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL a sink posts chunks to.
    pub fn url(&self) -> String {
        let scheme = if self.state.options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}{CHUNKS_PATH}", self.local_addr)
    }

    /// The output file.
    pub fn out(&self) -> &Path {
        &self.state.options.out
    }

    /// A snapshot of what it has done.
    pub fn stats(&self) -> CollectorStats {
        self.state.stats.snapshot(self.state.connections.snapshot())
    }

    /// What the attributor, the ledger and the output hold now.
    pub async fn parts(&self) -> PartsSnapshot {
        self.state.parts().await
    }

    /// Replaces the fault injection (request numbering goes on).
    pub fn set_faults(&self, faults: FaultInjection) {
        *self.state.faults.lock().unwrap_or_else(|p| p.into_inner()) = faults;
    }

    /// Stops listening and drops every open connection, then drains: waits (at most
    /// [`CollectorOptions::drain_timeout()`]) until every held-back flow is decided,
    /// decides what is left (unattributed, `shutdown`, unless its peer's record or
    /// the map can decide it already), writes and commits everything.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        let _ = (&mut self.server).await;
        if let Some(kafka) = &self.state.kafka {
            kafka.stop_reading();
        }
        let deadline = Instant::now() + self.state.options.drain_timeout();
        loop {
            let held = self
                .state
                .with_pipeline(|p, stats| {
                    p.tick(SystemTime::now(), stats);
                    p.held() + p.unwritten() as u64
                })
                .await
                .unwrap_or(0);
            if held == 0 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(TICK).await;
        }
        self.ticker.abort();
        let _ = (&mut self.ticker).await;
        self.state
            .with_pipeline(|p, stats| p.drain(SystemTime::now(), stats))
            .await;
        if self.state.kafka.is_some() {
            let state = Arc::clone(&self.state);
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(kafka) = &state.kafka {
                    kafka.finish(&state);
                }
            })
            .await;
        }
    }

    /// What the Kafka parts did (`None` without Kafka).
    #[cfg(feature = "kafka")]
    pub fn kafka_stats(&self) -> Option<Arc<kafka::KafkaStats>> {
        self.state.kafka.as_ref().map(|k| Arc::clone(&k.stats))
    }

    /// Serves until `signal` completes, then shuts down (for a binary).
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }
}

/// Opens the ledger and the output and recovers the pipeline (blocking).
fn open_pipeline(
    options: &CollectorOptions,
    output: Option<Box<dyn FlowOutput>>,
    attributor: Attributor,
    stats: &Stats,
) -> Result<Pipeline, CollectorError> {
    let ledger_config = options.ledger.clone().with_sync(options.sync);
    let ledger = Ledger::open(&options.state_dir, ledger_config)
        .map_err(|source| CollectorError::Ledger { source })?;
    let output: Box<dyn FlowOutput> = match output {
        Some(output) => output,
        None => Box::new(
            JsonLinesOutput::open(&options.out, options.rotation.clone())
                .map_err(|source| CollectorError::OutputSink { source })?,
        ),
    };
    let (pipeline, recovered) = Pipeline::recover(
        options,
        ledger,
        attributor,
        output,
        SystemTime::now(),
        stats,
    )?;
    if recovered.chunks > 0 {
        tracing::info!(
            chunks = recovered.chunks,
            flows_pending = recovered.flows_pending,
            damaged = recovered.damaged_chunks,
            "replayed the ledger"
        );
    }
    Ok(pipeline)
}

/// Every [`TICK`]: decides held flows whose time has come, writes, commits (and
/// publishes the heartbeats extracted, when they are shared).
async fn tick_forever(state: Arc<State>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        state
            .with_pipeline(|p, stats| p.tick(SystemTime::now(), stats))
            .await;
        if state.kafka.is_some() {
            let state = Arc::clone(&state);
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(kafka) = &state.kafka {
                    kafka.publish_due(&state);
                }
            })
            .await;
        }
    }
}
