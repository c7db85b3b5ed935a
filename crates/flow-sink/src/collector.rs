//! The reference collector: an HTTP server that receives chunks, verifies them, drops
//! duplicate batch IDs and appends the records as JSON lines (the `tail --json`
//! fields) to a file.
//!
//! `examples/flowcollector.rs` runs it; the sink's tests use it as their peer over
//! loopback, with [`FaultInjection`] to make it fail, lose acknowledgements or answer
//! slowly.
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
//! Connections are served by [`crate::http_server`]: at most
//! [`CollectorOptions::max_connections`] at once, closed after
//! [`CollectorOptions::header_read_timeout`] without a request's headers and after
//! [`CollectorOptions::idle_timeout`] without traffic; a failing `accept` (out of file
//! descriptors) makes it wait and go on.
//!
//! Deduplication state is kept in memory, per `(host, instance)`: the highest
//! contiguous sequence stored plus the set of sequences stored above it. A restarted
//! collector forgets it, so a chunk retried across a collector restart can be stored
//! twice; a production collector keeps it with the data.

use std::{
    collections::{BTreeSet, HashMap},
    fs::{File, OpenOptions},
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use flow_batch::wire::{BatchId, ChunkDecoder, DecodeLimits, InstanceId, decode_header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header};
use tokio::sync::watch;

use crate::{
    collector_sink::{CHUNK_CONTENT_TYPE, CHUNKS_PATH, RESULT_HEADER},
    error::SinkError,
    http_server::{self, ConnectionCounters, ConnectionLimits},
    json,
};

/// The first second a record time cannot have: 10000-01-01T00:00:00Z. RFC 3339 (and
/// the JSON output) has four-digit years.
const FIRST_UNWRITABLE_SECOND: u64 = 253_402_300_800;

/// Ways to make the collector misbehave, for tests. The default misbehaves in no way.
///
/// Request numbers count every request to the chunk path, from 1.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FaultInjection {
    /// Answer the first this many requests with `fail_status`, without reading them.
    pub fail_first: u32,
    /// Then answer every `fail_every`-th request with `fail_status` (0: never).
    pub fail_every: u32,
    /// The status of injected failures. 0 means 503.
    pub fail_status: u16,
    /// Store every `lose_ack_every`-th accepted chunk but answer 503, as if the
    /// acknowledgement were lost (0: never): the sender retries, the collector must
    /// drop the duplicate.
    pub lose_ack_every: u32,
    /// Wait this long before answering each request (a slow collector).
    pub delay: Duration,
    /// Answer every request with this status (e.g. 400: a collector that refuses
    /// everything for good).
    pub reject_all: Option<u16>,
    /// Fail every write of the output, as a full disk would (answers 503).
    pub fail_writes: bool,
}

impl FaultInjection {
    /// Sets [`fail_first`](FaultInjection::fail_first).
    pub fn with_fail_first(mut self, n: u32) -> FaultInjection {
        self.fail_first = n;
        self
    }

    /// Sets [`fail_every`](FaultInjection::fail_every).
    pub fn with_fail_every(mut self, n: u32) -> FaultInjection {
        self.fail_every = n;
        self
    }

    /// Sets [`fail_status`](FaultInjection::fail_status).
    pub fn with_fail_status(mut self, status: u16) -> FaultInjection {
        self.fail_status = status;
        self
    }

    /// Sets [`lose_ack_every`](FaultInjection::lose_ack_every).
    pub fn with_lose_ack_every(mut self, n: u32) -> FaultInjection {
        self.lose_ack_every = n;
        self
    }

    /// Sets [`delay`](FaultInjection::delay).
    pub fn with_delay(mut self, delay: Duration) -> FaultInjection {
        self.delay = delay;
        self
    }

    /// Sets [`reject_all`](FaultInjection::reject_all).
    pub fn with_reject_all(mut self, status: Option<u16>) -> FaultInjection {
        self.reject_all = status;
        self
    }

    /// Sets [`fail_writes`](FaultInjection::fail_writes).
    pub fn with_fail_writes(mut self, fail: bool) -> FaultInjection {
        self.fail_writes = fail;
        self
    }
}

/// TLS settings of the reference collector.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerTls {
    /// PEM file of the server's certificate chain.
    pub cert: PathBuf,
    /// PEM file of its private key.
    pub key: PathBuf,
    /// PEM file of the CA(s) client certificates must chain to; with it, a client
    /// without a valid certificate is refused during the handshake (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

