//! The wire format: round trips, the exact layout, and every kind of rejected input.

mod common;

use std::time::Duration;

use bincode::Options;
use common::{Rng, at, record};
use flow_batch::{
    BatchError, Chunk, Completeness, Window,
    wire::{
        COMPLETENESS_LEN, ChunkDecoder, ChunkEncoder, DecodeLimits, FIXED_HEADER_LEN,
        FORMAT_VERSION, InstanceId, MAGIC, MIN_RECORD_LEN, MIN_RECORD_LEN_V1, decode_header,
    },
};
use flow_record::{
    CloseReason, Direction, FlowId, FlowRecord, IdentitySource, ProcessInfo, RecordKind,
    SocketStats, TcpState, WorkloadId,
};

const INSTANCE: u128 = 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10;

fn window() -> Window {
    Window::from_millis(10_000, 15_000).expect("window")
}

fn encoder() -> ChunkEncoder {
    ChunkEncoder::new("host-1", InstanceId::new(INSTANCE)).expect("encoder")
}

fn decoder() -> ChunkDecoder {
    ChunkDecoder::new(DecodeLimits::default()).expect("decoder")
}

fn random_chunk(rng: &mut Rng, n: usize) -> Chunk {
    let records = (0..n)
        .map(|_| {
            let t_end = at(10) + Duration::from_nanos(rng.below(5_000_000_000));
            rng.record(t_end)
        })
        .collect();
    Chunk::new(
        window(),
        rng.below(5) as u32,
        rng.next_u64(),
        rng.chance(2),
        records,
    )
}

/// bincode 1 with the options docs/wire-format.md states.
fn bincode_options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .allow_trailing_bytes()
}

/// A frame assembled field by field from the documented layout, independently of
/// the encoder, so tests can write headers the encoder never would.
#[derive(Clone)]
struct Frame {
    version: u16,
    codec: u8,
    flags: u8,
    window: (u64, u64),
    record_count: u32,
    raw_len: u32,
    host: Vec<u8>,
    /// Written between the host and the header checksum, whatever the flags say (the
    /// completeness block, when the flags announce one).
    block: Vec<u8>,
    payload: Vec<u8>,
}

impl Frame {
    fn with_raw(raw: &[u8], record_count: u32) -> Frame {
        Frame {
            version: FORMAT_VERSION,
            codec: 1,
            flags: 1,
            window: (10_000, 15_000),
            record_count,
            raw_len: raw.len() as u32,
            host: b"host-1".to_vec(),
            block: Vec::new(),
            payload: zstd::bulk::compress(raw, 1).expect("compress"),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"FXCB");
        b.extend_from_slice(&self.version.to_le_bytes());
        b.push(self.codec);
        b.push(self.flags);
        b.extend_from_slice(&INSTANCE.to_le_bytes());
        b.extend_from_slice(&7_u64.to_le_bytes());
        b.extend_from_slice(&self.window.0.to_le_bytes());
        b.extend_from_slice(&self.window.1.to_le_bytes());
        b.extend_from_slice(&3_u32.to_le_bytes());
        b.extend_from_slice(&self.record_count.to_le_bytes());
        b.extend_from_slice(&self.raw_len.to_le_bytes());
        b.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        b.extend_from_slice(&crc32c::crc32c(&self.payload).to_le_bytes());
        b.extend_from_slice(&(self.host.len() as u16).to_le_bytes());
        b.extend_from_slice(&self.host);
        b.extend_from_slice(&self.block);
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b.extend_from_slice(&self.payload);
        b
    }
}

fn encode_records(records: &[FlowRecord]) -> Vec<u8> {
    let mut raw = Vec::new();
    for r in records {
        bincode_options()
            .serialize_into(&mut raw, r)
            .expect("serialize");
    }
    raw
}

#[test]
fn chunks_round_trip() {
    let mut rng = Rng::new(1);
    let mut enc = encoder();
    let mut dec = decoder();
    for n in [0, 1, 2, 17, 500] {
        let chunk = random_chunk(&mut rng, n);
        let frame = enc.encode_to_vec(&chunk).expect("encode");
        let decoded = dec.decode(&frame).expect("decode");
        assert_eq!(decoded.records, chunk.records);
        let h = &decoded.header;
        assert_eq!(h.host, "host-1");
        assert_eq!(h.instance.as_u128(), INSTANCE);
        assert_eq!(
            (h.sequence, h.chunk_index, h.last),
            (chunk.sequence, chunk.index, chunk.last)
        );
        assert_eq!(h.window, chunk.window);
        assert_eq!(h.record_count as usize, n);
        assert_eq!(h.frame_len(), frame.len());
        assert_eq!(decoded.clone().into_chunk(), chunk);
        let id = h.batch_id();
        assert_eq!(
            (id.host.as_str(), id.instance, id.sequence),
            ("host-1", InstanceId::new(INSTANCE), chunk.sequence)
        );
    }
    let c = enc.counters();
    assert_eq!((c.chunks, c.records), (5, 520));
    assert!(c.wire_bytes < c.raw_bytes, "{c:?}");
}

#[test]
fn frames_append_to_a_buffer_and_headers_tell_their_length() {
    let mut rng = Rng::new(2);
    let mut enc = encoder();
    let (a, b) = (random_chunk(&mut rng, 3), random_chunk(&mut rng, 5));
    let mut buf = vec![0xee; 3];
    enc.encode(&a, &mut buf).expect("encode");
    enc.encode(&b, &mut buf).expect("encode");
    let first = decode_header(&buf[3..], &DecodeLimits::default()).expect("header");
    let split = 3 + first.frame_len();
    // The header alone is enough to learn the frame length.
    let header_only = &buf[3..3 + first.header_len()];
    assert_eq!(
        decode_header(header_only, &DecodeLimits::default()).expect("header"),
        first
    );
    let mut dec = decoder();
    assert_eq!(
        dec.decode(&buf[3..split]).expect("first").records,
        a.records
    );
    assert_eq!(
        dec.decode(&buf[split..]).expect("second").records,
        b.records
    );
}

