//! Sans-IO batching of flow records into wall-clock windows, and the wire format of
//! the chunks an exporter sends to its collector.
//!
//! [`MinuteBatcher`] groups [`FlowRecord`](flow_record::FlowRecord)s by the window
//! that contains their close time and emits numbered [`Chunk`]s; it does no I/O and
//! reads no clock, so the caller passes the time and tests simulate it.
//! [`wire::ChunkEncoder`] turns a chunk into a checksummed, compressed frame and
//! [`wire::ChunkDecoder`] verifies and decodes one (`docs/wire-format.md` has the
//! byte layout).
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use flow_batch::{BatchConfig, MinuteBatcher, wire::{ChunkDecoder, ChunkEncoder, DecodeLimits, InstanceId}};
//! # fn record(t_end: std::time::SystemTime) -> flow_record::FlowRecord {
//! #     use flow_record::*;
//! #     FlowRecord {
//! #         local: "10.0.0.1:443".parse().expect("addr"), remote: "10.0.0.2:50000".parse().expect("addr"),
//! #         direction: Direction::Inbound, t_start: None, t_end, close_state: TcpState(7),
//! #         close_reason: CloseReason::Normal, stats: SocketStats::default(), local_workload_id: None,
//! #         identity_source: IdentitySource::None(UnattributedReason::NoMatch), incomplete: false,
//! #         record_kind: RecordKind::Final, flow_id: None, process: None,
//! #     }
//! # }
//!
//! # fn main() -> Result<(), flow_batch::BatchError> {
//! let mut batcher = MinuteBatcher::new(BatchConfig::default().with_window(Duration::from_secs(5)))?;
//! let mut encoder = ChunkEncoder::new("host-a", InstanceId::new(7))?;
//! let now = UNIX_EPOCH + Duration::from_secs(1_700_000_001);
//! batcher.push(record(now), now)?;
//!
//! // The window [1_700_000_000 s, 1_700_000_005 s) closes 2 s (the lateness) after its end.
//! let deadline = batcher.poll_timeout().expect("a window is open");
//! batcher.handle_timeout(deadline);
//! let chunk = batcher.poll_chunk().expect("the window closed");
//! let frame = encoder.encode_to_vec(&chunk)?;
//!
//! let decoded = ChunkDecoder::new(DecodeLimits::default())?.decode(&frame)?;
//! assert_eq!(decoded.records, chunk.records);
//! assert_eq!(decoded.header.batch_id().to_string(), "host-a/00000000000000000000000000000007/0");
//! # Ok(())
//! # }
//! ```

mod batcher;
mod chunk;
mod completeness;
pub mod config;
mod counters;
mod error;
mod window;
pub mod wire;

pub use batcher::MinuteBatcher;
pub use chunk::{Chunk, NO_TAG};
pub use completeness::Completeness;
pub use config::BatchConfig;
pub use counters::BatchCounters;
pub use error::BatchError;
pub use window::Window;
