//! The shared region: `repr(C)` types, geometry, offsets, formatting and validation.
//!
//! A channel is one contiguous region laid out as
//!
//! ```text
//! offset 0      Header          (128 B)   geometry + identity, written once at format
//! 128           ProducerBlock   (640 B)   tail/doorbell | head | state | producer-waiting | sleepers
//! 768           ConsumerEntry x max_consumers (128 B each; holds inline when max_held <= 8)
//! ...           hold runs     x max_consumers (only when max_held > 8: max_held words each,
//!                                              rounded up to a 128-B line)
//! ...           RingSlot      x ring_capacity  (32 B each)   seq stamp, buffer index, len, timestamp
//! ...           BufferDesc    x buffer_count   (64 B each)   state, seq (producer's bookkeeping)
//! ...           TypeBlock     (512 B)   the channel's payload type, written once at format
//! ...           descriptor    x buffer_count   (320 B each)  each sample's frame/tensor descriptor
//! ...           meta area     x buffer_count   (meta_stride each, 64-B aligned)
//! data_offset   buffers       x buffer_count   (buffer_stride each, `alignment`-aligned)
//! ```
//!
//! Every word of the region is an atomic, padding included: the region is shared with other
//! processes that may be buggy or hostile, and an atomic load of a racing write
//! is defined behaviour where a plain load is not. Geometry is read once, when a
//! region is validated, into a process-local [`Geometry`]; all indices taken from
//! the region afterwards are bounded against that local copy (invariant S3).

use crate::descriptor::{DescriptorError, PayloadType, DESCRIPTOR_SIZE, PAYLOAD_TYPE_SIZE};
use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// `b"BIPSRING"` read as a little-endian `u64`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"BIPSRING");
/// Layout version; bumped on any change of the shared layout or protocol.
pub const VERSION: u32 = 4;
/// The default held-sample limit of a channel ([`Geometry::max_held`]): the
/// samples one consumer may hold at once unless the producer chose another.
pub const MAX_HELD: usize = 8;
/// Hold words that live in the consumer's own [`ConsumerEntry`] line. A
/// channel with `max_held <= INLINE_HELD` keeps every hold there (the common
/// case: one line per consumer, as in layout version 3); a larger one keeps
/// them in a per-consumer run after the consumer table
/// ([`Layout::holds_offset`]).
pub const INLINE_HELD: usize = 8;
/// Cache-line padding unit: 128 B covers x86-64 (adjacent-line prefetch) and
/// Apple/Neoverse aarch64, and keeps the layout identical on every target.
pub const LINE: usize = 128;

/// Upper bounds accepted by [`Layout::new`]; anything beyond is a corrupt or
/// hostile header, not a real channel.
pub mod limits {
    /// Most buffers in one pool.
    pub const MAX_BUFFERS: u32 = 1 << 16;
    /// Largest buffer (1 TiB).
    pub const MAX_BUFFER_SIZE: u64 = 1 << 40;
    /// Largest descriptor ring.
    pub const MAX_RING: u32 = 1 << 20;
    /// Most consumers per channel.
    pub const MAX_CONSUMERS: u32 = 1024;
    /// Largest per-sample user metadata area.
    pub const MAX_META: u32 = 4096;
    /// Smallest buffer alignment (a cache line).
    pub const MIN_ALIGN: u32 = 64;
    /// Largest buffer alignment (2 MiB, a huge page).
    pub const MAX_ALIGN: u32 = 1 << 21;
    /// Most samples one consumer may hold at once (a consumer's held set is
    /// a 64-bit mask).
    pub const MAX_HELD: u32 = 64;
}

/// What the producer does when every buffer is still needed by a consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Policy {
    /// Lossless: the slowest live consumer paces the producer.
    Block = 1,
    /// Latest wins: the producer recycles the oldest sample no consumer holds;
    /// slow consumers skip ahead and are told how many samples they lost.
    DropOldest = 2,
}

