//! The Debian packages (docs/packaging.md): builds flowexporter and flowcollector with
//! `packaging/build-debs.sh`, installs them with `dpkg -i`, checks what they installed
//! (files, conffiles, users, state directories), runs the installed binaries, purges
//! them and checks that nothing is left but what docs/packaging.md says stays.
//!
//! Needs root, dpkg and cargo-deb 3.8.0 (`.ci/run` installs it into
//! `$HOME/.cache/flowexporter/cargo-deb`); without cargo-deb it fails, saying how to
//! install it. One test function in its own test binary: cargo runs test binaries one
//! after another, so no other test sees `/etc/flowexporter/config.toml` (which `run`
//! reads by default) while the package is installed, and no two dpkg runs overlap.
//!
//! The packages are made from the binaries `cargo test` built (`--no-build`, the dev
//! profile under `cargo test`) and with lighter compression (`--fast`); otherwise they
//! are what `packaging/build-debs.sh` makes for a release. Building again from here
//! would select other packages than `cargo test --workspace` and so other features,
//! and overwrite the binaries the other test binaries run. `cargo test --workspace`
//! builds `flowcollector` too (its own tests run it); to run this test alone:
//! `cargo build -p flowcollector && cargo test -p flowexporter-bin --test package`.

use std::{
    collections::BTreeSet,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// The packages, in install order.
const PACKAGES: [&str; 2] = ["flowexporter", "flowcollector"];

/// Where a package's files go; walked before the install and after the purge.
const ROOTS: [&str; 3] = ["/etc", "/usr", "/var/lib"];

/// Bookkeeping of other programs under the roots, never the packages' files.
const NOT_COMPARED: [&str; 3] = ["/var/lib/dpkg", "/var/lib/apt", "/var/lib/ucf"];

/// What may appear after install and purge, as docs/packaging.md says: the backups
/// adduser's tools write when they add the service users and groups (the users and
/// groups themselves are entries in files that were there before).
const MAY_REMAIN: [&str; 4] = [
    "/etc/passwd-",
    "/etc/group-",
    "/etc/shadow-",
    "/etc/gshadow-",
];

/// Directories the packages own, absent before the test (it refuses to start over an
/// operator's state) and after the purge.
const OWN_DIRS: [&str; 4] = [
    "/etc/flowexporter",
    "/etc/flowcollector",
    "/var/lib/flowexporter",
    "/var/lib/flowcollector",
];

/// Purges the packages when dropped, so that a failed assertion leaves the machine as
/// it was (but for the users, which the purge keeps by design).
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        for package in PACKAGES.iter().rev() {
            let _ = Command::new("dpkg").args(["--purge", package]).output();
        }
    }
}

fn run(program: &str, args: &[&str]) -> Output {
    match Command::new(program).args(args).output() {
        Ok(output) => output,
        Err(e) => panic!("cannot run {program} {args:?}: {e}"),
    }
}

/// Runs a command that must succeed; returns its standard output.
fn ok(program: &str, args: &[&str]) -> String {
    let output = run(program, args);
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every path under the roots (symbolic links not followed).
fn snapshot() -> BTreeSet<PathBuf> {
    fn walk(dir: &Path, into: &mut BTreeSet<PathBuf>) {
        if NOT_COMPARED.iter().any(|skip| dir == Path::new(skip)) {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            into.insert(path.clone());
            if is_dir {
                walk(&path, into);
            }
        }
    }
    let mut paths = BTreeSet::new();
    for root in ROOTS {
        walk(Path::new(root), &mut paths);
    }
    paths
}

/// The cargo-deb the build script will use, or a failure saying how to install it.
fn cargo_deb() -> String {
    let candidates = [
        std::env::var("CARGO_DEB").ok(),
        Some("cargo-deb".to_string()),
        std::env::var("HOME")
            .ok()
            .map(|home| format!("{home}/.cache/flowexporter/cargo-deb/bin/cargo-deb")),
    ];
    for candidate in candidates.into_iter().flatten() {
        if let Ok(output) = Command::new(&candidate).arg("--version").output()
            && output.status.success()
        {
            return candidate;
        }
    }
    panic!(
        "cargo-deb is not installed; the package test needs it (as .ci/run installs it):\n  \
         cargo install cargo-deb --version 3.8.0 --locked --root $HOME/.cache/flowexporter/cargo-deb"
    );
}

/// A path's owner name, group name and permission bits.
fn owner_and_mode(path: &str) -> (String, String, u32) {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) => panic!("{path}: {e}"),
    };
    let user = ok("id", &["-nu", &meta.uid().to_string()]);
    let group = ok("getent", &["group", &meta.gid().to_string()]);
    let group = group.split(':').next().unwrap_or_default().to_string();
    (
        user.trim().to_string(),
        group,
        meta.permissions().mode() & 0o7777,
    )
}

