//! `CollectorSink`: chunks to a collector over HTTP, through a durable spool.
//!
//! # The exchange
//!
//! One chunk per request: `POST <url>` (path [`CHUNKS_PATH`], `/v1/chunks`, unless the
//! URL names another), `Content-Type: application/vnd.flowexporter.chunk`, the body
//! one frame exactly as `docs/wire-format.md` describes it. The collector answers:
//!
//! | status | meaning | the sink |
//! | --- | --- | --- |
//! | 2xx | stored, or a duplicate of a stored batch ID | forgets the chunk |
//! | 408, 429, 5xx | try later (`Retry-After` in seconds is honoured) | retries with backoff |
//! | no answer | refused, reset, timed out, TLS failure | retries with backoff |
//! | any other (400 undecodable, 413 too large, 415, 3xx, ...) | these bytes will never be accepted | moves the frame to `rejected/` with the answer, logs it at error level, counts it |
//!
//! A collector may add `Flowexporter-Result: accepted` or `duplicate` to a 2xx; the
//! sink counts duplicates. Redirects are not followed (a 3xx is a misconfiguration).
//! `docs/collector-protocol.md` has the same for implementers of other collectors.
//!
//! # Delivery with a spool (the normal mode)
//!
//! [`deliver`](crate::FlowSink::deliver) encodes the chunk, writes the frame to the
//! [`Spool`] (`fsync`ed) and returns: the chunk is durable. A background task started
//! with the sink sends spooled frames oldest first, one at a time, and deletes each
//! once the collector has it. A failed attempt is retried with exponential backoff and
//! full jitter ([`RetryPolicy`]) for as long as it takes; the spool's size cap
//! ([`SpoolConfig`]) bounds what an outage can keep, and what it drops is counted.
//! Every chunk goes through the spool, so there is one path: order is kept, a crash at
//! any point leaves every accepted chunk on disk, and a restarted exporter sends what
//! the spool holds (same bytes, same batch IDs) before anything newer.
//! [`flush`](crate::FlowSink::flush) waits (up to `flush_timeout`) until the spool is
//! empty; [`close`](CollectorSink::close) flushes and stops the task.
//!
//! # Changing TLS material and backoff while running
//!
//! [`reconfigure`](CollectorSink::reconfigure) reads the TLS files again (even under
//! the same paths: this is how a rotated client certificate or CA is picked up) and
//! replaces the retry policy, without losing or reordering anything spooled. If the
//! new material cannot be loaded, nothing changes. A sender waiting to retry tries
//! again at once with the new settings.
//!
//! # Without a spool
//!
//! `deliver` sends the frame itself and retries in place until it succeeds or
//! [`RetryPolicy::max_attempts`] is reached, then returns the error: nothing is kept.
//! For tests and for callers that keep chunks themselves.

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use flow_batch::{
    Chunk,
    wire::{ChunkEncoder, DecodeLimits, InstanceId, decode_header},
};
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    error::SinkError,
    retry::{Disposition, Jitter, RetryPolicy},
    sink::FlowSink,
    spool::{Spool, SpoolConfig, SpoolCounters, SpoolId},
};

/// The path chunks are posted to when the collector URL names none.
pub const CHUNKS_PATH: &str = "/v1/chunks";
/// The content type of a chunk frame.
pub const CHUNK_CONTENT_TYPE: &str = "application/vnd.flowexporter.chunk";
/// The response header in which a collector may say `accepted` or `duplicate`.
pub const RESULT_HEADER: &str = "flowexporter-result";
/// How much of a refusing response body is logged and kept.
const BODY_SNIPPET: usize = 512;

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

/// Settings of a [`CollectorSink`].
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
}

