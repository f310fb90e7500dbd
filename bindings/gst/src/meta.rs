//! The per-sample metadata header that `bipssink` writes and `bipssrc` (and
//! `bips.gst` in Python) read: version 2, little-endian, at offset 0 of the
//! sample's user-metadata area (the channel's `meta_size`, 1024 B by default).
//! It carries what the frame descriptor does not: the caps, timestamps,
//! offsets and flags. A frame's geometry (shape, strides, plane offsets,
//! pixel format) is in the sample's frame descriptor ([`crate::video`]);
//! version 1 repeated the plane offsets and strides here (at 72..112) and
//! put the caps at 128.
//!
//! | offset | size | field | meaning |
//! |---:|---:|---|---|
//! | 0 | 4 | `magic` | the bytes `b"BGST"` |
//! | 4 | 2 | `version` | `2` |
//! | 6 | 2 | `header_len` | `72`: where the caps string starts |
//! | 8 | 8 | `pts` | ns, `u64::MAX` = none |
//! | 16 | 8 | `dts` | ns, `u64::MAX` = none |
//! | 24 | 8 | `duration` | ns, `u64::MAX` = none |
//! | 32 | 8 | `offset` | `GST_BUFFER_OFFSET`, `u64::MAX` = none |
//! | 40 | 8 | `offset_end` | `GST_BUFFER_OFFSET_END`, `u64::MAX` = none |
//! | 48 | 4 | `flags` | `GstBufferFlags` bits |
//! | 52 | 4 | `caps_len` | bytes of the caps string (UTF-8, no NUL) |
//! | 56 | 8 | `base_time` | the sender's element base time (ns of its pipeline clock), `u64::MAX` = none |
//! | 64 | 8 | `running_time` | running time of `pts` in the sender's segment, `u64::MAX` = none |
//! | 72 | `caps_len` | caps | `gst_caps_to_string` of the buffer's caps |
//!
//! `base_time + running_time` is the sender's pipeline clock time of the
//! frame; with GStreamer's default system clock that is `CLOCK_MONOTONIC`, so
//! a receiver on the same machine can compute the end-to-end latency.

/// `b"BGST"`.
pub const MAGIC: [u8; 4] = *b"BGST";
/// The layout version this crate writes and reads.
pub const VERSION: u16 = 2;
/// Where the caps string starts.
pub const HEADER_LEN: usize = 72;
/// The default channel `meta_size` of `bipssink`.
pub const DEFAULT_META_SIZE: u32 = 1024;
/// "No value" for the 64-bit time and offset fields.
pub const NONE: u64 = u64::MAX;

/// The fixed part of the metadata of one sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Presentation timestamp, ns (`NONE` = none).
    pub pts: u64,
    /// Decoding timestamp, ns (`NONE` = none).
    pub dts: u64,
    /// Duration, ns (`NONE` = none).
    pub duration: u64,
    /// Buffer offset (`NONE` = none).
    pub offset: u64,
    /// Buffer end offset (`NONE` = none).
    pub offset_end: u64,
    /// `GstBufferFlags` bits.
    pub flags: u32,
    /// The sender's base time (`NONE` = none).
    pub base_time: u64,
    /// Running time of `pts` in the sender's segment (`NONE` = none).
    pub running_time: u64,
}

/// Why metadata could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaError {
    /// The metadata area is smaller than the header plus the caps string.
    TooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// No `BGST` magic: the sample was not written by `bipssink`.
    BadMagic,
    /// Another layout version.
    BadVersion(u16),
    /// The caps string is not UTF-8, or holds a NUL.
    BadCaps,
}

impl std::fmt::Display for MetaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetaError::TooSmall { needed, available } => write!(
                f,
                "sample metadata needs {needed} bytes but the channel has {available} \
                 (raise bipssink's meta-size)"
            ),
            MetaError::BadMagic => write!(
                f,
                "sample metadata has no BGST magic: the channel was not written by bipssink"
            ),
            MetaError::BadVersion(v) => write!(
                f,
                "sample metadata layout version {v}, this build reads version {VERSION}"
            ),
            MetaError::BadCaps => write!(f, "sample caps string is not UTF-8 or holds a NUL"),
        }
    }
}

impl std::error::Error for MetaError {}

