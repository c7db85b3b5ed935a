//! Every metric family, declared once as a table: kind, exposed name, help, and for
//! each series its labels and where its value comes from. [`State`] registers a
//! family in the `prometheus-client` registry the first time one of its series has
//! a value, and moves the values in on every update.

use std::{collections::HashMap, sync::atomic::AtomicU64};

use flow_batch::BatchCounters;
use flow_http::ConnectionStats;
use flow_sink::{
    CollectorCounters, IpfixCounters, KafkaCounters, OtlpCounters, SpoolCounters,
    kafka_sink::ErrorKind,
};
use flowexporter::JournalCounters;
use prometheus_client::{
    encoding::text,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::Snapshot;

/// A series' labels, as `(name, value)` pairs.
type Labels = Vec<(&'static str, &'static str)>;

/// Counter or gauge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// Only goes up; exposed as `<name>_total`.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// One metric family of the table.
pub(super) struct FamilyDef<S: 'static> {
    pub(super) kind: Kind,
    /// The name of the samples (a counter's ends in `_total`).
    pub(super) name: &'static str,
    /// The HELP text, a sentence.
    pub(super) help: &'static str,
    pub(super) series: &'static [SeriesDef<S>],
}

/// One series of a family: its labels and its value in a source, if there is one.
pub(super) struct SeriesDef<S> {
    pub(super) labels: &'static [(&'static str, &'static str)],
    pub(super) read: fn(&S) -> Option<u64>,
}

/// `kind "name" "help" { [label = "value", ...] => |source| value, ... }`, as a slice
/// of [`FamilyDef`]s.
macro_rules! families {
    ($source:ty; $($kind:ident $name:literal $help:literal {
        $([$($key:ident = $value:literal),*] => $read:expr),+ $(,)?
    })*) => {
        &[$(FamilyDef::<$source> {
            kind: Kind::$kind,
            name: $name,
            help: $help,
            series: &[$(SeriesDef {
                labels: &[$((stringify!($key), $value)),*],
                read: $read,
            }),+],
        }),*]
    };
}

fn batch(s: &Snapshot) -> Option<&BatchCounters> {
    s.batch.as_ref()
}
fn sink(s: &Snapshot) -> Option<&CollectorCounters> {
    s.sink.as_ref()
}
fn kafka(s: &Snapshot) -> Option<&KafkaCounters> {
    s.kafka.as_ref()
}
fn kafka_spool(s: &Snapshot) -> Option<&SpoolCounters> {
    s.kafka.as_ref().and_then(|k| k.spool.as_ref())
}
fn otlp(s: &Snapshot) -> Option<&OtlpCounters> {
    s.otlp.as_ref()
}
fn otlp_spool(s: &Snapshot) -> Option<&SpoolCounters> {
    s.otlp.as_ref().and_then(|o| o.spool.as_ref())
}
fn ipfix(s: &Snapshot) -> Option<&IpfixCounters> {
    s.ipfix.as_ref()
}
fn ipfix_spool(s: &Snapshot) -> Option<&SpoolCounters> {
    s.ipfix.as_ref().and_then(|i| i.spool.as_ref())
}

/// What every sink counts alike (each runs the collector sink's spool and memory
/// queue).
struct Shared {
    records_dropped_memory: u64,
    records_lost_spool_reported: u64,
    records_lost_spool_unreported: u64,
    records_lost_spool_forgotten: u64,
}

/// [`Shared`] from each kind of sink's counters (their fields have the same names).
macro_rules! shared {
    ($c:expr) => {
        Shared {
            records_dropped_memory: $c.records_dropped_memory,
            records_lost_spool_reported: $c.records_lost_spool_reported,
            records_lost_spool_unreported: $c.records_lost_spool_unreported,
            records_lost_spool_forgotten: $c.records_lost_spool_forgotten,
        }
    };
}

