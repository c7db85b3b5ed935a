//! A fleet simulator for the collector's remote attribution.
//!
//! Hosts run workloads that start and stop; pod IPs are reused minutes (sometimes
//! seconds) after their release; some hosts share one IPv4 among containers told
//! apart by port (connect map); a few services run no exporter, some of them in the
//! collector's static table. Every connection writes the records its ends' exporters
//! would write, in each host's skewed clock (a long-lived one an interim record at
//! every window close it spans, then its final record); each host ships every
//! minute's records as real frames ([`ChunkEncoder`](flow_batch::wire::ChunkEncoder)),
//! the window's last with its completeness, which arrive late, twice, out of order or
//! never. The collector side decodes them, drops duplicate batch IDs, counts each
//! window's records with the real
//! [`WindowTracker`](flow_collector::completeness::WindowTracker), attributes with
//! the real [`Attributor`](flow_collector::attribution::Attributor) and writes JSON
//! lines; the simulator knows the truth and checks every flow: misattributed (must be
//! 0), unattributed and why, and the collector's throughput and memory; and every
//! window's completeness record: it adds up when every chunk of the window arrived,
//! and not when one was lost.
//!
//! With [`FleetConfig::nodes`] above one, the collector is several nodes, each
//! receiving the chunks [`config::Routing`] sends it (by host, or round robin) and
//! sharing its heartbeats with the others (taken out after each chunk, encoded and
//! decoded as the heartbeat topic carries them, applied
//! [`heartbeat_delay`](FleetConfig::heartbeat_delay) later); the report gives each
//! node's tallies and the heartbeats' volume. Routed by connection
//! ([`config::Routing::ByConnection`]), a chunk's node is only its intake: it writes
//! the chunk's records, by connection, to a simulated connection topic
//! ([`routing`]), whose partitions the nodes share out; both ends' records of a
//! connection meet on one node, as on a single node. The intake publishes the
//! chunk's heartbeats (its route-only attributor keeps the claims); the attributing
//! stages apply every node's, their own intake's included.
//!
//! Simulated time throughout, deterministic from the seed.
//!
//! ```no_run
//! use flowexporter_loadgen::fleet::{self, FleetConfig};
//!
//! let report = fleet::run(&FleetConfig {
//!     hosts: 20,
//!     workloads_per_host: 5,
//!     minutes: 10,
//!     drop_chunks: 0.02,
//!     ..FleetConfig::default()
//! })?;
//! print!("{report}");
//! assert_eq!(report.tally.misattributed, 0);
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! Modules: [`config`], [`world`] (hosts, workloads, IPs over time), [`traffic`]
//! (connections and records), [`faults`] (what happens to chunks), [`truth`] (the
//! true remote of each flow), [`collector`] (the timed collector side), [`check`]
//! (verdicts), [`routing`] (which node a chunk or record goes to), [`run`](mod@run)
//! (the loop) and [`report`].

pub mod check;
pub mod collector;
pub mod config;
pub mod faults;
pub mod report;
pub mod routing;
pub mod run;
pub mod traffic;
pub mod truth;
pub mod world;

pub use config::FleetConfig;
pub use report::FleetReport;
pub use run::run;
