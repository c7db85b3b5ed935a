//! Workload identity for flow records: identity certificate, IP map and connect map. Not implemented yet (see the issue tracker); this crate has no public API so far.
