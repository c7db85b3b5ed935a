//! What really happened: the true remote of every flow, kept per chunk until the
//! collector hands the flow out, and the verdict on what the collector said.

use std::collections::HashMap;

use flow_batch::wire::InstanceId;
use flow_collector::attribution::{AttributedFlow, RemoteIdentitySource};
use flow_record::WorkloadId;

use crate::fleet::world::World;

/// The true remote side of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Truth {
    /// A workload of the fleet (every one runs an exporter), by ID number.
    Workload(u32),
    /// A service in the collector's static table, by index.
    Static(u16),
    /// A service without an exporter and in no table, by index: nothing may name it.
    Unmanaged(u16),
    /// Nothing that has a workload identity: a host process, or an IP nobody owned.
    Nobody,
}

impl Truth {
    /// The name the collector should give, when there is one it can know.
    pub fn expected<'w>(&self, world: &'w World) -> Option<&'w WorkloadId> {
        match *self {
            Truth::Workload(w) => world.workloads.get(w as usize).map(|w| &w.name),
            Truth::Static(s) => world.static_services.get(usize::from(s)).map(|s| &s.name),
            Truth::Unmanaged(_) | Truth::Nobody => None,
        }
    }

    /// For reports: what it is, with its name.
    pub fn describe(&self, world: &World) -> String {
        match *self {
            Truth::Workload(w) => match world.workloads.get(w as usize) {
                Some(w) => format!(
                    "workload {} ({} on {}, {:?}, from {:.3} s to {:.3} s)",
                    w.name.as_str(),
                    w.ip,
                    world.hosts[w.host as usize].name,
                    w.identity,
                    w.start as f64 / 1e6,
                    w.stop as f64 / 1e6
                ),
                None => format!("workload #{w}"),
            },
            Truth::Static(s) => match world.static_services.get(usize::from(s)) {
                Some(s) => format!("static service {} ({})", s.name.as_str(), s.ip),
                None => format!("static service #{s}"),
            },
            Truth::Unmanaged(s) => match world.unmanaged_services.get(usize::from(s)) {
                Some(s) => format!("unmanaged service {} ({}, no table)", s.name.as_str(), s.ip),
                None => format!("unmanaged service #{s}"),
            },
            Truth::Nobody => "nobody (a host process, or an IP no workload owned)".into(),
        }
    }
}

/// What the collector's answer was worth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Attributed to the true remote, from this source.
    Correct(RemoteIdentitySource),
    /// Attributed to someone else (or to anyone, when nothing could be named).
    Misattributed,
    /// Left unattributed; `answerable`: the truth had a name the collector could know.
    Unattributed {
        /// Whether the truth had a name.
        answerable: bool,
    },
}

/// Judges the collector's answer for a flow whose true remote is `truth`.
pub fn judge(truth: Truth, flow: &AttributedFlow, world: &World) -> Verdict {
    let expected = truth.expected(world);
    match (&flow.remote_workload_id, expected) {
        (Some(got), Some(want)) if got == want => Verdict::Correct(flow.remote_identity_source),
        (Some(_), _) => Verdict::Misattributed,
        (None, expected) => Verdict::Unattributed {
            answerable: expected.is_some(),
        },
    }
}

/// Why a flow the collector handed out has no truth to check against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unknown {
    /// No chunk of that host and sequence was sent (or it was dropped).
    Chunk,
    /// The record index is beyond the chunk's records.
    Index,
    /// The flow was handed out before.
    Twice,
}

struct ChunkTruth {
    instance: InstanceId,
    truths: Vec<Option<Truth>>,
    remaining: usize,
}

/// The truths of the flows sent and not yet handed out, by (host, sequence) and
/// record index: a chunk's entry goes once its last flow is checked.
#[derive(Default)]
pub struct TruthTable {
    chunks: HashMap<(u32, u64), ChunkTruth>,
    pending: u64,
}

impl TruthTable {
    /// An empty table.
    pub fn new() -> TruthTable {
        TruthTable::default()
    }

    /// Keeps the truths of a chunk that was sent (and not dropped).
    pub fn insert(&mut self, host: u32, instance: InstanceId, sequence: u64, truths: Vec<Truth>) {
        if truths.is_empty() {
            return;
        }
        self.pending += truths.len() as u64;
        let chunk = ChunkTruth {
            instance,
            remaining: truths.len(),
            truths: truths.into_iter().map(Some).collect(),
        };
        self.chunks.insert((host, sequence), chunk);
    }

