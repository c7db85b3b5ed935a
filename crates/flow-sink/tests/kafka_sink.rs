//! The Kafka sink against a real Kafka-protocol broker (tansu, started by the tests),
//! every topic read back with an independent client (kafka-python).

mod common;

use std::{collections::BTreeMap, path::Path, time::Duration};

use common::*;
use flow_batch::{
    Chunk,
    wire::{BatchId, ChunkDecoder, ChunkEncoder, DecodeLimits, InstanceId},
};
use flow_sink::{
    FlowSink, KafkaSink, KafkaSinkConfig, SinkError, TopicCheck,
    kafka_sink::{BATCH_ID_HEADER, ErrorKind, KafkaSettings},
};
use flow_testkit::kafka::{Broker, Message, Storage};

const TOPIC: &str = "flow-chunks";
const WAIT: Duration = Duration::from_secs(60);

/// A sink for `brokers` and `topic`, run `instance`, spooling in `spool`: fast
/// retries, 2 s attempts, every failure logged.
fn config(brokers: &str, topic: &str, instance: u128, spool: &Path) -> KafkaSinkConfig {
    let mut kafka = KafkaSettings::new(brokers).expect("brokers");
    kafka.request_timeout = Duration::from_secs(2);
    KafkaSinkConfig::new(kafka, topic, HOST, InstanceId::new(instance))
        .with_retry(fast_retry())
        .with_spool_dir(spool)
        .with_flush_timeout(WAIT)
        .with_error_log_interval(Duration::ZERO)
        .with_topic_check_timeout(Duration::from_secs(3))
}

/// Every message of `topic`, read with kafka-python.
fn read(broker: &Broker, topic: &str) -> Vec<Message> {
    tokio::task::block_in_place(|| broker.read_topic(topic))
}

/// Asserts that `messages` are `chunks`, each once, as run `instance` of [`HOST`]
/// encodes them: value byte for byte the frame a collector sink posts (decoded, the
/// same records), key the host, header the batch ID.
fn assert_chunks_once(messages: &[Message], chunks: &[Chunk], instance: u128) {
    let instance = InstanceId::new(instance);
    let mut by_id: BTreeMap<String, &Message> = BTreeMap::new();
    for m in messages {
        let id = m.header(BATCH_ID_HEADER).expect("the batch ID header");
        assert!(
            by_id.insert(id.to_owned(), m).is_none(),
            "batch {id} produced twice"
        );
    }
    assert_eq!(by_id.len(), chunks.len(), "one message per chunk");
    let mut encoder = ChunkEncoder::new(HOST.to_owned(), instance).expect("encoder");
    let mut decoder = ChunkDecoder::new(DecodeLimits::default()).expect("decoder");
    for chunk in chunks {
        let id = BatchId {
            host: HOST.to_owned(),
            instance,
            sequence: chunk.sequence,
        };
        let m = by_id
            .get(&id.to_string())
            .unwrap_or_else(|| panic!("no message for batch {id}"));
        assert_eq!(m.key.as_deref(), Some(HOST), "the key is the host");
        let frame = encoder.encode_to_vec(chunk).expect("encode");
        assert!(
            m.value == frame,
            "batch {id}: not the collector sink's frame"
        );
        let decoded = decoder.decode(&m.value).expect("a valid frame");
        assert_eq!(decoded.header.batch_id(), id);
        assert_eq!(decoded.records, chunk.records, "batch {id}: records");
    }
}

