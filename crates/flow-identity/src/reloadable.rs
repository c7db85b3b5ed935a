//! The identity resolver of a running exporter, whose certificate settings (path and
//! field) a reload (SIGHUP) may replace. Its counts go on across replacements, so
//! metrics built on them never go backwards.

use std::{
    path::{Path, PathBuf},
    time::SystemTime,
};

use flow_record::FlowRecord;

use crate::{
    certificate::{CertificateIdentity, IdentityField},
    certificate_resolver::CertificateResolver,
    counters::IdentityCounters,
    resolver::IdentityResolver,
};

/// A [`CertificateResolver`] with the certificate settings it was made from, which
/// [`replace`](ReloadableResolver::replace) swaps for others.
#[derive(Debug)]
pub struct ReloadableResolver {
    resolver: CertificateResolver,
    certificate: Option<PathBuf>,
    field: IdentityField,
    /// What the resolvers replaced so far counted.
    earlier: IdentityCounters,
}

impl ReloadableResolver {
    /// A resolver with the certificate at `certificate`, if any, naming the workload
    /// with `field`. A certificate that cannot be used is logged with its problem
    /// (records not attributed by the maps then stay unattributed, with the reason).
    pub fn new(certificate: Option<&Path>, field: IdentityField) -> ReloadableResolver {
        ReloadableResolver {
            resolver: resolver(certificate, field),
            certificate: certificate.map(Path::to_path_buf),
            field,
            earlier: IdentityCounters::default(),
        }
    }

    /// The certificate path and field in force.
    pub fn settings(&self) -> (Option<&Path>, IdentityField) {
        (self.certificate.as_deref(), self.field)
    }

    /// Uses the certificate at `certificate` with `field` from now on.
    pub fn replace(&mut self, certificate: Option<&Path>, field: IdentityField) {
        let next = ReloadableResolver::new(certificate, field);
        self.earlier = sum(self.earlier, self.resolver.counters());
        self.resolver = next.resolver;
        self.certificate = next.certificate;
        self.field = field;
    }

    /// Picks up a replaced certificate file, then completes every record's identity.
    pub fn resolve_all(&mut self, records: &mut [FlowRecord]) {
        self.resolver.resolve_all(records);
    }

    /// Completes one record's identity (without looking at the file again).
    pub fn resolve(&mut self, record: &mut FlowRecord) {
        self.resolver.resolve(record);
    }

    /// SIGHUP: looks at the certificate file again now, and says what was found.
    pub fn refresh_now(&mut self) {
        self.resolver.refresh_now();
    }

    /// The counts so far, replaced resolvers included.
    pub fn counters(&self) -> IdentityCounters {
        sum(self.earlier, self.resolver.counters())
    }
}

impl IdentityResolver for ReloadableResolver {
    fn resolve(&mut self, record: &mut FlowRecord) {
        ReloadableResolver::resolve(self, record)
    }

    fn resolve_all(&mut self, records: &mut [FlowRecord]) {
        ReloadableResolver::resolve_all(self, records)
    }

    fn refresh_now(&mut self) {
        ReloadableResolver::refresh_now(self)
    }

    fn counters(&self) -> IdentityCounters {
        ReloadableResolver::counters(self)
    }
}

fn resolver(certificate: Option<&Path>, field: IdentityField) -> CertificateResolver {
    let certificate = certificate.map(|path| {
        let (cert, err) = CertificateIdentity::load(path, field);
        match err
            .map(Err)
            .unwrap_or_else(|| cert.check(SystemTime::now()).map(|_| ()))
        {
            Ok(()) => tracing::info!(path = %path.display(), "identity certificate loaded"),
            Err(e) => tracing::error!("{e}; records not attributed by the maps stay unattributed"),
        }
        cert
    });
    CertificateResolver::new(certificate)
}

/// Field-wise sum (every field is named: a new one must be added here too).
fn sum(a: IdentityCounters, b: IdentityCounters) -> IdentityCounters {
    IdentityCounters {
        connect_map: a.connect_map + b.connect_map,
        ip_map: a.ip_map + b.ip_map,
        certificate: a.certificate + b.certificate,
        unattributed_no_match: a.unattributed_no_match + b.unattributed_no_match,
        unattributed_invalid_map_value: a.unattributed_invalid_map_value
            + b.unattributed_invalid_map_value,
        unattributed_certificate: a.unattributed_certificate + b.unattributed_certificate,
        certificate_errors: a.certificate_errors + b.certificate_errors,
        certificate_reloads: a.certificate_reloads + b.certificate_reloads,
    }
}

#[cfg(test)]
mod tests {
    use flow_record::{IdentitySource, UnattributedReason};

    use super::*;
    use crate::resolver::tests::record;

    fn unattributed() -> FlowRecord {
        record(IdentitySource::None(UnattributedReason::NoMatch))
    }

    #[test]
    fn counts_survive_a_replacement() {
        let mut r = ReloadableResolver::new(None, IdentityField::SanUri);
        r.resolve_all(&mut [unattributed(), unattributed()]);
        assert_eq!(r.counters().unattributed_no_match, 2);
        let missing = Path::new("/nonexistent/fe-host.pem");
        r.replace(Some(missing), IdentityField::SubjectCn);
        assert_eq!(r.settings(), (Some(missing), IdentityField::SubjectCn));
        let mut record = unattributed();
        r.resolve_all(std::slice::from_mut(&mut record));
        assert_eq!(
            record.identity_source,
            IdentitySource::None(UnattributedReason::CertificateMissing)
        );
        let c = r.counters();
        assert_eq!(c.unattributed_no_match, 2);
        assert_eq!(c.unattributed_certificate, 1);
        assert_eq!(c.certificate_errors, 1);
    }

    #[test]
    fn the_trait_object_counts_like_the_resolver() {
        let mut r: Box<dyn IdentityResolver> =
            Box::new(ReloadableResolver::new(None, IdentityField::SanUri));
        r.resolve_all(&mut [unattributed()]);
        r.refresh_now();
        assert_eq!(r.counters().unattributed_no_match, 1);
    }
}
