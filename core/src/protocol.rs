//! The lock-free protocol: every shared read and write of bips, with its ordering.
//!
//! Who writes what (see `docs/ARCHITECTURE.md` for the proofs):
//!
//! | word                          | writer                  | readers            |
//! |-------------------------------|-------------------------|--------------------|
//! | `RingSlot.{buf,stamp}`        | producer (publish)      | consumers          |
//! | `RingSlot.{len,timestamp}`    | producer (publish)      | consumers          |
//! | `BufferDesc.*`                | producer (loan/publish) | producer           |
//! | `ProducerBlock.head/tail`     | producer                | consumers          |
//! | `ProducerBlock.doorbell`      | producer, closer        | sleeping consumers |
//! | `ProducerBlock.state`         | producer, closer        | consumers          |
//! | `ProducerBlock.sleepers`      | consumers (RMW own bit), reclaimer | producer |
//! | `ProducerBlock.producer_waiting` | producer             | consumers          |
//! | `ProducerBlock.space_bell`    | consumers, reclaimer    | sleeping producer  |
//! | `ConsumerEntry.*`             | its consumer, reclaimer | producer           |
//! | hold run (`max_held > 8`)     | its consumer            | producer           |
//!
//! The common path is "producer writes a slot, consumer writes its own
//! entry": no read-modify-write on a shared word per sample. A consumer
//! announces what it holds in its own hold words (`seq + 1` each: the
//! entry's `held` line, or its run in the hold table when the channel's
//! `max_held` exceeds [`INLINE_HELD`]; see `Region::holds`); the
//! producer recycles the buffer of sequence `t` only when no live consumer
//! holds `t` and, under [`Policy::Block`], every live consumer's cursor is past
//! `t`.
//!
//! Three store-load (Dekker) handshakes need a `SeqCst` fence on both sides;
//! everything else is release/acquire:
//!
//! 1. retire vs. attach/announce: the producer stores `tail` then scans the
//!    entries; a consumer stores its cursor or hold then loads `tail`;
//! 2. publish vs. sleep: the producer stores the slot then loads `sleepers`;
//!    a consumer sets its bit in `sleepers` then re-checks the slot;
//! 3. release vs. producer sleep: a consumer clears a hold then loads
//!    `producer_waiting`; the producer sets it then re-scans the holds.

use core::cell::Cell;

use crate::descriptor::{PayloadType, DESCRIPTOR_SIZE};
use crate::layout::*;
use crate::sync::{fence, AtomicU32, AtomicU64, Ordering::*};
use crate::wait::{Wait, Wake};

/// Tries a lagging consumer makes to catch a producer that keeps recycling
/// under it before `try_recv` reports "nothing yet".
const CATCH_UP_TRIES: u32 = 64;

/// Sequences at or beyond this bound are never reached (2^63 samples is
/// ~290,000 years at 1 M/s): a `head` or `tail` read from the region at or
/// past it is corruption, refused before any `+ 1` can overflow.
const SEQ_LIMIT: u64 = 1 << 63;

/// Why a protocol operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A value read from the shared region is impossible: the region was
    /// corrupted by a buggy or hostile peer. Names what was wrong.
    Corrupt(&'static str),
    /// The producer closed the channel (or was declared dead) and every
    /// sample this consumer could still receive has been received.
    Disconnected,
    /// The [`Wait`] strategy gave up (a timeout).
    TimedOut,
    /// This consumer already holds the channel's `max_held` samples; release
    /// one first.
    HeldLimit {
        /// The channel's limit ([`Geometry::max_held`]).
        max: u32,
    },
    /// The consumer entry is already claimed.
    EntryBusy,
    /// The index is not a consumer entry or buffer of this region.
    OutOfRange,
    /// The buffer is not loaned to this producer (misuse by the caller).
    NotLoaned,
    /// A length larger than the buffer.
    TooLong,
}

impl core::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ProtocolError::Corrupt(what) => write!(f, "shared region corrupt: {what}"),
            ProtocolError::Disconnected => write!(f, "producer gone and channel drained"),
            ProtocolError::TimedOut => write!(f, "timed out"),
            ProtocolError::HeldLimit { max } => write!(
                f,
                "consumer already holds {max} samples, the channel's max_held"
            ),
            ProtocolError::EntryBusy => write!(f, "consumer entry already claimed"),
            ProtocolError::OutOfRange => write!(f, "index out of range"),
            ProtocolError::NotLoaned => write!(f, "buffer is not loaned"),
            ProtocolError::TooLong => write!(f, "length exceeds the buffer size"),
        }
    }
}

impl core::error::Error for ProtocolError {}

/// A validated view of a region: references to its shared words plus a
/// process-local copy of its geometry (never re-read from shared memory).
///
/// Cheap to copy. A region made by [`Region::from_parts`] has no payload bytes
/// ([`Region::buffer_ptr`] is null there); the protocol never touches payload.
#[derive(Clone, Copy)]
pub struct Region<'a> {
    layout: Layout,
    header: &'a Header,
    producer: &'a ProducerBlock,
    consumers: &'a [ConsumerEntry],
    /// The hold table (`max_consumers` runs of `hold_run` words) when
    /// `max_held > INLINE_HELD`; empty otherwise.
    hold_table: &'a [AtomicU64],
    /// Words between two runs of `hold_table` (0 when it is empty).
    hold_run: usize,
    ring: &'a [RingSlot],
    buffers: &'a [BufferDesc],
    types: Option<&'a TypeBlock>,
    base: *mut u8,
}

// SAFETY: every shared word reachable through a `Region` is an atomic, so
// concurrent access from several threads (or processes) is defined; `base` is
// only turned into payload pointers, which the API layer hands out under the
// protocol's ownership rules (a loaned buffer to its writer, a held one to
// readers).
unsafe impl Send for Region<'_> {}
// SAFETY: as for `Send`: `&Region` gives access to atomics and raw pointers only.
unsafe impl Sync for Region<'_> {}

impl core::fmt::Debug for Region<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Region")
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

/// Where a newly attached consumer starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Start {
    /// At the newest published sample still retained (or the next one).
    #[default]
    Newest,
    /// At the oldest sample still retained.
    Oldest,
    /// At the next sample to be published.
    Next,
}

