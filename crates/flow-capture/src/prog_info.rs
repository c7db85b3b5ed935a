//! `BPF_OBJ_GET_INFO_BY_FD` for a program: run count, run time and recursion misses
//! (aya's `ProgramInfo` does not expose the latter).

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
    time::Duration,
};

use aya_obj::generated::bpf_prog_info;

use crate::{error::CaptureError, loader::ProgramStats};

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

#[repr(C)]
struct InfoByFdAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// Reads the statistics of the program behind `fd`.
pub fn program_stats(fd: BorrowedFd<'_>) -> Result<ProgramStats, CaptureError> {
    // SAFETY: bpf_prog_info is plain old data; all-zero is its documented initial state.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoByFdAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<bpf_prog_info>() as u32,
        info: (&mut info as *mut bpf_prog_info) as u64,
    };
    // SAFETY: the attribute points at a live, correctly sized info struct.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoByFdAttr,
            size_of::<InfoByFdAttr>(),
        )
    };
    if rc < 0 {
        return Err(CaptureError::Io {
            operation: "reading the program's statistics (BPF_OBJ_GET_INFO_BY_FD)",
            source: io::Error::last_os_error(),
        });
    }
    Ok(ProgramStats {
        run_count: info.run_cnt,
        run_time: Duration::from_nanos(info.run_time_ns),
        recursion_misses: info.recursion_misses,
    })
}
