//! The record pipeline: a sans-IO [`core`] (records in with the time, chunks out,
//! timers polled) and the async [`driver`](self) that runs it on tokio.

pub mod backlog;
mod completeness;
pub mod core;
pub(crate) mod driver;
mod interim;
