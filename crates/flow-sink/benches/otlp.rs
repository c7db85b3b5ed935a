//! The OTLP sink's CPU per record: what one attempt costs for a chunk of 1,000
//! realistic records (IPv4 and IPv6, both directions, attributed or not, outbound
//! ones with their process, every one with a flow ID): decoding the spooled frame,
//! building the `ExportLogsServiceRequest` (protobuf) and gzipping it; and each step
//! alone. Prints the request's bytes per record, gzipped and not. The build and the
//! attempt are measured twice: as the sink does them (the hand-written encoder) and,
//! as the baseline, with the prost messages it used before
//! (`RequestEncoder::encode_reference`, the same bytes).
//!
//! `cargo bench -p flow-sink --features otlp --bench otlp`

use std::{
    hint::black_box,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flow_batch::{
    Chunk, Completeness, Window,
    wire::{ChunkDecoder, ChunkEncoder, DecodeLimits, InstanceId},
};
use flow_record::{
    CloseReason, Direction, FlowId, FlowRecord, IdentitySource, ProcessInfo, RecordKind,
    SocketStats, TcpState, UnattributedReason,
};
use flow_sink::otlp_sink::{Compression, RequestEncoder};

const RECORDS: u64 = 1_000;

fn record(n: u64) -> FlowRecord {
    let t_end = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_000_000_000 + n * 37_000_123);
    let outbound = !n.is_multiple_of(3);
    let v6 = n.is_multiple_of(5);
    let (local, remote) = if v6 {
        (
            format!("[2001:db8::{:x}]:{}", n % 7 + 1, 30_000 + n % 20_000),
            format!("[2001:db8:1::{:x}]:443", n % 200 + 1),
        )
    } else if outbound {
        (
            format!("10.0.{}.{}:{}", n % 4, n % 250 + 1, 30_000 + n % 20_000),
            format!(
                "10.{}.{}.{}:{}",
                n % 16,
                (n / 7) % 250,
                n % 250 + 1,
                [443, 8080, 5432][n as usize % 3]
            ),
        )
    } else {
        (
            format!("10.0.{}.{}:8443", n % 4, n % 250 + 1),
            format!(
                "10.{}.{}.{}:{}",
                n % 16,
                (n / 7) % 250,
                n % 250 + 1,
                40_000 + n % 20_000
            ),
        )
    };
    let mut b = flow_testkit::record()
        .local(local.as_str())
        .remote(remote.as_str())
        .direction(if outbound {
            Direction::Outbound
        } else {
            Direction::Inbound
        })
        .t_end(t_end)
        .stats(SocketStats {
            bytes_sent: 1_000 + n * 977,
            bytes_received: 20_000 + n * 7_919,
            segs_in: 10 + (n % 300) as u32,
            segs_out: 12 + (n % 280) as u32,
            retransmits: n.is_multiple_of(11) as u32,
            bytes_retransmitted: if n.is_multiple_of(11) { 1_448 } else { 0 },
            srtt_us: 200 + (n % 5_000) as u32,
            rttvar_us: 50 + (n % 900) as u32,
        })
        .close(
            TcpState(7),
            if n.is_multiple_of(17) {
                CloseReason::Reset
            } else {
                CloseReason::Normal
            },
        )
        .flow_id(Some(FlowId {
            boot_id: [0x5a; 16],
            cookie: 0x1000_0000 + n,
        }));
    b = if n % 4 == 3 {
        b.unattributed(UnattributedReason::NoMatch)
    } else {
        b.workload(
            format!("k8s:prod/service-{}", n % 40),
            IdentitySource::IpMap,
        )
    };
    if outbound {
        b = b.process(Some(ProcessInfo::new(
            1_000 + (n % 500) as u32,
            "java",
            4_000 + n % 60,
        )));
    }
    if n % 10 == 9 {
        b = b.kind(RecordKind::Interim);
    }
    b.build()
}

fn frame() -> Vec<u8> {
    let window = Window::from_millis(1_700_000_000_000, 1_700_000_060_000).expect("window");
    let mut chunk = Chunk::new(window, 0, 0, true, (0..RECORDS).map(record).collect());
    chunk.completeness = Some(Completeness {
        closes_seen: RECORDS,
        records_emitted: RECORDS,
        running_whole_window: true,
        ..Completeness::default()
    });
    ChunkEncoder::new("host-a.example", InstanceId::new(42))
        .expect("encoder")
        .encode_to_vec(&chunk)
        .expect("encode")
}

fn otlp(c: &mut Criterion) {
    let frame = frame();
    let mut decoder = ChunkDecoder::new(DecodeLimits::default()).expect("decoder");
    let decoded = decoder.decode(&frame).expect("decode");
    let encoder = RequestEncoder::new("0.1.0", Some("host-a.example".into()));
    let now = SystemTime::now();
    let plain = encoder.encode(&decoded, now);
    assert!(
        plain == encoder.encode_reference(&decoded, now),
        "the request differs from the reference's"
    );
    let gzipped = Compression::Gzip.apply(plain.clone()).expect("gzip");
    eprintln!(
        "OTLP request for {RECORDS} records: {} bytes ({:.1} per record) as protobuf, \
         {} bytes ({:.1} per record) gzipped; the frame: {} bytes ({:.1} per record)",
        plain.len(),
        plain.len() as f64 / RECORDS as f64,
        gzipped.len(),
        gzipped.len() as f64 / RECORDS as f64,
        frame.len(),
        frame.len() as f64 / RECORDS as f64,
    );

    let mut g = c.benchmark_group("otlp");
    g.throughput(Throughput::Elements(RECORDS));
    g.bench_function("attempt: decode + build + gzip", |b| {
        b.iter(|| {
            let decoded = decoder.decode(black_box(&frame)).expect("decode");
            let body = encoder.encode(&decoded, now);
            black_box(Compression::Gzip.apply(body).expect("gzip"))
        })
    });
    g.bench_function("attempt, reference (prost): decode + build + gzip", |b| {
        b.iter(|| {
            let decoded = decoder.decode(black_box(&frame)).expect("decode");
            let body = encoder.encode_reference(&decoded, now);
            black_box(Compression::Gzip.apply(body).expect("gzip"))
        })
    });
    g.bench_function("build (protobuf)", |b| {
        b.iter(|| black_box(encoder.encode(black_box(&decoded), now)))
    });
    let mut buffer = Vec::new();
    g.bench_function("build (protobuf) into a reused buffer", |b| {
        b.iter(|| {
            encoder.encode_into(black_box(&decoded), now, &mut buffer);
            black_box(buffer.len())
        })
    });
    g.bench_function("build, reference (prost)", |b| {
        b.iter(|| black_box(encoder.encode_reference(black_box(&decoded), now)))
    });
    g.bench_function("gzip", |b| {
        b.iter(|| {
            black_box(
                Compression::Gzip
                    .apply(black_box(plain.clone()))
                    .expect("gzip"),
            )
        })
    });
    g.bench_function("decode the frame", |b| {
        b.iter(|| black_box(decoder.decode(black_box(&frame)).expect("decode")))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(4));
    targets = otlp
}
criterion_main!(benches);
