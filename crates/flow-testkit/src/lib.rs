//! Helpers for flowexporter's real-kernel tests: loading the capture, collecting the
//! records of one test's own connections, and network namespaces joined by veth pairs;
//! and a [`FlowRecord`] builder with fixed defaults ([`record`]) for tests that make
//! records themselves. Tests panic with a message rather than return errors.
//!
//! ```no_run
//! use flow_testkit::{Capture, involves, record};
//!
//! // A record made by hand: the defaults, with what the test cares about.
//! let r = record().remote("10.0.0.9:443").bytes(100, 2_000).build();
//! assert_eq!(r.stats.bytes_received, 2_000);
//!
//! // The real kernel program (as root): this test's own connections' records.
//! flow_testkit::mount_kernel_filesystems();
//! let capture = Capture::load();
//! # let _ = (capture, involves(443));
//! ```
#![allow(missing_docs, clippy::unwrap_used, clippy::new_without_default)]

pub mod browser;
pub mod kafka;
pub mod nfdump;
pub mod otlp;
pub mod python;
pub mod records;

use std::{
    fs::File,
    net::SocketAddr,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant, SystemTime},
};

use flow_capture::{FlowCapture, FlowCaptureBuilder, FlowReader, FlowRecord};
pub use records::{RecordBuilder, record};

/// Mounts tracefs and bpffs when they are missing (as on a fresh machine of this kind).
pub fn mount_kernel_filesystems() {
    let mounts = std::fs::read_to_string("/proc/mounts").expect("read /proc/mounts");
    if !mounts.contains(" /sys/kernel/tracing tracefs ") {
        run("mount", &["-t", "tracefs", "nodev", "/sys/kernel/tracing"]);
    }
    if !mounts.contains(" /sys/fs/bpf bpf ") {
        run("mount", &["-t", "bpf", "bpf", "/sys/fs/bpf"]);
    }
}

/// Runs a command and panics with its output when it fails.
pub fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A loaded capture with its reader.
pub struct Capture {
    pub capture: FlowCapture,
    pub reader: FlowReader,
    pub started: SystemTime,
}

impl Capture {
    pub fn load() -> Capture {
        Capture::load_with(FlowCaptureBuilder::new())
    }

    pub fn load_with(builder: FlowCaptureBuilder) -> Capture {
        mount_kernel_filesystems();
        let started = SystemTime::now();
        let mut capture = builder.load().expect("load the capture core");
        let reader = capture.take_reader().expect("reader");
        Capture {
            capture,
            reader,
            started,
        }
    }

    /// Collects the records `keep` accepts until there are `n` of them; panics after
    /// `timeout` with what it has.
    pub fn collect(
        &mut self,
        n: usize,
        timeout: Duration,
        keep: impl Fn(&FlowRecord) -> bool,
    ) -> Vec<FlowRecord> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n {
            assert!(
                Instant::now() < deadline,
                "timed out with {} of {n} records: {out:#?}",
                out.len()
            );
            self.reader.wait(Duration::from_millis(20)).expect("wait");
            self.reader.read_available(|r| {
                if keep(&r) {
                    out.push(r)
                }
            });
        }
        // Anything beyond n that is already there is a bug too: read once more.
        thread::sleep(Duration::from_millis(100));
        self.reader.read_available(|r| {
            if keep(&r) {
                out.push(r)
            }
        });
        out
    }
}

/// Whether a record belongs to a connection with `port` on either side.
pub fn involves(port: u16) -> impl Fn(&FlowRecord) -> bool {
    move |r| r.local.port() == port || r.remote.port() == port
}

/// The one record whose local end is `local`.
pub fn by_local(records: &[FlowRecord], local: SocketAddr) -> &FlowRecord {
    let found: Vec<_> = records.iter().filter(|r| r.local == local).collect();
    assert_eq!(found.len(), 1, "records with local {local}: {records:#?}");
    found[0]
}

