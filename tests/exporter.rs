//! The exporter library with sinks of a test's own and records from a channel: every
//! record delivered once through any `FlowSink`, the journal's intents ended only when
//! a chunk is safe, failures counted, recovered chunks replayed under their batch IDs.

// The collector-sink tests' helpers: records that carry their own number, chunks,
// the reference collector and readers of its output.
#[path = "../crates/flow-sink/tests/common/mod.rs"]
mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use common::*;
use flow_batch::{Chunk, wire::BatchId, wire::InstanceId};
use flow_identity::NoIdentity;
use flow_record::FlowRecord;
use flow_sink::{Accepted, FlowSink, SinkError};
use flowexporter::{Exporter, JournalConfig, RecordJournal, Shipping, source};

/// What a test sink was handed.
#[derive(Clone, Debug, Default)]
struct Log {
    /// `(batch ID, replayed?, record numbers)` per chunk, in order.
    chunks: Vec<(BatchId, bool, Vec<u64>)>,
    flushed: bool,
    closed: bool,
}

/// How the test sink answers.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Answer {
    Sent,
    /// Keeps every chunk "in memory", and settles them all when flushed.
    InMemory,
    Fail,
    /// Fails the first `n` attempts, then takes every chunk.
    FailFirst(u32),
    /// Never answers.
    Hang,
    /// Takes every chunk after this long.
    Slow(Duration),
}

#[derive(Clone)]
struct TestSink {
    log: Arc<Mutex<Log>>,
    answer: Answer,
    attempts: Arc<Mutex<u32>>,
    held: Arc<Mutex<Vec<BatchId>>>,
    settled: Arc<Mutex<Vec<BatchId>>>,
}

impl TestSink {
    fn new(answer: Answer) -> TestSink {
        TestSink {
            log: Arc::default(),
            answer,
            attempts: Arc::default(),
            held: Arc::default(),
            settled: Arc::default(),
        }
    }

    fn log(&self) -> Log {
        self.log.lock().expect("log").clone()
    }

    fn numbers(&self) -> Vec<u64> {
        self.log().chunks.iter().flat_map(|c| c.2.clone()).collect()
    }

    fn take(&self, chunk: &Chunk, id: &BatchId, replay: bool) -> Result<Accepted, SinkError> {
        let attempt = {
            let mut attempts = self.attempts.lock().expect("attempts");
            *attempts += 1;
            *attempts
        };
        if let Answer::FailFirst(n) = self.answer
            && attempt <= n
        {
            return Err(SinkError::other(format!(
                "attempt {attempt}: the peer is down"
            )));
        }
        if self.answer == Answer::Fail {
            return Err(SinkError::other("the test sink refuses every chunk"));
        }
        let numbers = chunk.records.iter().map(|r| r.stats.bytes_sent).collect();
        self.log
            .lock()
            .expect("log")
            .chunks
            .push((id.clone(), replay, numbers));
        match self.answer {
            Answer::Sent => Ok(Accepted::Sent),
            Answer::InMemory => {
                self.held.lock().expect("held").push(id.clone());
                Ok(Accepted::InMemory)
            }
            Answer::Fail => unreachable!("refused above"),
            Answer::FailFirst(_) | Answer::Slow(_) => Ok(Accepted::Sent),
            Answer::Hang => unreachable!("never answers"),
        }
    }
}

#[async_trait]
impl FlowSink for TestSink {
    fn name(&self) -> &str {
        "test"
    }

    async fn deliver(&self, _: &Chunk) -> Result<(), SinkError> {
        unreachable!("the pipeline calls accept and replay")
    }

    async fn accept(&self, chunk: &Chunk, id: &BatchId) -> Result<Accepted, SinkError> {
        match self.answer {
            Answer::Hang => {
                *self.attempts.lock().expect("attempts") += 1;
                std::future::pending().await
            }
            Answer::Slow(d) => {
                tokio::time::sleep(d).await;
                self.take(chunk, id, false)
            }
            _ => self.take(chunk, id, false),
        }
    }

    async fn replay(&self, chunk: &Chunk, id: &BatchId) -> Result<Accepted, SinkError> {
        self.take(chunk, id, true)
    }

    fn take_settled(&self) -> Vec<BatchId> {
        std::mem::take(&mut *self.settled.lock().expect("settled"))
    }