impl<'a> Region<'a> {
    /// Formats a fresh region at `base` and returns a view of it.
    ///
    /// Zeroes the control part (not the payload), marks every buffer free and
    /// the producer open, and writes the header last, so a consumer that maps
    /// the region early sees [`LayoutError::NotReady`].
    ///
    /// # Safety
    /// `base` must point to `len` bytes, writable and valid for `'a`, that no
    /// other party uses while this runs.
    pub unsafe fn format(
        base: *mut u8,
        len: usize,
        geometry: Geometry,
        epoch: u64,
    ) -> Result<Region<'a>, LayoutError> {
        // SAFETY: the caller's contract is ours.
        unsafe { Region::format_typed(base, len, geometry, epoch, None) }
    }

    /// [`Region::format`] of a channel that declares a payload type (its
    /// fixed descriptor, if any, must fit a buffer).
    ///
    /// # Safety
    /// As for [`Region::format`].
    pub unsafe fn format_typed(
        base: *mut u8,
        len: usize,
        geometry: Geometry,
        epoch: u64,
        payload: Option<&PayloadType>,
    ) -> Result<Region<'a>, LayoutError> {
        let layout = Layout::new(geometry)?;
        check_region(base, len, &layout)?;
        if let Some(d) = payload.and_then(|t| t.descriptor()) {
            d.validate(geometry.buffer_size)
                .map_err(LayoutError::BadPayloadType)?;
        }
        // SAFETY: `check_region` proved `data_offset <= total_size <= len`, and
        // the caller gives us exclusive use of those bytes.
        unsafe { core::ptr::write_bytes(base, 0, layout.data_offset) };
        // SAFETY: the bytes are zeroed (a valid value of every atomic), aligned
        // (checked above) and valid for 'a (caller's contract).
        let region = unsafe { Region::view(base, layout) };
        if let Some(t) = region.types {
            t.write(payload);
        }
        region.init(epoch);
        Ok(region)
    }

    /// Validates a region someone else formatted and returns a view of it.
    ///
    /// Nothing read here is trusted: the geometry is range-checked, the stored
    /// total size must match the recomputed layout, and `len` must cover it.
    ///
    /// # Safety
    /// `base` must point to `len` bytes, readable and writable, valid for `'a`
    /// and aligned to 128 bytes (a page-aligned mapping is). Other processes
    /// may write them concurrently: the protocol only uses atomics on them.
    pub unsafe fn attach(base: *mut u8, len: usize) -> Result<Region<'a>, LayoutError> {
        if len < core::mem::size_of::<Header>() {
            return Err(LayoutError::RegionTooSmall {
                need: core::mem::size_of::<Header>() as u64,
                have: len as u64,
            });
        }
        if (base as usize) % LINE != 0 {
            return Err(LayoutError::Misaligned { need: LINE as u64 });
        }
        // SAFETY: `base` is 128-aligned with at least `size_of::<Header>()`
        // bytes (checked above); every field of `Header` is an atomic, valid
        // for any bit pattern.
        let header = unsafe { &*(base as *const Header) };
        let layout = Layout::from_header(header)?;
        check_region(base, len, &layout)?;
        // SAFETY: the layout was validated against `len` and the alignment
        // above; the caller guarantees validity for 'a.
        let region = unsafe { Region::view(base, layout) };
        region.payload_type()?;
        Ok(region)
    }

    /// Builds a region from separately allocated parts (heap, tests, loom),
    /// then initialises it like [`Region::format`]. Such a region has no
    /// payload or metadata bytes. `hold_table` holds
    /// [`Layout::holds_stride`]` / 8` words per consumer (none when
    /// `max_held <= INLINE_HELD`).
    ///
    /// # Panics
    /// When the slices' lengths disagree with `geometry`.
    pub fn from_parts(
        geometry: Geometry,
        header: &'a Header,
        producer: &'a ProducerBlock,
        consumers: &'a [ConsumerEntry],
        hold_table: &'a [AtomicU64],
        ring: &'a [RingSlot],
        buffers: &'a [BufferDesc],
    ) -> Result<Region<'a>, LayoutError> {
        let layout = Layout::new(geometry)?;
        let hold_run = layout.holds_stride / 8;
        assert_eq!(consumers.len(), geometry.max_consumers as usize);
        assert_eq!(hold_table.len(), geometry.max_consumers as usize * hold_run);
        assert_eq!(ring.len(), geometry.ring_capacity as usize);
        assert_eq!(buffers.len(), geometry.buffer_count as usize);
        let region = Region {
            layout,
            header,
            producer,
            consumers,
            hold_table,
            hold_run,
            ring,
            buffers,
            types: None,
            base: core::ptr::null_mut(),
        };
        region.init(0);
        Ok(region)
    }

    /// # Safety
    /// `base` holds a region of `layout` (bytes valid for 'a, 128-aligned).
    unsafe fn view(base: *mut u8, layout: Layout) -> Region<'a> {
        let g = &layout.geometry;
        // SAFETY: offsets and counts come from `layout`, which the caller
        // checked against the region's length; the offsets are 128-aligned
        // (Layout::new aligns each part), so each part is aligned for its
        // type; all element types are atomics (any bit pattern is valid).
        unsafe {
            Region {
                layout,
                header: &*(base as *const Header),
                producer: &*(base.add(layout.producer_offset) as *const ProducerBlock),
                consumers: core::slice::from_raw_parts(
                    base.add(layout.consumers_offset) as *const ConsumerEntry,
                    g.max_consumers as usize,
                ),
                // Empty when the holds are inline (`holds_stride == 0`).
                hold_table: core::slice::from_raw_parts(
                    base.add(layout.holds_offset) as *const AtomicU64,
                    g.max_consumers as usize * (layout.holds_stride / 8),
                ),
                hold_run: layout.holds_stride / 8,
                ring: core::slice::from_raw_parts(
                    base.add(layout.ring_offset) as *const RingSlot,
                    g.ring_capacity as usize,
                ),
                buffers: core::slice::from_raw_parts(
                    base.add(layout.buffers_offset) as *const BufferDesc,
                    g.buffer_count as usize,
                ),
                types: Some(&*(base.add(layout.type_offset) as *const TypeBlock)),
                base,
            }
        }
    }

    fn init(&self, epoch: u64) {
        for d in self.buffers {
            d.seq.store(NO_SEQ, Relaxed);
            d.state.store(BUF_FREE, Relaxed);
        }
        self.producer.state.store(PRODUCER_OPEN, Relaxed);
        // Stores `magic` last, with Release: everything above is visible to
        // whoever validates the header with Acquire.
        self.layout.write_header(self.header, epoch);
    }

    /// The validated layout (process-local copy).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The validated geometry (process-local copy).
    pub fn geometry(&self) -> &Geometry {
        &self.layout.geometry
    }

    /// The creator's epoch (identity of this incarnation of the channel).
    pub fn epoch(&self) -> u64 {
        self.header.epoch.load(Relaxed)
    }

    /// Pointer to the first byte of buffer `idx`, or null when `idx` is out of
    /// range or the region has no payload ([`Region::from_parts`]).
    pub fn buffer_ptr(&self, idx: u32) -> *mut u8 {
        if self.base.is_null() || idx >= self.layout.geometry.buffer_count {
            return core::ptr::null_mut();
        }
        // In bounds: data_offset + idx * stride < total_size <= mapped length.
        self.base
            .wrapping_add(self.layout.data_offset + idx as usize * self.layout.buffer_stride)
    }

    /// Pointer to the metadata area of buffer `idx` (`meta_size` bytes), or
    /// null as for [`Region::buffer_ptr`].
    pub fn meta_ptr(&self, idx: u32) -> *mut u8 {
        if self.base.is_null() || idx >= self.layout.geometry.buffer_count {
            return core::ptr::null_mut();
        }
        self.base
            .wrapping_add(self.layout.meta_offset + idx as usize * self.layout.meta_stride)
    }

    /// Pointer to the frame descriptor of buffer `idx` ([`DESCRIPTOR_SIZE`]
    /// bytes, see [`crate::descriptor`]), or null as for [`Region::buffer_ptr`].
    pub fn desc_ptr(&self, idx: u32) -> *mut u8 {
        if self.base.is_null() || idx >= self.layout.geometry.buffer_count {
            return core::ptr::null_mut();
        }
        self.base
            .wrapping_add(self.layout.desc_offset + idx as usize * DESCRIPTOR_SIZE)
    }

    /// The channel's payload type, read from the region and checked again
    /// (form, and that a fixed descriptor fits a buffer); `Ok(None)` for an
    /// untyped channel (and for [`Region::from_parts`] regions).
    pub fn payload_type(&self) -> Result<Option<PayloadType>, LayoutError> {
        let Some(block) = self.types else {
            return Ok(None);
        };
        let t = block.read().map_err(LayoutError::BadPayloadType)?;
        if let Some(d) = t.as_ref().and_then(|t| t.descriptor()) {
            d.validate(self.layout.geometry.buffer_size)
                .map_err(LayoutError::BadPayloadType)?;
        }
        Ok(t)
    }

    /// Published sequence count (`head`) and oldest retained sequence (`tail`).
    pub fn head_tail(&self) -> (u64, u64) {
        (
            self.producer.head.load(Acquire),
            self.producer.tail.load(Acquire),
        )
    }

    /// The producer's timestamp of sample `seq` while its ring slot still
    /// holds it, for monitoring tools (`None` when `seq` was not published
    /// yet or its slot was reused). Claims nothing and writes nothing; racy
    /// by nature: a slot rewritten between the two reads of its stamp is
    /// answered `None`, and at worst a reader may get the timestamp of the
    /// sample `ring_capacity` later, never an out-of-bounds read.
    pub fn sample_timestamp(&self, seq: u64) -> Option<u64> {
        let slot = self.slot(seq);
        let want = seq.checked_add(1)?;
        if slot.stamp.load(Acquire) != want {
            return None;
        }
        let ts = slot.timestamp.load(Relaxed);
        // Orders the timestamp read before the second stamp read.
        fence(Acquire);
        (slot.stamp.load(Relaxed) == want).then_some(ts)
    }

    /// Whether the channel was closed (producer left or declared dead).
    pub fn is_closed(&self) -> bool {
        self.producer.state.load(Acquire) == PRODUCER_CLOSED
    }

    /// Closes the channel: consumers drain what is retained, then get
    /// [`ProtocolError::Disconnected`]. Called by a producer leaving, or by
    /// anyone who has proven the producer dead. Idempotent.
    pub fn close(&self, wake: &impl Wake) {
        self.producer.state.store(PRODUCER_CLOSED, Release);
        self.producer.doorbell.fetch_add(1, Release);
        wake.wake(&self.producer.doorbell);
        // A producer can't be waiting on its own close, but a closer other
        // than the producer may race with nothing: no space wake needed.
    }

    /// The raw state word of consumer entry `idx` (for liveness checks and
    /// [`reclaim_consumer`]).
    pub fn consumer_word(&self, idx: u32) -> Option<u32> {
        self.consumers
            .get(idx as usize)
            .map(|e| e.state.load(Acquire))
    }

    /// A snapshot of consumer entry `idx` for monitoring tools.
    pub fn consumer_info(&self, idx: u32) -> Option<ConsumerInfo> {
        let e = self.consumers.get(idx as usize)?;
        let (generation, state) = entry_word_split(e.state.load(Acquire));
        Some(ConsumerInfo {
            generation,
            active: state == ENTRY_ACTIVE,
            cursor: e.cursor.load(Relaxed),
            lost: e.lost.load(Relaxed),
            received: e.received.load(Relaxed),
            held: self
                .holds(idx as usize)
                .iter()
                .filter(|h| h.load(Relaxed) != 0)
                .count() as u32,
            sleeping: self.is_sleeper(idx),
        })
    }

    /// The producer's bookkeeping state of buffer `idx` (`BUF_*`).
    pub fn buffer_state(&self, idx: u32) -> Option<u32> {
        self.buffers
            .get(idx as usize)
            .map(|d| d.state.load(Relaxed))
    }

    /// Wakes a producer asleep on `space_bell`, if it is (handshake 3).
    fn notify_producer(&self, wake: &(impl Wake + ?Sized)) {
        fence(SeqCst);
        if self.producer.producer_waiting.load(Relaxed) != 0 {
            self.producer.space_bell.fetch_add(1, Release);
            wake.wake(&self.producer.space_bell);
        }
    }

    /// Whether any consumer entry has its bit set in `sleepers` (a publish
    /// then rings the doorbell). Reads only the words that cover
    /// `max_consumers` (one for up to 64 consumers).
    fn any_sleeper(&self) -> bool {
        // Bits of entries that do not exist (a hostile write) are ignored:
        // nothing would ever clear them.
        let n = self.layout.geometry.max_consumers as usize;
        let (full, rest) = ((n / 64).min(SLEEPER_WORDS), n % 64);
        let s = &self.producer.sleepers;
        s[..full].iter().any(|w| w.load(Relaxed) != 0)
            || (rest != 0 && full < SLEEPER_WORDS && s[full].load(Relaxed) & ((1 << rest) - 1) != 0)
    }

    /// Whether consumer entry `idx` is asleep (or about to sleep) in `recv`.
    pub fn is_sleeper(&self, idx: u32) -> bool {
        if idx >= self.layout.geometry.max_consumers {
            return false;
        }
        let (word, bit) = sleeper_bit(idx);
        self.producer.sleepers[word].load(Relaxed) & bit != 0
    }

    /// Clears consumer entry `idx`'s bit in `sleepers` (idempotent). Only
    /// for an entry no live consumer can be sleeping on: its owner claiming
    /// or leaving it, or a reclaimer with the entry `ATTACHING`.
    fn clear_sleeper(&self, idx: u32) {
        let (word, bit) = sleeper_bit(idx);
        self.producer.sleepers[word].fetch_and(!bit, Relaxed);
    }

    fn slot(&self, seq: u64) -> &RingSlot {
        // ring_capacity is a validated power of two.
        &self.ring[(seq & (self.layout.geometry.ring_capacity as u64 - 1)) as usize]
    }

    /// Consumer entry `i`'s hold words: the first `max_held` words of its
    /// entry line when `max_held <= INLINE_HELD`, else the first `max_held`
    /// words of its run in the hold table. Scans read exactly these (never
    /// the padding up to a line, never 64 words on a channel of 8).
    ///
    /// # Panics
    /// When `i >= max_consumers` (callers index the consumer table first).
    #[inline]
    fn holds(&self, i: usize) -> &'a [AtomicU64] {
        let n = self.layout.geometry.max_held as usize;
        if self.hold_run == 0 {
            &self.consumers[i].held[..n]
        } else {
            let at = i * self.hold_run;
            &self.hold_table[at..at + n]
        }
    }

    /// Whether no live consumer announces a hold on `seq`.
    fn unheld(&self, seq: u64) -> bool {
        self.consumers.iter().enumerate().all(|(i, e)| {
            entry_word_split(e.state.load(Acquire)).1 != ENTRY_ACTIVE
                || self.holds(i).iter().all(|h| h.load(Acquire) != seq + 1)
        })
    }

    /// Whether every live consumer has received `seq` (or skipped it): the
    /// `Block` condition for retiring it.
    fn received_by_all(&self, seq: u64) -> bool {
        self.consumers.iter().all(|e| {
            entry_word_split(e.state.load(Acquire)).1 != ENTRY_ACTIVE
                || e.cursor.load(Acquire) > seq
        })
    }

    /// Whether every live consumer has received `seq` (or skipped it) and
    /// none holds it: the `Block` condition for recycling its buffer.
    fn done_by_all(&self, seq: u64) -> bool {
        self.consumers.iter().enumerate().all(|(i, e)| {
            entry_word_split(e.state.load(Acquire)).1 != ENTRY_ACTIVE
                || (e.cursor.load(Acquire) > seq
                    && self.holds(i).iter().all(|h| h.load(Acquire) != seq + 1))
        })
    }
}

