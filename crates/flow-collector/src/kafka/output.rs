//! Attributed flows to a Kafka topic, one message per flow.
//!
//! Each message's value is the flow's JSON line (the collector's output fields,
//! `docs/collector-output.md`, without the newline); its key is the connection (the
//! record's flow ID when it has one, so that every record of one connection, interim
//! and final, lands in one partition in order; else the host and the 4-tuple); its
//! headers are [`FLOW_ID_HEADER`] (`<batch ID>/<record index>`, deterministic: the
//! same flow written twice has the same ID) and [`KIND_HEADER`] (`flow`). A window's
//! completeness record goes to the same topic, keyed by the host, kind
//! `completeness`.
//!
//! The producer is librdkafka's idempotent producer, `acks=all`, compressed, with no
//! message timeout: a message is retried until the brokers take it (a broker outage
//! delays, never drops). Every message is numbered in an [`Acknowledgements`] book
//! and acknowledged by its delivery report; the collector marks a flow emitted in its
//! ledger only once the book says Kafka has it ([`commit`](FlowOutput::commit) never
//! waits under the pipeline's lock). A delivery that fails for good-but-fixable reasons
//! (authorization, missing topic) is produced again; one larger than the brokers
//! accept is dropped, counted and logged (a flow's line is a few hundred bytes: it
//! does not happen unless the topic's limit is set absurdly low). When librdkafka's
//! queue is full the messages wait in order in a queue of this output, and the
//! collector refuses chunks (`503`) while more than `max_pending` messages wait.
//!
//! With a [`ConnectionRoute`] (`--connection-topic`) the output writes no flow to
//! the output topic: a node's intake hands each chunk's records, undecided, to the
//! nodes that attribute them, one message per chunk and partition of the connection
//! topic (the records whose connections route there, `crate::connections`), kind
//! `records`, header [`FLOW_ID_HEADER`] the batch ID; completeness records still go
//! to the output topic. The guarantees are the same: a chunk's records are marked
//! emitted in the intake's ledger once Kafka acknowledged them.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use flow_kafka::{
    ErrorKind, FLOW_ID_HEADER, KIND_HEADER, KafkaError, KafkaSettings,
    rdkafka::{
        ClientContext, Message,
        error::KafkaError as ClientError,
        message::{Header, Headers, OwnedHeaders},
        producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer},
        types::RDKafkaErrorCode,
    },
};

use super::stats::KafkaStats;
use crate::{
    attribution::{AttributedFlow, connection_partition},
    completeness::WindowReport,
    connections::encode_routed_within,
    output::{
        Acknowledgements, FlowKey, FlowOutput, OutputError, OutputPosition,
        write_completeness_line, write_json_line,
    },
};

/// One message, as produced (kept only while it waits for room in librdkafka's queue
/// or to be produced again after a failed delivery).
#[derive(Debug)]
struct Outgoing {
    number: u64,
    /// The connection topic's partition, for routed records (else the output topic,
    /// partitioned by key).
    partition: Option<i32>,
    key: Vec<u8>,
    value: Vec<u8>,
    id: String,
    kind: &'static str,
}

/// What the delivery reports share with the output.
#[derive(Debug)]
struct Deliveries {
    acks: Acknowledgements,
    stats: Arc<KafkaStats>,
    /// Messages whose delivery failed in a way worth another try.
    failed: Mutex<VecDeque<Outgoing>>,
    /// The last delivery error, for the commit's error.
    last_error: Mutex<Option<String>>,
    /// Log rate limit: when the last delivery error was logged.
    last_log: Mutex<Option<Instant>>,
    /// The idempotent producer hit a fatal error: it must be replaced (its messages
    /// come back as failed deliveries and are produced again by the new one).
    fatal: AtomicBool,
}

