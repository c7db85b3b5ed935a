//! `flowexporter check`'s rows for the standard exports: with `--otlp-endpoint`, the
//! endpoint takes an (empty) OTLP logs request; with `--ipfix-collector`, the
//! collector's name resolves and, over TCP, it accepts a connection. A malformed
//! setting fails; a receiver that does not answer is a warning (`run` spools until it
//! does, and the packaged unit runs `check` before starting).

use std::{net::ToSocketAddrs, time::Duration};

use flow_batch::wire::InstanceId;
use flow_capture::preflight::{Diagnostic, Status};
use flow_sink::{
    IpfixCollector, IpfixProtocol, OtlpSinkConfig, SinkError, error_chain, otlp_sink::logs_url,
};

use crate::exports::ExportArgs;

/// Longest each probe takes.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The rows of the exports that are configured (none without).
pub fn diagnostics(args: &ExportArgs) -> Vec<Diagnostic> {
    // `check` reads no configuration file; the headers' variable counts as for `run`.
    let mut args = args.clone();
    if args.otlp_headers.is_empty()
        && let Ok(listed) = std::env::var(crate::otlp_headers::HEADERS_ENV)
    {
        args.otlp_headers = crate::otlp_headers::from_env(&listed);
    }
    let args = &args;
    let targets = match args.targets() {
        Ok(targets) => targets,
        Err(e) => {
            return vec![Diagnostic::new("exports", Status::Fail, format!("{e:#}"))];
        }
    };
    let mut out = Vec::new();
    if let Some(otlp) = targets.otlp {
        out.push(otlp_endpoint(args, &otlp.endpoint, &otlp.headers));
    }
    if let Some(collector) = targets.ipfix {
        out.push(ipfix_collector(&collector));
    }
    out
}

/// Asks the endpoint whether it takes OTLP logs (an empty request, with the sink's own
/// client, TLS and headers: `flow_sink::otlp_sink::probe`): a 2xx passes.
fn otlp_endpoint(args: &ExportArgs, endpoint: &str, headers: &[(String, String)]) -> Diagnostic {
    const NAME: &str = "otlp endpoint";
    let url = match logs_url(endpoint) {
        Ok(url) => url,
        Err(e) => return Diagnostic::new(NAME, Status::Fail, error_chain(&e)),
    };
    let mut config = OtlpSinkConfig::new(endpoint, "check", InstanceId::new(0))
        .with_tls(args.otlp_tls())
        .with_timeouts(PROBE_TIMEOUT, PROBE_TIMEOUT);
    for (name, value) in headers {
        config = config.with_header(name, value);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Diagnostic::new(NAME, Status::Fail, format!("no async runtime: {e}")),
    };
    let probe = flow_sink::otlp_sink::probe(&config);
    match runtime.block_on(probe) {
        Ok(status) if (200..300).contains(&status) => Diagnostic::new(
            NAME,
            Status::Pass,
            format!("{url} took an empty logs request ({status})"),
        ),
        // Unreachable or refusing is a warning: `run` spools until the endpoint takes
        // its requests, and a receiver down at boot must not keep the exporter (whose
        // unit runs `check` first) from capturing.
        Ok(status) => Diagnostic::new(
            NAME,
            Status::Warn,
            format!(
                "{url} answered {status} to an empty logs request: check the URL (an OTLP/HTTP receiver, usually port 4318) and the headers (--otlp-header)"
            ),
        ),
        Err(e @ SinkError::Transport { .. }) => Diagnostic::new(
            NAME,
            Status::Warn,
            format!(
                "{url}: no answer: {} (records are spooled until it answers)",
                error_chain(&e)
            ),
        ),
        // What is wrong here (an unreadable CA file, a refused header): run would not
        // start either.
        Err(e) => Diagnostic::new(NAME, Status::Fail, error_chain(&e)),
    }
}

/// Resolves the collector's name; over TCP, connects.
fn ipfix_collector(collector: &IpfixCollector) -> Diagnostic {
    const NAME: &str = "ipfix collector";
    let shown = format!(
        "{}://{}:{}",
        collector.protocol.as_str(),
        collector.host,
        collector.port
    );
    let host = collector.host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<_> = match (host, collector.port).to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        Err(e) => {
            return Diagnostic::new(
                NAME,
                Status::Warn,
                format!("{shown}: name not resolved: {e} (records are spooled until it resolves)"),
            );
        }
    };
    let Some(first) = addrs.first() else {
        return Diagnostic::new(
            NAME,
            Status::Warn,
            format!("{shown}: the name has no address (records are spooled until it has)"),
        );
    };
    match collector.protocol {
        IpfixProtocol::Udp => Diagnostic::new(
            NAME,
            Status::Pass,
            format!(
                "{shown}: resolves to {first} (over UDP nothing answers: whether a collector listens shows in its own counters)"
            ),
        ),
        IpfixProtocol::Tcp => match std::net::TcpStream::connect_timeout(first, PROBE_TIMEOUT) {
            Ok(_) => Diagnostic::new(
                NAME,
                Status::Pass,
                format!("{shown}: {first} accepts connections"),
            ),
            Err(e) => Diagnostic::new(
                NAME,
                Status::Warn,
                format!(
                    "{shown}: connecting to {first}: {e} (records are spooled until it accepts)"
                ),
            ),
        },
    }
}