/// Every sink's [`Shared`] counters.
fn sinks(s: &Snapshot) -> Vec<Shared> {
    let mut out = Vec::with_capacity(4);
    out.extend(s.sink.as_ref().map(|c| shared!(c)));
    out.extend(s.kafka.as_ref().map(|k| shared!(k)));
    out.extend(s.otlp.as_ref().map(|o| shared!(o)));
    out.extend(s.ipfix.as_ref().map(|i| shared!(i)));
    out
}

/// `read` summed over every sink's spool (the collector's, Kafka's, OTLP's, IPFIX's);
/// `None` without a spool.
fn spools(s: &Snapshot, read: fn(&SpoolCounters) -> u64) -> Option<u64> {
    let collector = s.sink.as_ref().and_then(|c| c.spool.as_ref());
    [collector, kafka_spool(s), otlp_spool(s), ipfix_spool(s)]
        .into_iter()
        .flatten()
        .map(read)
        .reduce(|a, b| a.saturating_add(b))
}
/// `read` summed over every sink; `None` without one.
fn all_sinks(s: &Snapshot, read: fn(&Shared) -> u64) -> Option<u64> {
    sinks(s).iter().map(read).reduce(|a, b| a.saturating_add(b))
}
fn journal(s: &Snapshot) -> Option<&JournalCounters> {
    s.journal.as_ref()
}

