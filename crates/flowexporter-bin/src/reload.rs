//! SIGHUP: read the configuration again and apply what can change while the exporter
//! runs.
//!
//! The configuration is read exactly as at start ([`config::load`]: the same file,
//! with the flags and environment variables given at start still taking precedence,
//! the same validation). If it is invalid, or the collector's TLS material cannot be
//! loaded, an error says why and the configuration in force stays as it was, whole.
//! Otherwise every key of [`LIVE`] takes effect at once (the collector's TLS files are
//! read again even when their paths did not change: this is how rotated certificates
//! are picked up, and so are the OTLP endpoint's, `otlp.ca`; `sink.retry_max_backoff`
//! applies to the Kafka, OTLP and IPFIX sinks too); a changed
//! key of any other kind (every `kafka.*` key among them) is logged as needing a
//! restart and keeps its value in force until then.

use clap::ArgMatches;
use flow_identity::ReloadableResolver;

use crate::{
    cli::CertField,
    config::{self, RunConfig},
    logging::LogControl,
    outputs::Outputs,
};

/// Reloads by result, for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReloadCounters {
    /// Reloads that applied the configuration read (restart-only changes aside).
    pub applied: u64,
    /// Reloads refused (invalid configuration, unusable TLS material).
    pub failed: u64,
}

/// Copies one key's value from the configuration read (second) into the one in force
/// (first).
type Apply = fn(&mut RunConfig, &RunConfig);

/// The keys a SIGHUP applies at once, and how each is taken over.
pub const LIVE: [(&str, Apply); 8] = [
    ("identity.certificate", |to, from| {
        to.args.capture.identity_cert = from.args.capture.identity_cert.clone()
    }),
    ("identity.field", |to, from| {
        to.args.capture.identity_field = from.args.capture.identity_field
    }),
    ("sink.retry_max_backoff", |to, from| {
        to.args.retry_max_backoff = from.args.retry_max_backoff
    }),
    ("otlp.ca", |to, from| {
        to.args.exports.otlp_ca = from.args.exports.otlp_ca.clone()
    }),
    ("sink.collector_ca", |to, from| {
        to.args.collector_ca = from.args.collector_ca.clone()
    }),
    ("sink.client_cert", |to, from| {
        to.args.client_cert = from.args.client_cert.clone()
    }),
    ("sink.client_key", |to, from| {
        to.args.client_key = from.args.client_key.clone()
    }),
    ("logging.level", |to, from| {
        to.log_level = from.log_level.clone()
    }),
];

/// Reads the configuration again on SIGHUP and applies it.
#[derive(Debug)]
pub struct Reloader {
    /// The command line at start (flags and environment variables).
    matches: ArgMatches,
    in_force: RunConfig,
    log: LogControl,
    counters: ReloadCounters,
}

