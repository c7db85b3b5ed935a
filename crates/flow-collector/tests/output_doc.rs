//! docs/collector-output.md lists every field of the collector's JSON lines, in order:
//! this test compares its two tables (flows, completeness records) with lines the code
//! writes, so they cannot drift.

use std::{sync::Arc, time::UNIX_EPOCH};

use flow_batch::{
    Completeness, Window,
    wire::{BatchId, InstanceId},
};
use flow_collector::{
    attribution::{AttributedFlow, RemoteIdentitySource},
    completeness::{CompletenessConfig, Slot, WindowChunk, WindowTracker},
    output::{write_completeness_line, write_json_line},
};

/// The field names of the table rows of `section` (a part of the document).
fn documented(section: &str) -> Vec<String> {
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect()
}

/// The keys of a JSON line, in the order written (serde_json's map would sort them;
/// values here hold no quote followed by a colon).
fn written(line: Vec<u8>) -> Vec<String> {
    let text = String::from_utf8(line).expect("UTF-8");
    let keys: Vec<String> = text
        .split("\":")
        .filter_map(|part| part.rsplit('"').next())
        .map(str::to_owned)
        .take_while(|k| !k.contains('}'))
        .filter(|k| !k.is_empty())
        .collect();
    let parsed: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).expect("JSON");
    assert_eq!(parsed.len(), keys.len(), "{text}");
    keys
}

fn doc() -> (String, String) {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/collector-output.md"
    ))
    .expect("docs/collector-output.md");
    let (flows, rest) = doc
        .split_once("## Completeness records")
        .expect("a completeness section");
    let completeness = rest.split("\n## ").next().unwrap_or_default();
    (flows.to_owned(), completeness.to_owned())
}

/// A flow line as the collector writes it.
fn flow_line() -> Vec<u8> {
    let flow = AttributedFlow {
        record: flow_testkit::record().t_end(UNIX_EPOCH).build(),
        batch: Arc::new(BatchId {
            host: "h".into(),
            instance: InstanceId::new(1),
            sequence: 2,
        }),
        record_index: 3,
        remote_workload_id: None,
        remote_identity_source: RemoteIdentitySource::None,
        remote_unattributed_reason: None,
    };
    let mut line = Vec::new();
    write_json_line(&mut line, &flow).expect("line");
    line
}

#[test]
fn the_documented_fields_are_the_written_fields_in_order() {
    assert_eq!(
        documented(&doc().0),
        written(flow_line()),
        "docs/collector-output.md vs the code"
    );
}

/// docs/schema.md, the one schema every export follows, names every field the
/// collector writes (the exporter's record, then the collector's), in order.
#[test]
fn the_schema_lists_every_written_field_in_order() {
    let schema =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/schema.md"))
            .expect("docs/schema.md");
    assert_eq!(
        documented(&schema),
        written(flow_line()),
        "docs/schema.md vs the code"
    );
}

#[test]
fn the_documented_completeness_fields_are_the_written_fields_in_order() {
    let mut tracker = WindowTracker::new(CompletenessConfig::default());
    let window = Window::from_millis(60_000, 120_000).expect("window");
    let chunk = WindowChunk::new(
        Arc::new(BatchId {
            host: "h".into(),
            instance: InstanceId::new(1),
            sequence: 2,
        }),
        window,
        0,
        true,
        Some(Completeness::default()),
        &[],
    );
    tracker.observe(&chunk, Slot::Unwritten, UNIX_EPOCH);
    let report = tracker.pop_report().expect("a report");
    let mut line = Vec::new();
    write_completeness_line(&mut line, &report).expect("line");
    let keys = written(line);
    assert_eq!(keys.first().map(String::as_str), Some("record_type"));
    assert_eq!(
        documented(&doc().1),
        keys,
        "docs/collector-output.md vs the code"
    );
}
