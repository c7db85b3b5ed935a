//! Where `run` sends chunks: a collector over HTTP, Kafka, or both. Each has its own
//! spool and sending task; every chunk goes to each (flow-sink's fan-out), and a
//! stopping exporter flushes both at once, so a stop waits for the slower of the two,
//! not for their sum.

use std::{collections::HashMap, sync::Mutex};

use async_trait::async_trait;
use flow_batch::{Chunk, wire::BatchId};
use flow_sink::{Accepted, CollectorSink, FlowSink, KafkaSink, SinkError};

/// The sinks of a `run` that sends chunks: at least one of the two.
pub struct Outputs {
    collector: Option<CollectorSink>,
    kafka: Option<KafkaSink>,
    /// Chunks both sinks keep in memory, until both settled them.
    settling: Mutex<Settling>,
}

/// The collector sink's bit in [`Settling`].
const COLLECTOR: u8 = 1;
/// The Kafka sink's bit.
const KAFKA: u8 = 2;

/// Chunks that both sinks kept in memory (their spool disk full), with the sinks that
/// have not settled them yet: such a chunk is settled for the caller (its journal
/// intent ended) only once both have, so that a crash in between loses neither copy.
/// A chunk only one sink keeps in memory is settled when that one settles it (the
/// other's copy is durable). Sans-IO.
#[derive(Debug, Default)]
struct Settling {
    held: HashMap<BatchId, u8>,
}

impl Settling {
    /// Notes `id` kept in memory by the sinks of `members`.
    fn kept(&mut self, id: &BatchId, members: u8) {
        if members == COLLECTOR | KAFKA {
            self.held.insert(id.clone(), members);
        }
    }

    /// `ids` settled by `member`: those the caller may now call settled.
    fn settled(&mut self, member: u8, ids: Vec<BatchId>, out: &mut Vec<BatchId>) {
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

/// The answer of both sinks as one: `InMemory` when either kept the chunk in memory,
/// else `Spooled` when either spooled it, else `Sent`; a failure a retry may fix wins
/// over one it cannot (the caller gives a chunk up only when every failure is
/// permanent), as flow-sink's own fan-out answers.
fn combine(answers: [(Result<Accepted, SinkError>, &str); 2]) -> Result<Accepted, SinkError> {
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
    /// `collector`, `kafka` or both; `None` when both are `None`.
    pub fn new(collector: Option<CollectorSink>, kafka: Option<KafkaSink>) -> Option<Outputs> {
        (collector.is_some() || kafka.is_some()).then_some(Outputs {
            collector,
            kafka,
            settling: Mutex::new(Settling::default()),
        })
    }

    /// The collector sink, if chunks go to a collector.
    pub fn collector(&self) -> Option<&CollectorSink> {
        self.collector.as_ref()
    }

    /// The Kafka sink, if chunks go to Kafka.
    pub fn kafka(&self) -> Option<&KafkaSink> {
        self.kafka.as_ref()
    }

    /// The sinks, the collector first.
    fn members(&self) -> Vec<&dyn FlowSink> {
        let mut members: Vec<&dyn FlowSink> = Vec::with_capacity(2);
        if let Some(c) = &self.collector {
            members.push(c);
        }
        if let Some(k) = &self.kafka {
            members.push(k);
        }
        members
    }

    /// `accept` (or `replay`) on both sinks, noting a chunk both keep in memory.
    async fn accept_both(
        &self,
        collector: &CollectorSink,
        kafka: &KafkaSink,
        chunk: &Chunk,
        id: &BatchId,
        replay: bool,
    ) -> Result<Accepted, SinkError> {
        let (c, k) = if replay {
            (
                collector.replay(chunk, id).await,
                kafka.replay(chunk, id).await,
            )
        } else {
            (
                collector.accept(chunk, id).await,
                kafka.accept(chunk, id).await,
            )
        };
        let mut members = 0;
        if matches!(c, Ok(Accepted::InMemory)) {
            members |= COLLECTOR;
        }
        if matches!(k, Ok(Accepted::InMemory)) {
            members |= KAFKA;
        }
        self.settling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .kept(id, members);
        combine([(c, collector.name()), (k, kafka.name())])
    }

    /// The one sink, when there is only one (it is then called directly, its errors
    /// as they are).
    fn single(&self) -> Option<&dyn FlowSink> {
        match (&self.collector, &self.kafka) {
            (Some(c), None) => Some(c),
            (None, Some(k)) => Some(k),
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
            None => self.members().deliver(chunk).await,
        }
    }

    async fn accept(&self, chunk: &Chunk, id: &BatchId) -> Result<Accepted, SinkError> {
        match (&self.collector, &self.kafka) {
            (Some(c), Some(k)) => self.accept_both(c, k, chunk, id, false).await,
            _ => match self.single() {
                Some(sink) => sink.accept(chunk, id).await,
                None => self.members().accept(chunk, id).await,
            },
        }
    }

    async fn replay(&self, chunk: &Chunk, id: &BatchId) -> Result<Accepted, SinkError> {
        match (&self.collector, &self.kafka) {
            (Some(c), Some(k)) => self.accept_both(c, k, chunk, id, true).await,
            _ => match self.single() {
                Some(sink) => sink.replay(chunk, id).await,
                None => self.members().replay(chunk, id).await,
            },
        }
    }

    fn take_settled(&self) -> Vec<BatchId> {
        let collector = self
            .collector
            .as_ref()
            .map(FlowSink::take_settled)
            .unwrap_or_default();
        let kafka = self
            .kafka
            .as_ref()
            .map(FlowSink::take_settled)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(collector.len() + kafka.len());
        let mut settling = self.settling.lock().unwrap_or_else(|p| p.into_inner());
        settling.settled(COLLECTOR, collector, &mut out);
        settling.settled(KAFKA, kafka, &mut out);
        out
    }

    async fn flush(&self) -> Result<(), SinkError> {
        let collector = async {
            match &self.collector {
                Some(c) => c.flush().await,
                None => Ok(()),
            }
        };
        let kafka = async {
            match &self.kafka {
                Some(k) => k.flush().await,
                None => Ok(()),
            }
        };
        let (collector, kafka) = tokio::join!(collector, kafka);
        collector.and(kafka)
    }

    async fn close(&self) -> Result<(), SinkError> {
        self.members().close().await
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
            combine([(ok(Accepted::Sent), "c"), (ok(Accepted::InMemory), "k")]).ok(),
            Some(Accepted::InMemory)
        );
        assert_eq!(
            combine([(ok(Accepted::Spooled), "c"), (ok(Accepted::Sent), "k")]).ok(),
            Some(Accepted::Spooled)
        );
    }
}
