//! When the JSON-lines file is rotated, and the names of rotated files.

use std::time::{Duration, SystemTime};

/// When [`JsonLinesOutput`](super::JsonLinesOutput) starts a new file. The default
/// never rotates.
///
/// A file is rotated at a commit, after it is synced, once it holds `max_bytes` or
/// more, or was opened (by this collector) `max_age` or more ago: `path` is renamed to
/// `path.<UTC time, YYYYmmddTHHMMSSZ>` (with `.1`, `.2`, ... when that name is taken)
/// and a new `path` is created. With `keep`, only the newest `keep` rotated files are
/// kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rotation {
    /// Rotate once the file holds this many bytes.
    pub max_bytes: Option<u64>,
    /// Rotate once the file was opened this long ago.
    pub max_age: Option<Duration>,
    /// Keep this many rotated files; delete older ones.
    pub keep: Option<usize>,
}

impl Rotation {
    /// Sets [`max_bytes`](Rotation::max_bytes).
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Rotation {
        self.max_bytes = Some(max_bytes);
        self
    }

    /// Sets [`max_age`](Rotation::max_age).
    pub fn with_max_age(mut self, max_age: Duration) -> Rotation {
        self.max_age = Some(max_age);
        self
    }

    /// Sets [`keep`](Rotation::keep).
    pub fn with_keep(mut self, keep: usize) -> Rotation {
        self.keep = Some(keep);
        self
    }

    /// Whether a file of `len` bytes opened at `opened` is due at `now` (an empty file
    /// never is).
    pub(crate) fn due(&self, len: u64, opened: SystemTime, now: SystemTime) -> bool {
        len > 0
            && (self.max_bytes.is_some_and(|m| len >= m)
                || self
                    .max_age
                    .is_some_and(|a| now.duration_since(opened).unwrap_or_default() >= a))
    }
}

/// `YYYYmmddTHHMMSSZ` of `t`, UTC.
pub(crate) fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect()
}

/// The rotated file name for `base` at `stamp`, with `n` > 0 when the plain one is
/// taken.
pub(crate) fn rotated_name(base: &str, stamp: &str, n: u32) -> String {
    if n == 0 {
        format!("{base}.{stamp}")
    } else {
        format!("{base}.{stamp}.{n}")
    }
}

/// The order key of a rotated name of `base` (its time and number), or `None` when
/// `name` is not one.
pub(crate) fn parse_rotated(base: &str, name: &str) -> Option<(String, u32)> {
    let rest = name.strip_prefix(base)?.strip_prefix('.')?;
    let (stamp, n) = match rest.split_once('.') {
        Some((stamp, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            (stamp, n.parse().ok()?)
        }
        Some(_) => return None,
        None => (rest, 0),
    };
    let b = stamp.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    (b.len() == 16 && digits(0..8) && b[8] == b'T' && digits(9..15) && b[15] == b'Z')
        .then(|| (stamp.to_owned(), n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(timestamp(t), "20231114T221320Z");
        let name = rotated_name("flows.jsonl", &timestamp(t), 0);
        assert_eq!(name, "flows.jsonl.20231114T221320Z");
        assert_eq!(
            parse_rotated("flows.jsonl", &name),
            Some(("20231114T221320Z".into(), 0))
        );
        let two = rotated_name("flows.jsonl", &timestamp(t), 2);
        assert_eq!(
            parse_rotated("flows.jsonl", &two),
            Some(("20231114T221320Z".into(), 2))
        );
        for odd in [
            "flows.jsonl",
            "flows.jsonl.tmp",
            "flows.jsonl.20231114T221320Z.",
            "flows.jsonl.20231114T221320Z.x",
            "flows.jsonl.20231114X221320Z",
            "other.20231114T221320Z",
        ] {
            assert_eq!(parse_rotated("flows.jsonl", odd), None, "{odd}");
        }
    }

    #[test]
    fn due_by_size_or_age_never_empty() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let r = Rotation::default()
            .with_max_bytes(100)
            .with_max_age(Duration::from_secs(60));
        assert!(!r.due(99, t0, t0 + Duration::from_secs(59)));
        assert!(r.due(100, t0, t0));
        assert!(r.due(1, t0, t0 + Duration::from_secs(60)));
        assert!(!r.due(0, t0, t0 + Duration::from_secs(600)));
        assert!(!Rotation::default().due(u64::MAX, t0, t0 + Duration::from_secs(1 << 30)));
    }
}