    /// Takes the truth of one flow; a second take of the same flow is [`Unknown::Twice`].
    pub fn take(
        &mut self,
        host: u32,
        instance: InstanceId,
        sequence: u64,
        index: u32,
    ) -> Result<Truth, Unknown> {
        let key = (host, sequence);
        let chunk = self.chunks.get_mut(&key).ok_or(Unknown::Chunk)?;
        if chunk.instance != instance {
            return Err(Unknown::Chunk);
        }
        let slot = chunk.truths.get_mut(index as usize).ok_or(Unknown::Index)?;
        let truth = slot.take().ok_or(Unknown::Twice)?;
        chunk.remaining -= 1;
        self.pending -= 1;
        if chunk.remaining == 0 {
            // Later copies of the chunk's flows find no entry: reported as Twice by
            // the caller, which knows the chunk was sent.
            self.chunks.remove(&key);
        }
        Ok(truth)
    }

    /// Flows sent whose truth has not been taken.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Chunks with flows not taken yet.
    pub fn chunks(&self) -> usize {
        self.chunks.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flow_batch::wire::BatchId;
    use flow_collector::attribution::RemoteUnattributedReason;

    use super::*;
    use crate::fleet::config::FleetConfig;

    fn flow(remote: Option<&WorkloadId>, source: RemoteIdentitySource) -> AttributedFlow {
        AttributedFlow {
            record: flow_testkit::record().build(),
            batch: Arc::new(BatchId {
                host: "host-00001".into(),
                instance: InstanceId::new(1),
                sequence: 0,
            }),
            record_index: 0,
            remote_workload_id: remote.cloned(),
            remote_identity_source: source,
            remote_unattributed_reason: remote
                .is_none()
                .then_some(RemoteUnattributedReason::NoOwnerKnown),
        }
    }

    #[test]
    fn judging_names_against_the_truth() {
        let world = World::new(&FleetConfig::default(), 1);
        let a = world.workloads[0].name.clone();
        let b = world.workloads[1].name.clone();
        let db = world.static_services[0].name.clone();
        let peer = RemoteIdentitySource::PeerRecord;
        let none = RemoteIdentitySource::None;
        assert_eq!(
            judge(Truth::Workload(0), &flow(Some(&a), peer), &world),
            Verdict::Correct(peer)
        );
        assert_eq!(
            judge(Truth::Workload(0), &flow(Some(&b), peer), &world),
            Verdict::Misattributed
        );
        assert_eq!(
            judge(
                Truth::Static(0),
                &flow(Some(&db), RemoteIdentitySource::Static),
                &world
            ),
            Verdict::Correct(RemoteIdentitySource::Static)
        );
        // Whatever names an unmanaged service or an IP nobody owned is wrong.
        assert_eq!(
            judge(
                Truth::Unmanaged(0),
                &flow(Some(&db), RemoteIdentitySource::Static),
                &world
            ),
            Verdict::Misattributed
        );
        assert_eq!(
            judge(
                Truth::Nobody,
                &flow(Some(&a), RemoteIdentitySource::Heartbeat),
                &world
            ),
            Verdict::Misattributed
        );
        assert_eq!(
            judge(Truth::Nobody, &flow(None, none), &world),
            Verdict::Unattributed { answerable: false }
        );
        assert_eq!(
            judge(Truth::Workload(1), &flow(None, none), &world),
            Verdict::Unattributed { answerable: true }
        );
    }

    #[test]
    fn every_flow_is_taken_once() {
        let mut table = TruthTable::new();
        let i = InstanceId::new(5);
        table.insert(3, i, 7, vec![Truth::Nobody, Truth::Workload(2)]);
        assert_eq!(table.pending(), 2);
        assert_eq!(table.take(3, i, 7, 1), Ok(Truth::Workload(2)));
        assert_eq!(table.take(3, i, 7, 1), Err(Unknown::Twice));
        assert_eq!(table.take(3, i, 7, 2), Err(Unknown::Index));
        assert_eq!(table.take(3, InstanceId::new(6), 7, 0), Err(Unknown::Chunk));
        assert_eq!(table.take(3, i, 8, 0), Err(Unknown::Chunk));
        assert_eq!(table.take(3, i, 7, 0), Ok(Truth::Nobody));
        assert_eq!((table.pending(), table.chunks()), (0, 0));
        // The chunk is gone: a flow of it handed out again has no entry.
        assert_eq!(table.take(3, i, 7, 0), Err(Unknown::Chunk));
    }
}
