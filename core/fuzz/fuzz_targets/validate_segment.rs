//! Arbitrary bytes as a whole segment: `Region::attach` answers `Ok` or a typed
//! `LayoutError`; an accepted segment survives a consumer and a producer.
//! The logic is in `src/lib.rs` (`bips_core_fuzz::validate_segment`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bips_core_fuzz::validate_segment(data));
