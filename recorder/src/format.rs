//! The file layout: what a bips recording holds and how each part is encoded.
//!
//! A recording is a plain [MCAP](https://mcap.dev/spec) file (uncompressed
//! chunks, with summary, indexes and CRCs):
//!
//! * **One MCAP channel per bips channel**: topic = the channel name,
//!   message encoding `protobuf`, schema [`SCHEMA_NAME`] (`bips.Sample`,
//!   encoding `protobuf`, data a binary `FileDescriptorSet`: Foxglove and the
//!   `mcap` tools decode it as they do any protobuf channel). The channel
//!   record's metadata holds what a new channel needs to look the same
//!   ([`ChannelInfo`]): `bips.format`, `bips.buffers`, `bips.buffer_size`,
//!   `bips.meta_size`, `bips.max_consumers`, `bips.ring_capacity`,
//!   `bips.alignment`, `bips.policy` (`block` | `drop-oldest`) and, on a typed
//!   channel, `bips.payload_type` (as text) and `bips.payload_type_block`
//!   (its 512-byte wire form, hex).
//! * **One message per sample**: sequence = the bips sequence number modulo
//!   2^32 (MCAP's field is 32-bit; the full 64-bit one is in the body), log
//!   time = publish time = the sample's timestamp on the Unix clock (see
//!   below), body = a `bips.Sample` protobuf:
//!
//! ```text
//! syntax = "proto3";
//! package bips;
//! message Sample {
//!   uint64 seq = 1;             // bips sequence number
//!   uint64 timestamp_ns = 2;    // the producer's timestamp as published (CLOCK_MONOTONIC ns by default)
//!   uint64 lagged = 3;          // samples lost just before this one (DropOldest)
//!   bytes meta = 4;             // the per-sample user metadata (meta_size bytes)
//!   bytes descriptor = 5;       // the frame descriptor, 320-byte wire form (bips_core::descriptor); empty: none
//!   string descriptor_text = 6; // the same, for people: "uint8 [1080, 1920, 3] BGR"
//!   bytes payload = 7;          // the sample's bytes
//! }
//! ```
//!
//! * **Clock**: a sample's timestamp is what its producer published:
//!   `CLOCK_MONOTONIC` nanoseconds unless it set its own
//!   ([`bips::Sample::timestamp_ns`]). Monotonic time counts from boot, so a
//!   tool would show 1970 dates: the recorder measures
//!   `monotonic_to_unix_offset_ns` (Unix time minus monotonic time) when it
//!   starts and writes log time = timestamp + that offset, so Foxglove and
//!   `mcap info` show real dates. A timestamp already past 2001-09-09 (1e18
//!   ns) is taken to be Unix time and written as is. The offset applied is in
//!   the `bips.record` metadata (`log_time_offset_ns`); the body keeps the
//!   timestamp as published either way.
//! * **Metadata records**: `bips.recording`, written first (format version,
//!   bips version, channel, clock, `monotonic_to_unix_offset_ns`,
//!   `started_unix_ns`), and `bips.record`, written when the recording closes:
//!   `samples`, `lagged` (samples the recorder lost: under `DropOldest` the
//!   producer overwrote them before the recorder read them), `payload_bytes`,
//!   `max_len`, `max_meta_len`, `descriptor_errors`, `first_seq`, `last_seq`,
//!   `stopped` (`count` | `duration` | `disconnected` | `stopped`),
//!   `log_time_offset_ns`, `ended_unix_ns`.

use std::collections::BTreeMap;

use bips::{Backpressure, Descriptor, PayloadType};

/// Name of the schema of a recorded bips channel.
pub const SCHEMA_NAME: &str = "bips.Sample";
/// Schema and message encoding.
pub const ENCODING: &str = "protobuf";
/// Version of this layout, in channel metadata `bips.format`.
pub const FORMAT_VERSION: u32 = 1;
/// Name of the metadata record written when a recording starts.
pub const META_START: &str = "bips.recording";
/// Name of the metadata record written when a recording closes.
pub const META_STATS: &str = "bips.record";
/// A timestamp at or above this (ns) is taken to be Unix time already.
pub const UNIX_THRESHOLD_NS: u64 = 1_000_000_000_000_000_000;

// ------------------------------------------------------------ protobuf wire

const VARINT: u64 = 0;
const I64: u64 = 1;
const LEN: u64 = 2;
const I32: u64 = 5;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_tag(out: &mut Vec<u8>, field: u64, wire: u64) {
    put_varint(out, (field << 3) | wire);
}

