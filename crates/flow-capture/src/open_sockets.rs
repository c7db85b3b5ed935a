//! Interim records: a snapshot of every open TCP socket, taken by the kernel's
//! open-socket iterator (`iter/task_file`).
//!
//! The iterator program walks every open file of every process, so one pass sees the
//! sockets of every network namespace; for each open TCP socket it writes the same
//! record a close writes (marked interim, with the socket's current state and
//! counters so far) to the iterator's output, which [`OpenSocketScanner::snapshot`]
//! reads. A socket open in several processes (after `fork`, or passed over a Unix
//! socket) appears once per file and is kept once, by its cookie.
//!
//! The mechanism was chosen by measurement against the alternatives
//! (`docs/performance.md`, "Interim records"): `sock_diag` answers only for the
//! caller's network namespace and copies a `tcp_info` per socket through netlink;
//! walking `/proc/net/tcp` has no byte counters. The iterator costs one kernel pass
//! over every open file of every task (its cost grows with the host's open files,
//! not only its TCP sockets) and one copy per open TCP socket. It sees the tasks of
//! the exporter's own PID namespace (run it in the host's).

use std::{
    collections::HashSet,
    io::{self, Read},
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    sync::Arc,
    time::{Duration, Instant},
};

use flow_common::RawFlowEvent;
use flow_record::FlowRecord;

use crate::{clock::BootClock, error::CaptureError, reader};

/// Reads from the iterator in pieces of this size: a few hundred records.
const READ_CHUNK: usize = 64 << 10;

/// Takes snapshots of the open TCP sockets. Cheap to clone (the clones share the
/// iterator's link) and `Send`, so a snapshot can run on a thread of its own while
/// records keep flowing.
#[derive(Clone, Debug)]
pub struct OpenSocketScanner {
    link: Arc<OwnedFd>,
}

/// One snapshot: an interim record per open TCP socket.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The records, one per socket (by cookie).
    pub records: Vec<FlowRecord>,
    /// Socket files the iterator reported, duplicates included.
    pub files: usize,
    /// Reports of a socket already reported (one socket, several files).
    pub duplicates: usize,
    /// How long the snapshot took, the kernel's pass and the decoding.
    pub elapsed: Duration,
}

impl OpenSocketScanner {
    /// A scanner on the loaded iterator program: creates its link.
    pub(crate) fn new(program: BorrowedFd<'_>) -> Result<OpenSocketScanner, CaptureError> {
        let link = link_create(program).map_err(|source| CaptureError::Io {
            operation: "attaching the open-socket iterator (BPF_LINK_CREATE)",
            source,
        })?;
        Ok(OpenSocketScanner {
            link: Arc::new(link),
        })
    }

    /// Runs the iterator and hands every raw event it writes to `f` (duplicates
    /// included); returns how many.
    pub fn scan_raw(&self, mut f: impl FnMut(&RawFlowEvent)) -> Result<usize, CaptureError> {
        let fd = iter_create(&self.link).map_err(|source| CaptureError::Io {
            operation: "starting the open-socket iterator (BPF_ITER_CREATE)",
            source,
        })?;
        let mut file = std::fs::File::from(fd);
        let mut buf = vec![0u8; READ_CHUNK];
        // Bytes of a record cut by the end of a read, carried to the next.
        let mut filled = 0;
        let mut n = 0;
        loop {
            let got = match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(got) => got,
                // The kernel stops a read after a million objects without output
                // (`EAGAIN`) and goes on at the next one.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                    ) =>
                {
                    continue;
                }
                Err(source) => {
                    return Err(CaptureError::Io {
                        operation: "reading the open-socket iterator",
                        source,
                    });
                }
            };
            filled += got;
            let whole = filled - filled % RawFlowEvent::SIZE;
            for record in buf[..whole].chunks_exact(RawFlowEvent::SIZE) {
                if let Some(ev) = reader::decode(record) {
                    f(&ev);
                    n += 1;
                }
            }
            buf.copy_within(whole..filled, 0);
            filled -= whole;
        }
        Ok(n)
    }

    /// Takes a snapshot: one interim record per open TCP socket.
    pub fn snapshot(&self) -> Result<Snapshot, CaptureError> {
        let started = Instant::now();
        let clock = BootClock::measure();
        let mut seen = HashSet::new();
        let mut out = Snapshot::default();
        out.files = self.scan_raw(|ev| {
            if ev.cookie != 0 && !seen.insert(ev.cookie) {
                out.duplicates += 1;
                return;
            }
            out.records.push(crate::decode_record(ev, &clock));
        })?;
        out.elapsed = started.elapsed();
        Ok(out)
    }
}

/// `bpf(BPF_LINK_CREATE)` for an iterator program without parameters.
fn link_create(program: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // `union bpf_attr` for BPF_LINK_CREATE: prog_fd, target_fd, attach_type, flags,
    // then the (unused) per-type union; zero past the fields set.
    let mut attr = [0u32; 16];
    attr[0] = program.as_raw_fd() as u32;
    attr[2] = aya_obj::generated::bpf_attach_type::BPF_TRACE_ITER as u32;
    bpf(
        aya_obj::generated::bpf_cmd::BPF_LINK_CREATE as libc::c_long,
        &attr,
    )
}

/// `bpf(BPF_ITER_CREATE)`: a new readable iterator on `link`.
fn iter_create(link: &OwnedFd) -> io::Result<OwnedFd> {
    let mut attr = [0u32; 2];
    attr[0] = link.as_raw_fd() as u32;
    bpf(
        aya_obj::generated::bpf_cmd::BPF_ITER_CREATE as libc::c_long,
        &attr,
    )
}

fn bpf<const N: usize>(cmd: libc::c_long, attr: &[u32; N]) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a valid, initialised `union bpf_attr` prefix of the size
    // passed; the call returns a new file descriptor or -1.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_ptr(),
            std::mem::size_of_val(attr) as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a file descriptor the kernel just returned, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as i32) })
}
