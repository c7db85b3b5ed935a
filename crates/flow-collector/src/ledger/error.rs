//! Why the ledger failed.

use std::{io, path::PathBuf};

/// Why a ledger operation failed. The ledger stays usable: a failed append left no
/// partial entry, a failed checkpoint left the previous one in place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// A file operation failed (a full disk: `ENOSPC`, an I/O error: `EIO`, ...).
    #[error("ledger: {operation} {}", .path.display())]
    Io {
        /// What was being done (`open`, `append`, `sync`, `checkpoint`, `prune`, ...).
        operation: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The ledger directory is a symbolic link, or not a directory.
    #[error("ledger: {} is {what}: refused", .path.display())]
    NotADirectory {
        /// The path given.
        path: PathBuf,
        /// What it is instead.
        what: &'static str,
    },
    /// `append`, `checkpoint` or `prune` before [`recover`](super::Ledger::recover).
    #[error("ledger: recover() must run before the ledger is written")]
    NotRecovered,
    /// A failure injected for tests (the collector's `FaultInjection`).
    #[error("ledger: injected write failure")]
    Injected,
}

impl LedgerError {
    /// The failure a test injects in place of an append.
    pub fn injected() -> LedgerError {
        LedgerError::Injected
    }

    /// An I/O failure.
    pub(crate) fn io(
        operation: &'static str,
        path: impl Into<PathBuf>,
        source: io::Error,
    ) -> LedgerError {
        LedgerError::Io {
            operation,
            path: path.into(),
            source,
        }
    }
}
