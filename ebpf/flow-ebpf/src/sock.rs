//! Reads of `struct sock` / `struct tcp_sock` members at offsets taken from the running
//! kernel's BTF (see `flow_common::KernelOffsets`).
//!
//! The tracepoint's `sk` is a BTF pointer and the offsets are frozen read-only
//! globals, so the verifier knows each offset and lets the program load members
//! directly (a fault-tolerant load, no helper call). `tcp_sock` members are read
//! through the pointer `bpf_skc_to_tcp_sock` returns, which the verifier types as
//! `struct tcp_sock`.

use core::{ffi::c_void, ptr};

use aya_ebpf::helpers::generated::bpf_skc_to_tcp_sock;
use flow_common::{
    KernelOffsets, RawFlowEvent, SOCK_DONE_BIT, flags,
    tcp::{AF_INET, AF_INET6},
};

/// A socket pointer from the tracepoint together with where its members live.
pub struct Sock {
    base: *const u8,
    offsets: &'static KernelOffsets,
}

/// Loads a `T` at `base + *field` (the offset a frozen global).
#[inline(always)]
unsafe fn load<T: Copy>(base: *const u8, field: &u32) -> T {
    // SAFETY: the caller passes a BTF pointer the verifier checks every load against;
    // the offset is a volatile read of a frozen global, hence known to the verifier.
    unsafe {
        let off = ptr::read_volatile(field) as usize;
        ptr::read_volatile(base.add(off).cast::<T>())
    }
}

impl Sock {
    #[inline(always)]
    pub fn new(sk: *mut c_void, offsets: &'static KernelOffsets) -> Sock {
        Sock {
            base: sk.cast::<u8>().cast_const(),
            offsets,
        }
    }

    /// `sk_protocol`.
    #[inline(always)]
    pub fn protocol(&self) -> u16 {
        // SAFETY: `base` is the tracepoint's `struct sock *`.
        unsafe { load::<u16>(self.base, &self.offsets.sk_protocol) }
    }

    /// Reads family and local and remote addresses into `ev`; false when the family
    /// is neither IPv4 nor IPv6.
    #[inline(always)]
    pub fn read_addresses(&self, ev: &mut RawFlowEvent) -> bool {
        let o = self.offsets;
        let b = self.base;
        // SAFETY: `b` is the tracepoint's `struct sock *`; every load is checked by the
        // verifier against the kernel's BTF.
        unsafe {
            let family = load::<u16>(b, &o.skc_family);
            ev.family = family;
            if family == AF_INET {
                ev.local_addr[..4].copy_from_slice(&load::<[u8; 4]>(b, &o.skc_rcv_saddr));
                ev.remote_addr[..4].copy_from_slice(&load::<[u8; 4]>(b, &o.skc_daddr));
            } else if family == AF_INET6 {
                read_in6(b, &o.skc_v6_rcv_saddr, &mut ev.local_addr);
                read_in6(b, &o.skc_v6_daddr, &mut ev.remote_addr);
            } else {
                return false;
            }
        }
        true
    }

    /// The `tcp_sock` view of the socket (null if it is not a TCP socket).
    #[inline(always)]
    pub fn tcp(&self, sk: *mut c_void) -> *const u8 {
        // SAFETY: a helper that checks the socket's type.
        unsafe { bpf_skc_to_tcp_sock(sk).cast::<u8>().cast_const() }
    }

    /// The local port (host order), read through the `tcp_sock` because `inet_sport`
    /// lies past `struct sock`.
    #[inline(always)]
    pub fn local_port(&self, tp: *const u8) -> u16 {
        // SAFETY: `tp` is a non-null `struct tcp_sock *` from `bpf_skc_to_tcp_sock`.
        unsafe { u16::from_be(load::<u16>(tp, &self.offsets.inet_sport)) }
    }

    /// Fills addresses, ports and statistics; returns false when any part could not
    /// be read.
    #[inline(always)]
    pub fn read_flow(&self, sk: *mut c_void, ev: &mut RawFlowEvent) -> bool {
        if !self.read_addresses(ev) {
            return false;
        }
        let tp = self.tcp(sk);
        if tp.is_null() {
            return false;
        }
        let o = self.offsets;
        let b = self.base;
        ev.local_port = self.local_port(tp);
        // SAFETY: as in `read_addresses`; `tp` is a non-null `struct tcp_sock *`.
        unsafe {
            ev.remote_port = u16::from_be(load::<u16>(b, &o.skc_dport));
            ev.sk_err = load::<i32>(b, &o.sk_err) as u32;
            if (load::<u64>(b, &o.sk_flags) >> SOCK_DONE_BIT) & 1 != 0 {
                ev.flags |= flags::FIN_RECEIVED;
            }
            ev.bytes_acked = load::<u64>(tp, &o.bytes_acked);
            ev.bytes_received = load::<u64>(tp, &o.bytes_received);
            ev.bytes_sent = load::<u64>(tp, &o.bytes_sent);
            ev.bytes_retrans = load::<u64>(tp, &o.bytes_retrans);
            ev.segs_in = load::<u32>(tp, &o.segs_in);
            ev.segs_out = load::<u32>(tp, &o.segs_out);
            ev.total_retrans = load::<u32>(tp, &o.total_retrans);
            ev.srtt_us_x8 = load::<u32>(tp, &o.srtt_us);
            ev.mdev_us_x4 = load::<u32>(tp, &o.mdev_us);
        }
        true
    }
}

/// Copies a `struct in6_addr` at `base + off` as four 32-bit words (`s6_addr32`).
#[inline(always)]
unsafe fn read_in6(base: *const u8, field: &u32, out: &mut [u8; 16]) {
    // SAFETY: as for `load`; each word is one element of `in6_addr.s6_addr32`.
    unsafe {
        let off = ptr::read_volatile(field) as usize;
        let p = base.add(off).cast::<u32>();
        for i in 0..4 {
            let w = ptr::read_volatile(p.add(i));
            out[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
    }
}
