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
//! the spool holds (same bytes, same batch IDs) before anything newer. (The exception:
//! a chunk the spool cannot take, [below](self#when-the-spool-cannot-take-a-chunk).)
//! [`flush`](crate::FlowSink::flush) makes a sender waiting to retry try at once and
//! waits (up to `flush_timeout`) until nothing is left to send;
//! [`close`](CollectorSink::close) stops the task without waiting for the collector
//! (call `flush` first to give it a chance): what was not sent stays spooled.
//!
//! # When the spool cannot take a chunk
//!
//! If writing a frame to the spool fails with an I/O error (its disk full, `EDQUOT`,
//! `EIO`), `deliver` does not fail: the frame is kept in a bounded in-memory queue
//! ([`CollectorConfig::memory_max_bytes`], [`CollectorConfig::memory_max_chunks`];
//! 64 MiB and 1,024 frames by default) and counted in
//! [`chunks_unspooled`](CollectorCounters::chunks_unspooled). A frame that does not
//! fit drops the oldest one kept in memory (counted in
//! [`chunks_dropped_memory`](CollectorCounters::chunks_dropped_memory), logged). The
//! sending task sends frames kept in memory before spooled ones (they are the ones a
//! crash would lose), oldest first, with the same retries and backoff. As soon as the
//! spool takes frames again, new chunks go to it as before, and the frames still in
//! memory are moved to it, oldest first (counted in
//! [`chunks_respooled`](CollectorCounters::chunks_respooled)): durable from then on. `deliver` fails only when
//! a chunk can be neither spooled nor kept (a frame larger than the whole queue, or
//! another error of the spool, such as `SpoolFull` with `WhenFull::RefuseNewest`).
//! [`accept_chunk`](CollectorSink::accept_chunk) says which happened
//! ([`Accepted::InMemory`]), so that a caller with a record journal can keep the
//! chunk's records journaled until the chunk is durable. `close` (or
//! [`shut_down`](CollectorSink::shut_down)) writes what is still in memory to the
//! spool if it takes it (never dropping a spooled frame for it); the rest is left
//! unsettled, so that a caller's journal sends it again at the next start (counted in
//! [`chunks_unsaved_at_close`](CollectorCounters::chunks_unsaved_at_close)).
//!
//! A frame kept in memory is *settled* once it leaves the queue for good: delivered,
//! rejected by the collector, dropped (to make room), or written to the
//! spool (once it takes chunks again, or at close). [`take_settled`](CollectorSink::take_settled) hands out the batch
//! IDs of the frames settled since the last call, so that the caller can mark them
//! done in its journal (nothing more is to be gained by keeping their records: a
//! dropped frame's loss is counted here).
//!
//! # Answers are read, not trusted
//!
//! Of a response body the sink reads at most 512 bytes (a refusal's reason) or 4 KiB
//! (a `2xx`, so that the connection can be reused), for at most 2 s; then the
//! connection is dropped. A collector answering with an endless or trickling body
//! costs neither memory nor time beyond that.
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

mod body;
mod memory;

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use flow_batch::{
    Chunk,
    wire::{BatchId, ChunkEncoder, DecodeLimits, InstanceId, decode_header},
};
use tokio::{sync::watch, task::JoinHandle};

pub use crate::sink::Accepted;

use self::memory::{MemoryId, MemoryQueue};
use crate::{
    error::SinkError,
    retry::{Disposition, Jitter, RetryPolicy},
    sink::FlowSink,
    spool::{Spool, SpoolConfig, SpoolCounters, SpoolId},
    state_dir::{MAX_OPERATOR_FILE_BYTES, read_regular_file},
};

/// The path chunks are posted to when the collector URL names none.
pub const CHUNKS_PATH: &str = "/v1/chunks";
/// The content type of a chunk frame.
pub const CHUNK_CONTENT_TYPE: &str = "application/vnd.flowexporter.chunk";
/// The response header in which a collector may say `accepted` or `duplicate`.
pub const RESULT_HEADER: &str = "flowexporter-result";
/// Default of [`CollectorConfig::memory_max_bytes`]: 64 MiB.
pub const DEFAULT_MEMORY_MAX_BYTES: u64 = 64 << 20;
/// Default of [`CollectorConfig::memory_max_chunks`].
pub const DEFAULT_MEMORY_MAX_CHUNKS: usize = 1024;
/// Most settled batch IDs kept for [`CollectorSink::take_settled`]; past it the oldest
/// are forgotten (a caller that collects them does so every tick).
const MAX_SETTLED: usize = 4 * DEFAULT_MEMORY_MAX_CHUNKS;

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
    /// Most frame bytes kept in memory when the spool cannot take them (see the
    /// [module docs](self#when-the-spool-cannot-take-a-chunk)). Default 64 MiB.
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

