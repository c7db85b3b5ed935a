//! `OtlpSink`: records as OpenTelemetry log records over OTLP/HTTP (feature `otlp`).
