//! The attributing half of connection routing, sans-IO: routed records in (each
//! connection's records all reach the one node that owns its partition), decided
//! flows out, and which input messages are done (every record they brought is in the
//! output and acknowledged), so that their offsets may be committed.
//!
//! A record already waiting here (the same batch ID and index) is dropped and
//! counted: an intake that wrote a chunk's records twice (it crashed before its
//! checkpoint, or two intakes took one retried chunk) does not make a flow twice
//! while the first copy waits. Once a flow is out, its copy is no longer known
//! (`docs/kafka.md`: duplicates keep their ID).

use std::{collections::HashMap, sync::Arc, time::SystemTime};

use flow_batch::wire::BatchId;

use super::message::RoutedRecords;
use crate::attribution::{AttributedFlow, Attributor};

/// What the connection stage counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionStageStats {
    /// Records taken (duplicates not counted).
    pub records: u64,
    /// Records dropped because the same flow (batch ID and index) was waiting here.
    pub duplicates: u64,
    /// Batches with flows not yet out or not yet acknowledged.
    pub batches_open: u64,
    /// Held records let go, undecided, because their partition was taken away (its
    /// next owner reads them again).
    pub released: u64,
}

/// One batch's records on this node: the indices not yet written (with the
/// partition each came from), and the output's acknowledgement mark after the last of
/// them was.
#[derive(Debug, Default)]
struct Progress {
    pending: HashMap<u32, i32>,
    mark: u64,
}

/// An attributor fed routed records, and the bookkeeping of what is done.
#[derive(Debug)]
pub struct ConnectionStage {
    attributor: Attributor,
    batches: HashMap<Arc<BatchId>, Progress>,
    stats: ConnectionStageStats,
}

impl ConnectionStage {
    /// A stage around `attributor` (configured as a single node's would be, heartbeats
    /// shared).
    pub fn new(attributor: Attributor) -> ConnectionStage {
        ConnectionStage {
            attributor,
            batches: HashMap::new(),
            stats: ConnectionStageStats::default(),
        }
    }

    /// Takes a message's records, from `partition`, received at `now`; returns the
    /// batch to note for the message (it is done when [`done`](ConnectionStage::done)
    /// says so).
    pub fn push(&mut self, partition: i32, routed: RoutedRecords, now: SystemTime) -> Arc<BatchId> {
        let RoutedRecords {
            batch,
            mut indices,
            mut records,
        } = routed;
        // One Arc per batch: the key's, shared by its flows.
        let batch = match self.batches.get_key_value(&*batch) {
            Some((key, _)) => Arc::clone(key),
            None => batch,
        };
        let progress = self.batches.entry(Arc::clone(&batch)).or_default();
        records.truncate(indices.len());
        let keep: Vec<bool> = indices
            .iter()
            .map(|index| match progress.pending.entry(*index) {
                std::collections::hash_map::Entry::Vacant(entry) => {
                    entry.insert(partition);
                    true
                }
                std::collections::hash_map::Entry::Occupied(_) => false,
            })
            .collect();
        let duplicates = keep.iter().filter(|k| !**k).count();
        if duplicates > 0 {
            // Rare: only then are the records moved.
            self.stats.duplicates += duplicates as u64;
            let mut k = keep.iter();
            indices.retain(|_| k.next().copied().unwrap_or(false));
            let mut k = keep.iter();
            records.retain(|_| k.next().copied().unwrap_or(false));
        }
        self.stats.records += records.len() as u64;
        if !records.is_empty() {
            self.attributor
                .push_records(Arc::clone(&batch), records, &indices, now);
        }
        batch
    }

    /// Decides what the passing of time allows.
    pub fn advance(&mut self, now: SystemTime) {
        self.attributor.advance(now);
    }

    /// The flows decided so far, at most `max`.
    pub fn take_ready(&mut self, max: usize) -> Vec<AttributedFlow> {
        std::iter::from_fn(|| self.attributor.pop_ready())
            .take(max)
            .collect()
    }

    /// Notes `flows` as written to the output, which numbered its writes up to
    /// `mark` (its [`Acknowledgements::mark`](crate::output::Acknowledgements::mark)
    /// after the write).
    pub fn written(&mut self, flows: &[AttributedFlow], mark: u64) {
        for flow in flows {
            if let Some(progress) = self.batches.get_mut(&*flow.batch) {
                progress.pending.remove(&flow.record_index);
                progress.mark = progress.mark.max(mark);
            }
        }
    }

