//! The chunk wire format: what an exporter sends and a collector reads.
//!
//! A frame is a header followed by the payload: the chunk's records, each encoded as
//! bincode 1 encodes them (fixed-size little-endian integers; written by
//! [`encode_record`], read by [`decode_record`]), concatenated and compressed with
//! zstd. The header carries the batch ID (host, exporter instance, sequence), the
//! window, the record count, both lengths of the payload, a CRC-32C of the payload,
//! on a window's last chunk its [`Completeness`], and a CRC-32C
//! of the header itself. `docs/wire-format.md` gives the byte-exact layout.
//!
//! The encoder writes version 2 ([`FORMAT_VERSION`]); the decoder reads versions 1 and
//! 2. A version 1 record lacks the record kind, flow ID and process: it decodes as a
//! final record without them.
//!
//! CRC-32C (Castagnoli) rather than the IEEE CRC-32 of zip: it detects more error
//! patterns at these lengths, x86-64 (SSE 4.2) and ARMv8 compute it in hardware, and
//! it is what Kafka record batches, ext4 and iSCSI use, so every language a collector
//! might be written in has it (Go's `hash/crc32` Castagnoli table, Java's
//! `java.util.zip.CRC32C`, Python's `crc32c`).
//!
//! A frame travels to a collector in an HTTP `POST` to [`CHUNKS_PATH`] with
//! [`CHUNK_CONTENT_TYPE`]; the collector may answer with [`RESULT_HEADER`]
//! (`docs/collector-protocol.md`).

mod decode;
mod encode;
mod header;
mod protocol;
mod record;
mod record_decode;

use std::fmt;

use bincode::Options;

pub use decode::{ChunkDecoder, DecodeLimits, DecodedChunk, decode_header, verify_frame};
pub use encode::{ChunkEncoder, DEFAULT_ZSTD_LEVEL, EncoderCounters};
pub use header::{
    COMPLETENESS_FLAG_WHOLE_WINDOW, COMPLETENESS_LEN, FIXED_HEADER_LEN, FLAG_COMPLETENESS,
    FLAG_LAST, FORMAT_VERSION, HEADER_CRC_LEN, MAGIC, MAX_HEADER_LEN, MAX_HOST_LEN,
    MIN_FORMAT_VERSION,
};
pub use protocol::{CHUNK_CONTENT_TYPE, CHUNKS_PATH, RESULT_HEADER};
pub use record::{encode_record, encoded_record_len};
pub use record_decode::decode_record;

use crate::{completeness::Completeness, window::Window};

/// The fewest bytes a version 2 record encodes to (IPv4 addresses, no start time, no
/// workload, no errno, a 4-byte identity source, no flow ID, no process); a decoder
/// uses it to reject record counts the payload cannot hold.
pub const MIN_RECORD_LEN: usize = MIN_RECORD_LEN_V1 + 4 + 1 + 1;

/// The fewest bytes a version 1 record encodes to: [`MIN_RECORD_LEN`] without the
/// record kind (4 bytes) and the flow ID and process tags (1 byte each).
pub const MIN_RECORD_LEN_V1: usize = 92;

/// The fewest bytes a record of format `version` encodes to ([`MIN_RECORD_LEN_V1`]
/// for version 1, [`MIN_RECORD_LEN`] from version 2 on).
pub fn min_record_len(version: u16) -> usize {
    if version <= 1 {
        MIN_RECORD_LEN_V1
    } else {
        MIN_RECORD_LEN
    }
}

/// The first second since the Unix epoch a record time cannot reach:
/// 10000-01-01T00:00:00Z. Every time a record carries lies before it, so every decoded
/// record can be written in RFC 3339, whose years have four digits. The encoder refuses
/// later times and the decoder rejects them
/// ([`BatchError::InvalidTime`](crate::BatchError::InvalidTime)).
pub const TIME_LIMIT_SECS: u64 = 253_402_300_800;

/// How the payload is compressed (the header's `codec` byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// Exactly one zstd frame, with its content size and without a dictionary or a
    /// content checksum (codec byte 1).
    Zstd,
}

impl Codec {
    /// The header byte.
    pub fn as_u8(self) -> u8 {
        match self {
            Codec::Zstd => 1,
        }
    }

