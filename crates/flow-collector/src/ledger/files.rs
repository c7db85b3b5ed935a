//! File operations that never follow a symbolic link and never block on a FIFO:
//! shared by the ledger and the JSON-lines output.

use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::{FileTypeExt, OpenOptionsExt},
    path::Path,
};

/// `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC`: a link is refused (`ELOOP`), a FIFO does not
/// block the open (it is refused by [`check_regular`] just after).
fn safe_flags() -> i32 {
    use rustix::fs::OFlags;
    (OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC).bits() as i32
}

/// What kind of non-regular file `file` is, for an error message.
fn kind(file_type: &std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "a device"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// Refuses anything but a regular file.
pub(crate) fn check_regular(file: &File) -> io::Result<()> {
    let file_type = file.metadata()?.file_type();
    if file_type.is_file() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refused: {} is not a regular file", kind(&file_type)),
        ))
    }
}

/// Turns `ELOOP` from an `O_NOFOLLOW` open into a clear message.
fn explain(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "refused: is a symbolic link (links are never followed)",
        )
    } else {
        e
    }
}

/// Opens an existing regular file for reading.
pub(crate) fn open_read(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(safe_flags())
        .open(path)
        .map_err(explain)?;
    check_regular(&file)?;
    Ok(file)
}

/// Opens an existing regular file for reading and writing (to truncate a torn tail).
pub(crate) fn open_read_write(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(safe_flags())
        .open(path)
        .map_err(explain)?;
    check_regular(&file)?;
    Ok(file)
}

/// Opens `path` for appending, creating it with mode 0640 when missing.
pub(crate) fn open_append(path: &Path, create_new: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options
        .read(true)
        .append(true)
        .mode(0o640)
        .custom_flags(safe_flags());
    if create_new {
        options.create_new(true);
    } else {
        options.create(true);
    }
    let file = options.open(path).map_err(explain)?;
    check_regular(&file)?;
    Ok(file)
}

/// Creates (or truncates) a regular file for writing, mode 0640.
pub(crate) fn create_truncate(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .custom_flags(safe_flags())
        .open(path)
        .map_err(explain)?;
    check_regular(&file)?;
    Ok(file)
}

/// Makes a directory's entries (creations, renames, removals) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(safe_flags() | rustix::fs::OFlags::DIRECTORY.bits() as i32)
        .open(dir)
        .map_err(explain)?;
    file.sync_all()
}

/// Whether `path` exists, without following a link.
pub(crate) fn exists(path: &Path) -> io::Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}