impl Policy {
    /// Decodes the on-region value.
    pub fn from_u32(v: u32) -> Option<Policy> {
        match v {
            1 => Some(Policy::Block),
            2 => Some(Policy::DropOldest),
            _ => None,
        }
    }
}

/// The shape of a channel: everything needed to compute its layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// Buffers in the pool (1..=65536).
    pub buffer_count: u32,
    /// Bytes per buffer (1..=1 TiB).
    pub buffer_size: u64,
    /// Alignment of the data region and of every buffer: a power of two, 64..=2 MiB.
    pub alignment: u32,
    /// Descriptor ring capacity: a power of two, at least `buffer_count`.
    pub ring_capacity: u32,
    /// Consumer table capacity (1..=1024).
    pub max_consumers: u32,
    /// Bytes of user metadata per sample (0..=4096).
    pub meta_size: u32,
    /// Backpressure policy.
    pub policy: Policy,
    /// Samples one consumer may hold at once (1..=64, default [`MAX_HELD`]).
    /// Up to [`INLINE_HELD`] the holds live in the consumer's entry line;
    /// beyond, in a run of its own that the producer scans too (each retire
    /// reads `max_held` words per live consumer).
    pub max_held: u32,
}

impl Geometry {
    /// A geometry with defaults for everything but the pool: ring capacity the
    /// next power of two of `buffer_count`, 8 consumers, 64 B of metadata,
    /// 4096-B alignment, `Block`, [`MAX_HELD`] (8) held samples per consumer.
    pub fn new(buffer_count: u32, buffer_size: u64) -> Geometry {
        Geometry {
            buffer_count,
            buffer_size,
            alignment: 4096,
            ring_capacity: buffer_count.max(1).checked_next_power_of_two().unwrap_or(0),
            max_consumers: 8,
            meta_size: 64,
            policy: Policy::Block,
            max_held: MAX_HELD as u32,
        }
    }
}

/// Why a geometry or a region was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayoutError {
    /// The region does not start with [`MAGIC`].
    BadMagic {
        /// The value found.
        found: u64,
    },
    /// The magic is still zero: the creator has not finished formatting.
    NotReady,
    /// Made by another layout version of bips.
    UnsupportedVersion {
        /// The version found.
        found: u32,
        /// The version this build speaks.
        expected: u32,
    },
    /// A geometry field is out of its accepted range.
    OutOfRange {
        /// The field's name.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// Sizes overflow the address space.
    Overflow,
    /// The region is shorter than its geometry needs.
    RegionTooSmall {
        /// Bytes the geometry needs.
        need: u64,
        /// Bytes available.
        have: u64,
    },
    /// The region's base is not aligned to the geometry's alignment.
    Misaligned {
        /// Alignment needed.
        need: u64,
    },
    /// A stored derived value disagrees with the geometry (a corrupt header).
    Inconsistent {
        /// The field's name.
        field: &'static str,
    },
    /// The channel's payload type is malformed, or its fixed descriptor does
    /// not fit a buffer.
    BadPayloadType(DescriptorError),
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            LayoutError::BadMagic { found } => {
                write!(f, "not a bips channel (magic {found:#018x})")
            }
            LayoutError::NotReady => write!(f, "channel is still being created"),
            LayoutError::UnsupportedVersion { found, expected } => write!(
                f,
                "channel layout version {found}, this build speaks version {expected}"
            ),
            LayoutError::OutOfRange { field, value } => {
                write!(f, "geometry field `{field}` out of range: {value}")
            }
            LayoutError::Overflow => write!(f, "geometry overflows the address space"),
            LayoutError::RegionTooSmall { need, have } => {
                write!(f, "region too small: need {need} bytes, have {have}")
            }
            LayoutError::Misaligned { need } => {
                write!(f, "region base not aligned to {need} bytes")
            }
            LayoutError::Inconsistent { field } => {
                write!(f, "header field `{field}` disagrees with the geometry")
            }
            LayoutError::BadPayloadType(e) => write!(f, "bad payload type: {e}"),
        }
    }
}

