//! The bridge's header, sent as the Zenoh attachment of every sample (the
//! sample's bytes are the Zenoh payload, untouched).
//!
//! Layout, little-endian, version 1:
//!
//! | offset | size | field                                                    |
//! |-------:|-----:|----------------------------------------------------------|
//! | 0      | 4    | magic `b"bipz"`                                          |
//! | 4      | 1    | version (1)                                              |
//! | 5      | 1    | flags: 1 = a descriptor follows, 2 = a payload type follows |
//! | 6      | 2    | reserved, 0                                              |
//! | 8      | 8    | stream: names the source channel's incarnation (below)  |
//! | 16     | 8    | seq of the sample in the source channel                  |
//! | 24     | 8    | timestamp_ns (the source's CLOCK_MONOTONIC)              |
//! | 32     | 8    | lagged: samples the publishing bridge itself skipped     |
//! | 40     | 4    | meta_len, then meta_len bytes of user metadata           |
//! |        | 320  | the descriptor (`Descriptor::encode`), when flag 1       |
//! |        | 1+n+4| payload type: name length, name, version, when flag 2   |
//!
//! `stream` is [`crate::stream_id`] of the channel's name and its producer's
//! epoch: the same for every publishing bridge that reads one incarnation of
//! a channel (a restarted bridge continues the stream), new when the producer
//! restarts (its sequence numbers start over). When the epoch cannot be read
//! it is random per attachment.
//!
//! The metadata is sent without its trailing zero bytes (the receiver fills
//! its own metadata area with zeros first), so an unused 64-byte area costs
//! nothing on the wire.

use bips::{Descriptor, PayloadType};

/// `b"bipz"`.
pub const MAGIC: [u8; 4] = *b"bipz";
/// The header version this crate writes and reads.
pub const VERSION: u8 = 1;
const FLAG_DESCRIPTOR: u8 = 1;
const FLAG_TYPE: u8 = 2;
const FIXED: usize = 44;
const DESCRIPTOR_SIZE: usize = 320;

/// What travels next to a sample's bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    /// Identifies one incarnation of the source channel (its name and
    /// producer epoch); sequence gaps are only counted within a stream.
    pub stream: u64,
    /// The sample's sequence number in the source channel.
    pub seq: u64,
    /// The sample's timestamp in the source channel (CLOCK_MONOTONIC of the
    /// source host, nanoseconds).
    pub timestamp_ns: u64,
    /// Samples the publishing bridge's consumer skipped just before this one
    /// (its `Sample::lagged()`, DropOldest channels only).
    pub lagged: u64,
    /// User metadata, trailing zeros trimmed.
    pub meta: Vec<u8>,
    /// The sample's frame/tensor descriptor, if it has one.
    pub descriptor: Option<Descriptor>,
    /// The source channel's payload type (name, version), if it declares one.
    pub payload_type: Option<(String, u32)>,
}

/// Why a header could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum WireError {
    /// No attachment, or not one of ours (magic).
    NotBips,
    /// A newer (or unknown) header version.
    Version(u8),
    /// Shorter than its fields say, or a descriptor that does not decode.
    Malformed(&'static str),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::NotBips => write!(f, "no bips header (not sent by a bips bridge)"),
            WireError::Version(v) => write!(
                f,
                "bips header version {v}, this bridge reads version {VERSION}: \
                 run the same bips version on both hosts"
            ),
            WireError::Malformed(what) => write!(f, "malformed bips header: {what}"),
        }
    }
}

impl Header {
    /// The header of a sample read from a source channel.
    pub fn new(
        stream: u64,
        seq: u64,
        timestamp_ns: u64,
        lagged: u64,
        meta: &[u8],
        descriptor: Option<Descriptor>,
        payload_type: Option<&PayloadType>,
    ) -> Header {
        let used = meta.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        Header {
            stream,
            seq,
            timestamp_ns,
            lagged,
            meta: meta[..used].to_vec(),
            descriptor,
            payload_type: payload_type.map(|t| (t.name().to_owned(), t.version())),
        }
    }

