//! Starting, running and stopping the collector's Kafka parts (`crate::kafka`): at
//! start the topics are checked (a clear error for an unreachable broker, a missing
//! topic, a refused authorization), the output created and the heartbeat topic read
//! back into the attributor before the ledger is replayed; once serving, the
//! heartbeat reader and the input consumer run on threads of their own and the
//! ticker publishes heartbeats every second; at shutdown the input stops reading
//! before the drain and commits after it. Without the `kafka` feature every type here
//! is empty and nothing happens.

use crate::{CollectorError, CollectorOptions, attribution::Attributor, output::FlowOutput};

#[cfg(feature = "kafka")]
pub(crate) use enabled::{KafkaRuntime, KafkaStart};

#[cfg(not(feature = "kafka"))]
pub(crate) use disabled::{KafkaRuntime, KafkaStart};

/// Checks the topics and creates the producers, if Kafka is configured (blocking).
pub(crate) fn prepare(options: &CollectorOptions) -> Result<Option<KafkaStart>, CollectorError> {
    KafkaStart::prepare(options)
}

/// The output to use: Kafka's, if an output topic is configured, else `output`.
pub(crate) fn output(
    prepared: Option<KafkaStart>,
    output: Option<Box<dyn FlowOutput>>,
) -> (Option<Box<dyn FlowOutput>>, Option<KafkaStart>) {
    match prepared {
        Some(mut start) => {
            let kafka = start.take_output();
            (kafka.or(output), Some(start))
        }
        None => (output, None),
    }
}

/// Whether the pipeline's attributor extracts heartbeats to share (a heartbeat topic
/// is configured; with connection routing too: the intake sees whole chunks, so each
/// claim is published once per chunk, not once per node its records are routed to).
pub(crate) fn shares_heartbeats(prepared: &Option<KafkaStart>) -> bool {
    prepared.as_ref().is_some_and(KafkaStart::shares_heartbeats)
}

/// Whether the pipeline only routes records by connection (`--connection-topic`):
/// its attributor then decides nothing.
pub(crate) fn routes_connections(prepared: &Option<KafkaStart>) -> bool {
    prepared
        .as_ref()
        .is_some_and(KafkaStart::routes_connections)
}

/// Fills `attributor` from the heartbeat topic, if one
/// is configured (blocking).
pub(crate) fn rebuild(
    prepared: Option<KafkaStart>,
    attributor: &mut Attributor,
) -> Result<Option<KafkaStart>, CollectorError> {
    match prepared {
        Some(mut start) => {
            start.rebuild(attributor)?;
            Ok(Some(start))
        }
        None => Ok(None),
    }
}

#[cfg(feature = "kafka")]
mod enabled {
    use std::{
        sync::{
            Arc, Mutex,
            atomic::{AtomicBool, Ordering},
        },
        thread::JoinHandle,
        time::{Duration, Instant, SystemTime},
    };

    use flow_kafka::rdkafka::TopicPartitionList;

    use flow_kafka::KafkaError;

    use crate::{
        CollectorError, CollectorOptions, State,
        attribution::{AttributionStats, Attributor},
        connections::ConnectionStage,
        kafka::{
            ConnectionRoute, HEARTBEAT_PUBLISH_INTERVAL, HeartbeatPublisher, KafkaOptions,
            KafkaOutput, KafkaOutputConfig, KafkaStats, connections, follow,
            input::{self, InputStop},
            rebuild,
        },
        output::FlowOutput,
    };

    /// The attributing half of connection routing, before it runs.
    struct ConnectionsStart {
        topic: String,
        group: String,
        stage: Arc<Mutex<ConnectionStage>>,
        /// Its output (to the output topic), until the consumer takes it.
        output: Option<KafkaOutput>,
    }

    /// What start prepared, before the collector serves.
    pub(crate) struct KafkaStart {
        options: KafkaOptions,
        retention: Duration,
        stats: Arc<KafkaStats>,
        output: Option<Box<dyn FlowOutput>>,
        publisher: Option<HeartbeatPublisher>,
        /// Where the heartbeat reader goes on from, once rebuilt.
        heartbeat_from: Option<TopicPartitionList>,
        /// Connection routing, if configured.
        connections: Option<ConnectionsStart>,
    }

