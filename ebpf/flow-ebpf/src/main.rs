//! flowexporter's kernel program.
//!
//! Attached to the BTF-enabled tracepoint `inet_sock_set_state`. For every TCP socket it
//! keeps, in a preallocated LRU table keyed by the socket, the time and direction of its
//! open; when the socket changes to `TCP_CLOSE` it writes one [`RawFlowEvent`] to the
//! `FLOW_EVENTS` ring buffer. Member offsets of `struct sock`/`tcp_sock` come from the
//! running kernel's BTF through the read-only `FLOW_CONFIG` global. Every record that
//! could not be written is counted in `FLOW_COUNTERS`.
#![no_std]
#![no_main]
// BPF inline assembly (an atomic add: the target has no atomic read-modify-write in
// Rust's `core`).
#![feature(asm_experimental_arch)]

mod identity;
mod open_sockets;
mod sock;
mod windows;
mod words;

use core::{ffi::c_void, mem::MaybeUninit, ptr};

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    btf_maps::{LruHashMap, PerCpuArray, RingBuf},
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns,
        generated::{
            bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_socket_cookie,
            bpf_ringbuf_query,
        },
    },
    macros::{btf_map, btf_tracepoint},
    programs::BtfTracePointContext,
};
use flow_common::{
    Direction, KernelCounter, KernelOffsets, ProgramConfig, RawFlowEvent, SocketStart,
    WorkloadValue, features, flags,
    identity::source,
    kind,
    tcp::{IPPROTO_TCP, TCP_CLOSE, TCP_ESTABLISHED, TCP_LISTEN, TCP_SYN_RECV, TCP_SYN_SENT},
};
use sock::Sock;

/// Offsets and options, written by user space before load and frozen (`.rodata`).
#[unsafe(no_mangle)]
pub(crate) static FLOW_CONFIG: ProgramConfig = ProgramConfig {
    offsets: KernelOffsets {
        skc_family: 0,
        sk_protocol: 0,
        skc_daddr: 0,
        skc_rcv_saddr: 0,
        skc_dport: 0,
        skc_v6_daddr: 0,
        skc_v6_rcv_saddr: 0,
        inet_sport: 0,
        sk_type: 0,
        skc_state: 0,
        socket_sk: 0,
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
    features: 0,
    _pad: 0,
    wakeup_bytes: 0,
};

/// Closed sockets, one [`RawFlowEvent`] each. User space sets the size at load time.
#[btf_map]
static FLOW_EVENTS: RingBuf<RawFlowEvent, { 256 * 1024 }> = RingBuf::new();

/// Per-CPU counters indexed by [`KernelCounter`].
#[btf_map]
static FLOW_COUNTERS: PerCpuArray<u64, { KernelCounter::COUNT as usize }> = PerCpuArray::new();

/// Per-socket open time and direction, keyed by the socket's address, from its open
/// until its close. A preallocated LRU hash: nothing is allocated per socket (socket
/// storage was measured at ~6 µs per socket to create and free), and entries whose
/// close was never seen are recycled instead of filling the table. User space sets
/// the size at load time.
#[btf_map]
pub(crate) static FLOW_SOCKETS: LruHashMap<u64, SocketStart, 65536> = LruHashMap::new();

/// `tp_btf/inet_sock_set_state(const struct sock *sk, int oldstate, int newstate)`.
///
/// The kernel skips a tracing program that is already running on the same CPU, so a
/// socket event raised by an interrupt that arrives while this program runs would be
/// lost. The same handler is therefore attached twice: the `_backup` program runs
/// right after this one for every event, and whichever of the two sees an event first
/// handles it (the socket's entry in `FLOW_SOCKETS` records what was done). An event is lost only if
/// both programs are interrupted by it, which cannot happen: they never run at once on
/// one CPU.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    on_state_change(&ctx, false);
    0
}

/// The second attachment of the handler (see [`inet_sock_set_state`]).
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state_backup(ctx: BtfTracePointContext) -> i32 {
    on_state_change(&ctx, true);
    0
}

#[inline(always)]
fn config_u64(field: &u64) -> u64 {
    // SAFETY: a read of a global; volatile so that the value set at load time is used.
    unsafe { ptr::read_volatile(field) }
}

#[inline(always)]
fn on_state_change(ctx: &BtfTracePointContext, backup: bool) {
    let sk: *mut c_void = ctx.arg(0);
    let old = ctx.arg::<i32>(1) as u8;
    let new = ctx.arg::<i32>(2) as u8;
    let sock = Sock::new(sk, &FLOW_CONFIG.offsets);
    if sock.protocol() != IPPROTO_TCP {
        return;
    }
    match new {
        TCP_SYN_SENT => on_open(sk, Direction::Outbound, backup),
        TCP_SYN_RECV => on_open(sk, Direction::Inbound, backup),
        TCP_ESTABLISHED => on_established(sk, &sock, backup),
        TCP_CLOSE => {
            // A listener, or a socket that never left CLOSE, carries no flow.
            if old != TCP_LISTEN && old != TCP_CLOSE {
                on_close(sk, &sock, old, backup);
            }
        }
        // Every other change costs only the protocol check: the record needs nothing
        // from the states in between (whether the socket was established follows from
        // the state it closed from; identity is resolved at establishment).
        _ => {}
    }
}

