//! The spool on hostile ground: files it cannot read, links, FIFOs and directories
//! where its files should be, a full disk, permissions, oversized files. Real files,
//! real permissions (a child process without `CAP_DAC_OVERRIDE`), a real tmpfs.
//!
//! These tests run as root (they mount a tmpfs and drop capabilities with `setpriv`).

mod common;

use std::{
    fs, io,
    os::unix::fs::{FileTypeExt, PermissionsExt, symlink},
    path::{Path, PathBuf},
    process::Command,
    sync::mpsc,
    time::Duration,
};

use common::*;
use flow_batch::wire::{ChunkEncoder, InstanceId};
use flow_sink::{SinkError, Spool, SpoolConfig, WhenFull};
use flow_testkit::{Tmpfs, fill_disk};

fn frames(instance: u128, n: u64, per: u64) -> Vec<Vec<u8>> {
    let mut encoder = ChunkEncoder::new(HOST, InstanceId::new(instance)).expect("encoder");
    chunks(n, per)
        .iter()
        .map(|c| encoder.encode_to_vec(c).expect("encode"))
        .collect()
}

/// The names in `dir` ending with `.chunk`, sorted.
fn chunk_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".chunk"))
        .collect();
    names.sort();
    names
}

/// All names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .expect("stat")
        .permissions()
        .mode()
        & 0o777
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Runs `f` on another thread and fails the test if it takes longer than `limit`
/// (an open of a FIFO that blocks, a read that never ends); a panic of `f` is the
/// test's.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => panic!("the thread ended without a result"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("did not finish within {limit:?}: blocked on a spool entry?")
        }
    }
}

/// Reads the whole spool: the batch sequence numbers it sends, oldest first, each
/// removed after reading (as a delivery would).
fn drain(spool: &mut Spool) -> Vec<u64> {
    let mut seen = Vec::new();
    while let Some(chunk) = spool.oldest().expect("oldest never fails for one bad file") {
        seen.push(chunk.batch_id.sequence);
        assert!(spool.remove(chunk.id).expect("remove"));
    }
    seen
}

// ---------------------------------------------------------------------------------
// 1. A spool file that cannot be read does not stop delivery.
// ---------------------------------------------------------------------------------

const CHILD_DIR_ENV: &str = "FLOW_SINK_SPOOL_FAULTS_CHILD_DIR";