#[test]
fn header_fields_sit_at_their_documented_offsets() {
    let chunk = Chunk::new(window(), 3, 7, true, vec![record(at(11), 1)]);
    let frame = encoder().encode_to_vec(&chunk).expect("encode");
    let raw = encode_records(&chunk.records);
    let payload = &frame[80..];
    let u32_at = |at: usize| u32::from_le_bytes(frame[at..at + 4].try_into().expect("4 bytes"));
    assert_eq!(&frame[0..4], b"FXCB");
    assert_eq!(&frame[0..4], &MAGIC);
    assert_eq!(&frame[4..6], &[2, 0], "version 2, little-endian");
    assert_eq!(frame[6], 1, "codec zstd");
    assert_eq!(frame[7], 1, "flags: last");
    assert_eq!(&frame[8..24], &INSTANCE.to_le_bytes());
    assert_eq!(&frame[24..32], &7_u64.to_le_bytes());
    assert_eq!(&frame[32..40], &10_000_u64.to_le_bytes());
    assert_eq!(&frame[40..48], &15_000_u64.to_le_bytes());
    assert_eq!(u32_at(48), 3, "chunk index");
    assert_eq!(u32_at(52), 1, "record count");
    assert_eq!(u32_at(56) as usize, raw.len(), "raw_len");
    assert_eq!(u32_at(60) as usize, payload.len(), "payload_len");
    assert_eq!(u32_at(64), crc32c::crc32c(payload), "payload CRC-32C");
    assert_eq!(&frame[68..70], &[6, 0], "host_len");
    assert_eq!(&frame[70..76], b"host-1");
    assert_eq!(u32_at(76), crc32c::crc32c(&frame[..76]), "header CRC-32C");
    assert_eq!(
        crc32c::crc32c(b"123456789"),
        0xe306_9283,
        "the documented check value"
    );
    assert_eq!(
        zstd::bulk::decompress(payload, raw.len()).expect("zstd"),
        raw
    );
    // And a frame built from the documentation alone is byte-identical.
    let mut doc_frame = Frame::with_raw(&raw, 1);
    doc_frame.payload = payload.to_vec();
    let mut expected = doc_frame.bytes();
    expected[24..32].copy_from_slice(&7_u64.to_le_bytes());
    assert_eq!(FIXED_HEADER_LEN, 70);
    assert_eq!(frame, expected);
}

