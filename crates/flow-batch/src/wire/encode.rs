//! Encoding a chunk into a frame.

use std::io::Cursor;

use super::{
    ChunkHeader, Codec, InstanceId,
    header::{
        COMPLETENESS_LEN, FIXED_HEADER_LEN, FORMAT_VERSION, HEADER_CRC_LEN, MAX_HOST_LEN,
        write_header,
    },
    record::encode_record,
};
use crate::{chunk::Chunk, error::BatchError};

/// Default zstd level: 1, zstd's fastest standard level. Level 3 (zstd's default)
/// shrinks flow records by only a few percent more at about 1.5 times the CPU.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

/// What a [`ChunkEncoder`] has produced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EncoderCounters {
    /// Frames encoded.
    pub chunks: u64,
    /// Records encoded.
    pub records: u64,
    /// Payload bytes before compression.
    pub raw_bytes: u64,
    /// Frame bytes written, headers included.
    pub wire_bytes: u64,
}

/// Encodes chunks into frames for one exporter run (one host identity, one instance).
///
/// It keeps its zstd context and its record buffer from one chunk to the next, so
/// encoding allocates nothing per record and, once warmed up, nothing per chunk beyond
/// growing the caller's output buffer.
pub struct ChunkEncoder {
    host: String,
    instance: InstanceId,
    compressor: zstd::bulk::Compressor<'static>,
    raw: Vec<u8>,
    counters: EncoderCounters,
}

impl std::fmt::Debug for ChunkEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkEncoder")
            .field("host", &self.host)
            .field("instance", &self.instance)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl ChunkEncoder {
    /// An encoder at [`DEFAULT_ZSTD_LEVEL`]. `host` is the host identity: non-empty, at
    /// most [`MAX_HOST_LEN`] bytes.
    pub fn new(host: impl Into<String>, instance: InstanceId) -> Result<ChunkEncoder, BatchError> {
        ChunkEncoder::with_level(host, instance, DEFAULT_ZSTD_LEVEL)
    }

    /// An encoder at zstd level `level` (zstd's range, e.g. 1 to 22; negative levels are
    /// faster still).
    pub fn with_level(
        host: impl Into<String>,
        instance: InstanceId,
        level: i32,
    ) -> Result<ChunkEncoder, BatchError> {
        let host = host.into();
        if host.is_empty() {
            return Err(BatchError::InvalidHost {
                len: 0,
                reason: "must not be empty",
            });
        }
        if host.len() > MAX_HOST_LEN {
            return Err(BatchError::InvalidHost {
                len: host.len(),
                reason: "must be at most 1024 bytes",
            });
        }
        if !zstd::compression_level_range().contains(&level) {
            return Err(BatchError::InvalidConfig {
                key: "zstd_level",
                value: level.to_string(),
                reason: "outside zstd's range of levels",
            });
        }
        let compressor = zstd::bulk::Compressor::new(level).map_err(|source| BatchError::Zstd {
            operation: "set up a compression context",
            source,
        })?;
        Ok(ChunkEncoder {
            host,
            instance,
            compressor,
            raw: Vec::new(),
            counters: EncoderCounters::default(),
        })
    }

    /// The host identity written into every header.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The exporter instance written into every header.
    pub fn instance(&self) -> InstanceId {
        self.instance
    }

    /// What this encoder has produced so far.
    pub fn counters(&self) -> EncoderCounters {
        self.counters
    }

    /// Appends the frame of `chunk` (format version [`FORMAT_VERSION`], with the
    /// chunk's [`completeness`](Chunk::completeness) in the header) to `out` and returns
    /// its header.
    ///
    /// Fails for a record the format cannot carry, and for a completeness on a chunk
    /// that is not its window's last ([`BatchError::InvalidChunk`]). On error `out` is
    /// left as it was.
    pub fn encode(&mut self, chunk: &Chunk, out: &mut Vec<u8>) -> Result<ChunkHeader, BatchError> {
        let start = out.len();
        let result = self.encode_at(chunk, out, start);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// The frame of `chunk` in a new buffer.
    pub fn encode_to_vec(&mut self, chunk: &Chunk) -> Result<Vec<u8>, BatchError> {
        let mut out = Vec::new();
        self.encode(chunk, &mut out)?;
        Ok(out)
    }

    fn encode_at(
        &mut self,
        chunk: &Chunk,
        out: &mut Vec<u8>,
        start: usize,
    ) -> Result<ChunkHeader, BatchError> {
        if chunk.completeness.is_some() && !chunk.last {
            return Err(BatchError::InvalidChunk {
                field: "completeness",
                reason: "only a window's last chunk carries its completeness",
            });
        }
        let record_count = to_u32("record_count", chunk.records.len())?;
        self.raw.clear();
        for (index, record) in chunk.records.iter().enumerate() {
            encode_record(record, &mut self.raw)
                .map_err(|source| BatchError::RecordEncode { index, source })?;
        }
        let raw_len = to_u32("raw_len", self.raw.len())?;

        let block_len = if chunk.completeness.is_some() {
            COMPLETENESS_LEN
        } else {
            0
        };
        let header_len = FIXED_HEADER_LEN + self.host.len() + block_len + HEADER_CRC_LEN;
        let payload_at = start + header_len;
        out.resize(payload_at, 0);
        out.reserve(zstd::compress_bound(self.raw.len()));
        let mut cursor = Cursor::new(&mut *out);
        cursor.set_position(payload_at as u64);
        self.compressor
            .compress_to_buffer(&self.raw, &mut cursor)
            .map_err(|source| BatchError::Zstd {
                operation: "compress a chunk",
                source,
            })?;
        let payload = &out[payload_at..];
        let payload_len = to_u32("payload_len", payload.len())?;

        let header = ChunkHeader {
            version: FORMAT_VERSION,
            codec: Codec::Zstd,
            last: chunk.last,
            instance: self.instance,
            sequence: chunk.sequence,
            window: chunk.window,
            chunk_index: chunk.index,
            record_count,
            raw_len,
            payload_len,
            payload_crc32c: crc32c::crc32c(payload),
            host: self.host.clone(),
            completeness: chunk.completeness,
        };
        write_header(&mut out[start..payload_at], &header);

        self.counters.chunks += 1;
        self.counters.records += u64::from(record_count);
        self.counters.raw_bytes += u64::from(raw_len);
        self.counters.wire_bytes += (out.len() - start) as u64;
        Ok(header)
    }
}

fn to_u32(field: &'static str, value: usize) -> Result<u32, BatchError> {
    u32::try_from(value).map_err(|_| BatchError::EncodeLimit {
        field,
        value: value as u64,
        max: u64::from(u32::MAX),
    })
}