fn check_region(base: *mut u8, len: usize, layout: &Layout) -> Result<(), LayoutError> {
    if len < layout.total_size {
        return Err(LayoutError::RegionTooSmall {
            need: layout.total_size as u64,
            have: len as u64,
        });
    }
    let align = (layout.geometry.alignment as usize).max(LINE);
    if (base as usize) % align != 0 {
        return Err(LayoutError::Misaligned { need: align as u64 });
    }
    Ok(())
}

/// A monitoring snapshot of one consumer entry (racy by nature).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// Claim generation of the entry.
    pub generation: u32,
    /// Whether the entry is claimed by a live (as far as the region knows) consumer.
    pub active: bool,
    /// Next sequence the consumer will receive.
    pub cursor: u64,
    /// Samples lost to `DropOldest`.
    pub lost: u64,
    /// Samples received.
    pub received: u64,
    /// Samples held right now.
    pub held: u32,
    /// Whether the consumer is asleep in `recv`.
    pub sleeping: bool,
}

/// The producer side. One per region; `!Sync` (process-local state in `Cell`s),
/// but several loans may be outstanding at once.
pub struct Producer<'a> {
    r: Region<'a>,
    policy: Policy,
    head: Cell<u64>,
    tail: Cell<u64>,
    free: Cell<u32>,
    retired: Cell<u32>,
    hint: Cell<u32>,
    /// Waits that count this producer as waiting for space now (a blocking
    /// `loan` and armed asynchronous ones): `producer_waiting` is 1 while
    /// this is above 0.
    waiting: Cell<u32>,
}

