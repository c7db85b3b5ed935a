//! The OTLP logs sink against an independent receiver (placeholder).
