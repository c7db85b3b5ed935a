//! Arbitrary bytes as the uncompressed records of an otherwise valid frame
//! (`flow_batch_fuzz::records_frame`: the first byte is the record count in bits 0-6,
//! bit 7 set for a version 1 frame, the rest the records), so mutations reach the bincode record decoder directly. Same
//! properties as `decode_chunk`:
//! nothing panics, and whatever decodes round-trips.
//!
//! `cargo +nightly fuzz run decode_records` from the repository root (`fuzz/README.md`).

#![no_main]

use std::cell::RefCell;

use flow_batch::wire::{ChunkDecoder, DecodeLimits};
use flow_batch_fuzz::{check, fuzz_limits, records_frame};
use libfuzzer_sys::fuzz_target;

thread_local! {
    // Reused across inputs, as a collector reuses its decoder.
    static DECODERS: RefCell<(ChunkDecoder, ChunkDecoder)> = RefCell::new((
        ChunkDecoder::new(fuzz_limits()).expect("decoder"),
        ChunkDecoder::new(DecodeLimits::default()).expect("decoder"),
    ));
}

fuzz_target!(|data: &[u8]| {
    DECODERS.with_borrow_mut(|(decoder, checker)| check(&records_frame(data), decoder, checker));
});