/// The producer's context: delivery reports land here (on librdkafka's polling thread).
struct DeliveryContext {
    deliveries: Arc<Deliveries>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<(u64, &'static str)>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Box<(u64, &'static str)>) {
        let (number, kind) = *opaque;
        let d = &self.deliveries;
        match result {
            Ok(_) => {
                KafkaStats::add(&d.stats.output_acknowledged, 1);
                d.acks.acknowledge(number);
            }
            Err((error, message)) => {
                let error_kind = ErrorKind::of(error);
                KafkaStats::error(&d.stats.output_errors, error_kind);
                *d.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
                let id = message
                    .headers()
                    .and_then(|h| {
                        h.iter()
                            .find(|h| h.key == FLOW_ID_HEADER)
                            .and_then(|h| h.value)
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                    })
                    .unwrap_or_default();
                if error_kind == ErrorKind::Fatal {
                    d.fatal.store(true, Ordering::Relaxed);
                }
                if error_kind == ErrorKind::MessageTooLarge && kind == ROUTED_KIND {
                    // Routed records are not decided yet: never dropped. Kept and
                    // produced again (the output stalls, the chunks wait, logged).
                    tracing::error!(%id, error = %error, bytes = message.payload_len(),
                        "Kafka refused routed records as too large; raise the connection topic's max.message.bytes (they are kept and produced again)");
                } else if error_kind == ErrorKind::MessageTooLarge {
                    KafkaStats::add(&d.stats.output_dropped_too_large, 1);
                    tracing::error!(%id, error = %error, bytes = message.payload_len(),
                        "Kafka refused a flow message as too large; it is dropped");
                    d.acks.acknowledge(number);
                    return;
                }
                d.log_rarely(error);
                d.failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_back(Outgoing {
                        number,
                        partition: (kind == ROUTED_KIND).then(|| message.partition()),
                        key: message.key().map(<[u8]>::to_vec).unwrap_or_default(),
                        value: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                        id,
                        kind,
                    });
            }
        }
    }
}

impl Deliveries {
    /// Logs a delivery error at most every 10 s.
    fn log_rarely(&self, error: &ClientError) {
        let mut last = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            *last = Some(Instant::now());
            tracing::error!(error = %error,
                "a Kafka delivery failed; the message is kept and produced again");
        }
    }
}

/// Settings of a [`KafkaOutput`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct KafkaOutputConfig {
    /// The cluster.
    pub settings: KafkaSettings,
    /// The topic flows go to.
    pub topic: String,
    /// How long acknowledgements may stall, with messages outstanding, before a
    /// commit reports the output failing (default 2 s). A commit never waits.
    pub commit_timeout: Duration,
    /// Most messages waiting for the brokers before chunks are refused (default
    /// 200,000).
    pub max_pending: u64,
    /// Route records, undecided, to the connection topic instead of writing flows
    /// (see the module docs; default `None`).
    pub route: Option<ConnectionRoute>,
}

/// Where an intake routes its chunks' records: a topic and its partition count (read
/// at start; every node must route with the same count).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionRoute {
    /// The connection topic.
    pub topic: String,
    /// Its partitions.
    pub partitions: u32,
}

impl KafkaOutputConfig {
    /// Flows to `topic` on the cluster of `settings`.
    pub fn new(settings: KafkaSettings, topic: impl Into<String>) -> KafkaOutputConfig {
        KafkaOutputConfig {
            settings,
            topic: topic.into(),
            commit_timeout: Duration::from_secs(2),
            max_pending: 200_000,
            route: None,
        }
    }

    /// Sets [`route`](KafkaOutputConfig::route).
    pub fn with_route(mut self, route: ConnectionRoute) -> KafkaOutputConfig {
        self.route = Some(route);
        self
    }
}

/// Attributed flows to a Kafka topic (see the module docs).
pub struct KafkaOutput {
    config: KafkaOutputConfig,
    producer: ThreadedProducer<DeliveryContext>,
    deliveries: Arc<Deliveries>,
    /// Messages librdkafka had no room for, in order.
    waiting: VecDeque<Outgoing>,
    /// The acknowledgement mark last seen to move, and when.
    last_progress: (u64, Instant),
    destination: String,
    buffer: Vec<u8>,
}

impl std::fmt::Debug for KafkaOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaOutput")
            .field("destination", &self.destination)
            .field("waiting", &self.waiting.len())
            .finish_non_exhaustive()
    }
}

impl KafkaOutput {
    /// Creates the producer. Does not wait for the cluster (check the topic first
    /// with [`flow_kafka::check_topic`] for a clear error at start).
    pub fn new(
        config: KafkaOutputConfig,
        stats: Arc<KafkaStats>,
    ) -> Result<KafkaOutput, KafkaError> {
        let deliveries = Arc::new(Deliveries {
            acks: Acknowledgements::new(),
            stats,
            failed: Mutex::new(VecDeque::new()),
            last_error: Mutex::new(None),
            last_log: Mutex::new(None),
            fatal: AtomicBool::new(false),
        });
        let producer = create_producer(&config.settings, &deliveries)?;
        Ok(KafkaOutput {
            destination: format!(
                "Kafka topic {} on {}",
                config.topic, config.settings.brokers
            ),
            config,
            producer,
            deliveries,
            waiting: VecDeque::new(),
            last_progress: (0, Instant::now()),
            buffer: Vec::with_capacity(1024),
        })
    }

