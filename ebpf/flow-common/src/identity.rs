//! The identity maps: which workload owns a local address, written by other agents
//! (a container IP manager, a container runtime) and read by the kernel program when a
//! socket is established.

/// Longest workload ID, in bytes of UTF-8.
pub const WORKLOAD_ID_MAX: usize = 64;

/// A workload ID as stored in the maps and records: UTF-8, NUL-padded to 64 bytes.
/// An ID may not contain NUL, so its length is the offset of the first NUL (or 64).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkloadValue {
    /// The ID's bytes, then NULs.
    pub id: [u8; WORKLOAD_ID_MAX],
}

impl WorkloadValue {
    /// An empty value (no workload).
    pub const EMPTY: WorkloadValue = WorkloadValue {
        id: [0; WORKLOAD_ID_MAX],
    };

    /// The ID's bytes, without the padding.
    pub fn as_bytes(&self) -> &[u8] {
        let len = self
            .id
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(WORKLOAD_ID_MAX);
        &self.id[..len]
    }
}

/// Key of the IP map (`FLOW_IP_MAP`): a local address as 16 bytes in network order;
/// an IPv4 address is written IPv4-mapped (`::ffff:a.b.c.d`).
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpKey {
    /// The address.
    pub addr: [u8; 16],
}

impl IpKey {
    /// The key of an IPv4 address (network-order bytes).
    pub const fn v4(a: [u8; 4]) -> IpKey {
        IpKey {
            addr: [
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
            ],
        }
    }
}

/// Key of the connect map (`FLOW_CONNECT_MAP`): a local IPv4 address and local port,
/// as the container runtime sees them on an intercepted `connect()`.
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnectKey {
    /// Local IPv4 address, network order.
    pub addr: [u8; 4],
    /// Local port, host order.
    pub port: u16,
    /// Explicit padding; always zero.
    pub _pad: u16,
}

/// Values of `identity_source` in records and socket entries.
pub mod source {
    /// Not resolved in the kernel.
    pub const NONE: u8 = 0;
    /// From the connect map.
    pub const CONNECT_MAP: u8 = 1;
    /// From the IP map.
    pub const IP_MAP: u8 = 2;
}

/// Default capacity of the IP map (entries are managed by their writer).
pub const IP_MAP_ENTRIES: u32 = 16_384;
/// Default capacity of the connect map (an LRU: stale entries are recycled).
pub const CONNECT_MAP_ENTRIES: u32 = 65_536;

#[cfg(feature = "user")]
// SAFETY: plain-old-data: `#[repr(C)]`, byte arrays only.
unsafe impl aya::Pod for WorkloadValue {}
#[cfg(feature = "user")]
// SAFETY: plain-old-data: `#[repr(C)]`, byte arrays only.
unsafe impl aya::Pod for IpKey {}
#[cfg(feature = "user")]
// SAFETY: plain-old-data: `#[repr(C)]`, integer fields, explicit padding.
unsafe impl aya::Pod for ConnectKey {}

// The kernel program copies values and builds keys a word at a time; the sizes are
// part of the maps' definitions (pinned maps are checked against them).
const _: () = assert!(core::mem::size_of::<WorkloadValue>() == 64);
const _: () = assert!(core::mem::align_of::<WorkloadValue>() == 8);
const _: () = assert!(core::mem::size_of::<IpKey>() == 16);
const _: () = assert!(core::mem::size_of::<ConnectKey>() == 8);
