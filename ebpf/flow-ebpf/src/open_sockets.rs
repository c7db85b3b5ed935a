//! The open-socket iterator (`iter/task_file`): run by user space at each window's
//! close, it writes one interim record per open TCP socket to the iterator's output.
//!
//! It walks every open file of every process, so it sees sockets in every network
//! namespace in one pass; a socket open in several processes (after `fork`, or passed
//! over a Unix socket) is written once per file, and user space keeps one per cookie.
//! Sockets no process holds (not yet accepted, or orphaned while closing) are not
//! seen; their final record comes soon.

use core::{ffi::c_void, ptr};

use aya_ebpf::{
    btf_maps::PerCpuArray,
    helpers::{
        bpf_ktime_get_boot_ns,
        generated::{bpf_seq_write, bpf_sock_from_file},
    },
    macros::btf_map,
};
use flow_common::{
    RawFlowEvent, kind,
    tcp::{IPPROTO_TCP, SOCK_STREAM, TCP_CLOSE, TCP_LISTEN, TCP_NEW_SYN_RECV, TCP_TIME_WAIT},
};

use crate::{FLOW_CONFIG, FLOW_SOCKETS, sock::Sock, write_record};

/// The context of a `task_file` iterator program (`struct bpf_iter__task_file`).
#[repr(C)]
struct TaskFileContext {
    meta: *mut BpfIterMeta,
    task: *mut c_void,
    fd: u32,
    file: *mut c_void,
}

/// `struct bpf_iter_meta`.
#[repr(C)]
struct BpfIterMeta {
    seq: *mut c_void,
    session_id: u64,
    seq_num: u64,
}

/// Where a record is built before it is written out (too large for the stack beside
/// everything else).
#[btf_map]
static FLOW_SCRATCH: PerCpuArray<RawFlowEvent, 1> = PerCpuArray::new();

/// `iter/task_file`: one interim record per open TCP socket file.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/task_file")]
pub fn flow_open_sockets(ctx: *mut c_void) -> i32 {
    // SAFETY: the kernel passes a `struct bpf_iter__task_file`.
    unsafe { on_file(ctx.cast::<TaskFileContext>()) };
    0
}

#[inline(always)]
unsafe fn on_file(ctx: *mut TaskFileContext) {
    // SAFETY: context reads, checked by the verifier against the iterator's BTF; the
    // pointers it yields are BTF pointers whose loads the verifier checks too.
    unsafe {
        let file = (*ctx).file;
        if file.is_null() {
            return; // the end of the iteration
        }
        let socket = bpf_sock_from_file(file.cast()).cast::<u8>();
        if socket.is_null() {
            return; // not a socket
        }
        let offsets = &FLOW_CONFIG.offsets;
        let off = ptr::read_volatile(&offsets.socket_sk) as usize;
        let sk = ptr::read_volatile(socket.add(off).cast::<*mut c_void>());
        if sk.is_null() {
            return;
        }
        let sock = Sock::new(sk, offsets);
        // A TCP socket: an IPv4 or IPv6 stream socket of protocol TCP (a netlink
        // socket of protocol 6, or a raw socket of IPPROTO_TCP, is not one).
        if sock.protocol() != IPPROTO_TCP || sock.sk_type() != SOCK_STREAM || !sock.is_inet() {
            return;
        }
        let state = sock.state();
        if matches!(
            state,
            TCP_LISTEN | TCP_CLOSE | TCP_TIME_WAIT | TCP_NEW_SYN_RECV
        ) {
            return; // no connection (yet, or any more)
        }
        let Some(ev) = FLOW_SCRATCH.get_ptr_mut(0) else {
            return;
        };
        let start = FLOW_SOCKETS.get_ptr_mut(sk as u64);
        write_record(
            ev,
            sk,
            &sock,
            state,
            start,
            bpf_ktime_get_boot_ns(),
            kind::INTERIM,
        );
        let meta = (*ctx).meta;
        let seq = (*meta).seq;
        // A full output buffer makes the kernel show this file again after the
        // reader empties it: nothing is lost.
        bpf_seq_write(seq.cast(), ev.cast::<c_void>(), RawFlowEvent::SIZE as u32);
    }
}
