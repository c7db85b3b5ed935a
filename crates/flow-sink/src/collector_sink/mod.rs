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
//! | 408, 429, 5xx | try later (`Retry-After` in seconds or as an HTTP date is honoured) | retries with backoff |
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
//! [`Spool`](crate::Spool) (`fsync`ed) and returns: the chunk is durable. A background task started
//! with the sink sends spooled frames oldest first, one at a time, and deletes each
//! once the collector has it. A failed attempt is retried with exponential backoff and
//! full jitter ([`RetryPolicy`]) for as long as it takes; the spool's size cap
//! ([`SpoolConfig`](crate::SpoolConfig)) bounds what an outage can keep, and what it drops is counted.
//! Every chunk goes through the spool, so there is one path: order is kept, a crash at
//! any point leaves every accepted chunk on disk, and a restarted exporter sends what
//! the spool holds (same bytes, same batch IDs) before anything newer. (The exception:
//! a chunk the spool cannot take, [below](self#when-the-spool-cannot-take-a-chunk).)
//! [`flush`](crate::FlowSink::flush) makes a sender waiting to retry try at once and
//! waits (up to `flush_timeout`) until nothing is left to send;
//! [`shut_down`](CollectorSink::shut_down) stops the task without waiting for the collector
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
//! # Records dropped and the window's completeness
//!
//! Every frame the sink drops before delivery (the spool's oldest, when it is over
//! its cap or its disk is full; the memory queue's oldest, when it is full) has its
//! records noted under its window (the exporter run and the window start of its
//! header). When the window's last chunk is then handed over
//! ([`accept`](crate::FlowSink::accept), [`accept_chunk`](CollectorSink::accept_chunk),
//! [`deliver`](crate::FlowSink::deliver)) with a
//! [`completeness`](flow_batch::Chunk::completeness), those records are added to its
//! [`lost_spool`](flow_batch::Completeness::lost_spool) before it is encoded (counted
//! in [`records_lost_spool_reported`](CollectorCounters::records_lost_spool_reported)).
//! What cannot be reported so is counted apart: frames dropped after the window's
//! last chunk was encoded (to make room for it, often), the last chunk itself, or a
//! window whose last chunk has no completeness
//! ([`records_lost_spool_unreported`](CollectorCounters::records_lost_spool_unreported));
//! and the drops of the oldest window when more than 64 windows wait for their last
//! chunk ([`records_lost_spool_forgotten`](CollectorCounters::records_lost_spool_forgotten)).
//! The sink remembers drops in memory only: drops before a restart are not reported
//! after it. (Frames a reopened spool drops at start to fit its cap are noted like
//! any other, under the run that spooled them, for a last chunk of that run replayed
//! from a journal.) A frame given to [`deliver_frame`](CollectorSink::deliver_frame)
//! is forwarded as it is.
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
//! `deliver` hands the frame to the sending task and waits while it is sent and
//! retried until it succeeds or [`RetryPolicy::max_attempts`] is reached; then it
//! returns the error: nothing is kept. For tests and for callers that keep chunks
//! themselves.
//!
//! # Inside
//!
//! One task sends (`send_task`): it owns the spool and the memory queue (`backlog`;
//! without a spool, the frames callers wait on), takes frames and orders through a
//! channel, runs the one retry loop, and publishes what waits (a `watch` that
//! [`counters`](CollectorSink::counters) and `flush` read). Spool operations run on
//! the blocking pool. The handle (`core`) encodes chunks in the caller's task and
//! hands frames to the send task. An attempt goes over a `transport`: this sink's is
//! HTTP (one request and what its answer means, `response`); the
//! `KafkaSink` (feature `kafka`) is the same core, send task and spool with a Kafka
//! producer as its transport. The rest: settings (`config`), the HTTP client with its
//! TLS material (`client`), reading an answer's body without trusting it (`body`),
//! the counters (`counters`); the records dropped per window are in a ledger the
//! spool, the memory queue and the encoding caller share (`crate::window_losses`).

mod backlog;
pub(crate) mod body;
pub(crate) mod client;
mod config;
pub(crate) mod core;
pub(crate) mod counters;
pub(crate) mod frame;
mod memory;
mod response;
mod send_task;
pub(crate) mod shared;
pub(crate) mod transport;

use std::time::Duration;

use async_trait::async_trait;
use flow_batch::{Chunk, wire::BatchId};

pub use self::{
    config::{ClientTls, CollectorConfig, chunk_url},
    counters::CollectorCounters,
};
pub use crate::sink::Accepted;

use self::{
    core::{CoreConfig, SinkCore},
    transport::Transport,
};
use crate::{error::SinkError, retry::RetryPolicy, sink::FlowSink};

/// The collector protocol's constants, defined next to the frame format they carry.
pub use flow_batch::wire::{CHUNK_CONTENT_TYPE, CHUNKS_PATH, RESULT_HEADER};
/// Default of [`CollectorConfig::memory_max_bytes`]: 64 MiB.
pub const DEFAULT_MEMORY_MAX_BYTES: u64 = 64 << 20;
/// Default of [`CollectorConfig::memory_max_chunks`].
pub const DEFAULT_MEMORY_MAX_CHUNKS: usize = 1024;
/// Sends chunks to a collector over HTTP(S); see the [module docs](self).
pub struct CollectorSink {
    core: SinkCore,
    connect_timeout: Duration,
    request_timeout: Duration,
}

