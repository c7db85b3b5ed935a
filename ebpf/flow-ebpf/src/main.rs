//! flowexporter's kernel program.
//!
//! Attached to the BTF-enabled tracepoint `inet_sock_set_state`. For every TCP socket it
//! keeps, in socket-local storage (freed with the socket), the time and direction of its
//! open; when the socket changes to `TCP_CLOSE` it writes one [`RawFlowEvent`] to the
//! `FLOW_EVENTS` ring buffer. Member offsets of `struct sock`/`tcp_sock` come from the
//! running kernel's BTF through the read-only `FLOW_CONFIG` global. Every record that
//! could not be written is counted in `FLOW_COUNTERS`.
#![no_std]
#![no_main]

mod sock;

use core::{ffi::c_void, ptr};

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    btf_maps::{PerCpuArray, RingBuf, SkStorage},
    helpers::{
        bpf_ktime_get_boot_ns,
        generated::{bpf_ringbuf_query, bpf_sk_storage_get},
    },
    macros::{btf_map, btf_tracepoint},
    programs::BtfTracePointContext,
};
use flow_common::{
    Direction, KernelCounter, KernelOffsets, ProgramConfig, RawFlowEvent, SocketStart, flags,
    tcp::{IPPROTO_TCP, TCP_CLOSE, TCP_LISTEN, TCP_SYN_RECV, TCP_SYN_SENT},
};
use sock::Sock;

/// Offsets and options, written by user space before load and frozen (`.rodata`).
#[unsafe(no_mangle)]
static FLOW_CONFIG: ProgramConfig = ProgramConfig {
    offsets: KernelOffsets {
        skc_family: 0,
        sk_protocol: 0,
        skc_daddr: 0,
        skc_rcv_saddr: 0,
        skc_dport: 0,
        skc_v6_daddr: 0,
        skc_v6_rcv_saddr: 0,
        inet_sport: 0,
        sk_err: 0,
        sk_flags: 0,
        bytes_acked: 0,
        bytes_received: 0,
        bytes_sent: 0,
        bytes_retrans: 0,
        segs_in: 0,
        segs_out: 0,
        total_retrans: 0,
        srtt_us: 0,
        mdev_us: 0,
    },
    _pad: 0,
    wakeup_bytes: 0,
};

/// Closed sockets, one [`RawFlowEvent`] each. User space sets the size at load time.
#[btf_map]
static FLOW_EVENTS: RingBuf<RawFlowEvent, { 256 * 1024 }> = RingBuf::new();

/// Per-CPU counters indexed by [`KernelCounter`].
#[btf_map]
static FLOW_COUNTERS: PerCpuArray<u64, { KernelCounter::COUNT as usize }> = PerCpuArray::new();

/// Per-socket open time and direction; the kernel frees an entry with its socket.
#[btf_map]
static FLOW_SOCKETS: SkStorage<SocketStart> = SkStorage::new();

const BPF_SK_STORAGE_GET_F_CREATE: u64 = 1;

/// `tp_btf/inet_sock_set_state(const struct sock *sk, int oldstate, int newstate)`.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    let sk: *mut c_void = ctx.arg(0);
    let old: i32 = ctx.arg(1);
    let new: i32 = ctx.arg(2);
    on_state_change(sk, old as u8, new as u8);
    0
}

#[inline(always)]
fn config_u64(field: &u64) -> u64 {
    // SAFETY: a read of a global; volatile so that the value set at load time is used.
    unsafe { ptr::read_volatile(field) }
}

#[inline(always)]
fn on_state_change(sk: *mut c_void, old: u8, new: u8) {
    let sock = Sock::new(sk, &FLOW_CONFIG.offsets);
    if sock.protocol() != IPPROTO_TCP {
        return;
    }
    match new {
        TCP_SYN_SENT => on_open(sk, Direction::Outbound),
        TCP_SYN_RECV => on_open(sk, Direction::Inbound),
        TCP_CLOSE => {
            // A listener, or a socket that never left CLOSE, carries no flow.
            if old != TCP_LISTEN && old != TCP_CLOSE {
                on_close(sk, &sock, old);
            }
        }
        // Every other change costs only the protocol check: the record needs nothing
        // from the states in between (whether the socket was established follows from
        // the state it closed from).
        _ => {}
    }
}

/// Returns this socket's storage, creating it when `create` is the create flag.
#[inline(always)]
fn storage(sk: *mut c_void, create: u64) -> Option<*mut SocketStart> {
    let map = ptr::addr_of!(FLOW_SOCKETS).cast_mut().cast::<c_void>();
    // SAFETY: `map` is the socket-storage map and `sk` the tracepoint's socket.
    let p = unsafe { bpf_sk_storage_get(map, sk, ptr::null_mut(), create) };
    if p.is_null() {
        None
    } else {
        Some(p.cast::<SocketStart>())
    }
}

#[inline(always)]
fn on_open(sk: *mut c_void, direction: Direction) {
    match storage(sk, BPF_SK_STORAGE_GET_F_CREATE) {
        Some(start) => {
            // SAFETY: the kernel returned a valid pointer to this socket's storage. A
            // socket that reconnects after a close overwrites its previous start.
            unsafe {
                *start = SocketStart {
                    // SAFETY: helper without preconditions.
                    start_ns: bpf_ktime_get_boot_ns(),
                    direction: direction as u8,
                    _pad: [0; 7],
                }
            };
        }
        None => count(KernelCounter::StorageUnavailable),
    }
}

#[inline(always)]
fn on_close(sk: *mut c_void, sock: &Sock, old: u8) {
    let Some(mut entry) = FLOW_EVENTS.reserve(0) else {
        count(KernelCounter::LostRingFull);
        return;
    };
    let mut ev = RawFlowEvent::zeroed();
    // SAFETY: helper without preconditions.
    ev.end_ns = unsafe { bpf_ktime_get_boot_ns() };
    ev.close_state = old;
    match storage(sk, 0) {
        Some(start) => {
            // SAFETY: the kernel returned a valid pointer to this socket's storage.
            let start = unsafe { &*start };
            ev.start_ns = start.start_ns;
            ev.direction = start.direction;
        }
        None => ev.flags |= flags::START_UNKNOWN,
    }
    if !sock.read_flow(sk, &mut ev) {
        ev.flags |= flags::READ_FAILED;
        count(KernelCounter::ReadFailed);
    }
    entry.write(ev);
    let wake = {
        let map = ptr::addr_of!(FLOW_EVENTS).cast_mut().cast::<c_void>();
        // SAFETY: `map` is the ring buffer map.
        let pending = unsafe { bpf_ringbuf_query(map, BPF_RB_AVAIL_DATA as u64) };
        if pending >= config_u64(&FLOW_CONFIG.wakeup_bytes) {
            BPF_RB_FORCE_WAKEUP
        } else {
            BPF_RB_NO_WAKEUP
        }
    };
    entry.submit(wake as u64);
    count(KernelCounter::RecordsSubmitted);
}

#[inline(always)]
fn count(counter: KernelCounter) {
    if let Some(slot) = FLOW_COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: a per-CPU slot: only this CPU writes it, and the program is not
        // re-entered on one CPU for the same tracepoint.
        unsafe { *slot += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
