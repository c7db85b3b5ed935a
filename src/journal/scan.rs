//! The start-up scan: what a previous run left in the journal directory.
//!
//! Nothing found there makes the journal fail to open. Segments are read only if they
//! are regular files (links are not followed, FIFOs do not block) and no larger than
//! the read bound; anything else under a segment's name is set aside in `damaged/`,
//! never followed and never deleted.

use std::collections::HashSet;

use super::format::{self, FLAG_RECOVERY, OldContent, Parsed};
use flow_sink::{
    error_chain,
    state_dir::{EntryKind, StateDir, free_name},
};

use super::{JournalCounters, JournalError};

/// Suffix of a segment's name.
pub(super) const SEGMENT_SUFFIX: &str = ".wal";
/// Suffix of the first segment of a recovery until it is complete.
pub(super) const TMP_SUFFIX: &str = ".tmp";
/// Digits of a segment's number in its name.
const SEGMENT_DIGITS: usize = 20;
/// Highest segment number the journal reads or gives (positions hold it in 32 bits);
/// it counts up from 1, one per segment, so it never gets near.
const MAX_SEGMENT_NUMBER: u64 = (1 << 31) - 1;
/// Where entries that are not segments of ours, and damaged segments, are moved.
pub(super) const DAMAGED_DIR: &str = "damaged";

/// The name of segment `number`.
pub(super) fn segment_name(number: u64) -> String {
    format!("{number:0width$}{SEGMENT_SUFFIX}", width = SEGMENT_DIGITS)
}

/// The name of segment `number` while a recovery writes it.
pub(super) fn tmp_name(number: u64) -> String {
    format!("{}{TMP_SUFFIX}", segment_name(number))
}

/// `(number, is_tmp)` for a segment's name (or a recovery's `.tmp` one).
fn parse_name(name: &str) -> Option<(u64, bool)> {
    let (stem, tmp) = match name.strip_suffix(TMP_SUFFIX) {
        Some(stem) => (stem, true),
        None => (name, false),
    };
    let number = stem
        .strip_suffix(SEGMENT_SUFFIX)
        .filter(|s| s.len() == SEGMENT_DIGITS && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())?;
    Some((number, tmp))
}

/// A segment the previous run left, to delete (or set aside, when damaged) once its
/// live content is journaled again.
pub(super) struct OldSegment {
    pub(super) number: u64,
    pub(super) name: String,
    pub(super) damaged: bool,
    /// Below the newest recovery's first segment: its content is there.
    pub(super) obsolete: bool,
}

/// What the scan found.
pub(super) struct Scan {
    /// The highest segment number in use (0: none).
    pub(super) last_number: u64,
    pub(super) old: Vec<OldSegment>,
    pub(super) content: OldContent,
}

/// What an entry named `damaged` that is no directory of ours is renamed to.
const NOT_OURS_SUFFIX: &str = ".not-ours";

/// Opens `dir/damaged/`, creating it (`0700`). Something else under that name (a
/// symbolic link, a file, a FIFO) is not ours: it is renamed aside to
/// `damaged.not-ours` (under a free name; never followed or deleted), with a warning,
/// and a real directory is made in its place.
fn damaged_dir(dir: &StateDir) -> std::io::Result<StateDir> {
    let not_created = || std::io::Error::other("not created");
    match dir.sub(DAMAGED_DIR, true) {
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            let kind = dir.kind(DAMAGED_DIR)?.unwrap_or(EntryKind::Other);
            let aside = free_name(dir, format!("{DAMAGED_DIR}{NOT_OURS_SUFFIX}").as_ref())?;
            dir.rename(DAMAGED_DIR, dir, &aside)?;
            tracing::warn!(
                dir = %dir.join(DAMAGED_DIR).display(),
                kind = kind.describe(),
                moved_to = %dir.join(&aside).display(),
                "journal: not a directory of the journal's: renamed aside (not followed), \
                 a real directory made in its place"
            );
            dir.sub(DAMAGED_DIR, true)?.ok_or_else(not_created)
        }
        other => other?.ok_or_else(not_created),
    }
}