impl<'a> Producer<'a> {
    /// Takes the producer role of a freshly formatted region.
    pub fn new(region: Region<'a>) -> Producer<'a> {
        Producer {
            policy: region.layout.geometry.policy,
            free: Cell::new(region.layout.geometry.buffer_count),
            r: region,
            head: Cell::new(0),
            tail: Cell::new(0),
            retired: Cell::new(0),
            hint: Cell::new(0),
            waiting: Cell::new(0),
        }
    }

    /// The region this producer writes.
    pub fn region(&self) -> &Region<'a> {
        &self.r
    }

    /// The next sequence [`Producer::publish`] will assign.
    pub fn next_seq(&self) -> u64 {
        self.head.get()
    }

    /// Loans a buffer without waiting: `Ok(None)` when every buffer is still
    /// needed (under `Block`: not yet consumed by some live consumer; under
    /// `DropOldest`: held by consumers, or loaned — or, for an instant, by a
    /// consumer's hold announced mid-receive and about to be withdrawn; the
    /// withdrawal wakes a producer sleeping in [`Producer::loan`]). Bounded: at most
    /// `buffer_count` descriptor checks plus one scan of the consumer table
    /// per retired sample.
    pub fn try_loan(&self) -> Result<Option<u32>, ProtocolError> {
        if self.free.get() > 0 {
            let b = self.find(BUF_FREE).ok_or(ProtocolError::Corrupt(
                "buffer states disagree with the producer",
            ))?;
            self.free.set(self.free.get() - 1);
            return Ok(Some(self.take(b)));
        }
        if self.retired.get() > 0 {
            if let Some(b) = self.reuse_retired()? {
                return Ok(Some(b));
            }
        }
        // Recycle the oldest published sample(s). A sample still held is
        // retired all the same (its hold keeps its buffer, as RETIRED) so a
        // consumer keeping an old sample while reading on does not stall the
        // stream; under Block only once every live consumer received it.
        while self.tail.get() < self.head.get() {
            let t = self.tail.get();
            let b = self.buffer_of(t)?;
            if self.policy == Policy::Block && !self.r.received_by_all(t) {
                return Ok(None);
            }
            // Handshake 1: a consumer that stores a cursor or a hold at `t`
            // and then (after its fence) reads `tail <= t` is seen by the scan
            // below; one that reads `tail > t` never touches `t`.
            self.tail.set(t + 1);
            self.r.producer.tail.store(t + 1, Relaxed);
            fence(SeqCst);
            let reusable = match self.policy {
                Policy::Block => self.r.done_by_all(t),
                Policy::DropOldest => self.r.unheld(t),
            };
            if reusable {
                return Ok(Some(self.take(b)));
            }
            self.r.buffers[b as usize].state.store(BUF_RETIRED, Relaxed);
            self.retired.set(self.retired.get() + 1);
        }
        // A consumer mid-receive may have announced a hold we saw and then
        // withdrawn it (it found `tail` past the sample): look once more
        // (found by loom). A withdrawal after this look wakes a sleeping
        // `loan`, so `try_loan` can still answer `None` in that instant.
        if self.retired.get() > 0 {
            return self.reuse_retired();
        }
        Ok(None)
    }