    /// The bytes sent as the Zenoh attachment.
    pub fn encode(&self) -> Vec<u8> {
        let mut flags = 0;
        if self.descriptor.is_some() {
            flags |= FLAG_DESCRIPTOR;
        }
        if self.payload_type.is_some() {
            flags |= FLAG_TYPE;
        }
        let mut out = Vec::with_capacity(FIXED + self.meta.len() + DESCRIPTOR_SIZE + 72);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(flags);
        out.extend_from_slice(&[0, 0]);
        for v in [self.stream, self.seq, self.timestamp_ns, self.lagged] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&(self.meta.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.meta);
        if let Some(d) = &self.descriptor {
            out.extend_from_slice(&d.encode());
        }
        if let Some((name, version)) = &self.payload_type {
            // PayloadType names are 1..=63 bytes.
            out.push(name.len() as u8);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&version.to_le_bytes());
        }
        out
    }

    /// Reads a header sent by [`Header::encode`]; the descriptor is decoded
    /// (and so checked for well-formedness), not yet checked against the
    /// sample: `SampleMut::set_descriptor` does that.
    pub fn decode(b: &[u8]) -> Result<Header, WireError> {
        if b.len() < 6 || b[..4] != MAGIC {
            return Err(WireError::NotBips);
        }
        if b[4] != VERSION {
            return Err(WireError::Version(b[4]));
        }
        if b.len() < FIXED {
            return Err(WireError::Malformed("shorter than its fixed fields"));
        }
        let flags = b[5];
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let meta_len = u32::from_le_bytes(b[40..44].try_into().expect("4 bytes")) as usize;
        let mut at = FIXED;
        let meta = b
            .get(at..at.saturating_add(meta_len))
            .ok_or(WireError::Malformed("metadata past the end"))?
            .to_vec();
        at += meta_len;
        let descriptor = if flags & FLAG_DESCRIPTOR != 0 {
            let raw: &[u8; DESCRIPTOR_SIZE] = b
                .get(at..at + DESCRIPTOR_SIZE)
                .and_then(|s| s.try_into().ok())
                .ok_or(WireError::Malformed("descriptor past the end"))?;
            at += DESCRIPTOR_SIZE;
            Descriptor::decode(raw)
                .map_err(|_| WireError::Malformed("descriptor does not decode"))?
        } else {
            None
        };
        let payload_type = if flags & FLAG_TYPE != 0 {
            let n = *b
                .get(at)
                .ok_or(WireError::Malformed("payload type past the end"))?
                as usize;
            let name = b
                .get(at + 1..at + 1 + n)
                .and_then(|s| std::str::from_utf8(s).ok())
                .ok_or(WireError::Malformed("payload type name"))?
                .to_owned();
            let v = b
                .get(at + 1 + n..at + 5 + n)
                .ok_or(WireError::Malformed("payload type version past the end"))?;
            Some((name, u32::from_le_bytes(v.try_into().expect("4 bytes"))))
        } else {
            None
        };
        Ok(Header {
            stream: u64_at(8),
            seq: u64_at(16),
            timestamp_ns: u64_at(24),
            lagged: u64_at(32),
            meta,
            descriptor,
            payload_type,
        })
    }
}

/// Counts the samples lost between consecutive headers of one stream.
#[derive(Debug, Default)]
pub struct GapCounter {
    last: Option<(u64, u64)>,
}

/// What one header says about losses.
#[derive(Debug, PartialEq, Eq)]
pub struct Gap {
    /// Samples missing before this one: skipped by the publishing bridge
    /// (`lagged`) plus lost in transit.
    pub missing: u64,
    /// Of those, skipped by the publishing bridge at the source.
    pub at_source: u64,
    /// A new stream began (first sample, a restarted producer).
    pub new_stream: bool,
    /// A sample of the current stream at or before the last one: a duplicate
    /// (a restarted publishing bridge re-sends its channel's newest sample)
    /// or a reordered one (Zenoh does not reorder); counted, never delivered.
    pub stale: bool,
}

