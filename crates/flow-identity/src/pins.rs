//! The pinned identity maps shared between the exporter and the agents that write
//! them: where they live, their exact definition, and the checks made before using a
//! map found at a pin path.
//!
//! | pin path (under the pin directory) | kernel map | key | value |
//! | --- | --- | --- | --- |
//! | `ip_map` | `FLOW_IP_MAP`, hash, 16,384 entries | `IpKey` (16 bytes) | `WorkloadValue` (64 bytes) |
//! | `connect_map` | `FLOW_CONNECT_MAP`, LRU hash, 65,536 entries | `ConnectKey` (8 bytes) | `WorkloadValue` (64 bytes) |
//!
//! Whichever side starts first (the exporter or a writer) creates both maps with this
//! definition and pins them; the other opens them. A map found at a pin path with
//! another type, key size or value size is refused, never written.
//!
//! The capture core (`flow-capture`) pins the maps of its kernel program at these paths
//! and reuses the ones found there; this crate creates them for a writer that starts
//! first, from the same definition, without the kernel program.

use std::{
    io,
    path::{Path, PathBuf},
};

use aya::maps::{MapData, MapInfo, MapType};
use aya_obj::generated::bpf_map_type;
use flow_common::{
    ConnectKey, IpKey, WorkloadValue,
    identity::{CONNECT_MAP_ENTRIES, IP_MAP_ENTRIES},
};

use crate::error::IdentityError;

/// The default pin directory (on the BPF filesystem).
pub const DEFAULT_IDENTITY_PIN_DIR: &str = "/sys/fs/bpf/flowexporter";

/// One identity map's definition.
#[derive(Clone, Copy, Debug)]
pub struct IdentityMapSpec {
    /// The map's name in the kernel object.
    pub name: &'static str,
    /// Its file name under the pin directory.
    pub file: &'static str,
    /// Its type.
    pub map_type: MapType,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Capacity, in entries.
    pub max_entries: u32,
    /// Creation flags (`BPF_F_*`).
    pub flags: u32,
}

/// The IP map: local address -> workload.
pub const IP_MAP: IdentityMapSpec = IdentityMapSpec {
    name: "FLOW_IP_MAP",
    file: "ip_map",
    map_type: MapType::Hash,
    key_size: size_of::<IpKey>() as u32,
    value_size: size_of::<WorkloadValue>() as u32,
    max_entries: IP_MAP_ENTRIES,
    flags: 0,
};

/// The connect map: (local IPv4, local port) -> workload.
pub const CONNECT_MAP: IdentityMapSpec = IdentityMapSpec {
    name: "FLOW_CONNECT_MAP",
    file: "connect_map",
    map_type: MapType::LruHash,
    key_size: size_of::<ConnectKey>() as u32,
    value_size: size_of::<WorkloadValue>() as u32,
    max_entries: CONNECT_MAP_ENTRIES,
    flags: 0,
};

/// Both identity maps, IP map first.
pub const IDENTITY_MAPS: [IdentityMapSpec; 2] = [IP_MAP, CONNECT_MAP];

/// `BPF_FS_MAGIC` of `<linux/magic.h>`: what statfs(2) reports for bpffs.
const BPF_FS_MAGIC: u64 = 0xcafe_4a11;

/// The pin path of `spec` under `dir`.
pub fn pin_path(dir: &Path, spec: &IdentityMapSpec) -> PathBuf {
    dir.join(spec.file)
}

/// Fails unless `dir` is (or will be created) on a BPF filesystem (statfs(2) of it,
/// or of its nearest existing ancestor): where the identity maps can be pinned.
pub fn check_bpffs(dir: &Path) -> Result<(), IdentityError> {
    // The directory may not exist yet: check the nearest existing ancestor.
    let mut probe = dir;
    while !probe.exists() {
        probe = probe.parent().unwrap_or(Path::new("/"));
    }
    let st = rustix::fs::statfs(probe).map_err(|errno| IdentityError::PinPath {
        path: dir.to_path_buf(),
        problem: format!("cannot be inspected (statfs of {})", probe.display()),
        source: Some(io::Error::from(errno)),
    })?;
    // `f_type`'s width and sign differ between architectures; the magic fits any.
    if st.f_type as u64 != BPF_FS_MAGIC {
        return Err(IdentityError::PinPath {
            path: dir.to_path_buf(),
            problem: "is not on a BPF filesystem (mount one: mount -t bpf bpf /sys/fs/bpf)".into(),
            source: None,
        });
    }
    Ok(())
}