    /// The running Kafka parts.
    pub(crate) struct KafkaRuntime {
        pub(crate) stats: Arc<KafkaStats>,
        publisher: Mutex<Option<HeartbeatPublisher>>,
        last_publish: Mutex<Instant>,
        input_stop: Arc<InputStop>,
        follow_stop: Arc<AtomicBool>,
        threads: Mutex<Vec<JoinHandle<()>>>,
        /// The attributing half of connection routing: where heartbeats go and come
        /// from instead of the pipeline's attributor.
        stage: Option<Arc<Mutex<ConnectionStage>>>,
        connections_stop: Arc<InputStop>,
        connections_thread: Mutex<Option<JoinHandle<()>>>,
    }

    impl KafkaStart {
        /// Checks every configured topic and creates the producers.
        pub(crate) fn prepare(
            options: &CollectorOptions,
        ) -> Result<Option<KafkaStart>, CollectorError> {
            let Some(kafka) = &options.kafka else {
                return Ok(None);
            };
            let stats = Arc::new(KafkaStats::default());
            let check = |what: &'static str, topic: &str| {
                flow_kafka::check_topic(&kafka.settings, topic, kafka.check_timeout)
                    .map_err(|source| CollectorError::Kafka { what, source })
            };
            let kafka_error =
                |what: &'static str| move |source| CollectorError::Kafka { what, source };
            let route = match &kafka.connection_topic {
                Some(topic) => {
                    if kafka.output_topic.is_none() || kafka.heartbeat_topic.is_none() {
                        return Err(CollectorError::Kafka {
                            what: "connection topic",
                            source: KafkaError::InvalidSetting {
                                key: "connection-topic",
                                value: topic.clone(),
                                reason: "routing records by connection needs an output topic \
                                         (--output-topic) and a heartbeat topic \
                                         (--heartbeat-topic)"
                                    .into(),
                            },
                        });
                    }
                    let info = check("connection topic", topic)?;
                    Some(ConnectionRoute {
                        topic: topic.clone(),
                        partitions: info.partitions.max(1),
                    })
                }
                None => None,
            };
            let mut connections = None;
            let output = match &kafka.output_topic {
                Some(topic) => {
                    check("output topic", topic)?;
                    let config = KafkaOutputConfig::new(kafka.settings.clone(), topic.clone());
                    if let Some(route) = &route {
                        // The attributing half writes flows; the intake routes records
                        // (and writes the windows' completeness records).
                        let attributing = KafkaOutput::new(config.clone(), Arc::clone(&stats))
                            .map_err(kafka_error("output topic"))?;
                        // Its claims are published by the intake; it applies every
                        // node's heartbeats, this node's intake's included.
                        let mut attribution = options.attribution.clone();
                        attribution.share_heartbeats = false;
                        attribution.route_only = false;
                        connections = Some(ConnectionsStart {
                            topic: route.topic.clone(),
                            group: kafka.connection_group(),
                            stage: Arc::new(Mutex::new(ConnectionStage::new(Attributor::new(
                                attribution,
                            )))),
                            output: Some(attributing),
                        });
                    }
                    let config = match &route {
                        Some(route) => config.with_route(route.clone()),
                        None => config,
                    };
                    let output = KafkaOutput::new(config, Arc::clone(&stats))
                        .map_err(kafka_error("output topic"))?;
                    Some(Box::new(output) as Box<dyn FlowOutput>)
                }
                None => None,
            };
            if let Some(topic) = &kafka.input_topic {
                check("input topic", topic)?;
            }
            let publisher = match &kafka.heartbeat_topic {
                Some(topic) => {
                    check("heartbeat topic", topic)?;
                    Some(
                        HeartbeatPublisher::new(
                            &kafka.settings,
                            topic,
                            &kafka.node_id,
                            Arc::clone(&stats),
                        )
                        .map_err(kafka_error("heartbeat topic"))?,
                    )
                }
                None => None,
            };
            Ok(Some(KafkaStart {
                options: kafka.clone(),
                retention: options.attribution.retention,
                stats,
                output,
                publisher,
                heartbeat_from: None,
                connections,
            }))
        }

        /// Whether a heartbeat topic is configured.
        pub(crate) fn shares_heartbeats(&self) -> bool {
            self.options.heartbeat_topic.is_some()
        }

        /// Whether the pipeline only routes records by connection.
        pub(crate) fn routes_connections(&self) -> bool {
            self.connections.is_some()
        }

        /// The Kafka output, once.
        pub(crate) fn take_output(&mut self) -> Option<Box<dyn FlowOutput>> {
            self.output.take()
        }

