//! Running as an unprivileged user (`--user`, `[process] user`, `FLOWEXPORTER_USER`):
//! who that user is, handing it the state directories, and becoming it.
//!
//! The order matters, and `run` keeps it: look the user up before loading anything
//! (an unknown user stops the start at once); load and attach the kernel program and
//! open its maps as root; create the spool and journal directories and give them to
//! the user; then, while the process is still one thread, switch the groups, the group
//! ID and the user ID ([`ServiceUser::assume`], called by `privileges::drop_all`). The
//! ring buffer and the maps keep working through the descriptors already open.

use std::{ffi::CString, io, os::unix::fs::DirBuilderExt, path::Path};

use anyhow::{Context, bail};
use flow_sink::state_dir::{EntryKind, StateDir};
use nix::unistd::{self, AccessFlags, Gid, Uid, User};

/// How deep `hand_over` walks a state directory (the exporter's own tree is two deep).
const MAX_STATE_DEPTH: usize = 8;

/// A user of the system's user database, to run as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceUser {
    /// The user name.
    pub name: String,
    /// Its user ID.
    pub uid: libc::uid_t,
    /// Its primary group ID.
    pub gid: libc::gid_t,
}

impl ServiceUser {
    /// Looks `name` up in the user database (`/etc/passwd`, or whatever NSS is set up
    /// to read); a name that is not there is an error saying so.
    pub fn lookup(name: &str) -> anyhow::Result<ServiceUser> {
        if name.contains('\0') {
            bail!("a user name cannot contain NUL");
        }
        match User::from_name(name) {
            Ok(Some(user)) => Ok(ServiceUser {
                name: name.to_string(),
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
            }),
            Ok(None) => bail!("no user named {name:?} on this system"),
            Err(errno) => {
                Err(io::Error::from(errno)).with_context(|| format!("looking up the user {name:?}"))
            }
        }
    }

    /// Creates `dir` if needed and gives it to the user: the directories created here
    /// (missing parents included, mode 0700), `dir` (or the directory it links to) and
    /// everything under it that is not the user's yet (symbolic links under it
    /// themselves, never their targets). A directory
    /// under it that cannot be listed while it already belongs to the user (a root
    /// without CAP_DAC_READ_SEARCH, as under the systemd unit) is left as it is: the
    /// user made what is in it.
    pub fn hand_over(&self, dir: &Path) -> anyhow::Result<()> {
        let mut missing = Vec::new();
        let mut next = Some(dir);
        while let Some(d) = next
            && !d.as_os_str().is_empty()
            && std::fs::symlink_metadata(d).is_err()
        {
            missing.push(d);
            next = d.parent();
        }
        for d in missing.iter().rev() {
            match std::fs::DirBuilder::new().mode(0o700).create(d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(|| format!("creating {}", d.display())),
            }
            self.chown(d)?;
        }
        // `dir` itself may be a symbolic link to the real directory: hand over that.
        let dir =
            std::fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
        self.chown_tree(&dir)
    }