/// The first 128 bytes of a region. Written once by [`crate::Region::format`];
/// read once by [`crate::Region::attach`].
#[repr(C, align(128))]
#[cfg_attr(not(loom), derive(bytemuck::Zeroable))]
pub struct Header {
    /// [`MAGIC`]; stored last (Release) so a half-formatted region reads as [`LayoutError::NotReady`].
    pub magic: AtomicU64,
    /// [`VERSION`].
    pub version: AtomicU32,
    /// `size_of::<Header>()`, a cheap cross-build check.
    pub header_size: AtomicU32,
    /// [`Geometry::buffer_count`].
    pub buffer_count: AtomicU32,
    /// [`Geometry::ring_capacity`].
    pub ring_capacity: AtomicU32,
    /// [`Geometry::max_consumers`].
    pub max_consumers: AtomicU32,
    /// [`Geometry::meta_size`].
    pub meta_size: AtomicU32,
    /// [`Geometry::alignment`].
    pub alignment: AtomicU32,
    /// [`Policy`] as `u32`.
    pub policy: AtomicU32,
    /// [`Geometry::buffer_size`].
    pub buffer_size: AtomicU64,
    /// [`Layout::total_size`], checked against the geometry.
    pub total_size: AtomicU64,
    /// Identity of this incarnation of the channel (chosen by the creator).
    pub epoch: AtomicU64,
    /// [`Geometry::max_held`].
    pub max_held: AtomicU32,
    _pad0: AtomicU32,
    _reserved: [AtomicU64; 7],
}

/// Producer-owned words, one cache line per writer pattern.
#[repr(C, align(128))]
#[cfg_attr(not(loom), derive(bytemuck::Zeroable))]
pub struct ProducerBlock {
    // --- line 0: written by the producer on every retire; read by
    // `DropOldest` consumers on every receive.
    /// Oldest sequence still retained; samples `< tail` are gone.
    pub tail: AtomicU64,
    /// Futex word consumers sleep on; bumped by a publish that sees sleepers.
    pub doorbell: AtomicU32,
    _pad0: [AtomicU32; (LINE - 12) / 4],
    // --- line 1: written by the producer on every publish; read only when
    // a consumer attaches and by monitoring tools (consumers learn of a
    // publish from its ring slot), so it gets a line of its own.
    /// Next sequence to publish; samples `< head` are published.
    pub head: AtomicU64,
    _pad_head: [AtomicU64; (LINE - 8) / 8],
    // --- line 2: read-mostly; written when the producer closes.
    /// [`PRODUCER_OPEN`] or [`PRODUCER_CLOSED`].
    pub state: AtomicU32,
    _pad_state: AtomicU32,
    _pad1: [AtomicU64; (LINE - 8) / 8],
    // --- line 3: producer waiting for space (Block) or for a held buffer.
    /// Non-zero while the producer is asleep (or about to sleep) on `space_bell`.
    pub producer_waiting: AtomicU32,
    /// Futex word the producer sleeps on; bumped by a release that sees it waiting.
    pub space_bell: AtomicU32,
    _pad2: [AtomicU64; (LINE - 8) / 8],
    // --- line 4: written by consumers going to sleep and waking up, and by
    // a reclaimer; read by the producer on every publish.
    /// Consumers asleep (or about to sleep) on `doorbell`: bit `i % 64` of
    /// word `i / 64` is consumer entry `i`'s. A bit per entry, not a count,
    /// so that a consumer killed anywhere in its sleep leaves at most its own
    /// bit set, which reclaiming its entry clears (idempotently).
    pub sleepers: [AtomicU64; SLEEPER_WORDS],
}

/// The channel's [`PayloadType`] in its wire form (see
/// [`crate::descriptor`]), as words: written once by [`crate::Region::format_typed`]
/// before the header's magic, read when a region is attached.
#[repr(C, align(128))]
#[cfg_attr(not(loom), derive(bytemuck::Zeroable))]
pub struct TypeBlock {
    /// The encoded type, little-endian words.
    pub words: [AtomicU64; PAYLOAD_TYPE_SIZE / 8],
}

