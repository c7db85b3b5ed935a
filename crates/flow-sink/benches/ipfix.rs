//! The IPFIX sink's CPU per record: what one attempt costs for a chunk of 1,000
//! realistic records (IPv4 and IPv6, both directions, attributed or not, outbound
//! ones with their process, most with a flow ID): decoding the spooled frame and
//! encoding its IPFIX messages (UDP's 1,400-byte messages, templates included); and
//! the encoding alone, for UDP's and TCP's message sizes. Prints the bytes per record
//! on the wire (IPFIX messages, without IP and UDP or TCP headers).
//!
//! `cargo bench -p flow-sink --features ipfix --bench ipfix`

use std::{
    hint::black_box,
    time::{Duration, UNIX_EPOCH},
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flow_batch::{
    Chunk, Window,
    wire::{ChunkDecoder, ChunkEncoder, DecodeLimits, InstanceId},
};
use flow_record::{
    CloseReason, Direction, FlowId, FlowRecord, IdentitySource, ProcessInfo, RecordKind,
    SocketStats, TcpState, UnattributedReason,
};
use flow_sink::ipfix_sink::{IpfixEncoder, Messages, observation_domain_for};

const RECORDS: u64 = 1_000;
const HOST: &str = "node-17.prod.example";

fn record(n: u64) -> FlowRecord {
    let t_end = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_000_000_000 + n * 37_000_123);
    let outbound = !n.is_multiple_of(3);
    let (local, remote) = if n.is_multiple_of(5) {
        (
            format!("[2001:db8::{:x}]:{}", n % 7 + 1, 30_000 + n % 20_000),
            format!("[2001:db8:1::{:x}]:443", n % 200 + 1),
        )
    } else if outbound {
        (
            format!("10.0.{}.{}:{}", n % 4, n % 250 + 1, 30_000 + n % 20_000),
            format!("10.{}.{}.{}:443", n % 16, (n / 7) % 250, n % 250 + 1),
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
        .t_start((!n.is_multiple_of(50)).then(|| t_end - Duration::from_millis(20 + n % 5_000)))
        .stats(SocketStats {
            bytes_sent: 500 + n * 131,
            bytes_received: 2_000 + n * 977,
            segs_in: 10 + (n % 300) as u32,
            segs_out: 12 + (n % 200) as u32,
            retransmits: (n.is_multiple_of(17)) as u32,
            bytes_retransmitted: if n.is_multiple_of(17) { 1448 } else { 0 },
            srtt_us: 200 + (n % 5_000) as u32,
            rttvar_us: 50 + (n % 800) as u32,
        })
        .close(
            TcpState(7),
            if n.is_multiple_of(23) {
                CloseReason::Reset
            } else {
                CloseReason::Normal
            },
        )
        .kind(if n % 10 == 9 {
            RecordKind::Interim
        } else {
            RecordKind::Final
        })
        .flow_id((!n.is_multiple_of(20)).then_some(FlowId {
            boot_id: [0x5a; 16],
            cookie: 0x1_0000 + n,
        }))
        .process(
            outbound.then(|| ProcessInfo::new(1_000 + (n % 300) as u32, "java", 4_000 + n % 40)),
        );
    b = if n % 4 == 3 {
        b.unattributed(UnattributedReason::NoMatch)
    } else {
        b.workload(
            format!("k8s:prod/service-{}", n % 40),
            IdentitySource::ConnectMap,
        )
    };
    b.build()
}

fn frame() -> Vec<u8> {
    let window = Window::from_millis(1_700_000_000_000, 1_700_000_060_000).expect("window");
    let chunk = Chunk::new(window, 0, 7, false, (0..RECORDS).map(record).collect());
    ChunkEncoder::new(HOST, InstanceId::new(1))
        .expect("encoder")
        .encode_to_vec(&chunk)
        .expect("frame")
}

/// The messages of `records` as one attempt writes them: templates, then data.
fn encode(encoder: &IpfixEncoder, records: &[FlowRecord], out: &mut Messages) {
    out.clear();
    let domain = observation_domain_for(HOST);
    let mut sequence = encoder.encode_templates(domain, HOST, 1_700_000_060, 0, out);
    let mut next = 0;
    while next < records.len() {
        let taken = encoder.encode_message(&records[next..], domain, 1_700_000_060, sequence, out);
        next += taken;
        sequence = sequence.wrapping_add(taken as u32);
    }
}

fn bench(c: &mut Criterion) {
    let frame = frame();
    let mut decoder = ChunkDecoder::new(DecodeLimits::default()).expect("decoder");
    let records = decoder.decode(&frame).expect("decode").records;
    let udp = IpfixEncoder::new(32473, 1400).expect("udp encoder");
    let tcp = IpfixEncoder::new(32473, 65535).expect("tcp encoder");
    let mut out = Messages::new();
    for (name, encoder) in [("udp", &udp), ("tcp", &tcp)] {
        encode(encoder, &records, &mut out);
        println!(
            "ipfix {name}: {} messages, {} bytes for {RECORDS} records: {:.1} bytes/record (frame: {:.1} bytes/record)",
            out.len(),
            out.as_bytes().len(),
            out.as_bytes().len() as f64 / RECORDS as f64,
            frame.len() as f64 / RECORDS as f64,
        );
    }
    let mut group = c.benchmark_group("ipfix");
    group.throughput(Throughput::Elements(RECORDS));
    group.bench_function("attempt_udp_decode_and_encode", |b| {
        b.iter(|| {
            let decoded = decoder.decode(black_box(&frame)).expect("decode");
            encode(&udp, &decoded.records, &mut out);
            black_box(out.as_bytes().len())
        })
    });
    group.bench_function("encode_udp_1400", |b| {
        b.iter(|| {
            encode(&udp, black_box(&records), &mut out);
            black_box(out.as_bytes().len())
        })
    });
    group.bench_function("encode_tcp_65535", |b| {
        b.iter(|| {
            encode(&tcp, black_box(&records), &mut out);
            black_box(out.as_bytes().len())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