#[test]
fn the_record_encoding_matches_the_documented_schema() {
    // The smallest record: IPv4, no start time, no workload, no errno.
    let minimal = record(at(10), 1);
    let expected_minimal: Vec<u8> = [
        &[0, 0, 0, 0, 10, 0, 0, 1, 0xbb, 0x01][..], // local: V4, 10.0.0.1, port 443
        &[0, 0, 0, 0, 10, 0, 0, 2, 1, 0],           // remote: V4, 10.0.0.2, port 1
        &[1, 0, 0, 0],                              // direction: Inbound
        &[0],                                       // t_start: None
        &[10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],     // t_end: 10 s, 0 ns
        &[7],                                       // close_state
        &[0, 0, 0, 0],                              // close_reason: Normal
        &[0; 44],                                   // stats
        &[0],                                       // local_workload_id: None
        &[3, 0, 0, 0, 0, 0, 0, 0],                  // identity_source: None(NoMatch)
        &[0],                                       // incomplete
        &[0, 0, 0, 0],                              // record_kind: Final
        &[0],                                       // flow_id: None
        &[0],                                       // process: None
    ]
    .concat();
    assert_eq!(encode_records(&[minimal]), expected_minimal);
    // Unattributed records carry the 4-byte reason after the 4-byte variant.
    assert_eq!(expected_minimal.len(), MIN_RECORD_LEN + 4);
    // The documentation's second example: the same record, interim, with a flow ID
    // and a process.
    let mut interim = record(at(10), 1);
    interim.record_kind = RecordKind::Interim;
    interim.flow_id = Some(FlowId {
        boot_id: *b"0123456789abcdef",
        cookie: 0x0102_0304_0506_0708,
    });
    interim.process = Some(ProcessInfo::new(4242, "curl", 0x1122));
    assert_eq!(
        interim.flow_id.map(|id| id.to_string()).as_deref(),
        Some("30313233343536373839616263646566-0102030405060708")
    );
    let bytes = encode_records(&[interim]);
    assert_eq!(bytes.len(), 154);
    assert_eq!(bytes[..REC - 6], expected_minimal[..REC - 6]);
    let tail: Vec<u8> = [
        &[1, 0, 0, 0][..],
        &[1],
        b"0123456789abcdef",
        &[8, 7, 6, 5, 4, 3, 2, 1],
        &[1, 0x92, 0x10, 0, 0],
        &[0x22, 0x11, 0, 0, 0, 0, 0, 0],
        b"curl",
        &[0; 12],
    ]
    .concat();
    assert_eq!(bytes[REC - 6..], tail[..]);

    let full = flow_testkit::record()
        .local("[2001:db8::1]:8080")
        .remote("[2001:db8::2]:1234")
        .direction(Direction::Outbound)
        .t_start(Some(at(9) + Duration::from_nanos(5)))
        .t_end(at(10))
        .close(TcpState(1), CloseReason::Error(113))
        .stats(SocketStats {
            bytes_sent: 1,
            bytes_received: 2,
            segs_in: 3,
            segs_out: 4,
            retransmits: 5,
            bytes_retransmitted: 6,
            srtt_us: 7,
            rttvar_us: 8,
        })
        .workload("wl", IdentitySource::IpMap)
        .incomplete(true)
        .kind(RecordKind::Interim)
        .flow_id(Some(FlowId {
            boot_id: *b"0123456789abcdef",
            cookie: 0x0102_0304_0506_0708,
        }))
        .process(Some(ProcessInfo::new(4242, "curl", 0x1122)))
        .build();
    let ip = |last: u8| {
        let mut a = vec![0x20, 0x01, 0x0d, 0xb8];
        a.extend_from_slice(&[0; 11]);
        a.push(last);
        a
    };
    let expected_full: Vec<u8> = [
        &[1, 0, 0, 0][..],
        &ip(1),
        &8080_u16.to_le_bytes(),
        &[1, 0, 0, 0],
        &ip(2),
        &1234_u16.to_le_bytes(),
        &[0, 0, 0, 0],                            // Outbound
        &[1, 9, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0], // Some(9 s, 5 ns)
        &[10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[1],
        &[7, 0, 0, 0, 113, 0, 0, 0], // Error(113)
        &[
            1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0,
        ],
        &[6, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 8, 0, 0, 0],
        &[1, 2, 0, 0, 0, 0, 0, 0, 0, b'w', b'l'], // Some("wl")
        &[1, 0, 0, 0],                            // IpMap
        &[1],
        &[1, 0, 0, 0], // Interim
        &[1],          // Some(flow_id)
        b"0123456789abcdef",
        &[8, 7, 6, 5, 4, 3, 2, 1],
        &[1],                            // Some(process)
        &[0x92, 0x10, 0, 0],             // pid 4242
        &[0x22, 0x11, 0, 0, 0, 0, 0, 0], // cgroup_id
        b"curl\0\0\0\0\0\0\0\0\0\0\0\0", // comm
    ]
    .concat();
    assert_eq!(encode_records(&[full]), expected_full);
}

fn expect_err(bytes: &[u8]) -> BatchError {
    decoder().decode(bytes).expect_err("input must be rejected")
}

fn valid_frame() -> Vec<u8> {
    let mut rng = Rng::new(3);
    encoder()
        .encode_to_vec(&random_chunk(&mut rng, 20))
        .expect("encode")
}

#[test]
fn every_truncation_is_reported_as_truncated() {
    let frame = valid_frame();
    for len in 0..frame.len() {
        match expect_err(&frame[..len]) {
            BatchError::Truncated {
                offset, available, ..
            } => {
                assert_eq!(available, len.saturating_sub(offset), "len {len}")
            }
            other => panic!("len {len}: {other}"),
        }
    }
}

#[test]
fn wrong_magic_and_unknown_versions_are_named() {
    let mut frame = valid_frame();
    frame[0] = b'G';
    assert!(matches!(expect_err(&frame), BatchError::BadMagic { found } if &found == b"GXCB"));
    assert!(matches!(expect_err(b"{\"js"), BatchError::BadMagic { .. }));
    assert!(matches!(expect_err(b"GET"), BatchError::BadMagic { found } if &found == b"GET\0"));
    for version in [0, 3, 0x2100] {
        let mut other = Frame::with_raw(&[], 0);
        other.version = version;
        match expect_err(&other.bytes()) {
            BatchError::UnsupportedVersion {
                found,
                supported: 2,
            } if found == version => {}
            other => panic!("{other}"),
        }
    }
}

#[test]
fn corruption_is_caught_by_the_checksums() {
    let frame = valid_frame();
    let header_len = 80;
    let mut header_flip = frame.clone();
    header_flip[30] ^= 0x10;
    assert!(matches!(
        expect_err(&header_flip),
        BatchError::HeaderChecksum { offset: 76, .. }
    ));
    let mut payload_flip = frame.clone();
    payload_flip[header_len + 5] ^= 0x01;
    assert!(matches!(
        expect_err(&payload_flip),
        BatchError::PayloadChecksum { offset: 80, .. }
    ));
    let mut longer = frame.clone();
    longer.push(0);
    assert!(matches!(
        expect_err(&longer),
        BatchError::TrailingBytes {
            region: "frame",
            count: 1,
            ..
        }
    ));
}

#[test]
fn header_values_outside_the_format_are_rejected() {
    let raw = encode_records(&[record(at(11), 1)]);
    let base = Frame::with_raw(&raw, 1);
    assert!(decoder().decode(&base.bytes()).is_ok());
    let cases: Vec<(Frame, &str)> = vec![
        (
            Frame {
                codec: 0,
                ..base.clone()
            },
            "codec",
        ),
        (
            Frame {
                codec: 2,
                ..base.clone()
            },
            "codec",
        ),
        (
            Frame {
                flags: 0x84,
                ..base.clone()
            },
            "flags",
        ),
        // Completeness is a version 2 flag: reserved in version 1.
        (
            Frame {
                version: 1,
                flags: 0x03,
                ..base.clone()
            },
            "flags",
        ),
        // Only a window's last chunk carries its completeness.
        (
            Frame {
                flags: 0x02,
                block: vec![0; COMPLETENESS_LEN],
                ..base.clone()
            },
            "flags",
        ),
        (
            Frame {
                flags: 0x03,
                block: [&[0; COMPLETENESS_LEN - 1][..], &[0x02]].concat(),
                ..base.clone()
            },
            "completeness flags",
        ),
        (
            Frame {
                window: (15_000, 15_000),
                ..base.clone()
            },
            "window_end",
        ),
        (
            Frame {
                host: vec![0xff, 0xfe],
                ..base.clone()
            },
            "host",
        ),
        (
            Frame {
                host: vec![],
                ..base.clone()
            },
            "host_len",
        ),
        (
            Frame {
                record_count: 2,
                ..base.clone()
            },
            "record_count",
        ),
    ];
    for (frame, field) in cases {
        match expect_err(&frame.bytes()) {
            BatchError::InvalidHeader { field: f, .. } => assert_eq!(f, field),
            other => panic!("{field}: {other}"),
        }
    }
    // A payload larger than any zstd frame of raw_len bytes.
    let mut padded = base.clone();
    padded.payload.resize(4096, 0);
    assert!(matches!(
        expect_err(&padded.bytes()),
        BatchError::InvalidHeader {
            field: "payload_len",
            ..
        }
    ));
    let mut long_host = base.clone();
    long_host.host = vec![b'h'; 1025];
    assert!(matches!(
        expect_err(&long_host.bytes()),
        BatchError::LimitExceeded {
            field: "host_len",
            value: 1025,
            ..
        }
    ));
}

#[test]
fn limits_reject_oversized_chunks_before_decompressing() {
    let frame = valid_frame();
    let small = |limits: DecodeLimits| ChunkDecoder::new(limits).expect("decoder").decode(&frame);
    let d = DecodeLimits::default();
    assert!(matches!(
        small(d.with_max_payload_len(10)),
        Err(BatchError::LimitExceeded {
            field: "payload_len",
            offset: 60,
            ..
        })
    ));
    assert!(matches!(
        small(d.with_max_raw_len(100)),
        Err(BatchError::LimitExceeded {
            field: "raw_len",
            offset: 56,
            ..
        })
    ));
    assert!(matches!(
        small(d.with_max_records(19)),
        Err(BatchError::LimitExceeded {
            field: "record_count",
            offset: 52,
            value: 20,
            max: 19
        })
    ));
    assert!(small(d.with_max_records(20)).is_ok());
}

/// `frame` (one zstd frame) with its content size field rewritten to `size`, which
/// must fit the field.
fn with_content_size(frame: &[u8], size: u64) -> Vec<u8> {
    let mut frame = frame.to_vec();
    let descriptor = frame[4];
    let single_segment = descriptor & 0x20 != 0;
    let dictionary_len = [0, 1, 2, 4][usize::from(descriptor & 0x03)];
    let at = 5 + usize::from(!single_segment) + dictionary_len;
    match descriptor >> 6 {
        0 if single_segment => frame[at] = u8::try_from(size).expect("fits"),
        1 => frame[at..at + 2]
            .copy_from_slice(&u16::try_from(size - 256).expect("fits").to_le_bytes()),
        2 => frame[at..at + 4].copy_from_slice(&u32::try_from(size).expect("fits").to_le_bytes()),
        3 => frame[at..at + 8].copy_from_slice(&size.to_le_bytes()),
        _ => panic!("no content size field"),
    }
    frame
}

#[test]
fn a_decompression_bomb_stops_at_the_announced_length() {
    let bomb = zstd::bulk::compress(&vec![0; 16 << 20], 19).expect("compress");
    let mut frame = Frame::with_raw(&[], 0);
    frame.raw_len = 4096;
    frame.payload = bomb.clone();
    // Its content size gives it away before anything is decompressed.
    assert!(matches!(
        expect_err(&frame.bytes()),
        BatchError::ZstdFrame { offset: 84, reason } if reason.contains("content size")
    ));
    // A bomb that lies about its content size still stops at raw_len bytes.
    frame.payload = with_content_size(&bomb, 4096);
    assert!(matches!(
        zstd::zstd_safe::get_frame_content_size(&frame.payload),
        Ok(Some(4096))
    ));
    assert!(matches!(
        expect_err(&frame.bytes()),
        BatchError::Decompression { offset: 80, .. }
    ));
    frame.payload = bomb;
    // Announcing the real size runs into the limit instead.
    frame.raw_len = 16 << 20;
    let limits = DecodeLimits::default().with_max_raw_len(8 << 20);
    assert!(matches!(
        ChunkDecoder::new(limits)
            .expect("decoder")
            .decode(&frame.bytes()),
        Err(BatchError::LimitExceeded {
            field: "raw_len",
            ..
        })
    ));
}

#[test]
fn payload_contents_are_checked_record_by_record() {
    let records = [record(at(11), 1), record(at(12), 2)];
    let raw = encode_records(&records);
    // Fewer bytes than announced: the zstd frame's content size says so before
    // anything is decompressed.
    let mut short = Frame::with_raw(&raw, 2);
    short.raw_len += 10;
    assert!(matches!(
        expect_err(&short.bytes()),
        BatchError::ZstdFrame { offset: 84, reason } if reason.contains("differs from raw_len")
    ));
    // Bytes left after the announced records.
    assert!(matches!(
        expect_err(&Frame::with_raw(&raw, 1).bytes()),
        BatchError::TrailingBytes {
            region: "records",
            offset: REC,
            count: REC
        }
    ));
    // A record cut in the middle.
    let mut cut = raw.clone();
    cut.truncate(REC + 50);
    cut.extend_from_slice(&[0; 46]); // keeps raw_len >= 2 * MIN_RECORD_LEN
    cut[REC + 20] = 9; // direction variant 9 does not exist
    assert!(matches!(
        expect_err(&Frame::with_raw(&cut, 2).bytes()),
        BatchError::RecordDecode {
            index: 1,
            offset: REC,
            ..
        }
    ));
    // A workload string announcing 2^64 - 1 bytes allocates nothing.
    let mut huge = raw[..REC].to_vec();
    huge[86] = 1; // Some(workload)
    huge.splice(87..87, u64::MAX.to_le_bytes());
    assert!(matches!(
        expect_err(&Frame::with_raw(&huge, 1).bytes()),
        BatchError::RecordDecode {
            index: 0,
            offset: 0,
            ..
        }
    ));
}

#[test]
fn encoder_rejects_bad_hosts_and_levels_and_unencodable_records() {
    let id = InstanceId::new(1);
    assert!(matches!(
        ChunkEncoder::new("", id),
        Err(BatchError::InvalidHost { len: 0, .. })
    ));
    assert!(matches!(
        ChunkEncoder::new("h".repeat(1025), id),
        Err(BatchError::InvalidHost { len: 1025, .. })
    ));
    assert!(ChunkEncoder::new("h".repeat(1024), id).is_ok());
    assert!(matches!(
        ChunkEncoder::with_level("h", id, 1000),
        Err(BatchError::InvalidConfig {
            key: "zstd_level",
            ..
        })
    ));
    let mut bad = record(at(11), 1);
    bad.t_start = Some(std::time::UNIX_EPOCH - Duration::from_secs(1));
    let chunk = Chunk::new(window(), 0, 0, true, vec![record(at(11), 0), bad]);
    let mut out = vec![1, 2, 3];
    assert!(matches!(
        encoder().encode(&chunk, &mut out),
        Err(BatchError::RecordEncode { index: 1, .. })
    ));
    assert_eq!(
        out,
        [1, 2, 3],
        "a failed encode leaves the buffer as it was"
    );
}

#[test]
fn instance_ids_differ_between_calls() {
    let a = InstanceId::random();
    let b = InstanceId::random();
    assert_ne!(a, b);
    assert_eq!(a.to_string().len(), 32);
}

#[test]
fn state_machines_and_errors_cross_threads() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync + 'static>() {}
    send::<flow_batch::MinuteBatcher>();
    send::<ChunkEncoder>();
    send::<ChunkDecoder>();
    send_sync::<BatchError>();
    send_sync::<Chunk>();
}