    /// Hands `message` to librdkafka, or keeps it (in order) when its queue is full.
    fn send(&mut self, message: Outgoing) {
        if !self.waiting.is_empty() {
            self.waiting.push_back(message);
            return;
        }
        if let Some(back) = self.try_send(message) {
            self.waiting.push_back(back);
        }
    }

    /// Produces `message`; gives it back when librdkafka's queue is full.
    fn try_send(&self, message: Outgoing) -> Option<Outgoing> {
        let stats = &self.deliveries.stats;
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: FLOW_ID_HEADER,
                value: Some(message.id.as_bytes()),
            })
            .insert(Header {
                key: KIND_HEADER,
                value: Some(message.kind.as_bytes()),
            });
        let topic = match (&self.config.route, message.partition) {
            (Some(route), Some(_)) => &route.topic,
            _ => &self.config.topic,
        };
        let mut record =
            BaseRecord::with_opaque_to(topic, Box::new((message.number, message.kind)))
                .key(&message.key)
                .payload(&message.value)
                .headers(headers);
        if let Some(partition) = message.partition {
            record = record.partition(partition);
        }
        match self.producer.send(record) {
            Ok(()) => {
                KafkaStats::add(&stats.output_produced, 1);
                KafkaStats::add(&stats.output_bytes, message.value.len() as u64);
                None
            }
            Err((error, _)) => {
                let kind = ErrorKind::of(&error);
                KafkaStats::error(&stats.output_errors, kind);
                if kind == ErrorKind::Fatal {
                    self.deliveries.fatal.store(true, Ordering::Relaxed);
                }
                if kind == ErrorKind::MessageTooLarge && message.partition.is_some() {
                    // Routed records are not decided yet: never dropped (see above).
                    tracing::error!(id = %message.id, bytes = message.value.len(),
                        "routed records are larger than Kafka accepts; raise the connection topic's max.message.bytes (they wait and are produced again)");
                    return Some(message);
                }
                if kind == ErrorKind::MessageTooLarge {
                    KafkaStats::add(&stats.output_dropped_too_large, 1);
                    tracing::error!(id = %message.id, bytes = message.value.len(),
                        "a flow message is larger than Kafka accepts; it is dropped");
                    self.deliveries.acks.acknowledge(message.number);
                    return None;
                }
                if error.rdkafka_error_code() != Some(RDKafkaErrorCode::QueueFull) {
                    tracing::warn!(error = %error, "producing a flow message failed; it waits and is produced again");
                }
                Some(message)
            }
        }
    }

    /// Produces again what failed, then what waits for room, in order, until
    /// librdkafka's queue is full again. A producer that hit a fatal error is
    /// replaced first.
    fn resend(&mut self) {
        // librdkafka reports a fatal idempotence error on the client (and on produce
        // calls), not on delivery reports: ask it.
        if self.producer.client().fatal_error().is_some() {
            self.deliveries.fatal.store(true, Ordering::Relaxed);
        }
        if self.deliveries.fatal.swap(false, Ordering::Relaxed) {
            tracing::error!("the Kafka producer hit a fatal error; replacing it");
            // Purging the old one hands its messages back as failed deliveries.
            self.producer.purge(
                flow_kafka::rdkafka::producer::PurgeConfig::default()
                    .queue()
                    .inflight(),
            );
            let _ = self.producer.flush(Duration::from_secs(1));
            match create_producer(&self.config.settings, &self.deliveries) {
                Ok(producer) => self.producer = producer,
                Err(e) => {
                    tracing::error!(error = %crate::error_chain(&e), "creating a new Kafka producer failed");
                    self.deliveries.fatal.store(true, Ordering::Relaxed);
                    return;
                }
            }
        }
        let failed: Vec<Outgoing> = self
            .deliveries
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        let retried = failed.len() as u64;
        KafkaStats::add(&self.deliveries.stats.output_retried, retried);
        for message in failed.into_iter().rev() {
            self.waiting.push_front(message);
        }
        while let Some(message) = self.waiting.pop_front() {
            if let Some(back) = self.try_send(message) {
                self.waiting.push_front(back);
                break;
            }
        }
    }

    /// Numbers one message and sends it.
    fn produce(&mut self, key: Vec<u8>, id: String, kind: &'static str) {
        self.produce_to(None, key, id, kind);
    }

    /// Numbers one message for `partition` of the connection topic (or the output
    /// topic) and sends it.
    fn produce_to(&mut self, partition: Option<i32>, key: Vec<u8>, id: String, kind: &'static str) {
        let number = self.deliveries.acks.issue(1);
        let value = std::mem::take(&mut self.buffer);
        self.send(Outgoing {
            number,
            partition,
            key,
            value,
            id,
            kind,
        });
        self.buffer = Vec::with_capacity(1024);
    }
}