        /// Reads the heartbeat topic back into `attributor`.
        pub(crate) fn rebuild(
            &mut self,
            attributor: &mut Attributor,
        ) -> Result<(), CollectorError> {
            let Some(topic) = self.options.heartbeat_topic.clone() else {
                return Ok(());
            };
            tracing::info!(topic = %topic, since = %humantime::format_duration(self.retention),
                "rebuilding the ownership map from the heartbeat topic");
            let (report, from) = rebuild(
                &self.options.settings,
                &topic,
                self.retention,
                self.options.rebuild_timeout,
                &self.stats,
                |batch| match &self.connections {
                    Some(c) => c
                        .stage
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .attributor()
                        .restore_heartbeats(&batch, SystemTime::now()),
                    None => attributor.restore_heartbeats(&batch, SystemTime::now()),
                },
            )
            .map_err(|source| CollectorError::Kafka {
                what: "heartbeat topic",
                source,
            })?;
            tracing::info!(messages = report.messages, applied = report.applied,
                undecodable = report.undecodable, took = ?report.took,
                "ownership map rebuilt from the heartbeat topic");
            self.heartbeat_from = Some(from);
            Ok(())
        }

        /// The runtime the collector's state keeps (the publisher moves into it).
        pub(crate) fn runtime(&mut self) -> KafkaRuntime {
            KafkaRuntime {
                stats: Arc::clone(&self.stats),
                publisher: Mutex::new(self.publisher.take()),
                last_publish: Mutex::new(Instant::now()),
                input_stop: Arc::new(InputStop::default()),
                follow_stop: Arc::new(AtomicBool::new(false)),
                threads: Mutex::new(Vec::new()),
                stage: self.connections.as_ref().map(|c| Arc::clone(&c.stage)),
                connections_stop: Arc::new(InputStop::default()),
                connections_thread: Mutex::new(None),
            }
        }

