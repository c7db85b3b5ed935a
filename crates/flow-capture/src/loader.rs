//! Loading and attaching the kernel program.

use std::{
    os::fd::AsFd,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, Iter},
};
use flow_common::{KernelCounter, ProgramConfig, features};

use crate::{
    btf_offsets::{self, TRACEPOINT, VMLINUX_BTF},
    counters::CaptureCounters,
    error::CaptureError,
    identity_maps,
    object::KERNEL_OBJECT,
    open_sockets::OpenSocketScanner,
    preflight,
    reader::FlowReader,
    windows::{KernelWindowCounts, WindowClock, WindowTable},
};

/// The handler, attached twice so that an event the kernel skips for one (recursion
/// on the same CPU) is handled by the other.
const PROGRAMS: [&str; 2] = ["inet_sock_set_state", "inet_sock_set_state_backup"];
const EVENTS_MAP: &str = "FLOW_EVENTS";
const COUNTERS_MAP: &str = "FLOW_COUNTERS";
const SOCKETS_MAP: &str = "FLOW_SOCKETS";
const CONFIG_GLOBAL: &str = "FLOW_CONFIG";
const CLOCK_MAP: &str = "FLOW_CLOCK";
const WINDOWS_MAP: &str = "FLOW_WINDOWS";
/// The open-socket iterator (`iter/task_file`), for interim records.
const ITER_PROGRAM: &str = "flow_open_sockets";
/// The first kernel whose tracing programs may call `bpf_get_socket_cookie`.
const SOCKET_COOKIE_KERNEL: preflight::KernelVersion = preflight::KernelVersion {
    major: 5,
    minor: 12,
};

/// Default ring buffer size: 4 MiB, about 22,000 records, a second of the highest churn
/// measured on a 2-core host (the reader drains every 50 ms). It is mapped into the
/// reader twice (for wrap-around), so it counts twice in the exporter's RSS.
pub const DEFAULT_RING_SIZE: u32 = 4 << 20;
/// Default wakeup threshold: 512 KiB pending.
pub const DEFAULT_WAKEUP_BYTES: u64 = 512 << 10;
/// Default size of the socket table: how many sockets can be open at once with their
/// open time, direction, identity and process remembered (104 bytes of value each,
/// preallocated: about 20 MiB with the table's own overhead).
pub const DEFAULT_SOCKET_TABLE_SIZE: u32 = 131_072;
/// Default timer on which the reader drains below the wakeup threshold.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Configures and loads the capture core.
#[derive(Clone, Debug)]
pub struct FlowCaptureBuilder {
    ring_size: u32,
    socket_table_size: u32,
    wakeup_bytes: Option<u64>,
    poll_interval: Duration,
    btf_path: PathBuf,
    identity_pin_dir: Option<PathBuf>,
    window: Option<Duration>,
    object: ObjectBytes,
}

/// A kernel object's bytes; shown by size only.
#[derive(Clone, Copy)]
struct ObjectBytes(&'static [u8]);

impl std::fmt::Debug for ObjectBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<kernel object, {} bytes>", self.0.len())
    }
}

impl Default for FlowCaptureBuilder {
    fn default() -> Self {
        FlowCaptureBuilder::new()
    }
}

impl FlowCaptureBuilder {
    /// The defaults: 4 MiB ring, wakeup at 512 KiB pending, 50 ms poll timer, a
    /// 131,072-socket table, kernel BTF from `/sys/kernel/btf/vmlinux`.
    pub fn new() -> FlowCaptureBuilder {
        FlowCaptureBuilder {
            ring_size: DEFAULT_RING_SIZE,
            socket_table_size: DEFAULT_SOCKET_TABLE_SIZE,
            wakeup_bytes: None,
            poll_interval: DEFAULT_POLL_INTERVAL,
            btf_path: PathBuf::from(VMLINUX_BTF),
            identity_pin_dir: None,
            window: None,
            object: ObjectBytes(KERNEL_OBJECT),
        }
    }

    /// Count closes per wall-clock window of this length (aligned to the Unix epoch,
    /// as the batcher's): [`FlowCapture::window_counts`] and
    /// [`FlowReader::records_in_window`] then say, for each window, how many closes
    /// the kernel saw, how many records it wrote, and how many it lost.
    pub fn window_counts(mut self, window: Duration) -> Self {
        self.window = Some(window);
        self
    }

    /// Size of the ring buffer in bytes: a power of two, a multiple of the page size.
    pub fn ring_size(mut self, bytes: u32) -> Self {
        self.ring_size = bytes;
        self
    }

