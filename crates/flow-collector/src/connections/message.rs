//! The message a collector node's intake writes to the connection topic: some of one
//! chunk's records, all of whose connections route to one partition, each with its
//! index in the chunk (so that the flow keeps its ID, `<batch ID>/<index>`, whichever
//! node decides it).
//!
//! Layout (little-endian), version 1:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version (1) |
//! | 2 + n | host ID length, host ID (UTF-8) |
//! | 16 | exporter run (instance ID) |
//! | 8 | chunk sequence number |
//! | 4 | record count |
//! | per record: 4 + 4 + n | index in the chunk, length, the record as wire format 2 encodes it |

use std::sync::Arc;

use flow_batch::wire::{BatchId, FORMAT_VERSION, InstanceId, decode_record, encode_record};
use flow_record::FlowRecord;

/// The version this code writes and reads.
pub const ROUTED_FORMAT_VERSION: u8 = 1;

/// Fewer bytes than any record's wire encoding takes (only sizes reservations).
const MIN_ROUTED_RECORD_LEN: usize = 32;

/// Most records one message may carry (a chunk holds at most this many).
pub const MAX_ROUTED_RECORDS: usize = 1_000_000;

/// Why a connection-topic message could not be read; the offset is from the
/// message's first byte.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoutedDecodeError {
    /// A version this collector does not read.
    #[error("routed records version {0} (this collector reads {ROUTED_FORMAT_VERSION})")]
    Version(u8),
    /// The message ends inside a field.
    #[error("routed records truncated at byte {0}")]
    Truncated(usize),
    /// The host ID is not UTF-8.
    #[error("routed records: the host ID is not UTF-8")]
    Host,
    /// More records than a chunk may hold.
    #[error("routed records: {0} records, more than {MAX_ROUTED_RECORDS}")]
    TooMany(u32),
    /// A record does not decode.
    #[error("routed records: record {index} (byte {offset}): {reason}")]
    Record {
        /// Its index in the chunk.
        index: u32,
        /// Where it starts.
        offset: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Bytes after the last record.
    #[error("routed records: {0} bytes after the last record")]
    Trailing(usize),
}

/// A decoded connection-topic message.
#[derive(Debug, PartialEq)]
pub struct RoutedRecords {
    /// The chunk they came in.
    pub batch: Arc<BatchId>,
    /// Their indices in the chunk, in order.
    pub indices: Vec<u32>,
    /// The records.
    pub records: Vec<FlowRecord>,
}

