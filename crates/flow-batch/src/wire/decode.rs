//! Decoding and verifying a frame. Nothing here panics or allocates more than the
//! limits allow, whatever the input.

use flow_record::FlowRecord;

use super::{
    ChunkHeader, Codec, InstanceId,
    header::{
        COMPLETENESS_LEN, FIXED_HEADER_LEN, FLAG_COMPLETENESS, FLAG_LAST, FORMAT_VERSION, Fixed,
        HEADER_CRC_LEN, MAGIC, MAX_HOST_LEN, MIN_FORMAT_VERSION, offset, read_completeness,
    },
    min_record_len,
    record_decode::decode_at,
};
use crate::{chunk::Chunk, completeness::Completeness, error::BatchError, window::Window};

/// How much a decoder accepts. A header announcing more is rejected before anything
/// is decompressed or allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecodeLimits {
    /// Largest payload on the wire (compressed). Default 64 MiB.
    pub max_payload_len: usize,
    /// Largest payload after decompression. Default 64 MiB: an exporter's `max_bytes`
    /// (default 4 MiB) must not exceed it.
    pub max_raw_len: usize,
    /// Most records in one chunk. Default 1,048,576 (the batcher's largest
    /// `max_records`).
    pub max_records: usize,
}

impl Default for DecodeLimits {
    fn default() -> DecodeLimits {
        DecodeLimits {
            max_payload_len: 64 << 20,
            max_raw_len: 64 << 20,
            max_records: crate::config::MAX_RECORDS_LIMIT,
        }
    }
}

impl DecodeLimits {
    /// Sets [`max_payload_len`](DecodeLimits::max_payload_len).
    pub fn with_max_payload_len(mut self, max: usize) -> DecodeLimits {
        self.max_payload_len = max;
        self
    }

    /// Sets [`max_raw_len`](DecodeLimits::max_raw_len).
    pub fn with_max_raw_len(mut self, max: usize) -> DecodeLimits {
        self.max_raw_len = max;
        self
    }

    /// Sets [`max_records`](DecodeLimits::max_records).
    pub fn with_max_records(mut self, max: usize) -> DecodeLimits {
        self.max_records = max;
        self
    }
}

/// A verified, decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecodedChunk {
    /// Its header.
    pub header: ChunkHeader,
    /// Its records, in the order they were encoded. Records of a version 1 frame are
    /// final and carry no flow ID or process.
    pub records: Vec<FlowRecord>,
    /// The window's completeness, when this is its last chunk and the exporter sent it
    /// (version 2 on; the same as `header.completeness`).
    pub completeness: Option<Completeness>,
}

impl DecodedChunk {
    /// The chunk as the batcher emitted it, with its completeness (the host and
    /// instance are dropped).
    pub fn into_chunk(self) -> Chunk {
        let h = self.header;
        let mut chunk = Chunk::new(h.window, h.chunk_index, h.sequence, h.last, self.records);
        chunk.completeness = self.completeness;
        chunk
    }
}

/// Checks that `bytes` is exactly one frame whose header and payload checksums match,
/// without decompressing or decoding the payload; returns the header.
///
/// What stores frames it wrote itself (a spool) can check them this cheaply; the
/// payload's own structure is checked by [`ChunkDecoder::decode`] (which starts with
/// this) on the receiving side.
pub fn verify_frame(bytes: &[u8], limits: &DecodeLimits) -> Result<ChunkHeader, BatchError> {
    let header = decode_header(bytes, limits)?;
    let header_len = header.header_len();
    let frame_len = header.frame_len();
    let Some(payload) = bytes.get(header_len..frame_len) else {
        return Err(BatchError::Truncated {
            field: "payload",
            offset: header_len,
            needed: header.payload_len as usize,
            available: bytes.len().saturating_sub(header_len),
        });
    };
    if bytes.len() > frame_len {
        return Err(BatchError::TrailingBytes {
            region: "frame",
            offset: frame_len,
            count: bytes.len() - frame_len,
        });
    }
    let computed = crc32c::crc32c(payload);
    if computed != header.payload_crc32c {
        return Err(BatchError::PayloadChecksum {
            offset: header_len,
            stored: header.payload_crc32c,
            computed,
        });
    }
    Ok(header)
}