fn assert_file(path: &str, mode: u32) {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) => panic!("the package should have installed {path}: {e}"),
    };
    assert!(meta.is_file(), "{path} is not a regular file");
    assert_eq!(meta.permissions().mode() & 0o7777, mode, "mode of {path}");
}

/// The installed files of one package; `name` is both the package and the binary.
fn assert_installed(name: &str, man_pages: &[&str]) {
    assert_file(&format!("/usr/bin/{name}"), 0o755);
    assert_file(&format!("/usr/lib/systemd/system/{name}.service"), 0o644);
    assert_file(&format!("/etc/{name}/config.toml"), 0o644);
    for page in man_pages {
        let path = format!("/usr/share/man/man1/{page}.1.gz");
        assert_file(&path, 0o644);
        let bytes = std::fs::read(&path).unwrap_or_default();
        assert!(bytes.starts_with(&[0x1f, 0x8b]), "{path} is not gzip");
    }
    assert_file(
        &format!("/usr/share/bash-completion/completions/{name}"),
        0o644,
    );
    assert_file(&format!("/usr/share/zsh/vendor-completions/_{name}"), 0o644);
    assert_file(
        &format!("/usr/share/fish/vendor_completions.d/{name}.fish"),
        0o644,
    );
    assert_file(&format!("/usr/share/doc/{name}/copyright"), 0o644);
    assert_file(&format!("/usr/share/doc/{name}/packaging.md"), 0o644);
    // The configuration file is a conffile: dpkg keeps an operator's edits on upgrade.
    let conffiles = ok("dpkg-query", &["-W", "-f=${Conffiles}", name]);
    assert!(
        conffiles.contains(&format!("/etc/{name}/config.toml")),
        "{name}'s conffiles: {conffiles:?}"
    );
    // The service user: a system account without a login shell.
    let passwd = ok("getent", &["passwd", name]);
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    assert_eq!(fields.len(), 7, "passwd entry of {name}: {passwd:?}");
    let uid: u32 = fields[2].parse().unwrap_or(u32::MAX);
    assert!(uid < 1000, "{name} is not a system user: {passwd:?}");
    assert_eq!(fields[6], "/usr/sbin/nologin", "shell of {name}");
    // The unit is installed, neither enabled nor started by the package.
    assert!(
        !Path::new(&format!(
            "/etc/systemd/system/multi-user.target.wants/{name}.service"
        ))
        .exists(),
        "the package enabled {name}.service"
    );
    // The version the installed binary reports is the workspace's.
    let version = ok(&format!("/usr/bin/{name}"), &["--version"]);
    assert!(
        version.starts_with(&format!("{name} {}", env!("CARGO_PKG_VERSION"))),
        "/usr/bin/{name} --version: {version:?}"
    );
}