    /// How many open sockets the kernel program can track at once (default 131,072).
    /// Past it the least recently opened entries are recycled, and those sockets'
    /// records come with an unknown start.
    pub fn socket_table_size(mut self, entries: u32) -> Self {
        self.socket_table_size = entries;
        self
    }

    /// Wake the reader only once this many bytes wait in the ring (default: 512 KiB or
    /// a quarter of the ring, whichever is smaller). Below it the reader drains on its
    /// poll timer, which spares the kernel a wakeup per record. 0 wakes on every record.
    pub fn wakeup_threshold(mut self, bytes: u64) -> Self {
        self.wakeup_bytes = Some(bytes);
        self
    }

    /// How often the reader drains when it has not been woken (default 50 ms). This
    /// bounds how long a record waits in the ring.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// Pin the identity maps (IP map and connect map) under this directory on the BPF
    /// filesystem, sharing them with the agents that write them (see
    /// [`crate::identity_maps`]). Maps already pinned there are reused if their
    /// definition matches and refused otherwise. Without this the maps are private to
    /// this capture and stay empty.
    pub fn identity_pin_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.identity_pin_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Loads `object` instead of the bundled kernel object ([`KERNEL_OBJECT`]): another
    /// build of `ebpf/flow-ebpf`, with the same programs, maps and record layout. Meant
    /// for comparing builds side by side (the capture benchmark's baseline). Identity
    /// maps already pinned are reused as they are; a writer that creates them first
    /// uses `flow_identity::pins`' definition, the bundled object's.
    pub fn kernel_object(mut self, object: &'static [u8]) -> Self {
        self.object = ObjectBytes(object);
        self
    }

    /// Where to read the kernel's BTF (default `/sys/kernel/btf/vmlinux`).
    pub fn btf_path(mut self, path: impl AsRef<Path>) -> Self {
        self.btf_path = path.as_ref().to_path_buf();
        self
    }

