//! Where `run` sends chunks: a collector over HTTP, Kafka, an OTLP endpoint, an IPFIX
//! collector, or several of them. Each has its own spool and sending task; every
//! chunk goes to each (flow-sink's fan-out), and a stopping exporter flushes them all
//! at once, so a stop waits for the slowest, not for their sum.

use std::{collections::HashMap, sync::Mutex};

use async_trait::async_trait;
use flow_batch::{Chunk, wire::BatchId};
use flow_sink::{Accepted, CollectorSink, FlowSink, IpfixSink, KafkaSink, OtlpSink, SinkError};
use futures::future::join_all;

/// The sinks a `run` sends chunks to (at least one of them, or there is no
/// [`Outputs`]).
#[derive(Default)]
pub struct Sinks {
    /// `--collector`.
    pub collector: Option<CollectorSink>,
    /// `--kafka-brokers`.
    pub kafka: Option<KafkaSink>,
    /// `--otlp-endpoint`.
    pub otlp: Option<OtlpSink>,
    /// `--ipfix-collector`.
    pub ipfix: Option<IpfixSink>,
}

/// The sinks of a `run` that sends chunks.
pub struct Outputs {
    sinks: Sinks,
    /// Chunks several sinks keep in memory, until all of them settled them.
    settling: Mutex<Settling>,
}

/// The set of sinks (by their bit, [`Outputs::members`]) that keep a chunk in memory.
type Members = u8;

/// Chunks that several sinks kept in memory (their spool disk full), with the sinks
/// that have not settled them yet: such a chunk is settled for the caller (its journal
/// intent ended) only once all of them have, so that a crash in between loses no
/// copy. A chunk only one sink keeps in memory is settled when that one settles it
/// (the others' copies are durable). Sans-IO.
#[derive(Debug, Default)]
struct Settling {
    held: HashMap<BatchId, Members>,
}

impl Settling {
    /// Notes `id` kept in memory by the sinks of `members`.
    fn kept(&mut self, id: &BatchId, members: Members) {
        if members.count_ones() > 1 {
            self.held.insert(id.clone(), members);
        }
    }

    /// `ids` settled by `member`: those the caller may now call settled.
    fn settled(&mut self, member: Members, ids: Vec<BatchId>, out: &mut Vec<BatchId>) {
        for id in ids {
            match self.held.get_mut(&id) {
                Some(left) => {
                    *left &= !member;
                    if *left == 0 {
                        self.held.remove(&id);
                        out.push(id);
                    }
                }
                None => out.push(id),
            }
        }
    }
}

/// The answers of the sinks as one: `InMemory` when any kept the chunk in memory,
/// else `Spooled` when any spooled it, else `Sent`; a failure a retry may fix wins
/// over one it cannot (the caller gives a chunk up only when every failure is
/// permanent), as flow-sink's own fan-out answers.
fn combine(answers: Vec<(Result<Accepted, SinkError>, &str)>) -> Result<Accepted, SinkError> {
    let mut outcome = Accepted::Sent;
    let mut first: Option<SinkError> = None;
    for (answer, name) in answers {
        match answer {
            Ok(Accepted::InMemory) => outcome = Accepted::InMemory,
            Ok(Accepted::Spooled) if outcome == Accepted::Sent => outcome = Accepted::Spooled,
            Ok(_) => {}
            Err(error) => {
                let error = SinkError::Sink {
                    name: name.to_owned(),
                    source: Box::new(error),
                };
                first = Some(match first {
                    None => error,
                    Some(f) if f.is_permanent() && !error.is_permanent() => {
                        tracing::warn!(error = %flow_sink::error_chain(&f), "a sink failed");
                        error
                    }
                    Some(f) => {
                        tracing::warn!(error = %flow_sink::error_chain(&error), "a sink failed");
                        f
                    }
                });
            }
        }
    }
    first.map_or(Ok(outcome), Err)
}

impl Outputs {
    /// The fan-out to `sinks`; `None` when there is none.
    pub fn new(sinks: Sinks) -> Option<Outputs> {
        let outputs = Outputs {
            sinks,
            settling: Mutex::new(Settling::default()),
        };
        (!outputs.members().is_empty()).then_some(outputs)
    }

    /// The collector sink, if chunks go to a collector.
    pub fn collector(&self) -> Option<&CollectorSink> {
        self.sinks.collector.as_ref()
    }

    /// The Kafka sink, if chunks go to Kafka.
    pub fn kafka(&self) -> Option<&KafkaSink> {
        self.sinks.kafka.as_ref()
    }

    /// The OTLP sink, if records go to an OTLP endpoint.
    pub fn otlp(&self) -> Option<&OtlpSink> {
        self.sinks.otlp.as_ref()
    }

    /// The IPFIX sink, if records go to an IPFIX collector.
    pub fn ipfix(&self) -> Option<&IpfixSink> {
        self.sinks.ipfix.as_ref()
    }

    /// Where chunks go, each sink by its name and destination, for the log line at
    /// start.
    pub fn destinations(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(c) = self.collector() {
            out.push(format!("collector {}", c.url()));
        }
        if let Some(k) = self.kafka() {
            out.push(format!("kafka {}", k.destination()));
        }
        if let Some(o) = self.otlp() {
            out.push(format!("otlp {}", o.destination()));
        }
        if let Some(i) = self.ipfix() {
            out.push(format!("ipfix {}", i.destination()));
        }
        out
    }