    /// Loans a buffer, waiting with `wait` while none is available.
    /// Fails with [`ProtocolError::TimedOut`] when `wait` gives up.
    pub fn loan(&self, wait: &mut impl Wait) -> Result<u32, ProtocolError> {
        let p = self.r.producer;
        loop {
            if let Some(b) = self.try_loan()? {
                return Ok(b);
            }
            if !wait.sleeps() {
                if !wait.wait(&p.space_bell, p.space_bell.load(Relaxed)) {
                    return Err(ProtocolError::TimedOut);
                }
                continue;
            }
            // Handshake 3: announce, fence, read the bell, re-check, sleep.
            let bell = self.arm_wait();
            let r = self.try_loan();
            let go_on = !matches!(r, Ok(None)) || wait.wait(&p.space_bell, bell);
            self.disarm_wait();
            match r {
                Ok(Some(b)) => return Ok(b),
                Err(e) => return Err(e),
                Ok(None) if !go_on => return Err(ProtocolError::TimedOut),
                Ok(None) => {}
            }
        }
    }

    /// Handshake 3 split for a waiter that must not block its thread (an
    /// async loan), as [`Consumer::arm_wait`] for receives: announces this
    /// producer as waiting for space (`producer_waiting`), fences and returns
    /// the value of [`Producer::space_bell`]. Re-check with
    /// [`Producer::try_loan`]; if it finds nothing, a release from now on
    /// changes the bell and futex-wakes its waiters. Pair each call with one
    /// [`Producer::disarm_wait`]; [`Producer::rearm_wait`] starts the next
    /// round of an armed wait.
    pub fn arm_wait(&self) -> u32 {
        let n = self.waiting.get();
        if n == 0 {
            self.r.producer.producer_waiting.store(1, Relaxed);
        }
        self.waiting.set(n + 1);
        self.space_bell_after_fence()
    }

    /// The next round of an armed wait: fences and returns the space bell.
    pub fn rearm_wait(&self) -> u32 {
        debug_assert!(self.waiting.get() > 0, "rearm_wait without arm_wait");
        self.space_bell_after_fence()
    }

    /// Ends a wait begun with [`Producer::arm_wait`].
    pub fn disarm_wait(&self) {
        let n = self.waiting.get();
        debug_assert!(n > 0, "disarm without arm");
        let n = n.saturating_sub(1);
        self.waiting.set(n);
        if n == 0 {
            self.r.producer.producer_waiting.store(0, Relaxed);
        }
    }

    /// The word a release changes (and futex-wakes) while this producer is
    /// armed.
    pub fn space_bell(&self) -> &'a AtomicU32 {
        &self.r.producer.space_bell
    }

    fn space_bell_after_fence(&self) -> u32 {
        fence(SeqCst);
        self.r.producer.space_bell.load(Acquire)
    }

    /// Returns a loaned buffer to the pool without publishing it.
    pub fn unloan(&self, buf: u32) -> Result<(), ProtocolError> {
        let d = self.loaned(buf)?;
        d.state.store(BUF_FREE, Relaxed);
        self.free.set(self.free.get() + 1);
        Ok(())
    }

    /// Publishes loaned buffer `buf` carrying `len` bytes: it becomes sample
    /// `seq` (returned), visible to consumers with everything written to the
    /// buffer and its metadata before this call (Release). Wakes sleeping
    /// consumers through `wake`, and only if some consumer sleeps.
    pub fn publish(
        &self,
        buf: u32,
        len: u64,
        timestamp: u64,
        wake: &impl Wake,
    ) -> Result<u64, ProtocolError> {
        let d = self.loaned(buf)?;
        if len > self.r.layout.geometry.buffer_size {
            return Err(ProtocolError::TooLong);
        }
        let s = self.head.get();
        if s - self.tail.get() >= u64::from(self.r.layout.geometry.ring_capacity) {
            // Each retained sample owns a distinct buffer and ring >= buffers.
            return Err(ProtocolError::Corrupt(
                "more samples retained than ring slots",
            ));
        }
        d.seq.store(s, Relaxed);
        d.state.store(BUF_PUBLISHED, Relaxed);
        let slot = self.r.slot(s);
        // The slot is rewritten only for sample `s`, `ring` after the one it
        // held, which was retired first (`s - tail < ring`): a consumer
        // still reading that one finds `tail` past it (handshake 1, see
        // `Consumer::try_recv`) and drops what it read.
        slot.buf.store(buf, Relaxed);
        slot.len.store(len, Relaxed);
        slot.timestamp.store(timestamp, Relaxed);
        // The publication point (S2): pairs with the consumer's Acquire load.
        slot.stamp.store(s + 1, Release);
        self.head.set(s + 1);
        self.r.producer.head.store(s + 1, Release);
        // Handshake 2: the stamp store above vs. a sleeper's `sleepers` RMW.
        fence(SeqCst);
        if self.r.any_sleeper() {
            self.r.producer.doorbell.fetch_add(1, Release);
            wake.wake(&self.r.producer.doorbell);
        }
        Ok(s)
    }

    /// Closes the channel (see [`Region::close`]).
    pub fn close(&self, wake: &impl Wake) {
        self.r.close(wake);
    }

    fn loaned(&self, buf: u32) -> Result<&BufferDesc, ProtocolError> {
        let d = self
            .r
            .buffers
            .get(buf as usize)
            .ok_or(ProtocolError::OutOfRange)?;
        if d.state.load(Relaxed) != BUF_LOANED {
            return Err(ProtocolError::NotLoaned);
        }
        Ok(d)
    }

    fn take(&self, b: u32) -> u32 {
        let d = &self.r.buffers[b as usize];
        d.seq.store(NO_SEQ, Relaxed);
        d.state.store(BUF_LOANED, Relaxed);
        b
    }

    /// First buffer in `state`, scanning from a rotating hint.
    fn find(&self, state: u32) -> Option<u32> {
        let n = self.r.layout.geometry.buffer_count;
        let start = self.hint.get() % n;
        let found = (0..n)
            .map(|i| (start + i) % n)
            .find(|&b| self.r.buffers[b as usize].state.load(Relaxed) == state)?;
        self.hint.set((found + 1) % n);
        Some(found)
    }

    /// A retired buffer whose last holder let go, loaned.
    fn reuse_retired(&self) -> Result<Option<u32>, ProtocolError> {
        let n = self.r.layout.geometry.buffer_count;
        for b in 0..n {
            let d = &self.r.buffers[b as usize];
            if d.state.load(Relaxed) != BUF_RETIRED {
                continue;
            }
            let seq = d.seq.load(Relaxed);
            if seq >= self.tail.get() {
                return Err(ProtocolError::Corrupt("retired buffer newer than tail"));
            }
            let free = match self.policy {
                Policy::Block => self.r.done_by_all(seq),
                Policy::DropOldest => self.r.unheld(seq),
            };
            if free {
                self.retired.set(self.retired.get() - 1);
                return Ok(Some(self.take(b)));
            }
        }
        Ok(None)
    }

    /// The buffer carrying retained sample `t`, checked against the region.
    fn buffer_of(&self, t: u64) -> Result<u32, ProtocolError> {
        let slot = self.r.slot(t);
        let b = slot.buf.load(Relaxed);
        let d = self
            .r
            .buffers
            .get(b as usize)
            .ok_or(ProtocolError::Corrupt("ring names a buffer out of range"))?;
        if slot.stamp.load(Relaxed) != t + 1
            || d.seq.load(Relaxed) != t
            || d.state.load(Relaxed) != BUF_PUBLISHED
        {
            return Err(ProtocolError::Corrupt(
                "ring and buffer descriptors disagree",
            ));
        }
        Ok(b)
    }
}