    fn validate_ring_size(&self) -> Result<(), CaptureError> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
        let size = u64::from(self.ring_size);
        if !size.is_power_of_two() || !size.is_multiple_of(page) || size > 1 << 30 {
            return Err(CaptureError::InvalidRingSize { size, page });
        }
        Ok(())
    }

    /// Checks the host, loads the program and attaches it. Records flow from here on.
    pub fn load(self) -> Result<FlowCapture, CaptureError> {
        self.validate_ring_size()?;
        let kernel = preflight::check_kernel()?;
        preflight::check_privileges()?;
        // Parsed kernel BTF is large: keep one parse alive at a time, so that the peak
        // memory of loading is one parse, not two.
        let offsets = {
            let btf = btf_offsets::load_btf(&self.btf_path)?;
            btf_offsets::check_tracepoint(&btf)?;
            btf_offsets::resolve(&btf)?
        };
        let wakeup_bytes = self
            .wakeup_bytes
            .unwrap_or_else(|| DEFAULT_WAKEUP_BYTES.min(u64::from(self.ring_size) / 4));
        // Tracing programs may call `bpf_get_socket_cookie` from Linux 5.12 on; before,
        // the frozen bit off makes the verifier drop the call (records carry no flow
        // ID, and interim records, which need the cookie, are off).
        let cookie = kernel >= SOCKET_COOKIE_KERNEL;
        let config = ProgramConfig {
            offsets,
            features: if cookie { features::SOCKET_COOKIE } else { 0 },
            _pad: 0,
            wakeup_bytes,
        };

        // `EbpfLoader::new` parses the kernel's BTF from /sys itself; that copy is
        // dropped at once (`btf_path` may name another file, and two parses alive
        // together were the exporter's peak memory: 43 instead of 27 MiB).
        let mut loader = EbpfLoader::new();
        loader.btf(None);
        let aya_btf =
            aya::Btf::parse_file(&self.btf_path, aya::Endianness::default()).map_err(|e| {
                CaptureError::NoBtf {
                    path: self.btf_path.clone(),
                    source: std::io::Error::other(e),
                }
            })?;
        let pins = self.identity_pin_dir.as_deref().map(|dir| {
            [
                identity_maps::pin_path(dir, &identity_maps::IP_MAP),
                identity_maps::pin_path(dir, &identity_maps::CONNECT_MAP),
            ]
        });
        if let (Some(dir), Some([ip, connect])) = (&self.identity_pin_dir, &pins) {
            identity_maps::prepare_pin_dir(dir)?;
            loader
                .map_pin_path(identity_maps::IP_MAP.name, ip.as_path())
                .map_pin_path(identity_maps::CONNECT_MAP.name, connect.as_path());
        }
        loader
            .btf(Some(&aya_btf))
            .override_global(CONFIG_GLOBAL, &config, true)
            .map_max_entries(EVENTS_MAP, self.ring_size)
            .map_max_entries(SOCKETS_MAP, self.socket_table_size.max(1));
        let mut ebpf = match &self.identity_pin_dir {
            Some(dir) => identity_maps::load_sharing_pins(&mut loader, dir, self.object.0)?,
            None => loader.load(self.object.0).map_err(CaptureError::Load)?,
        };

        // The window clock is in the kernel before the first close is seen: every
        // close the reader counts, the kernel counted too.
        let (window_clock, windows) = match self.window {
            Some(window) => {
                let clock = Array::try_from(take_map(&mut ebpf, CLOCK_MAP)?).map_err(|source| {
                    CaptureError::Map {
                        name: CLOCK_MAP,
                        source,
                    }
                })?;
                let table =
                    PerCpuArray::try_from(take_map(&mut ebpf, WINDOWS_MAP)?).map_err(|source| {
                        CaptureError::Map {
                            name: WINDOWS_MAP,
                            source,
                        }
                    })?;
                (
                    Some(WindowClock::start(clock, window)?),
                    Some(WindowTable { map: table }),
                )
            }
            None => (None, None),
        };
        for name in PROGRAMS {
            attach(&mut ebpf, name, &aya_btf)?;
        }
        // Interim records are an addition: a kernel that refuses the iterator still
        // captures every close. Without socket cookies they could not be matched to
        // their connection's final record.
        let scanner = match cookie {
            true => open_socket_scanner(&mut ebpf, &aya_btf),
            false => Err(CaptureError::InterimUnavailable {
                reason: format!(
                    "socket cookies need Linux {SOCKET_COOKIE_KERNEL} or newer (this is {kernel})"
                ),
            }),
        }
        .map_err(|e| {
            let mut reason = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(inner) = source {
                reason.push_str(": ");
                reason.push_str(&inner.to_string());
                source = inner.source();
            }
            tracing::warn!("no interim records: {reason}");
            reason
        });
        // The parsed BTF (about 19 MB) is freed and handed back to the system before
        // the ring buffer is mapped below (its pages are resident from the start,
        // twice its size), so that the two never add up in the process's peak.
        drop(loader);
        drop(aya_btf);
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only returns free heap memory to the system.
        unsafe {
            libc::malloc_trim(0);
        }
        // Dropping `ebpf` on any error below detaches the program again.
        let counters =
            PerCpuArray::try_from(take_map(&mut ebpf, COUNTERS_MAP)?).map_err(|source| {
                CaptureError::Map {
                    name: COUNTERS_MAP,
                    source,
                }
            })?;
        let ring = RingBuf::try_from(take_map(&mut ebpf, EVENTS_MAP)?).map_err(|source| {
            CaptureError::Map {
                name: EVENTS_MAP,
                source,
            }
        })?;
        tracing::debug!(
            ring_size = self.ring_size,
            wakeup_bytes,
            "flow capture attached"
        );
        Ok(FlowCapture {
            ebpf,
            counters,
            windows,
            window: self.window,
            scanner,
            reader: Some(FlowReader::new(ring, self.poll_interval, window_clock)),
        })
    }
}

fn attach(ebpf: &mut Ebpf, name: &'static str, btf: &aya::Btf) -> Result<(), CaptureError> {
    let program = tracepoint(ebpf, name)?;
    program
        .load(TRACEPOINT, btf)
        .map_err(|source| CaptureError::Program {
            program: name,
            source,
        })?;
    program.attach().map_err(|source| CaptureError::Program {
        program: name,
        source,
    })?;
    Ok(())
}

/// The tracepoint program `name` of the object.
fn tracepoint<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut BtfTracePoint, CaptureError> {
    ebpf.program_mut(name)
        .ok_or(CaptureError::ObjectMismatch {
            what: "program",
            name,
        })?
        .try_into()
        .map_err(|source| CaptureError::Program {
            program: name,
            source,
        })
}

/// The run-time statistics of the program `name` of the object.
fn stats_of(ebpf: &Ebpf, name: &'static str) -> Result<ProgramStats, CaptureError> {
    let program = ebpf.program(name).ok_or(CaptureError::ObjectMismatch {
        what: "program",
        name,
    })?;
    let fd = program.fd().map_err(|source| CaptureError::Program {
        program: name,
        source,
    })?;
    crate::prog_info::program_stats(fd.as_fd())
}

