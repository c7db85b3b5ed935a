//! `IpfixSink`: records exported as IPFIX (RFC 7011) over UDP or TCP, through the same
//! durable spool as the [`CollectorSink`](crate::CollectorSink) (feature `ipfix`).
//!
//! `docs/ipfix.md` is the operator's description; `docs/schema.md` names every field's
//! element.
//!
//! # The messages
//!
//! Every record is one data record, under one of four data templates
//! ([`TEMPLATE_IPV4`], [`TEMPLATE_IPV6`], and the same two without the start times
//! for a connection whose open was not seen). Their elements are [`ELEMENTS`], in
//! order: IANA's (addresses, ports, `protocolIdentifier` 6, `biflowDirection`, start
//! and end in milliseconds and in nanoseconds, `octetTotalCount` and
//! `packetTotalCount`, their RFC 5103 reverse elements, `flowEndReason`,
//! `tcpControlBits`) and ours
//! under [`IpfixSinkConfig::enterprise_number`] (TCP statistics, close state and
//! reason, identity, flow ID, process; strings in RFC 7011's variable-length
//! encoding, an empty string for a null). An options template
//! ([`TEMPLATE_EXPORTER`]) and its one record name each observation domain's
//! exporter host ID. The local end is the source. `tcpControlBits` are the flags the
//! connection's life implies ([`tcp_control_bits`]), not flags seen on segments: the
//! exporter sees socket state changes, not segments.
//!
//! The observation domain is derived from the frame's host ID
//! ([`observation_domain_for`]) unless configured. A message's sequence number counts
//! the data records sent before it in its domain and transport session (the options
//! record included).
//!
//! A window's completeness (its last chunk's counts of records lost) is **not**
//! exported: IPFIX has no element for it, and a collector that needs it reads the
//! collector sink's output or Kafka.
//!
//! # Transports
//!
//! - **UDP** ([`IpfixProtocol::Udp`]): one message per datagram, each at most
//!   [`IpfixSinkConfig::max_message_bytes`] (default 1,400: no IP fragments). The
//!   templates go first in a session and again every
//!   [`template_refresh_interval`](IpfixSinkConfig::template_refresh_interval)
//!   (default 60 s; and after [`template_refresh_messages`](IpfixSinkConfig::template_refresh_messages)
//!   messages if set), so a collector that starts later decodes from the next
//!   refresh on. The socket is connected: an ICMP error for a datagram (nothing
//!   listening) fails a later send, and that attempt is retried on a new socket (a
//!   new session, the templates sent at once).
//! - **TCP** ([`IpfixProtocol::Tcp`]): one connection, kept across attempts; the
//!   templates at its start; messages up to 65,535 bytes. An attempt writes the
//!   frame's messages and waits until the collector's TCP stack acknowledged every
//!   byte, all within [`write_timeout`](IpfixSinkConfig::write_timeout): a
//!   collector that stops reading fails the attempt, the connection is dropped and
//!   the frame retried on a new one. Connecting is bounded by
//!   [`connect_timeout`](IpfixSinkConfig::connect_timeout).
//!
//! # Delivery: the spool and the journal are unchanged
//!
//! [`deliver`](crate::FlowSink::deliver) writes the chunk's frame to the spool
//! (`fsync`ed) and returns; one task exports spooled frames oldest first, one at a
//! time, and deletes each once its messages left. Everything the
//! [collector sink's docs](crate::collector_sink) say of the spool, the memory queue
//! for a full disk, `take_settled`, `flush` and `close` holds word for word.
//!
//! What "left" means differs: over UDP, the messages were handed to the network
//! (fire and forget: IPFIX over UDP has no acknowledgement, so a datagram lost on the
//! way, or sent while the collector was down before any ICMP error came back, is
//! lost). Over TCP, the collector's host acknowledged every byte: **at least once**,
//! since an attempt that fails halfway (a broken connection, a timeout) is retried
//! whole, and the records of the messages that did arrive arrive twice. A collector
//! that crashes after its kernel acknowledged loses what it had not processed.
//!
//! # What each failure does
//!
//! | outcome of an attempt | the sink |
//! | --- | --- |
//! | every message left | forgets the frame |
//! | name not resolved, connection refused or timed out, send or write error, ICMP unreachable, write or acknowledgement timeout, connection closed by the collector | drops the session, retries with backoff ([`RetryPolicy`], for as long as it takes); a warning at most every [`error_log_interval`](IpfixSinkConfig::error_log_interval) |
//! | a spooled frame that does not decode | refused for good: moved to `rejected/` with the error, logged, counted |

mod carrier;
mod config;
mod counters;
pub mod elements;
mod encode;

use std::sync::Arc;

use async_trait::async_trait;
use flow_batch::{Chunk, wire::BatchId};

use self::{
    carrier::{CarrierSettings, IpfixCarrier},
    counters::OwnCounters,
};
pub use self::{
    config::{
        DEFAULT_ENTERPRISE_NUMBER, DEFAULT_TCP_MESSAGE_BYTES, DEFAULT_UDP_MESSAGE_BYTES,
        IpfixCollector, IpfixProtocol, IpfixSinkConfig, IpfixUrlError,
    },
    counters::IpfixCounters,
    elements::{
        ELEMENTS, InformationElement, REVERSE_PEN, Registry, TEMPLATE_EXPORTER, TEMPLATE_IPV4,
        TEMPLATE_IPV4_NO_START, TEMPLATE_IPV6, TEMPLATE_IPV6_NO_START,
    },
    encode::{
        IpfixEncoder, MAX_MESSAGE_LEN, MIN_MESSAGE_BYTES, Messages, export_time_now,
        observation_domain_for, tcp_control_bits,
    },
};
use crate::{
    collector_sink::{
        core::{CoreConfig, SinkCore},
        transport::Transport,
    },
    error::SinkError,
    retry::RetryPolicy,
    sink::{Accepted, FlowSink},
};

