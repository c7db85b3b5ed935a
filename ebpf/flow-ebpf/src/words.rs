//! Word-sized copies and fills.
//!
//! The BPF target implements `memset` and `memmove` as byte-at-a-time loops in
//! subprograms, and LLVM emits them for any zeroed array or struct copy it cannot
//! prove disjoint: zeroing one 184-byte record cost more than the rest of the program.
//! These helpers move 8 bytes per instruction instead; the volatile accesses keep LLVM
//! from turning them back into `memset`/`memmove` calls.

use core::ptr;

/// Writes `N` zero words at `dst`.
///
/// # Safety
/// `dst` must be valid for writes of `N` 8-byte-aligned words.
#[inline(always)]
pub unsafe fn zero<const N: usize>(dst: *mut u64) {
    for i in 0..N {
        // SAFETY: the caller's contract.
        unsafe { ptr::write_volatile(dst.add(i), 0) };
    }
}

/// Copies `N` words from `src` to `dst`.
///
/// # Safety
/// `src` must be valid for reads and `dst` for writes of `N` 8-byte-aligned words.
#[inline(always)]
pub unsafe fn copy<const N: usize>(dst: *mut u64, src: *const u64) {
    for i in 0..N {
        // SAFETY: the caller's contract.
        unsafe { ptr::write_volatile(dst.add(i), ptr::read_volatile(src.add(i))) };
    }
}

/// Adds `n` to the word at `dst` atomically (a BPF atomic add, `lock ... +=`, whose
/// result is not read: every kernel with BPF has it). Per-CPU counters need it too:
/// the second attachment of the program can run nested inside the first on the same
/// CPU (an interrupt during the first raises a socket event, which the kernel then
/// hands to the second only), and a plain `+=` of the two could lose one.
///
/// # Safety
/// `dst` must be valid for reads and writes of an 8-byte-aligned word.
#[inline(always)]
pub unsafe fn add(dst: *mut u64, n: u64) {
    // SAFETY: the caller's contract; the instruction touches only that word.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({dst} + 0) += {n}",
            dst = in(reg) dst,
            n = in(reg) n,
            options(nostack),
        );
    }
}