#[test]
fn decoded_workload_ids_are_validated() {
    // A WorkloadId encodes as its string; decoding one that could not have been
    // written (empty, over 64 bytes, with a NUL) fails instead of being accepted.
    for bad in ["", "nul\0inside", &"x".repeat(65)] {
        let bytes = bincode::serialize(&bad.to_string()).expect("encode");
        assert!(
            bincode::deserialize::<WorkloadId>(&bytes).is_err(),
            "{bad:?}"
        );
    }
    let ok = bincode::serialize(&"billing".to_string()).expect("encode");
    let id: WorkloadId = bincode::deserialize(&ok).expect("decode");
    assert_eq!(id.as_str(), "billing");
    assert_eq!(
        bincode::serialize(&id).expect("encode"),
        ok,
        "same bytes as a String"
    );
}

/// Offsets in the smallest record (`record(at(s), port)`: IPv4, no start time).
const MIN_T_END: usize = 25;
/// Length of that record: the smallest one plus the 4-byte unattributed reason.
const REC: usize = MIN_RECORD_LEN + 4;
const MIN_CLOSE_STATE: usize = 37;
const MIN_WORKLOAD_TAG: usize = 86;

fn put_time(bytes: &mut [u8], at: usize, seconds: u64, nanos: u32) {
    bytes[at..at + 8].copy_from_slice(&seconds.to_le_bytes());
    bytes[at + 8..at + 12].copy_from_slice(&nanos.to_le_bytes());
}

