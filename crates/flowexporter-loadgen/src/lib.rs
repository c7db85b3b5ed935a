//! Load generation for flowexporter's performance program.
//!
//! - [`churn`]: opens and closes TCP connections as fast as possible or at a target
//!   rate, over IPv4 or IPv6, on loopback or across a veth pair between two network
//!   namespaces, with a payload, and reports what it achieved.
//! - [`overhead`]: alternates rounds without (A) and with (B) the real exporter
//!   process and reports the cost side by side.

pub mod churn;
pub mod overhead;
