//! Process-wide allocator settings.

/// Keeps glibc's allocator to one arena unless `MALLOC_ARENA_MAX` says otherwise.
///
/// glibc gives threads that allocate at the same time arenas of their own and never
/// hands their freed memory back; with the runtime's worker and blocking threads
/// passing records and chunks between them, that kept about 8 MiB more resident under
/// load (43 vs 35 MiB at the machine's highest churn, docs/performance.md). The
/// exporter allocates little per record, so one arena costs no measurable contention.
pub fn one_arena() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: mallopt only changes a malloc parameter; called before other threads exist.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
}