/// Moves entry `name` of `dir` into `dir/damaged/` (under a free name), with a warning
/// saying what it is and why. Returns whether it was moved; an entry that cannot be
/// moved stays where it is (and is not read), with a warning.
pub(super) fn set_aside(dir: &StateDir, name: &str, what: &str, why: &str) -> bool {
    let moved = damaged_dir(dir).and_then(|damaged| {
        let to = free_name(&damaged, name.as_ref())?;
        dir.rename(name, &damaged, &to)?;
        damaged.sync()?;
        dir.sync()?;
        Ok(damaged.join(to))
    });
    match moved {
        Ok(to) => {
            tracing::warn!(
                file = %dir.join(name).display(),
                moved_to = %to.display(),
                "journal: {what} set aside ({why})"
            );
            true
        }
        Err(e) => {
            tracing::warn!(
                file = %dir.join(name).display(),
                error = %error_chain(&e),
                "journal: {what} ({why}) could not be set aside; left in place and ignored"
            );
            false
        }
    }
}

/// Whether a read error is about this process or the system (out of descriptors or
/// memory, interrupted), not about the file: the file may be a good segment.
fn transient(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    let errnos = [Errno::MFILE, Errno::NFILE, Errno::NOMEM, Errno::INTR];
    matches!(
        e.kind(),
        std::io::ErrorKind::OutOfMemory | std::io::ErrorKind::Interrupted
    ) || e
        .raw_os_error()
        .is_some_and(|n| errnos.iter().any(|errno| errno.raw_os_error() == n))
}

/// Reads segment `name`, trying again a few times when interrupted.
fn read_segment(dir: &StateDir, name: &str, max_bytes: u64) -> std::io::Result<Vec<u8>> {
    let mut tries = 0;
    loop {
        match dir.read_bounded(name, max_bytes) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted && tries < 3 => tries += 1,
            other => return other,
        }
    }
}