    fn chown(&self, path: &Path) -> anyhow::Result<()> {
        std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid)).with_context(|| {
            format!(
                "giving {} to the user {} ({}:{})",
                path.display(),
                self.name,
                self.uid,
                self.gid
            )
        })
    }

    /// Gives `dir` and what is under it to the user, through directory descriptors:
    /// entries are changed with `fchownat(AT_SYMLINK_NOFOLLOW)` (a link itself, never
    /// its target) and subdirectories opened with `O_NOFOLLOW | O_DIRECTORY`, so a
    /// directory swapped for a link meanwhile is not followed. The walk stops
    /// `MAX_STATE_DEPTH` levels down (the exporter's own tree is two deep).
    fn chown_tree(&self, dir: &Path) -> anyhow::Result<()> {
        let top = StateDir::open(dir).with_context(|| format!("opening {}", dir.display()))?;
        let (uid, gid) = top
            .own_owner()
            .with_context(|| format!("reading {}", dir.display()))?;
        let owned = uid == self.uid && gid == self.gid;
        if !owned {
            top.chown(self.uid, self.gid)
                .with_context(|| self.giving(top.path()))?;
        }
        self.chown_entries(&top, owned, 0)
    }

    /// Gives what is in `d` to the user, entering subdirectories depth first: at most
    /// `MAX_STATE_DEPTH` directories are open at once, however many there are.
    fn chown_entries(&self, d: &StateDir, owned: bool, depth: usize) -> anyhow::Result<()> {
        let items = match d.list() {
            Ok(items) => items,
            Err(e) if owned && e.kind() == io::ErrorKind::PermissionDenied => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("listing {}", d.path().display())),
        };
        for item in items {
            let Some((uid, gid)) = d
                .owner(&item.name)
                .with_context(|| format!("reading {}", d.join(&item.name).display()))?
            else {
                continue; // gone meanwhile
            };
            let owned = uid == self.uid && gid == self.gid;
            if !owned {
                d.chown_entry(&item.name, self.uid, self.gid)
                    .with_context(|| self.giving(&d.join(&item.name)))?;
            }
            if item.kind != EntryKind::Directory {
                continue;
            }
            let Some(name) = item.name_str() else {
                continue; // not a name of ours: given over, not entered
            };
            if depth + 1 >= MAX_STATE_DEPTH {
                tracing::warn!(dir = %d.join(name).display(), "state directory nested too deep: not entered");
                continue;
            }
            match d.sub(name, false) {
                Ok(Some(sub)) => self.chown_entries(&sub, owned, depth + 1)?,
                Ok(None) => {}
                Err(e) if owned && e.kind() == io::ErrorKind::PermissionDenied => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("opening {}", d.join(name).display()));
                }
            }
        }
        Ok(())
    }

    fn giving(&self, path: &Path) -> String {
        format!(
            "giving {} to the user {} ({}:{})",
            path.display(),
            self.name,
            self.uid,
            self.gid
        )
    }

    /// Becomes the user: its supplementary groups, then its group ID and user ID (real,
    /// effective and saved alike), then checks that none of them can be changed back.
    /// Needs CAP_SETGID and CAP_SETUID; leaving user ID 0 clears the permitted and
    /// effective capability sets. Call it while the process has one thread.
    pub fn assume(&self) -> anyhow::Result<()> {
        let name = CString::new(self.name.as_str()).context("a user name cannot contain NUL")?;
        let who = || format!("user {} ({}:{})", self.name, self.uid, self.gid);
        let (uid, gid) = (Uid::from_raw(self.uid), Gid::from_raw(self.gid));
        unistd::initgroups(&name, gid)
            .map_err(io::Error::from)
            .with_context(|| format!("setting the supplementary groups of {}", who()))?;
        unistd::setresgid(gid, gid, gid)
            .map_err(io::Error::from)
            .with_context(|| format!("switching to the group of {}", who()))?;
        unistd::setresuid(uid, uid, uid)
            .map_err(io::Error::from)
            .with_context(|| format!("switching to {}", who()))?;
        let u = unistd::getresuid()
            .map_err(io::Error::from)
            .context("reading the user IDs back")?;
        let g = unistd::getresgid()
            .map_err(io::Error::from)
            .context("reading the group IDs back")?;
        let (r, e, s) = (u.real, u.effective, u.saved);
        let (rg, eg, sg) = (g.real, g.effective, g.saved);
        if [r, e, s] != [uid; 3] || [rg, eg, sg] != [gid; 3] {
            bail!(
                "after switching to {}: uids {r}/{e}/{s}, gids {rg}/{eg}/{sg}",
                who()
            );
        }
        // This must fail, as the user cannot become root again.
        if self.uid != 0 && unistd::setuid(Uid::from_raw(0)).is_ok() {
            bail!("after switching to {}, user ID 0 could be regained", who());
        }
        Ok(())
    }

    /// Checks, as the user, that `dir` can be listed and written (a parent that the
    /// user cannot enter would only show later, as a failure to open the spool).
    pub fn check_access(&self, dir: &Path) -> anyhow::Result<()> {
        // access(2) checks with the real IDs: the user's.
        unistd::access(
            dir,
            AccessFlags::R_OK | AccessFlags::W_OK | AccessFlags::X_OK,
        )
        .map_err(io::Error::from)
        .with_context(|| {
            format!(
                "the user {} cannot use {} (is every parent directory searchable by it?)",
                self.name,
                dir.display()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_and_a_made_up_name_is_refused() {
        let root = ServiceUser::lookup("root").expect("root");
        assert_eq!((root.uid, root.gid), (0, 0));
        let err = ServiceUser::lookup("no-such-user-fe").expect_err("unknown");
        assert!(
            format!("{err:#}").contains("no user named \"no-such-user-fe\""),
            "{err:#}"
        );
        assert!(ServiceUser::lookup("a\0b").is_err());
    }

    #[test]
    fn hand_over_gives_the_tree_but_never_a_link_target() {
        use std::os::unix::fs::{MetadataExt, symlink};
        // Not root: nothing to give away (the end-to-end tests run as root).
        if !unistd::getuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let user = ServiceUser::lookup("nobody").expect("the test needs the user nobody");
        let base = std::env::temp_dir().join(format!("fe-user-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (state, outside) = (base.join("state"), base.join("outside"));
        std::fs::create_dir_all(state.join("sub")).expect("dirs");
        std::fs::create_dir_all(&outside).expect("dirs");
        std::fs::write(state.join("sub/file"), "x").expect("file");
        std::fs::write(outside.join("secret"), "x").expect("file");
        symlink(outside.join("secret"), state.join("link")).expect("symlink");
        // A directory link (e.g. a `corrupt/` swapped for a link) is not walked either.
        symlink(&outside, state.join("corrupt")).expect("symlink");

        user.hand_over(&state).expect("existing tree");
        user.hand_over(&base.join("new/spool")).expect("created");
        let owner = |p: &Path| {
            let m = std::fs::symlink_metadata(p).expect("metadata");
            (m.uid(), m.gid())
        };
        let theirs = (user.uid, user.gid);
        for p in [
            "state",
            "state/sub",
            "state/sub/file",
            "state/link",
            "new",
            "new/spool",
        ] {
            assert_eq!(owner(&base.join(p)), theirs, "{p}");
        }
        assert_eq!(
            owner(&outside.join("secret")),
            (0, 0),
            "a link's target stays"
        );
        assert_eq!(owner(&base), (0, 0), "an existing parent stays");
        assert_eq!(owner(&outside), (0, 0), "a linked directory stays");
        assert_eq!(
            owner(&base.join("state/corrupt")),
            theirs,
            "the link itself is given"
        );
        let _ = std::fs::remove_dir_all(&base);
    }
}