impl TypeBlock {
    /// Stores an encoded type (all zero: untyped).
    pub fn write(&self, t: Option<&PayloadType>) {
        let bytes = PayloadType::encode_block(t);
        for (w, c) in self.words.iter().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            w.store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
    }

    /// Loads and parses the type; `Ok(None)` for an untyped channel.
    pub fn read(&self) -> Result<Option<PayloadType>, DescriptorError> {
        let mut bytes = [0u8; PAYLOAD_TYPE_SIZE];
        for (w, c) in self.words.iter().zip(bytes.chunks_exact_mut(8)) {
            c.copy_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
        PayloadType::decode(&bytes)
    }
}

/// Words of [`ProducerBlock::sleepers`]: one bit per possible consumer entry.
pub const SLEEPER_WORDS: usize = limits::MAX_CONSUMERS as usize / 64;

/// Where consumer entry `idx`'s bit lives in [`ProducerBlock::sleepers`]:
/// `(word, mask)`.
#[inline]
pub fn sleeper_bit(idx: u32) -> (usize, u64) {
    ((idx / 64) as usize, 1u64 << (idx % 64))
}

/// [`ProducerBlock::state`]: the producer is live (as far as the protocol knows).
pub const PRODUCER_OPEN: u32 = 1;
/// [`ProducerBlock::state`]: the producer left; consumers drain and disconnect.
pub const PRODUCER_CLOSED: u32 = 2;

/// One consumer's words, written only by that consumer (and by a reclaimer
/// once the consumer is dead). One cache line.
#[repr(C, align(128))]
#[cfg_attr(not(loom), derive(bytemuck::Zeroable))]
pub struct ConsumerEntry {
    /// `generation << 2 | state` ([`ENTRY_FREE`], [`ENTRY_ATTACHING`], [`ENTRY_ACTIVE`]).
    pub state: AtomicU32,
    // Unused (a sleeping flag in layout version 1; see `ProducerBlock::sleepers`).
    _reserved0: AtomicU32,
    /// Next sequence this consumer will receive.
    pub cursor: AtomicU64,
    /// Samples this consumer lost to `DropOldest` so far.
    pub lost: AtomicU64,
    /// Samples received so far.
    pub received: AtomicU64,
    /// Held samples: `seq + 1` each, 0 for an empty slot. Only the first
    /// `max_held` words are used, and only when `max_held <= INLINE_HELD`
    /// (else the consumer's run in the hold table: [`Layout::holds_offset`]).
    pub held: [AtomicU64; INLINE_HELD],
    _pad: [AtomicU64; (LINE - 32 - 8 * INLINE_HELD) / 8],
}

/// Entry state: unclaimed.
pub const ENTRY_FREE: u32 = 0;
/// Entry state: claimed, cursor not yet confirmed against `tail`.
pub const ENTRY_ATTACHING: u32 = 1;
/// Entry state: live consumer.
pub const ENTRY_ACTIVE: u32 = 2;

/// Splits a [`ConsumerEntry::state`] word into `(generation, state)`.
#[inline]
pub fn entry_word_split(w: u32) -> (u32, u32) {
    (w >> 2, w & 3)
}

/// Builds a [`ConsumerEntry::state`] word.
#[inline]
pub fn entry_word(generation: u32, state: u32) -> u32 {
    (generation << 2) | (state & 3)
}

/// One descriptor-ring slot: everything a consumer needs to receive sample
/// `stamp - 1` (which buffer, how long, when), in one place, so a receive
/// reads this slot and then the payload, and nothing in between. The
/// producer writes the fields, then the stamp (Release).
#[repr(C)]
#[cfg_attr(not(loom), derive(bytemuck::Zeroable))]
pub struct RingSlot {
    /// `seq + 1` of the sample in this slot, 0 when never written.
    pub stamp: AtomicU64,
    /// Buffer index of that sample.
    pub buf: AtomicU32,
    _pad: AtomicU32,
    /// Payload length in bytes.
    pub len: AtomicU64,
    /// Producer's timestamp, nanoseconds (clock chosen by the API layer).
    pub timestamp: AtomicU64,
}

/// Per-buffer descriptor: the producer's own bookkeeping (consumers never
/// read it; the ring slot carries what they need).
#[repr(C, align(64))]
#[cfg_attr(not(loom), derive(bytemuck::Zeroable))]
pub struct BufferDesc {
    /// [`BUF_FREE`], [`BUF_LOANED`], [`BUF_PUBLISHED`] or [`BUF_RETIRED`] (producer's bookkeeping).
    pub state: AtomicU32,
    _pad0: AtomicU32,
    /// Sequence of the sample this buffer carries ([`NO_SEQ`] while free or loaned).
    pub seq: AtomicU64,
    _reserved: [AtomicU64; 6],
}

/// Buffer is in the producer's free pool.
pub const BUF_FREE: u32 = 0;
/// Buffer is loaned to the producer's writer.
pub const BUF_LOANED: u32 = 1;
/// Buffer carries a published sample `>= tail`.
pub const BUF_PUBLISHED: u32 = 2;
/// Buffer carries a sample `< tail` that a consumer still holds.
pub const BUF_RETIRED: u32 = 3;
/// [`BufferDesc::seq`] of a buffer that carries no sample.
pub const NO_SEQ: u64 = u64::MAX;

#[cfg(not(loom))]
mod pinned {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};
    use static_assertions::const_assert_eq;

