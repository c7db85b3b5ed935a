//! Workload identities: validated text, shared, interned when decoded from kernel
//! values.

use std::{fmt, sync::Arc};

use flow_common::{WORKLOAD_ID_MAX, WorkloadValue};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A workload identity: who owned the local address of a flow. UTF-8, 1 to 64 bytes,
/// no NUL and no other control character (C0, DEL, C1: Unicode's `Cc`), so an ID can
/// be printed to a terminal or a log as it is. Deserializing validates too, so a
/// decoded record cannot smuggle in an ID that could not have been written.
///
/// The text is shared (`Arc<str>`): cloning an ID, as every record of the same
/// workload does, neither allocates nor copies, and the IDs decoded from kernel
/// records are interned per thread (see [`WorkloadId::interned`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorkloadId(Arc<str>);

/// What makes a workload ID, or a workload value found in an identity map, invalid.
/// Positions are byte offsets from the start of the ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadIdProblem {
    /// The ID is empty.
    #[error("it is empty")]
    Empty,
    /// The ID is longer than [`WORKLOAD_ID_MAX`] bytes.
    #[error("it is longer than {max} bytes ({len} bytes)", max = WORKLOAD_ID_MAX)]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The ID contains a NUL byte (in a map value: a NUL followed by more bytes
    /// than NUL padding).
    #[error("it contains a NUL byte at byte {at}")]
    Nul {
        /// Offset of the NUL.
        at: usize,
    },
    /// The ID contains a control character (ESC, newline, DEL, a C1 control, ...).
    #[error("it contains the control character U+{code:04X} at byte {at}", code = u32::from(*ch))]
    ControlCharacter {
        /// Offset of the character's first byte.
        at: usize,
        /// The character.
        ch: char,
    },
    /// A map value is not UTF-8.
    #[error("it is not UTF-8 (invalid byte at byte {at})")]
    NotUtf8 {
        /// Offset of the first byte that is not part of valid UTF-8.
        at: usize,
    },
}

/// A workload value found in an identity map (or a kernel record) that is not a valid
/// workload ID: what it holds, and why it is refused. Its [`Display`](fmt::Display)
/// shows the value escaped, so a value written by another tool can never put control
/// characters on a terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidWorkloadValue {
    value: WorkloadValue,
    problem: WorkloadIdProblem,
}

impl InvalidWorkloadValue {
    /// Why the value is not a valid workload ID.
    pub fn problem(&self) -> WorkloadIdProblem {
        self.problem
    }

    /// The value's bytes, without its trailing NUL padding.
    pub fn bytes(&self) -> &[u8] {
        let len = self
            .value
            .id
            .iter()
            .rposition(|&b| b != 0)
            .map_or(0, |last| last + 1);
        &self.value.id[..len]
    }

    /// The value as printable ASCII-safe text, without quotes: UTF-8 text escaped as
    /// Rust's `escape_debug` does (`\u{1b}`, `\n`, `\0`, ...), every byte that is not
    /// UTF-8 as `\xNN`.
    pub fn escaped(&self) -> String {
        escape_bytes(self.bytes())
    }
}

impl fmt::Display for InvalidWorkloadValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\": {}", self.escaped(), self.problem)
    }
}

