//! What `tail` and `run` share: loading the capture core with the identity maps, and
//! the identity resolver with the optional certificate.

use std::time::Duration;

use anyhow::Context;
use flow_capture::{FlowCapture, FlowCaptureBuilder, identity_maps};

use flow_identity::ReloadableResolver;

use crate::cli::CaptureArgs;

/// Loads and attaches the capture core, and prepares identity resolution.
///
/// With `window`, the kernel counts closes per window of that length (each window's
/// completeness rides on its last chunk).
pub fn capture_and_identity(
    args: &CaptureArgs,
    window: Option<Duration>,
) -> anyhow::Result<(FlowCapture, ReloadableResolver)> {
    let mut builder = FlowCaptureBuilder::new()
        .ring_size(args.ring_size)
        .poll_interval(Duration::from_millis(args.poll_ms.max(1)));
    if let Some(window) = window {
        builder = builder.window_counts(window);
    }
    match &args.pin_dir {
        Some(dir) => builder = builder.identity_pin_dir(dir),
        None if flow_identity::pins::check_bpffs(
            identity_maps::DEFAULT_IDENTITY_PIN_DIR.as_ref(),
        )
        .is_ok() =>
        {
            builder = builder.identity_pin_dir(identity_maps::DEFAULT_IDENTITY_PIN_DIR)
        }
        None => tracing::warn!(
            "no BPF filesystem at /sys/fs/bpf: the identity maps are not shared, so `flowexporter identity` cannot write them (mount -t bpf bpf /sys/fs/bpf)"
        ),
    }
    // Loading hands the memory of parsing the kernel's BTF back to the system itself.
    let capture = builder.load().context("loading the flow tracer")?;
    let resolver =
        ReloadableResolver::new(args.identity_cert.as_deref(), args.identity_field.into());
    Ok((capture, resolver))
}
