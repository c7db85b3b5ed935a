//! The collector through Kafka, with a real broker (tansu, on the same machine):
//!
//! - `throughput`: chunks of real frames produced to an input topic first; then one
//!   collector node consumes them as a group member, attributes, writes every flow to
//!   an output topic (idempotent, acks=all, zstd) and publishes heartbeats; timed from
//!   its start until the brokers acknowledged every flow. Reports flows/s of wall
//!   time and per core (the process's CPU time: the collector and librdkafka's
//!   threads; the broker is another process), and the heartbeat topic's volume.
//! - `connections`: the same, with the records routed by connection through a
//!   connection topic (`--connection-topic`, 3 partitions) and attributed by the
//!   node's connection consumer: every record crosses Kafka twice more (routed, then
//!   written as a flow); timed until every flow is decided and every message
//!   acknowledged.
//! - `rebuild`: an hour of heartbeats of N hosts in the heartbeat topic (as their
//!   nodes publish them: one message per host, IP and claim per minute); then a node
//!   starts and reads them back; reports how long that took.
//!
//! ```text
//! cargo bench -p flowcollector --bench kafka -- throughput [CHUNKS] [RECORDS_PER_CHUNK]
//! cargo bench -p flowcollector --bench kafka -- connections [CHUNKS] [RECORDS_PER_CHUNK]
//! cargo bench -p flowcollector --bench kafka -- rebuild [HOSTS] [IPS_PER_HOST] [MINUTES]
//! ```
//! Needs tansu (`.ci/run` installs it) and writes under the temporary directory.

use std::{
    net::SocketAddr,
    sync::atomic::Ordering,
    time::{Duration, Instant, SystemTime},
};

use flow_batch::{
    Chunk, Window,
    wire::{ChunkEncoder, InstanceId},
};
use flow_collector::{
    CollectorOptions, FlowCollector,
    attribution::{Heartbeat, HeartbeatClaim},
    kafka::{KafkaOptions, KafkaStats},
};
use flow_kafka::{
    BATCH_ID_HEADER, KafkaSettings, NODE_HEADER,
    rdkafka::{
        message::{Header, OwnedHeaders},
        producer::{BaseRecord, Producer, ThreadedProducer},
    },
};
use flow_record::{Direction, IdentitySource};
use flow_testkit::kafka::Broker;

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

fn producer(
    broker: &Broker,
) -> ThreadedProducer<flow_kafka::rdkafka::producer::DefaultProducerContext> {
    KafkaSettings::new(&broker.address())
        .expect("brokers")
        // No message timeout: on a loaded machine a bounded one could drop messages
        // silently, and the bench would read back fewer than it produced.
        .producer_config(None)
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer")
}

/// `records` records of host `h`'s workloads (20 IPs), a quarter of them to other
/// hosts' IPs (attributable), the rest to outside addresses.
fn frame(h: u32, sequence: u64, records: u32, now: SystemTime) -> Vec<u8> {
    let host = format!("host-{h}");
    let list = (0..records)
        .map(|i| {
            let ip = format!("10.{}.{}.{}", h / 250, h % 250, i % 20 + 1);
            let remote = if i % 4 == 0 {
                format!("10.{}.{}.{}:443", (h + 1) / 250, (h + 1) % 250, i % 20 + 1)
            } else {
                format!("192.0.2.{}:443", i % 250)
            };
            let t_end = now - Duration::from_millis(u64::from(i % 1000));
            flow_testkit::record()
                .local(format!("{ip}:{}", 20_000 + i % 40_000).as_str())
                .remote(remote.as_str())
                .direction(Direction::Outbound)
                .t_start(Some(t_end - Duration::from_secs(5)))
                .t_end(t_end)
                .bytes(1_000, 20_000)
                .workload(format!("app-{h}-{}", i % 20), IdentitySource::IpMap)
                .build()
        })
        .collect();
    let millis = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let start = millis - millis % 60_000;
    let window = Window::from_millis(start, start + 60_000).expect("window");
    let chunk = Chunk::new(window, sequence as u32, sequence, false, list);
    ChunkEncoder::new(&host, InstanceId::new(u128::from(h) + 1))
        .expect("encoder")
        .encode_to_vec(&chunk)
        .expect("encode")
}

