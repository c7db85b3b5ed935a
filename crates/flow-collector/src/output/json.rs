//! The collector's JSON line: one attributed flow per line.
//!
//! Fields: every field of [`flow_record::json`] (the exporter's record, in its order),
//! then `host_id` (the exporter's host ID), `batch_id` (`host/instance/sequence`),
//! `record_index` (the flow's position in its chunk, from 0: with `batch_id`, the
//! flow's unique ID), `remote_workload_id` (null when unattributed),
//! `remote_identity_source` (`peer_record`, `heartbeat`, `static` or `none`) and
//! `remote_unattributed_reason` (null when attributed).

use std::{fmt::Display, io};

use flow_batch::wire::BatchId;
use flow_record::json::JsonFlow;
use serde::{Serialize, Serializer};

use crate::attribution::AttributedFlow;

/// The JSON view of an [`AttributedFlow`].
#[derive(Serialize)]
struct CollectorLine<'a> {
    #[serde(flatten)]
    flow: JsonFlow<'a>,
    host_id: &'a str,
    #[serde(serialize_with = "as_display")]
    batch_id: &'a BatchId,
    record_index: u32,
    remote_workload_id: Option<&'a str>,
    remote_identity_source: &'static str,
    remote_unattributed_reason: Option<&'static str>,
}

/// Serializes a value as its `Display` text (without an intermediate `String`).
fn as_display<S: Serializer>(value: &&BatchId, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value as &dyn Display)
}

/// Appends `flow` to `out` as one JSON object followed by `\n`.
pub fn write_json_line(out: &mut Vec<u8>, flow: &AttributedFlow) -> io::Result<()> {
    let line = CollectorLine {
        flow: JsonFlow::from(&flow.record),
        host_id: &flow.batch.host,
        batch_id: &flow.batch,
        record_index: flow.record_index,
        remote_workload_id: flow.remote_workload_id.as_ref().map(|w| w.as_str()),
        remote_identity_source: flow.remote_identity_source.as_str(),
        remote_unattributed_reason: flow.remote_unattributed_reason.map(|r| r.as_str()),
    };
    serde_json::to_writer(&mut *out, &line).map_err(io::Error::other)?;
    out.push(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use flow_batch::wire::InstanceId;
    use flow_record::{Direction, IdentitySource, SocketStats, WorkloadId};

    use super::*;
    use crate::attribution::{RemoteIdentitySource, RemoteUnattributedReason};

    fn flow(attributed: bool) -> AttributedFlow {
        let record = flow_testkit::record()
            .local("10.0.0.1:40000")
            .remote("[2001:db8::1]:443")
            .direction(Direction::Outbound)
            .t_start(Some(UNIX_EPOCH + Duration::new(1_700_000_000, 5)))
            .t_end(UNIX_EPOCH + Duration::new(1_700_000_001, 123_456_789))
            .stats(SocketStats {
                bytes_sent: 10,
                bytes_received: 20,
                segs_in: 3,
                segs_out: 4,
                retransmits: 1,
                bytes_retransmitted: 1448,
                srtt_us: 55,
                rttvar_us: 7,
            })
            .workload("k8s:prod/api", IdentitySource::IpMap)
            .incomplete(true)
            .build();
        let batch = Arc::new(BatchId {
            host: "node-\"7\"".to_string(),
            instance: InstanceId::new(0xabc),
            sequence: 42,
        });
        AttributedFlow {
            record,
            batch,
            record_index: 3,
            remote_workload_id: attributed
                .then(|| WorkloadId::new("k8s:prod/db").expect("workload")),
            remote_identity_source: if attributed {
                RemoteIdentitySource::Heartbeat
            } else {
                RemoteIdentitySource::None
            },
            remote_unattributed_reason: (!attributed)
                .then_some(RemoteUnattributedReason::ConflictingOwners),
        }
    }

    fn parse(flow: &AttributedFlow) -> serde_json::Value {
        let mut out = Vec::new();
        write_json_line(&mut out, flow).expect("write");
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1, "one line");
        serde_json::from_slice(&out).expect("json")
    }

    #[test]
    fn writes_every_field_of_an_attributed_flow() {
        let v = parse(&flow(true));
        assert_eq!(v["local_ip"], "10.0.0.1");
        assert_eq!(v["local_port"], 40000);
        assert_eq!(v["remote_ip"], "2001:db8::1");
        assert_eq!(v["remote_port"], 443);
        assert_eq!(v["direction"], "outbound");
        assert_eq!(v["t_start"], "2023-11-14T22:13:20.000000005Z");
        assert_eq!(v["t_end"], "2023-11-14T22:13:21.123456789Z");
        assert_eq!(v["bytes_sent"], 10);
        assert_eq!(v["bytes_received"], 20);
        assert_eq!(v["segs_in"], 3);
        assert_eq!(v["segs_out"], 4);
        assert_eq!(v["retransmits"], 1);
        assert_eq!(v["srtt_us"], 55);
        assert_eq!(v["rttvar_us"], 7);
        assert_eq!(v["bytes_retransmitted"], 1448);
        assert!(v["close_state"].is_string());
        assert!(v["close_reason"].is_string());
        assert_eq!(v["local_workload_id"], "k8s:prod/api");
        assert_eq!(v["identity_source"], "ip_map");
        assert!(v["unattributed_reason"].is_null());
        assert_eq!(v["incomplete"], true);
        assert_eq!(v["host_id"], "node-\"7\"");
        assert_eq!(
            v["batch_id"],
            "node-\"7\"/00000000000000000000000000000abc/42"
        );
        assert_eq!(v["record_index"], 3);
        assert_eq!(v["remote_workload_id"], "k8s:prod/db");
        assert_eq!(v["remote_identity_source"], "heartbeat");
        assert!(v["remote_unattributed_reason"].is_null());
        assert_eq!(v.as_object().map(|o| o.len()), Some(27), "no other field");
    }

    #[test]
    fn an_unattributed_flow_has_a_null_workload_and_a_reason() {
        let v = parse(&flow(false));
        assert!(v["remote_workload_id"].is_null());
        assert_eq!(v["remote_identity_source"], "none");
        assert_eq!(v["remote_unattributed_reason"], "conflicting_owners");
        assert_eq!(v.as_object().map(|o| o.len()), Some(27));
    }

    #[test]
    fn the_exporter_fields_come_first_in_their_order() {
        let mut out = Vec::new();
        write_json_line(&mut out, &flow(true)).expect("write");
        let mut plain = Vec::new();
        flow_record::json::write_line(&mut plain, &flow(true).record).expect("write");
        // The collector's line is the exporter's line with more fields at the end.
        let prefix = &plain[..plain.len() - 2]; // without "}\n"
        assert!(out.starts_with(prefix));
        assert!(out[prefix.len()..].starts_with(b",\"host_id\":"));
    }
}