/// Loads the open-socket iterator and links it.
fn open_socket_scanner(ebpf: &mut Ebpf, btf: &aya::Btf) -> Result<OpenSocketScanner, CaptureError> {
    let program: &mut Iter = ebpf
        .program_mut(ITER_PROGRAM)
        .ok_or(CaptureError::ObjectMismatch {
            what: "program",
            name: ITER_PROGRAM,
        })?
        .try_into()
        .map_err(|source| CaptureError::Program {
            program: ITER_PROGRAM,
            source,
        })?;
    program
        .load("task_file", btf)
        .map_err(|source| CaptureError::Program {
            program: ITER_PROGRAM,
            source,
        })?;
    let fd = program.fd().map_err(|source| CaptureError::Program {
        program: ITER_PROGRAM,
        source,
    })?;
    OpenSocketScanner::new(fd.as_fd())
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, CaptureError> {
    ebpf.take_map(name)
        .ok_or(CaptureError::ObjectMismatch { what: "map", name })
}

/// The loaded and attached capture core. Dropping it detaches the program; a reader
/// taken from it keeps working until it has drained what was captured.
pub struct FlowCapture {
    ebpf: Ebpf,
    counters: PerCpuArray<MapData, u64>,
    windows: Option<WindowTable>,
    window: Option<Duration>,
    /// The open-socket scanner, or why it could not be loaded.
    scanner: Result<OpenSocketScanner, String>,
    reader: Option<FlowReader>,
}

/// Run-time statistics of the kernel program's two attachments, summed. Run count and
/// time are kept only while BPF statistics are enabled (e.g. with
/// `aya::sys::enable_stats`); recursion misses always.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramStats {
    /// Invocations since load (both attachments: two per socket event).
    pub run_count: u64,
    /// Total run time since load (both attachments).
    pub run_time: Duration,
    /// Invocations the kernel skipped because that attachment was already running on
    /// the CPU (a socket event raised by an interrupt during the program). The other
    /// attachment handles such an event; see
    /// [`CaptureCounters::recovered_by_backup`](crate::CaptureCounters).
    pub recursion_misses: u64,
}

impl FlowCapture {
    /// Takes the reader of captured records (once).
    pub fn take_reader(&mut self) -> Result<FlowReader, CaptureError> {
        self.reader.take().ok_or(CaptureError::ReaderTaken)
    }

    /// A scanner of the open TCP sockets, for interim records; an error saying why
    /// when the kernel refused the iterator program (closes are captured regardless).
    pub fn open_socket_scanner(&self) -> Result<OpenSocketScanner, CaptureError> {
        self.scanner
            .clone()
            .map_err(|reason| CaptureError::InterimUnavailable { reason })
    }

    /// The kernel's close counts for window `index` ([`crate::window_index`]);
    /// `None` unless the capture was built with
    /// [`window_counts`](FlowCaptureBuilder::window_counts).
    pub fn window_counts(&self, index: u64) -> Option<Result<KernelWindowCounts, CaptureError>> {
        self.windows.as_ref().map(|w| w.counts(index))
    }

    /// The window length closes are counted by, when they are
    /// ([`window_counts`](FlowCaptureBuilder::window_counts)).
    pub fn window_length(&self) -> Option<Duration> {
        self.window
    }

    /// Detaches the tracepoint programs (no close is captured from here on) but
    /// keeps the maps: the reader drains what was captured, and the window counts
    /// stay readable, until the capture is dropped.
    pub fn detach(&mut self) -> Result<(), CaptureError> {
        for name in PROGRAMS {
            tracepoint(&mut self.ebpf, name)?
                .unload()
                .map_err(|source| CaptureError::Program {
                    program: name,
                    source,
                })?;
        }
        Ok(())
    }

    /// Recursion misses of the backup attachment: state changes the kernel skipped
    /// on both attachments (the primary's misses are recovered by the backup), an
    /// upper bound of the closes missed that way.
    pub fn unrecovered_misses(&self) -> Result<u64, CaptureError> {
        Ok(stats_of(&self.ebpf, PROGRAMS[1])?.recursion_misses)
    }

    /// The kernel program's counters, summed over CPUs.
    pub fn counters(&self) -> Result<CaptureCounters, CaptureError> {
        let mut out = CaptureCounters::default();
        for counter in KernelCounter::ALL {
            let values =
                self.counters
                    .get(&(counter as u32), 0)
                    .map_err(|source| CaptureError::Map {
                        name: COUNTERS_MAP,
                        source,
                    })?;
            out.set(counter, values.iter().sum());
        }
        Ok(out)
    }

    /// The kernel program's invocation count, run time and recursion misses.
    pub fn program_stats(&self) -> Result<ProgramStats, CaptureError> {
        let mut total = ProgramStats::default();
        for name in PROGRAMS {
            let one = stats_of(&self.ebpf, name)?;
            total.run_count += one.run_count;
            total.run_time += one.run_time;
            total.recursion_misses += one.recursion_misses;
        }
        Ok(total)
    }
}