#[test]
fn nanoseconds_of_a_whole_second_or_more_are_refused() {
    let records = [record(at(11), 1), record(at(12), 2)];
    let mut raw = encode_records(&records);
    // 9 s + 10^9 ns: bincode alone reads it as 10 s, a second encoding of the record
    // whose t_end is 10 s.
    put_time(&mut raw, REC + MIN_T_END, 9, 1_000_000_000);
    let carried: FlowRecord = bincode_options()
        .deserialize(&raw[REC..])
        .expect("bincode carries the nanoseconds");
    assert_eq!(carried.t_end, at(10));
    match expect_err(&Frame::with_raw(&raw, 2).bytes()) {
        BatchError::InvalidTime {
            index: 1,
            offset,
            field: "t_end",
            seconds: 9,
            nanos: 1_000_000_000,
            reason,
        } => {
            assert_eq!(offset, REC + MIN_T_END);
            assert!(reason.contains("10^9"), "{reason}");
        }
        other => panic!("{other}"),
    }
    // The largest nanoseconds are refused too, not only the first carrying value.
    put_time(&mut raw, REC + MIN_T_END, 9, u32::MAX);
    assert!(matches!(
        expect_err(&Frame::with_raw(&raw, 2).bytes()),
        BatchError::InvalidTime {
            index: 1,
            field: "t_end",
            nanos: u32::MAX,
            ..
        }
    ));

    // t_start, in a record with IPv6 addresses: after 22 + 22 + 4 bytes and the tag.
    let v6 = flow_testkit::record()
        .local("[2001:db8::1]:8080")
        .remote("[2001:db8::2]:1234")
        .t_start(Some(at(9)))
        .t_end(at(10))
        .build();
    let mut raw = encode_records(&[v6]);
    assert_eq!(raw[48], 1, "t_start is Some");
    put_time(&mut raw, 49, 8, 1_999_999_999);
    match expect_err(&Frame::with_raw(&raw, 1).bytes()) {
        BatchError::InvalidTime {
            index: 0,
            offset: 49,
            field: "t_start",
            seconds: 8,
            nanos: 1_999_999_999,
            ..
        } => {}
        other => panic!("{other}"),
    }
    // The last nanosecond of a second is fine.
    put_time(&mut raw, 49, 8, 999_999_999);
    let decoded = decoder()
        .decode(&Frame::with_raw(&raw, 1).bytes())
        .expect("valid");
    assert_eq!(
        decoded.records[0].t_start,
        Some(at(8) + Duration::from_nanos(999_999_999))
    );
}

