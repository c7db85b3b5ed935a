//! How a record's local workload was resolved, or why it was not.

use serde::{Deserialize, Serialize};

/// Why a record carries no workload identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UnattributedReason {
    /// Neither identity map had an entry for the local end, and no certificate is
    /// configured.
    NoMatch,
    /// A map entry was found but is not a valid workload ID (empty, not UTF-8, a NUL
    /// before the end of the ID, or a control character).
    InvalidMapValue,
    /// The configured identity certificate does not exist.
    CertificateMissing,
    /// The configured identity certificate could not be read.
    CertificateUnreadable,
    /// The configured identity certificate is not a valid PEM X.509 certificate.
    CertificateMalformed,
    /// The configured identity certificate has expired.
    CertificateExpired,
    /// The configured identity certificate is not valid yet.
    CertificateNotYetValid,
    /// The configured identity certificate names no identity in the configured field.
    CertificateHasNoIdentity,
}

impl UnattributedReason {
    /// The name used in JSON output.
    pub fn as_str(&self) -> &'static str {
        match self {
            UnattributedReason::NoMatch => "no_match",
            UnattributedReason::InvalidMapValue => "invalid_map_value",
            UnattributedReason::CertificateMissing => "certificate_missing",
            UnattributedReason::CertificateUnreadable => "certificate_unreadable",
            UnattributedReason::CertificateMalformed => "certificate_malformed",
            UnattributedReason::CertificateExpired => "certificate_expired",
            UnattributedReason::CertificateNotYetValid => "certificate_not_yet_valid",
            UnattributedReason::CertificateHasNoIdentity => "certificate_has_no_identity",
        }
    }
}

/// Which source resolved a record's local workload identity. Precedence: the connect
/// map, then the IP map (both looked up in the kernel), then the certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum IdentitySource {
    /// The connect map: (local IPv4, local port) -> workload.
    ConnectMap,
    /// The IP map: local address -> workload.
    IpMap,
    /// The host's identity certificate.
    Certificate,
    /// Nothing resolved it; the record is unattributed, for this reason.
    None(UnattributedReason),
}

impl IdentitySource {
    /// The name used in JSON output: `connect_map`, `ip_map`, `certificate`, `none`.
    pub fn as_str(&self) -> &'static str {
        match self {
            IdentitySource::ConnectMap => "connect_map",
            IdentitySource::IpMap => "ip_map",
            IdentitySource::Certificate => "certificate",
            IdentitySource::None(_) => "none",
        }
    }

    /// Why the record is unattributed, if it is.
    pub fn unattributed_reason(&self) -> Option<UnattributedReason> {
        match self {
            IdentitySource::None(r) => Some(*r),
            _ => None,
        }
    }
}