/// What a collector sink has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CollectorCounters {
    /// Chunks handed to [`deliver`](crate::FlowSink::deliver) and accepted (spooled,
    /// or sent without a spool).
    pub chunks_accepted: u64,
    /// Chunks the collector acknowledged (2xx).
    pub chunks_sent: u64,
    /// Records in those chunks.
    pub records_sent: u64,
    /// Frame bytes in those chunks.
    pub bytes_sent: u64,
    /// Acknowledged chunks the collector reported as duplicates.
    pub chunks_duplicate: u64,
    /// HTTP requests made.
    pub requests: u64,
    /// Attempts that failed and were retried.
    pub retries: u64,
    /// Attempts that got no HTTP answer (refused, reset, timed out, TLS).
    pub transport_errors: u64,
    /// Attempts answered with a retriable status (408, 429, 5xx).
    pub retriable_statuses: u64,
    /// Chunks refused for good (other 4xx, 3xx), moved to `rejected/`.
    pub chunks_rejected: u64,
    /// Records in those chunks.
    pub records_rejected: u64,
    /// Chunks given up on without a spool (retry budget spent).
    pub chunks_failed: u64,
    /// Total time spent in requests that got an HTTP answer, ns (with `requests_timed`
    /// it gives the collector's mean latency).
    pub request_time_ns: u64,
    /// Requests that got an HTTP answer (the ones `request_time_ns` covers).
    pub requests_timed: u64,
    /// The spool's counters, when there is a spool.
    pub spool: Option<SpoolCounters>,
}

#[derive(Debug, Default)]
struct Atomics {
    chunks_accepted: AtomicU64,
    chunks_sent: AtomicU64,
    records_sent: AtomicU64,
    bytes_sent: AtomicU64,
    chunks_duplicate: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
    transport_errors: AtomicU64,
    retriable_statuses: AtomicU64,
    chunks_rejected: AtomicU64,
    records_rejected: AtomicU64,
    chunks_failed: AtomicU64,
    request_time_ns: AtomicU64,
    requests_timed: AtomicU64,
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// The outcome of one request.
#[derive(Debug)]
enum Attempt {
    Delivered,
    Retry {
        status: Option<u16>,
        error: Option<reqwest::Error>,
        retry_after: Option<Duration>,
    },
    Reject {
        status: u16,
        body: String,
    },
}

/// A frame ready to send, with what the logs and counters need.
#[derive(Clone, Debug)]
struct Frame {
    bytes: Bytes,
    batch_id: String,
    records: u32,
}

impl Frame {
    fn new(bytes: Vec<u8>) -> Result<Frame, SinkError> {
        let header = decode_header(&bytes, &DecodeLimits::default())
            .map_err(|source| SinkError::InvalidFrame { source })?;
        Ok(Frame {
            batch_id: header.batch_id().to_string(),
            records: header.record_count,
            bytes: Bytes::from(bytes),
        })
    }
}

struct Inner {
    url: String,
    /// Replaced as a whole by [`CollectorSink::reconfigure`]; requests in flight keep
    /// the client they started with.
    client: Mutex<reqwest::Client>,
    /// Replaced by [`CollectorSink::reconfigure`].
    retry: Mutex<RetryPolicy>,
    connect_timeout: Duration,
    request_timeout: Duration,
    /// Wakes a sender waiting to retry once the settings changed.
    reconfigured: tokio::sync::Notify,
    flush_timeout: Duration,
    encoder: Mutex<ChunkEncoder>,
    spool: Option<Arc<Mutex<Spool>>>,
    /// Frames in the spool (0 when drained); flush waits on it.
    backlog: watch::Sender<usize>,
    wake: tokio::sync::Notify,
    shutdown: watch::Sender<bool>,
    jitter: Mutex<Jitter>,
    counters: Atomics,
}

/// Sends chunks to a collector over HTTP(S); see the [module docs](self).
pub struct CollectorSink {
    inner: Arc<Inner>,
    replayer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for CollectorSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectorSink")
            .field("url", &self.inner.url)
            .finish_non_exhaustive()
    }
}

