//! What the fuzz targets share: turning a fuzzer input into the frame the decoder is
//! given, and the checks every decode must pass.
//!
//! Both checksums stop almost every mutation of a frame at the header check, so
//! besides `decode_chunk` (bytes as they are), two targets get past them:
//! `decode_chunk_resealed` rewrites both CRCs of its input, and `decode_records`
//! builds a whole frame around its input as the uncompressed records.

use flow_batch::wire::{ChunkDecoder, ChunkEncoder, DecodeLimits, decode_header};

/// Bytes of the header before the host identity (`docs/wire-format.md`).
const FIXED: usize = 70;
/// Bytes of the completeness block a version 2 header has after the host when its
/// flag (`0x02`) is set.
const COMPLETENESS: usize = 65;

/// The limits the fuzz targets decode with: the defaults, but 1 MiB of payload rather
/// than 64 MiB, so that a 100-byte input announcing 64 MiB does not make every run
/// clear 64 MiB (the checks are the same comparisons whatever the limit). The defaults
/// are exercised too, by `decode_header`.
pub fn fuzz_limits() -> DecodeLimits {
    DecodeLimits::default()
        .with_max_raw_len(1 << 20)
        .with_max_payload_len(1 << 20)
}

fn put_u32(frame: &mut [u8], at: usize, value: u32) {
    frame[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// `data` with its header checksum, and its payload checksum when the payload is
/// all there, rewritten to match; unchanged when it is too short to hold a header.
pub fn resealed(data: &[u8]) -> Vec<u8> {
    let mut frame = data.to_vec();
    if frame.len() < FIXED {
        return frame;
    }
    let host_len = usize::from(u16::from_le_bytes([frame[68], frame[69]]));
    let version = u16::from_le_bytes([frame[4], frame[5]]);
    let block = if version >= 2 && frame[7] & 0x02 != 0 {
        COMPLETENESS
    } else {
        0
    };
    let crc_at = FIXED + host_len + block;
    if frame.len() < crc_at + 4 {
        return frame;
    }
    let payload_len = u32::from_le_bytes([frame[60], frame[61], frame[62], frame[63]]) as usize;
    if let Some(payload) = frame.get(crc_at + 4..).filter(|p| p.len() >= payload_len) {
        let crc = crc32c::crc32c(&payload[..payload_len]);
        put_u32(&mut frame, 64, crc);
    }
    let crc = crc32c::crc32c(&frame[..crc_at]);
    put_u32(&mut frame, crc_at, crc);
    frame
}

/// A consistent frame whose records are `data[1..]`, uncompressed, with a record
/// count of `data[0] & 0x7f` (0 to 127), compressed and sealed as the encoder would:
/// a version 2 frame, or a version 1 frame when bit 7 of `data[0]` is set (so both
/// record decoders are reached).
pub fn records_frame(data: &[u8]) -> Vec<u8> {
    let (first, raw) = match data.split_first() {
        Some((first, raw)) => (*first, raw),
        None => (0, data),
    };
    let count = u32::from(first & 0x7f);
    let version: u16 = if first & 0x80 != 0 { 1 } else { 2 };
    let host = b"fuzz-host";
    let mut frame = vec![0; FIXED];
    frame[..4].copy_from_slice(b"FXCB");
    frame[4..6].copy_from_slice(&version.to_le_bytes());
    frame[6] = 1; // zstd
    frame[7] = 1; // last
    frame[32..40].copy_from_slice(&1_700_000_000_000u64.to_le_bytes());
    frame[40..48].copy_from_slice(&1_700_000_060_000u64.to_le_bytes());
    put_u32(&mut frame, 52, count);
    put_u32(&mut frame, 56, raw.len() as u32);
    frame[68..70].copy_from_slice(&(host.len() as u16).to_le_bytes());
    frame.extend_from_slice(host);
    frame.extend_from_slice(&[0; 4]);
    let payload = zstd::bulk::compress(raw, 1).expect("zstd compresses any input");
    put_u32(&mut frame, 60, payload.len() as u32);
    frame.extend_from_slice(&payload);
    resealed(&frame)
}

/// Decodes `frame` with `decoder` (built with [`fuzz_limits`]) and `decode_header`
/// (with the defaults and with [`fuzz_limits`]). None may panic; a frame that decodes
/// must agree with its header and encode again to the same records, which `checker`
/// (built with the default limits) decodes.
pub fn check(frame: &[u8], decoder: &mut ChunkDecoder, checker: &mut ChunkDecoder) {
    let header_default = decode_header(frame, &DecodeLimits::default());
    let header = decode_header(frame, &fuzz_limits());
    if let Ok(h) = &header {
        // Tighter limits accept a subset of what the defaults accept.
        assert_eq!(header_default.as_ref().ok(), Some(h));
        assert!(h.header_len() <= frame.len());
    }

    let Ok(decoded) = decoder.decode(frame) else {
        return;
    };
    let h = header.expect("decode accepted a frame whose header decode_header rejects");
    assert_eq!(h, decoded.header);
    assert_eq!(h.frame_len(), frame.len());
    assert_eq!(decoded.records.len(), h.record_count as usize);

    // Whatever decodes, encodes again to the same records and header fields.
    let mut encoder = ChunkEncoder::new(h.host.clone(), h.instance)
        .expect("a decoded host identity is a valid one");
    let again = encoder
        .encode_to_vec(&decoded.clone().into_chunk())
        .expect("a decoded chunk encodes");
    let again = checker.decode(&again).expect("a re-encoded frame decodes");
    assert_eq!(again.records, decoded.records);
    assert_eq!(again.completeness, decoded.completeness);
    let a = &again.header;
    assert_eq!(
        (a.last, a.instance, a.sequence, a.window, a.chunk_index),
        (h.last, h.instance, h.sequence, h.window, h.chunk_index)
    );
    assert_eq!(
        (a.record_count, &a.host, a.completeness),
        (h.record_count, &h.host, h.completeness)
    );
    // The encoder writes the newest version: the same payload only from the same
    // version (version 1 records are shorter).
    if h.version == a.version {
        assert_eq!(a.raw_len, h.raw_len);
    }
}