    const_assert_eq!(size_of::<Header>(), 128);
    const_assert_eq!(align_of::<Header>(), 128);
    const_assert_eq!(offset_of!(Header, magic), 0);
    const_assert_eq!(offset_of!(Header, version), 8);
    const_assert_eq!(offset_of!(Header, buffer_size), 40);
    const_assert_eq!(offset_of!(Header, epoch), 56);
    const_assert_eq!(offset_of!(Header, header_size), 12);
    const_assert_eq!(offset_of!(Header, buffer_count), 16);
    const_assert_eq!(offset_of!(Header, ring_capacity), 20);
    const_assert_eq!(offset_of!(Header, max_consumers), 24);
    const_assert_eq!(offset_of!(Header, meta_size), 28);
    const_assert_eq!(offset_of!(Header, alignment), 32);
    const_assert_eq!(offset_of!(Header, policy), 36);
    const_assert_eq!(offset_of!(Header, total_size), 48);
    const_assert_eq!(offset_of!(Header, max_held), 64);
    const_assert_eq!(size_of::<ProducerBlock>(), 5 * LINE);
    const_assert_eq!(SLEEPER_WORDS * 8, LINE);
    const_assert_eq!(limits::MAX_CONSUMERS % 64, 0);
    const_assert_eq!(align_of::<ProducerBlock>(), LINE);
    const_assert_eq!(offset_of!(ProducerBlock, tail), 0);
    const_assert_eq!(offset_of!(ProducerBlock, doorbell), 8);
    const_assert_eq!(offset_of!(ProducerBlock, head), LINE);
    const_assert_eq!(offset_of!(ProducerBlock, state), 2 * LINE);
    const_assert_eq!(offset_of!(ProducerBlock, producer_waiting), 3 * LINE);
    const_assert_eq!(offset_of!(ProducerBlock, space_bell), 3 * LINE + 4);
    const_assert_eq!(offset_of!(ProducerBlock, sleepers), 4 * LINE);
    const_assert_eq!(size_of::<ConsumerEntry>(), LINE);
    const_assert_eq!(align_of::<ConsumerEntry>(), LINE);
    const_assert_eq!(offset_of!(ConsumerEntry, state), 0);
    const_assert_eq!(offset_of!(ConsumerEntry, _reserved0), 4);
    const_assert_eq!(offset_of!(ConsumerEntry, cursor), 8);
    const_assert_eq!(offset_of!(ConsumerEntry, lost), 16);
    const_assert_eq!(offset_of!(ConsumerEntry, received), 24);
    const_assert_eq!(offset_of!(ConsumerEntry, held), 32);
    // The default channel keeps its holds in the entry line.
    const_assert_eq!(INLINE_HELD, super::MAX_HELD);
    const_assert_eq!(limits::MAX_HELD, u64::BITS);
    const_assert_eq!(size_of::<RingSlot>(), 32);
    const_assert_eq!(offset_of!(RingSlot, stamp), 0);
    const_assert_eq!(offset_of!(RingSlot, buf), 8);
    const_assert_eq!(offset_of!(RingSlot, len), 16);
    const_assert_eq!(offset_of!(RingSlot, timestamp), 24);
    const_assert_eq!(size_of::<TypeBlock>(), PAYLOAD_TYPE_SIZE);
    const_assert_eq!(DESCRIPTOR_SIZE % 64, 0);
    const_assert_eq!(size_of::<BufferDesc>(), 64);
    const_assert_eq!(align_of::<BufferDesc>(), 64);
    const_assert_eq!(offset_of!(BufferDesc, state), 0);
    const_assert_eq!(offset_of!(BufferDesc, seq), 8);
}

