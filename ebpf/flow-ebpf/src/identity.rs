//! Identity lookups in the kernel: the connect map, then the IP map.

use core::{mem::MaybeUninit, ptr};

use aya_ebpf::{
    btf_maps::{HashMap, LruHashMap},
    macros::btf_map,
};
use flow_common::{
    ConnectKey, IpKey, WorkloadValue,
    identity::{CONNECT_MAP_ENTRIES, IP_MAP_ENTRIES, source},
};

/// Local address -> workload, written by a container IP manager. User space may pin it
/// and size it at load time.
#[btf_map]
pub static FLOW_IP_MAP: HashMap<IpKey, WorkloadValue, { IP_MAP_ENTRIES as usize }> = HashMap::new();

/// (local IPv4, local port) -> workload, written by a container runtime on each
/// intercepted connect. An LRU, so entries nobody removes are recycled.
#[btf_map]
pub static FLOW_CONNECT_MAP: LruHashMap<
    ConnectKey,
    WorkloadValue,
    { CONNECT_MAP_ENTRIES as usize },
> = LruHashMap::new();

/// A socket's local address as the kernel keeps it: 32-bit words in network byte
/// order.
#[derive(Clone, Copy)]
pub enum LocalAddr {
    /// `skc_rcv_saddr`.
    V4(u32),
    /// `skc_v6_rcv_saddr.s6_addr32`.
    V6([u32; 4]),
}

/// The third word of an IPv4-mapped IPv6 address (`::ffff:0:0/96`) as it lies in memory.
const V4_MAPPED: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// An IP-map key from four address words.
#[inline(always)]
fn ip_key(words: [u32; 4]) -> IpKey {
    let mut key = MaybeUninit::<IpKey>::uninit();
    let p = key.as_mut_ptr().cast::<u32>();
    // SAFETY: `IpKey` is 16 bytes aligned to 4: four words, all written here.
    unsafe {
        for (i, w) in words.into_iter().enumerate() {
            ptr::write_volatile(p.add(i), w);
        }
        key.assume_init()
    }
}

/// Looks up the workload owning a local end; returns the source and a pointer to the
/// map's value (valid for the rest of this program run).
#[inline(always)]
pub fn resolve(local: LocalAddr, port: u16) -> (u8, *const WorkloadValue) {
    let words = match local {
        LocalAddr::V4(a) => [0, 0, V4_MAPPED, a],
        LocalAddr::V6(words) => words,
    };
    if let [0, 0, V4_MAPPED, addr] = words {
        let key = ConnectKey {
            addr: addr.to_ne_bytes(),
            port,
            _pad: 0,
        };
        if let Some(v) = FLOW_CONNECT_MAP.get_ptr(key) {
            return (source::CONNECT_MAP, v);
        }
    }
    let key = ip_key(words);
    match FLOW_IP_MAP.get_ptr(key) {
        Some(v) => (source::IP_MAP, v),
        None => (source::NONE, ptr::null()),
    }
}
