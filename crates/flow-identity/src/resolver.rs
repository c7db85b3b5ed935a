//! Applies the certificate fallback to records and counts identity outcomes.

use flow_record::{FlowRecord, IdentitySource, UnattributedReason};

use crate::{certificate::CertificateIdentity, counters::IdentityCounters, error::IdentityError};

/// Completes the identity of records read from the capture core: the kernel already
/// applied the connect map and the IP map; records they did not attribute get the
/// certificate's identity, or the reason there is none.
#[derive(Debug, Default)]
pub struct IdentityResolver {
    certificate: Option<CertificateIdentity>,
    counters: IdentityCounters,
}

impl IdentityResolver {
    /// A resolver with an optional identity certificate (a certificate that cannot be
    /// used now counts as one certificate error).
    pub fn new(certificate: Option<CertificateIdentity>) -> IdentityResolver {
        let mut counters = IdentityCounters::default();
        if let Some(cert) = &certificate
            && cert.check(std::time::SystemTime::now()).is_err()
        {
            counters.certificate_errors += 1;
        }
        IdentityResolver {
            certificate,
            counters,
        }
    }

    /// Picks up a replaced certificate; call it before each batch of records. Returns
    /// the new certificate's problem, if it has one (counted once per replacement).
    pub fn refresh(&mut self) -> Option<IdentityError> {
        let cert = self.certificate.as_mut()?;
        match cert.refresh() {
            Ok(false) => None,
            Ok(true) => {
                self.counters.certificate_reloads += 1;
                None
            }
            Err(e) => {
                self.counters.certificate_reloads += 1;
                self.counters.certificate_errors += 1;
                Some(e)
            }
        }
    }

    /// Completes one record's identity and counts the outcome.
    pub fn resolve(&mut self, record: &mut FlowRecord) {
        if record.identity_source == IdentitySource::None(UnattributedReason::NoMatch)
            && let Some(cert) = &self.certificate
        {
            match cert.identity_at(record.t_end) {
                Ok(id) => {
                    record.local_workload_id = Some(id);
                    record.identity_source = IdentitySource::Certificate;
                }
                Err(reason) => record.identity_source = IdentitySource::None(reason),
            }
        }
        let c = &mut self.counters;
        match record.identity_source {
            IdentitySource::ConnectMap => c.connect_map += 1,
            IdentitySource::IpMap => c.ip_map += 1,
            IdentitySource::Certificate => c.certificate += 1,
            IdentitySource::None(UnattributedReason::NoMatch) => c.unattributed_no_match += 1,
            IdentitySource::None(UnattributedReason::InvalidMapValue) => {
                c.unattributed_invalid_map_value += 1
            }
            IdentitySource::None(_) => c.unattributed_certificate += 1,
            _ => {}
        }
    }

    /// The counts so far.
    pub fn counters(&self) -> IdentityCounters {
        self.counters
    }
}
