//! Self-checking payloads: sequence, producer incarnation, varying length,
//! 64-bit hash; the seeded generator behind every random choice.

use super::*;

/// SplitMix64 finaliser.
pub(super) fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A small deterministic generator (SplitMix64).
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Rng {
        Rng(mix64(seed ^ 0x5EED_50A4_0000_0001))
    }
    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// Uniform in `lo..=hi`.
    pub(super) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }
    /// True with probability `1/n`.
    pub(super) fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// 64-bit hash of `data` (word-wise multiply-xorshift, then SplitMix64).
pub(super) fn hash64(data: &[u8]) -> u64 {
    let mut h = 0x243F_6A88_85A3_08D3u64 ^ data.len() as u64;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 29;
    }
    for &b in chunks.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
    }
    mix64(h)
}

/// The payload's identity word: a tag and the producer incarnation.
pub(super) fn epoch_word(inc: u64) -> u64 {
    0xB1B5_50A0_0000_0000 | (inc & 0xFFFF_FFFF)
}

/// Writes a payload of `len` bytes (`MIN_LEN..`) into `buf`:
/// `[epoch u64][seq u64][len u32][0 u32][body...][hash u64]`, the hash over
/// everything before it; the body is pseudo-random from (epoch, seq).
pub(super) fn write_payload(buf: &mut [u8], len: usize, inc: u64, seq: u64) {
    let buf = &mut buf[..len];
    buf[0..8].copy_from_slice(&epoch_word(inc).to_le_bytes());
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
    buf[16..20].copy_from_slice(&(len as u32).to_le_bytes());
    buf[20..24].copy_from_slice(&0u32.to_le_bytes());
    let body_end = len - 8;
    let mut g = mix64(epoch_word(inc) ^ seq.rotate_left(17));
    let mut chunks = buf[24..body_end].chunks_exact_mut(8);
    for c in &mut chunks {
        g = g.wrapping_add(0x9E37_79B9_7F4A_7C15);
        c.copy_from_slice(&mix64(g).to_le_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b = (g >> (8 * i)) as u8;
    }
    let h = hash64(&buf[..body_end]);
    buf[body_end..].copy_from_slice(&h.to_le_bytes());
}

/// Checks a received payload against its sample's sequence and length;
/// answers the producer incarnation it names.
pub(super) fn check_payload(data: &[u8], seq: u64) -> Result<u64, String> {
    let len = data.len();
    if len < MIN_LEN {
        return Err(format!("seq {seq}: length {len} < {MIN_LEN}"));
    }
    let word = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"));
    let body_end = len - 8;
    if hash64(&data[..body_end]) != word(body_end) {
        return Err(format!(
            "seq {seq}: hash mismatch (torn or overwritten, len {len})"
        ));
    }
    let epoch = word(0);
    if epoch & 0xFFFF_FFFF_0000_0000 != epoch_word(0) {
        return Err(format!("seq {seq}: bad tag {epoch:#x}"));
    }
    if word(8) != seq {
        return Err(format!("seq {seq}: payload names seq {}", word(8)));
    }
    let named_len = u32::from_le_bytes(data[16..20].try_into().expect("4 bytes")) as usize;
    if named_len != len {
        return Err(format!(
            "seq {seq}: payload names len {named_len}, sample has {len}"
        ));
    }
    Ok(epoch & 0xFFFF_FFFF)
}

/// Draws a payload length: half small (32..=256 B), half anywhere up to `cap`.
pub(super) fn draw_len(rng: &mut Rng, cap: usize) -> usize {
    if rng.one_in(2) {
        rng.range(MIN_LEN as u64, 256) as usize
    } else {
        rng.range(MIN_LEN as u64, cap as u64) as usize
    }
}
