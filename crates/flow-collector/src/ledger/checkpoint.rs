//! The checkpoint file: what the output holds and which batch IDs are stored.
//!
//! ```text
//! magic     4 bytes  "FLCK"
//! version   u32 LE   2 (1: the dedup set as contiguous + above, no longer read)
//! len       u64 LE   bytes of the body
//! crc32c    u32 LE   CRC-32C of the body
//! body      bincode 1 (fixint, little-endian) of `Body`
//! ```
//!
//! Written atomically: `checkpoint.tmp` is written and synced, `checkpoint` is renamed
//! to `checkpoint.prev`, `checkpoint.tmp` to `checkpoint`, and the directory is synced.
//! At open a damaged or missing `checkpoint` falls back to `checkpoint.prev`.

use std::{
    io::{self, Read, Write},
    path::Path,
};

use serde::{Deserialize, Serialize};

use super::{dedup::SnapshotEntry, emitted::LogPosition, files};

const MAGIC: [u8; 4] = *b"FLCK";
const VERSION: u32 = 2;
const HEADER_LEN: usize = 4 + 4 + 8 + 4;
/// A checkpoint larger than this is damaged (the dedup set of a million exporter
/// runs is far smaller).
const MAX_BODY: u64 = 1 << 30;

/// The checkpoint's name in the ledger directory.
pub(crate) const CURRENT: &str = "checkpoint";
/// The one before it.
pub(crate) const PREVIOUS: &str = "checkpoint.prev";
/// The one being written.
pub(crate) const TEMPORARY: &str = "checkpoint.tmp";

/// A chunk with flows not yet emitted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PendingChunk {
    /// Its entry.
    pub(crate) position: LogPosition,
    /// Its records.
    pub(crate) record_count: u32,
    /// The emitted record indexes, as ranges `[start, end)`.
    pub(crate) emitted: Vec<(u32, u32)>,
}

/// What a checkpoint holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Body {
    /// Every entry before this position is covered: fully emitted, or in `pending`.
    pub(crate) log_end: LogPosition,
    /// The output's position at the commit this checkpoint follows.
    pub(crate) output_position: Option<Vec<u8>>,
    /// The stored batch IDs.
    pub(crate) dedup: Vec<SnapshotEntry>,
    /// Entries before `log_end` with flows not yet emitted.
    pub(crate) pending: Vec<PendingChunk>,
}

/// Which checkpoint `load` used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CheckpointSource {
    /// No checkpoint: a new ledger (or one never checkpointed).
    #[default]
    Fresh,
    /// The latest checkpoint.
    Current,
    /// The latest was damaged or missing: the one before it.
    Previous,
    /// Both were damaged: nothing is known to be emitted, everything retained is
    /// replayed.
    Lost,
}

/// Encodes a checkpoint file.
pub(crate) fn encode(body: &Body) -> io::Result<Vec<u8>> {
    let bytes = bincode::serialize(body).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(HEADER_LEN + bytes.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
    out.extend_from_slice(&bytes);
    Ok(out)
}

/// Decodes a checkpoint file; `None` when damaged.
pub(crate) fn decode(bytes: &[u8]) -> Option<Body> {
    let header = bytes.get(..HEADER_LEN)?;
    if header.get(..4)? != MAGIC
        || u32::from_le_bytes(header.get(4..8)?.try_into().ok()?) != VERSION
    {
        return None;
    }
    let len = u64::from_le_bytes(header.get(8..16)?.try_into().ok()?);
    let crc = u32::from_le_bytes(header.get(16..20)?.try_into().ok()?);
    let body = bytes.get(HEADER_LEN..)?;
    if body.len() as u64 != len || crc32c::crc32c(body) != crc {
        return None;
    }
    bincode::deserialize(body).ok()
}

/// Reads one checkpoint file: `Ok(None)` when missing, `Err` when unreadable,
/// `Ok(Some(None))` when damaged.
fn read(path: &Path) -> io::Result<Option<Option<Body>>> {
    let file = match files::open_read(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let size = file.metadata()?.len();
    if size > MAX_BODY + HEADER_LEN as u64 {
        return Ok(Some(None));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(size).read_to_end(&mut bytes)?;
    Ok(Some(decode(&bytes)))
}

/// Loads the latest intact checkpoint of `dir`.
pub(crate) fn load(dir: &Path) -> io::Result<(Body, CheckpointSource)> {
    let current = read(&dir.join(CURRENT))?;
    if let Some(Some(body)) = current {
        return Ok((body, CheckpointSource::Current));
    }
    match read(&dir.join(PREVIOUS))? {
        Some(Some(body)) => Ok((body, CheckpointSource::Previous)),
        None if current.is_none() => Ok((Body::default(), CheckpointSource::Fresh)),
        _ => Ok((Body::default(), CheckpointSource::Lost)),
    }
}

/// Writes `body` as the new checkpoint of `dir` (see the module docs); syncs only when
/// `sync`.
pub(crate) fn store(dir: &Path, body: &Body, sync: bool) -> io::Result<()> {
    let bytes = encode(body)?;
    let tmp = dir.join(TEMPORARY);
    let mut file = files::create_truncate(&tmp)?;
    file.write_all(&bytes)?;
    if sync {
        file.sync_all()?;
    }
    drop(file);
    let current = dir.join(CURRENT);
    if files::exists(&current)? {
        std::fs::rename(&current, dir.join(PREVIOUS))?;
    }
    std::fs::rename(&tmp, &current)?;
    if sync {
        files::sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_flipped_byte_is_damage() {
        let body = Body {
            log_end: LogPosition {
                segment: 3,
                offset: 99,
            },
            output_position: Some(b"pos".to_vec()),
            dedup: Vec::new(),
            pending: vec![PendingChunk {
                position: LogPosition {
                    segment: 2,
                    offset: 0,
                },
                record_count: 5,
                emitted: vec![(0, 2)],
            }],
        };
        let bytes = encode(&body).expect("encode");
        assert_eq!(decode(&bytes), Some(body));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert_eq!(decode(&bad), None, "byte {i}");
        }
        assert_eq!(decode(&bytes[..bytes.len() - 1]), None);
    }
}
