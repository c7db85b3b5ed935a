//! The compiled kernel program, embedded at build time.
//!
//! `ebpf/flowexporter.bpf.o` is committed and rebuilt byte-reproducibly from
//! `ebpf/flow-ebpf` by `ebpf/build-object.sh`, so this crate builds on stable Rust with
//! neither a nightly toolchain nor bpf-linker installed.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// The kernel object's bytes (ELF, BPF little-endian, with BTF), 8-byte aligned.
pub static KERNEL_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../ebpf/flowexporter.bpf.o"
));

/// The object's build id: the first 16 hex digits of its SHA-256 (what
/// `sha256sum ebpf/flowexporter.bpf.o` prints first).
pub fn kernel_object_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let digest = Sha256::digest(KERNEL_OBJECT);
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_is_an_elf_with_the_program() {
        assert_eq!(&KERNEL_OBJECT[..4], b"\x7fELF");
        assert_eq!(kernel_object_id().len(), 16);
        let needle = b"inet_sock_set_state";
        assert!(KERNEL_OBJECT.windows(needle.len()).any(|w| w == needle));
    }
}