/// A received sample: which buffer, what it carries, and the hold that keeps
/// the producer off it. Give it back with [`Consumer::release`]; it is not
/// `Clone`, so a hold is released once.
#[derive(Debug, PartialEq, Eq)]
pub struct Received {
    seq: u64,
    buf: u32,
    len: u64,
    timestamp: u64,
    lagged: u64,
    slot: u8,
    entry: u32,
}

impl Received {
    /// Sequence number (strictly increasing per consumer, S4).
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// Buffer index in the pool.
    pub fn buffer(&self) -> u32 {
        self.buf
    }
    /// Payload length, at most the buffer size.
    pub fn len(&self) -> u64 {
        self.len
    }
    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Producer timestamp.
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }
    /// Samples lost between the previous received sample and this one
    /// (`DropOldest` only; always 0 under `Block`).
    pub fn lagged(&self) -> u64 {
        self.lagged
    }
}

/// A consumer of a region, bound to one entry of the consumer table. `!Sync`
/// (process-local state in `Cell`s); holds up to the channel's `max_held`
/// samples ([`Geometry::max_held`]).
pub struct Consumer<'a> {
    r: Region<'a>,
    wake: &'a (dyn Wake + Sync),
    idx: usize,
    /// Our hold words ([`Region::holds`]), `max_held` of them.
    holds: &'a [AtomicU64],
    /// The claim generation of our entry: only the word
    /// `entry_word(generation, ACTIVE)` is ours.
    generation: u32,
    policy: Policy,
    cursor: Cell<u64>,
    /// Bit `k` set: `holds[k]` announces a sample we hold.
    held_mask: Cell<u64>,
    pending_lost: Cell<u64>,
    lost: Cell<u64>,
    received: Cell<u64>,
    /// Waits that count this entry as a sleeper now (a blocking `recv` and
    /// any number of armed asynchronous waits, see [`Consumer::arm_wait`]):
    /// the `sleepers` bit is set while this is above 0, and only then.
    sleeping: Cell<u32>,
}

