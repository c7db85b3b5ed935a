//! The pinned identity maps shared with other agents: where they live, their exact
//! definition, and the checks made before using a map found at a pin path.
//!
//! | pin path (under the pin directory) | kernel map | key | value |
//! | --- | --- | --- | --- |
//! | `ip_map` | `FLOW_IP_MAP`, hash, 16,384 entries | `IpKey` (16 bytes) | `WorkloadValue` (64 bytes) |
//! | `connect_map` | `FLOW_CONNECT_MAP`, LRU hash, 65,536 entries | `ConnectKey` (8 bytes) | `WorkloadValue` (64 bytes) |
//!
//! Whichever side starts first (the exporter or a writer) creates both maps with this
//! definition and pins them; the other opens them. A map found at a pin path with
//! another type, key size or value size is refused, never written.

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use aya::{
    EbpfLoader,
    maps::{MapData, MapInfo, MapType},
};
use flow_common::{ConnectKey, IpKey, WorkloadValue};

use crate::{error::CaptureError, object::KERNEL_OBJECT};

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
}

/// The IP map: local address -> workload.
pub const IP_MAP: IdentityMapSpec = IdentityMapSpec {
    name: "FLOW_IP_MAP",
    file: "ip_map",
    map_type: MapType::Hash,
    key_size: size_of::<IpKey>() as u32,
    value_size: size_of::<WorkloadValue>() as u32,
};

/// The connect map: (local IPv4, local port) -> workload.
pub const CONNECT_MAP: IdentityMapSpec = IdentityMapSpec {
    name: "FLOW_CONNECT_MAP",
    file: "connect_map",
    map_type: MapType::LruHash,
    key_size: size_of::<ConnectKey>() as u32,
    value_size: size_of::<WorkloadValue>() as u32,
};

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Fails unless `dir` is (or will be created) on a BPF filesystem.
fn check_bpffs(dir: &Path) -> Result<(), CaptureError> {
    // The directory may not exist yet: check the nearest existing ancestor.
    let mut probe = dir;
    while !probe.exists() {
        probe = probe.parent().unwrap_or(Path::new("/"));
    }
    let c = CString::new(probe.as_os_str().as_bytes()).map_err(|_| CaptureError::PinPath {
        path: dir.to_path_buf(),
        problem: "contains a NUL byte".into(),
        source: None,
    })?;
    // SAFETY: a zeroed statfs is a valid out-parameter; `c` is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(CaptureError::PinPath {
            path: dir.to_path_buf(),
            problem: "cannot be inspected".into(),
            source: Some(std::io::Error::last_os_error()),
        });
    }
    if st.f_type as i64 != BPF_FS_MAGIC {
        return Err(CaptureError::PinPath {
            path: dir.to_path_buf(),
            problem: "is not on a BPF filesystem (mount one: mount -t bpf bpf /sys/fs/bpf)".into(),
            source: None,
        });
    }
    Ok(())
}

/// The pin path of `spec` under `dir`.
pub fn pin_path(dir: &Path, spec: &IdentityMapSpec) -> PathBuf {
    dir.join(spec.file)
}

/// Checks the map pinned at `spec`'s path under `dir`, if any: `Ok(true)` when it is
/// there and matches, `Ok(false)` when nothing is pinned there.
pub fn check_pinned(dir: &Path, spec: &IdentityMapSpec) -> Result<bool, CaptureError> {
    let path = pin_path(dir, spec);
    if !path.exists() {
        return Ok(false);
    }
    let info = MapInfo::from_pin(&path).map_err(|source| CaptureError::PinnedMap {
        path: path.clone(),
        source,
    })?;
    let found_type = info.map_type().map_err(|source| CaptureError::PinnedMap {
        path: path.clone(),
        source,
    })?;
    if found_type != spec.map_type
        || info.key_size() != spec.key_size
        || info.value_size() != spec.value_size
    {
        return Err(CaptureError::PinnedMapMismatch {
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

/// Prepares `dir` for pinning and checks any maps already pinned there.
pub(crate) fn prepare_pin_dir(dir: &Path) -> Result<(), CaptureError> {
    check_bpffs(dir)?;
    std::fs::create_dir_all(dir).map_err(|source| CaptureError::PinPath {
        path: dir.to_path_buf(),
        problem: "cannot be created".into(),
        source: Some(source),
    })?;
    for spec in [IP_MAP, CONNECT_MAP] {
        check_pinned(dir, &spec)?;
    }
    Ok(())
}

/// Whether a load failed because another process pinned a map at the same path
/// between our check and our pin (`EEXIST`): loading again reuses its maps.
fn is_pin_race(e: &aya::EbpfError) -> bool {
    matches!(
        e,
        aya::EbpfError::MapError(aya::maps::MapError::PinError {
            error: aya::pin::PinError::SyscallError(s),
            ..
        }) if s.io_error.raw_os_error() == Some(libc::EEXIST)
    )
}

/// Loads `object` with `loader`, whose identity maps are set to be pinned under `dir`,
/// while other processes may be pinning the same maps at the same moment.
///
/// A load stops at the first map it fails to pin (`EEXIST`: someone else pinned it
/// between our look and our pin), possibly before it reached the other identity map,
/// which the other process may not have pinned yet either. Loading again reuses every
/// map pinned by then and pins the rest; each lost race means one more map got pinned,
/// so with two maps the third attempt cannot lose one.
pub(crate) fn load_sharing_pins(
    loader: &mut EbpfLoader<'_>,
    dir: &Path,
    object: &[u8],
) -> Result<aya::Ebpf, CaptureError> {
    const ATTEMPTS: usize = 3;
    let mut attempt = 1;
    loop {
        match loader.load(object) {
            Err(e) if is_pin_race(&e) && attempt < ATTEMPTS => {
                attempt += 1;
                // The maps pinned meanwhile must be ours to reuse.
                prepare_pin_dir(dir)?;
            }
            other => return other.map_err(CaptureError::Load),
        }
    }
}

/// Opens the identity maps pinned under `dir`, creating and pinning them (with the
/// exporter's exact definition) when they are not there yet. Returns the IP map and
/// the connect map.
pub fn open_or_create_pinned(dir: &Path) -> Result<(MapData, MapData), CaptureError> {
    prepare_pin_dir(dir)?;
    let ip_path = pin_path(dir, &IP_MAP);
    let connect_path = pin_path(dir, &CONNECT_MAP);
    if !ip_path.exists() || !connect_path.exists() {
        // Creating the kernel object's maps (without loading its programs) pins the
        // identity maps with exactly the definition the program uses; the other maps
        // are made minimal and freed again. Creating maps needs no kernel BTF: the copy
        // `EbpfLoader::new` parses (about 19 MB) is dropped at once.
        let mut loader = EbpfLoader::new();
        loader
            .btf(None)
            .map_pin_path(IP_MAP.name, &ip_path)
            .map_pin_path(CONNECT_MAP.name, &connect_path)
            .map_max_entries("FLOW_EVENTS", 4096)
            .map_max_entries("FLOW_SOCKETS", 1);
        drop(load_sharing_pins(&mut loader, dir, KERNEL_OBJECT)?);
    }
    let open = |path: PathBuf, spec: IdentityMapSpec| {
        check_pinned(dir, &spec)?;
        MapData::from_pin(&path).map_err(|source| CaptureError::PinnedMap { path, source })
    };
    Ok((open(ip_path, IP_MAP)?, open(connect_path, CONNECT_MAP)?))
}
