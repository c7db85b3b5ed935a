//! Member offsets of `struct sock`, `inet_sock` and `tcp_sock`, read from the running
//! kernel's BTF so that one kernel object works on every kernel whose layout differs.

use std::path::Path;

use btf_rs::{Btf, Type};
use flow_common::KernelOffsets;

use crate::error::CaptureError;

/// Where the running kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The BTF name of the tracepoint the program attaches to.
pub const TRACEPOINT: &str = "inet_sock_set_state";

/// Parses the kernel BTF at `path`.
pub fn load_btf(path: &Path) -> Result<Btf, CaptureError> {
    std::fs::metadata(path).map_err(|source| CaptureError::NoBtf {
        path: path.to_path_buf(),
        source,
    })?;
    // The mmap backend parses on demand: the few lookups made at load time do not need
    // the whole kernel BTF parsed into memory.
    Btf::from_file_with_backend(path, btf_rs::Backend::Mmap).map_err(|source| {
        CaptureError::BadBtf {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Fails unless the kernel has the BTF tracepoint the program attaches to.
pub fn check_tracepoint(btf: &Btf) -> Result<(), CaptureError> {
    let name = format!("btf_trace_{TRACEPOINT}");
    match btf.resolve_ids_by_name(&name) {
        Ok(ids) if !ids.is_empty() => Ok(()),
        _ => Err(CaptureError::TracepointMissing { name: TRACEPOINT }),
    }
}

/// Resolves every offset the program needs. All offsets count from the start of
/// `struct sock`, which is the first member of `inet_sock` and so of `tcp_sock`.
pub fn resolve(btf: &Btf) -> Result<KernelOffsets, CaptureError> {
    let sock = Layout::new(btf, "sock")?;
    let inet = Layout::new(btf, "inet_sock")?;
    let tcp = Layout::new(btf, "tcp_sock")?;
    let socket = Layout::new(btf, "socket")?;
    Ok(KernelOffsets {
        sk_type: sock.member("sk_type", 2)?,
        skc_state: sock.member("skc_state", 1)?,
        socket_sk: socket.member("sk", 8)?,
        skc_family: sock.member("skc_family", 2)?,
        sk_protocol: sock.member("sk_protocol", 2)?,
        skc_daddr: sock.member("skc_daddr", 4)?,
        skc_rcv_saddr: sock.member("skc_rcv_saddr", 4)?,
        skc_dport: sock.member("skc_dport", 2)?,
        skc_v6_daddr: sock.member("skc_v6_daddr", 16)?,
        skc_v6_rcv_saddr: sock.member("skc_v6_rcv_saddr", 16)?,
        sk_err: sock.member("sk_err", 4)?,
        // `sk_flags` moved into `sock_common` as `skc_flags` in Linux 6.x.
        sk_flags: sock
            .member("skc_flags", 8)
            .or_else(|_| sock.member("sk_flags", 8))?,
        inet_sport: inet.member("inet_sport", 2)?,
        bytes_acked: tcp.member("bytes_acked", 8)?,
        bytes_received: tcp.member("bytes_received", 8)?,
        bytes_sent: tcp.member("bytes_sent", 8)?,
        bytes_retrans: tcp.member("bytes_retrans", 8)?,
        segs_in: tcp.member("segs_in", 4)?,
        segs_out: tcp.member("segs_out", 4)?,
        total_retrans: tcp.member("total_retrans", 4)?,
        srtt_us: tcp.member("srtt_us", 4)?,
        mdev_us: tcp.member("mdev_us", 4)?,
    })
}

/// One kernel structure, searched by member name through embedded structures and
/// anonymous unions.
struct Layout<'a> {
    btf: &'a Btf,
    name: &'static str,
    ty: btf_rs::Struct,
}

impl<'a> Layout<'a> {
    fn new(btf: &'a Btf, name: &'static str) -> Result<Layout<'a>, CaptureError> {
        let ty = btf
            .resolve_types_by_name(name)
            .unwrap_or_default()
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) => Some(s),
                _ => None,
            })
            .ok_or(CaptureError::MissingKernelMember {
                structure: name,
                member: "(the structure itself)",
            })?;
        Ok(Layout { btf, name, ty })
    }

    /// Byte offset of `member`, which must be a whole (non-bitfield) member of `size`
    /// bytes.
    fn member(&self, member: &'static str, size: usize) -> Result<u32, CaptureError> {
        find(self.btf, &self.ty, member, size, 0).ok_or(CaptureError::MissingKernelMember {
            structure: self.name,
            member,
        })
    }
}

