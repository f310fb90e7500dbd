//! A formatted segment, then a script of producer/consumer operations and
//! hostile peer writes into its control part. The logic and the script
//! encoding are in `src/lib.rs` (`bips_core_fuzz::hostile_peer`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bips_core_fuzz::hostile_peer(data));
