//! The test stream of `bindings/c/tests/c/checksum.h`, for the Rust ends of
//! the cross-language tests (included by `checksum_producer` and
//! `checksum_consumer`).
#![allow(dead_code)] // each example uses part of it

/// Bytes per buffer of the test channel.
pub const BUFFER_SIZE: usize = 65536;
/// Metadata bytes per sample of the test channel.
pub const META_SIZE: u32 = 16;

/// CRC-32 as zlib computes it.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// Payload length of frame `i`.
pub fn frame_len(i: u32) -> usize {
    1024 + (i.wrapping_mul(997) % 60000) as usize
}

/// Fills `out` with frame `i`'s bytes.
pub fn fill(i: u32, out: &mut [u8]) {
    for (j, b) in out.iter_mut().enumerate() {
        *b = (i
            .wrapping_mul(131)
            .wrapping_add((j as u32).wrapping_mul(7))
            .wrapping_add((j >> 8) as u32)) as u8;
    }
}
