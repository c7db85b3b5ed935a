//! The fuzzer's corpus as regression tests: every file in `tests/fuzz-corpus/` goes
//! through `decode_header` and `ChunkDecoder::decode`, with the default limits and
//! with the fuzz target's, on a fresh decoder and on one reused across files. None may
//! panic.
//!
//! File names say what is expected:
//! - `valid-*`: seeds written by `fuzz/examples/seed_corpus.rs`; they decode, and
//!   their records match their header. `valid-v2-*` are version 2 frames, the other
//!   `valid-*` version 1 frames (written before version 2: they check that version 1
//!   still decodes);
//! - `reject-*`: corpus entries the fuzzer found interesting; they are rejected with
//!   an error;
//! - anything else (`crash-*`, `timeout-*`, `oom-*` as libFuzzer names its findings):
//!   only "returns without panicking".
//!
//! To add a finding, copy it from `fuzz/artifacts/decode_chunk/` into the folder
//! (`fuzz/README.md`).

use std::{
    fs,
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
};

use flow_batch::{
    BatchError,
    wire::{ChunkDecoder, DecodeLimits, DecodedChunk, decode_header},
};

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// The limits of the fuzz target (`fuzz/fuzz_targets/decode_chunk.rs`).
fn fuzz_limits() -> DecodeLimits {
    DecodeLimits::default()
        .with_max_raw_len(1 << 20)
        .with_max_payload_len(1 << 20)
}

fn name(path: &Path) -> &str {
    path.file_name()
        .and_then(|n| n.to_str())
        .expect("UTF-8 file name")
}

/// Decodes `bytes` every way the fuzz target does; the decode result with default
/// limits on a fresh decoder is returned. A panic fails the test, naming the file.
fn decode_all_ways(
    path: &Path,
    bytes: &[u8],
    reused: &mut [ChunkDecoder; 2],
) -> Result<DecodedChunk, BatchError> {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let _ = decode_header(bytes, &DecodeLimits::default());
        let _ = decode_header(bytes, &fuzz_limits());
        let fresh = ChunkDecoder::new(DecodeLimits::default())
            .expect("decoder")
            .decode(bytes);
        let _ = ChunkDecoder::new(fuzz_limits())
            .expect("decoder")
            .decode(bytes);
        for decoder in reused.iter_mut() {
            let again = decoder.decode(bytes);
            assert_eq!(again.is_ok(), fresh.is_ok(), "a reused decoder disagrees");
        }
        fresh
    }));
    match outcome {
        Ok(result) => result,
        Err(_) => panic!("{}: the decoder panicked (message above)", path.display()),
    }
}

#[test]
fn corpus_is_present() {
    let files = corpus();
    let valid = files
        .iter()
        .filter(|p| name(p).starts_with("valid-"))
        .count();
    assert!(valid >= 5, "expected the seed frames, found {files:?}");
    let v2 = files
        .iter()
        .filter(|p| name(p).starts_with("valid-v2-"))
        .count();
    assert!(
        v2 >= 5,
        "expected the version 2 seed frames, found {files:?}"
    );
}

#[test]
fn no_corpus_entry_panics_the_decoder() {
    let mut reused = [
        ChunkDecoder::new(DecodeLimits::default()).expect("decoder"),
        ChunkDecoder::new(fuzz_limits()).expect("decoder"),
    ];
    for path in corpus() {
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let result = decode_all_ways(&path, &bytes, &mut reused);
        let file = name(&path);
        if file.starts_with("valid-") {
            let decoded =
                result.unwrap_or_else(|e| panic!("{file}: a valid seed is rejected: {e}"));
            let header = decode_header(&bytes, &DecodeLimits::default()).expect("header");
            assert_eq!(decoded.header, header, "{file}");
            assert_eq!(header.frame_len(), bytes.len(), "{file}");
            assert_eq!(
                decoded.records.len(),
                header.record_count as usize,
                "{file}"
            );
            let version = if file.starts_with("valid-v2-") { 2 } else { 1 };
            assert_eq!(header.version, version, "{file}");
            if version == 1 {
                assert!(decoded.completeness.is_none(), "{file}");
                assert!(
                    decoded
                        .records
                        .iter()
                        .all(|r| r.record_kind == flow_record::RecordKind::Final
                            && r.flow_id.is_none()
                            && r.process.is_none()),
                    "{file}"
                );
            }
        } else if file.starts_with("reject-") {
            assert!(result.is_err(), "{file}: expected an error, it decoded");
        }
    }
}