impl GapCounter {
    /// Accounts for `h`, which arrived after every header seen so far.
    pub fn see(&mut self, h: &Header) -> Gap {
        let gap = match self.last {
            Some((stream, last)) if stream == h.stream => {
                if h.seq <= last {
                    return Gap {
                        missing: 0,
                        at_source: 0,
                        new_stream: false,
                        stale: true,
                    };
                }
                let missing = h.seq - last - 1;
                Gap {
                    missing,
                    at_source: h.lagged.min(missing),
                    new_stream: false,
                    stale: false,
                }
            }
            // First sample of a stream: what the publishing bridge skipped
            // before it is known (its `lagged`); what was lost in transit
            // before the first arrival is not.
            _ => Gap {
                missing: h.lagged,
                at_source: h.lagged,
                new_stream: true,
                stale: false,
            },
        };
        self.last = Some((h.stream, h.seq));
        gap
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bips::DType;

    fn header(stream: u64, seq: u64, lagged: u64) -> Header {
        Header::new(stream, seq, 7, lagged, &[], None, None)
    }

    #[test]
    fn round_trip_with_everything() {
        let d = Descriptor::image(128, 128, 4, DType::U8)
            .unwrap()
            .with_format("RGBA")
            .unwrap();
        let t = PayloadType::new("camera.rgba", 3).unwrap();
        let mut meta = [0u8; 64];
        meta[..5].copy_from_slice(b"hello");
        let h = Header::new(9, 42, 1234, 2, &meta, Some(d), Some(&t));
        assert_eq!(h.meta, b"hello", "trailing zeros trimmed");
        let bytes = h.encode();
        assert_eq!(bytes.len(), FIXED + 5 + 320 + 1 + 11 + 4);
        assert_eq!(Header::decode(&bytes).unwrap(), h);
    }

    #[test]
    fn refuses_foreign_truncated_and_newer_headers() {
        let bytes = header(1, 2, 0).encode();
        assert_eq!(Header::decode(b"hello world"), Err(WireError::NotBips));
        let mut newer = bytes.clone();
        newer[4] = 2;
        assert_eq!(Header::decode(&newer), Err(WireError::Version(2)));
        for cut in [10, FIXED - 1] {
            assert!(matches!(
                Header::decode(&bytes[..cut]),
                Err(WireError::Malformed(_))
            ));
        }
        let mut long_meta = bytes.clone();
        long_meta[40..44].copy_from_slice(&1000u32.to_le_bytes());
        assert!(matches!(
            Header::decode(&long_meta),
            Err(WireError::Malformed(_))
        ));
        let mut no_desc = bytes;
        no_desc[5] = FLAG_DESCRIPTOR;
        assert!(matches!(
            Header::decode(&no_desc),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn gaps_are_counted_per_stream() {
        let mut g = GapCounter::default();
        // First of a stream: only what the source bridge skipped is known.
        assert_eq!(g.see(&header(1, 10, 3)).missing, 3);
        assert_eq!(g.see(&header(1, 11, 0)).missing, 0);
        // 12..=14 missing, 1 of them skipped at the source.
        let gap = g.see(&header(1, 15, 1));
        assert_eq!((gap.missing, gap.at_source, gap.new_stream), (3, 1, false));
        assert!(g.see(&header(1, 15, 0)).stale);
        // A restarted producer starts over: a new stream, not a huge gap.
        let gap = g.see(&header(2, 0, 0));
        assert_eq!((gap.missing, gap.new_stream), (0, true));
        assert_eq!(g.see(&header(2, 1, 0)).missing, 0);
    }
}
