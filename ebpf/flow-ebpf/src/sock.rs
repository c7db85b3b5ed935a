//! Reads of `struct sock` / `struct tcp_sock` members at offsets taken from the running
//! kernel's BTF (see `flow_common::KernelOffsets`).

use core::{ffi::c_void, ptr};

use aya_ebpf::helpers::bpf_probe_read_kernel;
use flow_common::{
    KernelOffsets, RawFlowEvent, SOCK_DONE_BIT, flags,
    tcp::{AF_INET, AF_INET6},
};

/// A socket pointer from the tracepoint together with where its members live.
pub struct Sock {
    base: *const u8,
    offsets: &'static KernelOffsets,
}

impl Sock {
    #[inline(always)]
    pub fn new(sk: *mut c_void, offsets: &'static KernelOffsets) -> Sock {
        Sock {
            base: sk.cast::<u8>().cast_const(),
            offsets,
        }
    }

    /// Reads a `T` at the offset stored in `field`.
    #[inline(always)]
    fn read<T>(&self, field: &u32) -> Option<T> {
        // SAFETY: a volatile read of a frozen global; then a fault-tolerant kernel read.
        unsafe {
            let off = ptr::read_volatile(field) as usize;
            bpf_probe_read_kernel(self.base.add(off).cast::<T>()).ok()
        }
    }

    /// `sk_protocol`.
    #[inline(always)]
    pub fn protocol(&self) -> Option<u16> {
        self.read::<u16>(&self.offsets.sk_protocol)
    }

    /// Fills addresses, ports and statistics; returns false when any read failed.
    #[inline(always)]
    pub fn read_flow(&self, ev: &mut RawFlowEvent) -> bool {
        let o = self.offsets;
        let mut ok = true;
        let family = self.read::<u16>(&o.skc_family).unwrap_or(0);
        ev.family = family;
        if family == AF_INET {
            match (self.read::<[u8; 4]>(&o.skc_rcv_saddr), self.read::<[u8; 4]>(&o.skc_daddr)) {
                (Some(l), Some(r)) => {
                    ev.local_addr[..4].copy_from_slice(&l);
                    ev.remote_addr[..4].copy_from_slice(&r);
                }
                _ => ok = false,
            }
        } else if family == AF_INET6 {
            match (
                self.read::<[u8; 16]>(&o.skc_v6_rcv_saddr),
                self.read::<[u8; 16]>(&o.skc_v6_daddr),
            ) {
                (Some(l), Some(r)) => {
                    ev.local_addr = l;
                    ev.remote_addr = r;
                }
                _ => ok = false,
            }
        } else {
            ok = false;
        }
        ev.local_port = u16::from_be(self.get(&o.inet_sport, &mut ok));
        ev.remote_port = u16::from_be(self.get(&o.skc_dport, &mut ok));
        ev.sk_err = self.get::<i32>(&o.sk_err, &mut ok) as u32;
        if (self.get::<u64>(&o.sk_flags, &mut ok) >> SOCK_DONE_BIT) & 1 != 0 {
            ev.flags |= flags::FIN_RECEIVED;
        }
        ev.bytes_acked = self.get(&o.bytes_acked, &mut ok);
        ev.bytes_received = self.get(&o.bytes_received, &mut ok);
        ev.bytes_sent = self.get(&o.bytes_sent, &mut ok);
        ev.bytes_retrans = self.get(&o.bytes_retrans, &mut ok);
        ev.segs_in = self.get(&o.segs_in, &mut ok);
        ev.segs_out = self.get(&o.segs_out, &mut ok);
        ev.total_retrans = self.get(&o.total_retrans, &mut ok);
        ev.srtt_us_x8 = self.get(&o.srtt_us, &mut ok);
        ev.mdev_us_x4 = self.get(&o.mdev_us, &mut ok);
        ok
    }

    /// Reads a member, or zero with `ok` cleared.
    #[inline(always)]
    fn get<T: Default>(&self, field: &u32, ok: &mut bool) -> T {
        match self.read::<T>(field) {
            Some(v) => v,
            None => {
                *ok = false;
                T::default()
            }
        }
    }
}
