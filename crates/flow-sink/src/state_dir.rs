//! A state directory (the spool, the record journal) handled as hostile ground.
//!
//! Whatever an operator, a bad disk or another process leaves in a state directory, the
//! exporter must neither follow it elsewhere nor hang on it nor read it without bound:
//!
//! - every operation is relative to a directory descriptor opened once
//!   ([`StateDir`]), so a directory swapped for a link after the open changes nothing;
//! - entries are opened with `O_NOFOLLOW` (a symbolic link fails with `ELOOP`) and
//!   `O_NONBLOCK` (a FIFO does not block the open), and used only when `fstat` says
//!   they are regular files ([`StateDir::open_file`]);
//! - subdirectories are opened with `O_DIRECTORY | O_NOFOLLOW` ([`StateDir::sub`]);
//! - reads are bounded ([`StateDir::read_bounded`]);
//! - only regular files are ever deleted ([`StateDir::remove_file`]): a link, a FIFO or
//!   a directory found under one of our names is not ours, and is moved aside
//!   ([`StateDir::rename`]), never deleted or followed;
//! - what the exporter creates is private: directories `0700`, files `0600` (flow
//!   records say who talked to whom).

use std::{
    ffi::{OsStr, OsString},
    fs::File,
    io::{self, Read},
    os::{
        fd::{AsFd, BorrowedFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};

/// Mode of the directories the exporter creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the files the exporter creates.
pub const FILE_MODE: u32 = 0o600;

/// What an entry of a state directory is, as `lstat` sees it (links not followed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link (never followed).
    Symlink,
    /// A FIFO, socket or device.
    Other,
}

impl EntryKind {
    fn of(file_type: FileType) -> EntryKind {
        match file_type {
            FileType::RegularFile => EntryKind::File,
            FileType::Directory => EntryKind::Directory,
            FileType::Symlink => EntryKind::Symlink,
            _ => EntryKind::Other,
        }
    }

    /// A word for log lines: `file`, `directory`, `symlink` or `special file`.
    pub fn describe(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Directory => "directory",
            EntryKind::Symlink => "symlink",
            EntryKind::Other => "special file",
        }
    }
}

/// One entry of a directory listing.
#[derive(Clone, Debug)]
pub struct DirItem {
    /// Its name (no path).
    pub name: OsString,
    /// What it is (not following links).
    pub kind: EntryKind,
}

impl DirItem {
    /// The name as UTF-8, if it is.
    pub fn name_str(&self) -> Option<&str> {
        self.name.to_str()
    }
}

/// The error for an entry that is not a regular file (or not a directory, for
/// [`StateDir::sub`]): `InvalidData`, naming what it is.
fn not_ours(kind: EntryKind, wanted: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("a {} where a {wanted} was expected", kind.describe()),
    )
}