/// Messages in `topic` (its `partitions` partitions' high minus low watermarks).
fn messages_in(broker: &Broker, topic: &str, partitions: i32) -> i64 {
    use flow_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = KafkaSettings::new(&broker.address())
        .expect("brokers")
        .consumer_config(None)
        .create()
        .expect("consumer");
    (0..partitions)
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            high - low
        })
        .sum()
}

/// Messages a plain consumer reads from the start of `topic` until 5 s pass without one.
fn count_messages(broker: &Broker, topic: &str, partitions: i32) -> u64 {
    use flow_kafka::rdkafka::{
        Offset, TopicPartitionList,
        consumer::{BaseConsumer, Consumer},
    };
    let consumer: BaseConsumer = KafkaSettings::new(&broker.address())
        .expect("brokers")
        .consumer_config(None)
        .create()
        .expect("consumer");
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&list).expect("assign");
    let mut n = 0;
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(5) {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            n += 1;
            last = Instant::now();
        }
    }
    n
}

fn options(dir: &std::path::Path, kafka: KafkaOptions) -> CollectorOptions {
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    CollectorOptions::new(listen, dir.join("flows.jsonl"))
        .with_hold_back(Duration::ZERO)
        .with_kafka(kafka)
}

async fn throughput(chunks: u32, per_chunk: u32, route: bool) {
    let broker = Broker::in_memory();
    for topic in ["chunks", "flows", "heartbeats", "connections"] {
        broker.create_topic(topic, 3);
    }
    let now = SystemTime::now();
    let hosts = 100;
    {
        let producer = producer(&broker);
        for c in 0..chunks {
            let h = c % hosts;
            let bytes = frame(h, u64::from(c / hosts), per_chunk, now);
            let host = format!("host-{h}");
            let headers = OwnedHeaders::new().insert(Header {
                key: BATCH_ID_HEADER,
                value: Some(b"bench"),
            });
            let mut record = BaseRecord::to("chunks")
                .key(&host)
                .payload(&bytes)
                .headers(headers);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        record = back;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        }
        producer.flush(Duration::from_secs(120)).expect("flush");
    }
    let total = u64::from(chunks) * u64::from(per_chunk);
    let dir = tempfile::tempdir().expect("dir");
    let settings = KafkaSettings::new(&broker.address()).expect("brokers");
    let kafka = KafkaOptions::new(settings)
        .with_input("chunks", "bench")
        .with_output_topic("flows")
        .with_heartbeat_topic("heartbeats");
    let kafka = if route {
        kafka.with_connection_topic("connections")
    } else {
        kafka
    };
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let collector = FlowCollector::start(options(dir.path(), kafka))
        .await
        .expect("collector");
    let stats = collector.kafka_stats().expect("kafka");
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        assert!(Instant::now() < deadline, "not done in 30 minutes");
        let acked = KafkaStats::get(&stats.output_acknowledged);
        let done = if route {
            // Routed messages and flows share the counters: every flow decided, and
            // every message produced acknowledged.
            let produced =
                KafkaStats::get(&stats.output_produced) - KafkaStats::get(&stats.output_retried);
            collector.parts().await.attribution.flows_out >= total && acked >= produced
        } else {
            acked >= total
        };
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    collector.shutdown().await;
    let published = KafkaStats::get(&stats.heartbeats_published);
    let hb_bytes = KafkaStats::get(&stats.heartbeat_bytes_published);
    println!(
        "{}: {total} flows ({chunks} chunks of {per_chunk}, {hosts} hosts) in {wall:.2} s wall, {cpu:.2} s CPU",
        if route { "connections" } else { "throughput" }
    );
    println!(
        "  {:.0} flows/s wall, {:.0} flows/s per core (CPU), output {:.0} bytes/flow",
        total as f64 / wall,
        total as f64 / cpu,
        KafkaStats::get(&stats.output_bytes) as f64 / total as f64
    );
    println!(
        "  heartbeats published: {published} messages, {hb_bytes} bytes ({:.1} bytes/message)",
        hb_bytes as f64 / published.max(1) as f64
    );
}

