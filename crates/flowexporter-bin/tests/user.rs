//! `flowexporter run --user NAME`, end to end: once the kernel program is attached,
//! every thread runs as that user and its groups with no capability, the state
//! directories are the user's, and records still flow; an unknown user stops the start
//! before anything is loaded.

mod common;

use std::{os::unix::fs::MetadataExt, process::Command, time::Duration};

use common::*;
use flow_collector::FaultInjection;

/// `id OPTION nobody`, as numbers.
fn id_of_nobody(option: &str) -> Vec<u32> {
    let out = Command::new("id")
        .args([option, "nobody"])
        .output()
        .expect("id");
    assert!(out.status.success(), "the test needs the user nobody");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|n| n.parse().expect("a number"))
        .collect()
}

#[test]
fn as_another_user_every_thread_switches_and_records_still_flow() {
    let (uid, gid, mut groups) = (
        id_of_nobody("-u")[0],
        id_of_nobody("-g")[0],
        id_of_nobody("-G"),
    );
    groups.sort();
    let scratch = Scratch::new("user");
    // A spool directory root made earlier is handed over too.
    std::fs::create_dir_all(scratch.path("spool")).expect("spool dir");
    let rt = runtime();
    let out = scratch.path("flows.jsonl");
    let collector_port = free_port();
    let collector = start_collector(&rt, collector_port, &out, FaultInjection::default());
    let exporter = start_exporter_with(collector_port, &scratch, "1s", &["--user", "nobody"]);

    let ids = thread_status(exporter.id(), |n| matches!(n, "Uid" | "Gid" | "Groups"));
    assert!(ids.len() >= 6, "{ids:?}");
    for (name, value) in &ids {
        let mut got: Vec<u32> = value
            .split_whitespace()
            .map(|n| n.parse().expect("a number"))
            .collect();
        match name.as_str() {
            // Real, effective, saved and file-system IDs.
            "Uid" => assert_eq!(got, [uid; 4], "{ids:?}"),
            "Gid" => assert_eq!(got, [gid; 4], "{ids:?}"),
            _ => {
                got.sort();
                assert_eq!(got, groups, "{ids:?}");
            }
        }
    }
    assert_no_capabilities(exporter.id());

    let port = connections(10);
    assert_exactly_once(&wait_for(&out, port, 20, Duration::from_secs(15)), 20);
    for dir in ["spool", "journal"] {
        let meta = std::fs::metadata(scratch.path(dir)).expect(dir);
        assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{dir}");
    }
    // What it wrote since, it wrote as the user.
    let journal: Vec<_> = std::fs::read_dir(scratch.path("journal"))
        .expect("journal")
        .map(|e| e.expect("entry").metadata().expect("metadata"))
        .collect();
    assert!(!journal.is_empty());
    assert!(journal.iter().all(|m| m.uid() == uid));
    stop(exporter);
    rt.block_on(collector.shutdown());
}

#[test]
fn an_unknown_user_is_refused_before_anything_is_loaded() {
    let scratch = Scratch::new("no-user");
    let spool = scratch.path("spool");
    let by_flag = Command::new(BIN)
        .args(["run", "--collector", "http://127.0.0.1:1"])
        .args(["--user", "no-such-user-fe"])
        .arg("--spool-dir")
        .arg(&spool)
        .output()
        .expect("run");
    let by_env = Command::new(BIN)
        .args(["run", "--collector", "http://127.0.0.1:1"])
        .env("FLOWEXPORTER_USER", "no-such-user-fe")
        .arg("--spool-dir")
        .arg(&spool)
        .output()
        .expect("run");
    for out in [by_flag, by_env] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains("process.user (--user) = \"no-such-user-fe\"")
                && err.contains("no user named \"no-such-user-fe\""),
            "{err}"
        );
        assert!(!err.contains("tracing TCP closes"), "{err}");
    }
    assert!(!spool.exists(), "nothing was created");
}