/// Byte offsets of every part of a region, derived from a [`Geometry`] with
/// overflow-checked arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The geometry this layout was computed from.
    pub geometry: Geometry,
    /// Offset of the [`ProducerBlock`].
    pub producer_offset: usize,
    /// Offset of the consumer table.
    pub consumers_offset: usize,
    /// Offset of the hold table (`max_consumers` runs of `holds_stride`
    /// bytes, each run 128-aligned): where the holds live when `max_held >
    /// INLINE_HELD`. Equal to `ring_offset` (an empty table) otherwise.
    pub holds_offset: usize,
    /// Bytes of one consumer's run in the hold table (`max_held` words
    /// rounded up to a line); 0 when the holds are inline.
    pub holds_stride: usize,
    /// Offset of the descriptor ring.
    pub ring_offset: usize,
    /// Offset of the buffer descriptors.
    pub buffers_offset: usize,
    /// Offset of the [`TypeBlock`].
    pub type_offset: usize,
    /// Offset of the per-sample frame descriptors ([`DESCRIPTOR_SIZE`] bytes each).
    pub desc_offset: usize,
    /// Offset of the metadata area.
    pub meta_offset: usize,
    /// Bytes between two metadata areas (`meta_size` rounded up to 64).
    pub meta_stride: usize,
    /// Offset of buffer 0.
    pub data_offset: usize,
    /// Bytes between two buffers (`buffer_size` rounded up to `alignment`).
    pub buffer_stride: usize,
    /// Bytes of the whole region.
    pub total_size: usize,
}

fn range(field: &'static str, v: u64, lo: u64, hi: u64) -> Result<(), LayoutError> {
    if v < lo || v > hi {
        Err(LayoutError::OutOfRange { field, value: v })
    } else {
        Ok(())
    }
}

fn align_up(v: u64, a: u64) -> Result<u64, LayoutError> {
    debug_assert!(a.is_power_of_two());
    v.checked_add(a - 1)
        .map(|x| x & !(a - 1))
        .ok_or(LayoutError::Overflow)
}

fn mul(a: u64, b: u64) -> Result<u64, LayoutError> {
    a.checked_mul(b).ok_or(LayoutError::Overflow)
}

fn add(a: u64, b: u64) -> Result<u64, LayoutError> {
    a.checked_add(b).ok_or(LayoutError::Overflow)
}

fn to_usize(v: u64) -> Result<usize, LayoutError> {
    // Regions must also be addressable by `isize` offsets.
    if v > isize::MAX as u64 {
        return Err(LayoutError::Overflow);
    }
    usize::try_from(v).map_err(|_| LayoutError::Overflow)
}