impl ServerTls {
    /// Serve TLS with this certificate chain and key.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> ServerTls {
        ServerTls {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
        }
    }

    /// Require client certificates signed by the CA(s) in `path`.
    pub fn with_client_ca(mut self, path: impl Into<PathBuf>) -> ServerTls {
        self.client_ca = Some(path.into());
        self
    }

    fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, SinkError> {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
        let tls_err = |operation, path: &Path, e: &dyn std::fmt::Display| {
            SinkError::io(operation, path, std::io::Error::other(e.to_string()))
        };
        let load_certs = |path: &Path| -> Result<Vec<CertificateDer<'static>>, SinkError> {
            CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| tls_err("load TLS certificates from", path, &e))
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err("configure TLS for", &self.cert, &e))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in load_certs(ca)? {
                    roots
                        .add(cert)
                        .map_err(|e| tls_err("add a client CA from", ca, &e))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| tls_err("build the client verifier from", ca, &e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| tls_err("load the TLS private key from", &self.key, &e))?;
        let config = builder
            .with_single_cert(load_certs(&self.cert)?, key)
            .map_err(|e| tls_err("use the TLS certificate and key from", &self.cert, &e))?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

/// Settings of a [`FlowCollector`].
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

    fn connection_limits(&self) -> ConnectionLimits {
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

/// What a collector has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CollectorStats {
    /// Requests to the chunk path.
    pub requests: u64,
    /// Chunks stored.
    pub chunks_accepted: u64,
    /// Records written.
    pub records_written: u64,
    /// Chunks answered as duplicates (not stored again).
    pub chunks_duplicate: u64,
    /// Requests answered 400 (undecodable frame).
    pub rejected_undecodable: u64,
    /// Requests answered 400 because the frame decodes but a record cannot be stored
    /// (a time after 9999-12-31); nothing of such a chunk is stored.
    pub rejected_unstorable: u64,
    /// Requests answered 408 because the body did not arrive within
    /// [`CollectorOptions::body_read_timeout`].
    pub body_timeouts: u64,
    /// Requests answered 413.
    pub rejected_too_large: u64,
    /// Requests answered 415.
    pub rejected_content_type: u64,
    /// Chunks answered 503 because the output could not be written.
    pub write_failures: u64,
    /// Failures injected ([`FaultInjection`]), lost acknowledgements included.
    pub faults_injected: u64,
    /// Connections accepted and served.
    pub connections_accepted: u64,
    /// Connections closed as soon as accepted because
    /// [`CollectorOptions::max_connections`] were open.
    pub connections_refused: u64,
    /// Connections closed by the header read timeout or the idle timeout.
    pub connections_timed_out: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Failed `accept` calls (out of file descriptors, ...), each followed by a short
    /// wait.
    pub accept_errors: u64,
}

#[derive(Debug, Default)]
struct Stats {
    requests: AtomicU64,
    chunks_accepted: AtomicU64,
    records_written: AtomicU64,
    chunks_duplicate: AtomicU64,
    rejected_undecodable: AtomicU64,
    rejected_unstorable: AtomicU64,
    body_timeouts: AtomicU64,
    rejected_too_large: AtomicU64,
    rejected_content_type: AtomicU64,
    write_failures: AtomicU64,
    faults_injected: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Sequences stored for one `(host, instance)`.
#[derive(Debug, Default)]
struct Seen {
    /// Every sequence below this is stored.
    contiguous: u64,
    /// Stored sequences at or above `contiguous`.
    above: BTreeSet<u64>,
}

impl Seen {
    fn contains(&self, sequence: u64) -> bool {
        sequence < self.contiguous || self.above.contains(&sequence)
    }

    fn insert(&mut self, sequence: u64) {
        if sequence < self.contiguous {
            return;
        }
        self.above.insert(sequence);
        // u64::MAX itself stays in `above`: `contiguous` cannot pass it.
        while self.contiguous < u64::MAX && self.above.remove(&self.contiguous) {
            self.contiguous += 1;
        }
    }
}

struct Store {
    path: PathBuf,
    file: File,
    sync: bool,
    decoder: ChunkDecoder,
    seen: HashMap<(String, InstanceId), Seen>,
    buf: Vec<u8>,
}

struct State {
    options: CollectorOptions,
    faults: Mutex<FaultInjection>,
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
    pub async fn start(options: CollectorOptions) -> Result<FlowCollector, SinkError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&options.out)
            .map_err(|e| SinkError::io("open for appending", &options.out, e))?;
        let decoder = ChunkDecoder::new(options.limits).map_err(|source| SinkError::Codec {
            operation: "set up a chunk decoder",
            source,
        })?;
        let acceptor = options.tls.as_ref().map(ServerTls::acceptor).transpose()?;
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .map_err(|source| SinkError::Bind {
                addr: options.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| SinkError::Bind {
            addr: options.listen,
            source,
        })?;
        let state = Arc::new(State {
            faults: Mutex::new(options.faults.clone()),
            store: Mutex::new(Store {
                path: options.out.clone(),
                file,
                sync: options.sync,
                decoder,
                seen: HashMap::new(),
                buf: Vec::new(),
            }),
            options,
            stats: Stats::default(),
            connections: Arc::new(ConnectionCounters::default()),
        });
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(serve(listener, acceptor, Arc::clone(&state), rx));
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
        let s = &self.state.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let connections = self.state.connections.snapshot();
        CollectorStats {
            requests: get(&s.requests),
            chunks_accepted: get(&s.chunks_accepted),
            records_written: get(&s.records_written),
            chunks_duplicate: get(&s.chunks_duplicate),
            rejected_undecodable: get(&s.rejected_undecodable),
            rejected_unstorable: get(&s.rejected_unstorable),
            body_timeouts: get(&s.body_timeouts),
            rejected_too_large: get(&s.rejected_too_large),
            rejected_content_type: get(&s.rejected_content_type),
            write_failures: get(&s.write_failures),
            faults_injected: get(&s.faults_injected),
            connections_accepted: connections.accepted,
            connections_refused: connections.refused_over_cap,
            connections_timed_out: connections.timed_out,
            connections_open: connections.open,
            accept_errors: connections.accept_errors,
        }
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

async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = state.options.connection_limits();
    let counters = Arc::clone(&state.connections);
    let stopped = async move { crate::stopped(&mut shutdown).await };
    http_server::serve(listener, limits, counters, stopped, move |stream, peer| {
        let state = Arc::clone(&state);
        let acceptor = acceptor.clone();
        async move {
            let counters = Arc::clone(&state.connections);
            match acceptor {
                None => serve_connection(stream, limits, counters, state).await,
                Some(acceptor) => {
                    // The handshake is bounded like a request's headers.
                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => serve_connection(tls, limits, counters, state).await,
                        Ok(Err(error)) => {
                            tracing::info!(%peer, %error, "TLS handshake failed");
                        }
                        Err(_) => {
                            tracing::info!(%peer, "TLS handshake timed out");
                        }
                    }
                }
            }
        }
    })
    .await;
}

async fn serve_connection<IO>(
    io: IO,
    limits: ConnectionLimits,
    counters: Arc<ConnectionCounters>,
    state: Arc<State>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    http_server::serve_connection(io, limits, counters, move |req| {
        handle(Arc::clone(&state), req)
    })
    .await;
}

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, result: Option<&'static str>, text: String) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(text + "\n")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(result) = result {
        headers.insert(RESULT_HEADER, header::HeaderValue::from_static(result));
    }
    response
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Answer {
    if req.uri().path() != CHUNKS_PATH {
        return answer(
            StatusCode::NOT_FOUND,
            None,
            format!("no such path; chunks go to {CHUNKS_PATH}"),
        );
    }
    if req.method() != Method::POST {
        return answer(
            StatusCode::METHOD_NOT_ALLOWED,
            None,
            "chunks are sent with POST".into(),
        );
    }
    let number = state
        .stats
        .requests
        .fetch_add(1, Ordering::Relaxed)
        .saturating_add(1);
    let faults = state
        .faults
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if !faults.delay.is_zero() {
        tokio::time::sleep(faults.delay).await;
    }
    let fail_status = StatusCode::from_u16(if faults.fail_status == 0 {
        503
    } else {
        faults.fail_status
    })
    .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    if let Some(status) = faults.reject_all {
        bump(&state.stats.faults_injected);
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        return answer(status, None, "injected refusal".into());
    }
    let fail_first = number <= u64::from(faults.fail_first);
    let fail_nth = faults.fail_every > 0
        && number > u64::from(faults.fail_first)
        && (number - u64::from(faults.fail_first)).is_multiple_of(u64::from(faults.fail_every));
    if fail_first || fail_nth {
        bump(&state.stats.faults_injected);
        return answer(fail_status, None, "injected failure".into());
    }

    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type != CHUNK_CONTENT_TYPE {
        bump(&state.stats.rejected_content_type);
        return answer(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
            format!("content type must be {CHUNK_CONTENT_TYPE}"),
        );
    }
    let max = state.options.max_body_bytes;
    let too_large = || {
        bump(&state.stats.rejected_too_large);
        answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            format!("body larger than {max} bytes"),
        )
    };
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max as u64) {
        return too_large();
    }
    let timeout = state.options.body_read_timeout;
    let collected =
        match tokio::time::timeout(timeout, Limited::new(req.into_body(), max).collect()).await {
            Ok(collected) => collected,
            Err(_) => {
                bump(&state.stats.body_timeouts);
                return answer(
                    StatusCode::REQUEST_TIMEOUT,
                    None,
                    format!(
                        "the body did not arrive within {}",
                        humantime::format_duration(timeout)
                    ),
                );
            }
        };
    let body = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => return too_large(),
        Err(error) => {
            return answer(
                StatusCode::BAD_REQUEST,
                None,
                format!("reading the body failed: {error}"),
            );
        }
    };

    let lose_ack = faults.lose_ack_every > 0;
    let state2 = Arc::clone(&state);
    let fail_writes = faults.fail_writes;
    let outcome = tokio::task::spawn_blocking(move || store(&state2, &body, fail_writes)).await;
    let outcome = match outcome {
        Ok(o) => o,
        Err(error) => {
            return answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                format!("storing task failed: {error}"),
            );
        }
    };
    match outcome {
        Stored::Accepted { batch_id, records } => {
            let accepted = state.stats.chunks_accepted.load(Ordering::Relaxed);
            if lose_ack && accepted.is_multiple_of(u64::from(faults.lose_ack_every)) {
                bump(&state.stats.faults_injected);
                return answer(fail_status, None, "injected lost acknowledgement".into());
            }
            answer(
                StatusCode::OK,
                Some("accepted"),
                format!("accepted {batch_id} records={records}"),
            )
        }
        Stored::Duplicate { batch_id } => answer(
            StatusCode::OK,
            Some("duplicate"),
            format!("duplicate {batch_id}"),
        ),
        Stored::Undecodable(reason) | Stored::Unstorable(reason) => {
            answer(StatusCode::BAD_REQUEST, None, reason)
        }
        Stored::WriteFailed(reason) => answer(StatusCode::SERVICE_UNAVAILABLE, None, reason),
    }
}

