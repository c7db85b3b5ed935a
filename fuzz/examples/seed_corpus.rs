//! Writes the seed corpora of the fuzz targets: a few valid frames (format version 2),
//! small enough for libFuzzer's default input length, that between them use every
//! header flag and every variant of every enum in a record.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seed_corpus -- [ROOT] [--frames-to DIR]`
//! writes `valid-v2-*.bin` into `ROOT/decode_chunk` and `ROOT/decode_chunk_resealed`
//! (the frames) and `ROOT/decode_records` (a record count byte, then the
//! uncompressed records); ROOT defaults to `fuzz/corpus`. `--frames-to DIR` also
//! writes the frames into DIR (how `crates/flow-batch/tests/fuzz-corpus/valid-v2-*`
//! were made; the `valid-*` files without `v2` there are version 1 frames, written
//! by this program before version 2, and kept as they are).

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use flow_batch::{
    Chunk, Completeness, Window,
    wire::{ChunkDecoder, ChunkEncoder, DecodeLimits, InstanceId},
};
use flow_capture::{
    CloseReason, Direction, FlowId, FlowRecord, IdentitySource, ProcessInfo, RecordKind,
    SocketStats, TcpState, UnattributedReason, WorkloadId,
};

const WINDOW_START_MS: u64 = 1_700_000_040_000;

fn at_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// The smallest record an exporter writes: IPv4, no start time, unattributed.
fn plain(port: u16) -> FlowRecord {
    FlowRecord {
        local: SocketAddr::from(([10, 0, 0, 1], 443)),
        remote: SocketAddr::from(([10, 0, 0, 2], port)),
        direction: Direction::Inbound,
        t_start: None,
        t_end: at_ms(WINDOW_START_MS + u64::from(port)),
        close_state: TcpState(7),
        close_reason: CloseReason::Normal,
        stats: SocketStats::default(),
        local_workload_id: None,
        identity_source: IdentitySource::None(UnattributedReason::NoMatch),
        incomplete: false,
        record_kind: RecordKind::Final,
        flow_id: None,
        process: None,
    }
}

/// The `i`-th record of a set that cycles through every enum variant, IPv4 and IPv6,
/// with and without start time and workload.
fn varied(i: u32) -> FlowRecord {
    let close_reasons = [
        CloseReason::Normal,
        CloseReason::Refused,
        CloseReason::ConnectTimedOut,
        CloseReason::ConnectAborted,
        CloseReason::Reset,
        CloseReason::Aborted,
        CloseReason::TimedOut,
        CloseReason::Error(113),
    ];
    let unattributed = [
        UnattributedReason::NoMatch,
        UnattributedReason::InvalidMapValue,
        UnattributedReason::CertificateMissing,
        UnattributedReason::CertificateUnreadable,
        UnattributedReason::CertificateMalformed,
        UnattributedReason::CertificateExpired,
        UnattributedReason::CertificateNotYetValid,
        UnattributedReason::CertificateHasNoIdentity,
    ];
    let attributed = [
        IdentitySource::ConnectMap,
        IdentitySource::IpMap,
        IdentitySource::Certificate,
    ];
    let directions = [Direction::Outbound, Direction::Inbound, Direction::Unknown];
    let idx = i as usize;
    let (local, remote) = if i.is_multiple_of(2) {
        (
            SocketAddr::new(Ipv4Addr::new(10, 1, 0, 7).into(), 40_000 + i as u16),
            SocketAddr::new(Ipv4Addr::new(192, 0, 2, 1 + i as u8).into(), 443),
        )
    } else {
        (
            SocketAddr::new(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 7).into(), 8080),
            SocketAddr::new(
                Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1 + i as u16).into(),
                50_000 + i as u16,
            ),
        )
    };
    let t_end = at_ms(WINDOW_START_MS + 1_000 * u64::from(i)) + Duration::from_nanos(123_456);
    let (workload, identity_source) = if i.is_multiple_of(3) {
        (
            None,
            IdentitySource::None(unattributed[idx % unattributed.len()]),
        )
    } else {
        let id = WorkloadId::new(format!("k8s:prod/payments-{i}")).expect("valid id");
        (Some(id), attributed[idx % attributed.len()])
    };
    FlowRecord {
        local,
        remote,
        direction: directions[idx % directions.len()],
        t_start: (!i.is_multiple_of(4))
            .then(|| t_end - Duration::from_micros(1_500 * u64::from(i + 1))),
        t_end,
        close_state: TcpState((i % 12) as u8 + 1),
        close_reason: close_reasons[idx % close_reasons.len()],
        stats: SocketStats {
            bytes_sent: 1_024 * u64::from(i),
            bytes_received: 70_000 + u64::from(i),
            segs_in: 10 + i,
            segs_out: 12 + i,
            retransmits: i % 3,
            bytes_retransmitted: u64::from(i % 3) * 1_448,
            srtt_us: 150 + i,
            rttvar_us: 40,
        },
        local_workload_id: workload,
        identity_source,
        incomplete: i % 7 == 6,
        record_kind: if i % 2 == 1 {
            RecordKind::Interim
        } else {
            RecordKind::Final
        },
        flow_id: (i % 3 != 2).then(|| FlowId {
            boot_id: [0x5a ^ i as u8; 16],
            cookie: 0x1000 + u64::from(i),
        }),
        process: (i % 4 == 1).then(|| {
            ProcessInfo::new(
                1_000 + i,
                &"curl-".repeat(1 + i as usize % 4),
                4_096 + u64::from(i),
            )
        }),
    }
}