/// The families read from a [`Snapshot`].
pub(super) static SNAPSHOT: &[FamilyDef<Snapshot>] = families! { Snapshot;
    Counter "flowexporter_records_captured_total" "Flow records read from the kernel." {
        [] => |s| Some(s.reader.records_read),
    }
    Counter "flowexporter_kernel_records_submitted_total" "Flow records the kernel program wrote to the ring buffer." {
        [] => |s| Some(s.kernel.records_submitted),
    }
    Counter "flowexporter_records_dropped_total" "Records dropped, by reason and whether the drop was a configured choice." {
        [reason = "ring_full", intentional = "false"] => |s| Some(s.kernel.lost_ring_full),
        [reason = "malformed", intentional = "false"] => |s| Some(s.reader.malformed),
        [reason = "batch_refused", intentional = "false"] => |s| Some(s.pipeline.batch_refused),
        [reason = "delivery_failed", intentional = "false"] => |s| Some(s.pipeline.records_dropped),
        [reason = "backlog_full", intentional = "true"] => |s| Some(s.pipeline.records_dropped_backlog_full),
        [reason = "unsent_at_stop", intentional = "false"] => |s| Some(s.pipeline.records_unsent_at_stop),
        [reason = "rejected_by_collector", intentional = "false"] => |s| sink(s).map(|c| c.records_rejected),
        [reason = "rejected_by_kafka", intentional = "false"] => |s| kafka(s).map(|k| k.records_rejected),
        [reason = "rejected_by_otlp", intentional = "false"] => |s| otlp(s).map(|o| o.records_rejected),
        [reason = "rejected_by_otlp_receiver", intentional = "false"] => |s| otlp(s).map(|o| o.log_records_rejected_by_receiver),
        [reason = "too_large_for_otlp_receiver", intentional = "false"] => |s| otlp(s).map(|o| o.log_records_too_large),
        [reason = "rejected_by_ipfix", intentional = "false"] => |s| ipfix(s).map(|i| i.records_rejected),
        [reason = "memory_queue_full", intentional = "true"] => |s| all_sinks(s, |c| c.records_dropped_memory),
        [reason = "spool_full", intentional = "true"] => |s| spools(s, |p| p.records_dropped_full),
        [reason = "disk_full", intentional = "true"] => |s| spools(s, |p| p.records_dropped_no_space),
    }
    Counter "flowexporter_kernel_start_not_recorded_total" "Socket opens the kernel could not record (their records have an unknown start)." {
        [] => |s| Some(s.kernel.start_not_recorded),
    }
    Counter "flowexporter_kernel_read_failed_total" "Records emitted with a failed kernel read (flagged incomplete)." {
        [] => |s| Some(s.kernel.read_failed),
    }
    Counter "flowexporter_kernel_recursion_misses_total" "Program invocations the kernel skipped (recursion on one CPU), either attachment." {
        [] => |s| Some(s.program.recursion_misses),
    }
    Counter "flowexporter_kernel_recovered_by_backup_total" "Socket events the primary attachment missed and the backup handled." {
        [] => |s| Some(s.kernel.recovered_by_backup),
    }
    Counter "flowexporter_bpf_runs_total" "Program invocations (kept only while BPF run-time statistics are enabled)." {
        [] => |s| Some(s.program.run_count),
    }
    Counter "flowexporter_bpf_run_time_nanoseconds_total" "Program run time (kept only while BPF run-time statistics are enabled)." {
        [] => |s| Some(u64::try_from(s.program.run_time.as_nanos()).unwrap_or(u64::MAX)),
    }
    Counter "flowexporter_identity_records_total" "Records by identity source, and unattributed ones by reason." {
        [source = "connect_map"] => |s| Some(s.identity.connect_map),
        [source = "ip_map"] => |s| Some(s.identity.ip_map),
        [source = "certificate"] => |s| Some(s.identity.certificate),
        [source = "none", reason = "no_match"] => |s| Some(s.identity.unattributed_no_match),
        [source = "none", reason = "invalid_map_value"] => |s| Some(s.identity.unattributed_invalid_map_value),
        [source = "none", reason = "certificate"] => |s| Some(s.identity.unattributed_certificate),
    }
    Counter "flowexporter_certificate_errors_total" "Times the identity certificate could not be used." {
        [] => |s| Some(s.identity.certificate_errors),
    }
    Counter "flowexporter_certificate_reloads_total" "Times a replaced identity certificate was picked up." {
        [] => |s| Some(s.identity.certificate_reloads),
    }
    Counter "flowexporter_config_reloads_total" "SIGHUP reloads of the configuration: applied, or failed (the configuration in force kept)." {
        [result = "applied"] => |s| Some(s.reloads.applied),
        [result = "failed"] => |s| Some(s.reloads.failed),
    }
    Counter "flowexporter_batch_records_total" "Records through the batcher: in, out, and those placed late or from the future." {
        [stage = "in"] => |s| batch(s).map(|b| b.records_in),
        [stage = "out"] => |s| batch(s).map(|b| b.records_out),
        [stage = "late"] => |s| batch(s).map(|b| b.records_late),
        [stage = "future"] => |s| batch(s).map(|b| b.records_future),
    }
    Counter "flowexporter_batch_chunks_total" "Chunks produced." {
        [] => |s| batch(s).map(|b| b.chunks_out),
    }
    Gauge "flowexporter_batch_open_windows" "Windows open now." {
        [] => |s| batch(s).map(|b| b.open_windows),
    }
    Gauge "flowexporter_batch_buffered_records" "Records waiting in open windows." {
        [] => |s| batch(s).map(|b| b.buffered_records),
    }
    Counter "flowexporter_chunks_sent_total" "Chunks the collector accepted." {
        [] => |s| sink(s).map(|c| c.chunks_sent),
    }
    Counter "flowexporter_records_sent_total" "Records the collector accepted." {
        [] => |s| sink(s).map(|c| c.records_sent),
    }
    Counter "flowexporter_sent_bytes_total" "Bytes of chunks the collector accepted." {
        [] => |s| sink(s).map(|c| c.bytes_sent),
    }
    Counter "flowexporter_sink_requests_total" "Requests to the collector." {
        [] => |s| sink(s).map(|c| c.requests),
    }
    Counter "flowexporter_sink_retries_total" "Retried requests." {
        [] => |s| sink(s).map(|c| c.retries),
    }
    Counter "flowexporter_sink_failures_total" "Failed requests, by kind." {
        [kind = "transport"] => |s| sink(s).map(|c| c.transport_errors),
        [kind = "retriable_status"] => |s| sink(s).map(|c| c.retriable_statuses),
        [kind = "rejected"] => |s| sink(s).map(|c| c.chunks_rejected),
    }
    Counter "flowexporter_sink_unspooled_chunks_total" "Chunks the spool could not take (disk full or failing), kept in memory instead." {
        [] => |s| sink(s).map(|c| c.chunks_unspooled),
    }
    Counter "flowexporter_sink_memory_respooled_chunks_total" "Chunks kept in memory that were moved to the spool once it took chunks again." {
        [] => |s| sink(s).map(|c| c.chunks_respooled),
    }
    Counter "flowexporter_sink_memory_dropped_chunks_total" "Chunks dropped from the in-memory queue (full) while the spool could not take them." {
        [] => |s| sink(s).map(|c| c.chunks_dropped_memory),
    }
    Gauge "flowexporter_sink_memory_chunks" "Chunks held in memory now, waiting to be sent." {
        [] => |s| sink(s).map(|c| c.memory_chunks),
    }
    Gauge "flowexporter_sink_memory_bytes" "Bytes of chunks held in memory now." {
        [] => |s| sink(s).map(|c| c.memory_bytes),
    }
    Counter "flowexporter_kafka_messages_produced_total" "Chunk messages the Kafka brokers acknowledged (acks=all)." {
        [] => |s| kafka(s).map(|k| k.messages_produced),
    }
    Counter "flowexporter_kafka_produced_records_total" "Records in the chunk messages the Kafka brokers acknowledged." {
        [] => |s| kafka(s).map(|k| k.records_produced),
    }
    Counter "flowexporter_kafka_produced_bytes_total" "Bytes of the chunk messages the Kafka brokers acknowledged (the frames)." {
        [] => |s| kafka(s).map(|k| k.bytes_produced),
    }
    Counter "flowexporter_kafka_produce_attempts_total" "Attempts to produce a chunk to Kafka." {
        [] => |s| kafka(s).map(|k| k.produce_attempts),
    }
    Counter "flowexporter_kafka_produce_retries_total" "Produce attempts that failed and were tried again." {
        [] => |s| kafka(s).map(|k| k.retries),
    }
    Counter "flowexporter_kafka_produce_errors_total" "Failed produce attempts, by kind (missing_topic and authorization are retried until fixed; message_too_large is set aside)." {
        [kind = "unreachable"] => |s| kafka(s).map(|k| k.produce_errors(ErrorKind::Unreachable)),
        [kind = "missing_topic"] => |s| kafka(s).map(|k| k.produce_errors(ErrorKind::MissingTopic)),
        [kind = "authorization"] => |s| kafka(s).map(|k| k.produce_errors(ErrorKind::Authorization)),
        [kind = "message_too_large"] => |s| kafka(s).map(|k| k.produce_errors(ErrorKind::MessageTooLarge)),
        [kind = "queue_full"] => |s| kafka(s).map(|k| k.produce_errors(ErrorKind::QueueFull)),
        [kind = "fatal"] => |s| kafka(s).map(|k| k.produce_errors(ErrorKind::Fatal)),
        [kind = "other"] => |s| kafka(s).map(|k| k.produce_errors(ErrorKind::Other)),
    }
    Counter "flowexporter_kafka_produce_time_nanoseconds_total" "Time from a produce to its acknowledgement, summed over acknowledged messages." {
        [] => |s| kafka(s).map(|k| k.produce_time_ns),
    }
    Counter "flowexporter_kafka_producers_rebuilt_total" "Kafka producers replaced after the idempotent producer's fatal error." {
        [] => |s| kafka(s).map(|k| k.producers_rebuilt),
    }
    Counter "flowexporter_kafka_rejected_chunks_total" "Chunks Kafka refused for good (larger than a message may be), kept in the Kafka spool's rejected/." {
        [] => |s| kafka(s).map(|k| k.chunks_rejected),
    }
    Counter "flowexporter_kafka_unspooled_chunks_total" "Chunks for Kafka the spool could not take (disk full or failing), kept in memory instead." {
        [] => |s| kafka(s).map(|k| k.chunks_unspooled),
    }
    Gauge "flowexporter_kafka_memory_chunks" "Chunks for Kafka held in memory now, waiting to be produced." {
        [] => |s| kafka(s).map(|k| k.memory_chunks),
    }
    Gauge "flowexporter_kafka_spool_files" "Chunks waiting in the Kafka spool (also counted in flowexporter_spool_files)." {
        [] => |s| kafka_spool(s).map(|p| p.files),
    }
    Gauge "flowexporter_kafka_spool_bytes" "Bytes waiting in the Kafka spool (also counted in flowexporter_spool_bytes)." {
        [] => |s| kafka_spool(s).map(|p| p.bytes),
    }
    Counter "flowexporter_otlp_requests_total" "Export requests sent to the OTLP endpoint (one per chunk and attempt)." {
        [] => |s| otlp(s).map(|o| o.requests),
    }
    Counter "flowexporter_otlp_sent_chunks_total" "Chunks the OTLP endpoint took whole (every request of the chunk answered 2xx)." {
        [] => |s| otlp(s).map(|o| o.chunks_sent),
    }
    Counter "flowexporter_otlp_accepted_requests_total" "OTLP requests answered 2xx (a chunk larger than the request limit is several)." {
        [] => |s| otlp(s).map(|o| o.requests_sent),
    }
    Counter "flowexporter_otlp_split_requests_total" "OTLP requests answered 413 and sent again in two halves." {
        [] => |s| otlp(s).map(|o| o.requests_split_on_413),
    }
    Counter "flowexporter_otlp_sent_log_records_total" "Log records (one per flow record) in the requests the OTLP endpoint took." {
        [] => |s| otlp(s).map(|o| o.log_records_sent),
    }
    Counter "flowexporter_otlp_sent_bytes_total" "Bytes of the request bodies the OTLP endpoint took (as sent: compressed)." {
        [] => |s| otlp(s).map(|o| o.bytes_sent),
    }
    Counter "flowexporter_otlp_retries_total" "OTLP requests that failed and were tried again." {
        [] => |s| otlp(s).map(|o| o.retries),
    }
    Counter "flowexporter_otlp_errors_total" "Failed OTLP requests, by kind: no answer, or a retriable status (429, 502, 503, 504)." {
        [kind = "transport"] => |s| otlp(s).map(|o| o.transport_errors),
        [kind = "retriable_status"] => |s| otlp(s).map(|o| o.retriable_statuses),
    }
    Counter "flowexporter_otlp_rejected_chunks_total" "Chunks the OTLP endpoint refused for good (a 4xx other than 429), kept in the OTLP spool's rejected/." {
        [] => |s| otlp(s).map(|o| o.chunks_rejected),
    }
    Counter "flowexporter_otlp_receiver_rejected_log_records_total" "Log records the OTLP endpoint said it rejected in a partial success." {
        [] => |s| otlp(s).map(|o| o.log_records_rejected_by_receiver),
    }
    Gauge "flowexporter_otlp_memory_chunks" "Chunks for the OTLP endpoint held in memory now." {
        [] => |s| otlp(s).map(|o| o.memory_chunks),
    }
    Gauge "flowexporter_otlp_spool_files" "Chunks waiting in the OTLP spool (also counted in flowexporter_spool_files)." {
        [] => |s| otlp_spool(s).map(|p| p.files),
    }
    Counter "flowexporter_ipfix_exported_records_total" "Records exported as IPFIX data records (UDP: sent; TCP: acknowledged by the collector's host)." {
        [] => |s| ipfix(s).map(|i| i.records_exported),
    }
    Counter "flowexporter_ipfix_exported_chunks_total" "Chunks whose IPFIX messages all left." {
        [] => |s| ipfix(s).map(|i| i.chunks_exported),
    }
    Counter "flowexporter_ipfix_messages_total" "IPFIX messages sent, template messages included." {
        [] => |s| ipfix(s).map(|i| i.messages_sent),
    }
    Counter "flowexporter_ipfix_message_bytes_total" "Bytes of the IPFIX messages sent." {
        [] => |s| ipfix(s).map(|i| i.message_bytes_sent),
    }
    Counter "flowexporter_ipfix_template_messages_total" "IPFIX template messages sent (each transport session's start, each UDP refresh)." {
        [] => |s| ipfix(s).map(|i| i.template_messages_sent),
    }
    Counter "flowexporter_ipfix_sessions_total" "IPFIX transport sessions opened (UDP sockets, TCP connections)." {
        [] => |s| ipfix(s).map(|i| i.sessions_opened),
    }
    Counter "flowexporter_ipfix_retries_total" "IPFIX export attempts that failed and were tried again." {
        [] => |s| ipfix(s).map(|i| i.retries),
    }
    Counter "flowexporter_ipfix_failed_attempts_total" "IPFIX export attempts that failed, by kind: timed out (connect, write or acknowledgement) or other." {
        [kind = "timeout"] => |s| ipfix(s).map(|i| i.timeouts),
        [kind = "other"] => |s| ipfix(s).map(|i| i.failed_attempts.saturating_sub(i.timeouts)),
    }
    Counter "flowexporter_ipfix_rejected_chunks_total" "Chunks set aside for good by the IPFIX sink, in the IPFIX spool's rejected/." {
        [] => |s| ipfix(s).map(|i| i.chunks_rejected),
    }
    Gauge "flowexporter_ipfix_memory_chunks" "Chunks for the IPFIX collector held in memory now." {
        [] => |s| ipfix(s).map(|i| i.memory_chunks),
    }
    Gauge "flowexporter_ipfix_spool_files" "Chunks waiting in the IPFIX spool (also counted in flowexporter_spool_files)." {
        [] => |s| ipfix_spool(s).map(|p| p.files),
    }
    Gauge "flowexporter_spool_files" "Chunks waiting in the spool (every sink's: the collector's, Kafka's, OTLP's, IPFIX's)." {
        [] => |s| spools(s, |p| p.files),
    }
    Gauge "flowexporter_spool_bytes" "Bytes waiting in the spool (every sink's)." {
        [] => |s| spools(s, |p| p.bytes),
    }
    Counter "flowexporter_spool_dropped_chunks_total" "Chunks dropped because the spool was full." {
        [] => |s| spools(s, |p| p.chunks_dropped_full),
    }
    Counter "flowexporter_spool_disk_full_dropped_chunks_total" "Oldest spooled chunks dropped because the disk was full (ENOSPC, EDQUOT)." {
        [] => |s| spools(s, |p| p.chunks_dropped_no_space),
    }
    Counter "flowexporter_spool_disk_full_refused_chunks_total" "Chunks the spool could not write even when empty (the disk full)." {
        [] => |s| spools(s, |p| p.chunks_refused_no_space),
    }
    Counter "flowexporter_spool_unreadable_files_total" "Spool files that could not be read (permissions, I/O error, not a file), set aside." {
        [] => |s| spools(s, |p| p.unreadable_files),
    }
    Counter "flowexporter_spool_foreign_entries_total" "Entries in the spool directory that are not ours (links, FIFOs, directories), moved aside." {
        [] => |s| spools(s, |p| p.foreign_entries),
    }
    Counter "flowexporter_spool_corrupt_files_total" "Spool files that failed verification (moved aside)." {
        [] => |s| spools(s, |p| p.corrupt_files),
    }
    Gauge "flowexporter_spool_set_aside_bytes" "Bytes in the spool's rejected/ and corrupt/ folders." {
        [] => |s| spools(s, |p| p.set_aside_bytes),
    }
    Counter "flowexporter_spool_set_aside_deleted_files_total" "Rejected or corrupt chunks deleted to keep those folders under their cap." {
        [] => |s| spools(s, |p| p.set_aside_files_deleted),
    }
    Counter "flowexporter_journal_records_total" "Records journaled." {
        [] => |s| journal(s).map(|j| j.records_appended),
    }
    Counter "flowexporter_journal_syncs_total" "Journal syncs." {
        [] => |s| journal(s).map(|j| j.syncs),
    }
    Counter "flowexporter_journal_written_bytes_total" "Bytes written to the journal." {
        [] => |s| journal(s).map(|j| j.bytes_written),
    }
    Gauge "flowexporter_journal_segments" "Journal segment files (the oldest are deleted once every chunk of their records is delivered, spooled or given up)." {
        [] => |s| journal(s).map(|j| j.segments),
    }
    Gauge "flowexporter_journal_open_chunks" "Chunks announced in the journal and not yet durable (kept in memory by the sink, or being handed to it)." {
        [] => |s| journal(s).map(|j| j.open_chunks),
    }
    Gauge "flowexporter_journal_degraded" "1 while the journal cannot write (disk full or failing): a crash then loses the records not yet in a delivered chunk." {
        [] => |s| journal(s).map(|j| j.degraded),
    }
    Counter "flowexporter_journal_write_failures_total" "Journal writes or syncs that failed: while running each starts or prolongs the degraded state; a failed directory sync at start only counts here." {
        [] => |s| journal(s).map(|j| j.write_failures),
    }
    Counter "flowexporter_journal_records_not_journaled_total" "Records captured while the journal could not write (still batched and sent)." {
        [] => |s| journal(s).map(|j| j.records_not_journaled),
    }
    Counter "flowexporter_journal_resumed_total" "Times the journal resumed writing after a failure." {
        [] => |s| journal(s).map(|j| j.resumed),
    }
    Counter "flowexporter_journal_damaged_segments_total" "Journal segments found damaged at start (intact records kept, segment moved to damaged/)." {
        [] => |s| journal(s).map(|j| j.damaged_segments),
    }
    Counter "flowexporter_journal_bad_entries_total" "Damaged journal entries skipped at start." {
        [] => |s| journal(s).map(|j| j.bad_entries),
    }
    Counter "flowexporter_journal_set_aside_entries_total" "Entries under a segment's name that are not readable files of ours, moved to damaged/." {
        [] => |s| journal(s).map(|j| j.entries_set_aside),
    }
    Counter "flowexporter_pipeline_errors_total" "Failures the pipeline survived (logged; the run went on), by stage." {
        [stage = "journal"] => |s| Some(s.pipeline.journal_errors),
        [stage = "delivery"] => |s| Some(s.pipeline.delivery_errors),
    }
    Counter "flowexporter_pipeline_delivery_retries_total" "Failed attempts to hand a chunk to the sink that were tried again." {
        [] => |s| Some(s.pipeline.delivery_retries),
    }
    Gauge "flowexporter_pipeline_chunks_waiting" "Chunks the sink failed to take, waiting for their next attempt." {
        [] => |s| Some(s.pipeline.chunks_waiting),
    }
    Counter "flowexporter_spool_drops_in_completeness_total" "Records the sink dropped, by whether a window's completeness (lost_spool) reports them." {
        [reported = "reported"] => |s| all_sinks(s, |c| c.records_lost_spool_reported),
        [reported = "too_late"] => |s| all_sinks(s, |c| c.records_lost_spool_unreported),
        [reported = "forgotten"] => |s| all_sinks(s, |c| c.records_lost_spool_forgotten),
    }
    Counter "flowexporter_closes_seen_total" "TCP closes the kernel program saw (each became a record or a counted loss)." {
        [] => |s| Some(s.kernel.closes_seen),
    }
    Counter "flowexporter_interim_snapshots_total" "Snapshots of the open TCP connections taken for interim records, by result." {
        [result = "ok"] => |s| Some(s.pipeline.interim_snapshots),
        [result = "failed"] => |s| Some(s.pipeline.interim_snapshot_failures),
    }
    Counter "flowexporter_interim_records_total" "Interim records taken: one per open connection per window." {
        [] => |s| Some(s.pipeline.interim_records),
    }
    Gauge "flowexporter_interim_last_snapshot_microseconds" "How long the last snapshot of the open connections took." {
        [] => |s| Some(s.pipeline.interim_last_snapshot_us),
    }
};

