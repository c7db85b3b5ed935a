//! The OTLP messages the sink sends and reads, as prost derive structs mirroring the
//! official `.proto` files of opentelemetry-proto (`opentelemetry/proto/...`): the
//! same field numbers and wire types, for the fields the sink uses. A receiver
//! decodes them with the official definitions (the integration tests do, with
//! Python's `opentelemetry-proto`); fields left out here are simply never set, and
//! the response's unknown fields are skipped on decoding, as protobuf allows.
//!
//! The sink reads its answers (`ExportLogsServiceResponse`) with them; its requests
//! are written by hand (`encode.rs`), and the request messages here are what the
//! tests and the bench build them from with prost, as the reference those bytes
//! must equal ([`RequestEncoder::encode_reference`](super::RequestEncoder::encode_reference)).

/// `collector/logs/v1/logs_service.proto`: `ExportLogsServiceRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportLogsServiceRequest {
    /// The logs, by resource.
    #[prost(message, repeated, tag = "1")]
    pub resource_logs: Vec<ResourceLogs>,
}

/// `collector/logs/v1/logs_service.proto`: `ExportLogsServiceResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportLogsServiceResponse {
    /// Set when the receiver took only part of the request.
    #[prost(message, optional, tag = "1")]
    pub partial_success: Option<ExportLogsPartialSuccess>,
}

/// `collector/logs/v1/logs_service.proto`: `ExportLogsPartialSuccess`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportLogsPartialSuccess {
    /// Log records the receiver rejected.
    #[prost(int64, tag = "1")]
    pub rejected_log_records: i64,
    /// Why, in the receiver's words.
    #[prost(string, tag = "2")]
    pub error_message: String,
}

/// `logs/v1/logs.proto`: `ResourceLogs`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceLogs {
    /// The entity that produced the logs.
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    /// The logs, by instrumentation scope.
    #[prost(message, repeated, tag = "2")]
    pub scope_logs: Vec<ScopeLogs>,
    /// The schema of the resource's attributes.
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

/// `logs/v1/logs.proto`: `ScopeLogs`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ScopeLogs {
    /// What produced the records.
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    /// The records.
    #[prost(message, repeated, tag = "2")]
    pub log_records: Vec<LogRecord>,
    /// The schema of the records' attributes.
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

/// `logs/v1/logs.proto`: `LogRecord`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LogRecord {
    /// When the event happened, ns since the Unix epoch.
    #[prost(fixed64, tag = "1")]
    pub time_unix_nano: u64,
    /// When it was observed by the pipeline, ns since the Unix epoch.
    #[prost(fixed64, tag = "11")]
    pub observed_time_unix_nano: u64,
    /// `SeverityNumber` (9 is `SEVERITY_NUMBER_INFO`).
    #[prost(int32, tag = "2")]
    pub severity_number: i32,
    /// The severity as text.
    #[prost(string, tag = "3")]
    pub severity_text: String,
    /// The record's body.
    #[prost(message, optional, tag = "5")]
    pub body: Option<AnyValue>,
    /// Its attributes.
    #[prost(message, repeated, tag = "6")]
    pub attributes: Vec<KeyValue>,
    /// Attributes dropped.
    #[prost(uint32, tag = "7")]
    pub dropped_attributes_count: u32,
    /// Trace flags.
    #[prost(fixed32, tag = "8")]
    pub flags: u32,
    /// Trace ID (none here).
    #[prost(bytes = "vec", tag = "9")]
    pub trace_id: Vec<u8>,
    /// Span ID (none here).
    #[prost(bytes = "vec", tag = "10")]
    pub span_id: Vec<u8>,
    /// The event's name.
    #[prost(string, tag = "12")]
    pub event_name: String,
}

/// `resource/v1/resource.proto`: `Resource`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    /// Its attributes.
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
    /// Attributes dropped.
    #[prost(uint32, tag = "2")]
    pub dropped_attributes_count: u32,
}

/// `common/v1/common.proto`: `InstrumentationScope`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InstrumentationScope {
    /// Its name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Its version.
    #[prost(string, tag = "2")]
    pub version: String,
    /// Its attributes.
    #[prost(message, repeated, tag = "3")]
    pub attributes: Vec<KeyValue>,
    /// Attributes dropped.
    #[prost(uint32, tag = "4")]
    pub dropped_attributes_count: u32,
}

/// `common/v1/common.proto`: `KeyValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    /// The key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// The value.
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

/// `common/v1/common.proto`: `AnyValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AnyValue {
    /// The value (a oneof).
    #[prost(oneof = "Value", tags = "1, 2, 3, 4, 7")]
    pub value: Option<Value>,
}

/// The `value` oneof of `AnyValue` (without its array and key-value list forms, which
/// the sink never sends).
// The variants are named after the .proto's oneof fields (`string_value`, ...).
#[allow(clippy::enum_variant_names)]
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Value {
    /// `string_value`.
    #[prost(string, tag = "1")]
    StringValue(String),
    /// `bool_value`.
    #[prost(bool, tag = "2")]
    BoolValue(bool),
    /// `int_value`.
    #[prost(int64, tag = "3")]
    IntValue(i64),
    /// `double_value`.
    #[prost(double, tag = "4")]
    DoubleValue(f64),
    /// `bytes_value`.
    #[prost(bytes = "vec", tag = "7")]
    BytesValue(Vec<u8>),
}
