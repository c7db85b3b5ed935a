//! The flow record: one closed TCP connection as seen from this host, with the local
//! workload identity resolved at capture time.
//!
//! This crate holds only data types, so that everything downstream of the capture
//! (batching, the wire format, sinks, a collector, your own sink) depends on it
//! without compiling the kernel loader (`aya`) or embedding the kernel program.
//! `flow-capture` decodes kernel events into these records; [`json`] writes one as
//! a JSON line.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//!
//! use flow_record::{
//!     CloseReason, Direction, FlowRecord, RecordKind, IdentitySource, SocketStats, TcpState, WorkloadId,
//! };
//!
//! let record = FlowRecord {
//!     local: "10.0.0.5:41000".parse()?,
//!     remote: "10.0.0.9:443".parse()?,
//!     direction: Direction::Outbound,
//!     t_start: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
//!     t_end: UNIX_EPOCH + Duration::from_secs(1_700_000_002),
//!     close_state: TcpState(7),
//!     close_reason: CloseReason::Normal,
//!     stats: SocketStats::default(),
//!     local_workload_id: Some(WorkloadId::new("k8s:prod/api")?),
//!     identity_source: IdentitySource::Certificate,
//!     incomplete: false,
//!     record_kind: RecordKind::Final,
//!     flow_id: None,
//!     process: None,
//! };
//! assert_eq!(record.local_workload_id.as_ref().map(WorkloadId::as_str), Some("k8s:prod/api"));
//! // Workload IDs are validated: no control characters, 1 to 64 bytes.
//! assert!(WorkloadId::new("bad\nid").is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod identity;
pub mod json;
mod lifecycle;
mod record;
mod workload;

pub use flow_common::WORKLOAD_ID_MAX;
pub use identity::{IdentitySource, UnattributedReason};
pub use lifecycle::{COMM_MAX, FlowId, ProcessInfo, RecordKind};
pub use record::{CloseReason, Direction, FlowRecord, SocketStats, TcpState};
pub use workload::{InvalidWorkloadId, InvalidWorkloadValue, WorkloadId, WorkloadIdProblem};
