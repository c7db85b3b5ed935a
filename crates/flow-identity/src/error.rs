//! The one error type of `flow-identity`.

use std::{io, path::PathBuf};

use flow_record::UnattributedReason;

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
    /// The identity pin directory cannot be used.
    #[error("identity pin directory {path} {problem}")]
    PinPath {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
        /// The OS error, if any.
        #[source]
        source: Option<io::Error>,
    },
    /// A map pinned at an identity pin path has another definition than the
    /// exporter's; it is refused, never written.
    #[error(
        "the map pinned at {path} is a {found}, but flowexporter's is a {expected}: remove it (rm {path}) or use another pin directory"
    )]
    PinnedMapMismatch {
        /// The pin path.
        path: PathBuf,
        /// The exporter's definition.
        expected: String,
        /// What was found.
        found: String,
    },
    /// A pinned map could not be opened or inspected.
    #[error("the map pinned at {path} could not be opened")]
    PinnedMap {
        /// The pin path.
        path: PathBuf,
        /// The loader's error.
        #[source]
        source: aya::maps::MapError,
    },
    /// The kernel refused to create an identity map (nothing was pinned at its path).
    #[error("creating the identity map to pin at {path} failed")]
    CreateMap {
        /// The pin path it was for.
        path: PathBuf,
        /// The loader's error.
        #[source]
        source: aya::maps::MapError,
    },
    /// A newly created identity map could not be pinned.
    #[error("pinning the identity map at {path} failed")]
    PinMap {
        /// The pin path.
        path: PathBuf,
        /// The loader's error.
        #[source]
        source: aya::pin::PinError,
    },
    /// A workload ID that cannot be stored: empty, longer than 64 bytes, or with a NUL
    /// or another control character.
    #[error(transparent)]
    InvalidWorkloadId(#[from] flow_record::InvalidWorkloadId),
}
