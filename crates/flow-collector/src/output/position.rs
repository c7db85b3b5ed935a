//! The JSON-lines output's [`OutputPosition`]: which file and how far.
//!
//! Encoded as a JSON object, versioned:
//! `{"v":1,"file":"flows.jsonl","dev":2049,"ino":1234,"len":5678}`. The device and inode
//! find the file again after it was rotated (renamed).

use serde::{Deserialize, Serialize};

use super::OutputPosition;

/// The encoding's version.
const VERSION: u32 = 1;

/// A decoded position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FilePosition {
    /// The encoding's version.
    pub(crate) v: u32,
    /// The file's name when the position was taken.
    pub(crate) file: String,
    /// Its device.
    pub(crate) dev: u64,
    /// Its inode.
    pub(crate) ino: u64,
    /// Its length: every line before is durable.
    pub(crate) len: u64,
}

impl FilePosition {
    /// A position of version [`VERSION`].
    pub(crate) fn new(file: &str, dev: u64, ino: u64, len: u64) -> FilePosition {
        FilePosition {
            v: VERSION,
            file: file.to_owned(),
            dev,
            ino,
            len,
        }
    }

    /// Its encoding.
    pub(crate) fn encode(&self) -> OutputPosition {
        OutputPosition(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Decodes a position; `None` when it is not one of this version.
    pub(crate) fn decode(position: &OutputPosition) -> Option<FilePosition> {
        serde_json::from_slice::<FilePosition>(&position.0)
            .ok()
            .filter(|p| p.v == VERSION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let p = FilePosition::new("flows.jsonl", 1, 2, 3);
        let encoded = p.encode();
        assert_eq!(
            encoded.0,
            br#"{"v":1,"file":"flows.jsonl","dev":1,"ino":2,"len":3}"#
        );
        assert_eq!(FilePosition::decode(&encoded), Some(p));
        assert_eq!(FilePosition::decode(&OutputPosition(b"{}".to_vec())), None);
        assert_eq!(
            FilePosition::decode(&OutputPosition(
                br#"{"v":2,"file":"f","dev":1,"ino":2,"len":3}"#.to_vec()
            )),
            None
        );
    }
}