/// Waits for the topic check at start to answer.
async fn checked(sink: &KafkaSink) -> TopicCheck {
    eventually(WAIT, "the topic check", || {
        sink.topic_check() != TopicCheck::Pending
    })
    .await;
    sink.topic_check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_arrive_once_each_as_the_collectors_frames_keyed_by_host_with_their_batch_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::in_memory();
    broker.create_topic(TOPIC, 2);
    let sink = KafkaSink::start(config(
        &broker.address(),
        TOPIC,
        1,
        &dir.path().join("spool"),
    ))
    .expect("sink");
    assert_eq!(checked(&sink).await, TopicCheck::Found { partitions: 2 });
    let all = chunks(12, 40);
    for c in &all {
        sink.deliver(c).await.expect("deliver");
    }
    sink.flush().await.expect("flush");
    let c = sink.counters();
    assert_eq!(
        (c.chunks_accepted, c.messages_produced, c.records_produced),
        (12, 12, 480)
    );
    assert_eq!(
        (c.retries, c.produce_errors_total(), c.chunks_rejected),
        (0, 0, 0)
    );
    assert!(c.bytes_produced > 0 && c.produces_timed == 12, "{c:?}");
    let spool = c.spool.expect("spool counters");
    assert_eq!((spool.files, spool.chunks_removed), (0, 12));
    sink.close().await.expect("close");
    assert_chunks_once(&read(&broker, TOPIC), &all, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_at_start_spools_every_chunk_then_all_arrive_once_it_is_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The topic is made, then the broker stopped: its SQLite store keeps the topic
    // for when it comes back on the same port.
    let mut broker = Broker::start(Storage::Sqlite(dir.path().join("broker.db")));
    broker.create_topic(TOPIC, 1);
    broker.stop();
    let sink = KafkaSink::start(config(
        &broker.address(),
        TOPIC,
        2,
        &dir.path().join("spool"),
    ))
    .expect("a sink starts with its broker down");
    match checked(&sink).await {
        TopicCheck::Failed { kind, message } => {
            assert_eq!(kind, ErrorKind::Unreachable, "{message}");
            assert!(message.contains("no Kafka broker"), "{message}");
        }
        other => panic!("expected an unreachable broker, got {other:?}"),
    }
    let all = chunks(8, 25);
    for c in &all {
        sink.deliver(c)
            .await
            .expect("spooled while the broker is down");
    }
    eventually(WAIT, "failed produces", || {
        sink.counters().produce_errors(ErrorKind::Unreachable) >= 2
    })
    .await;
    let c = sink.counters();
    assert_eq!((c.messages_produced, c.chunks_rejected), (0, 0));
    assert_eq!(c.spool.expect("spool").files, 8);

    tokio::task::block_in_place(|| broker.restart());
    sink.flush().await.expect("flush");
    let c = sink.counters();
    assert_eq!((c.messages_produced, c.records_produced), (8, 200), "{c:?}");
    assert!(c.retries >= 2, "{c:?}");
    sink.close().await.expect("close");
    assert_chunks_once(&read(&broker, TOPIC), &all, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_topic_is_named_at_start_and_its_chunks_wait_until_it_is_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Broker::in_memory();
    let topic = "not-yet";
    let sink = KafkaSink::start(config(
        &broker.address(),
        topic,
        3,
        &dir.path().join("spool"),
    ))
    .expect("a sink starts without its topic");
    match checked(&sink).await {
        TopicCheck::Failed { kind, message } => {
            assert_eq!(kind, ErrorKind::MissingTopic, "{message}");
            assert!(
                message.contains("\"not-yet\" does not exist") && message.contains("create it"),
                "{message}"
            );
        }
        other => panic!("expected a missing topic, got {other:?}"),
    }
    let all = chunks(5, 10);
    for c in &all {
        sink.deliver(c)
            .await
            .expect("spooled while the topic is missing");
    }
    eventually(WAIT, "produces refused for the missing topic", || {
        sink.counters().produce_errors(ErrorKind::MissingTopic) >= 2
    })
    .await;
    let c = sink.counters();
    // Retried, never set aside: creating the topic is all it takes.
    assert_eq!((c.messages_produced, c.chunks_rejected), (0, 0), "{c:?}");
    assert_eq!(c.spool.expect("spool").files, 5);

    broker.create_topic(topic, 1);
    sink.flush().await.expect("flush");
    assert_eq!(sink.counters().messages_produced, 5);
    sink.close().await.expect("close");
    assert_chunks_once(&read(&broker, topic), &all, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_larger_than_a_message_may_be_is_set_aside_and_the_rest_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = dir.path().join("spool");
    let broker = Broker::in_memory();
    broker.create_topic(TOPIC, 1);
    let sink =
        KafkaSink::start(config(&broker.address(), TOPIC, 4, &spool).with_max_message_bytes(1000))
            .expect("sink");
    let large = chunk(0, 0, 300);
    let small = chunk(1, 300, 1);
    sink.deliver(&large).await.expect("deliver");
    sink.deliver(&small).await.expect("deliver");
    sink.flush().await.expect("flush");
    let c = sink.counters();
    assert_eq!((c.chunks_rejected, c.records_rejected), (1, 300), "{c:?}");
    assert_eq!(c.produce_errors(ErrorKind::MessageTooLarge), 1);
    assert_eq!(c.messages_produced, 1);
    sink.close().await.expect("close");
    // Kept with the reason, not lost.
    let rejected: Vec<String> = std::fs::read_dir(spool.join("rejected"))
        .expect("rejected/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    let reason = rejected
        .iter()
        .find(|n| n.ends_with(".reason"))
        .expect("a reason");
    let reason = std::fs::read_to_string(spool.join("rejected").join(reason)).expect("read");
    assert!(reason.starts_with("Kafka kafka://"), "{reason}");
    assert_chunks_once(&read(&broker, TOPIC), &[small], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_spool_the_caller_gets_the_error_once_the_attempts_run_out() {
    let addr = free_port();
    let mut config = config(&addr.to_string(), TOPIC, 5, Path::new("/unused"));
    config.spool_dir = None;
    config.kafka.request_timeout = Duration::from_millis(500);
    config.retry = fast_retry().with_max_attempts(Some(2));
    let sink = KafkaSink::start(config).expect("sink");
    let error = sink
        .deliver(&chunk(0, 0, 3))
        .await
        .expect_err("nobody listens");
    assert!(matches!(error, SinkError::Kafka { .. }), "{error:?}");
    assert!(!error.is_permanent());
    let c = sink.counters();
    assert_eq!((c.produce_attempts, c.chunks_failed), (2, 1), "{c:?}");
    sink.close().await.expect("close");
}
