//! The host's boot ID: with a socket cookie it makes a connection's [`FlowId`], unique
//! on the host across exporter restarts and reboots.
//!
//! [`FlowId`]: flow_record::FlowId

use std::{io::Read, sync::OnceLock};

/// Where the kernel publishes the boot ID (a UUID, new at every boot).
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// The boot ID as 16 bytes, read once per process; `None` when it cannot be read
/// (records then carry no flow ID, and a warning says why once).
pub fn boot_id() -> Option<[u8; 16]> {
    static ID: OnceLock<Option<[u8; 16]>> = OnceLock::new();
    *ID.get_or_init(|| match read(BOOT_ID_PATH) {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::warn!("no flow IDs: reading {BOOT_ID_PATH}: {e}");
            None
        }
    })
}

fn read(path: &str) -> std::io::Result<[u8; 16]> {
    let mut text = String::new();
    // A UUID and a newline are 37 bytes: read at most a little more.
    std::fs::File::open(path)?
        .take(64)
        .read_to_string(&mut text)?;
    parse(text.trim()).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not a UUID: {:?}", text.trim()),
        )
    })
}

/// Parses a UUID in its 8-4-4-4-12 hex form.
pub(crate) fn parse(text: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = text.bytes().filter(|&b| b != b'-').collect();
    if hex.len() != 32 || text.len() != 36 {
        return None;
    }
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_uuid() {
        let id = parse("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0").expect("valid");
        assert_eq!(id[0], 0x0f);
        assert_eq!(id[15], 0xf0);
        assert!(parse("0f1e2d3c4b5a69788796a5b4c3d2e1f0").is_none());
        assert!(parse("zz1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0").is_none());
    }

    #[test]
    fn this_host_has_one() {
        assert!(boot_id().is_some());
    }
}