fn put_u64(out: &mut Vec<u8>, field: u64, v: u64) {
    if v != 0 {
        put_tag(out, field, VARINT);
        put_varint(out, v);
    }
}

fn put_bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    if !b.is_empty() {
        put_tag(out, field, LEN);
        put_varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
}

/// Reads a varint at `*at`.
fn get_varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// One recorded sample, as decoded from a message body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordedSample<'a> {
    /// The bips sequence number in the recorded channel.
    pub seq: u64,
    /// The producer's timestamp as published (ns; `CLOCK_MONOTONIC` unless
    /// it set its own).
    pub timestamp_ns: u64,
    /// The MCAP log time (ns since the Unix epoch, see the module docs).
    pub log_time: u64,
    /// Samples the recorder lost just before this one.
    pub lagged: u64,
    /// The per-sample user metadata.
    pub meta: &'a [u8],
    /// The frame descriptor's wire form (empty: none).
    pub descriptor_wire: &'a [u8],
    /// The payload.
    pub payload: &'a [u8],
}

impl RecordedSample<'_> {
    /// The frame descriptor, if the sample had one; `Err` when the recorded
    /// bytes do not decode.
    pub fn descriptor(&self) -> Result<Option<Descriptor>, String> {
        if self.descriptor_wire.is_empty() {
            return Ok(None);
        }
        let wire: &[u8; bips_wire::DESCRIPTOR_SIZE] =
            self.descriptor_wire.try_into().map_err(|_| {
                format!(
                    "descriptor of {} bytes (want {})",
                    self.descriptor_wire.len(),
                    bips_wire::DESCRIPTOR_SIZE
                )
            })?;
        Descriptor::decode(wire).map_err(|e| format!("descriptor: {e}"))
    }
}

/// Sizes of the wire forms (bips re-exports the types, not the constants).
pub(crate) mod bips_wire {
    /// Bytes of an encoded descriptor.
    pub const DESCRIPTOR_SIZE: usize = 320;
    /// Bytes of an encoded payload type block.
    pub const PAYLOAD_TYPE_SIZE: usize = 512;
}

/// Encodes the body of one sample into `out` (cleared first).
#[allow(clippy::too_many_arguments)]
pub(crate) fn encode_sample(
    out: &mut Vec<u8>,
    seq: u64,
    timestamp_ns: u64,
    lagged: u64,
    meta: &[u8],
    descriptor: Option<&Descriptor>,
    payload: &[u8],
) {
    out.clear();
    out.reserve(payload.len() + meta.len() + 512);
    put_u64(out, 1, seq);
    put_u64(out, 2, timestamp_ns);
    put_u64(out, 3, lagged);
    put_bytes(out, 4, meta);
    if let Some(d) = descriptor {
        put_bytes(out, 5, &d.encode());
        put_bytes(out, 6, d.to_string().as_bytes());
    }
    put_bytes(out, 7, payload);
}

/// Decodes a message body; unknown fields are skipped (a newer writer may
/// add some). `Err` says what is malformed.
pub(crate) fn decode_sample(b: &[u8], log_time: u64) -> Result<RecordedSample<'_>, String> {
    let mut s = RecordedSample {
        log_time,
        ..Default::default()
    };
    let mut at = 0;
    while at < b.len() {
        let key = get_varint(b, &mut at).ok_or("truncated field key")?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            VARINT => {
                let v = get_varint(b, &mut at).ok_or("truncated varint")?;
                match field {
                    1 => s.seq = v,
                    2 => s.timestamp_ns = v,
                    3 => s.lagged = v,
                    _ => {}
                }
            }
            LEN => {
                let n = get_varint(b, &mut at).ok_or("truncated length")?;
                let end = usize::try_from(n)
                    .ok()
                    .and_then(|n| at.checked_add(n))
                    .filter(|&e| e <= b.len())
                    .ok_or("field longer than the message")?;
                let v = &b[at..end];
                at = end;
                match field {
                    4 => s.meta = v,
                    5 => s.descriptor_wire = v,
                    7 => s.payload = v,
                    _ => {}
                }
            }
            I64 => {
                at = at
                    .checked_add(8)
                    .filter(|&e| e <= b.len())
                    .ok_or("truncated")?
            }
            I32 => {
                at = at
                    .checked_add(4)
                    .filter(|&e| e <= b.len())
                    .ok_or("truncated")?
            }
            w => return Err(format!("unknown protobuf wire type {w}")),
        }
    }
    Ok(s)
}

