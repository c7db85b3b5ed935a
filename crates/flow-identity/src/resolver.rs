//! The resolver trait: what completes a record's local identity after the kernel, and
//! the resolver for those without a certificate.

use flow_record::{FlowRecord, IdentitySource, UnattributedReason};

use crate::counters::IdentityCounters;

/// Completes the local identity of records the kernel did not attribute.
///
/// The kernel program already applied the connect map and the IP map; a resolver
/// fills in what they left unattributed (from a certificate, say) and counts every
/// record's outcome. Implemented by [`CertificateResolver`](crate::CertificateResolver),
/// [`ReloadableResolver`](crate::ReloadableResolver) and [`NoIdentity`], and for
/// `Box<R>` and `&mut R` of any resolver.
pub trait IdentityResolver: Send {
    /// Completes one record's identity (kernel attribution, when present, wins).
    fn resolve(&mut self, record: &mut FlowRecord);

    /// Picks up changed sources (a replaced certificate file) if due, then resolves
    /// each record.
    fn resolve_all(&mut self, records: &mut [FlowRecord]) {
        for r in records {
            self.resolve(r)
        }
    }

    /// Looks at the sources again now (SIGHUP), logging what was found. Default:
    /// nothing.
    fn refresh_now(&mut self) {}

    /// What it resolved so far (never goes backwards).
    fn counters(&self) -> IdentityCounters;
}

/// Leaves the kernel's attribution as it is: records the maps did not attribute stay
/// unattributed (`no_match`). For embedders without an identity certificate, and for
/// tests. It counts nothing (its [`counters`](IdentityResolver::counters) stay zero);
/// `CertificateResolver::new(None)` resolves the same and counts the outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoIdentity;

impl NoIdentity {
    /// A resolver that adds nothing to the kernel's attribution (the same as
    /// `NoIdentity`).
    pub fn new() -> NoIdentity {
        NoIdentity
    }
}

impl IdentityResolver for NoIdentity {
    fn resolve(&mut self, _record: &mut FlowRecord) {}

    fn resolve_all(&mut self, _records: &mut [FlowRecord]) {}

    fn counters(&self) -> IdentityCounters {
        IdentityCounters::default()
    }
}

impl<R: IdentityResolver + ?Sized> IdentityResolver for Box<R> {
    fn resolve(&mut self, record: &mut FlowRecord) {
        (**self).resolve(record)
    }

    fn resolve_all(&mut self, records: &mut [FlowRecord]) {
        (**self).resolve_all(records)
    }

    fn refresh_now(&mut self) {
        (**self).refresh_now()
    }

    fn counters(&self) -> IdentityCounters {
        (**self).counters()
    }
}

impl<R: IdentityResolver + ?Sized> IdentityResolver for &mut R {
    fn resolve(&mut self, record: &mut FlowRecord) {
        (**self).resolve(record)
    }

    fn resolve_all(&mut self, records: &mut [FlowRecord]) {
        (**self).resolve_all(records)
    }

    fn refresh_now(&mut self) {
        (**self).refresh_now()
    }

    fn counters(&self) -> IdentityCounters {
        (**self).counters()
    }
}

/// Counts a resolved record's outcome.
pub(crate) fn count(c: &mut IdentityCounters, record: &FlowRecord) {
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

#[cfg(test)]
pub(crate) mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::CertificateResolver;

    /// A record the kernel attributed with `source` (`None(NoMatch)`: not at all).
    pub(crate) fn record(source: IdentitySource) -> FlowRecord {
        let record = flow_testkit::record()
            .t_start(None)
            .t_end(SystemTime::now());
        match source {
            IdentitySource::None(reason) => record.unattributed(reason),
            _ => record.workload("kernel", source),
        }
        .build()
    }

    fn unattributed() -> FlowRecord {
        record(IdentitySource::None(UnattributedReason::NoMatch))
    }

    #[test]
    fn no_identity_keeps_the_kernels_attribution() {
        let mut r = NoIdentity;
        let mut records = [unattributed(), record(IdentitySource::IpMap)];
        r.resolve_all(&mut records);
        r.resolve(&mut records[0]);
        assert_eq!(
            records[0].identity_source,
            IdentitySource::None(UnattributedReason::NoMatch)
        );
        assert_eq!(records[0].local_workload_id, None);
        assert_eq!(records[1].identity_source, IdentitySource::IpMap);
        assert_eq!(r.counters(), IdentityCounters::default());
    }

    #[test]
    fn boxes_and_borrows_forward_to_the_resolver() {
        fn feed<R: IdentityResolver>(mut resolver: R, record: &mut FlowRecord) -> R {
            resolver.resolve_all(std::slice::from_mut(record));
            resolver.refresh_now();
            resolver
        }
        let mut inner = CertificateResolver::new(None);
        feed(&mut inner, &mut unattributed());
        let boxed: Box<dyn IdentityResolver> = Box::new(inner);
        let boxed = feed(boxed, &mut record(IdentitySource::ConnectMap));
        let c = boxed.counters();
        assert_eq!((c.unattributed_no_match, c.connect_map), (1, 1));
    }
}