fn put_u16(dst: &mut [u8], at: usize, v: u16) {
    dst[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(dst: &mut [u8], at: usize, v: u32) {
    dst[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(dst: &mut [u8], at: usize, v: u64) {
    dst[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get_u16(src: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([src[at], src[at + 1]])
}
fn get_u32(src: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&src[at..at + 4]);
    u32::from_le_bytes(b)
}
fn get_u64(src: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&src[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Writes `header` and `caps` into `dst` (a sample's metadata area).
pub fn write(dst: &mut [u8], header: &Header, caps: &[u8]) -> Result<(), MetaError> {
    let needed = HEADER_LEN + caps.len();
    if dst.len() < needed {
        return Err(MetaError::TooSmall {
            needed,
            available: dst.len(),
        });
    }
    dst[..HEADER_LEN].fill(0);
    dst[0..4].copy_from_slice(&MAGIC);
    put_u16(dst, 4, VERSION);
    put_u16(dst, 6, HEADER_LEN as u16);
    put_u64(dst, 8, header.pts);
    put_u64(dst, 16, header.dts);
    put_u64(dst, 24, header.duration);
    put_u64(dst, 32, header.offset);
    put_u64(dst, 40, header.offset_end);
    put_u32(dst, 48, header.flags);
    put_u32(dst, 52, caps.len() as u32);
    put_u64(dst, 56, header.base_time);
    put_u64(dst, 64, header.running_time);
    dst[HEADER_LEN..needed].copy_from_slice(caps);
    Ok(())
}

/// Reads the header and the caps string from `src` (a sample's metadata
/// area, which another process wrote: every length is checked). Parse a
/// private copy of the area, not the shared memory itself, which that
/// process may rewrite meanwhile.
pub fn read(src: &[u8]) -> Result<(Header, &str), MetaError> {
    if src.len() < HEADER_LEN {
        return Err(MetaError::TooSmall {
            needed: HEADER_LEN,
            available: src.len(),
        });
    }
    if src[0..4] != MAGIC {
        return Err(MetaError::BadMagic);
    }
    let version = get_u16(src, 4);
    if version != VERSION {
        return Err(MetaError::BadVersion(version));
    }
    let start = usize::from(get_u16(src, 6)).max(HEADER_LEN);
    let caps_len = get_u32(src, 52) as usize;
    let end = start
        .checked_add(caps_len)
        .filter(|&e| e <= src.len())
        .ok_or(MetaError::TooSmall {
            needed: start.saturating_add(caps_len),
            available: src.len(),
        })?;
    let caps = std::str::from_utf8(&src[start..end]).map_err(|_| MetaError::BadCaps)?;
    if caps.contains('\0') {
        return Err(MetaError::BadCaps);
    }
    Ok((
        Header {
            pts: get_u64(src, 8),
            dts: get_u64(src, 16),
            duration: get_u64(src, 24),
            offset: get_u64(src, 32),
            offset_end: get_u64(src, 40),
            flags: get_u32(src, 48),
            base_time: get_u64(src, 56),
            running_time: get_u64(src, 64),
        },
        caps,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = Header {
            pts: 1,
            dts: NONE,
            duration: 3,
            offset: 4,
            offset_end: 5,
            flags: 0x40,
            base_time: 7,
            running_time: 8,
        };
        let mut area = vec![0u8; 1024];
        let caps = b"video/x-raw, format=(string)RGBA, width=(int)1920";
        write(&mut area, &h, caps).unwrap();
        assert_eq!(&area[..4], b"BGST");
        let (back, c) = read(&area).unwrap();
        assert_eq!(back, h);
        assert_eq!(c.as_bytes(), caps);
    }

    #[test]
    fn refuses_bad_input() {
        let mut area = vec![0u8; 200];
        assert_eq!(read(&area).unwrap_err(), MetaError::BadMagic);
        assert!(matches!(
            write(&mut area, &Header::default(), &[b'x'; 150]),
            Err(MetaError::TooSmall { needed: 222, .. })
        ));
        write(&mut area, &Header::default(), b"abc").unwrap();
        area[52..56].copy_from_slice(&u32::MAX.to_le_bytes()); // hostile caps_len
        assert!(matches!(read(&area), Err(MetaError::TooSmall { .. })));
        write(&mut area, &Header::default(), b"ab\0c").unwrap();
        assert_eq!(read(&area).unwrap_err(), MetaError::BadCaps);
        area[4] = 9;
        assert_eq!(read(&area).unwrap_err(), MetaError::BadVersion(9));
        assert!(matches!(read(&area[..10]), Err(MetaError::TooSmall { .. })));
    }
}