/// The schema data: a binary `google.protobuf.FileDescriptorSet` holding
/// `bips/sample.proto` (the message in the module docs).
pub fn schema_data() -> Vec<u8> {
    // FieldDescriptorProto.Type codes.
    const T_UINT64: u64 = 4;
    const T_STRING: u64 = 9;
    const T_BYTES: u64 = 12;
    const LABEL_OPTIONAL: u64 = 1;
    let fields: [(&str, u64, u64, &str); 7] = [
        ("seq", 1, T_UINT64, "seq"),
        ("timestamp_ns", 2, T_UINT64, "timestampNs"),
        ("lagged", 3, T_UINT64, "lagged"),
        ("meta", 4, T_BYTES, "meta"),
        ("descriptor", 5, T_BYTES, "descriptor"),
        ("descriptor_text", 6, T_STRING, "descriptorText"),
        ("payload", 7, T_BYTES, "payload"),
    ];
    let mut message = Vec::new();
    put_bytes(&mut message, 1, b"Sample");
    for (name, number, ty, json) in fields {
        let mut f = Vec::new();
        put_bytes(&mut f, 1, name.as_bytes());
        put_u64(&mut f, 3, number);
        put_u64(&mut f, 4, LABEL_OPTIONAL);
        put_u64(&mut f, 5, ty);
        put_bytes(&mut f, 10, json.as_bytes());
        put_bytes(&mut message, 2, &f);
    }
    let mut file = Vec::new();
    put_bytes(&mut file, 1, b"bips/sample.proto");
    put_bytes(&mut file, 2, b"bips");
    put_bytes(&mut file, 4, &message);
    put_bytes(&mut file, 12, b"proto3");
    let mut set = Vec::new();
    put_bytes(&mut set, 1, &file);
    set
}

// ------------------------------------------------------ channel metadata

/// What a recorded channel was: everything a replay needs to create a
/// channel that looks the same to its consumers (from the MCAP channel
/// record's metadata, see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelInfo {
    /// The MCAP topic: the recorded channel's name.
    pub topic: String,
    /// Buffers in the pool.
    pub buffers: u32,
    /// Bytes per buffer.
    pub buffer_size: u64,
    /// Bytes of user metadata per sample.
    pub meta_size: u32,
    /// Consumer table capacity.
    pub max_consumers: u32,
    /// Descriptor ring capacity.
    pub ring_capacity: u32,
    /// Buffer alignment.
    pub alignment: u32,
    /// Backpressure policy.
    pub policy: Backpressure,
    /// The payload type the channel declared, if any.
    pub payload_type: Option<PayloadType>,
}

