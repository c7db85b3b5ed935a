//! Types shared by the flowexporter kernel program (`ebpf/flow-ebpf`) and user space
//! (`flow-capture`).
//!
//! Everything here is `#[repr(C)]` with explicit padding so that the byte layout is the
//! same on both sides and no uninitialised padding bytes cross the ring buffer. The
//! kernel program depends on this crate without features; user space enables `user`,
//! which adds the `aya::Pod` impls needed to write globals and read maps.
//!
//! ```
//! use flow_common::{RawFlowEvent, WORKLOAD_ID_MAX, WorkloadValue};
//!
//! // An identity map's value: the workload ID, NUL-padded to 64 bytes.
//! let mut value = WorkloadValue::EMPTY;
//! value.id[..6].copy_from_slice(b"api-v2");
//! assert_eq!(value.id.len(), WORKLOAD_ID_MAX);
//! // The record the kernel program writes to the ring buffer, byte for byte.
//! assert_eq!(core::mem::size_of::<RawFlowEvent>(), 216);
//! ```
#![no_std]
#![deny(missing_docs)]

pub mod counters;
pub mod event;
pub mod identity;
pub mod offsets;
pub mod tcp;
pub mod windows;

pub use counters::KernelCounter;
pub use event::{Direction, RawFlowEvent, SOCK_DONE_BIT, SocketStart, flags, kind};
pub use identity::{ConnectKey, IpKey, WORKLOAD_ID_MAX, WorkloadValue};
pub use offsets::{KernelOffsets, ProgramConfig, features};
pub use windows::{ClockConfig, WINDOW_SLOTS, WindowCounts};
