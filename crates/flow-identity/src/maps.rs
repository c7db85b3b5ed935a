//! The writer API of the identity maps, for the agents that own the mappings.
//!
//! Lifecycle of entries:
//! - **IP map** (capacity 16,384): the container IP manager inserts an entry when it
//!   assigns an address to a workload and removes it when it releases the address.
//!   Nothing else removes entries; a full map refuses new ones with
//!   [`IdentityError::MapFull`], so a leaking writer is noticed instead of silently
//!   evicting live mappings.
//! - **Connect map** (capacity 65,536, LRU): the container runtime inserts an entry on
//!   each intercepted `connect()`, before the connection is established, and should
//!   remove it when the connection closes. The kernel reads it once, at establishment,
//!   so an entry only has to live that long; entries nobody removes are recycled by
//!   the LRU, so stale ones cannot fill the map.
//!
//! Changing or removing an entry never changes the identity of connections already
//! established: the kernel program keeps what it resolved with each socket.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4},
    path::{Path, PathBuf},
};

use aya::maps::{HashMap, Map, MapData, MapError};
use flow_common::{ConnectKey, IpKey, WorkloadValue};
use flow_record::{InvalidWorkloadValue, WorkloadId};

use crate::{
    error::IdentityError,
    pins::{self, CONNECT_MAP, IP_MAP},
};

/// The pinned identity maps, opened for writing.
pub struct IdentityMaps {
    ip: PinnedMap<IpKey>,
    connect: PinnedMap<ConnectKey>,
}

/// One pinned map of workload values, with its path and capacity for error messages.
struct PinnedMap<K> {
    path: PathBuf,
    capacity: u32,
    map: HashMap<MapData, K, WorkloadValue>,
}

impl<K: aya::Pod> PinnedMap<K> {
    fn new(data: MapData, path: PathBuf, capacity: u32) -> Result<PinnedMap<K>, IdentityError> {
        let map = Map::from_map_data(data)
            .and_then(HashMap::try_from)
            .map_err(|source| map_error("opening", &path, source))?;
        Ok(PinnedMap {
            path,
            capacity,
            map,
        })
    }

    fn insert(&mut self, key: K, id: &WorkloadId) -> Result<(), IdentityError> {
        self.map.insert(key, id.to_value(), 0).map_err(|source| {
            if is_full(&source) {
                IdentityError::MapFull {
                    path: self.path.clone(),
                    capacity: self.capacity,
                }
            } else {
                map_error("inserting", &self.path, source)
            }
        })
    }

    fn remove(&mut self, key: &K) -> Result<bool, IdentityError> {
        match self.map.remove(key) {
            Ok(()) => Ok(true),
            Err(e) if is_missing(&e) => Ok(false),
            Err(source) => Err(map_error("removing", &self.path, source)),
        }
    }

    fn entries(&self) -> Result<Vec<(K, MapValue)>, IdentityError> {
        self.map
            .iter()
            .map(|item| {
                item.map(|(k, v)| (k, WorkloadId::decode_value(&v)))
                    .map_err(|source| map_error("listing", &self.path, source))
            })
            .collect()
    }
}

/// A value read from an identity map: the workload, or (for a value another tool wrote
/// that is not a valid workload ID) what it holds and why it is refused. The kernel
/// program's records carry `invalid_map_value` for the same values.
pub type MapValue = Result<WorkloadId, InvalidWorkloadValue>;

fn map_error(operation: &'static str, path: &Path, source: MapError) -> IdentityError {
    IdentityError::Map {
        operation,
        path: path.to_path_buf(),
        source,
    }
}

fn ip_key(ip: IpAddr) -> IpKey {
    match ip {
        IpAddr::V4(v4) => IpKey::v4(v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpKey::v4(v4.octets()),
            None => IpKey { addr: v6.octets() },
        },
    }
}

