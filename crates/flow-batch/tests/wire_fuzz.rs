//! Property test of the decoder: thousands of random, truncated, bit-flipped and
//! re-sealed inputs. It must return an error (or, for re-sealed inputs, possibly a
//! valid chunk) and never panic or allocate past its limits.

mod common;

use std::time::Duration;

use common::{Rng, at};
use flow_batch::{
    Chunk, Completeness, Window,
    wire::{
        COMPLETENESS_LEN, ChunkDecoder, ChunkEncoder, DecodeLimits, FLAG_COMPLETENESS, InstanceId,
        decode_header,
    },
};
use flow_record::{FlowId, ProcessInfo, RecordKind};

const ITERATIONS: u64 = 4_000;

fn frame(rng: &mut Rng) -> Vec<u8> {
    let n = rng.below(30) as usize;
    let records = (0..n)
        .map(|_| {
            let t_end = at(10) + Duration::from_millis(rng.below(5_000));
            let mut r = rng.record(t_end);
            // The version 2 fields, so that mutations reach them too.
            if rng.chance(2) {
                r.record_kind = RecordKind::Interim;
            }
            if rng.chance(2) {
                r.flow_id = Some(FlowId {
                    boot_id: (u128::from(rng.next_u64()) << 64).to_le_bytes(),
                    cookie: rng.next_u64(),
                });
            }
            if rng.chance(2) {
                let len = rng.below(16) as usize;
                let comm = rng.bytes(len);
                r.process = Some(ProcessInfo::from_comm_bytes(
                    rng.next_u64() as u32,
                    &comm,
                    rng.next_u64(),
                ));
            }
            r
        })
        .collect();
    let window = Window::from_millis(10_000, 15_000).expect("window");
    let last = rng.chance(2);
    let mut chunk = Chunk::new(window, 0, rng.next_u64(), last, records);
    if last && rng.chance(2) {
        chunk.completeness = Some(Completeness {
            closes_seen: rng.next_u64(),
            lost_ring_full: rng.below(100),
            running_whole_window: rng.chance(2),
            ..Completeness::default()
        });
    }
    let host = "h".repeat(1 + rng.below(40) as usize);
    ChunkEncoder::new(host, InstanceId::new(u128::from(rng.next_u64())))
        .expect("encoder")
        .encode_to_vec(&chunk)
        .expect("encode")
}

fn header_len(frame: &[u8]) -> usize {
    let block = if frame[7] & FLAG_COMPLETENESS != 0 {
        COMPLETENESS_LEN
    } else {
        0
    };
    70 + usize::from(u16::from_le_bytes([frame[68], frame[69]])) + block + 4
}

/// Rewrites both checksums (and the payload lengths) so the decoder gets past them.
fn reseal(frame: &mut Vec<u8>, raw: Option<(&[u8], u32)>) {
    let hl = header_len(frame);
    if hl > frame.len() {
        // A flipped completeness flag announces a header longer than the frame.
        return;
    }
    if let Some((raw, count)) = raw {
        let payload = zstd::bulk::compress(raw, 1).expect("compress");
        frame.truncate(hl);
        frame.extend_from_slice(&payload);
        frame[52..56].copy_from_slice(&count.to_le_bytes());
        frame[56..60].copy_from_slice(&(raw.len() as u32).to_le_bytes());
        frame[60..64].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    }
    let payload_crc = crc32c::crc32c(&frame[hl..]);
    frame[64..68].copy_from_slice(&payload_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&frame[..hl - 4]);
    frame[hl - 4..hl].copy_from_slice(&header_crc.to_le_bytes());
}

fn flip_bits(rng: &mut Rng, bytes: &mut [u8], within: std::ops::Range<usize>) {
    for _ in 0..1 + rng.below(4) {
        let at = within.start + rng.below((within.end - within.start) as u64) as usize;
        bytes[at] ^= 1 << rng.below(8);
    }
}