impl Layout {
    /// Checks every geometry field against [`limits`] and computes the offsets.
    pub fn new(g: Geometry) -> Result<Layout, LayoutError> {
        use limits::*;
        range("buffer_count", g.buffer_count.into(), 1, MAX_BUFFERS.into())?;
        range("buffer_size", g.buffer_size, 1, MAX_BUFFER_SIZE)?;
        range(
            "alignment",
            g.alignment.into(),
            MIN_ALIGN.into(),
            MAX_ALIGN.into(),
        )?;
        if !g.alignment.is_power_of_two() {
            return Err(LayoutError::OutOfRange {
                field: "alignment",
                value: g.alignment.into(),
            });
        }
        range(
            "ring_capacity",
            g.ring_capacity.into(),
            g.buffer_count.into(),
            MAX_RING.into(),
        )?;
        if !g.ring_capacity.is_power_of_two() {
            return Err(LayoutError::OutOfRange {
                field: "ring_capacity",
                value: g.ring_capacity.into(),
            });
        }
        range(
            "max_consumers",
            g.max_consumers.into(),
            1,
            MAX_CONSUMERS.into(),
        )?;
        range("meta_size", g.meta_size.into(), 0, MAX_META.into())?;
        range("max_held", g.max_held.into(), 1, limits::MAX_HELD.into())?;

        let line = LINE as u64;
        let producer = core::mem::size_of::<Header>() as u64;
        let consumers = add(producer, core::mem::size_of::<ProducerBlock>() as u64)?;
        let holds = add(consumers, mul(g.max_consumers.into(), line)?)?;
        let holds_stride = if g.max_held as usize <= INLINE_HELD {
            0
        } else {
            align_up(mul(g.max_held.into(), 8)?, line)?
        };
        let ring = add(holds, mul(g.max_consumers.into(), holds_stride)?)?;
        let ring_bytes = mul(
            g.ring_capacity.into(),
            core::mem::size_of::<RingSlot>() as u64,
        )?;
        let buffers = align_up(add(ring, ring_bytes)?, line)?;
        let types = align_up(add(buffers, mul(g.buffer_count.into(), 64)?)?, line)?;
        let descs = add(types, PAYLOAD_TYPE_SIZE as u64)?;
        let meta = align_up(
            add(descs, mul(g.buffer_count.into(), DESCRIPTOR_SIZE as u64)?)?,
            line,
        )?;
        let meta_stride = align_up(g.meta_size.into(), 64)?;
        let meta_end = add(meta, mul(meta_stride, g.buffer_count.into())?)?;
        let align = u64::from(g.alignment);
        let data = align_up(meta_end, align)?;
        let stride = align_up(g.buffer_size, align)?;
        let total = add(data, mul(stride, g.buffer_count.into())?)?;
        Ok(Layout {
            geometry: g,
            producer_offset: to_usize(producer)?,
            consumers_offset: to_usize(consumers)?,
            holds_offset: to_usize(holds)?,
            holds_stride: to_usize(holds_stride)?,
            ring_offset: to_usize(ring)?,
            buffers_offset: to_usize(buffers)?,
            type_offset: to_usize(types)?,
            desc_offset: to_usize(descs)?,
            meta_offset: to_usize(meta)?,
            meta_stride: to_usize(meta_stride)?,
            data_offset: to_usize(data)?,
            buffer_stride: to_usize(stride)?,
            total_size: to_usize(total)?,
        })
    }