/// Words in a [`WorkloadValue`].
const WORKLOAD_WORDS: usize = core::mem::size_of::<WorkloadValue>() / 8;
/// Words in a [`RawFlowEvent`].
const RECORD_WORDS: usize = RawFlowEvent::SIZE / 8;
/// Words in a [`SocketStart`].
const START_WORDS: usize = core::mem::size_of::<SocketStart>() / 8;

/// Fills a socket entry on the stack (a word at a time: see [`words`]); nothing resolved.
#[inline(always)]
fn socket_start(out: &mut MaybeUninit<SocketStart>, start_ns: u64, direction: u8, closed: u8) {
    let p = out.as_mut_ptr();
    // SAFETY: `p` is an 8-byte-aligned stack slot of `START_WORDS` words; every byte
    // is written (zero first, then the fields).
    unsafe {
        words::zero::<START_WORDS>(p.cast::<u64>());
        (*p).start_ns = start_ns;
        (*p).direction = direction;
        (*p).closed = closed;
    }
}

#[inline(always)]
fn on_open(sk: *mut c_void, direction: Direction, backup: bool) {
    let key = sk as u64;
    if backup {
        // The primary attachment handled this open unless it was skipped.
        if let Some(start) = FLOW_SOCKETS.get_ptr(key) {
            // SAFETY: a valid pointer to the entry's value.
            if unsafe { (*start).closed } == 0 {
                return;
            }
        }
        count(KernelCounter::RecoveredByBackup);
    }
    let mut start = MaybeUninit::uninit();
    // SAFETY: helper without preconditions.
    socket_start(
        &mut start,
        unsafe { bpf_ktime_get_boot_ns() },
        direction as u8,
        0,
    );
    if direction == Direction::Outbound {
        // The active open runs in the connecting task's context (`connect()`).
        let p = start.as_mut_ptr();
        // SAFETY: `p` was fully written by `socket_start`; helpers without
        // preconditions (comm is written into the entry's 16-byte field).
        unsafe {
            (*p).pid = (bpf_get_current_pid_tgid() >> 32) as u32;
            (*p).cgroup_id = bpf_get_current_cgroup_id();
            // On failure the helper zeroes the buffer: no command name.
            bpf_get_current_comm(ptr::addr_of_mut!((*p).comm).cast::<c_void>(), 16);
        }
    }
    // SAFETY: fully written by `socket_start`.
    let start = unsafe { start.assume_init_ref() };
    // BPF_ANY: a socket that reconnects after a close starts afresh.
    if FLOW_SOCKETS.insert(key, start, 0).is_err() {
        count(KernelCounter::StartNotRecorded);
    }
}

/// Resolves the local workload once the connection is established (both ends' addresses
/// and ports are final) and keeps it with the socket, so that a later change of the
/// maps does not change this connection's identity.
#[inline(always)]
fn on_established(sk: *mut c_void, sock: &Sock, backup: bool) {
    let Some(start) = FLOW_SOCKETS.get_ptr_mut(sk as u64) else {
        return; // opened before the program attached: resolved at close
    };
    // SAFETY: a valid pointer to the entry's value, for this program run.
    unsafe {
        if (*start).resolved != 0 {
            return; // done by the primary attachment
        }
        if backup {
            count(KernelCounter::RecoveredByBackup);
        }
        (*start).resolved = 1;
        let tp = sock.tcp(sk);
        if tp.is_null() {
            return;
        }
        let Some(local) = sock.local_addr() else {
            return;
        };
        let (src, value) = identity::resolve(local, sock.local_port(tp));
        if !value.is_null() {
            (*start).identity_source = src;
            words::copy::<WORKLOAD_WORDS>(
                ptr::addr_of_mut!((*start).workload).cast::<u64>(),
                value.cast::<u64>(),
            );
        }
    }
}