#[test]
fn times_from_the_year_10000_on_are_refused() {
    use flow_batch::wire::TIME_LIMIT_SECS;
    assert_eq!(TIME_LIMIT_SECS, 253_402_300_800, "10000-01-01T00:00:00Z");
    let mut raw = encode_records(&[record(at(11), 1)]);
    // The last nanosecond of 9999-12-31 is the latest time a record may carry.
    put_time(&mut raw, MIN_T_END, TIME_LIMIT_SECS - 1, 999_999_999);
    let decoded = decoder()
        .decode(&Frame::with_raw(&raw, 1).bytes())
        .expect("valid");
    assert_eq!(
        decoded.records[0].t_end,
        std::time::UNIX_EPOCH + Duration::new(TIME_LIMIT_SECS - 1, 999_999_999)
    );
    // From 10000-01-01 on, and up to seconds that no SystemTime holds (which bincode
    // alone reports as an untyped overflow), the error names the record and field.
    for seconds in [TIME_LIMIT_SECS, i64::MAX as u64, u64::MAX] {
        put_time(&mut raw, MIN_T_END, seconds, 0);
        match expect_err(&Frame::with_raw(&raw, 1).bytes()) {
            BatchError::InvalidTime {
                index: 0,
                offset: MIN_T_END,
                field: "t_end",
                seconds: s,
                nanos: 0,
                reason,
            } => {
                assert_eq!(s, seconds);
                assert!(reason.contains("10000-01-01T00:00:00Z"), "{reason}");
            }
            other => panic!("{seconds}: {other}"),
        }
    }
    // A far t_start is refused even when t_end is fine.
    let started = flow_testkit::record()
        .t_start(Some(at(9)))
        .t_end(at(10))
        .build();
    let mut raw = encode_records(&[record(at(11), 1), started]);
    let second = REC;
    assert_eq!(raw[second + 24], 1, "t_start is Some");
    put_time(&mut raw, second + 25, TIME_LIMIT_SECS + 5, 1);
    let err = expect_err(&Frame::with_raw(&raw, 2).bytes());
    assert!(
        matches!(
            err,
            BatchError::InvalidTime {
                index: 1,
                field: "t_start",
                seconds: 253_402_300_805,
                nanos: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("record 1: t_start = 253402300805 s + 1 ns")
    );
}

#[test]
fn close_states_outside_the_kernels_are_carried() {
    let mut raw = encode_records(&[record(at(11), 1)]);
    assert_eq!(raw[MIN_CLOSE_STATE], 7, "close_state CLOSE");
    for state in [0, 13, 200, 255] {
        raw[MIN_CLOSE_STATE] = state;
        let decoded = decoder()
            .decode(&Frame::with_raw(&raw, 1).bytes())
            .expect("carried");
        assert_eq!(decoded.records[0].close_state, TcpState(state));
        assert_eq!(decoded.records[0].close_state.as_str(), "UNKNOWN");
    }
}

/// The smallest record with `Some(id)` as its workload, `id` given as raw bytes.
fn record_with_workload_bytes(id: &[u8]) -> Vec<u8> {
    let mut raw = encode_records(&[record(at(11), 1)]);
    assert_eq!(raw[MIN_WORKLOAD_TAG], 0, "no workload");
    raw[MIN_WORKLOAD_TAG] = 1;
    let mut string = (id.len() as u64).to_le_bytes().to_vec();
    string.extend_from_slice(id);
    raw.splice(MIN_WORKLOAD_TAG + 1..MIN_WORKLOAD_TAG + 1, string);
    raw
}

#[test]
fn decoded_workload_ids_are_1_to_64_bytes_of_utf8_without_controls() {
    for good in ["a", "k8s:prod/ümlaut-€-𝄞", &"x".repeat(64)] {
        let raw = record_with_workload_bytes(good.as_bytes());
        let decoded = decoder()
            .decode(&Frame::with_raw(&raw, 1).bytes())
            .expect(good);
        let id = decoded.records[0].local_workload_id.as_ref().expect("Some");
        assert_eq!(id.as_str(), good);
    }
    let long = "x".repeat(65);
    let bad: [(&[u8], &str); 8] = [
        (b"", "empty"),
        (long.as_bytes(), "longer than 64 bytes"),
        (b"nul\0inside", "NUL"),
        (b"esc\x1b[31m", "control character U+001B"),
        (b"line\nbreak", "control character U+000A"),
        (b"del\x7f", "control character U+007F"),
        ("c1-\u{85}".as_bytes(), "control character U+0085"),
        (&[b'a', 0xff], "invalid utf-8"),
    ];
    for (id, why) in bad {
        let raw = record_with_workload_bytes(id);
        match expect_err(&Frame::with_raw(&raw, 1).bytes()) {
            BatchError::RecordDecode {
                index: 0,
                offset: 0,
                source,
            } => {
                let text = source.to_string();
                assert!(
                    text.to_lowercase().contains(&why.to_lowercase()),
                    "{id:?}: {text}"
                );
            }
            other => panic!("{id:?}: {other}"),
        }
    }
}

#[test]
fn the_payload_is_exactly_one_zstd_frame() {
    let records = [record(at(11), 1), record(at(12), 2)];
    let raw = encode_records(&records);
    let base = Frame::with_raw(&raw, 2);
    let payload_at = 80;
    assert!(decoder().decode(&base.bytes()).is_ok());

    // Two frames: zstd alone decompresses both, concatenated.
    let mut two = base.clone();
    two.payload = zstd::bulk::compress(&raw[..REC], 1).expect("compress");
    let first_len = two.payload.len();
    two.payload
        .extend_from_slice(&zstd::bulk::compress(&raw[REC..], 1).expect("compress"));
    assert_eq!(
        zstd::stream::decode_all(&two.payload[..]).expect("zstd reads both"),
        raw
    );
    match expect_err(&two.bytes()) {
        BatchError::TrailingBytes {
            region: "zstd frame",
            offset,
            count,
        } => {
            assert_eq!(offset, payload_at + first_len);
            assert_eq!(count, two.payload.len() - first_len);
        }
        other => panic!("{other}"),
    }
    // A frame announcing all of raw_len, then a stray byte.
    let mut stray = base.clone();
    stray.payload.push(0);
    assert!(matches!(
        expect_err(&stray.bytes()),
        BatchError::TrailingBytes {
            region: "zstd frame",
            count: 1,
            ..
        }
    ));
    // A skippable frame first: zstd alone skips it.
    let mut skippable = base.clone();
    let mut payload = vec![0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3];
    payload.extend_from_slice(&base.payload);
    skippable.payload = payload;
    assert!(matches!(
        expect_err(&skippable.bytes()),
        BatchError::ZstdFrame { offset: 80, reason } if reason.contains("magic")
    ));

    let compressor = |parameter| {
        let mut c = zstd::bulk::Compressor::new(1).expect("compressor");
        c.set_parameter(parameter).expect("parameter");
        c.compress(&raw).expect("compress")
    };
    // A content checksum (zstd alone verifies it and accepts the frame).
    let mut checksummed = base.clone();
    checksummed.payload = compressor(zstd::zstd_safe::CParameter::ChecksumFlag(true));
    assert_eq!(
        zstd::bulk::decompress(&checksummed.payload, raw.len()).expect("zstd reads it"),
        raw
    );
    assert!(matches!(
        expect_err(&checksummed.bytes()),
        BatchError::ZstdFrame { offset: 84, reason } if reason.contains("checksum")
    ));
    // No content size.
    let mut no_size = base.clone();
    no_size.payload = compressor(zstd::zstd_safe::CParameter::ContentSizeFlag(false));
    assert!(matches!(
        expect_err(&no_size.bytes()),
        BatchError::ZstdFrame { offset: 84, reason } if reason.contains("content size")
    ));
    // A content size other than raw_len (here raw_len announces a third record).
    let mut larger = base.clone();
    larger.raw_len += REC as u32;
    larger.record_count = 3;
    assert!(matches!(
        expect_err(&larger.bytes()),
        BatchError::ZstdFrame { offset: 84, reason } if reason.contains("differs from raw_len")
    ));
    // A dictionary ID (one byte, after the descriptor of a single-segment frame).
    let mut dictionary = base.clone();
    let descriptor = dictionary.payload[4];
    assert_eq!(descriptor & 0x23, 0x20, "single segment, no dictionary ID");
    dictionary.payload[4] = descriptor | 0x01;
    dictionary.payload.insert(5, 7);
    assert!(matches!(
        expect_err(&dictionary.bytes()),
        BatchError::ZstdFrame { offset: 84, reason } if reason.contains("dictionary")
    ));
    // Not a frame at all.
    let mut garbage = base.clone();
    garbage.payload = vec![0; 16];
    assert!(matches!(
        expect_err(&garbage.bytes()),
        BatchError::ZstdFrame { offset: 80, .. }
    ));
}

#[test]
fn the_encoder_writes_nothing_the_decoder_refuses() {
    use flow_batch::wire::TIME_LIMIT_SECS;
    let epoch = std::time::UNIX_EPOCH;
    let last = epoch + Duration::new(TIME_LIMIT_SECS - 1, 999_999_999);
    let mut rng = Rng::new(11);
    let mut records = Vec::new();
    // Every close state, the extreme times, every workload length class.
    for state in 0..=255_u8 {
        let t_end = at(10) + Duration::from_nanos(rng.below(1 << 32));
        let mut r = rng.record(t_end);
        r.close_state = TcpState(state);
        r.t_start = match state % 4 {
            0 => None,
            1 => Some(epoch),
            2 => Some(last),
            _ => Some(epoch + Duration::new(rng.below(TIME_LIMIT_SECS), 999_999_999)),
        };
        r.t_end = match state % 3 {
            0 => epoch,
            1 => last,
            _ => r.t_end,
        };
        let id = match state % 5 {
            0 => Some("a".to_string()),
            1 => Some("é".repeat(32)),
            2 => Some("𝄞".repeat(16)),
            _ => None,
        };
        r.local_workload_id = id.map(|id| WorkloadId::new(id).expect("valid"));
        records.push(r);
    }
    let window = Window::from_millis(0, 1).expect("window");
    for level in [-5, 1, 3, 19] {
        let mut enc =
            ChunkEncoder::with_level("h/with/slashes", InstanceId::new(1), level).expect("level");
        for n in [0, 1, records.len()] {
            let chunk = Chunk::new(window, 0, n as u64, true, records[..n].to_vec());
            let frame = enc.encode_to_vec(&chunk).expect("encodes");
            let decoded = decoder()
                .decode(&frame)
                .unwrap_or_else(|e| panic!("level {level}, {n} records: {e}"));
            assert_eq!(decoded.records, chunk.records);
        }
    }
    // What the decoder refuses, the encoder refuses first (and the batcher with it).
    for t in [
        epoch + Duration::from_secs(TIME_LIMIT_SECS),
        epoch + Duration::from_secs(u64::MAX >> 2),
    ] {
        let mut far = record(at(11), 1);
        far.t_end = t;
        let chunk = Chunk::new(window, 0, 0, true, vec![record(at(11), 2), far.clone()]);
        match encoder().encode(&chunk, &mut Vec::new()) {
            Err(BatchError::RecordEncode { index: 1, source }) => {
                assert!(source.to_string().starts_with("t_end is "), "{source}");
            }
            other => panic!("{other:?}"),
        }
        let mut batcher =
            flow_batch::MinuteBatcher::new(flow_batch::BatchConfig::default()).expect("batcher");
        assert!(matches!(
            batcher.push(far, at(11)),
            Err(BatchError::UnencodableRecord { .. })
        ));
    }
}

#[test]
fn batch_ids_print_as_host_instance_sequence() {
    let id = flow_batch::wire::BatchId {
        host: "rack/7/node-3".to_string(),
        instance: InstanceId::new(0xab),
        sequence: 42,
    };
    let text = id.to_string();
    assert_eq!(text, "rack/7/node-3/000000000000000000000000000000ab/42");
    // The last two fields have a fixed form, so the host is what precedes them.
    let mut fields = text.rsplitn(3, '/');
    assert_eq!(fields.next(), Some("42"));
    assert_eq!(fields.next(), Some("000000000000000000000000000000ab"));
    assert_eq!(fields.next(), Some("rack/7/node-3"));
    let max = flow_batch::wire::BatchId {
        host: "h".to_string(),
        instance: InstanceId::new(u128::MAX),
        sequence: u64::MAX,
    };
    assert_eq!(
        max.to_string(),
        format!("h/{}/18446744073709551615", "f".repeat(32))
    );
}

/// A record as format version 1 encodes it: the fields up to `incomplete`, through
/// bincode (a writer of version 1 records, independent of the crate's).
fn encode_records_v1(records: &[FlowRecord]) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct RecordV1<'a> {
        local: &'a std::net::SocketAddr,
        remote: &'a std::net::SocketAddr,
        direction: &'a Direction,
        t_start: &'a Option<std::time::SystemTime>,
        t_end: &'a std::time::SystemTime,
        close_state: &'a TcpState,
        close_reason: &'a CloseReason,
        stats: &'a SocketStats,
        local_workload_id: &'a Option<WorkloadId>,
        identity_source: &'a IdentitySource,
        incomplete: &'a bool,
    }
    let mut raw = Vec::new();
    for r in records {
        let v1 = RecordV1 {
            local: &r.local,
            remote: &r.remote,
            direction: &r.direction,
            t_start: &r.t_start,
            t_end: &r.t_end,
            close_state: &r.close_state,
            close_reason: &r.close_reason,
            stats: &r.stats,
            local_workload_id: &r.local_workload_id,
            identity_source: &r.identity_source,
            incomplete: &r.incomplete,
        };
        bincode_options()
            .serialize_into(&mut raw, &v1)
            .expect("serialize");
    }
    raw
}