impl CollectorSink {
    /// Validates `config`, loads the TLS material, opens the spool (picking up what
    /// a previous run left) and, with a spool, starts the task that sends it. Must be
    /// called inside a tokio runtime.
    pub fn start(config: CollectorConfig) -> Result<CollectorSink, SinkError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(SinkError::InvalidConfig {
                key: "runtime",
                value: "none".into(),
                reason: "CollectorSink::start must be called inside a tokio runtime",
            });
        }
        config.retry.validate()?;
        let url = chunk_url(&config.url)?;
        let client = build_client(
            &config.tls,
            config.connect_timeout,
            config.request_timeout,
            &url,
        )?;
        let encoder =
            ChunkEncoder::new(config.host.clone(), config.instance).map_err(|source| {
                SinkError::Codec {
                    operation: "set up the chunk encoder",
                    source,
                }
            })?;
        let spool = match &config.spool_dir {
            Some(dir) => Some(Spool::open(dir, config.spool.clone())?),
            None => None,
        };
        let backlog = spool.as_ref().map_or(0, Spool::len);
        let inner = Arc::new(Inner {
            url,
            client: Mutex::new(client),
            retry: Mutex::new(config.retry.clone()),
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
            reconfigured: tokio::sync::Notify::new(),
            flush_timeout: config.flush_timeout,
            encoder: Mutex::new(encoder),
            spool: spool.map(|s| Arc::new(Mutex::new(s))),
            backlog: watch::Sender::new(backlog),
            wake: tokio::sync::Notify::new(),
            shutdown: watch::Sender::new(false),
            jitter: Mutex::new(Jitter::from_entropy()),
            counters: Atomics::default(),
        });
        let replayer = inner
            .spool
            .is_some()
            .then(|| tokio::spawn(replay(Arc::clone(&inner))));
        Ok(CollectorSink {
            inner,
            replayer: Mutex::new(replayer),
        })
    }

    /// The URL chunks are posted to.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The retry policy in force.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.inner.retry().clone()
    }

    /// Replaces the TLS settings and the retry policy of the running sink (see the
    /// [module docs](self#changing-tls-material-and-backoff-while-running)). The TLS
    /// files are read again even when their paths did not change. On error (a file
    /// missing or unreadable, no certificate in it, a certificate without its key, an
    /// invalid policy) the sink keeps the settings it had. Connections already open
    /// finish their request; the next one is made with the new material.
    pub fn reconfigure(&self, tls: &ClientTls, retry: RetryPolicy) -> Result<(), SinkError> {
        retry.validate()?;
        let client = build_client(
            tls,
            self.inner.connect_timeout,
            self.inner.request_timeout,
            &self.inner.url,
        )?;
        *self.inner.client.lock().unwrap_or_else(|p| p.into_inner()) = client;
        *self.inner.retry.lock().unwrap_or_else(|p| p.into_inner()) = retry;
        self.inner.reconfigured.notify_waiters();
        Ok(())
    }

    /// A snapshot of the counters (and of the spool's).
    pub fn counters(&self) -> CollectorCounters {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CollectorCounters {
            chunks_accepted: get(&c.chunks_accepted),
            chunks_sent: get(&c.chunks_sent),
            records_sent: get(&c.records_sent),
            bytes_sent: get(&c.bytes_sent),
            chunks_duplicate: get(&c.chunks_duplicate),
            requests: get(&c.requests),
            retries: get(&c.retries),
            transport_errors: get(&c.transport_errors),
            retriable_statuses: get(&c.retriable_statuses),
            chunks_rejected: get(&c.chunks_rejected),
            records_rejected: get(&c.records_rejected),
            chunks_failed: get(&c.chunks_failed),
            request_time_ns: get(&c.request_time_ns),
            requests_timed: get(&c.requests_timed),
            spool: self
                .inner
                .spool
                .as_ref()
                .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).counters()),
        }
    }

    /// Delivers an already encoded frame as it is, keeping its batch ID: for chunks a
    /// [`RecordJournal`](crate::RecordJournal) recovered under a previous run's
    /// instance ([`RecoveredChunk::encode`](crate::RecoveredChunk::encode)). Same
    /// contract as [`deliver`](crate::FlowSink::deliver).
    pub async fn deliver_frame(&self, frame: Vec<u8>) -> Result<(), SinkError> {
        let frame = Frame::new(frame)?;
        self.inner.accept(frame).await
    }

    /// Flushes (up to `flush_timeout`), then stops the sending task. What is still
    /// spooled stays on disk for the next run.
    pub async fn close(self) -> Result<(), SinkError> {
        let flushed = self.flush().await;
        self.inner.shutdown.send_replace(true);
        let handle = self
            .replayer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(handle) = handle {
            handle.await.map_err(|source| SinkError::Task {
                task: "collector sink replay",
                source,
            })?;
        }
        flushed
    }
}

