//! `flowexporter tail`: print records as they are captured until SIGINT/SIGTERM, then
//! detach and drain what was already captured.

use std::{io, time::Duration};

use anyhow::Context;
use flow_capture::{AsyncFlowReader, FlowCaptureBuilder, FlowRecord, identity_maps};
use flow_identity::{CertificateIdentity, IdentityField, IdentityResolver};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    cli::{CertField, TailArgs},
    output::{Format, RecordWriter},
};

/// Runs `tail` to completion.
pub fn run(args: TailArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(tail(args))
}

async fn tail(args: TailArgs) -> anyhow::Result<()> {
    let format = if args.json {
        Format::Json
    } else {
        Format::Table
    };
    let mut builder = FlowCaptureBuilder::new()
        .ring_size(args.ring_size)
        .poll_interval(Duration::from_millis(args.poll_ms.max(1)));
    match &args.pin_dir {
        Some(dir) => builder = builder.identity_pin_dir(dir),
        None if bpffs_mounted() => {
            builder = builder.identity_pin_dir(identity_maps::DEFAULT_IDENTITY_PIN_DIR)
        }
        None => tracing::warn!(
            "no BPF filesystem at /sys/fs/bpf: the identity maps are not shared, so `flowexporter identity` cannot write them (mount -t bpf bpf /sys/fs/bpf)"
        ),
    }
    let mut capture = builder.load().context("loading the flow tracer")?;
    let mut resolver = IdentityResolver::new(args.identity_cert.as_ref().map(|path| {
        let field = match args.identity_field {
            CertField::SanUri => IdentityField::SanUri,
            CertField::Cn => IdentityField::SubjectCn,
        };
        let (cert, err) = CertificateIdentity::load(path, field);
        match err
            .map(Err)
            .unwrap_or_else(|| cert.check(std::time::SystemTime::now()).map(|_| ()))
        {
            Ok(()) => tracing::info!(path = %path.display(), "identity certificate loaded"),
            Err(e) => tracing::error!("{e}; records not attributed by the maps stay unattributed"),
        }
        cert
    }));
    let mut reader = AsyncFlowReader::new(capture.take_reader()?)?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut out = RecordWriter::new(io::stdout().lock(), format)?;
    let mut batch: Vec<FlowRecord> = Vec::new();
    tracing::info!("tracing TCP closes; SIGINT or SIGTERM to stop");
    loop {
        tokio::select! {
            r = reader.next_batch(&mut batch) => { r?; }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
        if let Some(e) = resolver.refresh() {
            tracing::error!("{e}; records not attributed by the maps stay unattributed");
        }
        batch.iter_mut().for_each(|r| resolver.resolve(r));
        if !write_all(&mut out, &mut batch)? {
            return Ok(());
        }
    }
    // Detach first, then drain: every record captured before the detach is printed.
    let counters = capture.counters()?;
    let stats = capture.program_stats()?;
    drop(capture);
    reader.drain(&mut batch);
    batch.iter_mut().for_each(|r| resolver.resolve(r));
    write_all(&mut out, &mut batch)?;
    let read = reader.get_ref().counters();
    tracing::info!(
        records = read.records_read,
        lost_in_kernel = counters.lost(),
        missed_in_interrupts = stats.recursion_misses,
        "stopped"
    );
    Ok(())
}

fn bpffs_mounted() -> bool {
    std::fs::read_to_string("/proc/mounts").is_ok_and(|m| m.contains(" /sys/fs/bpf bpf "))
}

/// Writes and clears `batch`; returns false when stdout is closed (e.g. `| head`).
fn write_all<W: io::Write>(
    out: &mut RecordWriter<W>,
    batch: &mut Vec<FlowRecord>,
) -> anyhow::Result<bool> {
    for r in batch.drain(..) {
        match out.write(&r) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(false),
            Err(e) => return Err(e).context("writing to stdout"),
        }
    }
    Ok(true)
}