async fn rebuild(hosts: u32, ips: u32, minutes: u32) {
    let broker = Broker::in_memory();
    broker.create_topic("heartbeats", 6);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let minute = 60_000_000_000u64;
    let mut messages = 0u64;
    let mut bytes = 0u64;
    {
        let producer = producer(&broker);
        for m in (0..minutes).rev() {
            let end = now - u64::from(m) * minute;
            for h in 0..hosts {
                for i in 0..ips {
                    let ip = format!("10.{}.{}.{}", h / 250, h % 250, i + 1)
                        .parse()
                        .expect("ip");
                    let hb = Heartbeat::new(
                        format!("host-{h}"),
                        ip,
                        HeartbeatClaim::Owned(
                            flow_record::WorkloadId::new(format!("app-{h}-{i}")).expect("id"),
                        ),
                        vec![(end - minute + 1_000_000, end)],
                    )
                    .expect("heartbeat");
                    let value = hb.encode();
                    let key = hb.key();
                    messages += 1;
                    bytes += value.len() as u64;
                    let headers = OwnedHeaders::new().insert(Header {
                        key: NODE_HEADER,
                        value: Some(b"publisher"),
                    });
                    let mut record = BaseRecord::to("heartbeats")
                        .key(&key)
                        .payload(&value)
                        .headers(headers);
                    loop {
                        match producer.send(record) {
                            Ok(()) => break,
                            Err((_, back)) => {
                                record = back;
                                std::thread::sleep(Duration::from_millis(10));
                            }
                        }
                    }
                }
            }
        }
        producer.flush(Duration::from_secs(600)).expect("flush");
    }
    let in_topic = messages_in(&broker, "heartbeats", 6);
    let readable = count_messages(&broker, "heartbeats", 6);
    println!("  produced {messages}; watermarks say {in_topic}; a plain consumer reads {readable}");
    let dir = tempfile::tempdir().expect("dir");
    let settings = KafkaSettings::new(&broker.address()).expect("brokers");
    let kafka = KafkaOptions::new(settings).with_heartbeat_topic("heartbeats");
    let started = Instant::now();
    let collector = FlowCollector::start(options(dir.path(), kafka))
        .await
        .expect("collector");
    let start_took = started.elapsed();
    let stats = collector.kafka_stats().expect("kafka");
    let rebuilt = KafkaStats::get(&stats.heartbeats_rebuilt);
    let micros = stats.rebuild_micros.load(Ordering::Relaxed);
    // What the broker reported as the end at start may be short of what it holds: the
    // rest comes through the follower right after.
    let caught_up = Instant::now();
    while rebuilt + KafkaStats::get(&stats.heartbeats_consumed) < messages
        && caught_up.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let followed = KafkaStats::get(&stats.heartbeats_consumed);
    let parts = collector.parts().await;
    collector.shutdown().await;
    println!(
        "  after the start the follower read {followed} more ({} in all) within {:.2} s",
        rebuilt + followed,
        caught_up.elapsed().as_secs_f64()
    );
    println!(
        "rebuild: {hosts} hosts x {ips} IPs x {minutes} minutes = {messages} heartbeat messages produced ({:.1} MB), {in_topic} in the topic",
        bytes as f64 / 1e6
    );
    println!(
        "  read back and applied {rebuilt} in {:.2} s ({:.0} heartbeats/s); the whole start took {:.2} s; map: {} ranges, {} IPs, {:.1} MB",
        micros as f64 / 1e6,
        rebuilt as f64 / (micros as f64 / 1e6),
        start_took.as_secs_f64(),
        parts.attribution.ranges,
        parts.attribution.tracked_ips,
        parts.attribution.map_bytes as f64 / 1e6
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let n = |i: usize, default: u32| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    match args.first().map(String::as_str) {
        Some("throughput") => throughput(n(1, 200), n(2, 1000), false).await,
        Some("connections") => throughput(n(1, 200), n(2, 1000), true).await,
        Some("rebuild") => rebuild(n(1, 1000), n(2, 20), n(3, 60)).await,
        _ => {
            throughput(n(1, 200), n(2, 1000), false).await;
            throughput(n(1, 200), n(2, 1000), true).await;
            rebuild(1000, 20, 60).await;
        }
    }
}