/// `bytes` escaped for a terminal: valid UTF-8 with `escape_debug`, the rest as `\xNN`.
fn escape_bytes(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            // `escape_debug` leaves printable characters (ü, €) alone.
            let _ = write!(out, "{}", c.escape_debug());
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// A workload ID that cannot be stored: empty, longer than 64 bytes, or with a NUL or
/// another control character. The ID is shown escaped (`{id:?}`), never raw.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid workload ID {id:?}: {reason}")]
pub struct InvalidWorkloadId {
    /// The ID as given.
    pub id: String,
    /// What is wrong with it.
    pub reason: WorkloadIdProblem,
}

impl TryFrom<String> for WorkloadId {
    type Error = InvalidWorkloadId;

    fn try_from(id: String) -> Result<WorkloadId, InvalidWorkloadId> {
        WorkloadId::new(id)
    }
}

impl From<WorkloadId> for String {
    fn from(id: WorkloadId) -> String {
        String::from(&*id.0)
    }
}

impl WorkloadId {
    /// Validates an identity string.
    pub fn new(id: impl Into<String>) -> Result<WorkloadId, InvalidWorkloadId> {
        let id = id.into();
        match problem(&id) {
            Some(reason) => Err(InvalidWorkloadId { id, reason }),
            None => Ok(WorkloadId(Arc::from(id))),
        }
    }

    /// Decodes a kernel record's value like [`WorkloadId::from_value`], through a
    /// per-thread cache: a value seen recently (up to 256 distinct values are kept) is
    /// neither validated nor allocated again, its ID is shared with the first one.
    pub fn interned(value: &WorkloadValue) -> Option<WorkloadId> {
        workload_cache::lookup(value)
    }

    /// Decodes a map or record value; `None` when it is not a valid ID (see
    /// [`WorkloadId::decode_value`]).
    pub fn from_value(value: &WorkloadValue) -> Option<WorkloadId> {
        WorkloadId::decode_value(value).ok()
    }

    /// Decodes a map or record value: the ID's bytes, then NUL padding to 64 bytes.
    /// Refused when the ID is empty, when a NUL is followed by anything but more NULs
    /// (`ab\0cd` is not `ab`), when it is not UTF-8 or holds a control character.
    pub fn decode_value(value: &WorkloadValue) -> Result<WorkloadId, InvalidWorkloadValue> {
        let invalid = |problem| InvalidWorkloadValue {
            value: *value,
            problem,
        };
        let bytes = &value.id[..];
        let len = bytes
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(WORKLOAD_ID_MAX);
        if bytes[len..].iter().any(|&b| b != 0) {
            return Err(invalid(WorkloadIdProblem::Nul { at: len }));
        }
        let s = std::str::from_utf8(&bytes[..len]).map_err(|e| {
            invalid(WorkloadIdProblem::NotUtf8 {
                at: e.valid_up_to(),
            })
        })?;
        match problem(s) {
            Some(p) => Err(invalid(p)),
            None => Ok(WorkloadId(Arc::from(s))),
        }
    }

    /// Encodes the identity as a map value.
    pub fn to_value(&self) -> WorkloadValue {
        let mut v = WorkloadValue::EMPTY;
        v.id[..self.0.len()].copy_from_slice(self.0.as_bytes());
        v
    }

    /// The identity as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why `id` is not a valid workload ID, or `None` when it is one.
fn problem(id: &str) -> Option<WorkloadIdProblem> {
    if id.is_empty() {
        return Some(WorkloadIdProblem::Empty);
    }
    if id.len() > WORKLOAD_ID_MAX {
        return Some(WorkloadIdProblem::TooLong { len: id.len() });
    }
    // The common case, printable ASCII, is one pass over the bytes.
    if id.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return None;
    }
    id.char_indices().find_map(|(at, ch)| match ch {
        '\0' => Some(WorkloadIdProblem::Nul { at }),
        ch if ch.is_control() => Some(WorkloadIdProblem::ControlCharacter { at, ch }),
        _ => None,
    })
}

impl fmt::Display for WorkloadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Serialized as its text, exactly like a `String`.
impl Serialize for WorkloadId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Deserialized from a string, which must be a valid workload ID.
impl<'de> Deserialize<'de> for WorkloadId {
    /// Validates, and interns per thread: a chunk's records name few workloads, so
    /// the second record of one neither validates nor allocates its ID again (see
    /// `decoded_cache`).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<WorkloadId, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = WorkloadId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a workload ID: 1 to 64 bytes of UTF-8 without control characters")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<WorkloadId, E> {
                decoded_cache::lookup(s).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Text)
    }
}

