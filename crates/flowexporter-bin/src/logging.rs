//! Logs on stderr: the subscriber, and its filter, which SIGHUP can change while the
//! exporter runs (`--log-level`, `FLOWEXPORTER_LOG`, `[logging] level`).

use anyhow::Context;
use tracing_subscriber::{
    EnvFilter, Registry, layer::SubscriberExt, reload, util::SubscriberInitExt,
};

use crate::cli::LogFormat;

/// The levels a filter may name on its own.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks a log filter: a level, or comma-separated directives `target=level` (the
/// `tracing_subscriber::EnvFilter` syntax). A word on its own must be a level, so that
/// a typo (`verbose`) is refused rather than read as a target name.
pub fn check_filter(filter: &str) -> Result<String, String> {
    let expected = "expected a level (off, error, warn, info, debug, trace) or directives such as \"info,flow_sink=debug\"";
    if filter.trim().is_empty() {
        return Err(format!("empty; {expected}"));
    }
    for directive in filter.split(',').map(str::trim) {
        let bare = !directive.contains('=') && !directive.contains('[');
        if bare && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive)) {
            return Err(format!("{directive:?} is not a level; {expected}"));
        }
    }
    EnvFilter::builder()
        .parse(filter)
        .map_err(|e| format!("{e}; {expected}"))?;
    Ok(filter.to_string())
}

/// Changes the filter of the installed subscriber.
#[derive(Clone, Debug)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
}

impl LogControl {
    /// Makes `filter` (checked with [`check_filter`]) the one in force.
    pub fn set_filter(&self, filter: &str) -> anyhow::Result<()> {
        let filter = EnvFilter::builder()
            .parse(filter)
            .with_context(|| format!("log filter {filter:?}"))?;
        self.handle
            .reload(filter)
            .context("replacing the log filter")
    }
}

/// Installs the process's subscriber: `format` on stderr, filtered by `filter`
/// (checked with [`check_filter`]; an invalid one falls back to `info`).
pub fn init(format: LogFormat, filter: &str) -> LogControl {
    let filter = EnvFilter::builder()
        .parse(filter)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let text = (format == LogFormat::Text)
        .then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    let json = (format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .init();
    LogControl { handle }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_directives_pass_typos_do_not() {
        for ok in [
            "info",
            "DEBUG",
            "off",
            "warn,flow_sink=debug",
            "flowexporter=trace",
        ] {
            assert_eq!(check_filter(ok).as_deref(), Ok(ok), "{ok}");
        }
        for bad in ["", " ", "verbose", "info,flow_sink", "flow_sink=loud"] {
            assert!(check_filter(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