/// A producer whose delivery reports go to `deliveries`.
fn create_producer(
    settings: &KafkaSettings,
    deliveries: &Arc<Deliveries>,
) -> Result<ThreadedProducer<DeliveryContext>, KafkaError> {
    settings
        .producer_config(None)
        .create_with_context(DeliveryContext {
            deliveries: Arc::clone(deliveries),
        })
        .map_err(|source| KafkaError::Client {
            what: "producer creation",
            source,
        })
}

/// The kind header of a connection-topic message.
pub(crate) const ROUTED_KIND: &str = "records";

impl KafkaOutput {
    /// Routes `flows`' records (undecided) to the connection topic: one message per
    /// run of flows of one chunk and partition.
    fn route(
        &mut self,
        route: &ConnectionRoute,
        flows: &[AttributedFlow],
    ) -> Result<(), OutputError> {
        // Every message is encoded before any is produced: an encoding error leaves
        // nothing produced, and the pipeline's retry does not produce a message twice.
        let encode_error = |e: bincode::Error| OutputError::Io {
            operation: "encode",
            path: route.topic.clone().into(),
            source: std::io::Error::other(e.to_string()),
        };
        let mut messages: Vec<(i32, String, Vec<u8>, u64)> = Vec::new();
        let mut start = 0;
        while start < flows.len() {
            let batch = &flows[start].batch;
            let end = flows[start..]
                .iter()
                .position(|f| !Arc::ptr_eq(&f.batch, batch))
                .map_or(flows.len(), |n| start + n);
            let mut by_partition: std::collections::BTreeMap<u32, Vec<&AttributedFlow>> =
                std::collections::BTreeMap::new();
            for flow in &flows[start..end] {
                let partition =
                    connection_partition(&flow.record, flow.host_id(), route.partitions);
                by_partition.entry(partition).or_default().push(flow);
            }
            let id = batch.to_string();
            for (partition, part) in by_partition {
                let partition = i32::try_from(partition).unwrap_or(0);
                let pieces = encode_routed_within(
                    batch,
                    part.iter().map(|f| (f.record_index, &f.record)),
                    ROUTED_MESSAGE_BUDGET,
                )
                .map_err(encode_error)?;
                for (value, records) in pieces {
                    messages.push((partition, id.clone(), value, u64::from(records)));
                }
            }
            start = end;
        }
        for (partition, id, value, records) in messages {
            KafkaStats::add(&self.deliveries.stats.routed_records, records);
            self.buffer = value;
            self.produce_to(Some(partition), id.clone().into_bytes(), id, ROUTED_KIND);
        }
        Ok(())
    }
}

/// Most bytes of one connection-topic message: below librdkafka's and Kafka's
/// default 1,000,000-byte message limit, whatever the chunk's size.
pub(crate) const ROUTED_MESSAGE_BUDGET: usize = 900_000;

/// The message key of a flow: its connection.
fn flow_key(flow: &AttributedFlow) -> Vec<u8> {
    let r = &flow.record;
    match &r.flow_id {
        Some(id) => id.to_string().into_bytes(),
        None => format!("{}|{}|{}", flow.host_id(), r.local, r.remote).into_bytes(),
    }
}

impl FlowOutput for KafkaOutput {
    fn write(&mut self, flows: &[AttributedFlow]) -> Result<(), OutputError> {
        self.resend();
        if let Some(route) = self.config.route.clone() {
            return self.route(&route, flows);
        }
        for flow in flows {
            self.buffer.clear();
            write_json_line(&mut self.buffer, flow).map_err(|source| OutputError::Io {
                operation: "encode",
                path: self.config.topic.clone().into(),
                source,
            })?;
            let id = format!("{}/{}", flow.batch, flow.record_index);
            self.produce(flow_key(flow), id, "flow");
        }
        Ok(())
    }