impl<'a> Consumer<'a> {
    /// Claims free consumer entry `idx` and positions the cursor at `start`.
    ///
    /// The caller (the OS layer) decides which entry is free to claim; this
    /// fails with [`ProtocolError::EntryBusy`] if the entry is not free.
    /// `wake` is kept to wake a sleeping producer when a receive withdraws a
    /// hold it had announced (a cold path).
    pub fn claim(
        region: Region<'a>,
        idx: u32,
        start: Start,
        wake: &'a (dyn Wake + Sync),
    ) -> Result<Consumer<'a>, ProtocolError> {
        let e = region
            .consumers
            .get(idx as usize)
            .ok_or(ProtocolError::OutOfRange)?;
        let w = e.state.load(Acquire);
        let (generation, state) = entry_word_split(w);
        if state != ENTRY_FREE {
            return Err(ProtocolError::EntryBusy);
        }
        let generation = generation.wrapping_add(1) & (u32::MAX >> 2);
        e.state
            .compare_exchange(w, entry_word(generation, ENTRY_ATTACHING), Acquire, Relaxed)
            .map_err(|_| ProtocolError::EntryBusy)?;
        // Nobody reads an ATTACHING entry's holds; clear the last owner's.
        // Release, as in `release`: a Relaxed store would not continue the
        // release sequence of an earlier hold's clearing.
        let holds = region.holds(idx as usize);
        for h in holds {
            h.store(0, Release);
        }
        e.lost.store(0, Relaxed);
        e.received.store(0, Relaxed);
        let p = region.producer;
        // A stale bit (a hostile write) would only cost wake-ups; start clean.
        region.clear_sleeper(idx);
        let head = p.head.load(Acquire);
        let tail = p.tail.load(Acquire);
        if head >= SEQ_LIMIT || tail >= SEQ_LIMIT {
            e.state.store(entry_word(generation, ENTRY_FREE), Release);
            return Err(ProtocolError::Corrupt("head/tail out of range"));
        }
        // `tail > head` is no corruption: the producer may publish and retire
        // between the two loads (found by loom). Start no lower than `tail`;
        // the handshake below moves us up if it advanced further.
        let mut c = match start {
            Start::Oldest => tail,
            Start::Next => head.max(tail),
            Start::Newest if head > tail => head - 1,
            Start::Newest => head.max(tail),
        };
        e.cursor.store(c, Relaxed);
        // A CAS, not a store: if a reclaimer freed the entry meanwhile (only
        // when liveness was misjudged), do not bring it back to life.
        e.state
            .compare_exchange(
                entry_word(generation, ENTRY_ATTACHING),
                entry_word(generation, ENTRY_ACTIVE),
                Release,
                Relaxed,
            )
            .map_err(|_| ProtocolError::EntryBusy)?;
        // Handshake 1: our cursor is published; confirm `c` is still retained.
        loop {
            fence(SeqCst);
            let t = p.tail.load(Relaxed);
            if t <= c {
                break;
            }
            if t >= SEQ_LIMIT {
                return Err(ProtocolError::Corrupt("tail out of range"));
            }
            c = t;
            e.cursor.store(c, Release);
            // A producer may sleep on a retired buffer our old cursor pinned.
            region.notify_producer(wake);
        }
        Ok(Consumer {
            r: region,
            wake,
            idx: idx as usize,
            holds,
            generation,
            policy: region.layout.geometry.policy,
            cursor: Cell::new(c),
            held_mask: Cell::new(0),
            pending_lost: Cell::new(0),
            lost: Cell::new(0),
            received: Cell::new(0),
            sleeping: Cell::new(0),
        })
    }

    /// The region this consumer reads.
    pub fn region(&self) -> &Region<'a> {
        &self.r
    }

    /// The entry index this consumer occupies.
    pub fn index(&self) -> u32 {
        self.idx as u32
    }

    /// The next sequence this consumer expects.
    pub fn cursor(&self) -> u64 {
        self.cursor.get()
    }

    /// Samples held right now.
    pub fn held(&self) -> u32 {
        self.held_mask.get().count_ones()
    }

    /// Samples this consumer may hold at once: the channel's `max_held`.
    pub fn max_held(&self) -> u32 {
        self.holds.len() as u32
    }

    fn entry(&self) -> &ConsumerEntry {
        &self.r.consumers[self.idx]
    }

    fn skip_to(&self, t: u64) -> Result<(), ProtocolError> {
        if t >= SEQ_LIMIT {
            return Err(ProtocolError::Corrupt("tail out of range"));
        }
        let c = self.cursor.get();
        let n = t - c;
        self.pending_lost.set(self.pending_lost.get() + n);
        self.lost.set(self.lost.get() + n);
        self.entry().lost.store(self.lost.get(), Relaxed);
        self.cursor.set(t);
        self.entry().cursor.store(t, Release);
        Ok(())
    }

    /// Receives the next sample without waiting: `Ok(None)` when there is
    /// none yet, [`ProtocolError::Disconnected`] when there never will be.
    /// No system call, no allocation, cost independent of payload size.
    pub fn try_recv(&self) -> Result<Option<Received>, ProtocolError> {
        let mask = self.held_mask.get();
        if mask.count_ones() as usize >= self.holds.len() {
            return Err(ProtocolError::HeldLimit {
                max: self.holds.len() as u32,
            });
        }
        // `k <= count_ones < max_held <= 64`: a free hold word.
        let k = mask.trailing_ones() as usize;
        let e = self.entry();
        let p = self.r.producer;
        let g = &self.r.layout.geometry;
        let mut closed_seen = false;
        let mut tries = 0;
        loop {
            let c = self.cursor.get();
            let slot = self.r.slot(c);
            let stamp = slot.stamp.load(Acquire);
            if stamp < c + 1 {
                // Not published yet (a slot only ever holds older stamps).
                if closed_seen {
                    return Err(ProtocolError::Disconnected);
                }
                if p.state.load(Acquire) == PRODUCER_CLOSED {
                    // Everything published before the close is visible now.
                    closed_seen = true;
                    continue;
                }
                return Ok(None);
            }
            tries += 1;
            if tries > CATCH_UP_TRIES {
                return Ok(None);
            }
            if stamp > c + 1 {
                // The slot was recycled: we lag behind `tail`.
                let t = p.tail.load(Acquire);
                if t <= c {
                    return Err(ProtocolError::Corrupt("ring stamp ahead of tail"));
                }
                self.skip_to(t)?;
                continue;
            }
            // The sample's fields, from the slot itself (one line, then the
            // payload: nothing else to chase). They are sample `c`'s unless
            // the producer rewrote the slot for `c + ring` meanwhile, which
            // it does only after retiring `c`: under Block not before our
            // cursor passes `c`, so never now; under DropOldest the tail
            // check below then sees `tail > c` (its field stores follow its
            // retire fence, which so precedes ours) and we drop them.
            let b = slot.buf.load(Relaxed);
            let len = slot.len.load(Relaxed);
            let timestamp = slot.timestamp.load(Relaxed);
            if b >= g.buffer_count {
                return Err(ProtocolError::Corrupt("ring names a buffer out of range"));
            }
            // Announce the hold before the cursor: a producer that sees the
            // cursor past `c` (Acquire) also sees this hold. Release, not
            // Relaxed: a producer reading this value must also be ordered
            // after our earlier `held[k] = 0` (and the payload reads it
            // published); a Relaxed store would break that release sequence.
            self.holds[k].store(c + 1, Release);
            if self.policy == Policy::DropOldest {
                // Handshake 1: the producer may be recycling `c` right now.
                fence(SeqCst);
                let t = p.tail.load(Relaxed);
                if t > c {
                    self.withdraw(k);
                    self.skip_to(t)?;
                    continue;
                }
            }
            if len > g.buffer_size {
                self.withdraw(k);
                return Err(ProtocolError::Corrupt("sample length exceeds buffer size"));
            }
            self.cursor.set(c + 1);
            e.cursor.store(c + 1, Release);
            self.received.set(self.received.get() + 1);
            e.received.store(self.received.get(), Relaxed);
            self.held_mask.set(mask | 1u64 << k);
            return Ok(Some(Received {
                seq: c,
                buf: b,
                len,
                timestamp,
                lagged: self.pending_lost.replace(0),
                slot: k as u8,
                entry: self.idx as u32,
            }));
        }
    }

    /// Receives the next sample, waiting with `wait` while there is none.
    /// Sleeping strategies set the entry's bit in `sleepers`, so a publish
    /// wakes them (and only then makes a system call).
    pub fn recv(&self, wait: &mut impl Wait) -> Result<Received, ProtocolError> {
        let p = self.r.producer;
        loop {
            if let Some(s) = self.try_recv()? {
                return Ok(s);
            }
            if !wait.sleeps() {
                if !wait.wait(&p.doorbell, p.doorbell.load(Relaxed)) {
                    return Err(ProtocolError::TimedOut);
                }
                continue;
            }
            // Handshake 2: set our bit, fence, read the bell, re-check. One
            // RMW of one word: killed anywhere in here, we leave at most our
            // own bit set, and reclaiming the entry clears it.
            let asleep = Asleep::mark(self);
            let bell = self.doorbell_after_fence();
            let r = self.try_recv();
            let go_on = !matches!(r, Ok(None)) || wait.wait(&p.doorbell, bell);
            drop(asleep);
            match r {
                Ok(Some(s)) => return Ok(s),
                Err(e) => return Err(e),
                Ok(None) if !go_on => return Err(ProtocolError::TimedOut),
                Ok(None) => {}
            }
        }
    }

    /// Handshake 2 split for a waiter that must not block its thread (an
    /// async receive): counts this consumer as a sleeper (sets its bit in
    /// `sleepers` unless an earlier armed wait already did), then fences and
    /// returns the doorbell's value. The caller then re-checks with
    /// [`Consumer::try_recv`]; if that finds nothing, a publish from now on
    /// changes [`Consumer::doorbell`] away from the value returned and wakes
    /// futex waiters of it, so the caller may wait for that change elsewhere
    /// (another thread, `futex_waitv`). Each `arm_wait` is paired with one
    /// [`Consumer::disarm_wait`] once the wait ends (a sample, an error, a
    /// cancel); in between, [`Consumer::rearm_wait`] reads the bell again
    /// for the next round. The bit is cleared with the last disarm (a
    /// blocking `recv` counts in the same way), so a consumer whose process
    /// dies while armed leaves only its own bit, which reclaiming the entry
    /// clears, as for a blocking sleeper.
    pub fn arm_wait(&self) -> u32 {
        self.mark_sleeper();
        self.doorbell_after_fence()
    }

    /// The next round of an armed wait: fences and returns the doorbell's
    /// value (the bit is still set). Re-check with `try_recv` after it.
    pub fn rearm_wait(&self) -> u32 {
        debug_assert!(self.sleeping.get() > 0, "rearm_wait without arm_wait");
        self.doorbell_after_fence()
    }

    /// Ends a wait begun with [`Consumer::arm_wait`].
    pub fn disarm_wait(&self) {
        self.unmark_sleeper();
    }

    /// The doorbell word a publish or a close changes (and futex-wakes)
    /// when this consumer is armed.
    pub fn doorbell(&self) -> &'a AtomicU32 {
        &self.r.producer.doorbell
    }

    /// The fence of handshake 2 (after the `sleepers` RMW), then the bell.
    fn doorbell_after_fence(&self) -> u32 {
        fence(SeqCst);
        self.r.producer.doorbell.load(Acquire)
    }

    fn mark_sleeper(&self) {
        let n = self.sleeping.get();
        if n == 0 {
            let (word, bit) = sleeper_bit(self.idx as u32);
            self.r.producer.sleepers[word].fetch_or(bit, Relaxed);
        }
        self.sleeping.set(n + 1);
    }

    fn unmark_sleeper(&self) {
        let n = self.sleeping.get();
        debug_assert!(n > 0, "disarm without arm");
        let n = n.saturating_sub(1);
        self.sleeping.set(n);
        if n == 0 {
            let (word, bit) = sleeper_bit(self.idx as u32);
            self.r.producer.sleepers[word].fetch_and(!bit, Relaxed);
        }
    }

    /// Takes back a hold announced by a receive that did not complete. The
    /// producer may have seen it and gone to sleep on it (handshake 3).
    fn withdraw(&self, k: usize) {
        self.holds[k].store(0, Release);
        self.r.notify_producer(self.wake);
    }

    /// Gives a received sample back. Samples may be released in any order.
    /// Wakes the producer if it sleeps waiting for a buffer.
    ///
    /// # Panics
    /// When `sample` was received by another consumer (a caller bug that
    /// would otherwise drop that consumer's hold).
    pub fn release(&self, sample: Received, wake: &impl Wake) {
        assert!(
            sample.entry == self.idx as u32 && self.held_mask.get() & (1u64 << sample.slot) != 0,
            "sample released to a consumer that did not receive it"
        );
        let k = sample.slot as usize;
        // Everything we read from the buffer happens-before the producer's
        // next write to it: it loads this hold with Acquire.
        self.holds[k].store(0, Release);
        self.held_mask.set(self.held_mask.get() & !(1u64 << k));
        // Handshake 3.
        self.r.notify_producer(wake);
    }

    /// Leaves the channel: drops every hold and frees the entry.
    pub fn detach(self, wake: &impl Wake) {
        let e = self.entry();
        // As a reclaim does: ours -> ATTACHING (the producer then ignores
        // the entry, and nobody can claim it), clear holds and our sleeper
        // bit, then FREE. The CAS names our generation: an entry reclaimed
        // meanwhile (liveness misjudged) and maybe claimed anew is not ours,
        // and neither are its holds or its bit. Release: our reads of held
        // buffers happen-before the producer, seeing the entry no longer
        // ACTIVE (Acquire), rewrites them.
        let generation = self.generation;
        if e.state
            .compare_exchange(
                entry_word(generation, ENTRY_ACTIVE),
                entry_word(generation, ENTRY_ATTACHING),
                AcqRel,
                Relaxed,
            )
            .is_ok()
        {
            for h in self.holds {
                h.store(0, Release);
            }
            self.r.clear_sleeper(self.idx as u32);
            e.state.store(entry_word(generation, ENTRY_FREE), Release);
        }
        self.r.notify_producer(wake);
    }
}

