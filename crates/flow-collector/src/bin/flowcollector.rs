//! The reference flow collector: receives chunks over HTTP, verifies them, drops
//! duplicate batch IDs and appends the records as JSON lines (the fields of
//! `flowexporter tail --json`) to a file.
//!
//! ```text
//! cargo run --release -p flowcollector --bin flowcollector -- --listen 127.0.0.1:9000 --out /tmp/flows.jsonl
//! ```
//!
//! It prints `listening on ADDR` on standard output once it accepts connections (with
//! `--listen 127.0.0.1:0` the port is picked by the system), and stops on SIGINT or
//! SIGTERM. `--max-connections`, `--header-read-timeout`, `--idle-timeout` and
//! `--body-read-timeout` bound what clients can hold open (1024 connections, 30 s
//! each by default). The `--fail-*`, `--lose-ack-every` and `--delay` options make it
//! misbehave, for end-to-end tests. `docs/collector-protocol.md` describes the
//! exchange; the logic lives in the `flow_collector` library.

use std::{io::Write, net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use flow_collector::{CollectorOptions, FaultInjection, FlowCollector, ServerTls};

#[derive(Debug, Parser)]
#[command(
    name = "flowcollector",
    about = "Reference collector for flowexporter chunks"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// JSON-lines file to append records to (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Largest request body accepted, in bytes (413 above).
    #[arg(long, default_value_t = (64 << 20) + (64 << 10))]
    max_body_bytes: usize,
    /// Do not fdatasync the output before acknowledging a chunk.
    #[arg(long)]
    no_sync: bool,
    /// Connections open at once; more are closed as soon as they are accepted.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Time a client has to send a request's headers, also the longest a keep-alive
    /// connection stays idle between requests (e.g. 30s).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    header_read_timeout: Duration,
    /// A connection without traffic for this long (no request being handled) is closed.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
    /// Time a client has to send a whole request body (408 after it).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    body_read_timeout: Duration,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by the CA(s) in this PEM file (mutual TLS).
    #[arg(long, requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Test hook: answer the first N requests with --fail-status.
    #[arg(long, default_value_t = 0)]
    fail_first: u32,
    /// Test hook: then answer every N-th request with --fail-status.
    #[arg(long, default_value_t = 0)]
    fail_every: u32,
    /// Test hook: the status of injected failures.
    #[arg(long, default_value_t = 503)]
    fail_status: u16,
    /// Test hook: store every N-th chunk but answer 503 (a lost acknowledgement).
    #[arg(long, default_value_t = 0)]
    lose_ack_every: u32,
    /// Test hook: wait this long before answering each request (e.g. 2s, 300ms).
    #[arg(long, value_parser = humantime::parse_duration)]
    delay: Option<Duration>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let faults = FaultInjection::default()
        .with_fail_first(args.fail_first)
        .with_fail_every(args.fail_every)
        .with_fail_status(args.fail_status)
        .with_lose_ack_every(args.lose_ack_every)
        .with_delay(args.delay.unwrap_or_default());
    let mut options = CollectorOptions::new(args.listen, &args.out)
        .with_max_body_bytes(args.max_body_bytes)
        .with_sync(!args.no_sync)
        .with_max_connections(args.max_connections)
        .with_header_read_timeout(args.header_read_timeout)
        .with_idle_timeout(args.idle_timeout)
        .with_body_read_timeout(args.body_read_timeout)
        .with_faults(faults);
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let mut tls = ServerTls::new(cert, key);
        if let Some(ca) = &args.client_ca {
            tls = tls.with_client_ca(ca);
        }
        options = options.with_tls(tls);
    }
    let collector = FlowCollector::start(options).await?;
    println!("listening on {}", collector.local_addr());
    std::io::stdout().flush()?;

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    collector
        .run_until(async {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await;
    Ok(())
}