impl std::borrow::Borrow<str> for WorkloadId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Per-thread interning of the workload IDs found in decoded records (a collector
/// decodes every host's chunks; each chunk names few workloads many times).
mod decoded_cache {
    use std::{cell::RefCell, collections::HashSet};

    use super::{InvalidWorkloadId, WorkloadId};

    /// Most IDs kept per thread; when full the set is emptied and fills again, so it
    /// never holds more than about 4,096 x 100 bytes however many workloads a fleet
    /// has. Keys come from the network: the set keeps std's keyed hash.
    pub(super) const CAPACITY: usize = 4096;

    thread_local! {
        static IDS: RefCell<HashSet<WorkloadId>> = RefCell::new(HashSet::new());
    }

    /// The ID `text` names, validated (or known valid from before).
    pub(super) fn lookup(text: &str) -> Result<WorkloadId, InvalidWorkloadId> {
        IDS.try_with(|ids| match ids.try_borrow_mut() {
            Ok(mut ids) => {
                if let Some(id) = ids.get(text) {
                    return Ok(id.clone());
                }
                let id = WorkloadId::new(text)?;
                if ids.len() >= CAPACITY {
                    ids.clear();
                }
                ids.insert(id.clone());
                Ok(id)
            }
            Err(_) => WorkloadId::new(text),
        })
        .unwrap_or_else(|_| WorkloadId::new(text))
    }
}

/// Per-thread interning of the workload values found in kernel events.
///
/// Every event of an attributed socket carries its workload as a NUL-padded 64-byte
/// value, and a host has few workloads: decoding one from scratch (finding its length,
/// checking its UTF-8, allocating its text) for every record cost as much as the rest
/// of the record. The cache maps the whole 64-byte value, compared as it is, to the
/// ID decoded the first time.
mod workload_cache {
    use std::{
        cell::RefCell,
        collections::HashMap,
        hash::{BuildHasherDefault, Hash, Hasher},
    };

    use flow_common::{WORKLOAD_ID_MAX, WorkloadValue};

    use super::WorkloadId;

    /// Most distinct values kept per thread (more than the pods a node usually runs).
    /// When it is full the cache is emptied and fills again, so it never grows past
    /// this (about 40 KiB) however many workloads come and go.
    pub(super) const CAPACITY: usize = 256;

    thread_local! {
        static CACHE: RefCell<WorkloadCache> = RefCell::new(WorkloadCache::default());
    }

    /// The ID of `value`, as [`WorkloadId::from_value`] decodes it, from this thread's
    /// cache when the value was seen recently.
    pub(super) fn lookup(value: &WorkloadValue) -> Option<WorkloadId> {
        CACHE
            .try_with(|cache| match cache.try_borrow_mut() {
                Ok(mut cache) => cache.get(value),
                // Not reachable (nothing here calls back into `lookup`), but never
                // worth a panic: decode without the cache.
                Err(_) => WorkloadId::from_value(value),
            })
            // The thread is being torn down and its cache is gone.
            .unwrap_or_else(|_| WorkloadId::from_value(value))
    }

    /// Recently seen workload values and their IDs; invalid values are not kept.
    #[derive(Default)]
    pub(super) struct WorkloadCache {
        ids: HashMap<Key, WorkloadId, BuildHasherDefault<WordHasher>>,
    }

    impl WorkloadCache {
        /// The ID of `value` (`None` when it is not a valid ID), decoded only when it
        /// is not in the cache.
        pub(super) fn get(&mut self, value: &WorkloadValue) -> Option<WorkloadId> {
            let key = Key(value.id);
            if let Some(id) = self.ids.get(&key) {
                return Some(id.clone());
            }
            let id = WorkloadId::from_value(value)?;
            if self.ids.len() >= CAPACITY {
                self.ids.clear();
            }
            self.ids.insert(key, id.clone());
            Some(id)
        }

        /// How many values it holds.
        #[cfg(test)]
        pub(super) fn len(&self) -> usize {
            self.ids.len()
        }
    }

    /// A workload value, padding included: equal keys are equal values.
    #[derive(PartialEq, Eq)]
    struct Key([u8; WORKLOAD_ID_MAX]);

    impl Hash for Key {
        fn hash<H: Hasher>(&self, state: &mut H) {
            for word in self.0.chunks_exact(8) {
                let mut w = [0; 8];
                w.copy_from_slice(word);
                state.write_u64(u64::from_le_bytes(w));
            }
        }
    }

    /// A multiply-rotate hash of whole words (the Fx hash of rustc), with a final mix
    /// so that the high bits hashbrown uses as tags depend on every word. The keys are
    /// written by the local kernel program from the host's own identity maps, so a
    /// keyed hash buys nothing here; the cache's size bounds any collision chain.
    #[derive(Default)]
    struct WordHasher(u64);

    impl WordHasher {
        const K: u64 = 0xf135_7aea_2e62_a9c5;
    }

    impl Hasher for WordHasher {
        fn write(&mut self, bytes: &[u8]) {
            for &b in bytes {
                self.write_u64(u64::from(b));
            }
        }

        fn write_u64(&mut self, word: u64) {
            self.0 = (self.0 ^ word).wrapping_mul(Self::K).rotate_left(26);
        }

        fn finish(&self) -> u64 {
            let h = self.0 ^ (self.0 >> 32);
            h.wrapping_mul(Self::K) ^ (h >> 29)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoded_ids_are_validated_and_shared() {
        let a: WorkloadId = serde_json::from_str("\"k8s:prod/api\"").expect("valid");
        let b: WorkloadId = serde_json::from_str("\"k8s:prod/api\"").expect("valid");
        assert!(
            Arc::ptr_eq(&a.0, &b.0),
            "the second decode shares the first's text"
        );
        for bad in [
            "\"\"",
            "\"a\\u0000b\"",
            "\"a\\nb\"",
            &format!("\"{}\"", "x".repeat(65)),
        ] {
            let e = serde_json::from_str::<WorkloadId>(bad).expect_err(bad);
            assert!(
                e.to_string().contains("workload") || e.to_string().contains("it "),
                "{e}"
            );
        }
    }

    fn value(id: &[u8]) -> WorkloadValue {
        let mut v = WorkloadValue::EMPTY;
        v.id[..id.len()].copy_from_slice(id);
        v
    }

    #[test]
    fn workload_id_validates_like_before() {
        assert!(WorkloadId::new("").is_err());
        assert!(WorkloadId::new("a".repeat(65)).is_err());
        assert!(WorkloadId::new("nul\0inside").is_err());
        assert_eq!(
            WorkloadId::new("a".repeat(64)).expect("64 bytes").as_str(),
            "a".repeat(64)
        );
        let id = WorkloadId::try_from(String::from("ümlaut")).expect("UTF-8");
        assert_eq!(id.to_string(), "ümlaut");
        assert_eq!(String::from(id.clone()), "ümlaut");
        assert_eq!(WorkloadId::from_value(&id.to_value()), Some(id));
        assert_eq!(WorkloadId::from_value(&WorkloadValue::EMPTY), None);
        assert_eq!(WorkloadId::from_value(&value(&[0xff, 0xfe])), None);
    }

    #[test]
    fn workload_id_validates_when_deserialized() {
        use serde::de::value::{Error, StrDeserializer};
        let id = WorkloadId::deserialize(StrDeserializer::<Error>::new("k8s:prod/api"));
        assert_eq!(id.expect("valid").as_str(), "k8s:prod/api");
        for bad in ["", "nul\0inside", &"a".repeat(65)] {
            let id = WorkloadId::deserialize(StrDeserializer::<Error>::new(bad));
            assert!(id.is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_nul_inside_a_map_value_is_invalid_not_truncated() {
        // NUL padding after the ID is fine; a NUL followed by more bytes is not.
        let padded = value(b"ab");
        assert_eq!(
            WorkloadId::decode_value(&padded).expect("padded").as_str(),
            "ab"
        );
        let embedded = value(b"ab\0cd");
        assert_eq!(WorkloadId::from_value(&embedded), None);
        let err = WorkloadId::decode_value(&embedded).expect_err("embedded NUL");
        assert_eq!(err.problem(), WorkloadIdProblem::Nul { at: 2 });
        assert_eq!(err.bytes(), b"ab\0cd");
        assert_eq!(err.escaped(), "ab\\0cd");
        // A leading NUL with bytes after it is not an empty value either.
        let leading = value(b"\0x");
        assert_eq!(
            WorkloadId::decode_value(&leading).map_err(|e| e.problem()),
            Err(WorkloadIdProblem::Nul { at: 0 })
        );
        // The last byte of a full-length value counts too.
        let mut last = value(&[b'a'; WORKLOAD_ID_MAX - 2]);
        last.id[WORKLOAD_ID_MAX - 1] = b'z';
        assert_eq!(
            WorkloadId::decode_value(&last).map_err(|e| e.problem()),
            Err(WorkloadIdProblem::Nul {
                at: WORKLOAD_ID_MAX - 2
            })
        );
        assert_eq!(
            WorkloadId::decode_value(&WorkloadValue::EMPTY).map_err(|e| e.problem()),
            Err(WorkloadIdProblem::Empty)
        );
    }

    #[test]
    fn control_characters_are_refused_with_their_position() {
        for (id, at, ch) in [
            ("ab\u{1b}cd", 2, '\u{1b}'),
            ("line\nbreak", 4, '\n'),
            ("\ttab", 0, '\t'),
            ("del\u{7f}", 3, '\u{7f}'),
            ("c1-\u{85}", 3, '\u{85}'),
            ("ü\u{9b}31m", 2, '\u{9b}'),
            ("cr\r", 2, '\r'),
        ] {
            let err = WorkloadId::new(id).expect_err(id);
            let reason = &err.reason;
            assert_eq!(*reason, WorkloadIdProblem::ControlCharacter { at, ch });
            let text = err.to_string();
            assert!(
                text.contains(&format!("at byte {at}"))
                    && text.contains(&format!("U+{:04X}", u32::from(ch))),
                "{text}"
            );
            // The message itself carries no raw control character.
            assert!(!text.chars().any(char::is_control), "{text:?}");
        }
        let err = WorkloadId::new("nul\0inside").expect_err("NUL");
        assert!(err.to_string().contains("NUL byte at byte 3"), "{err}");
        // Printable non-ASCII stays valid.
        assert!(WorkloadId::new("k8s:prod/ümlaut-€-𝄞").is_ok());
    }

    #[test]
    fn control_characters_are_refused_when_deserialized() {
        use serde::de::value::{Error, StrDeserializer};
        for bad in ["ab\u{1b}[31mcd", "a\nb", "\u{7f}", "\u{9f}"] {
            let id = WorkloadId::deserialize(StrDeserializer::<Error>::new(bad));
            let err = id.expect_err(bad).to_string();
            assert!(err.contains("control character"), "{err}");
        }
    }

    #[test]
    fn cache_shares_the_id_of_a_value_seen_before() {
        let mut cache = workload_cache::WorkloadCache::default();
        let a = cache.get(&value(b"k8s:prod/api")).expect("valid");
        let again = cache.get(&value(b"k8s:prod/api")).expect("valid");
        assert_eq!(a.as_str(), "k8s:prod/api");
        assert!(Arc::ptr_eq(&a.0, &again.0), "decoded twice");
        let b = cache.get(&value(b"k8s:prod/db")).expect("valid");
        assert_eq!(b.as_str(), "k8s:prod/db");
        // A longer ID sharing the prefix, and the longest one.
        let long = cache.get(&value(b"k8s:prod/api-2")).expect("valid");
        assert_eq!(long.as_str(), "k8s:prod/api-2");
        let max = cache.get(&value(&[b'x'; WORKLOAD_ID_MAX])).expect("valid");
        assert_eq!(max.as_str(), "x".repeat(WORKLOAD_ID_MAX));
        assert_eq!(cache.len(), 4);
    }

    #[test]
    fn cache_keeps_no_invalid_value() {
        let mut cache = workload_cache::WorkloadCache::default();
        assert_eq!(cache.get(&WorkloadValue::EMPTY), None);
        assert_eq!(cache.get(&value(&[b'a', 0xc3])), None);
        assert_eq!(cache.get(&value(&[b'a', 0xc3])), None);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn cache_is_bounded() {
        let mut cache = workload_cache::WorkloadCache::default();
        for i in 0..3 * workload_cache::CAPACITY {
            let id = format!("workload-{i}");
            let got = cache.get(&value(id.as_bytes())).expect("valid");
            assert_eq!(got.as_str(), id);
            assert!(cache.len() <= workload_cache::CAPACITY);
        }
        assert!(cache.len() > 0);
    }
}
