//! Command-line interface.

use clap::{Args, Parser, Subcommand};

/// flowexporter: an eBPF TCP flow exporter. Emits one record per closed TCP socket,
/// with addresses, ports, times and socket statistics.
#[derive(Debug, Parser)]
#[command(name = "flowexporter", version = version(), about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the tracer and print each flow record as it is captured.
    Tail(TailArgs),
}

/// Options of `flowexporter tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Ring buffer size in bytes (power of two, multiple of the page size).
    #[arg(long, default_value_t = flow_capture::DEFAULT_RING_SIZE)]
    pub ring_size: u32,
    /// Drain interval in milliseconds when the kernel has not woken the reader.
    #[arg(long, default_value_t = 50)]
    pub poll_ms: u64,
}

fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        format!(
            "{} (kernel object {})",
            env!("CARGO_PKG_VERSION"),
            flow_capture::kernel_object_id()
        )
    })
}