    /// Whether every record of `batch` taken here is written and acknowledged (the
    /// output acknowledged every write below `acknowledged_below`).
    pub fn done(&self, batch: &BatchId, acknowledged_below: u64) -> bool {
        self.batches
            .get(batch)
            .is_none_or(|p| p.pending.is_empty() && p.mark <= acknowledged_below)
    }

    /// Lets go, undecided, of the held records that came from `partitions` (taken
    /// away from this node: their offsets are not committed, so their next owner
    /// reads and decides them; deciding them here too would write them twice, the
    /// copy here without the partition's later records). Returns how many.
    pub fn release(&mut self, partitions: &[i32]) -> usize {
        let batches = &self.batches;
        let forgotten = self.attributor.forget_held(|batch, index| {
            batches
                .get(batch)
                .and_then(|p| p.pending.get(&index))
                .is_some_and(|partition| partitions.contains(partition))
        });
        for (batch, index) in &forgotten {
            if let Some(progress) = self.batches.get_mut(&**batch) {
                progress.pending.remove(index);
            }
        }
        self.stats.released += forgotten.len() as u64;
        forgotten.len()
    }

    /// Forgets the batches that are done.
    pub fn prune(&mut self, acknowledged_below: u64) {
        self.batches
            .retain(|_, p| !(p.pending.is_empty() && p.mark <= acknowledged_below));
    }

    /// The attributor (heartbeats in and out, its statistics).
    pub fn attributor(&mut self) -> &mut Attributor {
        &mut self.attributor
    }