impl Reloader {
    /// A reloader for an exporter started with `matches` (the whole command line) and
    /// the configuration `in_force` read from it, whose logs `log` controls.
    pub fn new(matches: ArgMatches, in_force: RunConfig, log: LogControl) -> Reloader {
        Reloader {
            matches,
            in_force,
            log,
            counters: ReloadCounters::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &RunConfig {
        &self.in_force
    }

    /// Reloads so far.
    pub fn counters(&self) -> ReloadCounters {
        self.counters
    }

    /// Reads the configuration again and applies it to `identity`, `sink` (when
    /// sending to a collector), `kafka` (when producing to Kafka: its retry policy)
    /// and the log filter; see the [module docs](self).
    pub fn reload(&mut self, identity: &mut ReloadableResolver, outputs: Option<&Outputs>) {
        let sink = outputs.and_then(Outputs::collector);
        let kafka = outputs.and_then(Outputs::kafka);
        let read = match config::load(&self.matches, self.in_force.file.as_deref()) {
            Ok(read) => read,
            Err(e) => return self.refuse(&format!("{e:#}")),
        };
        if let Some(sink) = sink
            && let Err(e) = sink.reconfigure(&read.args.collector_tls(), read.args.retry_policy())
        {
            let e = anyhow::Error::from(e);
            return self.refuse(&format!("collector TLS material: {e:#}"));
        }
        // The policy was checked with the collector's, or is the default's shape.
        if let Some(kafka) = kafka
            && let Err(e) = kafka.set_retry_policy(read.args.retry_policy())
        {
            let e = anyhow::Error::from(e);
            return self.refuse(&format!("Kafka retry policy: {e:#}"));
        }
        if let Some(otlp) = outputs.and_then(Outputs::otlp)
            && let Err(e) =
                otlp.reconfigure(&read.args.exports.otlp_tls(), read.args.retry_policy())
        {
            let e = anyhow::Error::from(e);
            return self.refuse(&format!("OTLP TLS material: {e:#}"));
        }
        if let Some(ipfix) = outputs.and_then(Outputs::ipfix)
            && let Err(e) = ipfix.set_retry_policy(read.args.retry_policy())
        {
            let e = anyhow::Error::from(e);
            return self.refuse(&format!("IPFIX retry policy: {e:#}"));
        }
        let before = settings(&self.in_force);
        let after = settings(&read);
        let mut next = self.in_force.clone();
        let mut applied = Vec::new();
        for ((key, was), (_, now)) in before.iter().zip(&after) {
            if was == now {
                continue;
            }
            match LIVE.iter().find(|(live, _)| live == key) {
                Some((_, apply)) => {
                    apply(&mut next, &read);
                    applied.push(format!("{key} = {now}"));
                }
                None => tracing::warn!(
                    key,
                    "SIGHUP: {key} changed from {was} to {now}, which needs a restart; still {was} until then"
                ),
            }
        }
        next.file = read.file.clone();
        let c = &next.args.capture;
        let field = c.identity_field.into();
        if identity.settings() != (c.identity_cert.as_deref(), field) {
            identity.replace(c.identity_cert.as_deref(), field);
        }
        if next.log_level != self.in_force.log_level
            && let Err(e) = self.log.set_filter(&next.log_level)
        {
            tracing::warn!("SIGHUP: {e:#}");
        }
        self.in_force = next;
        self.counters.applied += 1;
        let file = self
            .in_force
            .file
            .as_ref()
            .map_or_else(|| "none".to_string(), |f| f.display().to_string());
        let changed = if applied.is_empty() {
            "nothing".to_string()
        } else {
            applied.join(", ")
        };
        tracing::info!(%file, "SIGHUP: configuration reloaded; applied: {changed}");
        tracing::debug!(
            "SIGHUP: configuration in force: {}",
            settings(&self.in_force)
                .iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    fn refuse(&mut self, why: &str) {
        self.counters.failed += 1;
        tracing::error!(
            "SIGHUP: configuration not reloaded, still running with the one in force: {}",
            one_line(why)
        );
    }
}

/// `text` on one line (TOML's errors draw the offending line over several): its
/// lines joined with `; `, without those that only underline.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.chars().all(|c| matches!(c, '|' | '^' | ' ')))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every key of the configuration with its value in `c`, as the file names it.
fn settings(c: &RunConfig) -> Vec<(&'static str, String)> {
    fn path(p: Option<&std::path::Path>) -> String {
        p.map_or_else(|| "none".to_string(), |p| p.display().to_string())
    }
    fn text(s: Option<&str>) -> String {
        s.map_or_else(|| "none".to_string(), |s| format!("{s:?}"))
    }
    fn duration(d: std::time::Duration) -> String {
        humantime::format_duration(d).to_string()
    }
    let a = &c.args;
    vec![
        ("capture.ring_size", a.capture.ring_size.to_string()),
        ("capture.poll_ms", a.capture.poll_ms.to_string()),
        ("identity.pin_dir", path(a.capture.pin_dir.as_deref())),
        (
            "identity.certificate",
            path(a.capture.identity_cert.as_deref()),
        ),
        (
            "identity.field",
            match a.capture.identity_field {
                CertField::SanUri => "san-uri",
                CertField::Cn => "cn",
            }
            .to_string(),
        ),
        ("batch.window", duration(a.window)),
        ("batch.interim", a.interim.to_string()),
        ("sink.collector", text(a.collector.as_deref())),
        ("sink.host_id", text(a.host_id.as_deref())),
        ("sink.retry_max_backoff", duration(a.retry_max_backoff)),
        ("sink.collector_ca", path(a.collector_ca.as_deref())),
        ("sink.client_cert", path(a.client_cert.as_deref())),
        ("sink.client_key", path(a.client_key.as_deref())),
        ("kafka.brokers", text(a.kafka.kafka_brokers.as_deref())),
        ("kafka.topic", text(a.kafka.kafka_topic.as_deref())),
        ("kafka.tls", a.kafka.kafka_tls.to_string()),
        ("kafka.ca", path(a.kafka.kafka_ca.as_deref())),
        ("kafka.cert", path(a.kafka.kafka_cert.as_deref())),
        ("kafka.key", path(a.kafka.kafka_key.as_deref())),
        (
            "kafka.sasl_mechanism",
            text(a.kafka.kafka_sasl_mechanism.as_deref()),
        ),
        (
            "kafka.sasl_username",
            text(a.kafka.kafka_sasl_username.as_deref()),
        ),
        (
            "kafka.sasl_password_file",
            path(a.kafka.kafka_sasl_password_file.as_deref()),
        ),
        (
            "kafka.compression",
            format!("{:?}", a.kafka.kafka_compression),
        ),
        ("otlp.endpoint", text(a.exports.otlp_endpoint.as_deref())),
        // Names only: header values may be secrets.
        ("otlp.headers", a.exports.otlp_header_names()),
        (
            "otlp.compression",
            format!("{:?}", a.exports.otlp_compression).to_lowercase(),
        ),
        (
            "otlp.headers_file",
            path(a.exports.otlp_headers_file.as_deref()),
        ),
        ("otlp.ca", path(a.exports.otlp_ca.as_deref())),
        (
            "ipfix.collector",
            text(a.exports.ipfix_collector.as_deref()),
        ),
        (
            "ipfix.enterprise_number",
            a.exports.ipfix_enterprise_number.to_string(),
        ),
        ("spool.dir", path(Some(&a.spool_dir))),
        ("spool.max_bytes", a.spool_max_bytes.to_string()),
        ("journal.dir", path(Some(&a.journal_dir))),
        ("journal.sync", duration(a.journal_sync)),
        (
            "metrics.addr",
            a.metrics_addr
                .map_or_else(|| "none".to_string(), |m| m.to_string()),
        ),
        (
            "logging.format",
            format!("{:?}", c.log_format).to_lowercase(),
        ),
        ("logging.level", format!("{:?}", c.log_level)),
        ("process.user", text(a.user.as_deref())),
    ]
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::cli::Cli;

    /// The keys the example file names, commented ones included, as `section.key`.
    fn example_keys() -> Vec<String> {
        let mut section = String::new();
        let mut keys = Vec::new();
        for line in config::EXAMPLE.lines() {
            let line = line.trim_start_matches('#').trim();
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_string();
            } else if let Some((key, _)) = line.split_once(" = ")
                && !section.is_empty()
                && key.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_')
            {
                keys.push(format!("{section}.{key}"));
            }
        }
        keys
    }

    fn defaults() -> RunConfig {
        let matches = Cli::command()
            .try_get_matches_from(["flowexporter", "run", "--config", "/dev/null"])
            .expect("matches");
        config::load(&matches, None).expect("defaults are valid")
    }

    #[test]
    fn toml_errors_fit_on_one_line() {
        let err = toml::from_str::<toml::Table>("[batch]\nwindow = \n").expect_err("invalid");
        let text = one_line(&err.to_string());
        assert!(!text.contains('\n') && text.contains("window ="), "{text}");
        assert!(!text.contains("; |") && !text.contains("^"), "{text}");
    }

    #[test]
    fn every_key_of_the_file_is_compared_and_live_keys_exist() {
        let compared: Vec<&str> = settings(&defaults()).iter().map(|(k, _)| *k).collect();
        let mut example = example_keys();
        example.sort();
        let mut sorted = compared.clone();
        sorted.sort();
        assert_eq!(example, sorted);
        for (key, _) in LIVE {
            assert!(compared.contains(&key), "{key}");
        }
    }

    #[test]
    fn each_live_key_is_taken_over_by_its_own_apply() {
        let base = defaults();
        let mut read = base.clone();
        read.args.capture.identity_cert = Some("/c.pem".into());
        read.args.capture.identity_field = CertField::Cn;
        read.args.retry_max_backoff = std::time::Duration::from_secs(7);
        read.args.collector_ca = Some("/ca.pem".into());
        read.args.client_cert = Some("/cl.pem".into());
        read.args.client_key = Some("/cl.key".into());
        read.args.exports.otlp_ca = Some("/otlp-ca.pem".into());
        read.log_level = "debug".into();
        let (was, now) = (settings(&base), settings(&read));
        for (key, apply) in LIVE {
            let mut next = base.clone();
            apply(&mut next, &read);
            for ((k, before), ((_, after), (_, got))) in
                was.iter().zip(now.iter().zip(settings(&next).iter()))
            {
                let want = if *k == key { after } else { before };
                assert_eq!(got, want, "applying {key}: {k}");
            }
            assert_ne!(
                was.iter().find(|(k, _)| *k == key),
                now.iter().find(|(k, _)| *k == key),
                "the test changes {key}"
            );
        }
    }
}