/// What a collector sink has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CollectorCounters {
    /// Chunks handed to [`deliver`](crate::FlowSink::deliver) and accepted (spooled,
    /// kept in memory when the spool could not take them, or sent without a spool).
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
    /// Chunks the spool could not take (an I/O error: disk full, quota, EIO), kept in
    /// memory instead and sent from there.
    pub chunks_unspooled: u64,
    /// Records in those chunks.
    pub records_unspooled: u64,
    /// Chunks kept in memory that were written to the spool later, once it took a
    /// chunk again (durable from then on).
    pub chunks_respooled: u64,
    /// Chunks kept in memory that were dropped: the oldest, to make room for a newer
    /// one, or at [`close`](CollectorSink::close) when the spool still could not take
    /// them.
    pub chunks_dropped_memory: u64,
    /// Chunks still in memory at close that the spool could not take: not settled, so
    /// a caller's record journal sends them again at its next start (a caller without
    /// one loses them).
    pub chunks_unsaved_at_close: u64,
    /// Records in those chunks.
    pub records_unsaved_at_close: u64,
    /// Records in those chunks.
    pub records_dropped_memory: u64,
    /// Frame bytes in those chunks.
    pub bytes_dropped_memory: u64,
    /// Chunks in memory now, waiting to be sent (a gauge).
    pub memory_chunks: u64,
    /// Frame bytes in memory now (a gauge).
    pub memory_bytes: u64,
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
    chunks_unspooled: AtomicU64,
    records_unspooled: AtomicU64,
    chunks_dropped_memory: AtomicU64,
    chunks_unsaved_at_close: AtomicU64,
    records_unsaved_at_close: AtomicU64,
    chunks_respooled: AtomicU64,
    records_dropped_memory: AtomicU64,
    bytes_dropped_memory: AtomicU64,
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

/// `chunk`'s frame under the host and instance of `id`.
fn encode_as(chunk: &Chunk, id: &BatchId) -> Result<Vec<u8>, SinkError> {
    let encode = |source| SinkError::Encode {
        sequence: chunk.sequence,
        source,
    };
    if chunk.sequence != id.sequence {
        return Err(SinkError::InvalidConfig {
            key: "batch_id",
            value: format!("{id} for chunk {}", chunk.sequence),
            reason: "the batch ID's sequence must be the chunk's",
        });
    }
    ChunkEncoder::new(id.host.clone(), id.instance)
        .map_err(encode)?
        .encode_to_vec(chunk)
        .map_err(encode)
}

/// A frame ready to send, with what the logs and counters need.
#[derive(Clone, Debug)]
struct Frame {
    bytes: Bytes,
    batch_id: BatchId,
    records: u32,
}

