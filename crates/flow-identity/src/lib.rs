//! Workload identity for flowexporter records.
//!
//! Three sources, in this order of precedence:
//!
//! 1. **Connect map** (`(local IPv4, local port) -> workload`) and
//! 2. **IP map** (`local address -> workload`): pinned eBPF maps that other agents
//!    write ([`IdentityMaps`]; definitions and pin paths in [`pins`]) and that the
//!    kernel program reads when a connection is established, so the identity is fixed
//!    at capture time.
//! 3. **Identity certificate** ([`CertificateIdentity`]): the host's X.509 certificate
//!    on disk, for every record the maps did not attribute; picked up again when the
//!    file is replaced.
//!
//! [`IdentityResolver`] applies the certificate fallback to records as they are read.
//! A record nothing attributes is marked with the reason; an identity is never
//! guessed.

mod certificate;
mod counters;
mod error;
mod maps;
pub mod pins;
mod resolver;

pub use certificate::{CertificateIdentity, IdentityField};
pub use counters::IdentityCounters;
pub use error::IdentityError;
pub use maps::{IdentityMaps, MapValue, connect_addr};
pub use resolver::IdentityResolver;
