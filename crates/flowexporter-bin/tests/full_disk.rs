//! `flowexporter run` with its spool and journal on a full disk: a real tmpfs, filled
//! by another file, and the collector down. Failures of the journal (appends, syncs,
//! chunk intents) and of the spool must not end the run: the exporter keeps
//! capturing, keeps chunks in memory, and once the disk has room and the collector is
//! up, every record arrives exactly once.

mod common;

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use common::*;
use flow_sink::collector::FaultInjection;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs (needs root): {status}");
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `path` by writing `path` until the disk is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("ballast");
    let block = vec![0xa5u8; 4096];
    loop {
        match file.write_all(&block).and_then(|()| file.sync_data()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
}

#[test]
fn a_full_disk_under_spool_and_journal_does_not_stop_the_exporter() {
    // The spool and the journal live in `state`, a small tmpfs; the collector's
    // output elsewhere.
    let state = Scratch::new("full-disk");
    let elsewhere = Scratch::new("full-disk-out");
    // Declared after `state`: unmounted before `state` is removed.
    let _tmpfs = Tmpfs::mount(&state.path(""), "4m");
    let rt = runtime();
    let out = elsewhere.path("flows.jsonl");
    let collector_port = free_port(); // down for now
    let mut exporter = start_exporter(collector_port, &state, "1s");

    let ballast = state.path("ballast");
    fill(&ballast);
    let first = connections(30);
    // Past journal syncs and window closes: every write to the disk fails.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        exporter.try_wait().expect("try_wait").is_none(),
        "the exporter stopped on a full disk"
    );

    // Room again, and the collector comes up.
    std::fs::remove_file(&ballast).expect("free the disk");
    let second = connections(20);
    let collector = start_collector(&rt, collector_port, &out, FaultInjection::default());
    assert_exactly_once(&wait_for(&out, first, 60, Duration::from_secs(30)), 60);
    assert_exactly_once(&wait_for(&out, second, 40, Duration::from_secs(30)), 40);
    stop(exporter);
    assert_exactly_once(&records_for(&out, first), 60);
    assert_exactly_once(&records_for(&out, second), 40);
    rt.block_on(collector.shutdown());
}
