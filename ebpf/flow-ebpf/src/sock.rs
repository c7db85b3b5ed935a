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

use crate::identity::LocalAddr;

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

/// Loads a `struct in6_addr` at `base + *field` as its four 32-bit words
/// (`s6_addr32`, network byte order in memory).
#[inline(always)]
unsafe fn load_in6(base: *const u8, field: &u32) -> [u32; 4] {
    // SAFETY: as for `load`; each word is one element of `in6_addr.s6_addr32`.
    unsafe {
        let off = ptr::read_volatile(field) as usize;
        let p = base.add(off).cast::<u32>();
        [
            ptr::read_volatile(p),
            ptr::read_volatile(p.add(1)),
            ptr::read_volatile(p.add(2)),
            ptr::read_volatile(p.add(3)),
        ]
    }
}

/// Writes four address words to a 16-byte address field of a record.
///
/// # Safety
/// `dst` must be a 4-byte-aligned, writable 16-byte field.
#[inline(always)]
unsafe fn store_in6(dst: *mut [u8; 16], words: [u32; 4]) {
    let p = dst.cast::<u32>();
    // SAFETY: the caller's contract.
    unsafe {
        for (i, w) in words.into_iter().enumerate() {
            ptr::write_volatile(p.add(i), w);
        }
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

    /// `skc_state`: the current TCP state.
    #[inline(always)]
    pub fn state(&self) -> u8 {
        // SAFETY: `base` is a `struct sock *` BTF pointer.
        unsafe { load::<u8>(self.base, &self.offsets.skc_state) }
    }

    /// `sk_type`: `SOCK_STREAM` for TCP.
    #[inline(always)]
    pub fn sk_type(&self) -> u16 {
        // SAFETY: `base` is a `struct sock *` BTF pointer.
        unsafe { load::<u16>(self.base, &self.offsets.sk_type) }
    }

    /// Whether the socket is IPv4 or IPv6.
    #[inline(always)]
    pub fn is_inet(&self) -> bool {
        let family = self.family();
        family == AF_INET || family == AF_INET6
    }

    /// `skc_family`.
    #[inline(always)]
    fn family(&self) -> u16 {
        // SAFETY: `base` is the tracepoint's `struct sock *`.
        unsafe { load::<u16>(self.base, &self.offsets.skc_family) }
    }

    /// The local address, or `None` when the family is neither IPv4 nor IPv6.
    #[inline(always)]
    pub fn local_addr(&self) -> Option<LocalAddr> {
        let (o, b) = (self.offsets, self.base);
        let family = self.family();
        // SAFETY: `b` is the tracepoint's `struct sock *`; every load is checked by the
        // verifier against the kernel's BTF.
        unsafe {
            if family == AF_INET {
                Some(LocalAddr::V4(load::<u32>(b, &o.skc_rcv_saddr)))
            } else if family == AF_INET6 {
                Some(LocalAddr::V6(load_in6(b, &o.skc_v6_rcv_saddr)))
            } else {
                None
            }
        }
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

    /// Writes family, addresses, ports and statistics into the record at `ev` and
    /// returns the local end and port; `None` when any part could not be read (the
    /// fields not read are left as they were).
    ///
    /// # Safety
    /// `ev` must point to a writable, 8-byte-aligned record.
    #[inline(always)]
    pub unsafe fn write_flow(
        &self,
        sk: *mut c_void,
        ev: *mut RawFlowEvent,
    ) -> Option<(LocalAddr, u16)> {
        let (o, b) = (self.offsets, self.base);
        let family = self.family();
        // SAFETY: `b` is the tracepoint's `struct sock *` (loads checked by the
        // verifier); `ev` is valid for writes (the caller's contract).
        unsafe {
            (*ev).family = family;
            let local_field = ptr::addr_of_mut!((*ev).local_addr);
            let remote_field = ptr::addr_of_mut!((*ev).remote_addr);
            let local = if family == AF_INET {
                let local = load::<u32>(b, &o.skc_rcv_saddr);
                store_in6(local_field, [local, 0, 0, 0]);
                store_in6(remote_field, [load::<u32>(b, &o.skc_daddr), 0, 0, 0]);
                LocalAddr::V4(local)
            } else if family == AF_INET6 {
                let local = load_in6(b, &o.skc_v6_rcv_saddr);
                store_in6(local_field, local);
                store_in6(remote_field, load_in6(b, &o.skc_v6_daddr));
                LocalAddr::V6(local)
            } else {
                return None;
            };
            (*ev).remote_port = u16::from_be(load::<u16>(b, &o.skc_dport));
            (*ev).sk_err = load::<i32>(b, &o.sk_err) as u32;
            if (load::<u64>(b, &o.sk_flags) >> SOCK_DONE_BIT) & 1 != 0 {
                (*ev).flags |= flags::FIN_RECEIVED;
            }
            let tp = self.tcp(sk);
            if tp.is_null() {
                return None;
            }
            let port = self.local_port(tp);
            (*ev).local_port = port;
            (*ev).bytes_acked = load::<u64>(tp, &o.bytes_acked);
            (*ev).bytes_received = load::<u64>(tp, &o.bytes_received);
            (*ev).bytes_sent = load::<u64>(tp, &o.bytes_sent);
            (*ev).bytes_retrans = load::<u64>(tp, &o.bytes_retrans);
            (*ev).segs_in = load::<u32>(tp, &o.segs_in);
            (*ev).segs_out = load::<u32>(tp, &o.segs_out);
            (*ev).total_retrans = load::<u32>(tp, &o.total_retrans);
            (*ev).srtt_us_x8 = load::<u32>(tp, &o.srtt_us);
            (*ev).mdev_us_x4 = load::<u32>(tp, &o.mdev_us);
            Some((local, port))
        }
    }
}
