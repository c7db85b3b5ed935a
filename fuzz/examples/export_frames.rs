//! Turns fuzzer inputs into the frames the decoder was given, named by what the
//! decoder made of them, for `crates/flow-batch/tests/fuzz-corpus/`:
//! `valid-<target>-<input>.bin` (decodes), `reject-<target>-<error>-<input>.bin`
//! (rejected), `crash-<target>-<input>.bin` (panics: a bug to report).
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example export_frames -- TARGET OUT_DIR FILE...`
//! with TARGET one of `decode_chunk`, `decode_chunk_resealed`, `decode_records`.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
};

use flow_batch::wire::{ChunkDecoder, DecodeLimits};
use flow_batch_fuzz::{check, fuzz_limits, records_frame, resealed};

fn main() {
    let mut args = std::env::args().skip(1);
    let target = args.next().expect("TARGET");
    let out = PathBuf::from(args.next().expect("OUT_DIR"));
    let transform: fn(&[u8]) -> Vec<u8> = match target.as_str() {
        "decode_chunk" => <[u8]>::to_vec,
        "decode_chunk_resealed" => resealed,
        "decode_records" => records_frame,
        other => panic!("unknown target {other}"),
    };
    std::fs::create_dir_all(&out).expect("create OUT_DIR");
    let mut decoder = ChunkDecoder::new(fuzz_limits()).expect("decoder");
    let mut checker = ChunkDecoder::new(DecodeLimits::default()).expect("decoder");
    for file in args {
        let input = std::fs::read(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
        let frame = transform(&input);
        let stem = Path::new(&file)
            .file_name()
            .and_then(|n| n.to_str())
            .expect("UTF-8 name")
            .trim_end_matches(".bin")
            .to_owned();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            check(&frame, &mut decoder, &mut checker);
            ChunkDecoder::new(DecodeLimits::default())
                .expect("decoder")
                .decode(&frame)
        }));
        let mut detail = String::new();
        let name = match outcome {
            Ok(Ok(_)) => format!("valid-{target}-{stem}.bin"),
            Ok(Err(e)) => {
                detail = error_chain(&e);
                let debug = format!("{e:?}");
                let kind = debug.split([' ', '{', '(']).next().unwrap_or("Error");
                format!("reject-{target}-{kind}-{stem}.bin")
            }
            Err(_) => {
                // The decoders may be in any state after a panic.
                decoder = ChunkDecoder::new(fuzz_limits()).expect("decoder");
                checker = ChunkDecoder::new(DecodeLimits::default()).expect("decoder");
                format!("crash-{target}-{stem}.bin")
            }
        };
        std::fs::write(out.join(&name), &frame).expect("write");
        println!("{name} ({} bytes) {detail}", frame.len());
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