#[test]
fn version_1_frames_still_decode() {
    let mut rng = Rng::new(21);
    let records: Vec<FlowRecord> = (0..50)
        .map(|i| rng.record(at(10) + Duration::from_millis(i)))
        .collect();
    let raw = encode_records_v1(&records);
    let minimal = encode_records_v1(&[record(at(11), 1)]);
    assert_eq!(minimal.len(), MIN_RECORD_LEN_V1 + 4);
    assert_eq!(minimal[..], encode_records(&[record(at(11), 1)])[..REC - 6]);
    let mut frame = Frame::with_raw(&raw, 50);
    frame.version = 1;
    let decoded = decoder().decode(&frame.bytes()).expect("a version 1 frame");
    assert_eq!(decoded.header.version, 1);
    assert_eq!(decoded.completeness, None);
    // Final records, without flow ID or process: what the test's records are.
    assert!(
        records.iter().all(|r| r.record_kind == RecordKind::Final
            && r.flow_id.is_none()
            && r.process.is_none())
    );
    assert_eq!(decoded.records, records);
    // Version 1 records are shorter: the header's bound on the record count is the
    // version's own.
    let mut one = Frame::with_raw(&minimal, 1);
    one.version = 1;
    assert!(decoder().decode(&one.bytes()).is_ok());
    let mut too_many = one.clone();
    too_many.record_count = 2;
    assert!(matches!(
        expect_err(&too_many.bytes()),
        BatchError::InvalidHeader {
            field: "record_count",
            ..
        }
    ));
    // A version 2 record in a version 1 frame has bytes left over.
    let mut mixed = Frame::with_raw(&encode_records(&[record(at(11), 1)]), 1);
    mixed.version = 1;
    assert!(matches!(
        expect_err(&mixed.bytes()),
        BatchError::TrailingBytes {
            region: "records",
            offset,
            count: 6
        } if offset == REC - 6
    ));

    // And frames the version 1 encoder wrote (the fuzz seeds, committed before
    // version 2) decode as they did.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus");
    let bytes = std::fs::read(dir.join("valid-every-variant.bin")).expect("seed");
    let decoded = decoder().decode(&bytes).expect("decodes");
    assert_eq!(decoded.header.version, 1);
    assert_eq!(decoded.records.len(), 24);
    for r in &decoded.records {
        assert_eq!(
            (r.record_kind, r.flow_id, r.process),
            (RecordKind::Final, None, None)
        );
    }
    // Re-encoded, they become a version 2 frame of the same records.
    let again = ChunkEncoder::new(decoded.header.host.clone(), decoded.header.instance)
        .expect("encoder")
        .encode_to_vec(&decoded.clone().into_chunk())
        .expect("encode");
    let again = decoder().decode(&again).expect("decodes");
    assert_eq!(again.header.version, 2);
    assert_eq!(again.records, decoded.records);
}

fn completeness() -> Completeness {
    Completeness {
        closes_seen: 1_000,
        records_emitted: 990,
        lost_ring_full: 10,
        lost_recursion: 2,
        lost_journal: 3,
        lost_spool: 4,
        interim_records: 77,
        records_replayed: 5,
        running_whole_window: true,
    }
}