    /// Reads the geometry stored in a header and checks it, without trusting
    /// any of it: every field is range-checked and the stored total size must
    /// match the recomputed one.
    pub fn from_header(h: &Header) -> Result<Layout, LayoutError> {
        let magic = h.magic.load(Ordering::Acquire);
        if magic == 0 {
            return Err(LayoutError::NotReady);
        }
        if magic != MAGIC {
            return Err(LayoutError::BadMagic { found: magic });
        }
        let version = h.version.load(Ordering::Relaxed);
        if version != VERSION {
            return Err(LayoutError::UnsupportedVersion {
                found: version,
                expected: VERSION,
            });
        }
        if h.header_size.load(Ordering::Relaxed) as usize != core::mem::size_of::<Header>() {
            return Err(LayoutError::Inconsistent {
                field: "header_size",
            });
        }
        let p = h.policy.load(Ordering::Relaxed);
        let policy = Policy::from_u32(p).ok_or(LayoutError::OutOfRange {
            field: "policy",
            value: p.into(),
        })?;
        let g = Geometry {
            buffer_count: h.buffer_count.load(Ordering::Relaxed),
            buffer_size: h.buffer_size.load(Ordering::Relaxed),
            alignment: h.alignment.load(Ordering::Relaxed),
            ring_capacity: h.ring_capacity.load(Ordering::Relaxed),
            max_consumers: h.max_consumers.load(Ordering::Relaxed),
            meta_size: h.meta_size.load(Ordering::Relaxed),
            policy,
            max_held: h.max_held.load(Ordering::Relaxed),
        };
        let l = Layout::new(g)?;
        if h.total_size.load(Ordering::Relaxed) != l.total_size as u64 {
            return Err(LayoutError::Inconsistent {
                field: "total_size",
            });
        }
        Ok(l)
    }

    /// Writes the geometry into a header; `magic` is stored last with Release.
    pub fn write_header(&self, h: &Header, epoch: u64) {
        let g = &self.geometry;
        h.version.store(VERSION, Ordering::Relaxed);
        h.header_size
            .store(core::mem::size_of::<Header>() as u32, Ordering::Relaxed);
        h.buffer_count.store(g.buffer_count, Ordering::Relaxed);
        h.ring_capacity.store(g.ring_capacity, Ordering::Relaxed);
        h.max_consumers.store(g.max_consumers, Ordering::Relaxed);
        h.meta_size.store(g.meta_size, Ordering::Relaxed);
        h.alignment.store(g.alignment, Ordering::Relaxed);
        h.policy.store(g.policy as u32, Ordering::Relaxed);
        h.buffer_size.store(g.buffer_size, Ordering::Relaxed);
        h.total_size
            .store(self.total_size as u64, Ordering::Relaxed);
        h.epoch.store(epoch, Ordering::Relaxed);
        h.max_held.store(g.max_held, Ordering::Relaxed);
        h.magic.store(MAGIC, Ordering::Release);
    }
}

macro_rules! constructors {
    ($($t:ident { $($f:ident : $init:expr),* $(,)? })*) => {$(
        impl $t {
            /// A zeroed value, for building a region on the heap (tests, loom).
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                $t { $($f: $init),* }
            }
        }
    )*};
}

fn a32() -> AtomicU32 {
    AtomicU32::new(0)
}
fn a64() -> AtomicU64 {
    AtomicU64::new(0)
}

constructors! {
    Header {
        magic: a64(), version: a32(), header_size: a32(), buffer_count: a32(),
        ring_capacity: a32(), max_consumers: a32(), meta_size: a32(), alignment: a32(),
        policy: a32(), buffer_size: a64(), total_size: a64(), epoch: a64(), max_held: a32(),
        _pad0: a32(), _reserved: core::array::from_fn(|_| a64()),
    }
    ProducerBlock {
        tail: a64(), doorbell: a32(), _pad0: core::array::from_fn(|_| a32()),
        head: a64(), _pad_head: core::array::from_fn(|_| a64()),
        state: a32(), _pad_state: a32(), _pad1: core::array::from_fn(|_| a64()),
        producer_waiting: a32(), space_bell: a32(), _pad2: core::array::from_fn(|_| a64()),
        sleepers: core::array::from_fn(|_| a64()),
    }
    ConsumerEntry {
        state: a32(), _reserved0: a32(), cursor: a64(), lost: a64(), received: a64(),
        held: core::array::from_fn(|_| a64()), _pad: core::array::from_fn(|_| a64()),
    }
    TypeBlock { words: core::array::from_fn(|_| a64()) }
    RingSlot { stamp: a64(), buf: a32(), _pad: a32(), len: a64(), timestamp: a64() }
    BufferDesc {
        state: a32(), _pad0: a32(), seq: a64(),
        _reserved: core::array::from_fn(|_| a64()),
    }
}

impl core::error::Error for LayoutError {}