#[test]
fn unreadable_spool_file_is_set_aside_and_the_rest_sent() {
    // The exporter drops its capabilities before it reads the spool: a file with mode
    // 000 is then really unreadable (EACCES), which root with CAP_DAC_OVERRIDE would
    // not see. The reading runs in a child process (this test binary, the test below)
    // started by setpriv without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("spool");
    let frames = frames(40, 4, 10);
    {
        let mut spool = Spool::open(&dir, SpoolConfig::default()).expect("spool");
        for f in &frames {
            spool.push(f).expect("push");
        }
    }
    let names = chunk_names(&dir);
    let victim = dir.join(&names[1]);
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o000)).expect("chmod 000");

    let exe = std::env::current_exe().expect("test binary");
    let output = Command::new("setpriv")
        .args(["--bounding-set=-dac_override,-dac_read_search", "--"])
        .arg(&exe)
        .args([
            "--exact",
            "unreadable_spool_file_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, &dir)
        .output()
        .expect("run setpriv (util-linux)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // Set aside, not deleted, not changed.
    let moved = dir.join("corrupt").join(&names[1]);
    assert_eq!(fs::read(&moved).expect("root reads it"), frames[1]);
    assert_eq!(mode(&moved), 0o000);
    assert!(chunk_names(&dir).is_empty());
}

/// The child half of the test above; does nothing unless started by it.
#[test]
fn unreadable_spool_file_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let names = chunk_names(&dir);
    // Without the capabilities, the file is really unreadable.
    let err = fs::read(dir.join(&names[1])).expect_err("mode 000 without CAP_DAC_OVERRIDE");
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");

    let mut spool = Spool::open(&dir, SpoolConfig::default()).expect("spool");
    assert_eq!(spool.counters().files_recovered, 4);
    assert_eq!(drain(&mut spool), vec![0, 2, 3]);
    let c = spool.counters();
    assert_eq!((c.unreadable_files, c.corrupt_files, c.files), (1, 0, 0));
    assert!(dir.join("corrupt").join(&names[1]).exists());
}

#[test]
fn a_directory_fifo_or_link_in_a_chunks_place_is_set_aside_not_followed() {
    // Entries replaced after the spool was opened: the spool finds them when it
    // reads them for sending.
    let tmp = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("spool");
    let frames = frames(41, 5, 10);
    let mut spool = Spool::open(&dir, SpoolConfig::default()).expect("spool");
    for f in &frames {
        spool.push(f).expect("push");
    }
    let names = chunk_names(&dir);
    // 1: a directory; 2: a FIFO (opening it for reading would block); 3: a link to a
    // valid frame outside the spool (following it would send what is not ours).
    fs::remove_file(dir.join(&names[1])).expect("rm");
    fs::create_dir(dir.join(&names[1])).expect("mkdir");
    fs::remove_file(dir.join(&names[2])).expect("rm");
    mkfifo(&dir.join(&names[2]));
    let target = outside.path().join("not-ours.chunk");
    fs::write(&target, &frames[3]).expect("outside frame");
    fs::remove_file(dir.join(&names[3])).expect("rm");
    symlink(&target, dir.join(&names[3])).expect("symlink");

    let (seen, c) = within(Duration::from_secs(20), move || {
        let seen = drain(&mut spool);
        (seen, spool.counters())
    });
    assert_eq!(seen, vec![0, 4], "the link was not followed");
    assert_eq!((c.unreadable_files, c.corrupt_files), (3, 0));
    let corrupt = dir.join("corrupt");
    assert!(
        fs::symlink_metadata(corrupt.join(&names[1]))
            .expect("dir")
            .is_dir()
    );
    assert!(
        fs::symlink_metadata(corrupt.join(&names[2]))
            .expect("fifo")
            .file_type()
            .is_fifo()
    );
    assert!(
        fs::symlink_metadata(corrupt.join(&names[3]))
            .expect("link")
            .file_type()
            .is_symlink(),
        "the link itself was moved"
    );
    assert_eq!(fs::read(&target).expect("outside"), frames[3]);
    assert!(chunk_names(&dir).is_empty());
}

#[test]
fn open_moves_aside_what_is_named_like_a_chunk_but_is_not_a_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("spool");
    let frames = frames(42, 3, 10);
    {
        let mut spool = Spool::open(&dir, SpoolConfig::default()).expect("spool");
        for f in &frames {
            spool.push(f).expect("push");
        }
    }
    let target = outside.path().join("precious");
    fs::write(&target, b"not the spool's").expect("outside");
    symlink(&target, dir.join("00000000000000000010-x-1.chunk")).expect("symlink");
    mkfifo(&dir.join("00000000000000000011-x-2.chunk"));
    fs::create_dir(dir.join("00000000000000000012-x-3.chunk.tmp")).expect("mkdir");
    // Not ours by name: left alone.
    fs::write(dir.join("notes.txt"), b"operator's").expect("notes");

    let mut spool = within(Duration::from_secs(20), move || {
        Spool::open(&dir, SpoolConfig::default()).expect("reopen")
    });
    let dir = tmp.path().join("spool");
    let c = spool.counters();
    assert_eq!((c.files_recovered, c.foreign_entries), (3, 3), "{c:?}");
    let mut expected = chunk_names(&dir);
    expected.extend(["corrupt".to_owned(), "notes.txt".to_owned()]);
    expected.sort();
    assert_eq!(names(&dir), expected, "nothing else left in the spool");
    assert_eq!(chunk_names(&dir).len(), 3);
    let corrupt = dir.join("corrupt");
    assert!(
        fs::symlink_metadata(corrupt.join("00000000000000000010-x-1.chunk"))
            .expect("moved link")
            .file_type()
            .is_symlink()
    );
    assert!(
        fs::symlink_metadata(corrupt.join("00000000000000000011-x-2.chunk"))
            .expect("moved fifo")
            .file_type()
            .is_fifo()
    );
    assert!(corrupt.join("00000000000000000012-x-3.chunk.tmp").is_dir());
    assert_eq!(fs::read(&target).expect("outside"), b"not the spool's");
    // The real chunks are sent, and new ones continue after them.
    assert_eq!(drain(&mut spool), vec![0, 1, 2]);
    assert_eq!(spool.push(&frames[0]).expect("push").order(), 3);
}

