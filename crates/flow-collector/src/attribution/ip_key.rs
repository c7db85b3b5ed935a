//! Which address a record's IP means: global, or scoped to the host that reported it.
//!
//! Loopback (127/8, `::1`), link-local (169.254/16, `fe80::/10`) and unspecified
//! addresses mean something different on every host, so they are keyed by
//! `(host, ip)`; every other address is global. Hosts are interned to small numbers,
//! one per distinct `batch.host` (the exporters' host IDs, a bounded set).

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    sync::Arc,
};

/// An interned host ID (from 1; 0 is never used, so that scope 0 means global).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct HostId(u32);

/// An IP as a map key: the address (IPv4 as IPv4-mapped IPv6) and its scope (0:
/// global, else the host it belongs to). 24 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct IpKey {
    hi: u64,
    lo: u64,
    scope: u32,
}

impl IpKey {
    /// The key of `ip` as reported by `host`.
    pub(crate) fn new(ip: IpAddr, host: HostId) -> IpKey {
        let ip = ip.to_canonical();
        let scoped = match ip {
            IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified(),
            IpAddr::V6(v6) => {
                v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80
            }
        };
        let bits = match ip {
            IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
            IpAddr::V6(v6) => u128::from(v6),
        };
        IpKey {
            hi: (bits >> 64) as u64,
            lo: bits as u64,
            scope: if scoped { host.0 } else { 0 },
        }
    }

    /// The address.
    pub(crate) fn ip(&self) -> IpAddr {
        let bits = (u128::from(self.hi) << 64) | u128::from(self.lo);
        Ipv6Addr::from(bits).to_canonical()
    }

    /// Whether the address is scoped to the host that reported it.
    pub(crate) fn is_scoped(&self) -> bool {
        self.scope != 0
    }
}

/// The hosts seen so far, interned.
#[derive(Debug, Default)]
pub(crate) struct Hosts {
    ids: HashMap<Arc<str>, HostId>,
}

impl Hosts {
    /// The ID of `host`, interned on first sight.
    pub(crate) fn intern(&mut self, host: &str) -> HostId {
        if let Some(id) = self.ids.get(host) {
            return *id;
        }
        let id = HostId(u32::try_from(self.ids.len() + 1).unwrap_or(u32::MAX));
        self.ids.insert(Arc::from(host), id);
        id
    }

    /// Hosts interned.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test IP")
    }

    #[test]
    fn scoped_addresses_belong_to_their_host() {
        let mut hosts = Hosts::default();
        let (a, b) = (hosts.intern("host-a"), hosts.intern("host-b"));
        assert_eq!(hosts.intern("host-a"), a);
        assert_eq!(hosts.len(), 2);
        for scoped in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "169.254.169.254",
            "fe80::1",
            "febf::1",
            "0.0.0.0",
            "::",
            "::ffff:127.0.0.1",
        ] {
            let (ka, kb) = (IpKey::new(ip(scoped), a), IpKey::new(ip(scoped), b));
            assert_ne!(ka, kb, "{scoped}");
            assert!(ka.is_scoped(), "{scoped}");
            assert_eq!(ka.ip(), ip(scoped).to_canonical());
        }
        for global in [
            "10.0.0.1",
            "8.8.8.8",
            "2001:db8::1",
            "fec0::1",
            "169.253.0.1",
        ] {
            let (ka, kb) = (IpKey::new(ip(global), a), IpKey::new(ip(global), b));
            assert_eq!(ka, kb, "{global}");
            assert!(!ka.is_scoped());
            assert_eq!(ka.ip(), ip(global));
        }
        // IPv4 and its mapped IPv6 form are one address.
        assert_eq!(
            IpKey::new(ip("10.1.2.3"), a),
            IpKey::new(ip("::ffff:10.1.2.3"), a)
        );
        assert_eq!(std::mem::size_of::<IpKey>(), 24);
    }
}