/// Appends the message for `records` (each with its chunk index) of `batch` to
/// `out`; fails as the wire encoding does (a time before the epoch, ...), in which
/// case `out` is left as it was.
pub fn encode_routed<'a>(
    batch: &BatchId,
    records: impl IntoIterator<Item = (u32, &'a FlowRecord)>,
    out: &mut Vec<u8>,
) -> Result<(), bincode::Error> {
    let start = out.len();
    let result = encode_into(batch, records, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn encode_into<'a>(
    batch: &BatchId,
    records: impl IntoIterator<Item = (u32, &'a FlowRecord)>,
    out: &mut Vec<u8>,
) -> Result<(), bincode::Error> {
    let count_at = write_header(batch, out);
    let mut count: u32 = 0;
    for (index, record) in records {
        append_record(index, record, out)?;
        count += 1;
    }
    set_count(out, count_at, count);
    Ok(())
}

/// Encodes `records` of `batch` as messages of at most `budget` bytes each (a record
/// that alone exceeds it makes a message of its own); returns each message with its
/// record count. Each record is encoded once, and once more only when it starts a
/// new message.
pub fn encode_routed_within<'a>(
    batch: &BatchId,
    records: impl IntoIterator<Item = (u32, &'a FlowRecord)>,
    budget: usize,
) -> Result<Vec<(Vec<u8>, u32)>, bincode::Error> {
    let mut messages = Vec::new();
    let mut out = Vec::new();
    let mut count_at = write_header(batch, &mut out);
    let mut count: u32 = 0;
    for (index, record) in records {
        let before = out.len();
        append_record(index, record, &mut out)?;
        if out.len() > budget && count > 0 {
            out.truncate(before);
            set_count(&mut out, count_at, count);
            messages.push((std::mem::take(&mut out), count));
            count_at = write_header(batch, &mut out);
            count = 0;
            append_record(index, record, &mut out)?;
        }
        count += 1;
    }
    if count > 0 {
        set_count(&mut out, count_at, count);
        messages.push((out, count));
    }
    Ok(messages)
}

/// Appends the header (the record count 0, set later); returns where the count is.
fn write_header(batch: &BatchId, out: &mut Vec<u8>) -> usize {
    out.push(ROUTED_FORMAT_VERSION);
    let host = batch.host.as_bytes();
    let host_len = u16::try_from(host.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&host_len.to_le_bytes());
    out.extend_from_slice(&host[..usize::from(host_len)]);
    out.extend_from_slice(&batch.instance.as_u128().to_le_bytes());
    out.extend_from_slice(&batch.sequence.to_le_bytes());
    let count_at = out.len();
    out.extend_from_slice(&0u32.to_le_bytes());
    count_at
}

/// Appends one record with its index and length.
fn append_record(index: u32, record: &FlowRecord, out: &mut Vec<u8>) -> Result<(), bincode::Error> {
    out.extend_from_slice(&index.to_le_bytes());
    let len_at = out.len();
    out.extend_from_slice(&0u32.to_le_bytes());
    encode_record(record, out)?;
    let len = u32::try_from(out.len() - len_at - 4).unwrap_or(u32::MAX);
    out[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Sets the record count of the message whose count is at `count_at`.
fn set_count(out: &mut [u8], count_at: usize, count: u32) {
    out[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
}

/// A cursor over a message, failing with the offset where it ran out.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RoutedDecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(RoutedDecodeError::Truncated(self.at))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RoutedDecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
}

/// Reads a connection-topic message (every record checked as the chunk decoder
/// checks it).
pub fn decode_routed(bytes: &[u8]) -> Result<RoutedRecords, RoutedDecodeError> {
    let mut r = Reader { bytes, at: 0 };
    let [version] = r.array::<1>()?;
    if version != ROUTED_FORMAT_VERSION {
        return Err(RoutedDecodeError::Version(version));
    }
    let host_len = u16::from_le_bytes(r.array()?);
    let host = std::str::from_utf8(r.take(usize::from(host_len))?)
        .map_err(|_| RoutedDecodeError::Host)?
        .to_owned();
    let instance = InstanceId::new(u128::from_le_bytes(r.array()?));
    let sequence = u64::from_le_bytes(r.array()?);
    let count = u32::from_le_bytes(r.array()?);
    let n = usize::try_from(count).unwrap_or(usize::MAX);
    if n > MAX_ROUTED_RECORDS {
        return Err(RoutedDecodeError::TooMany(count));
    }
    // Each record takes at least 8 bytes here and a minimal record more: no more
    // room is reserved than the message could fill.
    let room = n.min(bytes.len() / (8 + MIN_ROUTED_RECORD_LEN));
    let (mut indices, mut records) = (Vec::with_capacity(room), Vec::with_capacity(room));
    for _ in 0..n {
        let index = u32::from_le_bytes(r.array()?);
        let len = u32::from_le_bytes(r.array()?);
        let offset = r.at;
        let body = r.take(usize::try_from(len).unwrap_or(usize::MAX))?;
        let (record, used) =
            decode_record(body, FORMAT_VERSION).map_err(|e| RoutedDecodeError::Record {
                index,
                offset,
                reason: e.to_string(),
            })?;
        if used != body.len() {
            return Err(RoutedDecodeError::Record {
                index,
                offset,
                reason: format!("{} bytes after the record", body.len() - used),
            });
        }
        indices.push(index);
        records.push(record);
    }
    if r.at != bytes.len() {
        return Err(RoutedDecodeError::Trailing(bytes.len() - r.at));
    }
    Ok(RoutedRecords {
        batch: Arc::new(BatchId {
            host,
            instance,
            sequence,
        }),
        indices,
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> BatchId {
        BatchId {
            host: "node-7".into(),
            instance: InstanceId::new(0xab),
            sequence: 42,
        }
    }

    #[test]
    fn records_come_back_with_their_indices() {
        let a = flow_testkit::record()
            .local("10.0.0.1:40000")
            .remote("10.0.0.2:443")
            .workload("w-a", flow_record::IdentitySource::IpMap)
            .build();
        let b = flow_testkit::record()
            .local("[2001:db8::1]:5000")
            .remote("[2001:db8::2]:80")
            .build();
        let mut out = vec![9, 9];
        encode_routed(&batch(), [(3, &a), (17, &b)], &mut out).expect("encodes");
        let decoded = decode_routed(&out[2..]).expect("decodes");
        assert_eq!(*decoded.batch, batch());
        assert_eq!(decoded.indices, vec![3, 17]);
        assert_eq!(decoded.records, vec![a, b]);
        let mut empty = Vec::new();
        encode_routed(&batch(), [], &mut empty).expect("encodes");
        assert!(decode_routed(&empty).expect("decodes").records.is_empty());
    }

    #[test]
    fn damaged_messages_are_named() {
        let a = flow_testkit::record().build();
        let mut out = Vec::new();
        encode_routed(&batch(), [(0, &a)], &mut out).expect("encodes");
        for cut in 0..out.len() {
            assert!(
                decode_routed(&out[..cut]).is_err(),
                "{cut} bytes of {} decoded",
                out.len()
            );
        }
        let mut v = out.clone();
        v[0] = 2;
        assert_eq!(decode_routed(&v), Err(RoutedDecodeError::Version(2)));
        let mut t = out.clone();
        t.push(0);
        assert_eq!(decode_routed(&t), Err(RoutedDecodeError::Trailing(1)));
        // A count far above what the message holds fails without reserving for it.
        let mut many = out.clone();
        let at = 1 + 2 + 6 + 16 + 8;
        many[at..at + 4].copy_from_slice(&900_000u32.to_le_bytes());
        assert!(matches!(
            decode_routed(&many),
            Err(RoutedDecodeError::Truncated(_))
        ));
        many[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode_routed(&many),
            Err(RoutedDecodeError::TooMany(u32::MAX))
        );
    }
}