    async fn flush(&self) -> Result<(), SinkError> {
        let held = std::mem::take(&mut *self.held.lock().expect("held"));
        self.settled.lock().expect("settled").extend(held);
        self.log.lock().expect("log").flushed = true;
        Ok(())
    }

    async fn close(&self) -> Result<(), SinkError> {
        self.log.lock().expect("log").closed = true;
        Ok(())
    }
}

/// Sends records `0..n` through a channel source and ends it.
async fn feed(tx: source::RecordSender, n: u64) {
    for i in 0..n {
        tx.send(record(i)).await.expect("pipeline running");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_reaches_a_custom_sink_once_and_the_sink_is_flushed_and_closed() {
    let (tx, rx) = source::channel(64);
    let sink = TestSink::new(Answer::Sent);
    let exporter = Exporter::builder()
        .host_id("embedder")
        .instance(InstanceId::new(7))
        .build(rx, NoIdentity, sink.clone())
        .expect("exporter");
    let run = tokio::spawn(exporter.run());
    feed(tx, 1000).await;
    let report = run.await.expect("join").expect("run");
    assert_eq!(sink.numbers(), (0..1000).collect::<Vec<_>>());
    let log = sink.log();
    assert!(log.flushed && log.closed, "{log:?}");
    for (i, (id, replay, _)) in log.chunks.iter().enumerate() {
        assert_eq!(id.host, "embedder");
        assert_eq!(id.instance, InstanceId::new(7));
        assert_eq!(id.sequence, i as u64);
        assert!(!replay);
    }
    assert_eq!(report.pipeline.records_in, 1000);
    assert_eq!(report.batch.records_out, 1000);
    assert_eq!(report.pipeline.records_dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipping_immediately_delivers_while_running() {
    let (tx, rx) = source::channel(64);
    let sink = TestSink::new(Answer::Sent);
    let exporter = Exporter::builder()
        .shipping(Shipping::Immediately)
        .build(rx, NoIdentity, sink.clone())
        .expect("exporter");
    let handle = exporter.handle();
    let run = tokio::spawn(exporter.run());
    feed(tx.clone(), 10).await;
    eventually(Duration::from_secs(10), "10 records delivered", || {
        sink.numbers().len() == 10
    })
    .await;
    assert!(!sink.log().closed, "delivered before the stop");
    handle.stop();
    run.await.expect("join").expect("run");
    assert!(sink.log().closed);
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_kept_in_memory_keeps_its_intent_until_settled() {
    let dir = tempfile::tempdir().expect("dir");
    let (tx, rx) = source::channel(64);
    let sink = TestSink::new(Answer::InMemory);
    let (seen, observed) = (Arc::new(Mutex::new(Vec::new())), sink.clone());
    let exporter = Exporter::builder()
        .shipping(Shipping::Immediately)
        .journal(dir.path(), JournalConfig::default())
        .build(rx, NoIdentity, sink.clone())
        .expect("exporter")
        .observe(Duration::ZERO, {
            let seen = seen.clone();
            move |view| {
                let open = view.journal.map_or(0, |j| j.open_chunks);
                seen.lock().expect("seen").push(open);
            }
        });
    let handle = exporter.handle();
    let run = tokio::spawn(exporter.run());
    feed(tx.clone(), 5).await;
    eventually(Duration::from_secs(10), "an open intent", || {
        seen.lock().expect("seen").iter().any(|&open| open > 0)
    })
    .await;
    handle.stop();
    let report = run.await.expect("join").expect("run");
    // Settled at flush: every intent ended.
    assert_eq!(report.journal.expect("journal").open_chunks, 0);
    assert_eq!(observed.numbers(), (0..5).collect::<Vec<_>>());
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_fails_for_a_while_gets_every_record_once_it_is_back() {
    let (tx, rx) = source::channel(64);
    let sink = TestSink::new(Answer::FailFirst(3));
    let exporter = Exporter::builder()
        .shipping(Shipping::Immediately)
        .retry(fast_retry())
        .build(rx, NoIdentity, sink.clone())
        .expect("exporter");
    let handle = exporter.handle();
    let run = tokio::spawn(exporter.run());
    feed(tx.clone(), 50).await;
    eventually(Duration::from_secs(20), "all 50 records delivered", || {
        sink.numbers().len() == 50
    })
    .await;
    handle.stop();
    let report = run.await.expect("join").expect("run");
    assert_eq!(sink.numbers(), (0..50).collect::<Vec<_>>());
    assert_eq!(report.pipeline.delivery_retries, 3);
    assert_eq!(report.pipeline.records_dropped, 0);
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_failing_sink_never_took_is_delivered_by_the_next_start() {
    let dir = tempfile::tempdir().expect("dir");
    // The sink's peer is down for the whole first run.
    let (tx, rx) = source::channel(64);
    let down = TestSink::new(Answer::Fail);
    let exporter = Exporter::builder()
        .host_id("embedder")
        .journal(dir.path(), JournalConfig::default())
        .retry(fast_retry())
        .shutdown_timeout(Duration::from_secs(2))
        .build(rx, NoIdentity, down.clone())
        .expect("exporter");
    let run = tokio::spawn(exporter.run());
    feed(tx, 100).await;
    let report = run.await.expect("join").expect("run");
    assert_eq!(report.pipeline.records_dropped, 0, "{report:?}");
    assert!(report.pipeline.chunks_left_in_journal >= 1, "{report:?}");
    assert!(down.numbers().is_empty());

    // Back: the next start replays what the first never delivered, once.
    let (tx, rx) = source::channel(8);
    drop(tx);
    let up = TestSink::new(Answer::Sent);
    let exporter = Exporter::builder()
        .host_id("embedder")
        .journal(dir.path(), JournalConfig::default())
        .build(rx, NoIdentity, up.clone())
        .expect("exporter");
    exporter.run().await.expect("run");
    let mut got = up.numbers();
    got.sort_unstable();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    assert!(up.log().chunks.iter().all(|c| c.1), "all replayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_refused_for_good_is_counted_and_does_not_stop_the_pipeline() {
    let dir = tempfile::tempdir().expect("dir");
    let (tx, rx) = source::channel(64);
    let sink = Refusing;
    let exporter = Exporter::builder()
        .journal(dir.path(), JournalConfig::default())
        .build(rx, NoIdentity, sink)
        .expect("exporter");
    let run = tokio::spawn(exporter.run());
    feed(tx, 100).await;
    let report = run.await.expect("join").expect("run");
    assert_eq!(report.pipeline.records_dropped, 100);
    assert!(report.pipeline.delivery_errors >= 1);
    assert_eq!(report.pipeline.delivery_retries, 0);
    // Given up: the intent is ended, so that it does not hold the journal.
    assert_eq!(report.journal.expect("journal").open_chunks, 0);
}

/// A sink whose peer refuses every chunk for good.
struct Refusing;

#[async_trait]
impl FlowSink for Refusing {
    fn name(&self) -> &str {
        "refusing"
    }

    async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
        Err(SinkError::Rejected {
            url: "http://peer".into(),
            batch_id: chunk.sequence.to_string(),
            status: 400,
            body: "malformed".into(),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_in_flight_at_a_crash_are_replayed_under_their_batch_ids_then_the_rest() {
    let dir = tempfile::tempdir().expect("dir");
    // A previous run: 3 records journaled in a chunk handed out but never ended,
    // 2 journaled in no chunk; then it "crashed" (dropped without ending anything).
    let old = InstanceId::new(1);
    let in_flight: BatchId = {
        let (mut journal, recovered) =
            RecordJournal::open(dir.path(), "embedder", old, JournalConfig::default())
                .expect("journal");
        assert!(recovered.is_empty());
        let records: Vec<FlowRecord> = (0..5).map(record).collect();
        let mut tags = Vec::new();
        for r in &records {
            tags.push(journal.append_tagged(r).expect("append"));
        }
        let mut chunk = Chunk::new(window(), 0, 0, false, records[..3].to_vec());
        chunk.tags = tags[..3].to_vec();
        let id = journal.begin_chunk(&chunk).expect("intent");
        journal.sync().expect("sync");
        id
    };

    let (tx, rx) = source::channel(8);
    drop(tx);
    let sink = TestSink::new(Answer::Sent);
    let exporter = Exporter::builder()
        .host_id("embedder")
        .instance(InstanceId::new(2))
        .journal(dir.path(), JournalConfig::default())
        .build(rx, NoIdentity, sink.clone())
        .expect("exporter");
    let report = exporter.run().await.expect("run");
    let log = sink.log();
    assert_eq!(log.chunks[0], (in_flight, true, vec![0, 1, 2]));
    let rest: Vec<u64> = log.chunks[1..].iter().flat_map(|c| c.2.clone()).collect();
    assert_eq!(rest, [3, 4]);
    assert!(
        log.chunks[1..]
            .iter()
            .all(|c| !c.1 && c.0.instance == InstanceId::new(2))
    );
    assert_eq!(report.pipeline.chunks_replayed, 1);
    assert_eq!(report.pipeline.records_recovered, 2);

    // Everything ended: a third run finds nothing to recover.
    let (_journal, recovered) = RecordJournal::open(
        dir.path(),
        "embedder",
        InstanceId::new(3),
        JournalConfig::default(),
    )
    .expect("journal");
    assert!(recovered.is_empty(), "{recovered:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_runs_inside_the_pipeline_with_the_resolver_and_the_sink() {
    let (tx, rx) = source::channel(8);
    let sink = TestSink::new(Answer::Sent);
    let exporter = Exporter::builder()
        .build(rx, NoIdentity, sink.clone())
        .expect("exporter");
    let handle = exporter.handle();
    let run = tokio::spawn(exporter.run());
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    assert!(
        handle.reload(move |_resolver: &mut NoIdentity, sink: &TestSink| {
            let _ = done_tx.send(sink.name().to_owned());
        })
    );
    assert_eq!(done_rx.await.expect("reload ran"), "test");
    drop(tx);
    run.await.expect("join").expect("run");
    // Stopped: a reload is refused.
    assert!(!handle.reload(|_: &mut NoIdentity, _: &TestSink| {}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_a_hanging_send_ends_by_the_deadline_and_keeps_the_chunk_journaled() {
    let dir = tempfile::tempdir().expect("dir");
    let (tx, rx) = source::channel(64);
    let hanging = TestSink::new(Answer::Hang);
    let exporter = Exporter::builder()
        .host_id("embedder")
        .shipping(Shipping::Immediately)
        .journal(dir.path(), JournalConfig::default())
        .shutdown_timeout(Duration::from_millis(500))
        .build(rx, NoIdentity, hanging.clone())
        .expect("exporter");
    let handle = exporter.handle();
    let run = tokio::spawn(exporter.run());
    feed(tx.clone(), 20).await;
    eventually(Duration::from_secs(10), "the sink is called", || {
        *hanging.attempts.lock().expect("attempts") > 0
    })
    .await;
    let stopping = std::time::Instant::now();
    handle.stop();
    let report = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("stops by the deadline")
        .expect("join")
        .expect("run");
    // The send's grace, then the close's second.
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );
    assert!(report.pipeline.chunks_left_in_journal >= 1, "{report:?}");
    assert_eq!(report.pipeline.records_dropped, 0);
    drop(tx);

    // The next start delivers all 20, once.
    let (tx, rx) = source::channel(8);
    drop(tx);
    let up = TestSink::new(Answer::Sent);
    Exporter::builder()
        .host_id("embedder")
        .journal(dir.path(), JournalConfig::default())
        .build(rx, NoIdentity, up.clone())
        .expect("exporter")
        .run()
        .await
        .expect("run");
    let mut got = up.numbers();
    got.sort_unstable();
    assert_eq!(got, (0..20).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_under_way_at_the_stop_is_finished_not_repeated() {
    let (tx, rx) = source::channel(64);
    let slow = TestSink::new(Answer::Slow(Duration::from_millis(300)));
    let exporter = Exporter::builder()
        .shipping(Shipping::Immediately)
        .build(rx, NoIdentity, slow.clone())
        .expect("exporter");
    let handle = exporter.handle();
    let run = tokio::spawn(exporter.run());
    tx.send(record(0)).await.expect("send");
    // Stop while the sink is busy with the chunk.
    tokio::time::sleep(Duration::from_millis(100)).await;
    handle.stop();
    run.await.expect("join").expect("run");
    assert_eq!(slow.numbers(), [0], "delivered once");
    drop(tx);
}
