//! The crate's one error type.

use std::io;

use flow_record::FlowRecord;

/// Everything that can go wrong in `flow-batch`: configuration, encoding and decoding.
///
/// Decoding variants name the field that was wrong and its byte offset in the input
/// (offsets of records are into the decompressed payload), so a collector can log
/// exactly what it rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// A configuration value is out of range.
    #[error("invalid batch configuration: `{key}` = {value}: {reason}")]
    InvalidConfig {
        /// The configuration key, as the field of [`BatchConfig`](crate::BatchConfig).
        key: &'static str,
        /// The rejected value, printed.
        value: String,
        /// What the value must be instead.
        reason: &'static str,
    },

    /// A pushed record cannot be encoded in the wire format (a time before the Unix
    /// epoch, or at or after 10000-01-01T00:00:00Z). It was not buffered; it is handed back here and counted in
    /// [`BatchCounters::records_rejected`](crate::BatchCounters::records_rejected).
    #[error("flow record {} -> {} cannot be encoded", .record.local, .record.remote)]
    UnencodableRecord {
        /// The record, handed back to the caller.
        record: Box<FlowRecord>,
        /// Why the encoder refused it.
        #[source]
        source: bincode::Error,
    },

    /// The host identity given to the encoder is empty or too long.
    #[error("invalid host identity ({len} bytes): {reason}")]
    InvalidHost {
        /// Its length in bytes.
        len: usize,
        /// What it must be instead.
        reason: &'static str,
    },

    /// A record of a hand-built chunk cannot be encoded.
    #[error("record {index} of the chunk cannot be encoded")]
    RecordEncode {
        /// Its position in the chunk.
        index: usize,
        /// Why the encoder refused it.
        #[source]
        source: bincode::Error,
    },

    /// A hand-built chunk holds something the format cannot carry: a
    /// [`Completeness`](crate::Completeness) on a chunk that is not its window's last.
    #[error("chunk cannot be encoded: {field}: {reason}")]
    InvalidChunk {
        /// The chunk's field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A chunk is too large for a field of the header.
    #[error("chunk too large to encode: {field} is {value}, at most {max}")]
    EncodeLimit {
        /// The header field that cannot hold the value.
        field: &'static str,
        /// The value.
        value: u64,
        /// The largest value the field holds.
        max: u64,
    },

    /// zstd failed to set up a context or to compress.
    #[error("zstd failed to {operation}")]
    Zstd {
        /// What zstd was asked to do.
        operation: &'static str,
        /// The error zstd reported.
        #[source]
        source: io::Error,
    },

    /// The input ends before a field does.
    #[error(
        "input truncated in {field} at offset {offset}: {needed} bytes needed, {available} available"
    )]
    Truncated {
        /// The field that is cut off.
        field: &'static str,
        /// Where the field starts.
        offset: usize,
        /// Bytes the field needs from `offset` on.
        needed: usize,
        /// Bytes the input has from `offset` on.
        available: usize,
    },

    /// The input does not start with the chunk magic.
    #[error("not a flow chunk: magic at offset 0 is {found:02x?}")]
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },

    /// The format version is not one this decoder reads.
    #[error(
        "unsupported wire format version {found} at offset 4 (this decoder reads versions 1 to {supported})"
    )]
    UnsupportedVersion {
        /// The version in the input.
        found: u16,
        /// The newest version this decoder reads (it reads every version from
        /// [`MIN_FORMAT_VERSION`](crate::wire::MIN_FORMAT_VERSION) to this one).
        supported: u16,
    },

    /// The header's CRC-32C does not match the header bytes.
    #[error(
        "header checksum mismatch at offset {offset}: stored {stored:#010x}, computed {computed:#010x}"
    )]
    HeaderChecksum {
        /// Where the stored checksum is.
        offset: usize,
        /// The checksum in the input.
        stored: u32,
        /// The checksum of the bytes received.
        computed: u32,
    },

    /// The payload's CRC-32C does not match the payload bytes.
    #[error(
        "payload checksum mismatch for the payload at offset {offset}: stored {stored:#010x}, computed {computed:#010x}"
    )]
    PayloadChecksum {
        /// Where the payload starts.
        offset: usize,
        /// The checksum in the header.
        stored: u32,
        /// The checksum of the bytes received.
        computed: u32,
    },

    /// A header field (with a valid checksum) holds a value the format does not allow.
    #[error("invalid header field {field} at offset {offset}: {reason}")]
    InvalidHeader {
        /// The field.
        field: &'static str,
        /// Where the field is.
        offset: usize,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A header field announces more than the decoder's limits allow.
    #[error("{field} at offset {offset} is {value}, above the limit of {max}")]
    LimitExceeded {
        /// The field.
        field: &'static str,
        /// Where the field is.
        offset: usize,
        /// The value announced.
        value: u64,
        /// The configured limit.
        max: u64,
    },

    /// zstd failed to decompress the payload (corrupt, or larger than announced).
    #[error("zstd decompression failed for the payload at offset {offset}")]
    Decompression {
        /// Where the payload starts.
        offset: usize,
        /// The error zstd reported.
        #[source]
        source: io::Error,
    },

    /// The payload decompressed to fewer bytes than the header announced.
    #[error("payload decompressed to {actual} bytes, header announced {expected}")]
    DecompressedLength {
        /// `raw_len` from the header.
        expected: usize,
        /// Bytes decompressed.
        actual: usize,
    },

    /// A record in the decompressed payload does not decode.
    #[error("record {index} at offset {offset} of the decompressed payload does not decode")]
    RecordDecode {
        /// Its position in the chunk.
        index: u32,
        /// Where it starts in the decompressed payload.
        offset: usize,
        /// Why bincode refused it.
        #[source]
        source: bincode::Error,
    },

    /// A field of a record that bincode does not read (the record kind, flow ID and
    /// process of version 2) holds a value the format does not allow, or the payload
    /// ends inside it.
    #[error("record {index}: {field} at offset {offset} of the decompressed payload: {reason}")]
    InvalidRecord {
        /// The record's position in the chunk.
        index: u32,
        /// Where the offending bytes start in the decompressed payload.
        offset: usize,
        /// `record_kind`, `flow_id`, `process`, `process.pid`, `process.cgroup_id` or
        /// `process.comm`.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The payload is not one zstd frame of the form the format allows: it must start
    /// with the zstd frame magic (a skippable frame is refused), carry its content
    /// size, equal to `raw_len`, and have neither a dictionary ID nor a content
    /// checksum. Bytes after the first frame are [`TrailingBytes`](BatchError::TrailingBytes)
    /// instead.
    #[error("payload at offset {offset} is not a zstd frame this format allows: {reason}")]
    ZstdFrame {
        /// Where the offending part starts: the payload, or its frame header
        /// descriptor.
        offset: usize,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A record's time is one the format does not allow: nanoseconds of 10^9 or more
    /// (one time would have two encodings), or a time at or after
    /// 10000-01-01T00:00:00Z ([`TIME_LIMIT_SECS`](crate::wire::TIME_LIMIT_SECS)), which
    /// RFC 3339 cannot write.
    #[error(
        "record {index}: {field} = {seconds} s + {nanos} ns at offset {offset} of the decompressed payload: {reason}"
    )]
    InvalidTime {
        /// The record's position in the chunk.
        index: u32,
        /// Where the time (its seconds) starts in the decompressed payload.
        offset: usize,
        /// `t_start` or `t_end`.
        field: &'static str,
        /// Its seconds since the epoch, as sent.
        seconds: u64,
        /// Its nanoseconds, as sent.
        nanos: u32,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// Bytes are left over after the last record or after the frame.
    #[error("{count} unexpected bytes after the {region} at offset {offset}")]
    TrailingBytes {
        /// `frame` (input longer than the header says), `zstd frame` (payload longer
        /// than its first zstd frame) or `records` (decompressed payload longer than
        /// its records).
        region: &'static str,
        /// Where the extra bytes start.
        offset: usize,
        /// How many there are.
        count: usize,
    },
}
