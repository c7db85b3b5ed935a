//! The identity resolver of a running exporter, whose certificate settings (path and
//! field) a SIGHUP may replace. Its counts go on across replacements, so the metrics'
//! counters never go backwards.

use std::{
    path::{Path, PathBuf},
    time::SystemTime,
};

use flow_capture::FlowRecord;
use flow_identity::{CertificateIdentity, IdentityCounters, IdentityField, IdentityResolver};

use crate::cli::CertField;

/// [`IdentityResolver`] with the certificate settings it was made from.
#[derive(Debug)]
pub struct ReloadableResolver {
    resolver: IdentityResolver,
    certificate: Option<PathBuf>,
    field: CertField,
    /// What the resolvers replaced so far counted.
    earlier: IdentityCounters,
}

impl ReloadableResolver {
    /// A resolver with the certificate at `certificate`, if any, naming the workload
    /// with `field`. A certificate that cannot be used is logged with its problem
    /// (records not attributed by the maps then stay unattributed, with the reason).
    pub fn new(certificate: Option<&Path>, field: CertField) -> ReloadableResolver {
        ReloadableResolver {
            resolver: resolver(certificate, field),
            certificate: certificate.map(Path::to_path_buf),
            field,
            earlier: IdentityCounters::default(),
        }
    }

    /// The certificate path and field in force.
    pub fn settings(&self) -> (Option<&Path>, CertField) {
        (self.certificate.as_deref(), self.field)
    }

    /// Uses the certificate at `certificate` with `field` from now on.
    pub fn replace(&mut self, certificate: Option<&Path>, field: CertField) {
        let next = ReloadableResolver::new(certificate, field);
        self.earlier = sum(self.earlier, self.resolver.counters());
        self.resolver = next.resolver;
        self.certificate = next.certificate;
        self.field = field;
    }

    /// Picks up a replaced certificate file, then completes every record's identity.
    pub fn resolve_all(&mut self, records: &mut [FlowRecord]) {
        if let Some(e) = self.resolver.refresh() {
            tracing::error!("{e}; records not attributed by the maps stay unattributed");
        }
        records.iter_mut().for_each(|r| self.resolver.resolve(r));
    }

    /// Completes one record's identity (without looking at the file again).
    pub fn resolve(&mut self, record: &mut FlowRecord) {
        self.resolver.resolve(record);
    }

    /// SIGHUP: looks at the certificate file again now, and says what was found.
    pub fn refresh_now(&mut self) {
        if self.certificate.is_none() {
            return;
        }
        let before = self.resolver.counters().certificate_reloads;
        match self.resolver.refresh() {
            Some(e) => {
                tracing::error!("SIGHUP: {e}; records not attributed by the maps stay unattributed")
            }
            None if self.resolver.counters().certificate_reloads > before => {
                tracing::info!("SIGHUP: identity certificate reloaded")
            }
            None => tracing::info!("SIGHUP: identity certificate unchanged"),
        }
    }

    /// The counts so far, replaced resolvers included.
    pub fn counters(&self) -> IdentityCounters {
        sum(self.earlier, self.resolver.counters())
    }
}

fn resolver(certificate: Option<&Path>, field: CertField) -> IdentityResolver {
    let certificate = certificate.map(|path| {
        let field = match field {
            CertField::SanUri => IdentityField::SanUri,
            CertField::Cn => IdentityField::SubjectCn,
        };
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
    IdentityResolver::new(certificate)
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
    use flow_capture::{IdentitySource, UnattributedReason};

    use super::*;

    fn unattributed() -> FlowRecord {
        FlowRecord {
            local: "10.0.0.1:443".parse().expect("addr"),
            remote: "10.0.0.2:50000".parse().expect("addr"),
            direction: flow_capture::Direction::Inbound,
            t_start: None,
            t_end: SystemTime::now(),
            close_state: flow_capture::TcpState(7),
            close_reason: flow_capture::CloseReason::Normal,
            stats: flow_capture::SocketStats::default(),
            local_workload_id: None,
            identity_source: IdentitySource::None(UnattributedReason::NoMatch),
            incomplete: false,
        }
    }

    #[test]
    fn counts_survive_a_replacement() {
        let mut r = ReloadableResolver::new(None, CertField::SanUri);
        r.resolve_all(&mut [unattributed(), unattributed()]);
        assert_eq!(r.counters().unattributed_no_match, 2);
        let missing = Path::new("/nonexistent/fe-host.pem");
        r.replace(Some(missing), CertField::Cn);
        assert_eq!(r.settings(), (Some(missing), CertField::Cn));
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
}
