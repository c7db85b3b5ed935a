//! The collector's durable state: the chunks it accepted (an append-only log, synced
//! before a chunk is acknowledged: the set of stored batch IDs is kept with the data,
//! in the same write) and a checkpoint of what has been emitted.
//!
//! # Files
//!
//! The ledger directory (created mode 0750; a symbolic link is refused) holds:
//!
//! - segments, named by their sequence number, zero-padded to 20 digits
//!   (`00000000000000000001`): log entries back to back, each a whole chunk frame
//!   with its batch ID, record count (output slots: a window's completeness record
//!   takes one more) and arrival time under a CRC-32C (the
//!   format is in `entry.rs`). A new segment is started when the next
//!   entry would take the current one past [`LedgerConfig::segment_bytes`], and at
//!   every open (a segment written before a restart is never appended to again);
//! - `checkpoint` (and `checkpoint.prev`, the one before it; `checkpoint.tmp` while
//!   one is written): the log position it covers, the output's position, the set of
//!   stored batch IDs, and every covered chunk with flows not yet emitted with the set
//!   of those that were (see `checkpoint.rs`).
//!
//! Anything else in the directory (other names, FIFOs, directories, links named like
//! a segment) is skipped and counted ([`LedgerStats::skipped_files`]); no link is ever
//! followed, no FIFO opened.
//!
//! # Guarantees
//!
//! - [`append`](Ledger::append) returns `Ok` only once the entry is written (and
//!   `fdatasync`ed when [`LedgerConfig::sync`]); on failure the segment is cut back to
//!   its length before, so no partial entry stays behind, and the ledger stays usable.
//! - After a crash, [`recover`](Ledger::recover) replays every retained entry with
//!   what the last intact checkpoint says was emitted of it, and rebuilds the set of
//!   stored batch IDs (the checkpoint's snapshot plus every entry in the log), so a
//!   chunk retried after a restart is recognised as stored.
//! - A segment is deleted by [`prune`](Ledger::prune) only once every entry in it is
//!   older than asked and, as of the last checkpoint written, fully emitted.
//!
//! # Use
//!
//! ```
//! use std::time::SystemTime;
//!
//! use flow_batch::wire::{BatchId, InstanceId};
//! use flow_collector::{
//!     ledger::{Ledger, LedgerConfig},
//!     output::OutputPosition,
//! };
//!
//! let dir = tempfile::tempdir()?;
//! let mut ledger = Ledger::open(dir.path(), LedgerConfig::default())?;
//! ledger.recover(|_chunk| {})?; // a fresh ledger: nothing to replay
//! let id = BatchId { host: "node-1".into(), instance: InstanceId::new(1), sequence: 0 };
//! assert!(!ledger.contains(&id));
//! ledger.append(&id, 2, SystemTime::now(), b"the frame")?;
//! assert!(ledger.contains(&id));
//! ledger.mark_emitted(&id, 0);
//! ledger.mark_emitted(&id, 1);
//! ledger.checkpoint(&OutputPosition(b"where the output stands".to_vec()))?;
//! assert_eq!(ledger.stats().pending_chunks, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Not thread-safe by itself: the collector keeps it behind a mutex.

mod checkpoint;
mod dedup;
mod emitted;
mod entry;
mod error;
pub(crate) mod files;
mod recovery;
mod state;
#[cfg(test)]
mod tests;

pub use checkpoint::CheckpointSource;
pub use emitted::{Emitted, LogPosition};
pub use error::LedgerError;
pub use recovery::{RecoveredChunk, RecoveryStats};
pub use state::{Ledger, LedgerConfig, LedgerStats};
