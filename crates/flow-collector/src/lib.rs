//! The reference collector of flowexporter: an HTTP server that receives chunk
//! frames, verifies them, drops duplicate batch IDs and appends the records as JSON
//! lines (the `flowexporter tail --json` fields) to a file.
//!
//! The `flowcollector` binary of this crate runs it; the collector sink's tests use it
//! as their peer over loopback, with [`FaultInjection`] to make it fail, lose
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
//! `Flowexporter-Result: accepted` for a stored chunk and `duplicate` for a batch ID
//! already stored; `400` for a frame that does not decode; `404` for another path;
//! `405` for another method; `413` for a body over the limit; `415` for another
//! content type; `503` when the output cannot be written. Each answer's body is one
//! line of text saying why. A frame that decodes but holds a record the output cannot
//! represent (a time after 9999-12-31) is refused with `400` naming the record and the
//! field, and nothing of it is stored; a body that does not arrive within
//! [`CollectorOptions::body_read_timeout`] gets `408`.
//!
//! Connections are served by `flow_http`: at most
//! [`CollectorOptions::max_connections`] at once, closed after
//! [`CollectorOptions::header_read_timeout`] without a request's headers and after
//! [`CollectorOptions::idle_timeout`] without traffic; a failing `accept` (out of file
//! descriptors) makes it wait and go on.
//!
//! Deduplication state is kept in memory, per `(host, instance)`. A restarted
//! collector forgets it, so a chunk retried across a collector restart can be stored
//! twice; a production collector keeps it with the data.
//!
//! The modules: [`CollectorOptions`] (options), [`FaultInjection`] (faults),
//! [`ServerTls`] (tls), the storage and deduplication (store), the request handler
//! (handler), the connection loop (server) and [`CollectorStats`] (stats).

pub mod attribution;
mod error;
mod faults;
mod handler;
pub mod ledger;
mod options;
pub mod output;
mod server;
mod stats;
mod store;
mod tls;

use std::{
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
};

use flow_batch::wire::CHUNKS_PATH;
use flow_http::ConnectionCounters;
use tokio::sync::watch;

pub use error::CollectorError;
pub use faults::FaultInjection;
pub use options::CollectorOptions;
pub use stats::CollectorStats;
pub use tls::ServerTls;

use crate::{stats::Stats, store::Store};

/// What the connection tasks share.
struct State {
    options: CollectorOptions,
    faults: Mutex<FaultInjection>,
    /// Used on the blocking pool only.
    store: Mutex<Store>,
    stats: Stats,
    connections: Arc<ConnectionCounters>,
}

/// A running reference collector.
pub struct FlowCollector {
    local_addr: SocketAddr,
    state: Arc<State>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FlowCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowCollector")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl FlowCollector {
    /// Opens the output, binds the address and starts serving in a background task.
    pub async fn start(options: CollectorOptions) -> Result<FlowCollector, CollectorError> {
        let store = Store::open(options.out.clone(), options.sync, options.limits)?;
        let acceptor = options.tls.as_ref().map(ServerTls::acceptor).transpose()?;
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
            store: Mutex::new(store),
            options,
            stats: Stats::default(),
            connections: Arc::new(ConnectionCounters::default()),
        });
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(server::serve(listener, acceptor, Arc::clone(&state), rx));
        tracing::info!(addr = %local_addr, out = %state.options.out.display(), "collector listening");
        Ok(FlowCollector {
            local_addr,
            state,
            shutdown,
            task,
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

    /// Replaces the fault injection (request numbering goes on).
    pub fn set_faults(&self, faults: FaultInjection) {
        *self.state.faults.lock().unwrap_or_else(|p| p.into_inner()) = faults;
    }

    /// Stops listening and drops every open connection.
    pub async fn shutdown(self) {
        self.shutdown.send_replace(true);
        let _ = self.task.await;
    }

    /// Serves until `signal` completes, then shuts down (for a binary).
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }
}
