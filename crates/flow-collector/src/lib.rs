//! The collector side of flowexporter (being moved here from `flow-sink`).