        /// Starts the heartbeat reader and the input consumer.
        pub(crate) fn run(mut self, state: &Arc<State>) -> Result<(), CollectorError> {
            let Some(runtime) = &state.kafka else {
                return Ok(());
            };
            let mut threads = Vec::new();
            if let Some(c) = self.connections.as_mut()
                && let Some(output) = c.output.take()
            {
                let handle = connections::spawn(
                    &self.options.settings,
                    &c.topic,
                    &c.group,
                    Arc::clone(&c.stage),
                    output,
                    Arc::clone(&state.graph),
                    Arc::clone(&self.stats),
                    Arc::clone(&runtime.connections_stop),
                )
                .map_err(|source| CollectorError::Kafka {
                    what: "connection topic",
                    source,
                })?;
                tracing::info!(topic = %c.topic, group = %c.group,
                    "attributing the records of this node's connection-topic partitions");
                *runtime
                    .connections_thread
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(handle);
            }
            if let (Some(topic), Some(from)) = (&self.options.heartbeat_topic, self.heartbeat_from)
            {
                let target = Arc::downgrade(state);
                let stage = runtime.stage.clone();
                // With connection routing the heartbeats are applied to the
                // attributing half, which has not seen its own intake's claims.
                let skip = stage.is_none().then(|| self.options.node_id.clone());
                let handle = follow(
                    self.options.settings.clone(),
                    topic.clone(),
                    skip,
                    from,
                    Arc::clone(&self.stats),
                    Arc::clone(&runtime.follow_stop),
                    move |batch| {
                        if let Some(stage) = &stage {
                            stage
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .attributor()
                                .apply_heartbeats(&batch, SystemTime::now());
                        } else if let Some(state) = target.upgrade() {
                            let mut pipeline =
                                state.pipeline.lock().unwrap_or_else(|p| p.into_inner());
                            pipeline.apply_heartbeats(&batch, SystemTime::now(), &state.stats);
                        }
                    },
                )
                .map_err(|source| CollectorError::Kafka {
                    what: "heartbeat topic",
                    source,
                })?;
                threads.push(handle);
            }
            if let Some(topic) = &self.options.input_topic {
                let handle = input::spawn(
                    &self.options.settings,
                    topic,
                    &self.options.group,
                    Arc::clone(state),
                    Arc::clone(&self.stats),
                    Arc::clone(&runtime.input_stop),
                )
                .map_err(|source| CollectorError::Kafka {
                    what: "input topic",
                    source,
                })?;
                tracing::info!(topic = %topic, group = %self.options.group, "consuming chunks");
                threads.push(handle);
            }
            runtime
                .threads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(threads);
            Ok(())
        }
    }

    impl KafkaRuntime {
        /// Publishes the heartbeats extracted since the last time, once a second
        /// (blocking).
        pub(crate) fn publish_due(&self, state: &State) {
            {
                let mut last = self.last_publish.lock().unwrap_or_else(|p| p.into_inner());
                if last.elapsed() < HEARTBEAT_PUBLISH_INTERVAL {
                    return;
                }
                *last = Instant::now();
            }
            self.publish_now(state);
        }

        fn publish_now(&self, state: &State) {
            let mut publisher = self.publisher.lock().unwrap_or_else(|p| p.into_inner());
            let Some(publisher) = publisher.as_mut() else {
                return;
            };
            let heartbeats = state
                .pipeline
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take_heartbeats();
            if !heartbeats.is_empty() {
                publisher.publish(&heartbeats);
            }
        }

        /// The attribution statistics of the attributing half of connection routing,
        /// if this node routes by connection.
        pub(crate) fn attribution_stats(&self) -> Option<AttributionStats> {
            self.stage.as_ref().map(|stage| {
                stage
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .attributor()
                    .stats()
            })
        }

        /// Tells every thread to stop, without waiting (a collector dropped without
        /// its shutdown).
        pub(crate) fn signal_stop(&self) {
            self.connections_stop.reading.store(true, Ordering::Relaxed);
            self.input_stop.reading.store(true, Ordering::Relaxed);
            self.input_stop.finished.store(true, Ordering::Relaxed);
            self.follow_stop.store(true, Ordering::Relaxed);
        }

        /// Stops taking input messages (before the drain).
        pub(crate) fn stop_reading(&self) {
            self.input_stop.reading.store(true, Ordering::Relaxed);
        }

        /// After the drain: publishes the last heartbeats, commits the input's last
        /// offsets, stops the threads and flushes the producers (blocking).
        pub(crate) fn finish(&self, state: &State) {
            // The attributing half stops first (what it holds is read again at the
            // next start).
            self.connections_stop.reading.store(true, Ordering::Relaxed);
            let connections = self
                .connections_thread
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(thread) = connections
                && thread.join().is_err()
            {
                tracing::error!("the connection-topic thread panicked");
            }
            self.publish_now(state);
            self.input_stop.finished.store(true, Ordering::Relaxed);
            self.follow_stop.store(true, Ordering::Relaxed);
            let threads: Vec<JoinHandle<()>> = self
                .threads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..)
                .collect();
            for thread in threads {
                if thread.join().is_err() {
                    tracing::error!("a Kafka thread panicked");
                }
            }
            if let Some(publisher) = self
                .publisher
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
            {
                drop(publisher);
            }
        }
    }
}

#[cfg(not(feature = "kafka"))]
mod disabled {
    use std::sync::Arc;

    use crate::{
        CollectorError, CollectorOptions, State, attribution::Attributor, output::FlowOutput,
    };

    /// Nothing (built without Kafka).
    pub(crate) enum KafkaStart {}

    /// Nothing (built without Kafka).
    pub(crate) enum KafkaRuntime {}

    impl KafkaStart {
        pub(crate) fn shares_heartbeats(&self) -> bool {
            match *self {}
        }
        pub(crate) fn routes_connections(&self) -> bool {
            match *self {}
        }
        pub(crate) fn prepare(_: &CollectorOptions) -> Result<Option<KafkaStart>, CollectorError> {
            Ok(None)
        }
        pub(crate) fn take_output(&mut self) -> Option<Box<dyn FlowOutput>> {
            match *self {}
        }
        pub(crate) fn rebuild(&mut self, _: &mut Attributor) -> Result<(), CollectorError> {
            match *self {}
        }
        pub(crate) fn runtime(&mut self) -> KafkaRuntime {
            match *self {}
        }
        pub(crate) fn run(self, _: &Arc<State>) -> Result<(), CollectorError> {
            match self {}
        }
    }

    impl KafkaRuntime {
        pub(crate) fn publish_due(&self, _: &State) {
            match *self {}
        }
        pub(crate) fn attribution_stats(&self) -> Option<crate::attribution::AttributionStats> {
            match *self {}
        }
        pub(crate) fn stop_reading(&self) {
            match *self {}
        }
        pub(crate) fn signal_stop(&self) {
            match *self {}
        }
        pub(crate) fn finish(&self, _: &State) {
            match *self {}
        }
    }
}
