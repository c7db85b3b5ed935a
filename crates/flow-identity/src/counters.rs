//! Identity outcomes, counted per record.

/// How records were attributed, by source, and why the others were not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdentityCounters {
    /// Attributed by the connect map (in the kernel).
    pub connect_map: u64,
    /// Attributed by the IP map (in the kernel).
    pub ip_map: u64,
    /// Attributed by the identity certificate.
    pub certificate: u64,
    /// Unattributed: no map entry and no certificate configured.
    pub unattributed_no_match: u64,
    /// Unattributed: a map held an invalid workload value.
    pub unattributed_invalid_map_value: u64,
    /// Unattributed: the certificate could not be used (missing, unreadable,
    /// malformed, expired, not yet valid, or naming no identity).
    pub unattributed_certificate: u64,
    /// Times loading the certificate failed (each distinct failure counted once).
    pub certificate_errors: u64,
    /// Times a replaced certificate file was picked up.
    pub certificate_reloads: u64,
}