fn policy_name(p: Backpressure) -> &'static str {
    match p {
        Backpressure::DropOldest => "drop-oldest",
        _ => "block",
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl ChannelInfo {
    /// The geometry and type of a channel, as its consumer sees them.
    pub fn of(consumer: &bips::Consumer) -> ChannelInfo {
        let g = consumer.geometry();
        ChannelInfo {
            topic: consumer.name().to_owned(),
            buffers: g.buffer_count,
            buffer_size: g.buffer_size,
            meta_size: g.meta_size,
            max_consumers: g.max_consumers,
            ring_capacity: g.ring_capacity,
            alignment: g.alignment,
            policy: g.policy,
            payload_type: consumer.payload_type().copied(),
        }
    }

    /// The channel record's metadata.
    pub fn to_metadata(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: String| m.insert(format!("bips.{k}"), v);
        put("format", FORMAT_VERSION.to_string());
        put("buffers", self.buffers.to_string());
        put("buffer_size", self.buffer_size.to_string());
        put("meta_size", self.meta_size.to_string());
        put("max_consumers", self.max_consumers.to_string());
        put("ring_capacity", self.ring_capacity.to_string());
        put("alignment", self.alignment.to_string());
        put("policy", policy_name(self.policy).to_owned());
        if let Some(t) = &self.payload_type {
            put("payload_type", t.to_string());
            put("payload_type_block", hex(&t.encode()));
        }
        m
    }

    /// Parses a channel record's metadata; `Err` names the bad key.
    pub fn from_metadata(topic: &str, m: &BTreeMap<String, String>) -> Result<ChannelInfo, String> {
        fn num<T: std::str::FromStr>(m: &BTreeMap<String, String>, k: &str) -> Result<T, String> {
            let v = m
                .get(&format!("bips.{k}"))
                .ok_or_else(|| format!("channel metadata bips.{k} missing"))?;
            v.parse()
                .map_err(|_| format!("channel metadata bips.{k}={v:?} is not a number"))
        }
        let format: u32 = num(m, "format")?;
        if format != FORMAT_VERSION {
            return Err(format!(
                "layout version {format} (this bips reads version {FORMAT_VERSION}); \
                 use the bips that recorded it"
            ));
        }
        let policy = match m.get("bips.policy").map(String::as_str) {
            Some("block") => Backpressure::Block,
            Some("drop-oldest") => Backpressure::DropOldest,
            other => return Err(format!("channel metadata bips.policy={other:?}")),
        };
        let payload_type = match m.get("bips.payload_type_block") {
            None => None,
            Some(h) => {
                let bytes = unhex(h)
                    .filter(|b| b.len() == bips_wire::PAYLOAD_TYPE_SIZE)
                    .ok_or("channel metadata bips.payload_type_block is not 512 bytes of hex")?;
                let block: &[u8; bips_wire::PAYLOAD_TYPE_SIZE] = bytes[..].try_into().unwrap();
                PayloadType::decode(block)
                    .map_err(|e| format!("channel metadata bips.payload_type_block: {e}"))?
            }
        };
        Ok(ChannelInfo {
            topic: topic.to_owned(),
            buffers: num(m, "buffers")?,
            buffer_size: num(m, "buffer_size")?,
            meta_size: num(m, "meta_size")?,
            max_consumers: num(m, "max_consumers")?,
            ring_capacity: num(m, "ring_capacity")?,
            alignment: num(m, "alignment")?,
            policy,
            payload_type,
        })
    }

    /// Options that create a channel of this geometry and type.
    pub fn options(&self) -> bips::Options {
        let size = usize::try_from(self.buffer_size).unwrap_or(usize::MAX);
        let mut o = bips::Options::new(self.buffers, size)
            .backpressure(self.policy)
            .meta_size(self.meta_size)
            .max_consumers(self.max_consumers)
            .ring_capacity(self.ring_capacity)
            .alignment(self.alignment);
        if let Some(t) = self.payload_type {
            o = o.payload_type(t);
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bips::DType;

    #[test]
    fn sample_round_trip() {
        let d = Descriptor::image(2, 3, 3, DType::U8)
            .unwrap()
            .with_format("RGB")
            .unwrap();
        let mut out = Vec::new();
        let payload: Vec<u8> = (0..18).collect();
        encode_sample(&mut out, 1 << 40, 123, 7, b"meta", Some(&d), &payload);
        let s = decode_sample(&out, 99).unwrap();
        assert_eq!(
            (s.seq, s.timestamp_ns, s.lagged, s.log_time),
            (1 << 40, 123, 7, 99)
        );
        assert_eq!((s.meta, s.payload), (&b"meta"[..], &payload[..]));
        assert_eq!(s.descriptor(), Ok(Some(d)));
        // Zero fields are omitted and decode as zero; no descriptor.
        encode_sample(&mut out, 0, 0, 0, &[], None, &[]);
        assert!(out.is_empty());
        assert_eq!(decode_sample(&out, 0).unwrap(), RecordedSample::default());
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let mut out = Vec::new();
        encode_sample(&mut out, 1, 2, 3, b"m", None, b"payload");
        assert!(decode_sample(&out, 0).is_ok());
        // Cut inside the payload: refused, never read past the end.
        assert!(decode_sample(&out[..out.len() - 1], 0).is_err());
        for cut in 1..out.len() {
            let _ = decode_sample(&out[..cut], 0); // no panic
        }
        assert!(decode_sample(&[0x3a, 0xff, 0xff, 0xff, 0xff, 0x0f], 0).is_err());
        assert!(decode_sample(&[0x0b], 0).is_err(), "wire type 3");
    }

    #[test]
    fn metadata_round_trip() {
        let info = ChannelInfo {
            topic: "cam".into(),
            buffers: 4,
            buffer_size: 4096,
            meta_size: 64,
            max_consumers: 8,
            ring_capacity: 4,
            alignment: 4096,
            policy: Backpressure::DropOldest,
            payload_type: Some(
                PayloadType::new("image/rgb8", 2)
                    .unwrap()
                    .with_descriptor(Descriptor::image(16, 16, 3, DType::U8).unwrap()),
            ),
        };
        let back = ChannelInfo::from_metadata("cam", &info.to_metadata()).unwrap();
        assert_eq!(back, info);
        let mut m = info.to_metadata();
        m.insert("bips.format".into(), "9".into());
        assert!(ChannelInfo::from_metadata("cam", &m)
            .unwrap_err()
            .contains("version 9"));
    }
}
