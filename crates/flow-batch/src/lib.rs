//! Sans-IO minute batching of flow records. Not implemented yet (see the issue tracker); this crate has no public API so far.
