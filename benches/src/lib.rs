//! # bips-bench — how fast, compared to what
//!
//! A cross-process harness that measures bips against the physical floor and
//! its peers **in the same run, between the same two pinned processes**:
//!
//! * one-way latency by ping-pong (half the round trip), busy-spin and
//!   blocking, payloads 64 B .. 32 MiB, 1->1 and 1->N consumer processes;
//! * throughput (samples/s, bytes/s handed over), 1->1 and 1->N;
//! * baselines: a raw shared-memory atomic ping-pong (the physical floor), a
//!   raw shared-futex ping-pong (the blocking floor), a Unix-domain-socket copy
//!   of the same payload, and iceoryx2 0.10 publish-subscribe when its peer
//!   crate (`benches/iceoryx2-peer`, outside the workspace) is built.
//!
//! The writer stamps an 8-byte header (the sequence number) into the loaned
//! buffer and the reader checks it in place: **the payload itself is never
//! copied** — that is the point of zero copy — so the bips and iceoryx2 rows
//! are flat in payload size while the socket row pays for every byte twice.
//!
//! Run it with `cargo run --release -p bips-bench` (or `bips bench`);
//! `--quick` is a ~20 s smoke run. Results go to `target/bench/` as
//! `results.md`, `results.csv` and `results.json`.
#![deny(missing_docs)]

pub mod harness;
pub mod hist;
mod peer;
#[cfg(feature = "plot")]
pub mod plot;
pub mod report;
pub mod stats;
pub mod sys;

pub use harness::{run, BenchArgs, Launcher};
pub use peer::{peer_main, PeerArgs};

/// The sequence number that ends a row (the peer echoes it and stops).
pub const STOP: u64 = u64::MAX;

/// Writes the 8-byte little-endian sequence header at the start of `buf`.
///
/// # Panics
/// When `buf` is shorter than 8 bytes.
pub fn stamp(buf: &mut [u8], seq: u64) {
    buf[..8].copy_from_slice(&seq.to_le_bytes());
}

/// Reads the sequence header written by [`stamp`] (`u64::MAX - 1` if `buf`
/// is too short, which no row produces).
pub fn read_seq(buf: &[u8]) -> u64 {
    match buf.get(..8) {
        Some(b) => u64::from_le_bytes(b.try_into().unwrap_or([0xfe; 8])),
        None => u64::MAX - 1,
    }
}

/// Parses a wait strategy name: `spin`, `park` or `spin-then-park`.
pub fn wait_strategy(name: &str) -> Result<bips::WaitStrategy, String> {
    match name {
        "spin" => Ok(bips::WaitStrategy::Spin),
        "park" => Ok(bips::WaitStrategy::Park),
        "spin-then-park" => Ok(bips::WaitStrategy::default()),
        other => Err(format!(
            "unknown wait strategy {other:?} (spin, park, spin-then-park)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let mut b = [0u8; 16];
        stamp(&mut b, 0x0102_0304_0506_0708);
        assert_eq!(read_seq(&b), 0x0102_0304_0506_0708);
        assert_eq!(read_seq(&b[..4]), u64::MAX - 1);
        assert!(wait_strategy("spin").is_ok() && wait_strategy("nap").is_err());
    }
}
