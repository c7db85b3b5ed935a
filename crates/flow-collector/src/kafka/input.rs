//! Chunks from an input topic, as a consumer group: every message is one chunk frame
//! (the bytes an exporter would POST; `flow_sink::KafkaSink` produces them), taken
//! exactly like an HTTP request's body (verified, deduplicated by batch ID against
//! the ledger, stored, attributed). A message's offset is committed only once its
//! chunk's flows are in the output and acknowledged ([`OffsetBook`]); a message the
//! pipeline cannot take yet (the ledger's disk full, the output behind) is read
//! again after a pause, and nothing after it is committed meanwhile.

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
        ClientContext, Message, Offset,
        consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance},
    },
};

use super::{
    heartbeat_topic::lag_of,
    offsets::{OffsetBook, Taken, commit_offsets, subscribed},
    stats::KafkaStats,
};
use crate::{State, pipeline::Stored};

/// How often committable offsets are committed.
const COMMIT_EVERY: Duration = Duration::from_millis(500);

/// The consumer's context: on a rebalance that takes partitions away, commits what
/// may be committed of them, then forgets them.
struct InputContext {
    topic: String,
    book: Arc<Mutex<OffsetBook>>,
    state: Arc<State>,
    stats: Arc<KafkaStats>,
}

impl ClientContext for InputContext {}

impl ConsumerContext for InputContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<InputContext>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        let mut book = self.book.lock().unwrap_or_else(|p| p.into_inner());
        commit_now(
            consumer,
            &self.topic,
            &mut book,
            &self.state,
            &self.stats,
            CommitMode::Sync,
        );
        for element in revoked.elements_for_topic(&self.topic) {
            book.forget(element.partition());
        }
    }
}

/// Commits the committable offsets.
fn commit_now(
    consumer: &BaseConsumer<InputContext>,
    topic: &str,
    book: &mut OffsetBook,
    state: &State,
    stats: &KafkaStats,
    mode: CommitMode,
) {
    let committable = {
        let pipeline = state.pipeline.lock().unwrap_or_else(|p| p.into_inner());
        book.committable(|batch, records| pipeline.flows_written(batch, records))
    };
    stats
        .input_uncommitted
        .store(book.waiting() as u64, Ordering::Relaxed);
    commit_offsets(
        consumer,
        topic,
        &committable,
        mode,
        stats,
        &stats.input_commits,
        "input",
    );
}

/// Consumes `topic` as a member of `group` until `stop`, feeding the pipeline.
pub(crate) fn spawn(
    settings: &KafkaSettings,
    topic: &str,
    group: &str,
    state: Arc<State>,
    stats: Arc<KafkaStats>,
    stop: Arc<InputStop>,
) -> Result<std::thread::JoinHandle<()>, KafkaError> {
    let book = Arc::new(Mutex::new(OffsetBook::default()));
    let consumer = subscribed(
        settings,
        group,
        topic,
        InputContext {
            topic: topic.to_owned(),
            book: Arc::clone(&book),
            state: Arc::clone(&state),
            stats: Arc::clone(&stats),
        },
        ("input consumer creation", "input subscription"),
    )?;
    let topic = topic.to_owned();
    std::thread::Builder::new()
        .name("chunks-in".into())
        .spawn(move || run(consumer, topic, book, state, stats, stop))
        .map_err(|e| KafkaError::InvalidSetting {
            key: "input consumer thread",
            value: String::new(),
            reason: e.to_string(),
        })
}