/// An open directory; every operation on its entries is relative to its descriptor.
#[derive(Debug)]
pub struct StateDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl StateDir {
    /// Opens the directory at `path`, creating it (and missing parents, `0700`) when
    /// absent. `path` is the operator's configured path and may itself pass through
    /// links; what is inside it never does.
    pub fn open(path: impl AsRef<Path>) -> io::Result<StateDir> {
        let path = path.as_ref().to_path_buf();
        if !path.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(&path)?;
        }
        let fd = rustix::fs::open(
            &path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        // Flow records are sensitive: a state directory that others can read or
        // enter (an older version made them 0755) becomes private.
        let mode = rustix::fs::fstat(&fd)?.st_mode & 0o7777;
        if mode & 0o077 != 0 {
            // Not being allowed to (a directory of another owner, capabilities
            // dropped) is no reason not to run: say so and go on.
            if let Err(e) = rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & DIR_MODE)) {
                tracing::warn!(
                    dir = %path.display(),
                    mode = format_args!("{mode:o}"),
                    error = %io::Error::from(e),
                    "state directory is readable by others and could not be made private"
                );
            }
        }
        Ok(StateDir { fd, path })
    }

    /// The directory's path (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of entry `name` (for messages).
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// Opens subdirectory `name`, creating it (`0700`) when `create` and absent.
    /// `Ok(None)`: absent and not created. A link, file or FIFO under that name is an
    /// `InvalidData` error: it is not ours, and is not followed.
    pub fn sub(&self, name: &str, create: bool) -> io::Result<Option<StateDir>> {
        if create {
            match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(DIR_MODE)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => Ok(Some(StateDir {
                fd,
                path: self.path.join(name),
            })),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
                let kind = self.kind(name)?.unwrap_or(EntryKind::Other);
                Err(not_ours(kind, "directory"))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// What entry `name` is, without following a link; `None` when absent.
    pub fn kind(&self, name: impl AsRef<OsStr>) -> io::Result<Option<EntryKind>> {
        match rustix::fs::statat(&self.fd, name.as_ref(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(EntryKind::of(FileType::from_raw_mode(st.st_mode)))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Size in bytes and modification time (seconds, nanoseconds) of entry `name`,
    /// without following a link; `None` when absent.
    pub fn size_and_mtime(&self, name: impl AsRef<OsStr>) -> io::Result<Option<(u64, i64, i64)>> {
        match rustix::fs::statat(&self.fd, name.as_ref(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some((
                u64::try_from(st.st_size).unwrap_or(0),
                st.st_mtime,
                i64::try_from(st.st_mtime_nsec).unwrap_or(0),
            ))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The entries of the directory (without `.` and `..`), in no particular order.
    pub fn list(&self) -> io::Result<Vec<DirItem>> {
        let fd = rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let dir = Dir::new(fd)?;
        let mut items = Vec::new();
        for entry in dir {
            let entry = entry?;
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            let name = OsStr::from_bytes(name.to_bytes()).to_os_string();
            let kind = match entry.file_type() {
                FileType::Unknown => match self.kind(&name)? {
                    Some(kind) => kind,
                    None => continue, // gone meanwhile
                },
                known => EntryKind::of(known),
            };
            items.push(DirItem { name, kind });
        }
        Ok(items)
    }

    /// Opens entry `name` for reading if, and only if, it is a regular file: a link
    /// is not followed, a FIFO does not block, and anything but a regular file is an
    /// `InvalidData` error naming what it is.
    pub fn open_file(&self, name: impl AsRef<OsStr>) -> io::Result<File> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&self.fd, name.as_ref(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::LOOP) => return Err(not_ours(EntryKind::Symlink, "file")),
            Err(e) => return Err(e.into()),
        };
        let kind = EntryKind::of(FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode));
        if kind != EntryKind::File {
            return Err(not_ours(kind, "file"));
        }
        // Reads of a regular file never block; clear O_NONBLOCK all the same.
        rustix::fs::fcntl_setfl(&fd, OFlags::empty())?;
        Ok(File::from(fd))
    }

    /// Reads the regular file `name` whole, refusing (`FileTooLarge`) one larger than
    /// `max` bytes, and reading at most `max` bytes even if it grows meanwhile.
    pub fn read_bounded(&self, name: impl AsRef<OsStr>, max: u64) -> io::Result<Vec<u8>> {
        let file = self.open_file(name)?;
        let len = file.metadata()?.len();
        if len > max {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("{len} bytes, more than the {max} allowed"),
            ));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        file.take(max).read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// Creates (or truncates) the regular file `name` for writing, mode `0600`. A
    /// link there is not followed (`ELOOP`), and anything but a regular file is
    /// refused.
    pub fn create_file(&self, name: impl AsRef<OsStr>) -> io::Result<File> {
        self.open_for_write(name.as_ref(), OFlags::TRUNC)
    }

    /// Opens the regular file `name` for appending, creating it (`0600`) when absent.
    pub fn append_file(&self, name: impl AsRef<OsStr>) -> io::Result<File> {
        self.open_for_write(name.as_ref(), OFlags::APPEND)
    }

    fn open_for_write(&self, name: &OsStr, extra: OFlags) -> io::Result<File> {
        let flags = OFlags::WRONLY
            | OFlags::CREATE
            | OFlags::NOFOLLOW
            | OFlags::NONBLOCK
            | OFlags::CLOEXEC
            | extra;
        let fd = match rustix::fs::openat(&self.fd, name, flags, Mode::from_raw_mode(FILE_MODE)) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::LOOP) => return Err(not_ours(EntryKind::Symlink, "file")),
            Err(e) => return Err(e.into()),
        };
        let kind = EntryKind::of(FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode));
        if kind != EntryKind::File {
            return Err(not_ours(kind, "file"));
        }
        rustix::fs::fcntl_setfl(&fd, extra & OFlags::APPEND)?;
        Ok(File::from(fd))
    }

    /// Deletes entry `name` if it is a regular file. `Ok(false)`: it was absent. An
    /// entry of any other kind is not ours: `InvalidData`, and it stays.
    pub fn remove_file(&self, name: impl AsRef<OsStr>) -> io::Result<bool> {
        let name = name.as_ref();
        match self.kind(name)? {
            None => Ok(false),
            Some(EntryKind::File) => match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
                Ok(()) => Ok(true),
                Err(rustix::io::Errno::NOENT) => Ok(false),
                Err(e) => Err(e.into()),
            },
            Some(kind) => Err(not_ours(kind, "file")),
        }
    }

    /// Renames entry `from` (of any kind; a link is moved, not followed) to `to` in
    /// directory `dest` (which may be `self`), replacing a regular file there.
    pub fn rename(
        &self,
        from: impl AsRef<OsStr>,
        dest: &StateDir,
        to: impl AsRef<OsStr>,
    ) -> io::Result<()> {
        rustix::fs::renameat(&self.fd, from.as_ref(), &dest.fd, to.as_ref())?;
        Ok(())
    }

    /// Owner (user ID, group ID) of entry `name`, without following a link; `None`
    /// when absent.
    pub fn owner(&self, name: impl AsRef<OsStr>) -> io::Result<Option<(u32, u32)>> {
        match rustix::fs::statat(&self.fd, name.as_ref(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some((st.st_uid, st.st_gid))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Owner (user ID, group ID) of the directory itself.
    pub fn own_owner(&self) -> io::Result<(u32, u32)> {
        let st = rustix::fs::fstat(&self.fd)?;
        Ok((st.st_uid, st.st_gid))
    }

    /// Gives entry `name` to `uid`:`gid`; a link itself, never its target.
    pub fn chown_entry(&self, name: impl AsRef<OsStr>, uid: u32, gid: u32) -> io::Result<()> {
        rustix::fs::chownat(
            &self.fd,
            name.as_ref(),
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
        Ok(())
    }

    /// Gives the directory itself to `uid`:`gid`.
    pub fn chown(&self, uid: u32, gid: u32) -> io::Result<()> {
        rustix::fs::fchown(
            &self.fd,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(gid)),
        )?;
        Ok(())
    }

    /// `fsync`s the directory, so that entries created, renamed or removed persist.
    pub fn sync(&self) -> io::Result<()> {
        rustix::fs::fsync(&self.fd)?;
        Ok(())
    }

    /// The directory's descriptor.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Largest operator-supplied file read by [`read_regular_file`] callers here (TLS
/// certificates, keys and CA bundles: a few KiB each, a large bundle a few hundred).
pub const MAX_OPERATOR_FILE_BYTES: u64 = 4 << 20;

/// Reads a file an operator named (a TLS certificate, a key, a CA bundle), as
/// untrusted as the state directories: it must be a regular file (links are followed,
/// since secrets are often mounted through them, but a device or FIFO is never
/// opened: the type is checked before the open, and again on the open file), and at
/// most `max` bytes are read.
pub fn read_regular_file(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let before = std::fs::metadata(path)?;
    if !before.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let len = u64::try_from(st.st_size).unwrap_or(0);
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("{len} bytes, more than the {max} allowed"),
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    File::from(fd).take(max).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A name for something moved aside that is not taken in `dir`: `name`, or
/// `name.1`, `name.2`, ...
pub fn free_name(dir: &StateDir, name: &OsStr) -> io::Result<OsString> {
    if dir.kind(name)?.is_none() {
        return Ok(name.to_os_string());
    }
    for n in 1..=10_000u32 {
        let mut candidate = name.to_os_string();
        candidate.push(format!(".{n}"));
        if dir.kind(&candidate)?.is_none() {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "10,000 entries already set aside under this name",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    #[test]
    fn a_link_is_neither_followed_nor_deleted() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("precious"), b"x").expect("write");
        let dir = StateDir::open(tmp.path()).expect("open");
        symlink(outside.path(), tmp.path().join("corrupt")).expect("symlink");
        symlink(outside.path().join("precious"), tmp.path().join("a.chunk")).expect("symlink");
        let err = dir
            .sub("corrupt", true)
            .expect_err("a link is not a directory of ours");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        let err = dir
            .open_file("a.chunk")
            .expect_err("a link is not a file of ours");
        assert!(err.to_string().contains("symlink"), "{err}");
        let err = dir.remove_file("a.chunk").expect_err("not ours to delete");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(outside.path().join("precious").exists());
        let kinds: Vec<_> = dir
            .list()
            .expect("list")
            .into_iter()
            .map(|i| i.kind)
            .collect();
        assert_eq!(kinds, vec![EntryKind::Symlink, EntryKind::Symlink]);
    }

    #[test]
    fn a_fifo_does_not_block_and_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::open(tmp.path()).expect("open");
        rustix::fs::mknodat(
            dir.as_fd(),
            "fifo",
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
        let err = dir.open_file("fifo").expect_err("a fifo is not ours");
        assert!(err.to_string().contains("special file"), "{err}");
        let err = dir.create_file("fifo").expect_err("a fifo is not ours");
        assert!(
            err.to_string().contains("special file") || err.raw_os_error() == Some(libc_enxio()),
            "{err}"
        );
    }

    fn libc_enxio() -> i32 {
        rustix::io::Errno::NXIO.raw_os_error()
    }

    #[test]
    fn operator_files_must_be_regular_and_small() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("ca.pem");
        std::fs::write(&file, b"pem").expect("write");
        assert_eq!(read_regular_file(&file, 3).expect("read"), b"pem");
        let err = read_regular_file(&file, 2).expect_err("too large");
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        let link = tmp.path().join("link.pem");
        symlink(&file, &link).expect("symlink");
        assert_eq!(
            read_regular_file(&link, 3).expect("a link is followed"),
            b"pem"
        );
        let zero = tmp.path().join("zero.pem");
        symlink("/dev/zero", &zero).expect("symlink");
        let err = read_regular_file(&zero, 3).expect_err("a device is not opened");
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let dir = StateDir::open(tmp.path()).expect("open");
        rustix::fs::mknodat(
            dir.as_fd(),
            "fifo",
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
        let err = read_regular_file(&tmp.path().join("fifo"), 3).expect_err("a fifo");
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn reads_are_bounded_and_creations_private() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = StateDir::open(tmp.path().join("new/state")).expect("open");
        std::io::Write::write_all(&mut dir.create_file("f").expect("create"), b"0123456789")
            .expect("write");
        assert_eq!(dir.read_bounded("f", 10).expect("read"), b"0123456789");
        let err = dir.read_bounded("f", 9).expect_err("too large");
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        let mode = std::fs::metadata(dir.join("f"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, FILE_MODE);
        let mode = std::fs::metadata(dir.path())
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, DIR_MODE);
        let sub = dir.sub("corrupt", true).expect("sub").expect("created");
        let mode = std::fs::metadata(sub.path())
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, DIR_MODE);
        assert!(dir.remove_file("f").expect("remove"));
        assert!(!dir.remove_file("f").expect("absent"));
    }
}