#[test]
fn a_fifo_or_directory_planted_under_the_next_chunks_name_does_not_stop_spooling() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("spool");
    let frames = frames(50, 4, 10);
    let mut spool = Spool::open(&dir, SpoolConfig::default()).expect("spool");
    spool.push(&frames[0]).expect("push");
    // The next names are predictable: order 1, sequence 1; order 2, sequence 2.
    let first = chunk_names(&dir).remove(0);
    let next = |n: u64| first.replacen("00000000000000000000", &format!("{n:020}"), 1);
    let one = next(1).replace("-0.chunk", "-1.chunk");
    let two = next(2).replace("-0.chunk", "-2.chunk");
    mkfifo(&dir.join(format!("{one}.tmp")));
    fs::create_dir(dir.join(&two)).expect("mkdir");
    let mut spool = within(Duration::from_secs(20), move || {
        spool
            .push(&frames[1])
            .expect("a FIFO at the .tmp name is moved aside");
        spool
            .push(&frames[2])
            .expect("a directory at the name is moved aside");
        spool
    });
    assert_eq!(spool.counters().foreign_entries, 2);
    assert_eq!(drain(&mut spool), vec![0, 1, 2]);
    assert!(dir.join("corrupt").join(&two).is_dir());
}

// ---------------------------------------------------------------------------------
// 2. Links in the set-aside folders are never followed; nothing not ours is deleted.
// ---------------------------------------------------------------------------------

