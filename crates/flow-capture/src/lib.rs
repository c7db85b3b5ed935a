//! The kernel capture core of flowexporter.
//!
//! An eBPF program on the BTF tracepoint `inet_sock_set_state` sees every TCP socket of
//! the host change state. It remembers when and in which direction each socket opened
//! (in a preallocated table keyed by the socket) and, when the socket closes, writes
//! one record to a BPF ring buffer: addresses, ports, start and end time, direction, the
//! state it closed from, why, and the `struct tcp_sock` statistics.
//!
//! ```no_run
//! use flow_capture::FlowCaptureBuilder;
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), flow_capture::CaptureError> {
//! let mut capture = FlowCaptureBuilder::new().load()?;
//! let mut reader = capture.take_reader()?;
//! loop {
//!     reader.wait(Duration::from_millis(100))?;
//!     reader.read_available(|record| println!("{record:?}"));
//! }
//! # }
//! ```
//!
//! Whether this host can load the tracer, and what to do if not, without loading it:
//! [`preflight::diagnose`] runs the same probes as [`FlowCaptureBuilder::load`] (kernel
//! version, privileges, kernel BTF, tracepoint, ring buffer) and reports every one.
//!
//! ```no_run
//! use flow_capture::preflight::{self, Status};
//!
//! for d in preflight::diagnose() {
//!     if d.status == Status::Fail {
//!         eprintln!("{}: {}", d.name, d.detail);
//!     }
//! }
//! ```
//!
//! The library changes nothing process-wide: it installs no logger, touches no rlimit and
//! no signal handler (with glibc, loading returns the freed heap of parsing the kernel's
//! BTF to the system with `malloc_trim`, a setting of nothing). Detaching happens when the [`FlowCapture`] is dropped; a
//! [`FlowReader`] outlives it, so a caller can detach first and then drain every record
//! already captured.

pub mod boot_id;
mod btf_offsets;
mod clock;
mod counters;
mod decode;
mod error;
pub mod identity_maps;
mod loader;
mod object;
mod open_sockets;
pub mod preflight;
mod prog_info;
mod reader;
mod windows;

#[cfg(feature = "tokio")]
mod async_reader;

#[cfg(feature = "tokio")]
pub use async_reader::AsyncFlowReader;
pub use clock::BootClock;
pub use counters::{CaptureCounters, ReaderCounters};
pub use decode::decode_record;
pub use error::CaptureError;
/// The record types live in `flow-record` (no aya there); re-exported here so that a
/// capture user needs one import.
pub use flow_record::{
    CloseReason, Direction, FlowId, FlowRecord, IdentitySource, InvalidWorkloadId,
    InvalidWorkloadValue, ProcessInfo, RecordKind, SocketStats, TcpState, UnattributedReason,
    WorkloadId, WorkloadIdProblem,
};
pub use loader::{
    DEFAULT_POLL_INTERVAL, DEFAULT_RING_SIZE, DEFAULT_SOCKET_TABLE_SIZE, DEFAULT_WAKEUP_BYTES,
    FlowCapture, FlowCaptureBuilder, ProgramStats,
};
pub use object::{KERNEL_OBJECT, kernel_object_id};
pub use open_sockets::{OpenSocketScanner, Snapshot};
pub use preflight::{KernelVersion, MIN_KERNEL};
pub use reader::FlowReader;
pub use windows::{KernelWindowCounts, window_index};