    /// The codec of a header byte, if known.
    pub fn from_u8(b: u8) -> Option<Codec> {
        match b {
            1 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

/// Identifies one run of an exporter: a new value on every start, so that sequence
/// numbers, which restart at 0, never repeat within one instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(u128);

impl InstanceId {
    /// Wraps a 128-bit value.
    pub fn new(id: u128) -> InstanceId {
        InstanceId(id)
    }

    /// A fresh identifier: 128 random bits from the operating system (`getrandom(2)`
    /// through the `getrandom` crate). Unique with overwhelming probability; not a
    /// secret.
    ///
    /// Should the OS refuse randomness (a seccomp filter that denies both `getrandom`
    /// and `/dev/urandom`), the identifier is the process ID above the wall clock's
    /// nanoseconds instead: still new on every start of one host, as long as its
    /// clock does not step back.
    pub fn random() -> InstanceId {
        let mut bytes = [0u8; 16];
        match getrandom::fill(&mut bytes) {
            Ok(()) => InstanceId(u128::from_le_bytes(bytes)),
            Err(_) => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                InstanceId((u128::from(std::process::id()) << 96) ^ nanos)
            }
        }
    }

    /// The 128-bit value.
    pub fn as_u128(self) -> u128 {
        self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// What a collector deduplicates on: a retried chunk carries the same batch ID.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId {
    /// The host identity.
    pub host: String,
    /// The exporter run.
    pub instance: InstanceId,
    /// The chunk's sequence number within the run.
    pub sequence: u64,
}

/// The text form of a batch ID, as logs and collector answers print it:
/// `<host>/<instance as 32 lowercase hex digits>/<sequence in decimal>`, e.g.
/// `node-3/000000000000000000000000000000ab/42`. The host may itself contain `/`; the
/// last two fields have a fixed form (32 hex digits; decimal digits only), so the
/// host is everything before the second-to-last `/`.
impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.host, self.instance, self.sequence)
    }
}

/// A decoded frame header (see `docs/wire-format.md`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChunkHeader {
    /// Format version: [`FORMAT_VERSION`] from the encoder, [`MIN_FORMAT_VERSION`] to
    /// [`FORMAT_VERSION`] from the decoder.
    pub version: u16,
    /// Payload compression.
    pub codec: Codec,
    /// Whether this is its window's final chunk.
    pub last: bool,
    /// The exporter run that sent it.
    pub instance: InstanceId,
    /// Sequence number within the run.
    pub sequence: u64,
    /// The chunk's window.
    pub window: Window,
    /// Position of the chunk within its window.
    pub chunk_index: u32,
    /// Records in the payload.
    pub record_count: u32,
    /// Payload length after decompression.
    pub raw_len: u32,
    /// Payload length on the wire (compressed).
    pub payload_len: u32,
    /// CRC-32C of the payload as sent.
    pub payload_crc32c: u32,
    /// The host identity.
    pub host: String,
    /// The window's completeness, on its last chunk ([`FLAG_COMPLETENESS`]; version 2
    /// on). Always `None` in a version 1 header.
    pub completeness: Option<Completeness>,
}

impl ChunkHeader {
    /// Length of the header in bytes, its completeness block and checksum included.
    pub fn header_len(&self) -> usize {
        let block = if self.completeness.is_some() {
            COMPLETENESS_LEN
        } else {
            0
        };
        FIXED_HEADER_LEN + self.host.len() + block + HEADER_CRC_LEN
    }

    /// Length of the whole frame: header and payload.
    pub fn frame_len(&self) -> usize {
        self.header_len() + self.payload_len as usize
    }

    /// The batch ID a collector deduplicates on.
    pub fn batch_id(&self) -> BatchId {
        BatchId {
            host: self.host.clone(),
            instance: self.instance,
            sequence: self.sequence,
        }
    }
}

/// The bincode configuration of records: fixed-size integers, little-endian, records
/// concatenated (so trailing bytes are allowed per record and checked per payload).
/// The decoder's, and the encoder's for records [`encode_record`] leaves to bincode.
fn record_options() -> impl Options + Copy {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .allow_trailing_bytes()
}