/// What an exporter reports on a window's last chunk.
fn completeness(whole: bool) -> Completeness {
    Completeness {
        closes_seen: 1_000,
        records_emitted: 998,
        lost_ring_full: 2,
        lost_recursion: 1,
        lost_journal: 3,
        lost_spool: 4,
        interim_records: 12,
        records_replayed: 5,
        running_whole_window: whole,
    }
}

/// `chunk` with `completeness`.
fn with(mut chunk: Chunk, completeness: Completeness) -> Chunk {
    chunk.completeness = Some(completeness);
    chunk
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("create the corpus directory");
    let path = dir.join(format!("valid-v2-{name}.bin"));
    std::fs::write(&path, bytes).expect("write a seed");
    println!("{} ({} bytes)", path.display(), bytes.len());
}

fn main() {
    let mut root = PathBuf::from("fuzz/corpus");
    let mut frames_to = Vec::new();
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--frames-to" {
            frames_to.push(PathBuf::from(args.next().expect("--frames-to DIR")));
        } else {
            root = PathBuf::from(arg);
        }
    }
    let window =
        Window::from_millis(WINDOW_START_MS, WINDOW_START_MS + 60_000).expect("valid window");
    let instance = InstanceId::new(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
    let seeds: Vec<(&str, &str, Chunk)> = vec![
        // A window whose records all left in earlier chunks.
        (
            "empty-last",
            "h",
            with(Chunk::new(window, 2, 5, true, vec![]), completeness(false)),
        ),
        (
            "one-v4",
            "host-a",
            Chunk::new(window, 0, 0, true, vec![plain(1)]),
        ),
        (
            "one-v6-workload",
            "host-a",
            Chunk::new(window, 0, 1, false, vec![varied(1)]),
        ),
        (
            "plain-x16",
            "node-17.prod.example.com",
            Chunk::new(window, 3, 9, false, (1..=16).map(plain).collect()),
        ),
        (
            "every-variant",
            "host-b",
            with(
                Chunk::new(window, 0, u64::MAX, true, (0..24).map(varied).collect()),
                completeness(true),
            ),
        ),
        (
            "long-host",
            &*"h".repeat(1024).leak(),
            Chunk::new(window, 1, 42, true, (0..3).map(varied).collect()),
        ),
    ];
    let mut decoder = ChunkDecoder::new(DecodeLimits::default()).expect("decoder");
    for (name, host, chunk) in seeds {
        let frame = ChunkEncoder::new(host, instance)
            .expect("encoder")
            .encode_to_vec(&chunk)
            .expect("encode");
        let decoded = decoder.decode(&frame).expect("a seed decodes");
        assert_eq!(decoded.records, chunk.records);
        assert_eq!(decoded.completeness, chunk.completeness);
        for dir in ["decode_chunk", "decode_chunk_resealed"] {
            write(&root.join(dir), name, &frame);
        }
        for dir in &frames_to {
            write(dir, name, &frame);
        }
        let header_len = decoded.header.header_len();
        let raw = zstd::bulk::decompress(&frame[header_len..], decoded.header.raw_len as usize)
            .expect("own payload");
        // Bit 7 clear: a version 2 frame (`flow_batch_fuzz::records_frame`).
        let count = u8::try_from(chunk.records.len()).expect("at most 127 records");
        assert!(count < 0x80, "at most 127 records");
        let mut records = vec![count];
        records.extend_from_slice(&raw);
        write(&root.join("decode_records"), name, &records);
    }
}
