//! Where chunks and records go among the collector nodes: each chunk to one node
//! ([`intake_node`] by host, or round robin: see [`Routing`](super::config::Routing)),
//! and, routed by connection, each of its records from that intake node to the node
//! that owns its connection's partition of the connection topic
//! ([`ConnectionRouter`]), as the messages a real intake would produce
//! ([`encode_routed`]) from the records its route-only attributor hands back.

use flow_batch::wire::BatchId;
use flow_collector::{
    attribution::{AttributedFlow, connection_partition},
    connections::encode_routed,
};
use flow_record::FlowRecord;

/// FNV-1a of `bytes`: a stable hash, so that a host goes to the same node in every
/// run.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The node (of `nodes`, at least 1) that receives host `host`'s chunks when they
/// go by host: `fnv1a(host) % nodes`, a load balancer with affinity or a topic keyed
/// by host.
pub fn intake_node(host: &str, nodes: usize) -> usize {
    (fnv1a(host.as_bytes()) % nodes.max(1) as u64) as usize
}

/// One message of the connection topic: the records of one chunk whose connections
/// fall in one partition, each with its index in the chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutedMessage {
    /// The partition it is produced to.
    pub partition: u32,
    /// The node that consumes that partition.
    pub node: usize,
    /// Records in it.
    pub records: u32,
    /// The message, as [`encode_routed`] writes it.
    pub bytes: Vec<u8>,
}

/// The intake's half of connection routing: splits a chunk's records by their
/// connection's partition ([`connection_partition`], equal for both ends' records
/// of a connection) into one message per partition, and knows which node consumes
/// each partition (`p % nodes`: every node of the consumer group up, each owning
/// the same share).
#[derive(Debug)]
pub struct ConnectionRouter {
    partitions: u32,
    nodes: u32,
    /// Per partition, the chunk indices of the records routed to it (reused).
    groups: Vec<Vec<u32>>,
}

impl ConnectionRouter {
    /// A router over `partitions` partitions (at least 1) consumed by `nodes` nodes
    /// (at least 1).
    pub fn new(partitions: u32, nodes: u32) -> ConnectionRouter {
        let partitions = partitions.max(1);
        ConnectionRouter {
            partitions,
            nodes: nodes.max(1),
            groups: vec![Vec::new(); partitions as usize],
        }
    }

    /// The partitions of the connection topic.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The node that consumes `partition`.
    pub fn owner(&self, partition: u32) -> usize {
        (partition % self.nodes) as usize
    }

    /// The messages for the `records` of chunk `batch` (in the order the chunk
    /// holds them): one per partition that has any, in partition order, each
    /// record with its index in the chunk. Fails as the record encoding does (which
    /// it does not for records that came out of a decoded frame).
    pub fn route(
        &mut self,
        batch: &BatchId,
        records: &[FlowRecord],
    ) -> anyhow::Result<Vec<RoutedMessage>> {
        // Every index fits: the count does.
        u32::try_from(records.len())?;
        self.route_by(batch, records.len(), |i| (i as u32, &records[i]))
    }

    /// The messages for the records of chunk `batch` that a route-only attributor
    /// handed back (undecided, in the order the chunk holds them), each with the
    /// chunk index it carries ([`AttributedFlow::record_index`]): as the real
    /// intake's output routes them. Otherwise as [`route`](ConnectionRouter::route).
    pub fn route_flows(
        &mut self,
        batch: &BatchId,
        flows: &[AttributedFlow],
    ) -> anyhow::Result<Vec<RoutedMessage>> {
        self.route_by(batch, flows.len(), |i| {
            (flows[i].record_index, &flows[i].record)
        })
    }

    /// The messages for `n` records of chunk `batch`, the `i`th of which (with its
    /// chunk index) `record(i)` gives.
    fn route_by<'a>(
        &mut self,
        batch: &BatchId,
        n: usize,
        record: impl Fn(usize) -> (u32, &'a FlowRecord),
    ) -> anyhow::Result<Vec<RoutedMessage>> {
        for group in &mut self.groups {
            group.clear();
        }
        for i in 0..n {
            let partition = connection_partition(record(i).1, &batch.host, self.partitions);
            self.groups[partition as usize].push(u32::try_from(i)?);
        }
        let mut messages = Vec::new();
        for (partition, group) in (0u32..).zip(&self.groups) {
            if group.is_empty() {
                continue;
            }
            let mut bytes = Vec::new();
            let routed = group.iter().map(|&i| record(i as usize));
            encode_routed(batch, routed, &mut bytes)
                .map_err(|e| anyhow::anyhow!("encoding routed records: {e}"))?;
            messages.push(RoutedMessage {
                partition,
                node: self.owner(partition),
                records: group.len() as u32,
                bytes,
            });
        }
        Ok(messages)
    }
}

