//! Checks every flow the collector hands out against the truth, and counts.

use flow_collector::{
    attribution::{AttributedFlow, RemoteIdentitySource, RemoteUnattributedReason},
    output::write_json_line,
};

use crate::fleet::{
    routing::fnv1a,
    truth::{Truth, TruthTable, Unknown, Verdict, judge},
    world::{Micros, SECOND, T0_SECS, World, host_index},
};

/// Misattributions printed in full, at most.
pub const EXAMPLES: usize = 5;

/// Where one chunk went, for describing misattributions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkFate {
    /// The sending host's index.
    pub host: u32,
    /// The chunk's sequence number.
    pub sequence: u64,
    /// Its window (minutes since T0 in the host's clock).
    pub window: i64,
    /// Records in it.
    pub records: u32,
    /// When it was sent (true time).
    pub sent: Micros,
    /// When its copies arrived (true time); empty when it was dropped.
    pub arrivals: Vec<Micros>,
}

/// The verdicts so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Flows handed out and checked against their truth.
    pub checked: u64,
    /// Attributed to the true remote, from the peer's record.
    pub correct_peer_record: u64,
    /// Attributed to the true remote, from the ownership map.
    pub correct_heartbeat: u64,
    /// Attributed to the true remote, from the static table.
    pub correct_static: u64,
    /// Attributed to anyone else.
    pub misattributed: u64,
    /// Unattributed, by reason ([`RemoteUnattributedReason::ALL`] order).
    pub unattributed: [u64; RemoteUnattributedReason::ALL.len()],
    /// Unattributed although the truth had a name the collector could know, by reason.
    pub unattributed_answerable: [u64; RemoteUnattributedReason::ALL.len()],
    /// Unattributed flows without a reason (a bug in the collector).
    pub unattributed_without_reason: u64,
    /// Flows whose truth has no name (unmanaged services, host processes, released
    /// IPs): unattributed is the right answer.
    pub unanswerable: u64,
    /// Flows handed out that were never sent (or were dropped).
    pub unknown_chunk: u64,
    /// Flows handed out with a record index beyond their chunk.
    pub unknown_index: u64,
    /// Flows handed out a second time.
    pub twice: u64,
    /// A digest of every checked flow's decision ([`decision_digest`]), added up
    /// (wrapping): equal for two runs that decided every flow alike, whatever the
    /// order and the node each flow came out of.
    pub decisions: u64,
}

impl Tally {
    /// Flows unattributed, all reasons.
    pub fn unattributed_total(&self) -> u64 {
        self.unattributed.iter().sum::<u64>() + self.unattributed_without_reason
    }

    /// Flows unattributed although the truth had a name.
    pub fn unattributed_answerable_total(&self) -> u64 {
        self.unattributed_answerable.iter().sum()
    }

    /// Flows attributed correctly, all sources.
    pub fn correct(&self) -> u64 {
        self.correct_peer_record + self.correct_heartbeat + self.correct_static
    }

    /// Flows handed out that could not be matched to a truth.
    pub fn unknown(&self) -> u64 {
        self.unknown_chunk + self.unknown_index + self.twice
    }

    /// Adds `other`'s counts (nodes together).
    pub fn add(&mut self, other: &Tally) {
        self.checked += other.checked;
        self.correct_peer_record += other.correct_peer_record;
        self.correct_heartbeat += other.correct_heartbeat;
        self.correct_static += other.correct_static;
        self.misattributed += other.misattributed;
        for (sum, n) in self.unattributed.iter_mut().zip(other.unattributed) {
            *sum += n;
        }
        for (sum, n) in self
            .unattributed_answerable
            .iter_mut()
            .zip(other.unattributed_answerable)
        {
            *sum += n;
        }
        self.unattributed_without_reason += other.unattributed_without_reason;
        self.unanswerable += other.unanswerable;
        self.unknown_chunk += other.unknown_chunk;
        self.unknown_index += other.unknown_index;
        self.twice += other.twice;
        self.decisions = self.decisions.wrapping_add(other.decisions);
    }
}

/// Checks flows, keeps the tally and the first misattributions in full.
#[derive(Debug, Default)]
pub struct Checker {
    /// The verdicts.
    pub tally: Tally,
    /// The first [`EXAMPLES`] misattributions, each described in full.
    pub examples: Vec<String>,
}

impl Checker {
    /// A checker with nothing counted.
    pub fn new() -> Checker {
        Checker::default()
    }

