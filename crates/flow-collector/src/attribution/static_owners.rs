//! The static table: IPs and CIDRs of things that run no exporter (load balancers,
//! databases), with the name to give them.

use std::path::{Path, PathBuf};

use flow_record::WorkloadId;

/// IPs and CIDRs -> names, looked up longest prefix first.
#[derive(Clone, Debug, Default)]
pub struct StaticOwners {}

/// Why a static table was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StaticOwnersError {
    /// A line is not `<IP or CIDR> <name>`.
    #[error("{}:{line}: {reason}", .path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The file could not be read.
    #[error("reading {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl StaticOwners {
    /// Parses a table; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<StaticOwners, StaticOwnersError> {
        let _ = (text, path);
        todo!()
    }

    /// Reads and parses `path` (a regular file of at most 16 MiB).
    pub fn load(path: &Path) -> Result<StaticOwners, StaticOwnersError> {
        let _ = path;
        todo!()
    }

    /// The name of `ip`, from the longest matching prefix.
    pub fn lookup(&self, ip: std::net::IpAddr) -> Option<&WorkloadId> {
        let _ = ip;
        todo!()
    }

    /// Entries in the table.
    pub fn len(&self) -> usize {
        0
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
