//! The heartbeat topic: every node publishes the heartbeats it extracts from its
//! chunks (compacted per IP, workload and window by the attributor) and reads every
//! other node's, so that N nodes attribute as one would.
//!
//! At start a node reads the topic from the attribution retention back (the offsets
//! of `now - retention`, per partition) to the end it had then, applying everything
//! (its own earlier heartbeats too: they outlive its ledger), before it opens its
//! ledger, listens or consumes chunks: until then it attributes nothing. Then a
//! reader thread follows the topic from where the rebuild ended, skipping its own
//! messages (header [`NODE_HEADER`]), and hands batches to the attributor.
//! `docs/kafka.md` says what this guarantees and costs.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use flow_kafka::{
    ErrorKind, KafkaError, KafkaSettings, NODE_HEADER,
    rdkafka::{
        ClientContext, Message, Offset, TopicPartitionList,
        consumer::{BaseConsumer, Consumer},
        message::{Header, Headers, OwnedHeaders},
        producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer},
    },
};

use super::stats::KafkaStats;
use crate::attribution::Heartbeat;

/// How long the rebuild goes on reading after the ends reported at start are reached
/// (the follower goes on from there).
const QUIET: Duration = Duration::from_millis(300);

/// Most heartbeats handed to the attributor at once by the reader.
const APPLY_BATCH: usize = 10_000;

/// Publishes this node's heartbeats.
pub(crate) struct HeartbeatPublisher {
    settings: KafkaSettings,
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
    node: String,
    stats: Arc<KafkaStats>,
    last_log: Option<Instant>,
}

impl HeartbeatPublisher {
    /// A producer for `topic`, naming `node` in every message.
    pub(crate) fn new(
        settings: &KafkaSettings,
        topic: &str,
        node: &str,
        stats: Arc<KafkaStats>,
    ) -> Result<HeartbeatPublisher, KafkaError> {
        let producer =
            settings
                .producer_config(None)
                .create()
                .map_err(|source| KafkaError::Client {
                    what: "heartbeat producer creation",
                    source,
                })?;
        Ok(HeartbeatPublisher {
            settings: settings.clone(),
            producer,
            topic: topic.to_owned(),
            node: node.to_owned(),
            stats,
            last_log: None,
        })
    }

    /// Produces `heartbeats` (one message each, keyed by IP). A heartbeat librdkafka
    /// has no room for (its queue full for longer than a second: the brokers have
    /// been down a long time) is dropped and counted: other nodes then lack it, which
    /// can leave flows unattributed, never misattributed.
    pub(crate) fn publish(&mut self, heartbeats: &[Heartbeat]) {
        // A producer that hit a fatal error is replaced (it would refuse every message).
        if self.producer.client().fatal_error().is_some() {
            match self.settings.producer_config(None).create() {
                Ok(producer) => {
                    tracing::error!("the heartbeat producer hit a fatal error; replaced");
                    self.producer = producer;
                }
                Err(e) => tracing::error!(error = %e, "replacing the heartbeat producer failed"),
            }
        }
        for heartbeat in heartbeats {
            let value = heartbeat.encode();
            let key = heartbeat.key();
            let headers = OwnedHeaders::new().insert(Header {
                key: NODE_HEADER,
                value: Some(self.node.as_bytes()),
            });
            let record = BaseRecord::to(&self.topic)
                .key(&key)
                .payload(&value)
                .headers(headers);
            match self.producer.send(record) {
                Ok(()) => {
                    KafkaStats::add(&self.stats.heartbeats_published, 1);
                    KafkaStats::add(&self.stats.heartbeat_bytes_published, value.len() as u64);
                }
                Err((error, _)) => {
                    // Never waited on: the ticker that publishes also decides held
                    // flows and commits. Dropped and counted.
                    KafkaStats::error(&self.stats.heartbeat_errors, ErrorKind::of(&error));
                    KafkaStats::add(&self.stats.heartbeats_dropped, 1);
                    if self
                        .last_log
                        .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
                    {
                        self.last_log = Some(Instant::now());
                        tracing::error!(error = %error, "publishing a heartbeat failed; it is dropped (counted)");
                    }
                }
            }
        }
    }
}

impl Drop for HeartbeatPublisher {
    fn drop(&mut self) {
        let _ = self.producer.flush(Duration::from_secs(5));
    }
}

/// What the rebuild at start read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RebuildReport {
    /// Messages read.
    pub messages: u64,
    /// Heartbeats applied.
    pub applied: u64,
    /// Messages that did not decode (skipped).
    pub undecodable: u64,
    /// How long it took.
    pub took: Duration,
}