/// Asserts that the record's times fall inside [`from`, `to`] and are ordered.
pub fn assert_times_within(r: &FlowRecord, from: SystemTime, to: SystemTime) {
    let start = r.t_start.expect("t_start known");
    assert!(
        start >= from,
        "t_start {start:?} before the test began {from:?}"
    );
    assert!(r.t_end >= start, "t_end before t_start: {r:#?}");
    assert!(
        r.t_end <= to,
        "t_end {:?} after the test ended {to:?}",
        r.t_end
    );
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace, deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(tag: &str) -> NetNs {
        let name = format!(
            "fe{}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            tag
        );
        run("ip", &["netns", "add", &name]);
        let ns = NetNs { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, cmd: &[&str]) {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(cmd);
        run("ip", &args);
    }

    /// Runs `f` on a thread that has entered this namespace; sockets it creates live
    /// there.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{}", self.name);
        thread::spawn(move || {
            let ns = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: a valid namespace fd; setns affects only this thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Two namespaces joined by a veth pair: `a` has 10.77.0.1 and fd77::1, `b` has
/// 10.77.0.2 and fd77::2.
pub struct VethPair {
    pub a: NetNs,
    pub b: NetNs,
}

impl VethPair {
    pub const A4: &str = "10.77.0.1";
    pub const B4: &str = "10.77.0.2";
    pub const A6: &str = "fd77::1";
    pub const B6: &str = "fd77::2";

    pub fn new() -> VethPair {
        let a = NetNs::new("a");
        let b = NetNs::new("b");
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let (va, vb) = (format!("fva{id}"), format!("fvb{id}"));
        run(
            "ip",
            &[
                "link", "add", &va, "netns", &a.name, "type", "veth", "peer", "name", &vb, "netns",
                &b.name,
            ],
        );
        for (ns, dev, v4, v6) in [(&a, &va, Self::A4, Self::A6), (&b, &vb, Self::B4, Self::B6)] {
            ns.exec(&["ip", "addr", "add", &format!("{v4}/24"), "dev", dev]);
            ns.exec(&[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            ns.exec(&["ip", "link", "set", dev, "up"]);
        }
        VethPair { a, b }
    }
}

/// Creates a hash map with the given key and value sizes and pins it at `path`, with
/// raw `bpf()` calls (as another agent with another definition would).
pub fn pin_foreign_map(path: &Path, key_size: u32, value_size: u32) {
    #[repr(C)]
    #[derive(Default)]
    struct CreateAttr {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }
    #[repr(C)]
    struct PinAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let attr = CreateAttr {
        map_type: 1, // BPF_MAP_TYPE_HASH
        key_size,
        value_size,
        max_entries: 16,
        ..Default::default()
    };
    // SAFETY: BPF_MAP_CREATE (0) with a valid attribute.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 0, &attr, size_of::<CreateAttr>()) };
    assert!(fd >= 0, "map create: {}", std::io::Error::last_os_error());
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    let pin = PinAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: fd as u32,
        file_flags: 0,
    };
    // SAFETY: BPF_OBJ_PIN (6) with a valid attribute.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, 6, &pin, size_of::<PinAttr>()) };
    assert_eq!(rc, 0, "pin: {}", std::io::Error::last_os_error());
    // SAFETY: our own fd.
    unsafe { libc::close(fd as i32) };
}

/// A loopback TCP port nothing listens on, for a server a test starts later (or never:
/// a collector that is down). Chosen below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`), so that no outgoing connection of a test running
/// alongside can take it as its source port between this call and the bind, as a port
/// from `bind(:0)` can; distinct across the calls of one process.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768)
        .clamp(2048, 65535);
    let span = (low - 1024).min(12_000);
    let start = std::process::id() % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = low - 1 - (start + n) % span;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port below the ephemeral range ({low})")
}

/// A small tmpfs for full-disk tests (mounting needs root), mounted mode 0700 and
/// unmounted (lazily: a crashed writer's descriptors may still be open) when dropped.
pub struct Tmpfs {
    path: PathBuf,
    /// Whether `path` was made by [`Tmpfs::mount`] and is removed after the unmount.
    own: bool,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `"256k"`, `"2m"`) at `at`, created if missing.
    pub fn mount_at(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        // mount(2) itself, not the mount command: a child process forked by one test
        // holds (until it execs) the descriptors other tests have open, such as a
        // filler file just deleted to free its disk, whose space would then come back
        // only after the exec.
        let options = std::ffi::CString::new(format!("size={size},mode=0700")).expect("no NUL");
        rustix::mount::mount(
            "tmpfs",
            at,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            options.as_c_str(),
        )
        .unwrap_or_else(|e| {
            panic!(
                "mount a tmpfs at {} (these tests run as root): {e}",
                at.display()
            )
        });
        Tmpfs {
            path: at.to_path_buf(),
            own: false,
        }
    }

    /// Mounts a tmpfs of `size` on a fresh directory of its own.
    pub fn mount(size: &str) -> Tmpfs {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let at = std::env::temp_dir().join(format!(
            "flow-testkit-tmpfs-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut tmpfs = Tmpfs::mount_at(&at, size);
        tmpfs.own = true;
        tmpfs
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.path, rustix::mount::UnmountFlags::DETACH);
        if self.own {
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

/// Appends to `path` until its file system is full, the last partial page included
/// (another writer filling the disk).
pub fn fill_disk(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("filler");
    for size in [1 << 16, 4096, 64, 1] {
        let block = vec![0u8; size];
        loop {
            match file.write(&block) {
                Ok(n) if n == size => {}
                Ok(_) => break,
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "ENOSPC expected: {e}");
                    break;
                }
            }
        }
    }
}
