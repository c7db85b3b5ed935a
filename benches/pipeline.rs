//! The user-side pipeline on one core, stage by stage, in records per second:
//!
//! - `raw_to_record/*`: ring-buffer entry bytes -> `RawFlowEvent` (an unaligned copy,
//!   as `flow_capture`'s reader does) -> `FlowRecord::from_raw`, for IPv4 and IPv6
//!   records with and without a workload identity, and a mix of the four;
//! - `batch/push_poll`: `MinuteBatcher::push` + `poll_chunk` with a simulated clock;
//! - `encode_chunk/*`: one chunk of the default size (16,384 records): the records
//!   alone, with bincode and with the encoder's own record writer
//!   (`wire::encode_record`, the same bytes), zstd alone, and `ChunkEncoder::encode`
//!   (records, zstd, checksums and header);
//! - `json/write_line`: `flow_sink::json::write_line` into a `Vec`;
//! - `end_to_end/bytes_to_chunk`: ring bytes -> record -> batcher -> encoded,
//!   compressed frame.
//!
//! Records are built as the kernel writes them (`RawFlowEvent` byte images) at 20,000
//! closes per second of simulated time, the machine's highest churn; the mix is a
//! quarter each of IPv4, IPv4 + workload, IPv6, IPv6 + workload.
//!
//! After the criterion groups, a child process measures the peak RSS of the end-to-end
//! path with the default limits (60 s windows, 16,384 records or 4 MiB per chunk):
//! `FLOW_BENCH_RSS_SECONDS` (default 120) seconds of simulated time at
//! `FLOW_BENCH_RSS_RATE` (default 20,000) records per second, the records written into
//! an 8 MiB ring like the default one and read back from it, and it reports the
//! process's `VmHWM`. `FLOW_BENCH_RSS=0` skips it; `FLOW_BENCH_RSS=only` runs only it.
//!
//! `cargo bench --bench pipeline` (a criterion filter after `--` selects groups).

use std::{
    hint::black_box,
    io::Write as _,
    net::Ipv4Addr,
    process::Command,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bincode::Options as _;
use criterion::{BatchSize, Criterion, SamplingMode, Throughput};
use flow_common::{RawFlowEvent, WORKLOAD_ID_MAX, WorkloadValue, flags, identity, tcp};
use flowexporter::{
    batch::{
        BatchConfig, Chunk, MinuteBatcher,
        wire::{self, ChunkEncoder, InstanceId},
    },
    capture::{BootClock, DEFAULT_RING_SIZE, FlowRecord},
    sink::json,
};

/// Simulated closes per second (the machine's highest churn).
const RATE: u64 = 20_000;
/// Boot-clock time of the first simulated close.
const BOOT0_NS: u64 = 3_600 * 1_000_000_000;
/// Wall-clock time of the first simulated close: 10 s into a 60 s window.
const WALL0_NS: u64 = 1_700_000_010 * 1_000_000_000;
/// Records in one simulated ring drain (about 50 ms at `RATE`, the reader's poll
/// interval): they share one `now`.
const DRAIN: usize = 1_024;
/// Records per iteration of the per-record stages.
const SMALL: usize = 4_096;
/// Records per iteration of batching and end to end: four default-size chunks.
const LARGE: usize = 4 * 16_384;
/// Ring-buffer entries are the record behind an 8-byte header, 8-byte aligned.
const RING_HEADER: usize = 8;

/// The four kinds of record, and their mix.
#[derive(Clone, Copy, Debug)]
enum Kind {
    V4,
    V4Workload,
    V6,
    V6Workload,
    Mix,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::V4 => "ipv4",
            Kind::V4Workload => "ipv4_workload",
            Kind::V6 => "ipv6",
            Kind::V6Workload => "ipv6_workload",
            Kind::Mix => "mix",
        }
    }

    fn of(self, i: u64) -> Kind {
        match (self, i % 4) {
            (Kind::Mix, 0) => Kind::V4,
            (Kind::Mix, 1) => Kind::V4Workload,
            (Kind::Mix, 2) => Kind::V6,
            (Kind::Mix, _) => Kind::V6Workload,
            (k, _) => k,
        }
    }
}

/// SplitMix64 of `x`: varied but reproducible field values.
fn mix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn workload(i: u64) -> WorkloadValue {
    let id = format!("k8s:prod/payments-api-7d9f8c6b5-{:05x}", i % 64);
    let mut v = WorkloadValue::EMPTY;
    v.id[..id.len().min(WORKLOAD_ID_MAX)].copy_from_slice(id.as_bytes());
    v
}