/// A consumer counted as a sleeper while it may sleep in `recv`; uncounted
/// on every way out, unwinding included (a live consumer left marked would
/// cost every publish a wake and could not be reaped).
struct Asleep<'c, 'a> {
    c: &'c Consumer<'a>,
}

impl<'c, 'a> Asleep<'c, 'a> {
    fn mark(c: &'c Consumer<'a>) -> Asleep<'c, 'a> {
        c.mark_sleeper();
        Asleep { c }
    }
}

impl Drop for Asleep<'_, '_> {
    fn drop(&mut self) {
        self.c.unmark_sleeper();
    }
}

/// Frees consumer entry `idx` of a consumer the OS layer has proven dead: its
/// cursor stops pacing the producer and its holds go back to the pool.
///
/// `observed` is the entry's state word as read when the death was proven
/// ([`Region::consumer_word`]); if the entry changed since (already reclaimed,
/// or claimed anew), nothing happens. Idempotent; safe while the producer
/// runs. Returns whether this call freed the entry.
pub fn reclaim_consumer(region: &Region<'_>, idx: u32, observed: u32, wake: &impl Wake) -> bool {
    let Some(e) = region.consumers.get(idx as usize) else {
        return false;
    };
    let (generation, state) = entry_word_split(observed);
    if state == ENTRY_FREE {
        return false;
    }
    // First to ATTACHING (nobody claims it, the producer ignores it), then
    // clear the dead consumer's `sleepers` bit, then FREE: freeing first
    // would let a new owner set that bit, which we would then undo (and its
    // sleep would miss its wake-up).
    if e.state
        .compare_exchange(
            observed,
            entry_word(generation, ENTRY_ATTACHING),
            AcqRel,
            Relaxed,
        )
        .is_err()
    {
        return false;
    }
    // It may have died asleep, or anywhere in `Consumer::recv`'s sleep: its
    // bit alone says so, and clearing a clear bit is harmless.
    region.clear_sleeper(idx);
    e.state.store(entry_word(generation, ENTRY_FREE), Release);
    region.notify_producer(wake);
    true
}