fn key_ip(key: &IpKey) -> IpAddr {
    let v6 = Ipv6Addr::from(key.addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

fn connect_key(local: SocketAddrV4) -> ConnectKey {
    ConnectKey {
        addr: local.ip().octets(),
        port: local.port(),
        _pad: 0,
    }
}

fn errno_is(e: &MapError, errno: rustix::io::Errno) -> bool {
    matches!(e, MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(errno.raw_os_error()))
}

fn is_full(e: &MapError) -> bool {
    errno_is(e, rustix::io::Errno::TOOBIG)
}

fn is_missing(e: &MapError) -> bool {
    matches!(e, MapError::KeyNotFound) || errno_is(e, rustix::io::Errno::NOENT)
}

impl IdentityMaps {
    /// Opens the maps pinned under `dir` (e.g. `/sys/fs/bpf/flowexporter`), creating
    /// and pinning them first when the exporter has not started yet. A map there with
    /// another definition is refused.
    pub fn open_or_create(dir: impl AsRef<Path>) -> Result<IdentityMaps, IdentityError> {
        let dir = dir.as_ref();
        let (ip, connect) = pins::open_or_create_pinned(dir)?;
        Ok(IdentityMaps {
            ip: PinnedMap::new(ip, pins::pin_path(dir, &IP_MAP), IP_MAP.max_entries)?,
            connect: PinnedMap::new(
                connect,
                pins::pin_path(dir, &CONNECT_MAP),
                CONNECT_MAP.max_entries,
            )?,
        })
    }

    /// Maps a local address (IPv4 or IPv6) to a workload, replacing any previous one.
    pub fn set_ip(&mut self, ip: IpAddr, id: &WorkloadId) -> Result<(), IdentityError> {
        self.ip.insert(ip_key(ip), id)
    }

    /// Removes a local address; returns whether it was mapped.
    pub fn remove_ip(&mut self, ip: IpAddr) -> Result<bool, IdentityError> {
        self.ip.remove(&ip_key(ip))
    }

    /// Every mapped local address and its workload (or the invalid value found there),
    /// sorted by address.
    pub fn ips(&self) -> Result<Vec<(IpAddr, MapValue)>, IdentityError> {
        let mut out: Vec<_> = self
            .ip
            .entries()?
            .into_iter()
            .map(|(k, v)| (key_ip(&k), v))
            .collect();
        out.sort_by_key(|(ip, _)| *ip);
        Ok(out)
    }

    /// Maps a (local IPv4, local port) pair to a workload, replacing any previous one.
    pub fn set_connect(
        &mut self,
        local: SocketAddrV4,
        id: &WorkloadId,
    ) -> Result<(), IdentityError> {
        self.connect.insert(connect_key(local), id)
    }

    /// Removes a (local IPv4, local port) pair; returns whether it was mapped.
    pub fn remove_connect(&mut self, local: SocketAddrV4) -> Result<bool, IdentityError> {
        self.connect.remove(&connect_key(local))
    }

    /// Every mapped (local IPv4, local port) pair and its workload (or the invalid
    /// value found there), sorted.
    pub fn connects(&self) -> Result<Vec<(SocketAddrV4, MapValue)>, IdentityError> {
        let mut out: Vec<_> = self
            .connect
            .entries()?
            .into_iter()
            .map(|(k, v)| (SocketAddrV4::new(Ipv4Addr::from(k.addr), k.port), v))
            .collect();
        out.sort_by_key(|(a, _)| *a);
        Ok(out)
    }
}

/// The connect-map key for a local address and port: IPv4 (or IPv4-mapped IPv6) only.
pub fn connect_addr(ip: IpAddr, port: u16) -> Result<SocketAddrV4, IdentityError> {
    match ip {
        IpAddr::V4(v4) => Ok(SocketAddrV4::new(v4, port)),
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(|v4| SocketAddrV4::new(v4, port))
            .ok_or(IdentityError::NotIpv4 { addr: ip }),
    }
}
