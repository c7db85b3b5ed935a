//! The OTLP sink's CPU per record (placeholder; filled in below).
fn main() {}