impl Drop for CollectorSink {
    fn drop(&mut self) {
        self.inner.shutdown.send_replace(true);
        if let Some(handle) = self
            .replayer
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            handle.abort();
        }
    }
}

#[async_trait]
impl FlowSink for CollectorSink {
    fn name(&self) -> &str {
        "collector"
    }

    async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
        let bytes = {
            let mut encoder = self.inner.encoder.lock().unwrap_or_else(|p| p.into_inner());
            encoder
                .encode_to_vec(chunk)
                .map_err(|source| SinkError::Encode {
                    sequence: chunk.sequence,
                    source,
                })?
        };
        let frame = Frame::new(bytes)?;
        self.inner.accept(frame).await
    }

    async fn flush(&self) -> Result<(), SinkError> {
        let Some(spool) = &self.inner.spool else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + self.inner.flush_timeout;
        let mut backlog = self.inner.backlog.subscribe();
        loop {
            // The watch is a hint; the spool itself says whether it is empty.
            let spool = Arc::clone(spool);
            let left =
                blocking(move || Ok(spool.lock().unwrap_or_else(|p| p.into_inner()).len())).await?;
            if left == 0 {
                return Ok(());
            }
            let changed = tokio::time::timeout_at(deadline, backlog.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                tracing::info!(
                    url = %self.inner.url,
                    spooled = left,
                    "flush timed out; the rest stays spooled"
                );
                return Ok(());
            }
        }
    }
}

impl Inner {
    /// Takes a frame: into the spool, or (without one) straight to the collector.
    async fn accept(self: &Arc<Self>, frame: Frame) -> Result<(), SinkError> {
        match &self.spool {
            Some(spool) => {
                let spool = Arc::clone(spool);
                let bytes = frame.bytes.clone();
                let len = blocking(move || {
                    let mut spool = spool.lock().unwrap_or_else(|p| p.into_inner());
                    spool.push(&bytes)?;
                    Ok(spool.len())
                })
                .await?;
                self.backlog.send_replace(len);
                bump(&self.counters.chunks_accepted, 1);
                self.wake.notify_one();
                Ok(())
            }
            None => {
                self.send_unspooled(&frame).await?;
                bump(&self.counters.chunks_accepted, 1);
                Ok(())
            }
        }
    }