enum Stored {
    Accepted {
        batch_id: BatchId,
        records: usize,
    },
    Duplicate {
        batch_id: BatchId,
    },
    Undecodable(String),
    /// Decodes, but a record cannot be written; the reason names it and the field.
    Unstorable(String),
    WriteFailed(String),
}

/// Why `record` cannot be written to the output, if it cannot: a time whose year has
/// more than four digits, which RFC 3339 cannot express.
fn unstorable(record: &flow_record::FlowRecord) -> Option<String> {
    let check = |field: &str, t: std::time::SystemTime| {
        // Decoded times are never before the epoch; say so rather than assume it.
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) if d.as_secs() < FIRST_UNWRITABLE_SECOND => None,
            Ok(d) => Some(format!("{field} {} s is after 9999-12-31", d.as_secs())),
            Err(_) => Some(format!("{field} is before 1970-01-01")),
        }
    };
    check("t_end", record.t_end).or_else(|| record.t_start.and_then(|t| check("t_start", t)))
}

/// Verifies, deduplicates and writes one frame (on the blocking pool).
fn store(state: &State, frame: &[u8], fail_writes: bool) -> Stored {
    let mut store = state.store.lock().unwrap_or_else(|p| p.into_inner());
    let header = match decode_header(frame, &state.options.limits) {
        Ok(h) => h,
        Err(e) => {
            bump(&state.stats.rejected_undecodable);
            return Stored::Undecodable(format!("bad frame header: {}", crate::error_chain(&e)));
        }
    };
    let batch_id = header.batch_id();
    let key = (batch_id.host.clone(), batch_id.instance);
    if store
        .seen
        .get(&key)
        .is_some_and(|s| s.contains(batch_id.sequence))
    {
        bump(&state.stats.chunks_duplicate);
        return Stored::Duplicate { batch_id };
    }
    let decoded = match store.decoder.decode(frame) {
        Ok(d) => d,
        Err(e) => {
            bump(&state.stats.rejected_undecodable);
            tracing::warn!(%batch_id, error = %crate::error_chain(&e), "undecodable chunk");
            return Stored::Undecodable(format!("bad frame: {}", crate::error_chain(&e)));
        }
    };
    let store = &mut *store;
    store.buf.clear();
    for (index, record) in decoded.records.iter().enumerate() {
        let refuse = |reason: String| {
            bump(&state.stats.rejected_unstorable);
            tracing::warn!(%batch_id, %reason, "chunk refused: a record cannot be stored");
            Stored::Unstorable(format!("record {index}: {reason}"))
        };
        if let Some(reason) = unstorable(record) {
            return refuse(reason);
        }
        // Writing into a Vec cannot fail, and the check above keeps the time
        // formatting from panicking; should another field ever do so, the chunk is
        // refused instead of taking the request (and a retrying exporter) down.
        let line = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            json::write_line(&mut store.buf, record)
        }));
        match line {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return refuse(format!("cannot be written as JSON: {e}")),
            Err(_) => return refuse("cannot be written as JSON".into()),
        }
    }
    let written = if fail_writes {
        Err(std::io::Error::other("injected write failure"))
    } else {
        write_all(&mut store.file, &store.buf, store.sync)
    };
    if let Err(e) = written {
        bump(&state.stats.write_failures);
        tracing::error!(out = %store.path.display(), error = %e, "writing the output failed");
        return Stored::WriteFailed(format!("cannot write the output: {e}"));
    }
    store.seen.entry(key).or_default().insert(batch_id.sequence);
    bump(&state.stats.chunks_accepted);
    state
        .stats
        .records_written
        .fetch_add(decoded.records.len() as u64, Ordering::Relaxed);
    Stored::Accepted {
        batch_id,
        records: decoded.records.len(),
    }
}

