//! The HTTP exchange around a frame (`docs/collector-protocol.md`): where an exporter
//! posts it, with which content type, and the header in which a collector says what it
//! did with it. Shared by the collector sink (the client) and the reference collector
//! (the server), so the two cannot drift apart.

/// The path chunks are posted to when the collector URL names none.
pub const CHUNKS_PATH: &str = "/v1/chunks";
/// The content type of a chunk frame (the body of a `POST` to [`CHUNKS_PATH`]).
pub const CHUNK_CONTENT_TYPE: &str = "application/vnd.flowexporter.chunk";
/// The response header in which a collector may say `accepted` or `duplicate`
/// (header names are case-insensitive: `Flowexporter-Result` in the docs).
pub const RESULT_HEADER: &str = "flowexporter-result";