/// The `i`-th close, as the kernel program writes it: a container host's mix of
/// inbound and outbound connections, a few failed, most with a FIN received.
fn raw_event(i: u64, kind: Kind) -> RawFlowEvent {
    let r = mix64(i);
    let kind = kind.of(i);
    let mut ev = RawFlowEvent::zeroed();
    ev.end_ns = BOOT0_NS + i * (1_000_000_000 / RATE);
    ev.start_ns = ev.end_ns.saturating_sub(1_000_000 + r % 30_000_000_000);
    let outbound = r & 1 == 0;
    ev.direction = if outbound { 1 } else { 2 };
    ev.flags = flags::FIN_RECEIVED;
    if r % 16 == 3 {
        ev.flags = flags::START_UNKNOWN;
        ev.start_ns = 0;
        ev.direction = 0;
    }
    (ev.close_state, ev.sk_err) = match r % 50 {
        0 => (tcp::TCP_SYN_SENT, libc::ECONNREFUSED as u32),
        1 => (tcp::TCP_ESTABLISHED, libc::ECONNRESET as u32),
        2..=24 => (tcp::TCP_LAST_ACK, 0),
        _ => (tcp::TCP_FIN_WAIT1, 0),
    };
    let payload = (r >> 8) % 2_000_000;
    ev.bytes_sent = payload / 3 + 1;
    ev.bytes_acked = ev.bytes_sent + 2;
    ev.bytes_received = payload + 1;
    ev.segs_in = (payload / 1_448) as u32 + 3;
    ev.segs_out = (payload / 4_000) as u32 + 4;
    if r.is_multiple_of(10) {
        ev.total_retrans = 1;
        ev.bytes_retrans = 1_448;
    }
    ev.srtt_us_x8 = ((r >> 32) % 50_000) as u32 * 8;
    ev.mdev_us_x4 = ((r >> 40) % 10_000) as u32 * 4;
    let peer = (r >> 16) as u16;
    let (local_port, remote_port) = if outbound {
        (
            32_768 + (i % 28_000) as u16,
            [443, 5432, 6379, 8080][(r >> 20) as usize % 4],
        )
    } else {
        (8080, 32_768 + (peer % 28_000))
    };
    ev.local_port = local_port;
    ev.remote_port = remote_port;
    match kind {
        Kind::V4 | Kind::V4Workload => {
            ev.family = tcp::AF_INET;
            ev.local_addr[..4].copy_from_slice(&Ipv4Addr::new(10, 244, 3, 17).octets());
            let remote = Ipv4Addr::new(10, 96, (peer >> 8) as u8, peer as u8);
            ev.remote_addr[..4].copy_from_slice(&remote.octets());
        }
        _ => {
            ev.family = tcp::AF_INET6;
            ev.local_addr = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x03, 0x11];
            ev.remote_addr = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            ev.remote_addr[14..].copy_from_slice(&peer.to_be_bytes());
        }
    }
    if matches!(kind, Kind::V4Workload | Kind::V6Workload) {
        ev.identity_source = if r.is_multiple_of(3) {
            identity::source::CONNECT_MAP
        } else {
            identity::source::IP_MAP
        };
        ev.workload = workload(i);
    }
    ev
}

fn event_bytes(ev: &RawFlowEvent) -> &[u8] {
    // SAFETY: `RawFlowEvent` is `#[repr(C)]` plain old data with explicit padding
    // (flow-common asserts its size), so all its bytes are initialised.
    unsafe {
        std::slice::from_raw_parts((ev as *const RawFlowEvent).cast::<u8>(), RawFlowEvent::SIZE)
    }
}

/// The ring-buffer entries of closes `first..first + n`, one after another.
fn ring_entries(first: u64, n: usize, kind: Kind) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(n * RawFlowEvent::SIZE);
    for i in first..first + n as u64 {
        bytes.extend_from_slice(event_bytes(&raw_event(i, kind)));
    }
    bytes
}

/// `flow_capture`'s reader decode (private there): one entry to an event.
#[inline]
fn decode(entry: &[u8]) -> Option<RawFlowEvent> {
    if entry.len() < RawFlowEvent::SIZE {
        return None;
    }
    // SAFETY: length checked; `RawFlowEvent` is plain old data valid for any bytes,
    // and the read makes no alignment assumption.
    Some(unsafe { entry.as_ptr().cast::<RawFlowEvent>().read_unaligned() })
}

