//! The certificate fallback: completes records the kernel did not attribute with the
//! identity certificate's workload, and counts identity outcomes.

use flow_record::{FlowRecord, IdentitySource, UnattributedReason};

use crate::{
    certificate::CertificateIdentity,
    counters::IdentityCounters,
    error::IdentityError,
    resolver::{IdentityResolver, count},
};

/// Completes the identity of records read from the capture core: the kernel already
/// applied the connect map and the IP map; records they did not attribute get the
/// certificate's identity, or the reason there is none.
#[derive(Debug, Default)]
pub struct CertificateResolver {
    certificate: Option<CertificateIdentity>,
    counters: IdentityCounters,
}

impl CertificateResolver {
    /// A resolver with an optional identity certificate (a certificate that cannot be
    /// used now counts as one certificate error).
    pub fn new(certificate: Option<CertificateIdentity>) -> CertificateResolver {
        let mut counters = IdentityCounters::default();
        if let Some(cert) = &certificate
            && cert.check(std::time::SystemTime::now()).is_err()
        {
            counters.certificate_errors += 1;
        }
        CertificateResolver {
            certificate,
            counters,
        }
    }

    /// The certificate in use, if any.
    pub fn certificate(&self) -> Option<&CertificateIdentity> {
        self.certificate.as_ref()
    }

    /// Picks up a replaced certificate; call it before each batch of records. Returns
    /// the new certificate's problem, if it has one (counted once per replacement).
    /// [`IdentityResolver::resolve_all`] calls it and logs the problem.
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
}

impl IdentityResolver for CertificateResolver {
    /// Completes one record's identity (without looking at the file again) and counts
    /// the outcome.
    fn resolve(&mut self, record: &mut FlowRecord) {
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
        count(&mut self.counters, record);
    }

    /// Picks up a replaced certificate file (logging its problem, if it has one), then
    /// completes every record's identity.
    fn resolve_all(&mut self, records: &mut [FlowRecord]) {
        if let Some(e) = self.refresh() {
            tracing::error!("{e}; records not attributed by the maps stay unattributed");
        }
        records.iter_mut().for_each(|r| self.resolve(r));
    }

    /// Looks at the certificate file again now, and logs what was found.
    fn refresh_now(&mut self) {
        if self.certificate.is_none() {
            return;
        }
        let before = self.counters.certificate_reloads;
        match self.refresh() {
            Some(e) => {
                tracing::error!("SIGHUP: {e}; records not attributed by the maps stay unattributed")
            }
            None if self.counters.certificate_reloads > before => {
                tracing::info!("SIGHUP: identity certificate reloaded")
            }
            None => tracing::info!("SIGHUP: identity certificate unchanged"),
        }
    }

    fn counters(&self) -> IdentityCounters {
        self.counters
    }
}