    /// The sinks, each with its bit, the collector first.
    fn members(&self) -> Vec<(Members, &dyn FlowSink)> {
        let s = &self.sinks;
        let all: [Option<&dyn FlowSink>; 4] = [
            s.collector.as_ref().map(|c| c as &dyn FlowSink),
            s.kafka.as_ref().map(|k| k as &dyn FlowSink),
            s.otlp.as_ref().map(|o| o as &dyn FlowSink),
            s.ipfix.as_ref().map(|i| i as &dyn FlowSink),
        ];
        all.into_iter()
            .enumerate()
            .filter_map(|(bit, sink)| sink.map(|sink| (1 << bit, sink)))
            .collect()
    }

    /// `accept` (or `replay`) on every sink in turn, noting a chunk several keep in
    /// memory.
    async fn accept_all(
        &self,
        members: Vec<(Members, &dyn FlowSink)>,
        chunk: &Chunk,
        id: &BatchId,
        replay: bool,
    ) -> Result<Accepted, SinkError> {
        let mut answers = Vec::with_capacity(members.len());
        let mut in_memory = 0;
        for (bit, sink) in members {
            let answer = if replay {
                sink.replay(chunk, id).await
            } else {
                sink.accept(chunk, id).await
            };
            if matches!(answer, Ok(Accepted::InMemory)) {
                in_memory |= bit;
            }
            answers.push((answer, sink.name()));
        }
        self.settling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .kept(id, in_memory);
        combine(answers)
    }

    /// The one sink, when there is only one (it is then called directly, its errors
    /// as they are).
    fn single(&self) -> Option<&dyn FlowSink> {
        match self.members().as_slice() {
            [(_, sink)] => Some(*sink),
            _ => None,
        }
    }
}

#[async_trait]
impl FlowSink for Outputs {
    fn name(&self) -> &str {
        self.single().map_or("fan-out", |s| s.name())
    }

    async fn deliver(&self, chunk: &Chunk) -> Result<(), SinkError> {
        match self.single() {
            Some(sink) => sink.deliver(chunk).await,
            None => {
                let members: Vec<&dyn FlowSink> =
                    self.members().into_iter().map(|(_, s)| s).collect();
                members.deliver(chunk).await
            }
        }
    }

    async fn accept(&self, chunk: &Chunk, id: &BatchId) -> Result<Accepted, SinkError> {
        match self.single() {
            Some(sink) => sink.accept(chunk, id).await,
            None => self.accept_all(self.members(), chunk, id, false).await,
        }
    }

    async fn replay(&self, chunk: &Chunk, id: &BatchId) -> Result<Accepted, SinkError> {
        match self.single() {
            Some(sink) => sink.replay(chunk, id).await,
            None => self.accept_all(self.members(), chunk, id, true).await,
        }
    }

    fn take_settled(&self) -> Vec<BatchId> {
        let mut out = Vec::new();
        let members = self.members();
        let mut settling = self.settling.lock().unwrap_or_else(|p| p.into_inner());
        for (bit, sink) in members {
            settling.settled(bit, sink.take_settled(), &mut out);
        }
        out
    }

    async fn flush(&self) -> Result<(), SinkError> {
        // All at once: a stop waits for the slowest sink, not for their sum.
        let flushes = self.members().into_iter().map(|(_, sink)| sink.flush());
        let mut result = Ok(());
        for outcome in join_all(flushes).await {
            result = result.and(outcome);
        }
        result
    }

    async fn close(&self) -> Result<(), SinkError> {
        // All at once, as the flush: the stop's deadline bounds the slowest sink's
        // shutdown, not the sum of them.
        let closes = self.members().into_iter().map(|(_, sink)| sink.close());
        let mut result = Ok(());
        for outcome in join_all(closes).await {
            result = result.and(outcome);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use flow_batch::wire::InstanceId;

    use super::*;

    fn id(n: u64) -> BatchId {
        BatchId {
            host: "h".into(),
            instance: InstanceId::new(1),
            sequence: n,
        }
    }

    #[test]
    fn a_chunk_both_sinks_keep_in_memory_is_settled_once_both_settled_it() {
        const COLLECTOR: Members = 1;
        const KAFKA: Members = 2;
        let mut s = Settling::default();
        s.kept(&id(1), COLLECTOR | KAFKA);
        s.kept(&id(2), KAFKA);
        let mut out = Vec::new();
        s.settled(COLLECTOR, vec![id(1)], &mut out);
        assert!(out.is_empty(), "Kafka still holds chunk 1 in memory only");
        s.settled(KAFKA, vec![id(2)], &mut out);
        assert_eq!(out, vec![id(2)], "only Kafka kept chunk 2 in memory");
        s.settled(KAFKA, vec![id(1)], &mut out);
        assert_eq!(out, vec![id(2), id(1)]);
        assert!(s.held.is_empty());
        // Both in one call.
        s.kept(&id(3), COLLECTOR | KAFKA);
        let mut out = Vec::new();
        s.settled(COLLECTOR, vec![id(3)], &mut out);
        s.settled(KAFKA, vec![id(3)], &mut out);
        assert_eq!(out, vec![id(3)]);
    }

    #[test]
    fn answers_combine_like_the_fan_out() {
        let ok = |a| -> Result<Accepted, SinkError> { Ok(a) };
        assert_eq!(
            combine(vec![
                (ok(Accepted::Sent), "c"),
                (ok(Accepted::InMemory), "k")
            ])
            .ok(),
            Some(Accepted::InMemory)
        );
        assert_eq!(
            combine(vec![
                (ok(Accepted::Spooled), "c"),
                (ok(Accepted::Sent), "k")
            ])
            .ok(),
            Some(Accepted::Spooled)
        );
    }
}