/// The clock of the `round`-th pass over the same `n` ring entries: wall-clock time
/// moves on by the span of `n` closes every round, so repeated passes are not late.
fn clock(round: u64, n: usize) -> BootClock {
    let span = n as u64 * (1_000_000_000 / RATE);
    BootClock::with_offset_ns(
        i128::from(WALL0_NS) - i128::from(BOOT0_NS) + i128::from(round * span),
    )
}

fn records(entries: &[u8], clock: &BootClock) -> Vec<FlowRecord> {
    entries
        .chunks_exact(RawFlowEvent::SIZE)
        .map(|e| flow_capture::decode_record(&decode(e).expect("whole entry"), clock))
        .collect()
}

/// The time a drain ending with `last` runs: just after that close.
fn drain_now(last: &FlowRecord) -> SystemTime {
    last.t_end + Duration::from_millis(1)
}

/// The encoder of `chunk_encoder`, end to end and the peak-RSS run: zstd at
/// `FLOW_BENCH_ZSTD_LEVEL` (default: the exporter's, level 1).
fn encoder() -> ChunkEncoder {
    let level = std::env::var("FLOW_BENCH_ZSTD_LEVEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(flowexporter::batch::wire::DEFAULT_ZSTD_LEVEL);
    ChunkEncoder::with_level("node-17.prod.example.com", InstanceId::new(0x5eed), level)
        .expect("encoder")
}

fn bench_raw_to_record(c: &mut Criterion) {
    let mut g = c.benchmark_group("raw_to_record");
    g.throughput(Throughput::Elements(SMALL as u64));
    let clock = clock(0, SMALL);
    for kind in [
        Kind::V4,
        Kind::V4Workload,
        Kind::V6,
        Kind::V6Workload,
        Kind::Mix,
    ] {
        let entries = ring_entries(0, SMALL, kind);
        g.bench_function(kind.name(), |b| {
            b.iter(|| {
                for entry in black_box(&entries[..]).chunks_exact(RawFlowEvent::SIZE) {
                    if let Some(ev) = decode(entry) {
                        black_box(flow_capture::decode_record(&ev, &clock));
                    }
                }
            })
        });
    }
    g.finish();
}

fn bench_batch(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Elements(LARGE as u64));
    g.sampling_mode(SamplingMode::Flat).sample_size(30);
    let entries = ring_entries(0, LARGE, Kind::Mix);
    let mut batcher = MinuteBatcher::new(BatchConfig::default()).expect("batcher");
    let mut round = 0;
    g.bench_function("push_poll", |b| {
        b.iter_batched(
            || {
                round += 1;
                let records = records(&entries, &clock(round, LARGE));
                let nows: Vec<SystemTime> = records
                    .chunks(DRAIN)
                    .map(|d| drain_now(d.last().expect("non-empty drain")))
                    .collect();
                (records, nows)
            },
            |(records, nows)| {
                let mut chunks: Vec<Chunk> = Vec::new();
                for (j, record) in records.into_iter().enumerate() {
                    batcher.push(record, nows[j / DRAIN]).expect("push");
                    while let Some(chunk) = batcher.poll_chunk() {
                        chunks.push(chunk);
                    }
                }
                // Dropped after the clock stops: freeing records is not batching.
                chunks
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn bench_encode(c: &mut Criterion) {
    let n = BatchConfig::default().max_records;
    let entries = ring_entries(0, n, Kind::Mix);
    let records = records(&entries, &clock(0, n));
    let window = flowexporter::batch::Window::from_millis(1_700_000_000_000, 1_700_000_060_000)
        .expect("window");
    let chunk = Chunk::new(window, 0, 0, false, records);
    let options = bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian();
    let mut raw = Vec::new();
    let mut written = Vec::new();
    for r in &chunk.records {
        options.serialize_into(&mut raw, r).expect("bincode");
        wire::encode_record(r, &mut written).expect("encode");
    }
    assert!(written == raw, "the record writer and bincode disagree");
    let mut encoder = encoder();
    let frame = encoder.encode_to_vec(&chunk).expect("encode");
    println!(
        "encode_chunk: {} records, {} bytes of records, {} bytes on the wire (ratio {:.2})",
        n,
        raw.len(),
        frame.len(),
        raw.len() as f64 / frame.len() as f64
    );

    let mut g = c.benchmark_group("encode_chunk");
    g.throughput(Throughput::Elements(n as u64));
    g.sampling_mode(SamplingMode::Flat).sample_size(30);
    let mut out = Vec::with_capacity(raw.len());
    g.bench_function("bincode_records", |b| {
        b.iter(|| {
            out.clear();
            for r in &chunk.records {
                options.serialize_into(&mut out, r).expect("bincode");
            }
            black_box(out.len())
        })
    });
    g.bench_function("record_writer", |b| {
        b.iter(|| {
            out.clear();
            for r in &chunk.records {
                wire::encode_record(r, &mut out).expect("encode");
            }
            black_box(out.len())
        })
    });
    let mut compressor =
        zstd::bulk::Compressor::new(flowexporter::batch::wire::DEFAULT_ZSTD_LEVEL).expect("zstd");
    let mut compressed = Vec::with_capacity(zstd::compress_bound(raw.len()));
    g.bench_function("zstd_level1", |b| {
        b.iter(|| {
            compressed.clear();
            compressor
                .compress_to_buffer(black_box(&raw[..]), &mut compressed)
                .expect("compress")
        })
    });
    let mut frame = Vec::with_capacity(frame.len() * 2);
    g.bench_function("chunk_encoder", |b| {
        b.iter(|| {
            frame.clear();
            encoder
                .encode(black_box(&chunk), &mut frame)
                .expect("encode")
        })
    });
    g.finish();
}

fn bench_json(c: &mut Criterion) {
    let entries = ring_entries(0, SMALL, Kind::Mix);
    let records = records(&entries, &clock(0, SMALL));
    let mut g = c.benchmark_group("json");
    g.throughput(Throughput::Elements(SMALL as u64));
    let mut out = Vec::with_capacity(SMALL * 512);
    g.bench_function("write_line", |b| {
        b.iter(|| {
            out.clear();
            for r in &records {
                json::write_line(&mut out, r).expect("write");
            }
            black_box(out.len())
        })
    });
    g.finish();
}

/// The end-to-end path: ring entries in, frames out (each frame dropped once encoded,
/// as a sink would hand it on).
struct Pipeline {
    batcher: MinuteBatcher,
    encoder: ChunkEncoder,
    frame: Vec<u8>,
    frames: u64,
    wire_bytes: u64,
}

impl Pipeline {
    fn new() -> Pipeline {
        Pipeline {
            batcher: MinuteBatcher::new(BatchConfig::default()).expect("batcher"),
            encoder: encoder(),
            frame: Vec::new(),
            frames: 0,
            wire_bytes: 0,
        }
    }

    /// One ring drain: every entry of `entries` becomes a record at `now`, then every
    /// ready chunk is encoded.
    fn drain(&mut self, entries: &[u8], stride: usize, clock: &BootClock, now: SystemTime) {
        for entry in entries.chunks_exact(stride) {
            let Some(ev) = decode(&entry[stride - RawFlowEvent::SIZE..]) else {
                continue;
            };
            self.batcher
                .push(flow_capture::decode_record(&ev, clock), now)
                .expect("push");
        }
        self.batcher.handle_timeout(now);
        self.ship();
    }

    fn ship(&mut self) {
        while let Some(chunk) = self.batcher.poll_chunk() {
            self.frame.clear();
            self.encoder
                .encode(&chunk, &mut self.frame)
                .expect("encode");
            self.frames += 1;
            self.wire_bytes += self.frame.len() as u64;
        }
    }
}

fn bench_end_to_end(c: &mut Criterion) {
    let entries = ring_entries(0, LARGE, Kind::Mix);
    let mut g = c.benchmark_group("end_to_end");
    g.throughput(Throughput::Elements(LARGE as u64));
    g.sampling_mode(SamplingMode::Flat).sample_size(30);
    let mut pipeline = Pipeline::new();
    let mut round = 0;
    let drain_len = DRAIN * RawFlowEvent::SIZE;
    g.bench_function("bytes_to_chunk", |b| {
        b.iter(|| {
            round += 1;
            let clock = clock(round, LARGE);
            for drain in entries.chunks(drain_len) {
                let last = decode(&drain[drain.len() - RawFlowEvent::SIZE..]).expect("entry");
                let now = clock.to_wall(last.end_ns) + Duration::from_millis(1);
                pipeline.drain(drain, RawFlowEvent::SIZE, &clock, now);
            }
        })
    });
    g.finish();
    let counters = pipeline.batcher.counters();
    println!(
        "end_to_end: {} records in, {} chunks ({} split at the record limit), {} frames, {:.1} bytes per record on the wire",
        counters.records_in,
        counters.chunks_out,
        counters.chunks_split,
        pipeline.frames,
        pipeline.wire_bytes as f64 / counters.records_out.max(1) as f64
    );
}

/// A field of `/proc/self/status`, in KiB.
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The peak-RSS run, in a process of its own so that nothing criterion allocated
/// counts.
fn rss_child() {
    let seconds = env_u64("FLOW_BENCH_RSS_SECONDS", 120);
    let rate = env_u64("FLOW_BENCH_RSS_RATE", RATE);
    let baseline_kib = status_kib("VmRSS:").unwrap_or(0);
    // The ring the kernel writes and the reader maps: its pages count in the
    // exporter's RSS once read. Entries are written at the producer position, wrapping.
    let mut ring = vec![0u8; DEFAULT_RING_SIZE as usize];
    let stride = RING_HEADER + RawFlowEvent::SIZE;
    let mut head = 0;
    let mut pipeline = Pipeline::new();
    let total = seconds * rate;
    let per_drain = (rate / 20).max(1); // a drain every 50 ms
    // Wall time = boot time + offset; the run starts 10 s into a 60 s window.
    let clock = BootClock::with_offset_ns(i128::from(WALL0_NS) - i128::from(BOOT0_NS));
    let step_ns = 1_000_000_000 / rate;
    let started = Instant::now();
    let mut i = 0;
    while i < total {
        let n = per_drain.min(total - i);
        let len = n as usize * stride;
        if head + len > ring.len() {
            head = 0;
        }
        for (k, slot) in ring[head..head + len].chunks_exact_mut(stride).enumerate() {
            let mut ev = raw_event(i + k as u64, Kind::Mix);
            ev.end_ns = BOOT0_NS + (i + k as u64) * step_ns;
            ev.start_ns = ev.start_ns.min(ev.end_ns);
            slot[RING_HEADER..].copy_from_slice(event_bytes(&ev));
        }
        let now = clock.to_wall(BOOT0_NS + (i + n) * step_ns);
        pipeline.drain(&ring[head..head + len], stride, &clock, now);
        head += len;
        i += n;
    }
    let end = clock.to_wall(BOOT0_NS + total * step_ns);
    pipeline.batcher.flush(end);
    pipeline.ship();
    let elapsed = started.elapsed();
    let counters = pipeline.batcher.counters();
    let hwm = status_kib("VmHWM:").unwrap_or(0);
    let wall = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    println!(
        "peak_rss: {seconds} s at {rate} records/s = {total} records (closes {}..{} s), \
         60 s windows, default limits",
        wall(clock.to_wall(BOOT0_NS)),
        wall(end)
    );
    println!(
        "peak_rss: {} chunks ({} split at a limit, {} windows closed), {} frames, {} MiB on the wire, {:.2} s ({:.0} records/s with the ring copy)",
        counters.chunks_out,
        counters.chunks_split,
        counters.windows_closed + counters.windows_flushed,
        pipeline.frames,
        pipeline.wire_bytes >> 20,
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    println!(
        "peak_rss: VmHWM {:.1} MiB (VmRSS at start {:.1} MiB; ring {} MiB of it; target 32 MiB: {})",
        hwm as f64 / 1024.0,
        baseline_kib as f64 / 1024.0,
        DEFAULT_RING_SIZE >> 20,
        if hwm <= 32 * 1024 { "met" } else { "missed" }
    );
    let _ = std::io::stdout().flush();
}

fn main() {
    if std::env::var_os("FLOW_BENCH_RSS_CHILD").is_some() {
        rss_child();
        return;
    }
    let rss = std::env::var("FLOW_BENCH_RSS").unwrap_or_default();
    // `cargo test --benches` runs the binary without `--bench`: criterion then runs
    // each benchmark once, and the RSS run is skipped.
    let benching = std::env::args().any(|a| a == "--bench");
    if rss != "only" {
        let mut c = Criterion::default().configure_from_args();
        bench_raw_to_record(&mut c);
        bench_batch(&mut c);
        bench_encode(&mut c);
        bench_json(&mut c);
        bench_end_to_end(&mut c);
        c.final_summary();
    }
    if rss != "0" && (benching || rss == "only") {
        let exe = std::env::current_exe().expect("own executable");
        let status = Command::new(exe)
            .env("FLOW_BENCH_RSS_CHILD", "1")
            .status()
            .expect("run the peak-RSS child");
        assert!(status.success(), "peak-RSS child failed: {status}");
    }
}