/// Checks the map pinned at `spec`'s path under `dir`, if any: `Ok(true)` when it is
/// there and matches, `Ok(false)` when nothing is pinned there.
pub fn check_pinned(dir: &Path, spec: &IdentityMapSpec) -> Result<bool, IdentityError> {
    let path = pin_path(dir, spec);
    if !path.exists() {
        return Ok(false);
    }
    let info = MapInfo::from_pin(&path).map_err(|source| IdentityError::PinnedMap {
        path: path.clone(),
        source,
    })?;
    let found_type = info.map_type().map_err(|source| IdentityError::PinnedMap {
        path: path.clone(),
        source,
    })?;
    if found_type != spec.map_type
        || info.key_size() != spec.key_size
        || info.value_size() != spec.value_size
    {
        return Err(IdentityError::PinnedMapMismatch {
            path,
            expected: format!(
                "{:?} map, {}-byte keys, {}-byte values",
                spec.map_type, spec.key_size, spec.value_size
            ),
            found: format!(
                "{found_type:?} map, {}-byte keys, {}-byte values",
                info.key_size(),
                info.value_size()
            ),
        });
    }
    Ok(true)
}

/// Prepares `dir` for pinning (on bpffs, created if missing) and checks any maps
/// already pinned there.
pub fn prepare_pin_dir(dir: &Path) -> Result<(), IdentityError> {
    check_bpffs(dir)?;
    std::fs::create_dir_all(dir).map_err(|source| IdentityError::PinPath {
        path: dir.to_path_buf(),
        problem: "cannot be created".into(),
        source: Some(source),
    })?;
    for spec in IDENTITY_MAPS {
        check_pinned(dir, &spec)?;
    }
    Ok(())
}

/// Opens the identity maps pinned under `dir`, creating and pinning them (with the
/// exporter's definition) when they are not there yet. Returns the IP map and the
/// connect map.
pub fn open_or_create_pinned(dir: &Path) -> Result<(MapData, MapData), IdentityError> {
    prepare_pin_dir(dir)?;
    Ok((
        open_or_create(dir, &IP_MAP)?,
        open_or_create(dir, &CONNECT_MAP)?,
    ))
}

/// The kernel's number for the map types of the identity maps.
fn kernel_map_type(map_type: MapType) -> u32 {
    match map_type {
        MapType::LruHash => bpf_map_type::BPF_MAP_TYPE_LRU_HASH as u32,
        _ => bpf_map_type::BPF_MAP_TYPE_HASH as u32,
    }
}

/// Opens the map pinned for `spec` under `dir`, creating and pinning it first when
/// nothing is pinned there. Another process (an exporter, another writer) may pin the
/// same path at the same moment: then its map is the one used.
fn open_or_create(dir: &Path, spec: &IdentityMapSpec) -> Result<MapData, IdentityError> {
    let path = pin_path(dir, spec);
    if !check_pinned(dir, spec)? {
        // Creating a map needs no kernel object and no kernel BTF: only the
        // definition, which the capture core's tests check against its kernel object.
        let definition = aya_obj::Map::new_from_params(
            kernel_map_type(spec.map_type),
            spec.key_size,
            spec.value_size,
            spec.max_entries,
            spec.flags,
        );
        let map = MapData::create(definition, spec.name, None).map_err(|source| {
            IdentityError::CreateMap {
                path: path.clone(),
                source,
            }
        })?;
        match map.pin(&path) {
            Ok(()) => {}
            // Pinned by someone else between our look and our pin: theirs is used (and
            // checked below like any map found there).
            Err(aya::pin::PinError::SyscallError(s))
                if s.io_error.raw_os_error() == Some(rustix::io::Errno::EXIST.raw_os_error()) => {}
            Err(source) => {
                return Err(IdentityError::PinMap {
                    path: path.clone(),
                    source,
                });
            }
        }
        check_pinned(dir, spec)?;
    }
    MapData::from_pin(&path).map_err(|source| IdentityError::PinnedMap { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_paths_are_the_file_names_under_the_dir() {
        let dir = Path::new(DEFAULT_IDENTITY_PIN_DIR);
        assert_eq!(
            pin_path(dir, &IP_MAP),
            Path::new("/sys/fs/bpf/flowexporter/ip_map")
        );
        assert_eq!(
            pin_path(dir, &CONNECT_MAP),
            Path::new("/sys/fs/bpf/flowexporter/connect_map")
        );
    }

    #[test]
    fn a_directory_off_bpffs_is_refused_with_the_way_out() {
        let dir = std::env::temp_dir().join("fe-pins-not-bpffs/deeper");
        let Err(e) = prepare_pin_dir(&dir) else {
            panic!("a temporary directory is not on bpffs");
        };
        let text = e.to_string();
        assert!(
            text.contains("fe-pins-not-bpffs/deeper") && text.contains("mount -t bpf"),
            "{text}"
        );
        assert!(!dir.exists(), "nothing is created off bpffs");
    }
}
