//! The OTLP export's request headers (often credentials): from `--otlp-header
//! NAME=VALUE` flags, the `FLOWEXPORTER_OTLP_HEADERS` variable (a comma-separated list,
//! values percent-decoded, as OpenTelemetry's `OTEL_EXPORTER_OTLP_HEADERS`), the
//! `[otlp] headers` table, and a file of `NAME=VALUE` lines (`--otlp-headers-file`,
//! which can be readable by root and the service user only). A value is never shown:
//! errors name the header's position and, when it has one, its name.

use std::path::Path;

use crate::config::{ConfigError, shown};

/// The variable that lists headers.
pub const HEADERS_ENV: &str = "FLOWEXPORTER_OTLP_HEADERS";

/// Largest headers file read, in bytes.
const MAX_FILE_BYTES: u64 = 64 << 10;

/// Header names the sink sets itself (refused from the configuration).
const RESERVED: [&str; 5] = [
    "content-type",
    "content-encoding",
    "content-length",
    "host",
    "transfer-encoding",
];

/// Where a header came from, for errors.
#[derive(Clone, Copy, Debug)]
pub enum Source {
    /// `--otlp-header`, `FLOWEXPORTER_OTLP_HEADERS` or `[otlp] headers`.
    Listed,
    /// `--otlp-headers-file`.
    File,
}

/// The variable's list: comma-separated `NAME=VALUE` items, each percent-decoded
/// (`%2C` for a comma in a value).
pub fn from_env(value: &str) -> Vec<String> {
    value
        .split(',')
        .filter(|item| !item.trim().is_empty())
        .map(percent_decode)
        .collect()
}

/// The lines of a headers file: `NAME=VALUE` each, blank lines and `#` comments
/// skipped. Read once, bounded, never through a link.
pub fn read_file(path: &Path) -> anyhow::Result<Vec<String>> {
    let bytes = flow_sink::state_dir::read_regular_file(path, MAX_FILE_BYTES).map_err(|e| {
        anyhow::anyhow!(
            "otlp.headers_file (--otlp-headers-file): reading {}: {}",
            path.display(),
            flow_sink::error_chain(&e)
        )
    })?;
    let text = String::from_utf8(bytes).map_err(|_| {
        anyhow::anyhow!(
            "otlp.headers_file (--otlp-headers-file): {} is not UTF-8 text",
            path.display()
        )
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

/// Header `position` (from 1) of `source`: a token name that is not one of the
/// sink's own, and a value without control characters.
pub fn parse(text: &str, source: Source, position: usize) -> Result<(String, String), ConfigError> {
    let (key, flag) = match source {
        Source::Listed => ("otlp.headers", "--otlp-header, FLOWEXPORTER_OTLP_HEADERS"),
        Source::File => ("otlp.headers_file", "--otlp-headers-file"),
    };
    let name = text.split_once('=').map(|(n, _)| n.trim());
    let invalid = |reason: &str| ConfigError::InvalidValue {
        key,
        flag,
        // The position and the name only: the value may be a secret.
        value: match name {
            Some(n) => format!("header {position} ({})", shown(n)),
            None => format!("header {position}"),
        },
        reason: reason.to_owned(),
    };
    let (Some(name), Some((_, value))) = (name, text.split_once('=')) else {
        return Err(invalid("expected NAME=VALUE"));
    };
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(invalid(
            "the name must be an HTTP token (letters, digits, -_.)",
        ));
    }
    if RESERVED.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(invalid("the sink sets this header itself"));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(invalid("the value holds a control character"));
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

/// `%XX` sequences decoded (an invalid one is kept as it is).
fn percent_decode(item: &str) -> String {
    let bytes = item.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        parse(text, Source::Listed, 2)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn a_header_is_a_token_name_and_a_value() {
        assert_eq!(
            parse("authorization=Bearer a=b,c", Source::Listed, 1).ok(),
            Some(("authorization".into(), "Bearer a=b,c".into()))
        );
        for bad in [
            "no-equals",
            "=value",
            "bad name=v",
            "x=a\nb",
            "Content-Type=x",
        ] {
            let e = error(bad);
            assert!(e.starts_with("otlp.headers (--otlp-header"), "{bad}: {e}");
            assert!(e.contains("header 2"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_refused_header_never_shows_its_value() {
        for bad in ["Bearer s3cret", "x=s3c\nret", "bad name=s3cret"] {
            assert!(!error(bad).contains("s3c"), "{}", error(bad));
        }
    }

    #[test]
    fn the_variable_is_a_comma_separated_percent_encoded_list() {
        assert_eq!(
            from_env("authorization=Basic%20a%2Cb,x-tenant=t1,"),
            vec!["authorization=Basic a,b".to_string(), "x-tenant=t1".into()]
        );
        assert_eq!(from_env("x=100%"), vec!["x=100%".to_string()]);
    }
}