/// Reads and verifies the header at the start of `bytes` (its checksum, its fields
/// and `limits`); the payload need not be there yet. [`ChunkHeader::frame_len`] then
/// tells how long the whole frame is.
pub fn decode_header(bytes: &[u8], limits: &DecodeLimits) -> Result<ChunkHeader, BatchError> {
    let truncated = |field, offset: usize, needed| BatchError::Truncated {
        field,
        offset,
        needed,
        available: bytes.len().saturating_sub(offset),
    };
    let Some(magic) = bytes.first_chunk::<4>() else {
        if MAGIC.starts_with(bytes) {
            return Err(truncated("magic", offset::MAGIC, MAGIC.len()));
        }
        let mut found = [0; 4];
        found[..bytes.len()].copy_from_slice(bytes);
        return Err(BatchError::BadMagic { found });
    };
    if *magic != MAGIC {
        return Err(BatchError::BadMagic { found: *magic });
    }
    let Some(version) = bytes.get(offset::VERSION..offset::VERSION + 2) else {
        return Err(truncated("version", offset::VERSION, 2));
    };
    let version = u16::from_le_bytes([version[0], version[1]]);
    if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(BatchError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let Some(fixed) = bytes.first_chunk::<FIXED_HEADER_LEN>() else {
        return Err(truncated("header", 0, FIXED_HEADER_LEN));
    };
    let fixed = Fixed(fixed);

    let host_len = usize::from(fixed.u16(offset::HOST_LEN));
    if host_len > MAX_HOST_LEN {
        return Err(BatchError::LimitExceeded {
            field: "host_len",
            offset: offset::HOST_LEN,
            value: host_len as u64,
            max: MAX_HOST_LEN as u64,
        });
    }
    // The flags say whether a completeness block sits between the host and the
    // checksum; the checksum covers them, so a damaged flags byte fails it.
    let flags = fixed.u8(offset::FLAGS);
    let block_at = offset::HOST + host_len;
    let has_completeness = version >= 2 && flags & FLAG_COMPLETENESS != 0;
    let crc_at = if has_completeness {
        block_at + COMPLETENESS_LEN
    } else {
        block_at
    };
    let Some(stored) = bytes.get(crc_at..crc_at + HEADER_CRC_LEN) else {
        let field = if has_completeness {
            "host, completeness and header checksum"
        } else {
            "host and header checksum"
        };
        return Err(truncated(
            field,
            offset::HOST,
            crc_at + HEADER_CRC_LEN - offset::HOST,
        ));
    };
    let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    let computed = crc32c::crc32c(&bytes[..crc_at]);
    if stored != computed {
        return Err(BatchError::HeaderChecksum {
            offset: crc_at,
            stored,
            computed,
        });
    }

    // The header is intact: what follows checks what its sender wrote.
    let invalid = |field, offset, reason| BatchError::InvalidHeader {
        field,
        offset,
        reason,
    };
    let Some(codec) = Codec::from_u8(fixed.u8(offset::CODEC)) else {
        return Err(invalid("codec", offset::CODEC, "unknown codec"));
    };
    let known_flags = if version >= 2 {
        FLAG_LAST | FLAG_COMPLETENESS
    } else {
        FLAG_LAST
    };
    if flags & !known_flags != 0 {
        return Err(invalid("flags", offset::FLAGS, "reserved bits are set"));
    }
    if has_completeness && flags & FLAG_LAST == 0 {
        return Err(invalid(
            "flags",
            offset::FLAGS,
            "completeness on a chunk that is not its window's last",
        ));
    }
    let host = match std::str::from_utf8(&bytes[offset::HOST..block_at]) {
        Ok("") => return Err(invalid("host_len", offset::HOST_LEN, "empty host identity")),
        Ok(host) => host.to_owned(),
        Err(_) => return Err(invalid("host", offset::HOST, "not UTF-8")),
    };
    let Some(window) = Window::from_millis(
        fixed.u64(offset::WINDOW_START),
        fixed.u64(offset::WINDOW_END),
    ) else {
        return Err(invalid(
            "window_end",
            offset::WINDOW_END,
            "not after window_start",
        ));
    };
    let completeness = match bytes[block_at..crc_at].first_chunk::<COMPLETENESS_LEN>() {
        Some(block) if has_completeness => match read_completeness(block) {
            Ok(c) => Some(c),
            Err((at, reason)) => return Err(invalid("completeness flags", block_at + at, reason)),
        },
        _ => None,
    };
    let record_count = fixed.u32(offset::RECORD_COUNT);
    let raw_len = fixed.u32(offset::RAW_LEN);
    let payload_len = fixed.u32(offset::PAYLOAD_LEN);
    for (field, at, value, max) in [
        (
            "record_count",
            offset::RECORD_COUNT,
            record_count,
            limits.max_records,
        ),
        ("raw_len", offset::RAW_LEN, raw_len, limits.max_raw_len),
        (
            "payload_len",
            offset::PAYLOAD_LEN,
            payload_len,
            limits.max_payload_len,
        ),
    ] {
        if value as usize > max {
            return Err(BatchError::LimitExceeded {
                field,
                offset: at,
                value: u64::from(value),
                max: max as u64,
            });
        }
    }
    if u64::from(record_count) * min_record_len(version) as u64 > u64::from(raw_len) {
        return Err(invalid(
            "record_count",
            offset::RECORD_COUNT,
            "more records than raw_len bytes can hold",
        ));
    }
    if payload_len as usize > zstd::compress_bound(raw_len as usize) {
        return Err(invalid(
            "payload_len",
            offset::PAYLOAD_LEN,
            "larger than any zstd frame of raw_len bytes",
        ));
    }

    Ok(ChunkHeader {
        version,
        codec,
        last: flags & FLAG_LAST != 0,
        instance: InstanceId::new(fixed.u128(offset::INSTANCE)),
        sequence: fixed.u64(offset::SEQUENCE),
        window,
        chunk_index: fixed.u32(offset::CHUNK_INDEX),
        record_count,
        raw_len,
        payload_len,
        payload_crc32c: fixed.u32(offset::PAYLOAD_CRC),
        host,
        completeness,
    })
}

/// Decodes and verifies frames, reusing its zstd context and buffer between frames.
pub struct ChunkDecoder {
    limits: DecodeLimits,
    decompressor: zstd::bulk::Decompressor<'static>,
    raw: Vec<u8>,
}

impl std::fmt::Debug for ChunkDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkDecoder")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl ChunkDecoder {
    /// A decoder that enforces `limits`.
    pub fn new(limits: DecodeLimits) -> Result<ChunkDecoder, BatchError> {
        let decompressor = zstd::bulk::Decompressor::new().map_err(|source| BatchError::Zstd {
            operation: "set up a decompression context",
            source,
        })?;
        Ok(ChunkDecoder {
            limits,
            decompressor,
            raw: Vec::new(),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> &DecodeLimits {
        &self.limits
    }

    /// Decodes `bytes`, which must be exactly one frame.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<DecodedChunk, BatchError> {
        let header = verify_frame(bytes, &self.limits)?;
        let header_len = header.header_len();
        let payload = &bytes[header_len..header.frame_len()];
        let records = self.decode_payload(&header, payload, header_len)?;
        let completeness = header.completeness;
        Ok(DecodedChunk {
            header,
            records,
            completeness,
        })
    }

    fn decode_payload(
        &mut self,
        header: &ChunkHeader,
        payload: &[u8],
        payload_at: usize,
    ) -> Result<Vec<FlowRecord>, BatchError> {
        let raw_len = header.raw_len as usize;
        check_zstd_frame(payload, header.raw_len, payload_at)?;
        self.raw.clear();
        self.raw.resize(raw_len, 0);
        // The output is a slice of exactly raw_len bytes: zstd fails rather than write
        // past it, so a frame that inflates further costs nothing.
        let written = self
            .decompressor
            .decompress_to_buffer(payload, &mut self.raw[..])
            .map_err(|source| BatchError::Decompression {
                offset: payload_at,
                source,
            })?;
        if written != raw_len {
            return Err(BatchError::DecompressedLength {
                expected: raw_len,
                actual: written,
            });
        }

        // record_count <= raw_len / min_record_len(version) (checked with the header),
        // so this allocation is bounded by max_raw_len.
        let mut records = Vec::with_capacity(header.record_count as usize);
        let mut at = 0;
        for index in 0..header.record_count {
            let rest = self.raw.get(at..).unwrap_or_default();
            let (record, len) = decode_at(rest, header.version, index, at)?;
            records.push(record);
            at += len;
        }
        if at < raw_len {
            return Err(BatchError::TrailingBytes {
                region: "records",
                offset: at,
                count: raw_len - at,
            });
        }
        Ok(records)
    }
}

/// The zstd frame magic number, little-endian (RFC 8878, 3.1.1).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// The content checksum flag of a zstd frame header descriptor.
const ZSTD_CHECKSUM_FLAG: u8 = 0x04;

/// Checks, before decompressing, that `payload` is exactly one zstd frame as the format
/// allows: the frame magic (not a skippable frame), no content checksum, no
/// dictionary, nothing after the frame, and a content size equal to `raw_len` (checked
/// in this order). Only the frame and block headers are read.
///
/// zstd itself would decompress several concatenated frames and skip skippable ones,
/// verify a checksum, and do without a content size; refusing all that gives every
/// payload one form (the one [`ChunkEncoder`](super::ChunkEncoder) writes).
fn check_zstd_frame(payload: &[u8], raw_len: u32, payload_at: usize) -> Result<(), BatchError> {
    let frame_error = |offset, reason| BatchError::ZstdFrame { offset, reason };
    if payload.first_chunk::<4>() != Some(&ZSTD_MAGIC) {
        return Err(frame_error(
            payload_at,
            "does not start with the zstd frame magic 28 b5 2f fd",
        ));
    }
    // The frame header descriptor follows the magic.
    let descriptor_at = payload_at + ZSTD_MAGIC.len();
    let Some(&descriptor) = payload.get(ZSTD_MAGIC.len()) else {
        return Err(frame_error(descriptor_at, "the frame header is cut off"));
    };
    if descriptor & ZSTD_CHECKSUM_FLAG != 0 {
        return Err(frame_error(
            descriptor_at,
            "the content checksum flag is set (the payload CRC-32C covers the payload)",
        ));
    }
    if zstd::zstd_safe::get_dict_id_from_frame(payload).is_some() {
        return Err(frame_error(descriptor_at, "the frame names a dictionary"));
    }
    let frame_len = zstd::zstd_safe::find_frame_compressed_size(payload).map_err(|code| {
        BatchError::Decompression {
            offset: payload_at,
            source: std::io::Error::other(zstd::zstd_safe::get_error_name(code)),
        }
    })?;
    if frame_len < payload.len() {
        return Err(BatchError::TrailingBytes {
            region: "zstd frame",
            offset: payload_at + frame_len,
            count: payload.len() - frame_len,
        });
    }
    match zstd::zstd_safe::get_frame_content_size(payload) {
        Ok(Some(size)) if size == u64::from(raw_len) => {}
        Ok(Some(_)) => {
            return Err(frame_error(
                descriptor_at,
                "the frame's content size differs from raw_len",
            ));
        }
        Ok(None) => {
            return Err(frame_error(
                descriptor_at,
                "the frame does not carry its content size",
            ));
        }
        Err(_) => return Err(frame_error(payload_at, "the frame header is invalid")),
    }
    Ok(())
}