/// Reads what a previous run left in `dir`; segments larger than `max_bytes` are set
/// aside unread. Fails only when the directory itself cannot be listed, or when a
/// segment cannot be read for a reason that is about this process, not the file (out
/// of file descriptors or memory: [`transient`]); a failed directory `fsync` is logged
/// and counted in [`write_failures`](JournalCounters::write_failures).
pub(super) fn scan(
    dir: &StateDir,
    max_bytes: u64,
    counters: &mut JournalCounters,
) -> Result<Scan, JournalError> {
    let items = dir
        .list()
        .map_err(|e| JournalError::io("list", dir.path(), e))?;
    let mut segments = Vec::new();
    let mut tmps = Vec::new();
    let mut last_number = 0;
    for item in items {
        let Some((number, tmp)) = item.name_str().and_then(parse_name) else {
            continue;
        };
        let Some(name) = item.name_str().map(str::to_owned) else {
            continue;
        };
        if number > MAX_SEGMENT_NUMBER {
            // Not a name the journal gives (it counts up from 1): a position holds a
            // segment number in 32 bits, so such a name must not set the numbering.
            if set_aside(
                dir,
                &name,
                item.kind.describe(),
                "segment number out of range",
            ) {
                counters.entries_set_aside += 1;
            }
            continue;
        }
        last_number = last_number.max(number);
        if tmp {
            tmps.push((number, name, item.kind));
        } else {
            segments.push((number, name, item.kind));
        }
    }
    segments.sort_by_key(|(number, _, _)| *number);

    // Read every segment that is a regular file of a sane size.
    let mut read: Vec<(u64, String, Parsed)> = Vec::new();
    for (number, name, kind) in segments {
        if kind != EntryKind::File {
            if set_aside(dir, &name, kind.describe(), "not a regular file") {
                counters.entries_set_aside += 1;
            }
            continue;
        }
        match read_segment(dir, &name, max_bytes) {
            Ok(bytes) => read.push((number, name, format::parse(&bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) if transient(&e) => {
                // About this process, not the file: setting a good segment aside
                // would lose it. Fail; a later start reads it.
                return Err(JournalError::io("read", dir.join(&name), e));
            }
            Err(e) => {
                let why = format!("cannot be read: {}", error_chain(&e));
                if set_aside(dir, &name, "segment", &why) {
                    counters.entries_set_aside += 1;
                }
            }
        }
    }

    // A recovery cut short: its `.tmp` first segment is still here, and so are the
    // segments it was recovering. What it wrote counts for nothing: its later
    // segments go first, then the `.tmp` (so that a crash in between cannot make them
    // count).
    let cut_short: HashSet<u64> = tmps.iter().map(|(n, _, _)| *n).collect();
    let mut removed_any = false;
    read.retain(|(_, name, parsed)| {
        let uncommitted = parsed
            .header
            .is_some_and(|h| h.flags & FLAG_RECOVERY != 0 && cut_short.contains(&h.field));
        if uncommitted {
            match dir.remove_file(name) {
                Ok(_) => removed_any = true,
                Err(e) => tracing::warn!(
                    file = %dir.join(name).display(),
                    error = %error_chain(&e),
                    "journal: cannot remove a segment of an unfinished recovery"
                ),
            }
        }
        !uncommitted
    });
    let synced = match removed_any.then(|| dir.sync()) {
        Some(Err(e)) => {
            // Not fatal. But the removals may not be durable yet, so the `.tmp` names
            // (which make those segments count for nothing) stay until the next start.
            counters.write_failures += 1;
            tracing::warn!(
                dir = %dir.path().display(),
                error = %error_chain(&e),
                "journal: fsync of the journal directory failed; the unfinished \
                 recovery's first segment is removed at the next start"
            );
            false
        }
        _ => true,
    };
    for (_, name, kind) in tmps.into_iter().filter(|_| synced) {
        match dir.remove_file(&name) {
            Ok(_) => {}
            Err(_) if kind != EntryKind::File => {
                if set_aside(dir, &name, kind.describe(), "not a regular file") {
                    counters.entries_set_aside += 1;
                }
            }
            Err(e) => tracing::warn!(
                file = %dir.join(&name).display(),
                error = %error_chain(&e),
                "journal: cannot remove an unfinished recovery segment"
            ),
        }
    }

    // Segments below the newest recovery are obsolete: it holds their live content.
    let supersedes_below = read
        .iter()
        .filter_map(|(_, _, p)| p.header.map(|h| h.field))
        .max()
        .unwrap_or(0);
    let mut content = OldContent::default();
    let mut old = Vec::with_capacity(read.len());
    for (number, name, parsed) in read {
        if number < supersedes_below {
            old.push(OldSegment {
                number,
                name,
                damaged: false,
                obsolete: true,
            });
            continue;
        }
        let damaged = parsed.damaged;
        counters.bytes_discarded += parsed.bad_bytes + parsed.torn_tail;
        counters.bad_entries += parsed.bad_regions;
        if damaged {
            counters.damaged_segments += 1;
            tracing::warn!(
                file = %dir.join(&name).display(),
                header_intact = parsed.header.is_some(),
                bad_stretches = parsed.bad_regions,
                bad_bytes = parsed.bad_bytes,
                intact_entries = parsed.entries.len(),
                "journal: damaged segment; its intact entries are recovered, the bad bytes \
                 skipped, and the segment will be set aside"
            );
        } else if parsed.torn_tail > 0 {
            tracing::info!(
                file = %dir.join(&name).display(),
                bytes = parsed.torn_tail,
                "journal: segment ends in an incomplete entry (a crash during a write); \
                 it is ignored"
            );
        }
        content.add(number, parsed);
        old.push(OldSegment {
            number,
            name,
            damaged,
            obsolete: false,
        });
    }
    Ok(Scan {
        last_number,
        old,
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_about_the_process_are_transient_and_about_the_file_are_not() {
        use rustix::io::Errno;
        for errno in [Errno::MFILE, Errno::NFILE, Errno::NOMEM, Errno::INTR] {
            let e = std::io::Error::from_raw_os_error(errno.raw_os_error());
            assert!(transient(&e), "{e}");
        }
        for errno in [Errno::IO, Errno::ACCESS, Errno::LOOP, Errno::ISDIR] {
            let e = std::io::Error::from_raw_os_error(errno.raw_os_error());
            assert!(!transient(&e), "{e}");
        }
        assert!(!transient(&std::io::Error::from(
            std::io::ErrorKind::FileTooLarge
        )));
    }
}