fn run(
    consumer: BaseConsumer<InputContext>,
    topic: String,
    book: Arc<Mutex<OffsetBook>>,
    state: Arc<State>,
    stats: Arc<KafkaStats>,
    stop: Arc<InputStop>,
) {
    let mut last_commit = Instant::now();
    let mut last_lag = Instant::now();
    let mut last_log: Option<Instant> = None;
    while !stop.reading.load(Ordering::Relaxed) {
        if last_commit.elapsed() >= COMMIT_EVERY {
            last_commit = Instant::now();
            let mut book = book.lock().unwrap_or_else(|p| p.into_inner());
            commit_now(
                &consumer,
                &topic,
                &mut book,
                &state,
                &stats,
                CommitMode::Async,
            );
        }
        if last_lag.elapsed() >= Duration::from_secs(5) {
            last_lag = Instant::now();
            if let Some(lag) = lag_of(&consumer, &topic) {
                stats.input_lag.store(lag, Ordering::Relaxed);
            }
        }
        let message = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(error)) => {
                KafkaStats::error(&stats.consumer_errors, ErrorKind::of(&error));
                if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    last_log = Some(Instant::now());
                    tracing::error!(topic = %topic, error = %error, "consuming the input topic");
                }
                continue;
            }
            Some(Ok(message)) => message,
        };
        let partition = message.partition();
        let offset = message.offset();
        let frame = message.payload().unwrap_or_default();
        KafkaStats::add(&stats.input_consumed, 1);
        KafkaStats::add(&stats.input_bytes, frame.len() as u64);
        let stored = {
            let mut pipeline = state.pipeline.lock().unwrap_or_else(|p| p.into_inner());
            pipeline.accept(frame, SystemTime::now(), false, &state.stats)
        };
        let taken = match stored {
            Stored::Accepted { batch_id, records } => Taken::Chunk(
                Arc::new(batch_id),
                Some(u32::try_from(records).unwrap_or(u32::MAX)),
            ),
            Stored::Duplicate { batch_id } => {
                KafkaStats::add(&stats.input_duplicates, 1);
                Taken::Chunk(Arc::new(batch_id), None)
            }
            Stored::Undecodable(reason) => {
                KafkaStats::add(&stats.input_undecodable, 1);
                tracing::error!(topic = %topic, partition, offset, %reason,
                    "an input message is not a chunk frame; skipped");
                Taken::Done
            }
            Stored::WriteFailed(reason) | Stored::Busy(reason) => {
                KafkaStats::add(&stats.input_retried, 1);
                if last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    last_log = Some(Instant::now());
                    tracing::warn!(topic = %topic, partition, offset, %reason,
                        "cannot take an input message yet; reading it again in a second");
                }
                // Read it again: nothing after it is committed before it is taken.
                if let Err(error) = consumer.seek(
                    &topic,
                    partition,
                    Offset::Offset(offset),
                    Duration::from_secs(5),
                ) {
                    // The message would be skipped: it stays in the book as never done,
                    // so no offset at or after it is committed; the group reads it
                    // again after a restart or a rebalance.
                    KafkaStats::error(&stats.consumer_errors, ErrorKind::of(&error));
                    tracing::error!(error = %error, partition, offset,
                        "seeking back on the input topic failed; offsets of this partition stay uncommitted from here until a restart");
                    book.lock().unwrap_or_else(|p| p.into_inner()).taken(
                        partition,
                        offset,
                        Taken::Never,
                    );
                }
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        let mut book = book.lock().unwrap_or_else(|p| p.into_inner());
        book.taken(partition, offset, taken);
        stats
            .input_uncommitted
            .store(book.waiting() as u64, Ordering::Relaxed);
    }
    // Reading stopped; offsets go on being committed as the drain writes the flows,
    // until the collector says it is done. (A message polled from here on is not
    // taken, so its offset is never committed: it is read again at the next start.)
    if let Ok(assignment) = consumer.assignment() {
        let _ = consumer.pause(&assignment);
    }
    loop {
        let finished = stop.finished.load(Ordering::Relaxed);
        {
            let mut book = book.lock().unwrap_or_else(|p| p.into_inner());
            let mode = if finished {
                CommitMode::Sync
            } else {
                CommitMode::Async
            };
            commit_now(&consumer, &topic, &mut book, &state, &stats, mode);
        }
        if finished {
            break;
        }
        // Keeps the group membership alive (and runs rebalance callbacks) without
        // taking messages: the assignment is paused.
        let _ = consumer.poll(Duration::from_millis(100));
    }
}

/// How the collector stops the input: first reading, then (after the drain) the
/// committing.
#[derive(Debug, Default)]
pub(crate) struct InputStop {
    /// No more messages are taken.
    pub(crate) reading: AtomicBool,
    /// The pipeline is drained: commit one last time and leave.
    pub(crate) finished: AtomicBool,
}
