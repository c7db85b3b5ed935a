//! Storage: verifying, deduplicating and appending each chunk's records to the
//! output file.
//!
//! Deduplication state is kept in memory, per `(host, instance)`: the highest
//! contiguous sequence stored plus the set of sequences stored above it.

use std::{
    collections::{BTreeSet, HashMap},
    fs::{File, OpenOptions},
    io::Write,
    path::PathBuf,
    sync::atomic::Ordering,
};

use flow_batch::wire::{BatchId, ChunkDecoder, DecodeLimits, InstanceId, decode_header};
use flow_record::json;

use crate::{
    CollectorError,
    error::error_chain,
    stats::{Stats, bump},
};

/// The first second a record time cannot have: 10000-01-01T00:00:00Z. RFC 3339 (and
/// the JSON output) has four-digit years.
const FIRST_UNWRITABLE_SECOND: u64 = 253_402_300_800;

/// Sequences stored for one `(host, instance)`.
#[derive(Debug, Default)]
struct Seen {
    /// Every sequence below this is stored.
    contiguous: u64,
    /// Stored sequences at or above `contiguous`.
    above: BTreeSet<u64>,
}

impl Seen {
    fn contains(&self, sequence: u64) -> bool {
        sequence < self.contiguous || self.above.contains(&sequence)
    }

    fn insert(&mut self, sequence: u64) {
        if sequence < self.contiguous {
            return;
        }
        self.above.insert(sequence);
        // u64::MAX itself stays in `above`: `contiguous` cannot pass it.
        while self.contiguous < u64::MAX && self.above.remove(&self.contiguous) {
            self.contiguous += 1;
        }
    }
}

/// The output file and what has been stored in it.
pub(crate) struct Store {
    path: PathBuf,
    file: File,
    sync: bool,
    limits: DecodeLimits,
    decoder: ChunkDecoder,
    seen: HashMap<(String, InstanceId), Seen>,
    buf: Vec<u8>,
}

/// What became of one frame.
pub(crate) enum Stored {
    /// Written (and synced, if asked).
    Accepted {
        /// Its batch ID.
        batch_id: BatchId,
        /// How many records it held.
        records: usize,
    },
    /// Its batch ID was stored before; nothing written.
    Duplicate {
        /// Its batch ID.
        batch_id: BatchId,
    },
    /// Not a frame; the reason says why.
    Undecodable(String),
    /// Decodes, but a record cannot be written; the reason names it and the field.
    Unstorable(String),
    /// The output could not be written; the reason says why.
    WriteFailed(String),
}

/// Why `record` cannot be written to the output, if it cannot: a time whose year has
/// more than four digits, which RFC 3339 cannot express.
fn unstorable(record: &flow_record::FlowRecord) -> Option<String> {
    let check = |field: &str, t: std::time::SystemTime| {
        // Decoded times are never before the epoch; say so rather than assume it.
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) if d.as_secs() < FIRST_UNWRITABLE_SECOND => None,
            Ok(d) => Some(format!("{field} {} s is after 9999-12-31", d.as_secs())),
            Err(_) => Some(format!("{field} is before 1970-01-01")),
        }
    };
    check("t_end", record.t_end).or_else(|| record.t_start.and_then(|t| check("t_start", t)))
}