#[test]
fn a_corrupt_link_is_renamed_aside_and_nothing_outside_is_deleted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("spool");
    fs::create_dir(&dir).expect("spool dir");
    // An outside directory holding files, some named like the spool's own.
    let mut precious = Vec::new();
    for (i, name) in [
        "00000000000000000001-x-1.chunk",
        "00000000000000000001-x-1.chunk.reason",
        "00000000000000000002-x-2.chunk",
        "photo.jpg",
    ]
    .into_iter()
    .enumerate()
    {
        let path = outside.path().join(name);
        fs::write(&path, vec![i as u8; 4096]).expect("outside file");
        precious.push(path);
    }
    symlink(outside.path(), dir.join("corrupt")).expect("corrupt -> outside");

    // A cap of one byte: any set-aside file found is over it.
    let config = SpoolConfig::default().with_set_aside_max_bytes(1);
    let mut spool = Spool::open(&dir, config).expect("spool");
    let c = spool.counters();
    assert_eq!(
        (c.foreign_entries, c.set_aside_files_deleted),
        (1, 0),
        "{c:?}"
    );
    for path in &precious {
        assert_eq!(fs::read(path).expect("outside file survives").len(), 4096);
    }
    let corrupt = fs::symlink_metadata(dir.join("corrupt")).expect("corrupt");
    assert!(corrupt.is_dir(), "a real directory in the link's place");
    assert!(
        fs::symlink_metadata(dir.join("corrupt.not-ours"))
            .expect("the link, renamed")
            .file_type()
            .is_symlink()
    );
    // Use the set-aside folders: a corrupt chunk, rejected chunks, trimming.
    let frames = frames(43, 4, 10);
    for f in &frames {
        spool.push(f).expect("push");
    }
    let first = spool.oldest().expect("oldest").expect("chunk");
    spool.reject(first.id, "400 Bad Request").expect("reject");
    // Someone plants links in the real rejected/ named like a frame and a note.
    let rejected = dir.join("rejected");
    symlink(
        &precious[0],
        rejected.join("00000000000000000099-x-9.chunk"),
    )
    .expect("symlink");
    symlink(
        &precious[1],
        rejected.join("00000000000000000099-x-9.chunk.reason"),
    )
    .expect("symlink");
    let second = spool.oldest().expect("oldest").expect("chunk");
    spool.reject(second.id, "400 Bad Request").expect("reject");
    let c = spool.counters();
    assert_eq!(c.rejected_files, 2);
    assert!(c.set_aside_files_deleted >= 1, "{c:?}");
    drop(spool);
    // A restart scans the real folders (with the links in them) under the same cap.
    let spool =
        Spool::open(&dir, SpoolConfig::default().with_set_aside_max_bytes(1)).expect("reopen");
    assert_eq!(spool.counters().foreign_entries, 0, "nothing new to move");
    for path in &precious {
        assert_eq!(fs::read(path).expect("outside file survives").len(), 4096);
    }
    assert!(
        fs::symlink_metadata(rejected.join("00000000000000000099-x-9.chunk"))
            .expect("planted link stays")
            .file_type()
            .is_symlink()
    );
    assert!(
        fs::symlink_metadata(outside.path().join("photo.jpg")).is_ok(),
        "nothing outside was deleted"
    );
}

#[test]
fn a_rejected_that_is_not_a_directory_is_renamed_aside() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("spool");
    fs::create_dir(&dir).expect("spool dir");
    fs::write(dir.join("rejected"), b"a file where a directory should be").expect("file");
    let mut spool = Spool::open(&dir, SpoolConfig::default()).expect("spool");
    assert_eq!(spool.counters().foreign_entries, 1);
    assert_eq!(
        fs::read(dir.join("rejected.not-ours")).expect("the file, renamed"),
        b"a file where a directory should be"
    );
    let frames = frames(48, 1, 10);
    let id = spool.push(&frames[0]).expect("push");
    // Replaced by a link while the spool runs: not followed either.
    let outside = tempfile::tempdir().expect("tempdir");
    assert!(
        fs::symlink_metadata(dir.join("rejected"))
            .expect("made")
            .is_dir()
    );
    fs::remove_dir(dir.join("rejected")).expect("rmdir");
    symlink(outside.path(), dir.join("rejected")).expect("symlink");
    let dest = spool
        .reject(id, "400 Bad Request")
        .expect("reject")
        .expect("moved");
    assert_eq!(
        dest,
        dir.join("rejected").join(dest.file_name().expect("name"))
    );
    assert!(
        fs::symlink_metadata(dir.join("rejected"))
            .expect("dir")
            .is_dir()
    );
    assert!(
        fs::symlink_metadata(dir.join("rejected.not-ours.1"))
            .expect("the link, renamed")
            .file_type()
            .is_symlink()
    );
    assert_eq!(spool.counters().foreign_entries, 2);
    assert!(
        names(outside.path()).is_empty(),
        "nothing went through the link"
    );
}