#[cfg(test)]
mod tests {
    use flow_batch::wire::InstanceId;
    use flow_collector::connections::decode_routed;

    use super::*;

    #[test]
    fn fnv1a_is_the_reference_hash() {
        // The published FNV-1a 64 test vectors.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        assert!(intake_node("host-00001", 3) < 3);
        assert_eq!(intake_node("host-00001", 1), 0);
    }

    fn record(local: &str, remote: &str) -> FlowRecord {
        flow_testkit::record().local(local).remote(remote).build()
    }

    fn batch(host: &str) -> BatchId {
        BatchId {
            host: host.into(),
            instance: InstanceId::new(7),
            sequence: 3,
        }
    }

    #[test]
    fn both_ends_of_a_connection_reach_one_node_with_their_indices() {
        let mut router = ConnectionRouter::new(12, 3);
        // Host a's records: 40 connections to host b, and b's ends of them.
        let a: Vec<FlowRecord> = (0..40)
            .map(|i| record(&format!("10.0.0.1:{}", 40000 + i), "10.0.0.2:443"))
            .collect();
        let b: Vec<FlowRecord> = (0..40)
            .map(|i| record("10.0.0.2:443", &format!("10.0.0.1:{}", 40000 + i)))
            .collect();
        let from_a = router.route(&batch("a"), &a).expect("routes");
        let from_b = router.route(&batch("b"), &b).expect("routes");
        // Spread over several partitions and every node.
        assert!(from_a.len() > 3, "{}", from_a.len());
        let nodes: std::collections::BTreeSet<usize> = from_a.iter().map(|m| m.node).collect();
        assert_eq!(nodes.into_iter().collect::<Vec<_>>(), [0, 1, 2]);
        let place = |messages: &[RoutedMessage]| {
            let mut at = vec![(u32::MAX, usize::MAX); 40];
            let mut count = 0;
            for m in messages {
                assert_eq!(m.node, router.owner(m.partition));
                assert_eq!(m.node, m.partition as usize % 3);
                let decoded = decode_routed(&m.bytes).expect("decodes");
                assert_eq!(decoded.records.len(), m.records as usize);
                for (index, record) in decoded.indices.iter().zip(&decoded.records) {
                    let i = *index as usize;
                    at[i] = (m.partition, m.node);
                    count += 1;
                    // Each record keeps its chunk index.
                    assert!(*record == a[i] || *record == b[i]);
                }
            }
            assert_eq!(count, 40);
            at
        };
        assert_eq!(place(&from_a), place(&from_b));
    }

    #[test]
    fn a_route_only_attributor_hands_back_what_routing_the_records_gives() {
        use std::sync::Arc;

        use flow_collector::attribution::{AttributionConfig, Attributor, RemoteIdentitySource};
        use flow_record::IdentitySource;

        // The intake's attributor, as the real collector configures it.
        let mut config = AttributionConfig::default().with_heartbeat_sharing(true);
        config.route_only = true;
        let mut intake = Attributor::new(config);
        let records: Vec<FlowRecord> = (0..30)
            .map(|i| {
                flow_testkit::record()
                    .local(format!("10.0.0.{}:{}", 1 + i % 3, 40000 + i).as_str())
                    .remote("10.0.0.9:443")
                    .workload(format!("w-{}", i % 3), IdentitySource::IpMap)
                    .build()
            })
            .collect();
        let b = Arc::new(batch("h"));
        intake.push_chunk(
            Arc::clone(&b),
            records.clone(),
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000),
        );
        let flows: Vec<_> = std::iter::from_fn(|| intake.pop_ready()).collect();
        assert_eq!(flows.len(), records.len());
        assert!(flows.iter().all(|f| {
            f.remote_identity_source == RemoteIdentitySource::None
                && f.remote_unattributed_reason.is_none()
        }));
        let mut router = ConnectionRouter::new(12, 3);
        assert_eq!(
            router.route_flows(&b, &flows).expect("routes"),
            router.route(&b, &records).expect("routes")
        );
        // And it kept the chunk's claims: one heartbeat per (host, IP, workload).
        assert_eq!(intake.take_heartbeats().len(), 3);
        assert!(intake.take_heartbeats().is_empty());
    }

    #[test]
    fn one_partition_is_one_message_to_node_zero() {
        let mut router = ConnectionRouter::new(1, 4);
        let records = vec![
            record("10.0.0.1:1", "10.0.0.2:2"),
            record("10.0.0.3:3", "10.0.0.4:4"),
        ];
        let messages = router.route(&batch("h"), &records).expect("routes");
        assert_eq!(messages.len(), 1);
        assert_eq!(
            (messages[0].partition, messages[0].node, messages[0].records),
            (0, 0, 2)
        );
        assert!(router.route(&batch("h"), &[]).expect("routes").is_empty());
    }
}