#[inline(always)]
fn on_close(sk: *mut c_void, sock: &Sock, old: u8, backup: bool) {
    let key = sk as u64;
    let start = FLOW_SOCKETS.get_ptr_mut(key);
    if let Some(start) = start {
        // SAFETY: a valid pointer to the entry's value.
        if unsafe { (*start).closed } != 0 {
            // Emitted by the primary attachment; the backup, which runs last, frees
            // the entry.
            let _ = FLOW_SOCKETS.remove(key);
            return;
        }
    }
    if backup {
        count(KernelCounter::RecoveredByBackup);
    }
    // Counted before the reservation: every close seen becomes a record or a loss.
    // SAFETY: helper without preconditions.
    let end_ns = unsafe { bpf_ktime_get_boot_ns() };
    count(KernelCounter::ClosesSeen);
    let window = windows::count_close(end_ns);
    match FLOW_EVENTS.reserve(0) {
        Some(mut entry) => {
            // SAFETY: `start` is valid for this program run (the entry is freed
            // below, after the last read); the ring entry is 8-byte aligned and
            // `RECORD_WORDS` words long.
            unsafe {
                write_record(
                    entry.as_mut_ptr(),
                    sk,
                    sock,
                    old,
                    start,
                    end_ns,
                    kind::FINAL,
                )
            };
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
            windows::count_outcome(window, true);
        }
        None => {
            count(KernelCounter::LostRingFull);
            windows::count_outcome(window, false);
        }
    }
    match start {
        // The backup runs last: it frees the entry. The primary marks it, so that the
        // backup does not emit the close again.
        Some(_) if backup => {
            let _ = FLOW_SOCKETS.remove(key);
        }
        // SAFETY: a valid pointer to the entry's value.
        Some(start) => unsafe { (*start).closed = 1 },
        // Opened before the program attached (or its entry was recycled): the
        // primary leaves a closed entry for the backup to find and free.
        None if !backup => {
            let mut closed = MaybeUninit::uninit();
            socket_start(&mut closed, 0, 0, 1);
            // SAFETY: fully written by `socket_start`.
            let _ = FLOW_SOCKETS.insert(key, unsafe { closed.assume_init_ref() }, 0);
        }
        None => {}
    }
}

/// Writes the whole record for a socket into `ev`: a closing socket's (`kind::FINAL`,
/// `state` the one it closed from) or an open one's (`kind::INTERIM`, its current
/// state), stamped `end_ns`.
///
/// # Safety
/// `ev` must be 8-byte aligned and valid for writes of a record; `start`, when given,
/// a valid socket entry.
#[inline(always)]
pub(crate) unsafe fn write_record(
    ev: *mut RawFlowEvent,
    sk: *mut c_void,
    sock: &Sock,
    state: u8,
    start: Option<*mut SocketStart>,
    end_ns: u64,
    record_kind: u8,
) {
    // SAFETY: the caller's contract.
    unsafe {
        words::zero::<RECORD_WORDS>(ev.cast::<u64>());
        (*ev).end_ns = end_ns;
        (*ev).close_state = state;
        (*ev).kind = record_kind;
        // A frozen bit: on a kernel without the helper for tracing programs the
        // verifier drops this call, and records carry no cookie (no flow ID).
        if ptr::read_volatile(&FLOW_CONFIG.features) & features::SOCKET_COOKIE != 0 {
            (*ev).cookie = bpf_get_socket_cookie(sk);
        }
        match start {
            Some(start) => {
                let start_ns = (*start).start_ns;
                (*ev).start_ns = start_ns;
                if start_ns == 0 {
                    (*ev).flags |= flags::START_UNKNOWN;
                }
                (*ev).direction = (*start).direction;
                let pid = (*start).pid;
                if pid != 0 {
                    (*ev).pid = pid;
                    (*ev).cgroup_id = (*start).cgroup_id;
                    words::copy::<2>(
                        ptr::addr_of_mut!((*ev).comm).cast::<u64>(),
                        ptr::addr_of!((*start).comm).cast::<u64>(),
                    );
                }
                let src = (*start).identity_source;
                (*ev).identity_source = src;
                if src != source::NONE {
                    words::copy::<WORKLOAD_WORDS>(
                        ptr::addr_of_mut!((*ev).workload).cast::<u64>(),
                        ptr::addr_of!((*start).workload).cast::<u64>(),
                    );
                }
            }
            None => (*ev).flags |= flags::START_UNKNOWN,
        }
        match sock.write_flow(sk, ev) {
            None => {
                (*ev).flags |= flags::READ_FAILED;
                count(KernelCounter::ReadFailed);
            }
            Some((local, port)) if (*ev).identity_source == source::NONE => {
                // Nothing was known when the connection started (or it never did):
                // look up now.
                let (src, value) = identity::resolve(local, port);
                if !value.is_null() {
                    (*ev).identity_source = src;
                    words::copy::<WORKLOAD_WORDS>(
                        ptr::addr_of_mut!((*ev).workload).cast::<u64>(),
                        value.cast::<u64>(),
                    );
                }
            }
            Some(_) => {}
        }
    }
}

#[inline(always)]
pub(crate) fn count(counter: KernelCounter) {
    if let Some(slot) = FLOW_COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: a per-CPU slot, valid for this program run.
        unsafe { words::add(slot, 1) };
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
