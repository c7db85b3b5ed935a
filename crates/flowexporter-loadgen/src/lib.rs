//! Load generation for flowexporter's performance program.
//!
//! - [`churn`]: opens and closes TCP connections as fast as possible or at a target
//!   rate, over IPv4 or IPv6, on loopback or across a veth pair between two network
//!   namespaces, with a payload, and reports what it achieved.
//! - [`overhead`]: alternates rounds without (A) and with (B) the real exporter
//!   process and reports the cost side by side.
//! - [`receivers`]: minimal OTLP/HTTP and IPFIX (UDP, TCP) receivers on loopback for
//!   the overhead runs' standard exports.
//! - [`fleet`]: simulates a fleet of hosts and their exporters against the
//!   collector's remote attribution, in simulated time, and checks every flow
//!   against the truth.
//!
//! ```no_run
//! use flowexporter_loadgen::churn::{self, ChurnConfig, Family};
//!
//! // 10,000 loopback connections at 5,000 per second.
//! let report = churn::run(&ChurnConfig {
//!     connections: 10_000,
//!     rate: Some(5_000.0),
//!     family: Family::V4,
//!     payload: 0,
//!     across_netns: false,
//! })?;
//! println!("{:.0} connections/s, {} errors", report.rate(), report.errors);
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod churn;
pub mod fleet;
pub mod overhead;
pub mod receivers;
