//! The attributing half of connection routing (`--connection-topic`): consumes the
//! connection topic as a member of the connection group, so that this node owns some
//! of its partitions and receives every record (both ends) of their connections;
//! feeds them to its [`ConnectionStage`] (an attributor configured as a single
//! node's, sharing its heartbeats); writes the decided flows to the output topic and
//! aggregates them into the node's dependency graph (`docs/graph.md`);
//! commits a message's offset once every record it brought is out and acknowledged,
//! and every earlier message of its partition too.
//!
//! Records still held back are not drained at shutdown: their offsets are not
//! committed, and the partition's next owner (this node after a restart, or another
//! after a rebalance) reads them again. So a flow decided and written before that,
//! behind a held one in its partition, is written again (same ID; `docs/kafka.md`).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use flow_kafka::{
    ErrorKind, KafkaError, KafkaSettings,
    rdkafka::{
        ClientContext, Message,
        consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance},
    },
};

use super::{
    KafkaOutput,
    heartbeat_topic::lag_of,
    input::InputStop,
    offsets::{OffsetBook, Taken, commit_offsets, subscribed},
    stats::KafkaStats,
};
use crate::{
    connections::{ConnectionStage, RoutedDecodeError, decode_routed},
    graph::SharedGraph,
    output::{Acknowledgements, FlowOutput},
};

/// How often committable offsets are committed.
const COMMIT_EVERY: Duration = Duration::from_millis(500);

/// How often held flows are looked at and decided ones written.
const PUMP_EVERY: Duration = Duration::from_millis(100);

/// Most flows written per pump.
const WRITE_BATCH: usize = 10_000;

/// How long a rebalance that takes partitions away waits for the output to
/// acknowledge the flows already decided, so that their offsets are committed before
/// the partitions go (what is not is written again by the next owner).
const REVOKE_WAIT: Duration = Duration::from_secs(5);

/// What the consumer thread and its rebalance callback share.
struct Shared {
    topic: String,
    book: Mutex<OffsetBook>,
    stage: Arc<Mutex<ConnectionStage>>,
    output: Mutex<Writer>,
    acks: Acknowledgements,
    /// The node's dependency graph: fed the flows the output took, as the
    /// pipeline feeds it.
    graph: Arc<SharedGraph>,
    stats: Arc<KafkaStats>,
    /// The thread has stopped and settled: closing the consumer (which revokes its
    /// partitions) only commits.
    stopped: AtomicBool,
}

/// The output and its log rate limit.
struct Writer {
    output: KafkaOutput,
    last_log: Option<Instant>,
}

impl Shared {
    /// Decides what time allows, writes the decided flows, commits the output.
    fn pump(&self) {
        let now = SystemTime::now();
        let mut writer = self.output.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let flows = {
                let mut stage = self.stage.lock().unwrap_or_else(|p| p.into_inner());
                stage.advance(now);
                stage.take_ready(WRITE_BATCH)
            };
            if flows.is_empty() {
                break;
            }
            let written = match writer.output.write(&flows) {
                Ok(()) => true,
                Err(error) => {
                    // Only encoding can fail here (the JSON line of a decoded
                    // record): the flows are counted as written so that the
                    // partition moves on.
                    tracing::error!(error = %crate::error_chain(&error), flows = flows.len(),
                        "writing attributed flows failed; they are dropped");
                    KafkaStats::add(&self.stats.connection_dropped, flows.len() as u64);
                    false
                }
            };
            let mark = self.acks.mark();
            self.stage
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .written(&flows, mark);
            let full = flows.len() >= WRITE_BATCH;
            if written {
                self.graph.add_flows(flows, now);
            }
            if !full {
                break;
            }
        }
        if let Err(error) = writer.output.commit()
            && writer
                .last_log
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            writer.last_log = Some(Instant::now());
            tracing::error!(error = %crate::error_chain(&error),
                "the output topic does not acknowledge; attributed flows wait");
        }
        let acknowledged = self.acks.acknowledged_below();
        let counts = {
            let mut stage = self.stage.lock().unwrap_or_else(|p| p.into_inner());
            stage.prune(acknowledged);
            stage.stats()
        };
        let stats = &self.stats;
        stats
            .connection_records
            .store(counts.records, Ordering::Relaxed);
        stats
            .connection_duplicates
            .store(counts.duplicates, Ordering::Relaxed);
        stats
            .connection_batches_open
            .store(counts.batches_open, Ordering::Relaxed);
        stats
            .connection_released
            .store(counts.released, Ordering::Relaxed);
    }

    /// Writes what is decided and waits, at most `wait`, for the output to
    /// acknowledge everything written so far.
    fn settle(&self, wait: Duration) {
        self.pump();
        let mark = self.acks.mark();
        let deadline = Instant::now() + wait;
        while !self.acks.reached(mark) && Instant::now() < deadline {
            let _ = self
                .output
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .output
                .commit();
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Commits the offsets whose messages are done.
    fn commit<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, mode: CommitMode) {
        let mut book = self.book.lock().unwrap_or_else(|p| p.into_inner());
        let committable = {
            let stage = self.stage.lock().unwrap_or_else(|p| p.into_inner());
            let acknowledged = self.acks.acknowledged_below();
            book.committable(|batch, _| stage.done(batch, acknowledged))
        };
        self.stats
            .connection_uncommitted
            .store(book.waiting() as u64, Ordering::Relaxed);
        commit_offsets(
            consumer,
            &self.topic,
            &committable,
            mode,
            &self.stats,
            &self.stats.connection_commits,
            "connection-topic",
        );
    }
}

