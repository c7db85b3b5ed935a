//! Identity lookups in the kernel: the connect map, then the IP map.

use aya_ebpf::{
    btf_maps::{HashMap, LruHashMap},
    macros::btf_map,
};
use flow_common::{
    ConnectKey, IpKey, WorkloadValue,
    identity::{CONNECT_MAP_ENTRIES, IP_MAP_ENTRIES, source},
    tcp::AF_INET,
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

/// Looks up the workload owning a local end; returns the source and a pointer to the
/// map's value (valid for the rest of this program run).
#[inline(always)]
pub fn resolve(family: u16, local: &[u8; 16], port: u16) -> (u8, *const WorkloadValue) {
    let v4 = if family == AF_INET {
        Some([local[0], local[1], local[2], local[3]])
    } else if local[..12] == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] {
        Some([local[12], local[13], local[14], local[15]])
    } else {
        None
    };
    if let Some(addr) = v4 {
        let key = ConnectKey {
            addr,
            port,
            _pad: 0,
        };
        if let Some(v) = FLOW_CONNECT_MAP.get_ptr(key) {
            return (source::CONNECT_MAP, v);
        }
    }
    let key = match v4 {
        Some(a) => IpKey::v4(a),
        None => IpKey { addr: *local },
    };
    match FLOW_IP_MAP.get_ptr(key) {
        Some(v) => (source::IP_MAP, v),
        None => (source::NONE, core::ptr::null()),
    }
}
