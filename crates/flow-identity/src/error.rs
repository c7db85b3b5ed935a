//! The one error type of `flow-identity`.

use std::path::PathBuf;

use flow_capture::{CaptureError, UnattributedReason};

/// Why an identity operation failed. Each variant names what was wrong and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The identity certificate cannot be used; records fall back to unattributed with
    /// `reason`.
    #[error("identity certificate {path}: {problem}")]
    Certificate {
        /// The certificate's path.
        path: PathBuf,
        /// What is wrong, in words.
        problem: String,
        /// The reason records carry while this lasts.
        reason: UnattributedReason,
    },
    /// A map operation failed.
    #[error("{operation} on the map pinned at {path} failed")]
    Map {
        /// What was being done.
        operation: &'static str,
        /// The map's pin path.
        path: PathBuf,
        /// The loader's error.
        #[source]
        source: aya::maps::MapError,
    },
    /// The map is full: remove entries that are no longer in use.
    #[error("the map pinned at {path} is full ({capacity} entries): remove stale entries")]
    MapFull {
        /// The map's pin path.
        path: PathBuf,
        /// Its capacity.
        capacity: u32,
    },
    /// The connect map takes IPv4 addresses only.
    #[error("the connect map takes IPv4 local addresses only, not {addr}")]
    NotIpv4 {
        /// The address given.
        addr: std::net::IpAddr,
    },
    /// Opening, creating or validating the pinned maps failed, or a workload ID is
    /// invalid.
    #[error(transparent)]
    Capture(#[from] CaptureError),
}