#[test]
fn damaged_frames_are_rejected() {
    let mut rng = Rng::new(0x5eed);
    let mut decoder = ChunkDecoder::new(DecodeLimits::default()).expect("decoder");
    for i in 0..ITERATIONS {
        let original = frame(&mut rng);
        assert!(decoder.decode(&original).is_ok());
        let mut input = original.clone();
        match i % 5 {
            0 => {
                let len = input.len();
                flip_bits(&mut rng, &mut input, 0..len);
            }
            1 => input.truncate(rng.below(original.len() as u64) as usize),
            2 => {
                let len = 1 + rng.below(16) as usize;
                let extra = rng.bytes(len);
                input.extend_from_slice(&extra);
            }
            3 => {
                let at = rng.below(input.len() as u64) as usize;
                input.remove(at);
            }
            _ => {
                let at = rng.below(input.len() as u64) as usize;
                input.insert(at, rng.next_u64() as u8);
            }
        }
        if input == original {
            continue; // two flips of the same bit
        }
        let result = decoder.decode(&input);
        assert!(result.is_err(), "iteration {i}: damaged frame accepted");
        // The decoder is still usable afterwards.
        assert!(decoder.decode(&original).is_ok());
    }
}

#[test]
fn random_bytes_are_rejected() {
    let mut rng = Rng::new(7);
    let mut decoder = ChunkDecoder::new(DecodeLimits::default()).expect("decoder");
    for i in 0..ITERATIONS {
        let len = rng.below(400) as usize;
        let mut input = rng.bytes(len);
        if i % 2 == 0 && len >= 6 {
            input[..6].copy_from_slice(b"FXCB\x01\x00");
        }
        assert!(decoder.decode(&input).is_err(), "iteration {i}");
        let _ = decode_header(&input, &DecodeLimits::default());
    }
}

#[test]
fn resealed_garbage_never_panics() {
    let mut rng = Rng::new(99);
    let limits = DecodeLimits::default().with_max_raw_len(1 << 20);
    let mut decoder = ChunkDecoder::new(limits).expect("decoder");
    let mut accepted = 0;
    let mut kinds = std::collections::BTreeMap::new();
    for i in 0..ITERATIONS {
        let mut input = frame(&mut rng);
        let hl = header_len(&input);
        match i % 4 {
            // Header fields past the magic and version, checksum fixed.
            0 => {
                flip_bits(&mut rng, &mut input, 6..68);
                reseal(&mut input, None);
            }
            // Decompressed records damaged, everything around them consistent.
            1 => {
                let raw_len = u32::from_le_bytes([input[56], input[57], input[58], input[59]]);
                let mut raw =
                    zstd::bulk::decompress(&input[hl..], raw_len as usize).expect("own payload");
                if !raw.is_empty() {
                    let len = raw.len();
                    flip_bits(&mut rng, &mut raw, 0..len);
                }
                let count = u32::from_le_bytes([input[52], input[53], input[54], input[55]]);
                reseal(&mut input, Some((&raw, count)));
            }
            // Random records, a random count that the length allows.
            2 => {
                let len = rng.below(2_000) as usize;
                let raw = rng.bytes(len);
                let count = rng.below(raw.len() as u64 / 96 + 1) as u32;
                reseal(&mut input, Some((&raw, count)));
            }
            // The compressed payload damaged past its zstd frame header (magic,
            // descriptor, window, content size: at most 14 bytes without a dictionary),
            // so that zstd decompresses it.
            _ if i % 8 == 7 && input.len() > hl + 14 => {
                let len = input.len();
                flip_bits(&mut rng, &mut input, hl + 14..len);
                reseal(&mut input, None);
            }
            // Random compressed payload.
            _ => {
                input.truncate(hl);
                let len = rng.below(200) as usize;
                let payload = rng.bytes(len);
                input.extend_from_slice(&payload);
                input[60..64].copy_from_slice(&(payload.len() as u32).to_le_bytes());
                reseal(&mut input, None);
            }
        }
        match decoder.decode(&input) {
            Ok(_) => accepted += 1,
            Err(e) => {
                let debug = format!("{e:?}");
                let kind = debug
                    .split([' ', '{', '('])
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                *kinds.entry(kind).or_insert(0_u32) += 1;
            }
        }
    }
    // Flipped statistics still decode; garbage reaches every stage of the decoder.
    assert!(accepted > 0 && accepted < ITERATIONS, "{accepted}");
    for kind in [
        "InvalidHeader",
        "ZstdFrame",
        "Decompression",
        "RecordDecode",
        "InvalidTime",
        "TrailingBytes",
    ] {
        assert!(kinds.contains_key(kind), "{kind} never reached: {kinds:?}");
    }
}