impl Store {
    /// Opens (or creates) the output `path` for appending.
    pub(crate) fn open(
        path: PathBuf,
        sync: bool,
        limits: DecodeLimits,
    ) -> Result<Store, CollectorError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| CollectorError::Output {
                path: path.clone(),
                source,
            })?;
        let decoder =
            ChunkDecoder::new(limits).map_err(|source| CollectorError::Decoder { source })?;
        Ok(Store {
            path,
            file,
            sync,
            limits,
            decoder,
            seen: HashMap::new(),
            buf: Vec::new(),
        })
    }

    /// Verifies, deduplicates and writes one frame (on the blocking pool).
    pub(crate) fn store(&mut self, frame: &[u8], fail_writes: bool, stats: &Stats) -> Stored {
        let header = match decode_header(frame, &self.limits) {
            Ok(h) => h,
            Err(e) => {
                bump(&stats.rejected_undecodable);
                return Stored::Undecodable(format!("bad frame header: {}", error_chain(&e)));
            }
        };
        let batch_id = header.batch_id();
        let key = (batch_id.host.clone(), batch_id.instance);
        if self
            .seen
            .get(&key)
            .is_some_and(|s| s.contains(batch_id.sequence))
        {
            bump(&stats.chunks_duplicate);
            return Stored::Duplicate { batch_id };
        }
        let decoded = match self.decoder.decode(frame) {
            Ok(d) => d,
            Err(e) => {
                bump(&stats.rejected_undecodable);
                tracing::warn!(%batch_id, error = %error_chain(&e), "undecodable chunk");
                return Stored::Undecodable(format!("bad frame: {}", error_chain(&e)));
            }
        };
        let store = self;
        store.buf.clear();
        for (index, record) in decoded.records.iter().enumerate() {
            let refuse = |reason: String| {
                bump(&stats.rejected_unstorable);
                tracing::warn!(%batch_id, %reason, "chunk refused: a record cannot be stored");
                Stored::Unstorable(format!("record {index}: {reason}"))
            };
            if let Some(reason) = unstorable(record) {
                return refuse(reason);
            }
            // Writing into a Vec cannot fail, and the check above keeps the time
            // formatting from panicking; should another field ever do so, the chunk is
            // refused instead of taking the request (and a retrying exporter) down.
            let line = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                json::write_line(&mut store.buf, record)
            }));
            match line {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return refuse(format!("cannot be written as JSON: {e}")),
                Err(_) => return refuse("cannot be written as JSON".into()),
            }
        }
        let written = if fail_writes {
            Err(std::io::Error::other("injected write failure"))
        } else {
            write_all(&mut store.file, &store.buf, store.sync)
        };
        if let Err(e) = written {
            bump(&stats.write_failures);
            tracing::error!(out = %store.path.display(), error = %e, "writing the output failed");
            return Stored::WriteFailed(format!("cannot write the output: {e}"));
        }
        store.seen.entry(key).or_default().insert(batch_id.sequence);
        bump(&stats.chunks_accepted);
        stats
            .records_written
            .fetch_add(decoded.records.len() as u64, Ordering::Relaxed);
        Stored::Accepted {
            batch_id,
            records: decoded.records.len(),
        }
    }
}

/// Appends `bytes`; on failure, cuts the file back so no partial chunk stays.
fn write_all(file: &mut File, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    let before = file.metadata()?.len();
    let result = file
        .write_all(bytes)
        .and_then(|()| if sync { file.sync_data() } else { Ok(()) });
    if result.is_err() {
        let _ = file.set_len(before);
    }
    result
}

#[cfg(test)]
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_tracks_contiguous_and_gaps() {
        let mut s = Seen::default();
        for q in [0, 1, 3, 5] {
            s.insert(q);
        }
        assert_eq!(s.contiguous, 2);
        assert!(s.contains(0) && s.contains(1) && s.contains(3) && s.contains(5));
        assert!(!s.contains(2) && !s.contains(4) && !s.contains(6));
        s.insert(2);
        s.insert(4);
        assert_eq!(s.contiguous, 6);
        assert!(s.above.is_empty());
    }

    #[test]
    fn seen_never_overflows_at_the_last_sequence() {
        let mut s = Seen {
            contiguous: u64::MAX - 1,
            above: BTreeSet::new(),
        };
        s.insert(u64::MAX);
        s.insert(u64::MAX - 1);
        assert_eq!(s.contiguous, u64::MAX);
        assert!(s.contains(u64::MAX - 1) && s.contains(u64::MAX));
    }

    /// Only the times matter to [`unstorable`].
    fn record_at(t_end_secs: u64, t_start_secs: Option<u64>) -> flow_record::FlowRecord {
        use std::time::{Duration, UNIX_EPOCH};
        flow_testkit::record()
            .t_start(t_start_secs.map(|s| UNIX_EPOCH + Duration::from_secs(s)))
            .t_end(UNIX_EPOCH + Duration::from_secs(t_end_secs))
            .build()
    }

    #[test]
    fn times_past_year_9999_are_unstorable_and_name_the_field() {
        let last = FIRST_UNWRITABLE_SECOND - 1;
        assert_eq!(unstorable(&record_at(last, Some(last))), None);
        assert_eq!(
            unstorable(&record_at(FIRST_UNWRITABLE_SECOND, None)).as_deref(),
            Some("t_end 253402300800 s is after 9999-12-31")
        );
        assert_eq!(
            unstorable(&record_at(1, Some(FIRST_UNWRITABLE_SECOND + 5))).as_deref(),
            Some("t_start 253402300805 s is after 9999-12-31")
        );
    }
}