/// Exports chunks' records as IPFIX; see the [module docs](self).
pub struct IpfixSink {
    core: SinkCore,
    carrier: Arc<IpfixCarrier>,
    own: Arc<OwnCounters>,
    collector: IpfixCollector,
}

impl std::fmt::Debug for IpfixSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpfixSink")
            .field("destination", &self.core.destination())
            .finish_non_exhaustive()
    }
}

impl IpfixSink {
    /// Validates `config`, opens the spool (picking up what a previous run left) and
    /// starts the task that exports. Never fails because of the collector: the first
    /// attempt connects (resolving its name then), and an unreachable collector is
    /// retried while chunks wait in the spool. Must be called inside a tokio runtime.
    pub fn start(config: IpfixSinkConfig) -> Result<IpfixSink, SinkError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(SinkError::InvalidConfig {
                key: "runtime",
                value: "none".into(),
                reason: "IpfixSink::start must be called inside a tokio runtime",
            });
        }
        config.validate()?;
        let encoder = IpfixEncoder::new(config.enterprise_number, config.max_message_bytes)?;
        let own = Arc::new(OwnCounters::default());
        let carrier = Arc::new(IpfixCarrier::new(
            CarrierSettings {
                collector: config.collector.clone(),
                encoder,
                observation_domain_id: config.observation_domain_id,
                refresh_interval: config.template_refresh_interval,
                refresh_messages: config.template_refresh_messages,
                connect_timeout: config.connect_timeout,
                write_timeout: config.write_timeout,
                log_interval: config.error_log_interval,
            },
            Arc::clone(&own),
        )?);
        let core = SinkCore::start(
            CoreConfig {
                destination: format!("ipfix+{}", config.collector),
                host: config.host.clone(),
                instance: config.instance,
                transport: Transport::Carrier(carrier.clone()),
                retry: config.retry.clone(),
                spool_dir: config.spool_dir.clone(),
                spool: config.spool.clone(),
                memory_max_bytes: config.memory_max_bytes,
                memory_max_chunks: config.memory_max_chunks,
                flush_timeout: config.flush_timeout,
            },
            "IpfixSink::start must be called inside a tokio runtime",
        )?;
        Ok(IpfixSink {
            core,
            carrier,
            own,
            collector: config.collector,
        })
    }

    /// `ipfix+udp://HOST:PORT` or `ipfix+tcp://HOST:PORT`, as logs and errors name the
    /// sink.
    pub fn destination(&self) -> &str {
        self.core.destination()
    }

    /// The collector.
    pub fn collector(&self) -> &IpfixCollector {
        &self.collector
    }

    /// The retry policy in force.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.core.retry_policy()
    }

    /// Replaces the retry policy of the running sink (checked first: on error the
    /// sink keeps the one it had). A sender waiting to retry tries again at once.
    pub fn set_retry_policy(&self, retry: RetryPolicy) -> Result<(), SinkError> {
        let carrier: Arc<IpfixCarrier> = self.carrier.clone();
        self.core.replace(Transport::Carrier(carrier), retry)
    }

    /// A snapshot of the counters (and of the spool's).
    pub fn counters(&self) -> IpfixCounters {
        IpfixCounters::from_parts(self.core.counters(), &self.own)
    }

    /// Exports an already encoded frame, keeping its batch ID. Same contract as
    /// [`deliver`](crate::FlowSink::deliver); says where the frame went.
    pub async fn accept_frame(&self, frame: Vec<u8>) -> Result<Accepted, SinkError> {
        self.core.accept_frame(frame).await
    }

    /// [`deliver`](crate::FlowSink::deliver), saying where the chunk went:
    /// [`Accepted::InMemory`] when the spool could not take it.
    pub async fn accept_chunk(&self, chunk: &Chunk) -> Result<Accepted, SinkError> {
        self.core.encode_and_hand_over(chunk, None).await
    }

    /// The batch IDs of the frames kept in memory ([`Accepted::InMemory`]) that were
    /// settled since the last call (see [`CollectorSink::take_settled`](crate::CollectorSink::take_settled)).
    pub fn take_settled(&self) -> Vec<BatchId> {
        self.core.take_settled()
    }

    /// Stops the exporting task at once, an attempt in flight included (its frame
    /// stays spooled and is exported again by the next run: over TCP its records that
    /// already arrived arrive twice), writes the frames kept in memory to the spool if
    /// it takes them, and closes the transport session. Call
    /// [`flush`](crate::FlowSink::flush) first to export what waits.
    /// [`FlowSink::close`] is this.
    pub async fn shut_down(&self) -> Result<(), SinkError> {
        let stopped = self.core.shut_down("ipfix sink exporter").await;
        self.carrier.close().await;
        stopped
    }
}

#[async_trait]
impl FlowSink for IpfixSink {
    fn name(&self) -> &str {
        "ipfix"
    }

    async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
        self.accept_chunk(chunk).await.map(|_| ())
    }

    /// Encodes `chunk` under `id`, so that the spooled frame's batch ID is the one the
    /// caller's journal knows.
    async fn accept(&self, chunk: &Chunk, id: &BatchId) -> Result<Accepted, SinkError> {
        self.core.encode_and_hand_over(chunk, Some(id)).await
    }

    fn take_settled(&self) -> Vec<BatchId> {
        IpfixSink::take_settled(self)
    }

    async fn flush(&self) -> Result<(), SinkError> {
        self.core.flush().await
    }

    async fn close(&self) -> Result<(), SinkError> {
        self.shut_down().await
    }
}
