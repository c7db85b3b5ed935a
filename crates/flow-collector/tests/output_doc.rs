//! docs/collector-output.md lists every field of the collector's JSON line, in order:
//! this test compares its table with a line the code writes, so they cannot drift.

use std::{sync::Arc, time::UNIX_EPOCH};

use flow_batch::wire::{BatchId, InstanceId};
use flow_collector::{
    attribution::{AttributedFlow, RemoteIdentitySource},
    output::write_json_line,
};

#[test]
fn the_documented_fields_are_the_written_fields_in_order() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/collector-output.md"
    ))
    .expect("docs/collector-output.md");
    let documented: Vec<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect();

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
    let text = String::from_utf8(line).expect("UTF-8");
    // Keys in the order written: serde_json's map would sort them, so read them off
    // the text (values here hold no quotes followed by a colon).
    let written: Vec<String> = text
        .split("\":")
        .filter_map(|part| part.rsplit('"').next())
        .map(str::to_owned)
        .take_while(|k| !k.contains('}'))
        .collect();
    let written: Vec<String> = written.into_iter().filter(|k| !k.is_empty()).collect();
    let parsed: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).expect("JSON");
    assert_eq!(parsed.len(), written.len(), "{text}");
    assert_eq!(documented, written, "docs/collector-output.md vs the code");
}
