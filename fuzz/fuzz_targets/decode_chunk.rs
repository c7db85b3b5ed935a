//! Arbitrary bytes, as they are, to the chunk decoder (`decode_header` and
//! `ChunkDecoder::decode`). Neither may panic, abort, or allocate past its limits; a
//! frame that decodes must agree with its header and survive a round trip through the
//! encoder (`flow_batch_fuzz::check`).
//!
//! `cargo +nightly fuzz run decode_chunk` from the repository root (`fuzz/README.md`).

#![no_main]

use std::cell::RefCell;

use flow_batch::wire::{ChunkDecoder, DecodeLimits};
use flow_batch_fuzz::{check, fuzz_limits};
use libfuzzer_sys::fuzz_target;

thread_local! {
    // Reused across inputs, as a collector reuses its decoder.
    static DECODERS: RefCell<(ChunkDecoder, ChunkDecoder)> = RefCell::new((
        ChunkDecoder::new(fuzz_limits()).expect("decoder"),
        ChunkDecoder::new(DecodeLimits::default()).expect("decoder"),
    ));
}

fuzz_target!(|data: &[u8]| {
    DECODERS.with_borrow_mut(|(decoder, checker)| check(data, decoder, checker));
});
