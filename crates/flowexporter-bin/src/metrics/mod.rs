//! The Prometheus endpoint (`--metrics-addr`): what the exporter captured,
//! attributed, batched, sent (to a collector, produced to Kafka), spooled, and every
//! place a record was dropped, with the reason. Names follow `flowexporter_<name>_<unit>_total` for counters.
//!
//! The metrics are `prometheus-client` families in one registry, declared as a table
//! in [`families`]; the exposition is the crate's OpenMetrics text. The main loop hands
//! a [`Snapshot`] of every component's counters to [`Metrics::update`] on each timer
//! tick (every 200 ms); the server encodes the registry on each scrape, with its own
//! connection counters read at that moment.

mod families;
mod serve;

use std::sync::Mutex;

use flow_batch::BatchCounters;
use flow_capture::{CaptureCounters, ProgramStats, ReaderCounters};
use flow_http::ConnectionStats;
use flow_identity::IdentityCounters;
use flow_sink::{CollectorCounters, IpfixCounters, KafkaCounters, OtlpCounters};
use flowexporter::{JournalCounters, PipelineCounters};

pub use serve::serve;

use crate::reload::ReloadCounters;

/// Everything the endpoint reports, as read from the components.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The kernel program's counters.
    pub kernel: CaptureCounters,
    /// Its run statistics.
    pub program: ProgramStats,
    /// The reader's counters.
    pub reader: ReaderCounters,
    /// Identity outcomes.
    pub identity: IdentityCounters,
    /// The batcher (collector mode).
    pub batch: Option<BatchCounters>,
    /// The pipeline's own counters (records refused by the batcher, failures it
    /// survived, retries, records dropped).
    pub pipeline: PipelineCounters,
    /// The collector sink and its spool (with `--collector`).
    pub sink: Option<CollectorCounters>,
    /// The Kafka sink and its spool (with `--kafka-brokers`).
    pub kafka: Option<KafkaCounters>,
    /// The OTLP sink and its spool (with `--otlp-endpoint`).
    pub otlp: Option<OtlpCounters>,
    /// The IPFIX sink and its spool (with `--ipfix-collector`).
    pub ipfix: Option<IpfixCounters>,
    /// The record journal (collector mode).
    pub journal: Option<JournalCounters>,
    /// SIGHUP reloads of the configuration.
    pub reloads: ReloadCounters,
}

/// The exporter's metric families, shared between the main loop and the server.
#[derive(Debug)]
pub struct Metrics {
    state: Mutex<families::State>,
}

impl Default for Metrics {
    /// The families every exporter has, at zero until the first [`Metrics::update`]
    /// (a scrape that comes first still finds them).
    fn default() -> Metrics {
        let mut state = families::State::default();
        state.apply(families::SNAPSHOT, &Snapshot::default());
        Metrics {
            state: Mutex::new(state),
        }
    }
}

impl Metrics {
    /// Takes the values of `snapshot`. A family appears once one of its series has a
    /// value (the sink's, the spool's, the batcher's and the journal's only in
    /// collector mode). A counter never goes backwards: a smaller value than the one
    /// shown (a component read as zero) leaves it where it is.
    pub fn update(&self, snapshot: &Snapshot) {
        if let Ok(mut state) = self.state.lock() {
            state.apply(families::SNAPSHOT, snapshot);
        }
    }

    /// The OpenMetrics text of every family, with the endpoint's own connection
    /// counters `server` taken first.
    fn encode(&self, server: &ConnectionStats) -> String {
        match self.state.lock() {
            Ok(mut state) => {
                state.apply(families::SERVER, server);
                state.encode()
            }
            Err(_) => String::new(),
        }
    }
}

#[cfg(test)]
mod tests;