/// A consumer of the heartbeat topic (no group: it assigns every partition itself).
fn consumer(settings: &KafkaSettings) -> Result<BaseConsumer, KafkaError> {
    settings
        .consumer_config(None)
        .create()
        .map_err(|source| KafkaError::Client {
            what: "heartbeat consumer creation",
            source,
        })
}

/// Reads `topic` from `now - retention` to its end as it is now, handing decoded
/// heartbeats to `apply` in batches; fails if that takes longer than `timeout` (or
/// the topic cannot be read). Returns the offsets to go on from.
pub(crate) fn rebuild(
    settings: &KafkaSettings,
    topic: &str,
    retention: Duration,
    timeout: Duration,
    stats: &KafkaStats,
    mut apply: impl FnMut(Vec<Heartbeat>),
) -> Result<(RebuildReport, TopicPartitionList), KafkaError> {
    let started = Instant::now();
    let info = flow_kafka::check_topic(settings, topic, timeout)?;
    let consumer = consumer(settings)?;
    let client_error = |what| move |source| KafkaError::Client { what, source };
    let since = SystemTime::now()
        .checked_sub(retention)
        .unwrap_or(SystemTime::UNIX_EPOCH)
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let mut wanted = TopicPartitionList::new();
    for p in 0..info.partitions {
        let p = i32::try_from(p).unwrap_or(i32::MAX);
        wanted
            .add_partition_offset(topic, p, Offset::Offset(since.as_millis() as i64))
            .map_err(client_error("offset list"))?;
    }
    let left = |started: Instant| timeout.saturating_sub(started.elapsed());
    let starts = consumer
        .offsets_for_times(wanted, left(started))
        .map_err(client_error("offsets for times"))?;
    // The end of each partition now: the rebuild reads up to here.
    let mut ends = Vec::new();
    let mut assignment = TopicPartitionList::new();
    for element in starts.elements() {
        let p = element.partition();
        let (_, high) = consumer
            .fetch_watermarks(topic, p, left(started))
            .map_err(client_error("watermarks"))?;
        let start = match element.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            // Nothing as recent as the retention: nothing to read there.
            _ => Offset::Offset(high),
        };

        assignment
            .add_partition_offset(topic, p, start)
            .map_err(client_error("assignment"))?;
        if let Offset::Offset(o) = start
            && o < high
        {
            ends.push((p, high));
        }
    }
    consumer
        .assign(&assignment)
        .map_err(client_error("assignment"))?;
    let mut report = RebuildReport::default();
    let mut batch = Vec::new();
    let mut positions: Vec<(i32, i64)> = ends.iter().map(|(p, _)| (*p, -1)).collect();
    let done = |positions: &[(i32, i64)]| {
        positions
            .iter()
            .zip(&ends)
            .all(|((_, at), (_, end))| *at + 1 >= *end)
    };
    // The ends are what the broker reported at start; a broker may serve more than its
    // reported high watermark (tansu does), so once they are reached the rebuild reads
    // on for a fixed moment (never extended: on a busy topic messages never stop).
    let mut reached: Option<Instant> = None;
    loop {
        if done(&positions) {
            let at = *reached.get_or_insert_with(Instant::now);
            if at.elapsed() >= QUIET {
                break;
            }
        }
        if started.elapsed() >= timeout {
            return Err(KafkaError::Client {
                what: "heartbeat rebuild (the topic was not read to its end in time)",
                source: flow_kafka::rdkafka::error::KafkaError::MessageConsumption(
                    flow_kafka::rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
                ),
            });
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(error)) => {
                KafkaStats::error(&stats.consumer_errors, ErrorKind::of(&error));
                tracing::warn!(error = %error, "reading the heartbeat topic");
            }
            Some(Ok(message)) => {
                report.messages += 1;
                if let Some(slot) = positions
                    .iter_mut()
                    .find(|(p, _)| *p == message.partition())
                {
                    slot.1 = slot.1.max(message.offset());
                }
                match Heartbeat::decode(message.payload().unwrap_or_default()) {
                    Ok(h) => batch.push(h),
                    Err(e) => {
                        report.undecodable += 1;
                        KafkaStats::add(&stats.heartbeats_undecodable, 1);
                        tracing::warn!(partition = message.partition(), offset = message.offset(),
                            error = %e, "an undecodable heartbeat message; skipped");
                    }
                }
                if batch.len() >= APPLY_BATCH {
                    report.applied += batch.len() as u64;
                    apply(std::mem::take(&mut batch));
                }
            }
        }
    }
    report.applied += batch.len() as u64;
    if !batch.is_empty() {
        apply(batch);
    }
    report.took = started.elapsed();
    KafkaStats::add(&stats.heartbeats_rebuilt, report.applied);
    stats
        .rebuild_micros
        .store(report.took.as_micros() as u64, Ordering::Relaxed);
    let position = consumer.position().map_err(client_error("position"))?;
    // Partitions nothing was read from go on from where they were assigned.
    let mut from = TopicPartitionList::new();
    for element in assignment.elements() {
        let p = element.partition();
        let at = position
            .find_partition(topic, p)
            .map(|e| e.offset())
            .filter(|o| matches!(o, Offset::Offset(_)))
            .unwrap_or(element.offset());
        from.add_partition_offset(topic, p, at)
            .map_err(client_error("assignment"))?;
    }
    Ok((report, from))
}