/// The metrics endpoint's own families, read from its connection counters.
pub(super) static SERVER: &[FamilyDef<ConnectionStats>] = families! { ConnectionStats;
    Counter "flowexporter_metrics_connections_total" "Connections to the metrics endpoint: served, or closed at once because the cap was reached." {
        [result = "accepted"] => |s| Some(s.accepted),
        [result = "refused_over_cap"] => |s| Some(s.refused_over_cap),
    }
    Counter "flowexporter_metrics_connections_timed_out_total" "Metrics connections closed for sending no request headers or no traffic in time." {
        [] => |s| Some(s.timed_out),
    }
    Counter "flowexporter_metrics_accept_errors_total" "Failed accepts on the metrics endpoint (e.g. out of file descriptors)." {
        [] => |s| Some(s.accept_errors),
    }
    Gauge "flowexporter_metrics_connections_open" "Connections to the metrics endpoint open now." {
        [] => |s| Some(s.open),
    }
};

/// A family registered in the registry.
#[derive(Clone, Debug)]
enum Registered {
    Counter(Family<Labels, Counter>),
    Gauge(Family<Labels, Gauge<u64, AtomicU64>>),
}

/// The registry and the families registered in it so far, by name.
#[derive(Debug, Default)]
pub(super) struct State {
    registry: Registry,
    families: HashMap<&'static str, Registered>,
}