#[test]
fn a_link_planted_in_corrupt_under_a_chunks_name_is_not_replaced() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let outside = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("spool");
    let frames = frames(49, 2, 10);
    let mut spool = Spool::open(&dir, SpoolConfig::default()).expect("spool");
    for f in &frames {
        spool.push(f).expect("push");
    }
    let names = chunk_names(&dir);
    let target = outside.path().join("precious");
    fs::write(&target, b"not the spool's").expect("outside");
    fs::create_dir(dir.join("corrupt")).expect("mkdir");
    symlink(&target, dir.join("corrupt").join(&names[0])).expect("symlink");
    let mut bytes = fs::read(dir.join(&names[0])).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(dir.join(&names[0]), &bytes).expect("damage");

    assert_eq!(drain(&mut spool), vec![1]);
    assert_eq!(spool.counters().corrupt_files, 1);
    let planted = dir.join("corrupt").join(&names[0]);
    assert!(
        fs::symlink_metadata(&planted)
            .expect("the link stays")
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read(&target).expect("outside"), b"not the spool's");
    let moved = dir.join("corrupt").join(format!("{}.1", names[0]));
    assert_eq!(fs::read(&moved).expect("set aside beside it"), bytes);
}

// ---------------------------------------------------------------------------------
// 3. A full disk degrades: drop the oldest, refuse when nothing is left, recover.
// ---------------------------------------------------------------------------------

fn no_tmp_left(dir: &Path) {
    let tmp: Vec<_> = names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(tmp.is_empty(), "partial files left: {tmp:?}");
}

#[test]
fn a_full_disk_drops_the_oldest_then_refuses_then_recovers() {
    let fs_ = Tmpfs::mount("1m");
    let dir = fs_.path().join("spool");
    let filler = fs_.path().join("filler");
    let frames = frames(44, 8, 200);
    let mut spool = Spool::open(&dir, SpoolConfig::default()).expect("spool");
    for f in &frames[..3] {
        spool.push(f).expect("push");
    }

    // Disk full, chunks spooled: the oldest make room, counted apart from the cap.
    fill_disk(&filler);
    spool
        .push(&frames[3])
        .expect("a full disk drops the oldest");
    let c = spool.counters();
    assert!(c.chunks_dropped_no_space >= 1, "{c:?}");
    assert_eq!(c.records_dropped_no_space, 200 * c.chunks_dropped_no_space);
    assert!(c.bytes_dropped_no_space > 0);
    assert_eq!((c.chunks_dropped_full, c.chunks_refused_no_space), (0, 0));
    assert_eq!(c.files, 4 - c.chunks_dropped_no_space);
    no_tmp_left(&dir);
    let kept = drain(&mut spool);
    assert_eq!(kept.last(), Some(&3), "the newest is kept: {kept:?}");

    // Disk full, nothing left to drop: refused with ENOSPC, nothing left behind.
    fill_disk(&filler);
    match spool.push(&frames[4]) {
        Err(SinkError::Io { source, .. }) => {
            assert_eq!(source.raw_os_error(), Some(28), "ENOSPC: {source}");
        }
        other => panic!("expected SinkError::Io(ENOSPC), got {other:?}"),
    }
    let c = spool.counters();
    assert_eq!((c.chunks_refused_no_space, c.files), (1, 0));
    no_tmp_left(&dir);

    // A refused chunk can still be rejected without failing: the note is skipped.
    fs::remove_file(&filler).expect("free the disk");
    let id = spool
        .push(&frames[5])
        .expect("space is back: push works again");
    fill_disk(&filler);
    let dest = spool
        .reject(id, "400 Bad Request")
        .expect("reject never fails for a full disk")
        .expect("moved");
    assert!(dest.exists());
    let mut note = dest.clone().into_os_string();
    note.push(".reason");
    assert!(
        !Path::new(&note).exists(),
        "a note that could not be written is skipped"
    );
    assert_eq!(spool.counters().rejected_files, 1);
    no_tmp_left(&dir.join("rejected"));

    // Space returns: the next push simply works.
    fs::remove_file(&filler).expect("free the disk");
    spool.push(&frames[6]).expect("push works again");
    assert_eq!(drain(&mut spool), vec![6]);
}