/// Depth-first search for `wanted` in `st`, whose first byte is at bit `base`.
fn find(btf: &Btf, st: &btf_rs::Struct, wanted: &str, size: usize, base: u32) -> Option<u32> {
    for m in &st.members {
        let bits = base + m.bit_offset();
        let ty = resolve_alias(btf, btf.resolve_chained_type(m).ok()?)?;
        let name = btf.resolve_name(m).unwrap_or_default();
        if name == wanted {
            let whole = m.bitfield_size().unwrap_or(0) == 0 && bits.is_multiple_of(8);
            return (whole && type_size(btf, &ty) == Some(size)).then_some(bits / 8);
        }
        if let Type::Struct(inner) | Type::Union(inner) = &ty
            && let Some(found) = find(btf, inner, wanted, size, bits)
        {
            return Some(found);
        }
    }
    None
}

/// Follows typedefs and qualifiers to the underlying type.
fn resolve_alias(btf: &Btf, mut ty: Type) -> Option<Type> {
    for _ in 0..16 {
        match &ty {
            Type::Typedef(t) => ty = btf.resolve_chained_type(t).ok()?,
            Type::Const(t) | Type::Volatile(t) | Type::Restrict(t) => {
                ty = btf.resolve_chained_type(t).ok()?
            }
            Type::TypeTag(t) => ty = btf.resolve_chained_type(t).ok()?,
            _ => return Some(ty),
        }
    }
    None
}

fn type_size(btf: &Btf, ty: &Type) -> Option<usize> {
    match ty {
        Type::Int(i) => Some(i.size()),
        Type::Struct(s) | Type::Union(s) => Some(s.size()),
        Type::Enum(e) => Some(e.size()),
        Type::Enum64(e) => Some(e.size()),
        Type::Ptr(_) => Some(8),
        Type::Array(a) => {
            let elem = resolve_alias(btf, btf.resolve_chained_type(a).ok()?)?;
            Some(a.len() * type_size(btf, &elem)?)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The offsets of the running kernel resolve and are plausible. Runs wherever the
    /// kernel publishes BTF (every machine this project runs on).
    #[test]
    fn resolves_running_kernel_offsets() {
        let btf = load_btf(Path::new(VMLINUX_BTF)).expect("kernel BTF");
        check_tracepoint(&btf).expect("tracepoint");
        let o = resolve(&btf).expect("offsets");
        // sock_common starts struct sock: daddr then rcv_saddr are its first members.
        assert_eq!(o.skc_daddr, 0);
        assert_eq!(o.skc_rcv_saddr, 4);
        assert!(o.skc_v6_daddr > o.skc_family);
        assert!(
            o.bytes_acked > o.inet_sport,
            "tcp_sock members follow inet_sock's"
        );
        assert!(o.srtt_us > o.inet_sport);
    }

    #[test]
    fn missing_member_is_named() {
        let btf = load_btf(Path::new(VMLINUX_BTF)).expect("kernel BTF");
        let tcp = Layout::new(&btf, "tcp_sock").expect("tcp_sock");
        let err = tcp.member("no_such_member", 4).expect_err("must fail");
        assert!(err.to_string().contains("no_such_member"), "{err}");
        // A member of the wrong size is refused, not silently misread.
        assert!(tcp.member("bytes_acked", 4).is_err());
    }

    #[test]
    fn missing_btf_file_is_named() {
        let Err(err) = load_btf(Path::new("/nonexistent/vmlinux")) else {
            panic!("a missing BTF file must fail");
        };
        assert!(err.to_string().contains("/nonexistent/vmlinux"), "{err}");
    }
}