impl std::fmt::Debug for CollectorSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CollectorSink")
            .field("url", &self.core.destination())
            .finish_non_exhaustive()
    }
}

impl CollectorSink {
    /// Validates `config`, loads the TLS material, opens the spool (picking up what
    /// a previous run left) and starts the task that sends. Must be called inside a
    /// tokio runtime.
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
        let client = client::build_client(
            &config.tls,
            config.connect_timeout,
            config.request_timeout,
            &url,
        )?;
        let core = SinkCore::start(
            CoreConfig {
                destination: url,
                host: config.host,
                instance: config.instance,
                transport: Transport::Http(client),
                retry: config.retry,
                spool_dir: config.spool_dir,
                spool: config.spool,
                memory_max_bytes: config.memory_max_bytes,
                memory_max_chunks: config.memory_max_chunks,
                flush_timeout: config.flush_timeout,
            },
            "CollectorSink::start must be called inside a tokio runtime",
        )?;
        Ok(CollectorSink {
            core,
            connect_timeout: config.connect_timeout,
            request_timeout: config.request_timeout,
        })
    }

    /// The URL chunks are posted to.
    pub fn url(&self) -> &str {
        self.core.destination()
    }

    /// The retry policy in force.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.core.retry_policy()
    }

    /// Replaces the TLS settings and the retry policy of the running sink (see the
    /// [module docs](self#changing-tls-material-and-backoff-while-running)). The TLS
    /// files are read again even when their paths did not change. On error (a file
    /// missing or unreadable, no certificate in it, a certificate without its key, an
    /// invalid policy) the sink keeps the settings it had. Connections already open
    /// finish their request; the next one is made with the new material.
    pub fn reconfigure(&self, tls: &ClientTls, retry: RetryPolicy) -> Result<(), SinkError> {
        retry.validate()?;
        let client = client::build_client(
            tls,
            self.connect_timeout,
            self.request_timeout,
            self.core.destination(),
        )?;
        // Wakes a sender waiting to retry: it tries at once with the new settings.
        self.core.replace(Transport::Http(client), retry)
    }

    /// A snapshot of the counters (and of the spool's).
    pub fn counters(&self) -> CollectorCounters {
        self.core.counters()
    }

    /// Delivers an already encoded frame as it is, keeping its batch ID (a relay
    /// forwarding frames it received, say; the exporter's pipeline hands over chunks
    /// through [`FlowSink::accept`] and [`FlowSink::replay`] instead). Same contract
    /// as [`deliver`](crate::FlowSink::deliver).
    pub async fn deliver_frame(&self, frame: Vec<u8>) -> Result<(), SinkError> {
        self.accept_frame(frame).await.map(|_| ())
    }

    /// [`deliver_frame`](CollectorSink::deliver_frame), saying where the frame went:
    /// [`Accepted::InMemory`] when the spool could not take it.
    pub async fn accept_frame(&self, frame: Vec<u8>) -> Result<Accepted, SinkError> {
        self.core.accept_frame(frame).await
    }

    /// [`deliver`](crate::FlowSink::deliver), saying where the chunk went:
    /// [`Accepted::InMemory`] when the spool could not take it (see the
    /// [module docs](self#when-the-spool-cannot-take-a-chunk)).
    pub async fn accept_chunk(&self, chunk: &Chunk) -> Result<Accepted, SinkError> {
        self.core.encode_and_hand_over(chunk, None).await
    }

    /// The batch IDs of the frames kept in memory ([`Accepted::InMemory`]) that were
    /// settled since the last call, in the order they were settled: delivered,
    /// rejected for good, dropped from the queue, or written to the spool (once it
    /// takes chunks again, or by [`shut_down`](CollectorSink::shut_down)). A caller
    /// with a record journal marks them done (see the
    /// [module docs](self#when-the-spool-cannot-take-a-chunk)).
    pub fn take_settled(&self) -> Vec<BatchId> {
        self.core.take_settled()
    }

    /// Stops the sending task at once, a request in flight included (its chunk stays
    /// spooled, and a collector that stored it drops it as a duplicate next time). It
    /// does not wait for the collector: call [`flush`](crate::FlowSink::flush) first
    /// for that. What is still spooled stays on disk for the next run; frames kept in
    /// memory are written to the spool if it takes them now (never dropping a spooled
    /// frame for them); the others are left unsettled for the caller's journal
    /// (counted in `chunks_unsaved_at_close`, logged). The sink stays in place so that
    /// [`take_settled`](CollectorSink::take_settled) can still be called (the frames
    /// written from memory to the spool, or dropped, are settled); it sends nothing
    /// more afterwards. [`FlowSink::close`] is this.
    pub async fn shut_down(&self) -> Result<(), SinkError> {
        self.core.shut_down("collector sink sender").await
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
        self.core.encode_and_hand_over(chunk, Some(id)).await
    }

    fn take_settled(&self) -> Vec<BatchId> {
        CollectorSink::take_settled(self)
    }

    async fn close(&self) -> Result<(), SinkError> {
        self.shut_down().await
    }

    async fn flush(&self) -> Result<(), SinkError> {
        self.core.flush().await
    }
}
