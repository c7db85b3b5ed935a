//! Where `run` sends chunks: a collector over HTTP, Kafka, or both. Each has its own
//! spool and sending task; every chunk goes to each (flow-sink's fan-out), and a
//! stopping exporter flushes both at once, so a stop waits for the slower of the two,
//! not for their sum.

use async_trait::async_trait;
use flow_batch::{Chunk, wire::BatchId};
use flow_sink::{Accepted, CollectorSink, FlowSink, KafkaSink, SinkError};

/// The sinks of a `run` that sends chunks: at least one of the two.
pub struct Outputs {
    collector: Option<CollectorSink>,
    kafka: Option<KafkaSink>,
}

impl Outputs {
    /// `collector`, `kafka` or both; `None` when both are `None`.
    pub fn new(collector: Option<CollectorSink>, kafka: Option<KafkaSink>) -> Option<Outputs> {
        (collector.is_some() || kafka.is_some()).then_some(Outputs { collector, kafka })
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
        match self.single() {
            Some(sink) => sink.accept(chunk, id).await,
            None => self.members().accept(chunk, id).await,
        }
    }

    async fn replay(&self, chunk: &Chunk, id: &BatchId) -> Result<Accepted, SinkError> {
        match self.single() {
            Some(sink) => sink.replay(chunk, id).await,
            None => self.members().replay(chunk, id).await,
        }
    }

    fn take_settled(&self) -> Vec<BatchId> {
        self.members().take_settled()
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
