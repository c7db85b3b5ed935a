//! One log entry: a stored chunk.
//!
//! ```text
//! magic     4 bytes  "FLE1" (the entry format, version 1)
//! len       u32 LE   bytes of the body that follows the checksum
//! crc32c    u32 LE   CRC-32C of len (its 4 bytes) then the body
//! body:
//!   arrival       u64 LE   nanoseconds since the Unix epoch (saturated)
//!   host_len      u16 LE
//!   host          host_len bytes, UTF-8
//!   instance      u128 LE
//!   sequence      u64 LE
//!   record_count  u32 LE   output slots: the records, plus one for the window's
//!                          completeness record on the first chunk of a window
//!   frame         the rest: the chunk frame exactly as received
//! ```

use std::{
    io::{self, Read},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use flow_batch::wire::{BatchId, InstanceId};

/// The entry magic (format version 1).
pub(crate) const MAGIC: [u8; 4] = *b"FLE1";
/// Bytes before the body.
pub(crate) const HEADER_LEN: u64 = 12;
/// The smallest body: every field, an empty host and frame.
const MIN_BODY: u32 = 8 + 2 + 16 + 8 + 4;

/// A decoded entry.
#[derive(Debug)]
pub(crate) struct Entry {
    /// The chunk's batch ID.
    pub(crate) batch: BatchId,
    /// When the collector accepted it.
    pub(crate) arrival: SystemTime,
    /// Records in the chunk.
    pub(crate) record_count: u32,
    /// The frame.
    pub(crate) frame: Vec<u8>,
}

/// Nanoseconds since the epoch, 0 before it, saturated far after it.
pub(crate) fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The time `nanos` after the epoch.
pub(crate) fn from_nanos(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

/// Encodes one entry into `out` (cleared first). Fails for a host longer than 65535
/// bytes or a body over 4 GiB.
pub(crate) fn encode(
    out: &mut Vec<u8>,
    batch: &BatchId,
    record_count: u32,
    arrival: SystemTime,
    frame: &[u8],
) -> io::Result<()> {
    let too_big = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} too long for a ledger entry"),
        )
    };
    let host_len = u16::try_from(batch.host.len()).map_err(|_| too_big("host"))?;
    let body_len = u32::try_from(MIN_BODY as usize + batch.host.len() + frame.len())
        .map_err(|_| too_big("frame"))?;
    out.clear();
    out.reserve(HEADER_LEN as usize + body_len as usize);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&nanos(arrival).to_le_bytes());
    out.extend_from_slice(&host_len.to_le_bytes());
    out.extend_from_slice(batch.host.as_bytes());
    out.extend_from_slice(&batch.instance.as_u128().to_le_bytes());
    out.extend_from_slice(&batch.sequence.to_le_bytes());
    out.extend_from_slice(&record_count.to_le_bytes());
    out.extend_from_slice(frame);
    let crc = checksum(&out[4..8], &out[HEADER_LEN as usize..]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// CRC-32C of the length field then the body.
fn checksum(len: &[u8], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(len), body)
}

/// Why an entry could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The bytes are not a whole, intact entry (torn, corrupt).
    Damaged,
    /// Reading failed.
    Io(io::Error),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> ReadError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ReadError::Damaged
        } else {
            ReadError::Io(e)
        }
    }
}

/// Reads the entry at the reader's position, `remaining` bytes before the end of the
/// file (never reads past it). Returns the entry and its size on disk.
pub(crate) fn read(reader: &mut impl Read, remaining: u64) -> Result<(Entry, u64), ReadError> {
    if remaining < HEADER_LEN {
        return Err(ReadError::Damaged);
    }
    let mut header = [0u8; HEADER_LEN as usize];
    reader.read_exact(&mut header)?;
    let body_len = header_body_len(&header, remaining).ok_or(ReadError::Damaged)?;
    let mut body = vec![0u8; body_len as usize];
    reader.read_exact(&mut body)?;
    let entry = parse(&header, body).ok_or(ReadError::Damaged)?;
    Ok((entry, HEADER_LEN + u64::from(body_len)))
}

/// The body length a header announces, if the header is plausible and the body fits
/// in `remaining` bytes.
fn header_body_len(header: &[u8], remaining: u64) -> Option<u32> {
    if header.get(..4)? != MAGIC {
        return None;
    }
    let body_len = u32::from_le_bytes(header.get(4..8)?.try_into().ok()?);
    (body_len >= MIN_BODY && HEADER_LEN + u64::from(body_len) <= remaining).then_some(body_len)
}

/// Checks the CRC and decodes the body.
fn parse(header: &[u8], body: Vec<u8>) -> Option<Entry> {
    let crc = u32::from_le_bytes(header.get(8..12)?.try_into().ok()?);
    if checksum(header.get(4..8)?, &body) != crc {
        return None;
    }
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = body.get(at..at.checked_add(n)?)?;
        at += n;
        Some(s)
    };
    let arrival = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let host_len = u16::from_le_bytes(take(2)?.try_into().ok()?);
    let host = std::str::from_utf8(take(host_len.into())?).ok()?.to_owned();
    let instance = u128::from_le_bytes(take(16)?.try_into().ok()?);
    let sequence = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let record_count = u32::from_le_bytes(take(4)?.try_into().ok()?);
    let mut frame = body;
    frame.drain(..at);
    Some(Entry {
        batch: BatchId {
            host,
            instance: InstanceId::new(instance),
            sequence,
        },
        arrival: from_nanos(arrival),
        record_count,
        frame,
    })
}

/// The offset in `bytes` of the first intact entry at or after `from`, if any (to skip
/// a damaged stretch without losing the entries after it).
pub(crate) fn find_next(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at + HEADER_LEN as usize <= bytes.len() {
        let found = bytes.get(at..)?.windows(4).position(|w| w == MAGIC)?;
        at += found;
        let rest = bytes.get(at..)?;
        if let Some(header) = rest.get(..HEADER_LEN as usize)
            && let Some(body_len) = header_body_len(header, rest.len() as u64)
            && let Some(body) =
                rest.get(HEADER_LEN as usize..HEADER_LEN as usize + body_len as usize)
            && parse(header, body.to_vec()).is_some()
        {
            return Some(at);
        }
        at += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> BatchId {
        BatchId {
            host: "h".into(),
            instance: InstanceId::new(7),
            sequence: 3,
        }
    }

    #[test]
    fn round_trip_and_damage() {
        let mut out = Vec::new();
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        encode(&mut out, &batch(), 4, t, b"frame").expect("encode");
        let (e, len) = read(&mut &out[..], out.len() as u64).expect("read");
        assert_eq!(len, out.len() as u64);
        assert_eq!((e.batch, e.arrival, e.record_count), (batch(), t, 4));
        assert_eq!(e.frame, b"frame");
        // Every truncation and every flipped byte is damage, never a panic.
        for cut in 0..out.len() {
            assert!(matches!(
                read(&mut &out[..cut], cut as u64),
                Err(ReadError::Damaged)
            ));
        }
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x40;
            assert!(read(&mut &bad[..], bad.len() as u64).is_err(), "byte {i}");
        }
        let mut two = vec![0xAA; 9];
        two.extend_from_slice(&out);
        assert_eq!(find_next(&two, 0), Some(9));
        assert_eq!(find_next(&two, 10), None);
    }
}
