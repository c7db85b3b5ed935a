//! What can go wrong in the record journal.

use std::{io, net::SocketAddr, path::PathBuf};

/// A journal operation that failed, naming what and where.
///
/// Only [`RecordJournal::open`](super::RecordJournal::open) and a record that cannot
/// be encoded fail outright; a journal that cannot write once open degrades instead
/// (see the [module docs](super#when-the-journal-cannot-write)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// A configuration value is out of range.
    #[error("invalid journal configuration: `{key}` = {value}: {reason}")]
    InvalidConfig {
        /// The configuration key.
        key: &'static str,
        /// The rejected value, printed.
        value: String,
        /// What the value must be instead.
        reason: &'static str,
    },

    /// A file or directory operation failed.
    #[error("failed to {operation} {}", .path.display())]
    Io {
        /// What was being done (`create`, `fsync`, `rename`, ...).
        operation: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// A record could not be encoded (its times are before the Unix epoch, which the
    /// wire format cannot carry either).
    #[error("flow record {local} -> {remote} cannot be journaled")]
    Encode {
        /// The record's local address.
        local: SocketAddr,
        /// The record's remote address.
        remote: SocketAddr,
        /// Why bincode refused it.
        #[source]
        source: bincode::Error,
    },
}

impl JournalError {
    /// A [`JournalError::Io`] for `operation` on `path`.
    pub fn io(operation: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        JournalError::Io {
            operation,
            path: path.into(),
            source,
        }
    }
}