    fn write_completeness(&mut self, reports: &[WindowReport]) -> Result<(), OutputError> {
        self.resend();
        for report in reports {
            self.buffer.clear();
            write_completeness_line(&mut self.buffer, report).map_err(|source| {
                OutputError::Io {
                    operation: "encode",
                    path: self.config.topic.clone().into(),
                    source,
                }
            })?;
            let id = format!("{}/{}", report.batch, report.record_index);
            self.produce(report.host_id().as_bytes().to_vec(), id, "completeness");
        }
        Ok(())
    }

    /// Produces what waits, and returns at once: the collector marks a flow emitted
    /// only once its message is acknowledged (it reads the [`Acknowledgements`] book),
    /// so a commit never waits for the brokers under the pipeline's lock. It fails
    /// (and the checkpoint waits) only when nothing has been acknowledged for longer
    /// than the commit timeout while messages are outstanding, so that the output's
    /// trouble is counted and logged.
    fn commit(&mut self) -> Result<OutputPosition, OutputError> {
        self.resend();
        let acks = self.deliveries.acks.clone();
        let below = acks.acknowledged_below();
        if below != self.last_progress.0 || acks.outstanding() == 0 {
            self.last_progress = (below, Instant::now());
        }
        let stalled = self.last_progress.1.elapsed();
        if stalled >= self.config.commit_timeout {
            return Err(OutputError::NotAcknowledged {
                destination: self.destination.clone(),
                outstanding: acks.outstanding(),
                waited: stalled,
                last_error: self
                    .deliveries
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            });
        }
        Ok(OutputPosition::default())
    }

    /// Kafka cannot say which messages arrived after a position without reading the
    /// topic back: after a crash, the flows written since the last checkpoint are
    /// written again, with the same IDs (`docs/kafka.md`, the delivery guarantee).
    fn written_since(
        &mut self,
        _position: Option<&OutputPosition>,
    ) -> Result<Vec<FlowKey>, OutputError> {
        Ok(Vec::new())
    }

    fn acknowledgements(&self) -> Option<Acknowledgements> {
        Some(self.deliveries.acks.clone())
    }

    fn backpressure(&self) -> Option<String> {
        let pending = self.deliveries.acks.outstanding();
        (pending >= self.config.max_pending).then(|| {
            format!(
                "{pending} flow messages wait for {}; try again later",
                self.destination
            )
        })
    }
}

impl Drop for KafkaOutput {
    fn drop(&mut self) {
        // What librdkafka still holds gets a last chance; what it cannot deliver now
        // is in the ledger, not marked emitted, and is written again at the next start.
        let _ = self.producer.flush(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use flow_batch::wire::{BatchId, InstanceId};

    use super::*;
    use crate::{attribution::RemoteIdentitySource, connections::decode_routed};

    #[test]
    fn a_large_chunk_routed_to_one_partition_is_cut_within_the_budget() {
        let batch = Arc::new(BatchId {
            host: "host-big".into(),
            instance: InstanceId::new(5),
            sequence: 1,
        });
        let flows: Vec<AttributedFlow> = (0..16_384u32)
            .map(|i| AttributedFlow {
                record: flow_testkit::record()
                    .local(format!("10.0.{}.{}:{}", i / 250, i % 250, 1000 + i % 60_000).as_str())
                    .remote("10.9.9.9:443")
                    .workload(
                        "spiffe://fleet/a-rather-long-workload-name",
                        flow_record::IdentitySource::IpMap,
                    )
                    .build(),
                batch: Arc::clone(&batch),
                record_index: i,
                remote_workload_id: None,
                remote_identity_source: RemoteIdentitySource::None,
                remote_unattributed_reason: None,
            })
            .collect();
        let pieces = encode_routed_within(
            &batch,
            flows.iter().map(|f| (f.record_index, &f.record)),
            ROUTED_MESSAGE_BUDGET,
        )
        .expect("encodable");
        assert!(pieces.len() > 1, "{} pieces", pieces.len());
        let mut indices = Vec::new();
        for (value, count) in pieces {
            assert!(
                value.len() <= ROUTED_MESSAGE_BUDGET,
                "{} bytes",
                value.len()
            );
            let decoded = decode_routed(&value).expect("decodes");
            assert_eq!(decoded.indices.len(), count as usize);
            indices.extend(decoded.indices);
        }
        assert_eq!(indices, (0..16_384).collect::<Vec<u32>>());
    }
}