#[test]
fn debian_packages_install_run_and_purge_cleanly() {
    let started = std::time::Instant::now();
    assert_eq!(
        nix::unistd::geteuid().as_raw(),
        0,
        "the package test installs packages: run it as root"
    );
    let cargo_deb = cargo_deb();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // The binaries of this test's own build: <target>/<debug|release>/flowexporter.
    let exe = Path::new(env!("CARGO_BIN_EXE_flowexporter"));
    let profile_dir = exe.parent().unwrap_or(Path::new("."));
    let target = profile_dir.parent().unwrap_or(Path::new("."));
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => "dev",
    };
    for package in PACKAGES {
        let status = run("dpkg-query", &["-W", "-f=${Status}", package]);
        let status = String::from_utf8_lossy(&status.stdout);
        assert!(
            !status.contains("installed") && !status.contains("config-files"),
            "{package} is already on this machine ({status}); the test would purge it: \
             dpkg --purge {package} first"
        );
    }
    for dir in OWN_DIRS {
        assert!(
            !Path::new(dir).exists(),
            "{dir} exists; the test would purge it with the package: move it away first"
        );
    }

    let collector = profile_dir.join("flowcollector");
    assert!(
        collector.exists(),
        "{} is missing: build it first (cargo build -p flowcollector), as \
         cargo test --workspace does",
        collector.display()
    );
    let out = target.join("debian-test");
    let _ = std::fs::remove_dir_all(&out);
    let script = repo.join("packaging/build-debs.sh");
    let build = Command::new(&script)
        .args(["--profile", profile, "--no-build", "--fast", "--out"])
        .arg(&out)
        .env("CARGO_TARGET_DIR", target)
        .env("CARGO_DEB", &cargo_deb)
        .output();
    let build = match build {
        Ok(build) => build,
        Err(e) => panic!("cannot run {}: {e}", script.display()),
    };
    assert!(
        build.status.success(),
        "packaging/build-debs.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    let version = env!("CARGO_PKG_VERSION");
    let arch = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .expect("dpkg --print-architecture");
    let arch = String::from_utf8_lossy(&arch.stdout).trim().to_owned();
    let debs: Vec<String> = PACKAGES
        .iter()
        .map(|p| {
            out.join(format!("{p}_{version}-1_{arch}.deb"))
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    eprintln!("built in {:?}: {debs:?}", started.elapsed());

    let before = snapshot();
    let guard = Purge;
    let mut install = vec!["-i"];
    install.extend(debs.iter().map(String::as_str));
    ok("dpkg", &install);
    // Installing again (what an upgrade runs) changes nothing and fails on nothing.
    ok("dpkg", &install);

    assert_installed(
        "flowexporter",
        &["flowexporter", "flowexporter-run", "flowexporter-check"],
    );
    assert_installed("flowcollector", &["flowcollector", "flowcollector-run"]);
    // The state directories, as postinst makes them: the exporter starts as root
    // (without CAP_DAC_OVERRIDE) and becomes flowexporter; the collector runs as its user.
    assert_eq!(
        owner_and_mode("/var/lib/flowexporter"),
        ("root".into(), "root".into(), 0o711)
    );
    for dir in [
        "/var/lib/flowexporter/spool",
        "/var/lib/flowexporter/journal",
    ] {
        assert_eq!(
            owner_and_mode(dir),
            ("flowexporter".into(), "flowexporter".into(), 0o700),
            "{dir}"
        );
    }
    for dir in ["/var/lib/flowcollector", "/var/lib/flowcollector/state"] {
        assert_eq!(
            owner_and_mode(dir),
            ("flowcollector".into(), "flowcollector".into(), 0o750),
            "{dir}"
        );
    }

    // The installed binaries, from the installed paths, with the shipped configuration.
    let check = ok("/usr/bin/flowexporter", &["check"]);
    assert!(check.contains("all required checks passed"), "{check}");
    ok(
        "/usr/bin/flowexporter",
        &["config", "check", "/etc/flowexporter/config.toml"],
    );
    let collector = ok("/usr/bin/flowcollector", &["config", "check"]);
    assert!(
        collector.contains("configuration file: /etc/flowcollector/config.toml")
            && collector.contains("configuration OK"),
        "{collector}"
    );
    // The hardened units parse, where systemd's own checker is installed.
    if Path::new("/usr/bin/systemd-analyze").exists() {
        for unit in ["flowexporter.service", "flowcollector.service"] {
            let verify = run(
                "systemd-analyze",
                &["verify", &format!("/usr/lib/systemd/system/{unit}")],
            );
            let stderr = String::from_utf8_lossy(&verify.stderr);
            assert!(
                verify.status.success() && !stderr.contains(unit),
                "systemd-analyze verify {unit}: {stderr}"
            );
        }
    }

    // Purge: nothing of the packages is left but the users and adduser's backups.
    ok("dpkg", &["--purge", "flowcollector", "flowexporter"]);
    drop(guard);
    for package in PACKAGES {
        let status = run("dpkg-query", &["-W", "-f=${Status}", package]);
        let status = String::from_utf8_lossy(&status.stdout);
        assert!(
            !status.contains("installed") && !status.contains("config-files"),
            "{package} after purge: {status}"
        );
        ok("getent", &["passwd", package]);
        ok("getent", &["group", package]);
    }
    let after = snapshot();
    let left: Vec<&PathBuf> = after
        .difference(&before)
        .filter(|p| !MAY_REMAIN.iter().any(|m| Path::new(m) == p.as_path()))
        .collect();
    assert!(left.is_empty(), "left behind by the purge: {left:?}");
    let gone: Vec<&PathBuf> = before.difference(&after).collect();
    assert!(gone.is_empty(), "removed by install and purge: {gone:?}");
    for dir in OWN_DIRS {
        assert!(!Path::new(dir).exists(), "{dir} after purge");
    }
    eprintln!("done in {:?}", started.elapsed());
}