/// The consumer's context: on a rebalance that takes partitions away, commits what
/// may be committed, then forgets them (their held records are read again by the
/// next owner).
struct ConnectionContext {
    shared: Arc<Shared>,
}

impl ClientContext for ConnectionContext {}

impl ConsumerContext for ConnectionContext {
    fn post_rebalance(
        &self,
        consumer: &BaseConsumer<ConnectionContext>,
        _rebalance: &Rebalance<'_>,
    ) {
        if let Ok(assignment) = consumer.assignment() {
            let owned = assignment.elements_for_topic(&self.shared.topic).len();
            self.shared
                .stats
                .connection_partitions
                .store(owned as u64, Ordering::Relaxed);
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<ConnectionContext>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        // Flows decided from these partitions are written and acknowledged first, so
        // that the next owner does not write them again.
        if !self.shared.stopped.load(Ordering::Relaxed) {
            self.shared.settle(REVOKE_WAIT);
        }
        self.shared.commit(consumer, CommitMode::Sync);
        let partitions: Vec<i32> = revoked
            .elements_for_topic(&self.shared.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        // What is still held there is the next owner's (it reads it again from the
        // committed offset): let go of it here, undecided.
        let released = self
            .shared
            .stage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .release(&partitions);
        if released > 0 {
            tracing::info!(released, partitions = ?partitions,
                "partitions taken away; their held records are left to the next owner");
        }
        let mut book = self.shared.book.lock().unwrap_or_else(|p| p.into_inner());
        for partition in partitions {
            book.forget(partition);
        }
    }
}

/// Consumes the connection topic `topic` as a member of `group` until `stop`,
/// attributing in `stage`, writing to `output` and aggregating what it took into
/// `graph`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn(
    settings: &KafkaSettings,
    topic: &str,
    group: &str,
    stage: Arc<Mutex<ConnectionStage>>,
    output: KafkaOutput,
    graph: Arc<SharedGraph>,
    stats: Arc<KafkaStats>,
    stop: Arc<InputStop>,
) -> Result<std::thread::JoinHandle<()>, KafkaError> {
    let acks = output.acknowledgements().unwrap_or_default();
    let shared = Arc::new(Shared {
        topic: topic.to_owned(),
        book: Mutex::new(OffsetBook::default()),
        stage,
        output: Mutex::new(Writer {
            output,
            last_log: None,
        }),
        acks,
        graph,
        stats,
        stopped: AtomicBool::new(false),
    });
    let consumer = subscribed(
        settings,
        group,
        topic,
        ConnectionContext {
            shared: Arc::clone(&shared),
        },
        (
            "connection consumer creation",
            "connection-topic subscription",
        ),
    )?;
    std::thread::Builder::new()
        .name("connections-in".into())
        .spawn(move || {
            Attributing {
                consumer,
                shared,
                last_log: None,
            }
            .run(&stop)
        })
        .map_err(|e| KafkaError::InvalidSetting {
            key: "connection consumer thread",
            value: String::new(),
            reason: e.to_string(),
        })
}

/// The consumer thread's parts.
struct Attributing {
    consumer: BaseConsumer<ConnectionContext>,
    shared: Arc<Shared>,
    last_log: Option<Instant>,
}

impl Attributing {
    fn run(mut self, stop: &InputStop) {
        let mut last_pump = Instant::now();
        let mut last_commit = Instant::now();
        let mut last_lag = Instant::now();
        let mut paused = false;
        while !stop.reading.load(Ordering::Relaxed) {
            if last_pump.elapsed() >= PUMP_EVERY {
                last_pump = Instant::now();
                self.shared.pump();
                // The output is behind: stop taking messages until it catches up
                // (the group membership lives on: polling goes on, paused).
                let behind = self
                    .shared
                    .output
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .output
                    .backpressure()
                    .is_some();
                // Paused again on every pump while behind: a rebalance meanwhile
                // hands out partitions unpaused.
                if (behind || paused)
                    && let Ok(assignment) = self.consumer.assignment()
                {
                    let _ = if behind {
                        self.consumer.pause(&assignment)
                    } else {
                        self.consumer.resume(&assignment)
                    };
                }
                paused = behind;
            }
            if last_commit.elapsed() >= COMMIT_EVERY {
                last_commit = Instant::now();
                self.shared.commit(&self.consumer, CommitMode::Async);
            }
            if last_lag.elapsed() >= Duration::from_secs(5) {
                last_lag = Instant::now();
                if let Some(lag) = lag_of(&self.consumer, &self.shared.topic) {
                    self.shared
                        .stats
                        .connection_lag
                        .store(lag, Ordering::Relaxed);
                }
            }
            match self.consumer.poll(PUMP_EVERY) {
                None => {}
                Some(Err(error)) => {
                    KafkaStats::error(&self.shared.stats.consumer_errors, ErrorKind::of(&error));
                    if self
                        .last_log
                        .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
                    {
                        self.last_log = Some(Instant::now());
                        tracing::error!(topic = %self.shared.topic, error = %error,
                            "consuming the connection topic");
                    }
                }
                Some(Ok(message)) => {
                    let partition = message.partition();
                    let offset = message.offset();
                    let payload = message.payload().unwrap_or_default();
                    let stats = &self.shared.stats;
                    KafkaStats::add(&stats.connection_consumed, 1);
                    KafkaStats::add(&stats.connection_bytes, payload.len() as u64);
                    let taken = match decode_routed(payload) {
                        Ok(routed) => {
                            let batch = self
                                .shared
                                .stage
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(partition, routed, SystemTime::now());
                            Taken::Chunk(batch, None)
                        }
                        Err(error @ RoutedDecodeError::Version(_)) => {
                            // Written by a newer collector: its records must not be
                            // skipped. Nothing from here on in this partition is
                            // committed; a node that reads the version takes them.
                            KafkaStats::add(&stats.connection_undecodable, 1);
                            tracing::error!(topic = %self.shared.topic, partition, offset,
                                error = %error, "a connection-topic message of another version; this partition's offsets stay uncommitted from here (upgrade this node)");
                            Taken::Never
                        }
                        Err(error) => {
                            KafkaStats::add(&stats.connection_undecodable, 1);
                            tracing::error!(topic = %self.shared.topic, partition, offset,
                                error = %error, "a connection-topic message does not decode; skipped");
                            Taken::Done
                        }
                    };
                    self.shared
                        .book
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .taken(partition, offset, taken);
                }
            }
        }
        // Stopped: write what is decided, wait a little for its acknowledgements,
        // commit what is done. What is still held is read again at the next start.
        if let Ok(assignment) = self.consumer.assignment() {
            let _ = self.consumer.pause(&assignment);
        }
        self.shared.settle(Duration::from_secs(10));
        self.shared.commit(&self.consumer, CommitMode::Sync);
        self.shared.stopped.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use flow_batch::wire::{BatchId, InstanceId};
    use flow_record::IdentitySource;

    use super::*;
    use crate::{
        attribution::{AttributionConfig, Attributor},
        connections::RoutedRecords,
    };

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn a_batch_split_over_two_partitions_commits_only_once_all_its_records_are_out() {
        let mut stage = ConnectionStage::new(Attributor::new(
            AttributionConfig::default().with_hold_back(Duration::from_secs(10)),
        ));
        let mut book = OffsetBook::default();
        let batch = Arc::new(BatchId {
            host: "h".into(),
            instance: InstanceId::new(1),
            sequence: 3,
        });
        let record = |port: u16| {
            flow_testkit::record()
                .local(format!("10.0.0.1:{port}").as_str())
                .remote("192.0.2.9:443")
                .t_start(Some(at(0)))
                .t_end(at(1))
                .workload("w", IdentitySource::IpMap)
                .build()
        };
        for (partition, offset, index) in [(0, 10, 0u32), (1, 20, 1u32)] {
            let b = stage.push(
                partition,
                RoutedRecords {
                    batch: Arc::clone(&batch),
                    indices: vec![index],
                    records: vec![record(40_000 + index as u16)],
                },
                at(2),
            );
            book.taken(partition, offset, Taken::Chunk(b, None));
        }
        let committable = |book: &mut OffsetBook, stage: &ConnectionStage, acked: u64| {
            book.committable(|b, _| stage.done(b, acked))
        };
        assert!(committable(&mut book, &stage, u64::MAX).is_empty(), "held");
        stage.advance(at(30));
        let flows = stage.take_ready(10);
        assert_eq!(flows.len(), 2);
        stage.written(&flows[..1], 3);
        assert!(
            committable(&mut book, &stage, u64::MAX).is_empty(),
            "one record of the batch is not written yet"
        );
        stage.written(&flows[1..], 4);
        assert!(
            committable(&mut book, &stage, 3).is_empty(),
            "not acknowledged yet"
        );
        assert_eq!(committable(&mut book, &stage, 4), vec![(0, 11), (1, 21)]);
        stage.prune(4);
        assert_eq!(stage.stats().batches_open, 0);
    }
}