/// Appends `bytes`; on failure, cuts the file back so no partial chunk stays.
fn write_all(file: &mut File, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    let before = file.metadata()?.len();
    let result = file
        .write_all(bytes)
        .and_then(|()| if sync { file.sync_data() } else { Ok(()) });
    if result.is_err() {
        let _ = file.set_len(before);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_tracks_contiguous_and_gaps() {
        let mut s = Seen::default();
        for q in [0, 1, 3, 5] {
            s.insert(q);
        }
        assert_eq!(s.contiguous, 2);
        assert!(s.contains(0) && s.contains(1) && s.contains(3) && s.contains(5));
        assert!(!s.contains(2) && !s.contains(4) && !s.contains(6));
        s.insert(2);
        s.insert(4);
        assert_eq!(s.contiguous, 6);
        assert!(s.above.is_empty());
    }

    #[test]
    fn seen_never_overflows_at_the_last_sequence() {
        let mut s = Seen {
            contiguous: u64::MAX - 1,
            above: BTreeSet::new(),
        };
        s.insert(u64::MAX);
        s.insert(u64::MAX - 1);
        assert_eq!(s.contiguous, u64::MAX);
        assert!(s.contains(u64::MAX - 1) && s.contains(u64::MAX));
    }

    fn record_at(t_end_secs: u64, t_start_secs: Option<u64>) -> flow_record::FlowRecord {
        use std::time::UNIX_EPOCH;
        flow_record::FlowRecord {
            local: "10.0.0.1:1".parse().expect("addr"),
            remote: "10.0.0.2:2".parse().expect("addr"),
            direction: flow_record::Direction::Inbound,
            t_start: t_start_secs.map(|s| UNIX_EPOCH + Duration::from_secs(s)),
            t_end: UNIX_EPOCH + Duration::from_secs(t_end_secs),
            close_state: flow_record::TcpState(7),
            close_reason: flow_record::CloseReason::Normal,
            stats: flow_record::SocketStats::default(),
            local_workload_id: None,
            identity_source: flow_record::IdentitySource::ConnectMap,
            incomplete: false,
        }
    }

    #[test]
    fn times_past_year_9999_are_unstorable_and_name_the_field() {
        let last = FIRST_UNWRITABLE_SECOND - 1;
        assert_eq!(unstorable(&record_at(last, Some(last))), None);
        assert_eq!(
            unstorable(&record_at(FIRST_UNWRITABLE_SECOND, None)).as_deref(),
            Some("t_end 253402300800 s is after 9999-12-31")
        );
        assert_eq!(
            unstorable(&record_at(1, Some(FIRST_UNWRITABLE_SECOND + 5))).as_deref(),
            Some("t_start 253402300805 s is after 9999-12-31")
        );
    }
}
