//! Dropping privileges once the kernel program is loaded and attached.
//!
//! Loading needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); everything after it (reading
//! the ring buffer, reading maps through the descriptors already open, writing the
//! spool and journal, talking to the collector) needs none. So the exporter clears
//! every capability set (bounding, ambient, inheritable, permitted, effective) and
//! sets `no_new_privs`, before any other thread exists, so that a compromise of the
//! running exporter does not hold the power it started with. With `--user` it also
//! becomes that user (see `user.rs`); without it, it keeps user ID 0 (for the
//! root-owned state directories): run it under systemd with `ProtectSystem=strict`
//! (see `packaging/`) so that uid 0 without capabilities cannot write the system.

use anyhow::Context;
use caps::CapSet;

use crate::user::ServiceUser;

/// Clears every capability of this thread (call it while it is the only thread, so
/// that it is the whole process), becomes `user` if one is given, and forbids
/// regaining any privilege through exec.
pub fn drop_all(user: Option<&ServiceUser>) -> anyhow::Result<()> {
    // The bounding set can only be reduced while CAP_SETPCAP is effective. Without it
    // (a unit that leaves it out), the bounding set stays as the service manager set
    // it; permitted and effective, cleared below, are what grant power.
    if let Err(e) = caps::clear(None, CapSet::Bounding) {
        if caps::has_cap(None, CapSet::Effective, caps::Capability::CAP_SETPCAP).unwrap_or(false) {
            return Err(e).context("clearing the Bounding capability set");
        }
        tracing::warn!("bounding capability set left as started (no CAP_SETPCAP to clear it)");
    }
    for set in [CapSet::Ambient, CapSet::Inheritable] {
        caps::clear(None, set).with_context(|| format!("clearing the {set:?} capability set"))?;
    }
    // Switching IDs needs CAP_SETGID and CAP_SETUID, still effective here; leaving
    // user ID 0 then empties the permitted and effective sets (cleared below anyway).
    if let Some(user) = user {
        user.assume()?;
    }
    for set in [CapSet::Permitted, CapSet::Effective] {
        caps::clear(None, set).with_context(|| format!("clearing the {set:?} capability set"))?;
    }
    nix::sys::prctl::set_no_new_privs()
        .map_err(std::io::Error::from)
        .context("setting no_new_privs")?;
    match user {
        Some(u) => tracing::info!(
            user = %u.name,
            uid = u.uid,
            gid = u.gid,
            "running as {} with no capabilities (the kernel program stays attached)",
            u.name
        ),
        None => tracing::info!("dropped all capabilities (the kernel program stays attached)"),
    }
    Ok(())
}