#[test]
fn a_full_disk_with_refuse_newest_keeps_the_old_chunks() {
    let fs_ = Tmpfs::mount("512k");
    let dir = fs_.path().join("spool");
    let filler = fs_.path().join("filler");
    let frames = frames(45, 4, 200);
    let config = SpoolConfig::default().with_when_full(WhenFull::RefuseNewest);
    let mut spool = Spool::open(&dir, config).expect("spool");
    spool.push(&frames[0]).expect("push");
    fill_disk(&filler);
    let err = spool.push(&frames[1]).expect_err("no space");
    assert!(
        matches!(&err, SinkError::Io { source, .. } if source.raw_os_error() == Some(28)),
        "{err:?}"
    );
    let c = spool.counters();
    assert_eq!(
        (
            c.files,
            c.chunks_dropped_no_space,
            c.chunks_refused_no_space
        ),
        (1, 0, 1)
    );
    no_tmp_left(&dir);
    fs::remove_file(&filler).expect("free the disk");
    spool.push(&frames[1]).expect("push works again");
    assert_eq!(drain(&mut spool), vec![0, 1]);
}

// ---------------------------------------------------------------------------------
// 4. What the spool creates is private.
// ---------------------------------------------------------------------------------

#[test]
fn everything_the_spool_makes_is_private() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("spool");
    // An older version made the spool directory 0755.
    fs::create_dir(&dir).expect("mkdir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    let frames = frames(46, 3, 10);
    let mut spool = Spool::open(&dir, SpoolConfig::default()).expect("spool");
    assert_eq!(mode(&dir), 0o700);
    for f in &frames {
        spool.push(f).expect("push");
    }
    for name in chunk_names(&dir) {
        assert_eq!(mode(&dir.join(&name)), 0o600, "{name}");
    }
    let first = spool.oldest().expect("oldest").expect("chunk");
    let dest = spool
        .reject(first.id, "400 Bad Request")
        .expect("reject")
        .expect("moved");
    assert_eq!(mode(&dir.join("rejected")), 0o700);
    assert_eq!(mode(&dest), 0o600);
    let mut note = dest.into_os_string();
    note.push(".reason");
    assert_eq!(mode(Path::new(&note)), 0o600);
    // A damaged file goes to corrupt/, which is private too.
    let names = chunk_names(&dir);
    let victim = dir.join(&names[0]);
    let mut bytes = fs::read(&victim).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&victim, &bytes).expect("damage");
    assert_eq!(drain(&mut spool), vec![2]);
    assert_eq!(spool.counters().corrupt_files, 1);
    assert_eq!(mode(&dir.join("corrupt")), 0o700);
}

// ---------------------------------------------------------------------------------
// 5. Every read is bounded.
// ---------------------------------------------------------------------------------

#[test]
fn a_file_larger_than_any_frame_is_set_aside_unread() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("spool");
    fs::create_dir(&dir).expect("mkdir");
    // A sparse 1 TiB file named like the oldest chunk: reading it whole would ask
    // for a terabyte of memory.
    let big = "00000000000000000000-x-0.chunk";
    let file = fs::File::create(dir.join(big)).expect("create");
    file.set_len(1 << 40).expect("sparse");
    drop(file);
    let frames = frames(47, 2, 10);
    // Caps high enough that neither the spool's nor the set-aside one deletes it.
    let config = SpoolConfig::default()
        .with_max_bytes(u64::MAX / 4)
        .with_set_aside_max_bytes(u64::MAX / 4);
    let mut spool = Spool::open(&dir, config).expect("spool");
    for f in &frames {
        spool.push(f).expect("push");
    }
    let (seen, c) = within(Duration::from_secs(20), move || {
        let seen = drain(&mut spool);
        (seen, spool.counters())
    });
    assert_eq!(seen, vec![0, 1]);
    assert_eq!((c.corrupt_files, c.unreadable_files), (1, 0));
    let moved = dir.join("corrupt").join(big);
    assert_eq!(fs::metadata(&moved).expect("set aside").len(), 1 << 40);
}
