//! A frame/tensor descriptor, sample lengths and a type block from another
//! process: decoding never panics, validation accepts only descriptors whose
//! elements lie inside, views never reach past the sample. The logic and the
//! input layout are in `src/lib.rs` (`bips_core_fuzz::descriptor`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bips_core_fuzz::descriptor(data));
