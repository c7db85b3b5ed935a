//! Which address a record's IP means: global, or scoped to the host that reported it.
//!
//! Loopback (127/8, `::1`), link-local (169.254/16, `fe80::/10`) and unspecified
//! addresses mean something different on every host, so they are keyed by
//! `(host, ip)`; every other address is global. Hosts are interned to small numbers,
//! one per distinct `batch.host` (the exporters' host IDs, a bounded set).

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

/// An interned host ID (from 1; 0 is never used, so that scope 0 means global).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct HostId(u32);

impl HostId {
    /// A host ID that only marks a scoped key as scoped (routing hashes the host's
    /// name instead of its per-process number).
    pub(crate) const SCOPED_MARK: HostId = HostId(1);

    /// Its number (from 1, in the order hosts were first seen).
    pub(crate) fn index(self) -> u32 {
        self.0
    }
}

/// An IP as a map key: the address (IPv4 as IPv4-mapped IPv6) in four big-endian
/// 32-bit words, then its scope (0: global, else the host it belongs to). 20 bytes,
/// 4-aligned, so that a 4-tuple of two of them and the ports packs into 44 bytes.
#[derive(Clone, Copy, Debug, Eq, PartialOrd, Ord)]
pub(crate) struct IpKey {
    words: [u32; 5],
}

impl Hash for IpKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.words.hash(state);
    }
}

impl PartialEq for IpKey {
    /// Word by word, without a branch or a call to `memcmp`.
    #[inline]
    fn eq(&self, other: &IpKey) -> bool {
        words_eq(&self.words, &other.words)
    }
}

/// Whether two arrays of words are equal, compared without a branch or a call.
#[inline]
pub(crate) fn words_eq<const N: usize>(a: &[u32; N], b: &[u32; N]) -> bool {
    a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl IpKey {
    /// The key of `ip` as reported by `host`.
    #[inline]
    pub(crate) fn new(ip: IpAddr, host: HostId) -> IpKey {
        let (bits, scoped) = match ip {
            // The common case, without the round trip through IPv6.
            IpAddr::V4(v4) => (u32::from(v4), is_scoped_v4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => (u32::from(v4), is_scoped_v4(v4)),
                None => {
                    let scoped = v6.is_loopback()
                        || v6.is_unspecified()
                        || (v6.segments()[0] & 0xffc0) == 0xfe80;
                    let b = u128::from(v6);
                    return IpKey {
                        words: [
                            (b >> 96) as u32,
                            (b >> 64) as u32,
                            (b >> 32) as u32,
                            b as u32,
                            if scoped { host.0 } else { 0 },
                        ],
                    };
                }
            },
        };
        IpKey {
            words: [0, 0, 0xffff, bits, if scoped { host.0 } else { 0 }],
        }
    }

    /// The address.
    pub(crate) fn ip(&self) -> IpAddr {
        let w = &self.words;
        let bits = (u128::from(w[0]) << 96)
            | (u128::from(w[1]) << 64)
            | (u128::from(w[2]) << 32)
            | u128::from(w[3]);
        Ipv6Addr::from(bits).to_canonical()
    }

    /// Whether the address is scoped to the host that reported it.
    pub(crate) fn is_scoped(&self) -> bool {
        self.words[4] != 0
    }

    /// The five words (for keys built of several IPs).
    pub(crate) fn words(&self) -> [u32; 5] {
        self.words
    }
}

/// Loopback, link-local or unspecified: an IPv4 address scoped to its host.
#[inline]
fn is_scoped_v4(v4: Ipv4Addr) -> bool {
    v4.is_loopback() || v4.is_link_local() || v4.is_unspecified()
}

/// The hosts seen so far, interned.
#[derive(Debug, Default)]
pub(crate) struct Hosts {
    ids: HashMap<Arc<str>, HostId>,
    /// The host of each ID, at `id - 1`.
    names: Vec<Arc<str>>,
}

impl Hosts {
    /// The ID of `host`, interned on first sight.
    pub(crate) fn intern(&mut self, host: &str) -> HostId {
        if let Some(id) = self.ids.get(host) {
            return *id;
        }
        let id = HostId(u32::try_from(self.ids.len() + 1).unwrap_or(u32::MAX));
        let name: Arc<str> = Arc::from(host);
        self.ids.insert(Arc::clone(&name), id);
        self.names.push(name);
        id
    }

    /// The host an ID stands for.
    pub(crate) fn name(&self, id: HostId) -> Option<&str> {
        let index = usize::try_from(id.0).ok()?.checked_sub(1)?;
        self.names.get(index).map(|n| &**n)
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
        assert_eq!(hosts.name(a), Some("host-a"));
        assert_eq!(hosts.name(b), Some("host-b"));
        assert_eq!(hosts.name(HostId(0)), None);
        assert_eq!(hosts.name(HostId(3)), None);
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
        assert_eq!(std::mem::size_of::<IpKey>(), 20);
    }
}
