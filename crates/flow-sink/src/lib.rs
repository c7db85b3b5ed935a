//! Where flowexporter's records go.
//!
//! So far this crate holds the JSON-lines encoding that `flowexporter tail --json` and
//! the stdout and file sinks share, so that every JSON consumer sees one field set.

pub mod json;