/// Follows the heartbeat topic from `from` until `stop`, handing the heartbeats of
/// every node but `skip_node` to `apply` (in batches, at most every 100 ms).
pub(crate) fn follow(
    settings: KafkaSettings,
    topic: String,
    skip_node: Option<String>,
    from: TopicPartitionList,
    stats: Arc<KafkaStats>,
    stop: Arc<AtomicBool>,
    mut apply: impl FnMut(Vec<Heartbeat>) + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, KafkaError> {
    let consumer = consumer(&settings)?;
    consumer
        .assign(&from)
        .map_err(|source| KafkaError::Client {
            what: "heartbeat assignment",
            source,
        })?;
    let handle = std::thread::Builder::new()
        .name("heartbeats-in".into())
        .spawn(move || {
            let mut batch = Vec::new();
            let mut last_apply = Instant::now();
            let mut last_lag = Instant::now();
            let mut last_log: Option<Instant> = None;
            while !stop.load(Ordering::Relaxed) {
                match consumer.poll(Duration::from_millis(100)) {
                    None => {}
                    Some(Err(error)) => {
                        KafkaStats::error(&stats.consumer_errors, ErrorKind::of(&error));
                        if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                            last_log = Some(Instant::now());
                            tracing::warn!(error = %error, "reading the heartbeat topic");
                        }
                    }
                    Some(Ok(message)) => {
                        let own = skip_node.as_ref().is_some_and(|node| {
                            message.headers().is_some_and(|h| {
                                h.iter().any(|h| {
                                    h.key == NODE_HEADER && h.value == Some(node.as_bytes())
                                })
                            })
                        });
                        if !own {
                            KafkaStats::add(&stats.heartbeats_consumed, 1);
                            match Heartbeat::decode(message.payload().unwrap_or_default()) {
                                Ok(h) => batch.push(h),
                                Err(e) => {
                                    KafkaStats::add(&stats.heartbeats_undecodable, 1);
                                    tracing::warn!(partition = message.partition(),
                                        offset = message.offset(), error = %e,
                                        "an undecodable heartbeat message; skipped");
                                }
                            }
                        }
                    }
                }
                if !batch.is_empty()
                    && (batch.len() >= APPLY_BATCH
                        || last_apply.elapsed() >= Duration::from_millis(100))
                {
                    apply(std::mem::take(&mut batch));
                    last_apply = Instant::now();
                }
                if last_lag.elapsed() >= Duration::from_secs(5) {
                    last_lag = Instant::now();
                    if let Some(lag) = lag_of(&consumer, &topic) {
                        stats.heartbeat_lag.store(lag, Ordering::Relaxed);
                    }
                }
            }
        })
        .map_err(|e| KafkaError::InvalidSetting {
            key: "heartbeat reader thread",
            value: String::new(),
            reason: e.to_string(),
        })?;
    Ok(handle)
}

/// Messages between a consumer's positions and the ends of its partitions of `topic`.
pub(crate) fn lag_of<C: ClientContext + flow_kafka::rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
) -> Option<u64> {
    let positions = consumer.position().ok()?;
    let mut lag = 0u64;
    for element in positions.elements_for_topic(topic) {
        let Offset::Offset(at) = element.offset() else {
            continue;
        };
        let (_, high) = consumer
            .fetch_watermarks(topic, element.partition(), Duration::from_secs(1))
            .ok()?;
        lag += u64::try_from(high.saturating_sub(at)).unwrap_or(0);
    }
    Some(lag)
}