impl Frame {
    fn new(bytes: Vec<u8>) -> Result<Frame, SinkError> {
        let header = decode_header(&bytes, &DecodeLimits::default())
            .map_err(|source| SinkError::InvalidFrame { source })?;
        Ok(Frame {
            batch_id: header.batch_id(),
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
    /// Wakes a sender waiting to retry: the settings changed, or a flush began.
    reconfigured: tokio::sync::Notify,
    flush_timeout: Duration,
    encoder: Mutex<ChunkEncoder>,
    spool: Option<Arc<Mutex<Spool>>>,
    /// Frames the spool could not take, waiting to be sent.
    memory: Mutex<MemoryQueue>,
    /// Batch IDs of frames that left the memory queue, for
    /// [`CollectorSink::take_settled`].
    settled: Mutex<Vec<BatchId>>,
    /// Whether the last spool write failed (to log the changes, not every failure).
    spool_failing: AtomicBool,
    /// Frames in the spool and in memory (0 when drained); flush waits on it.
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
            memory: Mutex::new(MemoryQueue::new(
                config.memory_max_bytes,
                config.memory_max_chunks,
            )),
            settled: Mutex::new(Vec::new()),
            spool_failing: AtomicBool::new(false),
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
        let memory = {
            let q = self.inner.memory();
            (q.len(), q.bytes())
        };
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
            chunks_unspooled: get(&c.chunks_unspooled),
            records_unspooled: get(&c.records_unspooled),
            chunks_dropped_memory: get(&c.chunks_dropped_memory),
            chunks_unsaved_at_close: get(&c.chunks_unsaved_at_close),
            records_unsaved_at_close: get(&c.records_unsaved_at_close),
            chunks_respooled: get(&c.chunks_respooled),
            records_dropped_memory: get(&c.records_dropped_memory),
            bytes_dropped_memory: get(&c.bytes_dropped_memory),
            memory_chunks: memory.0 as u64,
            memory_bytes: memory.1,
            spool: self
                .inner
                .spool
                .as_ref()
                .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).counters()),
        }
    }

    /// Delivers an already encoded frame as it is, keeping its batch ID: for chunks a
    /// record journal recovered under a previous run's instance (see
    /// [`FlowSink::replay`](crate::FlowSink::replay), which needs no frame). Same
    /// contract as [`deliver`](crate::FlowSink::deliver).
    pub async fn deliver_frame(&self, frame: Vec<u8>) -> Result<(), SinkError> {
        self.accept_frame(frame).await.map(|_| ())
    }

    /// [`deliver_frame`](CollectorSink::deliver_frame), saying where the frame went:
    /// [`Accepted::InMemory`] when the spool could not take it.
    pub async fn accept_frame(&self, frame: Vec<u8>) -> Result<Accepted, SinkError> {
        let frame = Frame::new(frame)?;
        self.inner.accept(frame).await
    }

    /// [`deliver`](crate::FlowSink::deliver), saying where the chunk went:
    /// [`Accepted::InMemory`] when the spool could not take it (see the
    /// [module docs](self#when-the-spool-cannot-take-a-chunk)).
    pub async fn accept_chunk(&self, chunk: &Chunk) -> Result<Accepted, SinkError> {
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

    /// The batch IDs of the frames kept in memory ([`Accepted::InMemory`]) that were
    /// settled since the last call, in the order they were settled: delivered,
    /// rejected for good, dropped from the queue, or written to the spool (once it
    /// takes chunks again, or by [`shut_down`](CollectorSink::shut_down)). A caller with a record journal marks
    /// them done (see the [module docs](self#when-the-spool-cannot-take-a-chunk)).
    pub fn take_settled(&self) -> Vec<BatchId> {
        std::mem::take(&mut *self.inner.settled.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Stops the sending task at once, a request in flight included (its chunk stays
    /// spooled, and a collector that stored it drops it as a duplicate next time). It
    /// does not wait for the collector: call [`flush`](crate::FlowSink::flush) first
    /// for that. What is still spooled stays on disk for the next run; frames kept in
    /// memory are written to the spool if it takes them now (never dropping a spooled
    /// frame for them); the others are left unsettled for the caller's journal
    /// (counted in `chunks_unsaved_at_close`, logged).
    pub async fn close(self) -> Result<(), SinkError> {
        self.shut_down().await
    }

    /// [`close`](CollectorSink::close), leaving the sink in place so that
    /// [`take_settled`](CollectorSink::take_settled) can still be called (the frames
    /// written from memory to the spool, or dropped, are settled). The sink sends
    /// nothing more afterwards; drop it.
    pub async fn shut_down(&self) -> Result<(), SinkError> {
        self.inner.shutdown.send_replace(true);
        let handle = self
            .replayer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let stopped = match handle {
            Some(handle) => handle.await.map_err(|source| SinkError::Task {
                task: "collector sink replay",
                source,
            }),
            None => Ok(()),
        };
        self.inner.spool_memory().await;
        stopped
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
        self.accept_chunk(chunk).await.map(|_| ())
    }

    /// Encodes `chunk` under `id` (its host, instance and sequence), so that the
    /// frame's batch ID is the one the caller's journal knows.
    async fn accept(&self, chunk: &Chunk, id: &BatchId) -> Result<Accepted, SinkError> {
        let frame = encode_as(chunk, id)?;
        self.accept_frame(frame).await
    }

    fn take_settled(&self) -> Vec<BatchId> {
        CollectorSink::take_settled(self)
    }

    async fn close(&self) -> Result<(), SinkError> {
        self.shut_down().await
    }

    async fn flush(&self) -> Result<(), SinkError> {
        let Some(spool) = &self.inner.spool else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + self.inner.flush_timeout;
        let mut backlog = self.inner.backlog.subscribe();
        // A sender waiting out a backoff tries now: the collector may be back.
        self.inner.reconfigured.notify_waiters();
        loop {
            // The watch is a hint; the spool and the queue say whether they are empty.
            let spool = Arc::clone(spool);
            let spooled =
                blocking(move || Ok(spool.lock().unwrap_or_else(|p| p.into_inner()).len())).await?;
            let left = spooled + self.inner.memory().len();
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
    /// Takes a frame: into the spool (or, if the spool cannot take it, into memory),
    /// or (without a spool) straight to the collector.
    async fn accept(self: &Arc<Self>, frame: Frame) -> Result<Accepted, SinkError> {
        match &self.spool {
            Some(spool) => {
                let spool = Arc::clone(spool);
                let bytes = frame.bytes.clone();
                // On a full disk, the memory queue takes the frame while it has room;
                // only then are the oldest spooled frames dropped to make room.
                let room = self.memory().has_room_for(bytes.len() as u64);
                let pushed = blocking(move || {
                    let mut spool = spool.lock().unwrap_or_else(|p| p.into_inner());
                    if room {
                        spool.push_keeping_oldest(&bytes)?;
                    } else {
                        spool.push(&bytes)?;
                    }
                    Ok(spool.len())
                })
                .await;
                let accepted = match pushed {
                    Ok(len) => {
                        if self.spool_failing.swap(false, Ordering::Relaxed) {
                            tracing::info!(
                                batch_id = %frame.batch_id,
                                "the spool takes chunks again"
                            );
                        }
                        let len = self.respool_memory(self.spool.as_ref(), len).await;
                        self.publish_backlog(len);
                        Accepted::Spooled
                    }
                    Err(error @ SinkError::Io { .. }) => self.keep_in_memory(frame, error)?,
                    Err(error) => return Err(error),
                };
                bump(&self.counters.chunks_accepted, 1);
                self.wake.notify_one();
                Ok(accepted)
            }
            None => {
                self.send_unspooled(&frame).await?;
                bump(&self.counters.chunks_accepted, 1);
                Ok(Accepted::Sent)
            }
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, MemoryQueue> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Says how many frames wait: `spooled` in the spool, and those in memory.
    fn publish_backlog(&self, spooled: usize) {
        let in_memory = self.memory().len();
        self.backlog.send_replace(spooled + in_memory);
    }

    /// The spool failed to take `frame` with `error`: keeps it in memory, dropping
    /// the oldest frames there if it does not fit.
    fn keep_in_memory(&self, frame: Frame, error: SinkError) -> Result<Accepted, SinkError> {
        let batch_id = frame.batch_id.clone();
        let records = frame.records;
        let (pushed, queued) = {
            let mut memory = self.memory();
            let pushed = memory.push(frame);
            (pushed, (memory.len(), memory.bytes()))
        };
        let dropped = match pushed {
            memory::Pushed::Kept(dropped) => dropped,
            memory::Pushed::TooLarge(frame) => {
                tracing::error!(
                    batch_id = %frame.batch_id,
                    bytes = frame.bytes.len(),
                    error = %crate::error_chain(&error),
                    "the spool cannot take a chunk and it is larger than the memory queue"
                );
                return Err(error);
            }
        };
        bump(&self.counters.chunks_unspooled, 1);
        bump(&self.counters.records_unspooled, u64::from(records));
        if self.spool_failing.swap(true, Ordering::Relaxed) {
            tracing::debug!(%batch_id, error = %crate::error_chain(&error), "chunk kept in memory");
        } else {
            tracing::warn!(
                %batch_id,
                error = %crate::error_chain(&error),
                "the spool cannot take chunks; keeping them in memory until they are sent"
            );
        }
        for old in &dropped {
            self.note_dropped_memory(old, "the memory queue is full");
        }
        self.backlog
            .send_modify(|b| *b = b.saturating_add(1).saturating_sub(dropped.len()));
        tracing::debug!(
            chunks = queued.0,
            bytes = queued.1,
            "chunks waiting in memory"
        );
        Ok(Accepted::InMemory)
    }

    /// Notes that the frame `id`, kept in memory, has left the queue for good.
    fn settle(&self, id: BatchId) {
        // Never more than a bound, for a caller that does not collect them.
        let mut settled = self.settled.lock().unwrap_or_else(|p| p.into_inner());
        if settled.len() >= MAX_SETTLED {
            settled.remove(0);
        }
        settled.push(id);
    }

    /// Counts and logs `frame`, dropped from the memory queue, and settles it.
    fn note_dropped_memory(&self, frame: &Frame, why: &str) {
        self.settle(frame.batch_id.clone());
        bump(&self.counters.chunks_dropped_memory, 1);
        bump(
            &self.counters.records_dropped_memory,
            u64::from(frame.records),
        );
        bump(
            &self.counters.bytes_dropped_memory,
            frame.bytes.len() as u64,
        );
        tracing::warn!(
            batch_id = %frame.batch_id,
            records = frame.records,
            why,
            "dropped a chunk kept in memory (the spool could not take it)"
        );
    }

    /// The spool took a frame again: moves the frames kept in memory to it, oldest
    /// first, so that a crash no longer loses them (each is settled once spooled). The
    /// first one the spool refuses stays at the front of the queue, and the rest with
    /// it. Returns the spool's length (`len` if nothing moved).
    ///
    /// A frame the sender is posting from memory at that moment may reach the
    /// collector twice (from memory, then from the spool): under one batch ID, so the
    /// collector drops the second copy.
    async fn respool_memory(&self, spool: Option<&Arc<Mutex<Spool>>>, mut len: usize) -> usize {
        let Some(spool) = spool else {
            return len;
        };
        let mut moved = 0u64;
        loop {
            // A copy: the frame stays in the queue (and counted in the backlog) until
            // the spool has it, so it is never in neither.
            let Some((id, frame)) = self.memory().front() else {
                break;
            };
            let spool = Arc::clone(spool);
            let bytes = frame.bytes.clone();
            // Never drop a spooled frame to move one from memory.
            let pushed = blocking(move || {
                let mut spool = spool.lock().unwrap_or_else(|p| p.into_inner());
                spool.push_keeping_oldest(&bytes)?;
                Ok(spool.len())
            })
            .await;
            match pushed {
                Ok(n) => {
                    len = n;
                    // Gone meanwhile (the sender delivered it): the spooled copy goes
                    // out again under its batch ID and the collector drops it.
                    if self.memory().remove(id).is_some() {
                        moved += 1;
                        bump(&self.counters.chunks_respooled, 1);
                        self.settle(frame.batch_id.clone());
                    }
                }
                Err(error) => {
                    tracing::debug!(
                        batch_id = %frame.batch_id,
                        error = %crate::error_chain(&error),
                        "moving a chunk kept in memory to the spool failed"
                    );
                    break;
                }
            }
        }
        if moved > 0 {
            tracing::info!(chunks = moved, "chunks kept in memory moved to the spool");
        }
        len
    }

    /// At close: writes the frames still in memory to the spool, oldest first, never
    /// dropping a spooled frame for them. Those it cannot take are not settled: a
    /// caller with a record journal keeps their intents open and sends them again at
    /// its next start; they are counted in `chunks_unsaved_at_close` and logged.
    async fn spool_memory(&self) {
        let Some(spool) = &self.spool else {
            return;
        };
        loop {
            let Some(frame) = self.memory().pop() else {
                return;
            };
            let spool = Arc::clone(spool);
            let bytes = frame.bytes.clone();
            let pushed = blocking(move || {
                spool
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_keeping_oldest(&bytes)
                    .map(|_| ())
            })
            .await;
            match pushed {
                Ok(()) => self.settle(frame.batch_id.clone()),
                Err(error) => {
                    bump(&self.counters.chunks_unsaved_at_close, 1);
                    bump(
                        &self.counters.records_unsaved_at_close,
                        u64::from(frame.records),
                    );
                    tracing::warn!(
                        batch_id = %frame.batch_id,
                        records = frame.records,
                        error = %crate::error_chain(&error),
                        "closing, and the spool cannot take a chunk kept in memory: it is left to the journal (a caller without one loses it)"
                    );
                }
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
                        batch_id: frame.batch_id.to_string(),
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
                // Read a short body so the connection can be reused; never a long one.
                let _ =
                    body::read_prefix(response, body::ACK_BODY_LIMIT, body::BODY_READ_TIME).await;
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
                let body = body::snippet(response).await;
                tracing::debug!(url = %self.url, batch_id = %frame.batch_id, status, body, "collector asked to retry");
                Attempt::Retry {
                    status: Some(status),
                    error: None,
                    retry_after,
                }
            }
            _ => Attempt::Reject {
                status,
                body: body::snippet(response).await,
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

/// Where the frame being sent lives.
#[derive(Clone, Copy, Debug)]
enum Source {
    Spool(SpoolId),
    Memory(MemoryId),
}

/// The background task: sends what the spool could not take (kept in memory), then
/// the spool, oldest first, until shutdown.
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
        // Frames kept in memory first: a crash would lose them, not the spooled ones.
        let front = inner.memory().front();
        let (source, frame) = match front {
            Some((id, frame)) => (Source::Memory(id), frame),
            None => {
                let next = {
                    let spool = Arc::clone(&spool);
                    blocking(move || {
                        let mut spool = spool.lock().unwrap_or_else(|p| p.into_inner());
                        let next = spool.oldest()?;
                        Ok((next, spool.len()))
                    })
                    .await
                };
                match next {
                    Ok((Some(chunk), _)) => {
                        disk_failures = 0;
                        let frame = Frame {
                            bytes: Bytes::from(chunk.frame),
                            batch_id: chunk.batch_id,
                            records: chunk.records,
                        };
                        (Source::Spool(chunk.id), frame)
                    }
                    Ok((None, len)) => {
                        disk_failures = 0;
                        inner.publish_backlog(len);
                        if len == 0 && inner.memory().len() == 0 {
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
                            // A frame kept in memory does not need the spool.
                            () = inner.wake.notified() => {}
                            () = crate::stopped(&mut shutdown) => return,
                        }
                        continue;
                    }
                }
            }
        };
        let mut attempts = 0;
        let settled = loop {
            attempts += 1;
            // Shutdown does not wait for an answer: the frame stays where it is.
            let attempt = tokio::select! {
                a = inner.post(&frame) => a,
                () = crate::stopped(&mut shutdown) => return,
            };
            match attempt {
                Attempt::Delivered => break Settle::Remove(source),
                Attempt::Reject { status, body } => {
                    inner.note_rejected(&frame, status, &body);
                    break Settle::Reject(
                        source,
                        format!("HTTP {status} from {}\n{body}\n", inner.url),
                    );
                }
                Attempt::Retry { retry_after, .. } => {
                    let wait = inner.backoff(attempts, retry_after);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        // New TLS material or backoff, or a flush: try it now.
                        () = inner.reconfigured.notified() => {}
                        () = crate::stopped(&mut shutdown) => return,
                    }
                    // A full spool (or memory queue) may have dropped it meanwhile:
                    // then it is gone (and counted as dropped), not sent.
                    let still = match source {
                        Source::Spool(id) => {
                            let spool = Arc::clone(&spool);
                            blocking(move || {
                                Ok(spool.lock().unwrap_or_else(|p| p.into_inner()).contains(id))
                            })
                            .await
                            .unwrap_or(true)
                        }
                        Source::Memory(id) => inner.memory().contains(id),
                    };
                    if !still {
                        break Settle::Gone;
                    }
                    bump(&inner.counters.retries, 1);
                }
            }
        };
        let spool_id = match settled {
            Settle::Remove(Source::Memory(id)) | Settle::Reject(Source::Memory(id), _) => {
                // A refused frame kept in memory is not set aside: the spool could
                // not take it. It was logged and counted as rejected.
                if inner.memory().remove(id).is_some() {
                    inner.settle(frame.batch_id.clone());
                }
                None
            }
            Settle::Remove(Source::Spool(id)) => Some((id, None)),
            Settle::Reject(Source::Spool(id), reason) => Some((id, Some(reason))),
            Settle::Gone => None,
        };
        let spool = Arc::clone(&spool);
        let done = blocking(move || {
            let mut spool = spool.lock().unwrap_or_else(|p| p.into_inner());
            match spool_id {
                Some((id, None)) => {
                    spool.remove(id)?;
                }
                Some((id, Some(reason))) => {
                    spool.reject(id, &reason)?;
                }
                None => {}
            }
            Ok(spool.len())
        })
        .await;
        match done {
            Ok(len) => inner.publish_backlog(len),
            Err(error) => {
                tracing::error!(error = %crate::error_chain(&error), "updating the spool failed");
            }
        }
    }
}

enum Settle {
    Remove(Source),
    Reject(Source, String),
    Gone,
}

/// Checks a collector URL as [`CollectorSink::start`] does, and returns the URL
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
        let pem = read_regular_file(path, MAX_OPERATOR_FILE_BYTES)
            .map_err(|e| SinkError::io("read", path, e))?;
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
            let mut pem = read_regular_file(cert, MAX_OPERATOR_FILE_BYTES)
                .map_err(|e| SinkError::io("read", cert, e))?;
            pem.push(b'\n');
            pem.extend(
                read_regular_file(key, MAX_OPERATOR_FILE_BYTES)
                    .map_err(|e| SinkError::io("read", key, e))?,
            );
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