    async fn send_unspooled(&self, frame: &Frame) -> Result<(), SinkError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.post(frame).await {
                Attempt::Delivered => return Ok(()),
                Attempt::Reject { status, body } => {
                    self.note_rejected(frame, status, &body);
                    return Err(SinkError::Rejected {
                        url: self.url.clone(),
                        batch_id: frame.batch_id.clone(),
                        status,
                        body,
                    });
                }
                Attempt::Retry {
                    status,
                    error,
                    retry_after,
                } => {
                    if !self.retry().may_retry(attempts) {
                        bump(&self.counters.chunks_failed, 1);
                        return Err(match (error, status) {
                            (Some(source), _) => SinkError::Transport {
                                url: self.url.clone(),
                                source,
                            },
                            (None, status) => SinkError::Unavailable {
                                url: self.url.clone(),
                                status: status.unwrap_or(0),
                                attempts,
                            },
                        });
                    }
                    bump(&self.counters.retries, 1);
                    tokio::time::sleep(self.backoff(attempts, retry_after)).await;
                }
            }
        }
    }

    fn retry(&self) -> std::sync::MutexGuard<'_, RetryPolicy> {
        self.retry.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn backoff(&self, attempts: u32, retry_after: Option<Duration>) -> Duration {
        let unit = self
            .jitter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_unit();
        self.retry().backoff(attempts, unit, retry_after)
    }

    /// One POST of `frame`, classified.
    async fn post(&self, frame: &Frame) -> Attempt {
        bump(&self.counters.requests, 1);
        let started = std::time::Instant::now();
        let client = self
            .client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let sent = client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, CHUNK_CONTENT_TYPE)
            .body(frame.bytes.clone())
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(error) => {
                bump(&self.counters.transport_errors, 1);
                tracing::debug!(url = %self.url, batch_id = %frame.batch_id, error = %crate::error_chain(&error), "collector request failed");
                return Attempt::Retry {
                    status: None,
                    error: Some(error),
                    retry_after: None,
                };
            }
        };
        bump(&self.counters.requests_timed, 1);
        bump(
            &self.counters.request_time_ns,
            started.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64,
        );
        let status = response.status().as_u16();
        match Disposition::of_status(status) {
            Disposition::Delivered => {
                let duplicate = response
                    .headers()
                    .get(RESULT_HEADER)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"duplicate"));
                // Read the (short) body so the connection can be reused.
                let _ = response.bytes().await;
                bump(&self.counters.chunks_sent, 1);
                bump(&self.counters.records_sent, u64::from(frame.records));
                bump(&self.counters.bytes_sent, frame.bytes.len() as u64);
                if duplicate {
                    bump(&self.counters.chunks_duplicate, 1);
                }
                Attempt::Delivered
            }
            Disposition::Retry => {
                bump(&self.counters.retriable_statuses, 1);
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let body = snippet(response).await;
                tracing::debug!(url = %self.url, batch_id = %frame.batch_id, status, body, "collector asked to retry");
                Attempt::Retry {
                    status: Some(status),
                    error: None,
                    retry_after,
                }
            }
            _ => Attempt::Reject {
                status,
                body: snippet(response).await,
            },
        }
    }

    fn note_rejected(&self, frame: &Frame, status: u16, body: &str) {
        bump(&self.counters.chunks_rejected, 1);
        bump(&self.counters.records_rejected, u64::from(frame.records));
        tracing::error!(
            url = %self.url,
            batch_id = %frame.batch_id,
            records = frame.records,
            status,
            body,
            "collector rejected a chunk for good; not retrying it"
        );
    }
}

/// The start of a response body, as text.
async fn snippet(response: reqwest::Response) -> String {
    match response.bytes().await {
        Ok(b) => {
            let end = b.len().min(BODY_SNIPPET);
            String::from_utf8_lossy(&b[..end]).trim().to_owned()
        }
        Err(_) => String::new(),
    }
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SinkError> + Send + 'static,
) -> Result<T, SinkError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| SinkError::Task {
            task: "spool I/O",
            source,
        })?
}