impl State {
    /// Moves the values of `source` into the families of `table`, registering a
    /// family when one of its series first has a value.
    pub(super) fn apply<S>(&mut self, table: &'static [FamilyDef<S>], source: &S) {
        for def in table {
            for series in def.series {
                if let Some(value) = (series.read)(source) {
                    self.family(def).set(series.labels.to_vec(), value);
                }
            }
        }
    }

    fn family<S>(&mut self, def: &'static FamilyDef<S>) -> &Registered {
        let registry = &mut self.registry;
        self.families.entry(def.name).or_insert_with(|| {
            // The crate appends `_total` to a counter's samples and `.` to the help.
            let help = def.help.strip_suffix('.').unwrap_or(def.help);
            match def.kind {
                Kind::Counter => {
                    let family = Family::<Labels, Counter>::default();
                    let name = def.name.strip_suffix("_total").unwrap_or(def.name);
                    registry.register(name, help, family.clone());
                    Registered::Counter(family)
                }
                Kind::Gauge => {
                    let family = Family::<Labels, Gauge<u64, AtomicU64>>::default();
                    registry.register(def.name, help, family.clone());
                    Registered::Gauge(family)
                }
            }
        })
    }

    /// The OpenMetrics text of every registered family.
    pub(super) fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding the metrics failed");
        }
        out
    }
}

impl Registered {
    /// Sets one series: a gauge to `value`, a counter to `value` unless that is less
    /// than it shows (counters never go backwards).
    fn set(&self, labels: Labels, value: u64) {
        match self {
            Registered::Counter(family) => {
                let counter = family.get_or_create(&labels);
                let shown = counter.get();
                if value > shown {
                    counter.inc_by(value - shown);
                }
            }
            Registered::Gauge(family) => {
                family.get_or_create(&labels).set(value);
            }
        }
    }
}
