use flow_sink::{
    CollectorCounters, IpfixCounters, KafkaCounters, OtlpCounters, SpoolCounters,
    kafka_sink::ErrorKind,
};
use flowexporter::JournalCounters;

use super::{Metrics, Snapshot, families};

/// The exposition of the families read from `s` alone.
fn render(s: &Snapshot) -> String {
    let metrics = Metrics::default();
    metrics.update(s);
    metrics.state.lock().expect("state").encode()
}

#[test]
fn renders_families_once_with_labels() {
    let mut s = Snapshot::default();
    s.kernel.lost_ring_full = 3;
    s.reader.records_read = 10;
    s.identity.ip_map = 7;
    s.reloads.failed = 2;
    let text = render(&s);
    assert!(
        text.contains("flowexporter_records_captured_total 10\n"),
        "{text}"
    );
    assert!(
        text.contains(
            r#"flowexporter_records_dropped_total{reason="ring_full",intentional="false"} 3"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"flowexporter_identity_records_total{source="ip_map"} 7"#));
    assert!(
        text.contains(r#"flowexporter_identity_records_total{source="none",reason="no_match"} 0"#)
    );
    assert!(text.contains("flowexporter_config_reloads_total{result=\"applied\"} 0\n"));
    assert!(text.contains("flowexporter_config_reloads_total{result=\"failed\"} 2\n"));
    // OpenMetrics: the family is named without `_total`, once.
    assert_eq!(
        text.matches("# TYPE flowexporter_records_dropped counter\n")
            .count(),
        1,
        "{text}"
    );
    assert!(text.contains(
        "# HELP flowexporter_records_dropped Records dropped, by reason and whether the drop was a configured choice.\n"
    ));
    assert!(text.ends_with("# EOF\n"), "{text}");
    // Without a collector, no sink, spool, batch or journal families.
    for absent in [
        "flowexporter_chunks_sent",
        "flowexporter_spool_",
        "flowexporter_batch_",
        "flowexporter_journal_",
        "disk_full",
    ] {
        assert!(!text.contains(absent), "{absent} in:\n{text}");
    }
}

#[test]
fn every_drop_and_degradation_of_the_state_directories_is_exposed() {
    let mut spool = SpoolCounters::default();
    spool.records_dropped_no_space = 5;
    spool.chunks_dropped_no_space = 1;
    spool.unreadable_files = 2;
    spool.foreign_entries = 3;
    let mut sink = CollectorCounters::default();
    sink.records_dropped_memory = 7;
    sink.memory_chunks = 4;
    sink.chunks_respooled = 14;
    sink.spool = Some(spool);
    let mut journal = JournalCounters::default();
    journal.degraded = 1;
    journal.segments = 12;
    journal.open_chunks = 13;
    journal.records_not_journaled = 9;
    journal.entries_set_aside = 6;
    let mut pipeline = flowexporter::PipelineCounters::default();
    pipeline.delivery_errors = 8;
    pipeline.records_dropped = 11;
    pipeline.records_dropped_backlog_full = 15;
    pipeline.delivery_retries = 16;
    pipeline.chunks_waiting = 3;
    let s = Snapshot {
        sink: Some(sink),
        journal: Some(journal),
        pipeline,
        ..Snapshot::default()
    };
    let text = render(&s);
    for line in [
        r#"flowexporter_records_dropped_total{reason="disk_full",intentional="true"} 5"#,
        r#"flowexporter_records_dropped_total{reason="memory_queue_full",intentional="true"} 7"#,
        "flowexporter_spool_disk_full_dropped_chunks_total 1",
        "flowexporter_spool_unreadable_files_total 2",
        "flowexporter_spool_foreign_entries_total 3",
        "flowexporter_sink_memory_chunks 4",
        "flowexporter_sink_memory_respooled_chunks_total 14",
        "flowexporter_journal_degraded 1",
        "flowexporter_journal_segments 12",
        "flowexporter_journal_open_chunks 13",
        "flowexporter_journal_records_not_journaled_total 9",
        "flowexporter_journal_set_aside_entries_total 6",
        r#"flowexporter_pipeline_errors_total{stage="delivery"} 8"#,
        r#"flowexporter_records_dropped_total{reason="delivery_failed",intentional="false"} 11"#,
        r#"flowexporter_records_dropped_total{reason="backlog_full",intentional="true"} 15"#,
        "flowexporter_pipeline_delivery_retries_total 16",
        "flowexporter_pipeline_chunks_waiting 3",
        "# TYPE flowexporter_spool_bytes gauge",
    ] {
        assert!(
            text.contains(&format!("{line}\n")),
            "{line} missing in:\n{text}"
        );
    }
}

#[test]
fn the_kafka_sink_has_its_families_and_drops_add_up_over_both_sinks() {
    let mut collector_spool = SpoolCounters::default();
    collector_spool.files = 2;
    collector_spool.records_dropped_full = 10;
    let mut collector = CollectorCounters::default();
    collector.records_dropped_memory = 1;
    collector.spool = Some(collector_spool);
    let mut kafka_spool = SpoolCounters::default();
    kafka_spool.files = 3;
    kafka_spool.bytes = 300;
    kafka_spool.records_dropped_full = 20;
    let mut kafka = KafkaCounters::default();
    kafka.messages_produced = 7;
    kafka.records_produced = 70;
    kafka.bytes_produced = 7_000;
    kafka.produce_attempts = 12;
    kafka.retries = 5;
    kafka.produce_errors_by_kind[ErrorKind::Unreachable.index()] = 4;
    kafka.produce_errors_by_kind[ErrorKind::MissingTopic.index()] = 1;
    kafka.chunks_rejected = 1;
    kafka.records_rejected = 30;
    kafka.records_dropped_memory = 2;
    kafka.memory_chunks = 6;
    kafka.spool = Some(kafka_spool);
    let both = Snapshot {
        sink: Some(collector),
        kafka: Some(kafka),
        ..Snapshot::default()
    };
    let text = render(&both);
    for line in [
        "flowexporter_kafka_messages_produced_total 7",
        "flowexporter_kafka_produced_records_total 70",
        "flowexporter_kafka_produced_bytes_total 7000",
        "flowexporter_kafka_produce_attempts_total 12",
        "flowexporter_kafka_produce_retries_total 5",
        r#"flowexporter_kafka_produce_errors_total{kind="unreachable"} 4"#,
        r#"flowexporter_kafka_produce_errors_total{kind="missing_topic"} 1"#,
        r#"flowexporter_kafka_produce_errors_total{kind="authorization"} 0"#,
        "flowexporter_kafka_rejected_chunks_total 1",
        "flowexporter_kafka_memory_chunks 6",
        "flowexporter_kafka_spool_files 3",
        "flowexporter_kafka_spool_bytes 300",
        // Every sink's spool, and every sink's drops, by reason.
        "flowexporter_spool_files 5",
        r#"flowexporter_records_dropped_total{reason="spool_full",intentional="true"} 30"#,
        r#"flowexporter_records_dropped_total{reason="memory_queue_full",intentional="true"} 3"#,
        r#"flowexporter_records_dropped_total{reason="rejected_by_kafka",intentional="false"} 30"#,
    ] {
        assert!(
            text.contains(&format!("{line}\n")),
            "{line} missing in:\n{text}"
        );
    }
    // Kafka alone: no collector families, the spool ones from Kafka's spool.
    let alone = Snapshot {
        kafka: both.kafka,
        ..Snapshot::default()
    };
    let text = render(&alone);
    assert!(text.contains("flowexporter_spool_files 3\n"), "{text}");
    assert!(!text.contains("flowexporter_chunks_sent"), "{text}");
    assert!(!text.contains("rejected_by_collector"), "{text}");
}

#[test]
fn the_otlp_and_ipfix_sinks_have_their_families_and_join_the_shared_ones() {
    let mut otlp_spool = SpoolCounters::default();
    otlp_spool.files = 4;
    otlp_spool.records_dropped_full = 5;
    let mut otlp = OtlpCounters::default();
    otlp.requests = 9;
    otlp.chunks_sent = 8;
    otlp.log_records_sent = 80;
    otlp.bytes_sent = 9_600;
    otlp.retries = 1;
    otlp.transport_errors = 1;
    otlp.retriable_statuses = 2;
    otlp.chunks_rejected = 1;
    otlp.records_rejected = 7;
    otlp.log_records_rejected_by_receiver = 3;
    otlp.requests_sent = 8;
    otlp.requests_split_on_413 = 1;
    otlp.log_records_too_large = 2;
    otlp.records_dropped_memory = 4;
    otlp.spool = Some(otlp_spool);
    let mut ipfix_spool = SpoolCounters::default();
    ipfix_spool.files = 1;
    ipfix_spool.records_dropped_full = 6;
    let mut ipfix = IpfixCounters::default();
    ipfix.records_exported = 50;
    ipfix.chunks_exported = 5;
    ipfix.messages_sent = 12;
    ipfix.message_bytes_sent = 12_000;
    ipfix.template_messages_sent = 2;
    ipfix.sessions_opened = 1;
    ipfix.retries = 3;
    ipfix.failed_attempts = 3;
    ipfix.timeouts = 1;
    ipfix.chunks_rejected = 1;
    ipfix.records_rejected = 11;
    ipfix.records_dropped_memory = 2;
    ipfix.spool = Some(ipfix_spool);
    let text = render(&Snapshot {
        otlp: Some(otlp),
        ipfix: Some(ipfix),
        ..Snapshot::default()
    });
    for line in [
        "flowexporter_otlp_requests_total 9",
        "flowexporter_otlp_sent_chunks_total 8",
        "flowexporter_otlp_sent_log_records_total 80",
        "flowexporter_otlp_sent_bytes_total 9600",
        "flowexporter_otlp_retries_total 1",
        r#"flowexporter_otlp_errors_total{kind="transport"} 1"#,
        r#"flowexporter_otlp_errors_total{kind="retriable_status"} 2"#,
        "flowexporter_otlp_rejected_chunks_total 1",
        "flowexporter_otlp_receiver_rejected_log_records_total 3",
        "flowexporter_otlp_spool_files 4",
        "flowexporter_ipfix_exported_records_total 50",
        "flowexporter_ipfix_exported_chunks_total 5",
        "flowexporter_ipfix_messages_total 12",
        "flowexporter_ipfix_message_bytes_total 12000",
        "flowexporter_ipfix_template_messages_total 2",
        "flowexporter_ipfix_sessions_total 1",
        "flowexporter_ipfix_retries_total 3",
        r#"flowexporter_ipfix_failed_attempts_total{kind="timeout"} 1"#,
        r#"flowexporter_ipfix_failed_attempts_total{kind="other"} 2"#,
        "flowexporter_ipfix_rejected_chunks_total 1",
        "flowexporter_ipfix_spool_files 1",
        // The shared families sum over both.
        "flowexporter_spool_files 5",
        r#"flowexporter_records_dropped_total{reason="spool_full",intentional="true"} 11"#,
        r#"flowexporter_records_dropped_total{reason="memory_queue_full",intentional="true"} 6"#,
        r#"flowexporter_records_dropped_total{reason="rejected_by_otlp",intentional="false"} 7"#,
        r#"flowexporter_records_dropped_total{reason="rejected_by_otlp_receiver",intentional="false"} 3"#,
        r#"flowexporter_records_dropped_total{reason="too_large_for_otlp_receiver",intentional="false"} 2"#,
        "flowexporter_otlp_accepted_requests_total 8",
        "flowexporter_otlp_split_requests_total 1",
        r#"flowexporter_records_dropped_total{reason="rejected_by_ipfix",intentional="false"} 11"#,
    ] {
        assert!(
            text.contains(&format!("{line}\n")),
            "{line} missing in:\n{text}"
        );
    }
    assert!(!text.contains("rejected_by_kafka"), "{text}");
}

#[test]
fn counters_never_go_backwards_and_gauges_follow() {
    let metrics = Metrics::default();
    let mut s = Snapshot {
        journal: Some(JournalCounters::default()),
        ..Snapshot::default()
    };
    s.reader.records_read = 100;
    if let Some(j) = s.journal.as_mut() {
        j.segments = 5;
    }
    metrics.update(&s);
    // A component read as zero (or a smaller value) leaves the counter as shown.
    s.reader.records_read = 0;
    if let Some(j) = s.journal.as_mut() {
        j.segments = 2;
    }
    metrics.update(&s);
    let text = metrics.state.lock().expect("state").encode();
    assert!(
        text.contains("flowexporter_records_captured_total 100\n"),
        "{text}"
    );
    assert!(text.contains("flowexporter_journal_segments 2\n"), "{text}");
    s.reader.records_read = 130;
    metrics.update(&s);
    let text = metrics.state.lock().expect("state").encode();
    assert!(
        text.contains("flowexporter_records_captured_total 130\n"),
        "{text}"
    );
}

#[test]
fn the_table_keeps_the_naming_rules() {
    let mut seen = std::collections::HashSet::new();
    let kinds = families::SNAPSHOT
        .iter()
        .map(|f| (f.kind, f.name, f.help))
        .chain(families::SERVER.iter().map(|f| (f.kind, f.name, f.help)));
    for (kind, name, help) in kinds {
        assert!(seen.insert(name), "{name} declared twice");
        assert!(name.starts_with("flowexporter_"), "{name}");
        assert_eq!(
            name.ends_with("_total"),
            kind == families::Kind::Counter,
            "{name}"
        );
        assert!(help.ends_with('.'), "{name}: {help}");
    }
}

#[test]
fn the_endpoint_adds_its_own_connection_counters() {
    let metrics = Metrics::default();
    metrics.update(&Snapshot::default());
    let mut server = flow_http::ConnectionStats::default();
    server.accepted = 4;
    server.refused_over_cap = 2;
    server.timed_out = 1;
    server.open = 3;
    let text = metrics.encode(&server);
    for line in [
        r#"flowexporter_metrics_connections_total{result="refused_over_cap"} 2"#,
        "flowexporter_metrics_connections_timed_out_total 1",
        "flowexporter_metrics_connections_open 3",
        "flowexporter_records_captured_total 0",
    ] {
        assert!(text.contains(&format!("{line}\n")), "{line} in:\n{text}");
    }
    assert_eq!(text.matches("# EOF").count(), 1);
}