/// The background task: sends the spool, oldest first, until shutdown.
async fn replay(inner: Arc<Inner>) {
    let Some(spool) = inner.spool.clone() else {
        return;
    };
    let mut shutdown = inner.shutdown.subscribe();
    // Failures of the spool itself (disk errors) back off like failed requests.
    let mut disk_failures = 0;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let next = {
            let spool = Arc::clone(&spool);
            blocking(move || {
                let mut spool = spool.lock().unwrap_or_else(|p| p.into_inner());
                let next = spool.oldest()?;
                Ok((next, spool.len()))
            })
            .await
        };
        let chunk = match next {
            Ok((Some(chunk), _)) => {
                disk_failures = 0;
                chunk
            }
            Ok((None, len)) => {
                disk_failures = 0;
                inner.backlog.send_replace(len);
                if len == 0 {
                    tokio::select! {
                        () = inner.wake.notified() => {}
                        () = crate::stopped(&mut shutdown) => return,
                    }
                }
                continue;
            }
            Err(error) => {
                disk_failures += 1;
                tracing::error!(error = %crate::error_chain(&error), "reading the spool failed");
                let wait = inner.backoff(disk_failures, None);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = crate::stopped(&mut shutdown) => return,
                }
                continue;
            }
        };
        let frame = Frame {
            bytes: Bytes::from(chunk.frame),
            batch_id: chunk.batch_id.to_string(),
            records: chunk.records,
        };
        let mut attempts = 0;
        let settled = loop {
            attempts += 1;
            match inner.post(&frame).await {
                Attempt::Delivered => break Settle::Remove(chunk.id),
                Attempt::Reject { status, body } => {
                    inner.note_rejected(&frame, status, &body);
                    break Settle::Reject(
                        chunk.id,
                        format!("HTTP {status} from {}\n{body}\n", inner.url),
                    );
                }
                Attempt::Retry { retry_after, .. } => {
                    let wait = inner.backoff(attempts, retry_after);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        // New TLS material or backoff: try it now.
                        () = inner.reconfigured.notified() => {}
                        () = crate::stopped(&mut shutdown) => return,
                    }
                    // A full spool may have dropped it meanwhile: then it is gone
                    // (and counted as dropped), not sent.
                    let spool = Arc::clone(&spool);
                    let id = chunk.id;
                    let still = blocking(move || {
                        Ok(spool.lock().unwrap_or_else(|p| p.into_inner()).contains(id))
                    })
                    .await
                    .unwrap_or(true);
                    if !still {
                        break Settle::Gone;
                    }
                    bump(&inner.counters.retries, 1);
                }
            }
        };
        let spool = Arc::clone(&spool);
        let done = blocking(move || {
            let mut spool = spool.lock().unwrap_or_else(|p| p.into_inner());
            match settled {
                Settle::Remove(id) => {
                    spool.remove(id)?;
                }
                Settle::Reject(id, reason) => {
                    spool.reject(id, &reason)?;
                }
                Settle::Gone => {}
            }
            Ok(spool.len())
        })
        .await;
        match done {
            Ok(len) => {
                inner.backlog.send_replace(len);
            }
            Err(error) => {
                tracing::error!(error = %crate::error_chain(&error), "updating the spool failed");
            }
        }
    }
}

enum Settle {
    Remove(SpoolId),
    Reject(SpoolId, String),
    Gone,
}

/// The collector URL with the default path filled in.
fn chunk_url(url: &str) -> Result<String, SinkError> {
    let invalid = |reason| SinkError::InvalidConfig {
        key: "collector url",
        value: url.to_owned(),
        reason,
    };
    let mut parsed = reqwest::Url::parse(url).map_err(|_| invalid("not a URL"))?;
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

/// The HTTP client for `url`: reads the TLS files in `tls` now.
fn build_client(
    tls: &ClientTls,
    connect_timeout: Duration,
    request_timeout: Duration,
    url: &str,
) -> Result<reqwest::Client, SinkError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(connect_timeout)
        .timeout(request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("flowexporter/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &tls.ca_file {
        let pem = std::fs::read(path).map_err(|e| SinkError::io("read", path, e))?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| SinkError::Tls {
                what: "CA certificate",
                path: path.clone(),
                source,
            })?;
        if certs.is_empty() {
            return Err(SinkError::InvalidConfig {
                key: "tls ca_file",
                value: path.display().to_string(),
                reason: "holds no PEM certificate",
            });
        }
        builder = builder.tls_built_in_root_certs(false);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let mut pem = std::fs::read(cert).map_err(|e| SinkError::io("read", cert, e))?;
            pem.push(b'\n');
            pem.extend(std::fs::read(key).map_err(|e| SinkError::io("read", key, e))?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|source| SinkError::Tls {
                what: "client certificate and key",
                path: cert.clone(),
                source,
            })?;
            builder = builder.identity(identity);
        }
        (None, None) => {}
        (Some(path), None) | (None, Some(path)) => {
            return Err(SinkError::InvalidConfig {
                key: "tls client identity",
                value: path.display().to_string(),
                reason: "needs both a certificate and a key",
            });
        }
    }
    builder.build().map_err(|source| SinkError::HttpClient {
        url: url.to_owned(),
        source,
    })
}

#[cfg(test)]
mod reconfigure_tests;

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
    }
}