    /// What the stage counted.
    pub fn stats(&self) -> ConnectionStageStats {
        ConnectionStageStats {
            batches_open: self.batches.len() as u64,
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use flow_batch::wire::InstanceId;
    use flow_record::{FlowRecord, IdentitySource};

    use super::*;
    use crate::attribution::{AttributionConfig, RemoteIdentitySource};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn batch(host: &str, sequence: u64) -> Arc<BatchId> {
        Arc::new(BatchId {
            host: host.into(),
            instance: InstanceId::new(1),
            sequence,
        })
    }

    fn record(local: &str, remote: &str, w: &str) -> FlowRecord {
        flow_testkit::record()
            .local(local)
            .remote(remote)
            .t_start(Some(at(0)))
            .t_end(at(1))
            .workload(w, IdentitySource::ConnectMap)
            .build()
    }

    fn routed_of(batch: &Arc<BatchId>, records: Vec<(u32, FlowRecord)>) -> RoutedRecords {
        let (indices, records) = records.into_iter().unzip();
        RoutedRecords {
            batch: Arc::clone(batch),
            indices,
            records,
        }
    }

    fn stage() -> ConnectionStage {
        ConnectionStage::new(Attributor::new(
            AttributionConfig::default().with_peer_wait(Duration::from_secs(5)),
        ))
    }

    #[test]
    fn both_ends_meet_and_keep_their_chunk_indices() {
        let mut s = stage();
        // Two containers behind one shared IPv4 each: only the peer records tell.
        let a = batch("host-a", 1);
        let b = batch("host-b", 9);
        s.push(
            0,
            routed_of(
                &a,
                vec![(5, record("10.0.0.1:40000", "10.0.0.2:8080", "w-a"))],
            ),
            at(2),
        );
        assert!(s.take_ready(10).is_empty());
        assert!(!s.done(&a, u64::MAX));
        s.push(
            0,
            routed_of(
                &b,
                vec![(2, record("10.0.0.2:8080", "10.0.0.1:40000", "w-b"))],
            ),
            at(3),
        );
        let flows = s.take_ready(10);
        assert_eq!(flows.len(), 2);
        for f in &flows {
            assert_eq!(f.remote_identity_source, RemoteIdentitySource::PeerRecord);
        }
        let of_a = flows.iter().find(|f| f.batch == a).expect("a's flow");
        assert_eq!(of_a.record_index, 5);
        assert_eq!(
            of_a.remote_workload_id.as_ref().map(|w| w.as_str()),
            Some("w-b")
        );
        // Written with mark 7: done once everything below 7 is acknowledged.
        s.written(&flows, 7);
        assert!(!s.done(&a, 6));
        assert!(s.done(&a, 7) && s.done(&b, 7));
        assert_eq!(s.stats().batches_open, 2);
        s.prune(7);
        assert_eq!(s.stats().batches_open, 0);
        assert!(s.done(&a, 0), "a forgotten batch is done");
    }

    #[test]
    fn the_intake_shares_the_claims_of_the_records_it_routes() {
        // The intake: route only, sharing its records' claims.
        let mut intake = Attributor::new(AttributionConfig {
            route_only: true,
            share_heartbeats: true,
            ..AttributionConfig::default()
        });
        let owner = flow_testkit::record()
            .local("10.0.0.7:8080")
            .remote("192.0.2.1:5000")
            .t_start(Some(at(0)))
            .t_end(at(30))
            .workload("db", IdentitySource::IpMap)
            .build();
        intake.push_chunk(batch("host-db", 1), vec![owner], at(31));
        let routed: Vec<AttributedFlow> = std::iter::from_fn(|| intake.pop_ready()).collect();
        assert_eq!(routed.len(), 1);
        assert_eq!(routed[0].remote_identity_source, RemoteIdentitySource::None);
        assert_eq!(routed[0].remote_unattributed_reason, None);
        let heartbeats = intake.take_heartbeats();
        assert_eq!(heartbeats.len(), 1);
        // Another node's attributing half: a flow to 10.0.0.7 (whose peer record
        // never comes) is attributed from the intake's heartbeat.
        let mut s = stage();
        s.attributor().apply_heartbeats(&heartbeats, at(31));
        let client = flow_testkit::record()
            .local("10.0.0.1:40000")
            .remote("10.0.0.7:8080")
            .t_start(Some(at(5)))
            .t_end(at(20))
            .workload("web", IdentitySource::IpMap)
            .build();
        s.push(
            0,
            routed_of(&batch("host-web", 1), vec![(0, client)]),
            at(32),
        );
        s.advance(at(200));
        let flows = s.take_ready(10);
        assert_eq!(flows.len(), 1);
        assert_eq!(
            flows[0].remote_workload_id.as_ref().map(|w| w.as_str()),
            Some("db")
        );
        assert_eq!(
            flows[0].remote_identity_source,
            RemoteIdentitySource::Heartbeat
        );
    }

    #[test]
    fn held_records_of_a_partition_taken_away_are_let_go_undecided() {
        let mut s = stage();
        let a = batch("host-a", 1);
        let r = |port: u16| record(&format!("10.0.0.1:{port}"), "10.0.0.9:8080", "w-a");
        s.push(3, routed_of(&a, vec![(0, r(40_000))]), at(2));
        s.push(5, routed_of(&a, vec![(1, r(40_001))]), at(2));
        assert_eq!(s.release(&[3]), 1);
        assert_eq!(s.stats().released, 1);
        assert_eq!(s.attributor().stats().held, 1);
        // The next owner of partition 3 is this node again: the record comes back,
        // and is taken (not a duplicate).
        s.push(3, routed_of(&a, vec![(0, r(40_000))]), at(3));
        assert_eq!(s.stats().duplicates, 0);
        s.advance(at(200));
        let mut indices: Vec<u32> = s.take_ready(10).iter().map(|f| f.record_index).collect();
        indices.sort_unstable();
        assert_eq!(indices, vec![0, 1], "each once");
    }

    #[test]
    fn a_waiting_copy_is_not_taken_twice() {
        let mut s = stage();
        let a = batch("host-a", 1);
        let r = record("10.0.0.1:40000", "10.0.0.9:8080", "w-a");
        s.push(0, routed_of(&a, vec![(0, r.clone())]), at(2));
        s.push(
            0,
            routed_of(&a, vec![(0, r.clone()), (1, r.clone())]),
            at(3),
        );
        assert_eq!(s.stats().duplicates, 1);
        assert_eq!(s.stats().records, 2);
        // Nobody answers: both leave at the hold-back, unattributed.
        s.advance(at(200));
        let flows = s.take_ready(10);
        assert_eq!(flows.len(), 2);
        let mut indices: Vec<u32> = flows.iter().map(|f| f.record_index).collect();
        indices.sort_unstable();
        assert_eq!(indices, vec![0, 1]);
        assert!(!s.done(&a, u64::MAX), "not written yet");
        s.written(&flows[..1], 3);
        assert!(!s.done(&a, u64::MAX), "one still unwritten");
        s.written(&flows[1..], 4);
        assert!(s.done(&a, 4));
    }
}
