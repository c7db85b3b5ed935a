//! Like `decode_chunk`, but both checksums of the input are rewritten to match first
//! (`flow_batch_fuzz::resealed`), so mutations reach the checks behind them: header
//! fields, limits, zstd, records. Same properties as `decode_chunk`:
//! nothing panics, and whatever decodes round-trips.
//!
//! `cargo +nightly fuzz run decode_chunk_resealed` from the repository root (`fuzz/README.md`).

#![no_main]

use std::cell::RefCell;

use flow_batch::wire::{ChunkDecoder, DecodeLimits};
use flow_batch_fuzz::{check, fuzz_limits, resealed};
use libfuzzer_sys::fuzz_target;

thread_local! {
    // Reused across inputs, as a collector reuses its decoder.
    static DECODERS: RefCell<(ChunkDecoder, ChunkDecoder)> = RefCell::new((
        ChunkDecoder::new(fuzz_limits()).expect("decoder"),
        ChunkDecoder::new(DecodeLimits::default()).expect("decoder"),
    ));
}

fuzz_target!(|data: &[u8]| {
    DECODERS.with_borrow_mut(|(decoder, checker)| check(&resealed(data), decoder, checker));
});