#[test]
fn version_2_carries_interim_records_flow_ids_processes_and_completeness() {
    let mut rng = Rng::new(22);
    let records: Vec<FlowRecord> = (0..40u64)
        .map(|i| {
            let mut r = rng.record(at(10) + Duration::from_millis(i));
            r.record_kind = if i % 2 == 0 {
                RecordKind::Interim
            } else {
                RecordKind::Final
            };
            r.flow_id = (i % 3 != 0).then(|| FlowId {
                boot_id: [i as u8; 16],
                cookie: rng.next_u64(),
            });
            r.process = (i % 4 != 0).then(|| {
                ProcessInfo::from_comm_bytes(rng.next_u64() as u32, &rng.bytes(i as usize % 17), i)
            });
            r
        })
        .collect();
    // Index 3 and sequence 7, as `Frame` writes them.
    let mut chunk = Chunk::new(window(), 3, 7, true, records);
    chunk.completeness = Some(completeness());
    let mut enc = encoder();
    let frame = enc.encode_to_vec(&chunk).expect("encode");
    let decoded = decoder().decode(&frame).expect("decode");
    assert_eq!(decoded.records, chunk.records);
    assert_eq!(decoded.completeness, Some(completeness()));
    assert_eq!(decoded.header.completeness, Some(completeness()));
    assert_eq!(decoded.header.header_len(), 80 + COMPLETENESS_LEN);
    assert_eq!(decoded.header.frame_len(), frame.len());
    assert_eq!(decoded.clone().into_chunk(), chunk);
    // The header alone tells the frame's length.
    let header =
        decode_header(&frame[..80 + COMPLETENESS_LEN], &DecodeLimits::default()).expect("header");
    assert_eq!(header, decoded.header);

    // Each field of the block at its documented offset (from 70 + N), under the
    // header checksum.
    assert_eq!(frame[7], 0x03, "flags: last, completeness");
    let block = &frame[76..76 + COMPLETENESS_LEN];
    let u64_at = |at: usize| u64::from_le_bytes(block[at..at + 8].try_into().expect("8"));
    assert_eq!(
        [0, 8, 16, 24, 32, 40, 48, 56].map(u64_at),
        [1_000, 990, 10, 2, 3, 4, 77, 5]
    );
    assert_eq!(block[64], 0x01, "running the whole window");
    let crc_at = 76 + COMPLETENESS_LEN;
    let crc = u32::from_le_bytes(frame[crc_at..crc_at + 4].try_into().expect("4"));
    assert_eq!(crc, crc32c::crc32c(&frame[..crc_at]));
    // A frame built from the documentation alone is byte-identical.
    let mut doc = Frame::with_raw(&[], 0);
    doc.flags = 0x03;
    doc.block = block.to_vec();
    doc.record_count = chunk.records.len() as u32;
    doc.raw_len = u32::from_le_bytes(frame[56..60].try_into().expect("4"));
    doc.payload = frame[crc_at + 4..].to_vec();
    assert!(frame == doc.bytes(), "the documented layout");

    // Every truncation of such a header is a truncation, and a flipped bit in the
    // block fails the header checksum.
    for len in 0..crc_at + 4 {
        assert!(
            matches!(expect_err(&frame[..len]), BatchError::Truncated { .. }),
            "len {len}"
        );
    }
    let mut flipped = frame.clone();
    flipped[76 + 20] ^= 0x04;
    assert!(matches!(
        expect_err(&flipped),
        BatchError::HeaderChecksum { offset, .. } if offset == crc_at
    ));
    // Without completeness the header has no block, and running_whole_window false
    // is a zero flags byte.
    let mut plain = chunk.clone();
    plain.completeness = None;
    let frame = enc.encode_to_vec(&plain).expect("encode");
    assert_eq!(frame[7], 0x01);
    let decoded = decoder().decode(&frame).expect("decode");
    assert_eq!(decoded.completeness, None);
    assert_eq!(decoded.header.header_len(), 80);
    let mut partial = chunk.clone();
    partial.completeness = Some(Completeness {
        running_whole_window: false,
        ..Completeness::default()
    });
    let frame = enc.encode_to_vec(&partial).expect("encode");
    assert_eq!(frame[76 + 56], 0);
    assert_eq!(
        decoder().decode(&frame).expect("decode").completeness,
        partial.completeness
    );
}

#[test]
fn the_encoder_puts_completeness_only_on_a_last_chunk() {
    let mut chunk = Chunk::new(window(), 0, 0, false, vec![record(at(11), 1)]);
    chunk.completeness = Some(completeness());
    let mut out = vec![7];
    assert!(matches!(
        encoder().encode(&chunk, &mut out),
        Err(BatchError::InvalidChunk {
            field: "completeness",
            ..
        })
    ));
    assert_eq!(out, [7]);
}

/// Offsets in the smallest version 2 record (`record(at(s), port)`): the fields after
/// `incomplete`.
const MIN_RECORD_KIND: usize = REC - 6;
const MIN_FLOW_ID_TAG: usize = REC - 2;
const MIN_PROCESS_TAG: usize = REC - 1;

#[test]
fn invalid_version_2_fields_are_named_with_their_offset() {
    let mut raw = encode_records(&[record(at(11), 1), record(at(12), 2)]);
    assert_eq!(raw.len(), 2 * REC);
    let expect = |raw: &[u8], count: u32| match expect_err(&Frame::with_raw(raw, count).bytes()) {
        BatchError::InvalidRecord {
            index,
            offset,
            field,
            reason,
        } => (index, offset, field, reason),
        other => panic!("{other}"),
    };
    // An unknown record kind, in the second record.
    for kind in [2_u32, 0x100, u32::MAX] {
        raw[REC + MIN_RECORD_KIND..REC + MIN_RECORD_KIND + 4].copy_from_slice(&kind.to_le_bytes());
        let (index, offset, field, reason) = expect(&raw, 2);
        assert_eq!(
            (index, offset, field),
            (1, REC + MIN_RECORD_KIND, "record_kind")
        );
        assert!(reason.contains("record kind"), "{reason}");
    }
    raw[REC + MIN_RECORD_KIND..REC + MIN_RECORD_KIND + 4].copy_from_slice(&1_u32.to_le_bytes());
    let decoded = decoder()
        .decode(&Frame::with_raw(&raw, 2).bytes())
        .expect("interim");
    assert_eq!(decoded.records[1].record_kind, RecordKind::Interim);
    // Option tags other than 0 and 1.
    for (at, field) in [(MIN_FLOW_ID_TAG, "flow_id"), (MIN_PROCESS_TAG, "process")] {
        let mut bad = raw.clone();
        bad[at] = 2;
        assert_eq!(
            expect(&bad, 2),
            (0, at, field, "option tag is neither 0 (none) nor 1 (some)")
        );
    }

    // A process whose comm is not NUL-padded.
    let with_process = flow_testkit::record()
        .remote(([10, 0, 0, 2], 1))
        .t_start(None)
        .t_end(at(11))
        .process(Some(ProcessInfo::new(7, "sh", 8)))
        .build();
    let raw = encode_records(&[with_process]);
    let comm_at = raw.len() - 16;
    assert_eq!(&raw[comm_at..comm_at + 3], b"sh\0");
    let mut after_nul = raw.clone();
    after_nul[comm_at + 9] = b'x';
    let (index, offset, field, reason) = expect(&after_nul, 1);
    assert_eq!((index, offset, field), (0, comm_at + 9, "process.comm"));
    assert!(reason.contains("after the first NUL"), "{reason}");
    let mut no_nul = raw.clone();
    no_nul[comm_at..].copy_from_slice(&[b'a'; 16]);
    let (_, offset, field, reason) = expect(&no_nul, 1);
    assert_eq!((offset, field), (comm_at + 15, "process.comm"));
    assert!(reason.contains("no NUL"), "{reason}");
    // Any other byte, non-UTF-8 included, is a valid name.
    let mut odd = raw.clone();
    odd[comm_at..comm_at + 15].copy_from_slice(&[0xff; 15]);
    let decoded = decoder()
        .decode(&Frame::with_raw(&odd, 1).bytes())
        .expect("any bytes but NUL");
    let process = decoded.records[0].process.expect("Some");
    assert_eq!(process.comm[..15], [0xff; 15]);
    assert_eq!((process.pid, process.cgroup_id), (7, 8));

    // The payload ends inside a version 2 field.
    let mut cut = raw.clone();
    cut.truncate(comm_at + 4);
    let (_, offset, field, reason) = expect(&cut, 1);
    assert_eq!((offset, field), (comm_at, "process.comm"));
    assert!(reason.contains("ends inside"), "{reason}");
}