    /// Checks `flows` against `truths` and takes their truths out.
    pub fn check(
        &mut self,
        flows: &[AttributedFlow],
        truths: &mut TruthTable,
        world: &World,
        chunks: &[ChunkFate],
    ) {
        for flow in flows {
            let taken = match host_index(&flow.batch.host) {
                Some(h) => truths.take(
                    h,
                    flow.batch.instance,
                    flow.batch.sequence,
                    flow.record_index,
                ),
                None => Err(Unknown::Chunk),
            };
            let truth = match taken {
                Ok(truth) => truth,
                Err(Unknown::Chunk) => {
                    self.tally.unknown_chunk += 1;
                    continue;
                }
                Err(Unknown::Index) => {
                    self.tally.unknown_index += 1;
                    continue;
                }
                Err(Unknown::Twice) => {
                    self.tally.twice += 1;
                    continue;
                }
            };
            self.tally.checked += 1;
            self.tally.decisions = self.tally.decisions.wrapping_add(decision_digest(flow));
            match judge(truth, flow, world) {
                Verdict::Correct(RemoteIdentitySource::PeerRecord) => {
                    self.tally.correct_peer_record += 1;
                }
                Verdict::Correct(RemoteIdentitySource::Static) => self.tally.correct_static += 1,
                Verdict::Correct(_) => self.tally.correct_heartbeat += 1,
                Verdict::Misattributed => {
                    self.tally.misattributed += 1;
                    if self.examples.len() < EXAMPLES {
                        self.examples.push(describe(flow, truth, world, chunks));
                    }
                }
                Verdict::Unattributed { answerable } => {
                    if !answerable {
                        self.tally.unanswerable += 1;
                    }
                    match flow.remote_unattributed_reason {
                        Some(reason) => {
                            self.tally.unattributed[reason.index()] += 1;
                            if answerable {
                                self.tally.unattributed_answerable[reason.index()] += 1;
                            }
                        }
                        None => self.tally.unattributed_without_reason += 1,
                    }
                }
            }
        }
    }
}

/// A digest of what the collector decided for `flow`: its ID (batch and index), the
/// remote workload named, the source and the reason (FNV-1a).
pub fn decision_digest(flow: &AttributedFlow) -> u64 {
    let b = &flow.batch;
    let mut bytes = Vec::with_capacity(96);
    bytes.extend_from_slice(b.host.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(&b.instance.as_u128().to_le_bytes());
    bytes.extend_from_slice(&b.sequence.to_le_bytes());
    bytes.extend_from_slice(&flow.record_index.to_le_bytes());
    if let Some(w) = &flow.remote_workload_id {
        bytes.extend_from_slice(w.as_str().as_bytes());
    }
    bytes.push(0);
    bytes.extend_from_slice(flow.remote_identity_source.as_str().as_bytes());
    bytes.push(0);
    if let Some(r) = flow.remote_unattributed_reason {
        bytes.extend_from_slice(r.as_str().as_bytes());
    }
    fnv1a(&bytes)
}

/// A misattributed flow in full: its JSON line, the truth, who owned its remote IP
/// when, and what happened to the chunks of their hosts around the flow's time.
fn describe(flow: &AttributedFlow, truth: Truth, world: &World, chunks: &[ChunkFate]) -> String {
    let mut line = Vec::new();
    let _ = write_json_line(&mut line, flow);
    let mut text = format!(
        "flow: {}truth: {}\n",
        String::from_utf8_lossy(&line),
        truth.describe(world)
    );
    if let Some(h) = host_index(&flow.batch.host).and_then(|h| world.hosts.get(h as usize)) {
        text += &format!(
            "its host {} ({:?}, {}) runs {:.3} s ahead of true time\n",
            h.name,
            h.kind,
            h.ip,
            h.skew as f64 / SECOND as f64
        );
    }
    let mut hosts = Vec::new();
    if let std::net::IpAddr::V4(ip) = flow.record.remote.ip() {
        for w in world.owners_of(ip) {
            if !hosts.contains(&w.host) {
                hosts.push(w.host);
            }
            let host = &world.hosts[w.host as usize];
            text += &format!(
                "  {} had {} from {} to {} (host {}, clock {:+.3} s, {:?})\n",
                w.name.as_str(),
                w.ip,
                clock(w.start),
                clock(w.stop),
                host.name,
                host.skew as f64 / SECOND as f64,
                w.identity
            );
        }
    }
    // The chunks of the flow's own host and of the remote IP's owners' hosts, from
    // two windows before the flow's to two after.
    let own = host_index(&flow.batch.host);
    let t_end = micros_since_t0(flow.record.t_end);
    let window = t_end.div_euclid(60 * SECOND);
    text += "  chunks around the flow (true times, s):\n";
    for c in chunks {
        let relevant = Some(c.host) == own || hosts.contains(&c.host);
        if relevant && (c.window - window).abs() <= 2 {
            let arrivals: Vec<String> = c
                .arrivals
                .iter()
                .map(|a| format!("{:.3}", *a as f64 / SECOND as f64))
                .collect();
            text += &format!(
                "    {} seq {} window {} ({} records) sent {:.3}: {}\n",
                world.hosts[c.host as usize].name,
                c.sequence,
                c.window,
                c.records,
                c.sent as f64 / SECOND as f64,
                if arrivals.is_empty() {
                    "DROPPED".to_string()
                } else {
                    format!("arrived {}", arrivals.join(", "))
                }
            );
        }
    }
    text
}

/// `t` as [`Micros`] since T0 (in whatever clock `t` was written).
fn micros_since_t0(t: std::time::SystemTime) -> Micros {
    let since_epoch = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    since_epoch - T0_SECS as i64 * SECOND
}

/// A true time as seconds since the Unix epoch.
fn clock(t: Micros) -> String {
    if t == Micros::MAX {
        return "(still running)".into();
    }
    let secs = T0_SECS as f64 + t as f64 / SECOND as f64;
    format!("{secs:.6}")
}
