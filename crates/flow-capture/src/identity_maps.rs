//! The pinned identity maps shared with other agents. Their definitions, pin paths and
//! checks live in `flow-identity` ([`flow_identity::pins`], re-exported here); this
//! module is the loader's side: pinning the kernel program's maps there while other
//! processes may be doing the same.

use std::path::Path;

use aya::EbpfLoader;
use flow_identity::pins;
pub use flow_identity::pins::{
    CONNECT_MAP, DEFAULT_IDENTITY_PIN_DIR, IDENTITY_MAPS, IP_MAP, IdentityMapSpec, check_pinned,
    open_or_create_pinned, pin_path,
};

use crate::error::CaptureError;

/// Prepares `dir` for pinning and checks any maps already pinned there.
pub(crate) fn prepare_pin_dir(dir: &Path) -> Result<(), CaptureError> {
    Ok(pins::prepare_pin_dir(dir)?)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::KERNEL_OBJECT;

    /// A writer that starts first creates the maps from `flow-identity`'s definitions,
    /// without the kernel object: they must be the kernel program's own.
    #[test]
    fn the_definitions_are_the_kernel_objects_maps() {
        let object = aya_obj::Object::parse(KERNEL_OBJECT).expect("the bundled object parses");
        for spec in IDENTITY_MAPS {
            let map = object
                .maps
                .get(spec.name)
                .unwrap_or_else(|| panic!("the kernel object has no map {}", spec.name));
            let map_type = aya_obj::generated::bpf_map_type::try_from(map.map_type())
                .ok()
                .and_then(|t| aya::maps::MapType::try_from(t).ok())
                .expect("a known map type");
            assert_eq!(
                (
                    map_type,
                    map.key_size(),
                    map.value_size(),
                    map.max_entries(),
                    map.map_flags()
                ),
                (
                    spec.map_type,
                    spec.key_size,
                    spec.value_size,
                    spec.max_entries,
                    spec.flags
                ),
                "{}",
                spec.name
            );
        }
    }
}
