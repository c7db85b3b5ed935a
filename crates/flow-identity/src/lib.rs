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
//! An [`IdentityResolver`] completes records as they are read: [`CertificateResolver`]
//! applies the certificate fallback, [`ReloadableResolver`] is one whose certificate
//! settings a reload may replace, and [`NoIdentity`] keeps the kernel's attribution as
//! it is. A record nothing attributes is marked with the reason; an identity is never
//! guessed.
//!
//! Completing records (here without a certificate, so a record the maps did not
//! attribute stays unattributed):
//!
//! ```
//! use flow_identity::{IdentityField, IdentityResolver, NoIdentity, ReloadableResolver};
//! use flow_record::FlowRecord;
//!
//! fn complete(resolver: &mut dyn IdentityResolver, records: &mut [FlowRecord]) {
//!     resolver.resolve_all(records);
//! }
//!
//! let mut records: Vec<FlowRecord> = Vec::new(); // as read from the capture core
//! let mut resolver = ReloadableResolver::new(None, IdentityField::SanUri);
//! complete(&mut resolver, &mut records);
//! complete(&mut NoIdentity::new(), &mut records);
//! assert_eq!(resolver.counters().certificate, 0);
//! ```
//!
//! Writing the maps, as a container IP manager or runtime does (needs a BPF filesystem
//! and `CAP_BPF`):
//!
//! ```no_run
//! use flow_identity::{IdentityMaps, pins::DEFAULT_IDENTITY_PIN_DIR};
//! use flow_record::WorkloadId;
//!
//! # fn main() -> Result<(), flow_identity::IdentityError> {
//! let mut maps = IdentityMaps::open_or_create(DEFAULT_IDENTITY_PIN_DIR)?;
//! let billing = WorkloadId::new("spiffe://prod.example/app/billing")?;
//! maps.set_ip("10.1.2.3".parse().expect("an address"), &billing)?;
//! maps.set_connect("10.0.0.5:40312".parse().expect("an address"), &billing)?;
//! // ... and when the workload releases them:
//! maps.remove_connect("10.0.0.5:40312".parse().expect("an address"))?;
//! maps.remove_ip("10.1.2.3".parse().expect("an address"))?;
//! # Ok(())
//! # }
//! ```

mod certificate;
mod certificate_resolver;
mod counters;
mod error;
mod maps;
pub mod pins;
mod reloadable;
mod resolver;

pub use certificate::{CertificateIdentity, IdentityField, MAX_CERTIFICATE_BYTES};
pub use certificate_resolver::CertificateResolver;
pub use counters::IdentityCounters;
pub use error::IdentityError;
pub use maps::{IdentityMaps, MapValue, connect_addr};
pub use reloadable::ReloadableResolver;
pub use resolver::{IdentityResolver, NoIdentity};
