//! The consumer: opens a channel, receives samples in place.

use std::cell::Cell;
use std::mem::ManuallyDrop;
use std::time::{Duration, Instant};

use bips_core::descriptor::{Descriptor, Element, PayloadType, View};
use bips_core::{LayoutError, Received, Region};

use crate::error::{Error, Result};
use crate::frame;
use crate::options::{ConsumerOptions, WaitStrategy};
use crate::os::lock;
use crate::os::shm::{Access, ChannelName, Segment};
use crate::os::{memfd, socket};
use crate::waiting::{coarse_now_ns, FutexWake, ShimWait, LIVENESS_SLICE};
use crate::{consumer_lock_byte, map_protocol, PRODUCER_LOCK_BYTE};

/// How long `open` waits for a producer that is still formatting its segment.
const OPEN_GRACE: Duration = Duration::from_secs(1);

/// One reader of a channel. Any number of processes may each open one (up to
/// the channel's `max_consumers`); each sees every sample (`Block`) or the
/// newest ones (`DropOldest`), in strictly increasing sequence order.
///
/// ```
/// use bips::{Consumer, Error, Options, Producer};
/// # let name = format!("doc-consumer-{}", std::process::id());
/// let producer = Producer::create(&name, &Options::new(4, 64))?;
/// let consumer = Consumer::open(&name)?;
/// for i in 0..3u8 {
///     let mut s = producer.loan()?;
///     s.write_pod(&[i])?;
///     s.publish()?;
/// }
/// drop(producer); // closes the channel
/// let mut seen = Vec::new();
/// loop {
///     match consumer.recv() {
///         Ok(sample) => seen.push(sample.as_slice()[0]),
///         Err(Error::Disconnected) => break,
///         Err(e) => return Err(e),
///     }
/// }
/// assert_eq!(seen, [0, 1, 2]);
/// # Ok::<(), bips::Error>(())
/// ```
pub struct Consumer {
    // Declared before `seg`: `core` borrows the mapping `seg` owns.
    core: ManuallyDrop<bips_core::Consumer<'static>>,
    seg: Segment,
    wait: WaitStrategy,
    /// When a `try_recv` poller last checked that the producer lives
    /// ([`coarse_now_ns`]).
    last_check: Cell<u64>,
    /// Process-unique identity, so a [`RawSample`] is only ever released to
    /// the consumer that received it (an address could be reused).
    id: u64,
    /// The channel's payload type, read and checked once at open.
    payload: Option<PayloadType>,
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("name", &self.seg.name().as_str())
            .field("entry", &self.core.index())
            .field("geometry", self.core.region().geometry())
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// Opens channel `name`, starting at its newest sample. The geometry comes
    /// from the channel.
    pub fn open(name: &str) -> Result<Consumer> {
        Consumer::open_with(name, &ConsumerOptions::default())
    }

    /// Opens channel `name` with `options`.
    pub fn open_with(name: &str, options: &ConsumerOptions) -> Result<Consumer> {
        let name = ChannelName::new(name)?;
        let (seg, region) = map_ready(&name, options)?;
        // A consumer never writes the payload: map it read-only, so that a
        // stray write (a bug, a raw pointer misused) faults here instead of
        // corrupting a frame other consumers read. Only the control part
        // (its entry, the sleeper bits, the space bell) stays writable. Needs
        // page-aligned buffers (the default alignment).
        seg.protect_read_only_from(region.layout().data_offset)?;
        let payload = region.payload_type().map_err(|source| Error::Layout {
            name: name.as_str().to_owned(),
            source,
        })?;
        frame::check_type(name.as_str(), payload.as_ref(), options.require.as_ref())?;
        let fd = seg.fd();
        if !lock::is_locked_by_other(fd, PRODUCER_LOCK_BYTE).map_err(|e| io(&name, e))? {
            // Its producer died without removing the name.
            return Err(Error::Disconnected);
        }
        let max = region.geometry().max_consumers;
        for i in 0..max {
            let byte = consumer_lock_byte(i);
            if !lock::try_lock(fd, byte).map_err(|e| io(&name, e))? {
                continue; // a live consumer (or a reaper, briefly) holds it
            }
            // We hold the entry's lock: any owner it had is dead.
            if let Some(word) = region.consumer_word(i) {
                bips_core::reclaim_consumer(&region, i, word, &FutexWake);
            }
            match bips_core::Consumer::claim(region, i, options.start, &FutexWake) {
                Ok(core) => {
                    return Ok(Consumer {
                        core: ManuallyDrop::new(core),
                        seg,
                        wait: options.wait,
                        last_check: Cell::new(coarse_now_ns()),
                        id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                        payload,
                    })
                }
                Err(_) => {
                    let _ = lock::unlock(fd, byte);
                }
            }
        }
        Err(Error::TooManyConsumers { max })
    }

    /// The payload type the channel declares, if any.
    pub fn payload_type(&self) -> Option<&PayloadType> {
        self.payload.as_ref()
    }

    /// The descriptor of a raw sample (as [`Sample::descriptor`]).
    ///
    /// # Panics
    /// When `raw` was received by another consumer.
    pub fn raw_descriptor(&self, raw: &RawSample) -> Result<Option<Descriptor>> {
        assert_eq!(raw.owner, self.id, "RawSample of another consumer");
        frame::read(
            self.core.region(),
            raw.r.buffer(),
            raw.r.len() as usize,
            self.payload.as_ref(),
        )
    }

    /// The channel name.
    pub fn name(&self) -> &str {
        self.seg.name().as_str()
    }

    /// This consumer's entry in the channel's consumer table (what
    /// `bips inspect` and [`crate::monitor::ConsumerStatus`] list it by).
    pub fn entry_index(&self) -> u32 {
        self.core.index()
    }

    /// The channel geometry (read from the segment and validated).
    pub fn geometry(&self) -> &bips_core::Geometry {
        self.core.region().geometry()
    }

    /// How many samples this consumer may hold at once: the channel's
    /// `max_held`, chosen by its producer ([`crate::Options::max_held`]).
    /// Receiving while holding that many fails with [`Error::HeldLimit`].
    pub fn max_held(&self) -> u32 {
        self.core.max_held()
    }

    /// Samples this consumer holds right now (received, not yet dropped or
    /// released).
    pub fn held(&self) -> u32 {
        self.core.held()
    }

    /// Receives the next sample, waiting as long as it takes.
    /// [`Error::Disconnected`] once the producer is gone and drained.
    pub fn recv(&self) -> Result<Sample<'_>> {
        self.recv_inner(None)
    }

    /// Receives the next sample, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Sample<'_>> {
        self.recv_inner(Some(timeout))
    }

    /// Receives the next sample if one is ready: no waiting, no system call.
    pub fn try_recv(&self) -> Result<Option<Sample<'_>>> {
        match self.core.try_recv().map_err(map_protocol)? {
            Some(r) => Ok(Some(self.sample(r))),
            None => {
                // A poller must learn of a dead producer too, however slowly
                // it polls: check its lock once per liveness slice, by time
                // (a coarse clock: a few ns through the vDSO, no system call).
                let now = coarse_now_ns();
                if now.wrapping_sub(self.last_check.get()) >= LIVENESS_SLICE.as_nanos() as u64 {
                    self.last_check.set(now);
                    if self.check_producer() {
                        // Closed just now: answer `Disconnected` (or what
                        // is still retained) at once, not at the next poll.
                        return Ok(self
                            .core
                            .try_recv()
                            .map_err(map_protocol)?
                            .map(|r| self.sample(r)));
                    }
                }
                Ok(None)
            }
        }
    }

    /// An iterator of samples, ending when the channel disconnects.
    ///
    /// ```no_run
    /// # let consumer = bips::Consumer::open("camera")?;
    /// for sample in consumer.iter() {
    ///     let sample = sample?;
    ///     println!("#{} {} bytes", sample.seq(), sample.len());
    /// }
    /// # Ok::<(), bips::Error>(())
    /// ```
    pub fn iter(&self) -> Iter<'_> {
        Iter { consumer: self }
    }

    /// Every buffer of the pool as mapped in this process: index, address,
    /// capacity, metadata area; stable for this consumer's life. Read a
    /// buffer only while holding a sample of its index (see [`crate::raw`]).
    pub fn buffers(&self) -> Vec<crate::BufferInfo> {
        crate::raw::table(self.core.region())
    }

    /// [`Consumer::recv`] as a [`RawSample`], which carries its buffer index
    /// and no borrow; give it back with [`Consumer::release_raw`].
    pub fn recv_raw(&self) -> Result<RawSample> {
        self.recv().map(Sample::into_raw)
    }

    /// [`Consumer::recv_timeout`] as a [`RawSample`].
    pub fn recv_raw_timeout(&self, timeout: Duration) -> Result<RawSample> {
        self.recv_timeout(timeout).map(Sample::into_raw)
    }

    /// [`Consumer::try_recv`] as a [`RawSample`].
    pub fn try_recv_raw(&self) -> Result<Option<RawSample>> {
        Ok(self.try_recv()?.map(Sample::into_raw))
    }

    fn recv_inner(&self, timeout: Option<Duration>) -> Result<Sample<'_>> {
        if let Some(r) = self.core.try_recv().map_err(map_protocol)? {
            return Ok(self.sample(r));
        }
        let mut check = || {
            self.check_producer();
        };
        let mut wait = ShimWait::new(self.wait, timeout, &mut check);
        let r = self.core.recv(&mut wait).map_err(map_protocol)?;
        Ok(self.sample(r))
    }

    /// Closes the channel for everyone if its producer is dead: consumers then
    /// drain what is retained and get `Disconnected`.
    /// Returns whether it found the producer dead.
    pub(crate) fn check_producer(&self) -> bool {
        if let Ok(false) = lock::is_locked_by_other(self.seg.fd(), PRODUCER_LOCK_BYTE) {
            self.core.region().close(&FutexWake);
            return true;
        }
        false
    }

    /// Gives back a sample detached with [`Sample::into_raw`].
    ///
    /// # Panics
    /// When `raw` came from another consumer.
    pub fn release_raw(&self, raw: RawSample) {
        assert_eq!(
            raw.owner, self.id,
            "RawSample released to a consumer that did not receive it"
        );
        self.core.release(raw.r, &FutexWake);
    }

    /// The protocol-level consumer (for the async wait paths, `crate::aio`).
    pub(crate) fn core(&self) -> &bips_core::Consumer<'static> {
        &self.core
    }

    /// Process-unique identity of this consumer.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn sample(&self, r: Received) -> Sample<'_> {
        Sample {
            consumer: self,
            r: ManuallyDrop::new(r),
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // SAFETY: `core` is taken exactly once, here; samples borrow `self`,
        // so none is alive.
        let core = unsafe { ManuallyDrop::take(&mut self.core) };
        core.detach(&FutexWake);
        // Our liveness lock goes with the fd when `seg` drops.
    }
}

/// Maps the segment and validates it, giving a producer that is still
/// formatting it a short grace period.
fn map_ready(name: &ChannelName, options: &ConsumerOptions) -> Result<(Segment, Region<'static>)> {
    let start = Instant::now();
    loop {
        let seg = match open_segment(name, options) {
            // Size 0: the creator has not sized it yet.
            Err(Error::Io { op: "open", .. }) if start.elapsed() < OPEN_GRACE => {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            r => r?,
        };
        // SAFETY: `seg` maps the whole object, page-aligned; the region is
        // stored next to `seg` in `Consumer` and dropped before it.
        match unsafe { Region::attach(seg.as_ptr(), seg.len()) } {
            Ok(region) => return Ok((seg, region)),
            Err(LayoutError::NotReady) if start.elapsed() < OPEN_GRACE => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(source) => {
                return Err(Error::Layout {
                    name: name.as_str().to_owned(),
                    source,
                })
            }
        }
    }
}

/// Finds channel `name`: its `/dev/shm` object, else its memfd served in the
/// socket directory.
fn open_segment(name: &ChannelName, options: &ConsumerOptions) -> Result<Segment> {
    match Segment::open_trusted(name, &options.map, &options.owner) {
        Err(not_found @ Error::NotFound { .. }) => match open_memfd(name, options) {
            Err(Error::NotFound { .. }) => Err(not_found),
            r => r,
        },
        r => r,
    }
}

/// Fetches a memfd channel's segment from its producer's socket and maps it,
/// after checking who serves it (T2), that its size is sealed, and opening it
/// anew (our own open file description, for our own locks).
pub(crate) fn open_memfd(name: &ChannelName, options: &ConsumerOptions) -> Result<Segment> {
    let dir = socket::socket_dir(options.socket_dir.as_deref());
    let trust = Some(&options.owner);
    memfd::open_served(&dir, name, trust, &options.map, Access::ReadWrite).map(|(seg, _)| seg)
}

fn io(name: &ChannelName, e: std::io::Error) -> Error {
    Error::Io {
        op: "lock",
        name: name.as_str().to_owned(),
        source: e,
    }
}

/// A received sample: the producer's bytes, in place, read-only. The buffer
/// stays held (never rewritten) until this value drops.
///
/// ```
/// # use bips::{Consumer, Options, Producer};
/// # let name = format!("doc-sample-{}", std::process::id());
/// # let producer = Producer::create(&name, &Options::new(2, 64).meta_size(8))?;
/// # let consumer = Consumer::open(&name)?;
/// # let mut s = producer.loan()?;
/// # s.write_pod(&[7u16, 8])?;
/// # s.meta_mut()[0] = 42;
/// # s.publish()?;
/// let sample = consumer.recv()?;
/// assert_eq!(sample.as_pod::<u16>()?, &[7, 8]);
/// assert_eq!(sample.meta()[0], 42);
/// assert_eq!(sample.lagged(), 0);
/// # Ok::<(), bips::Error>(())
/// ```
pub struct Sample<'c> {
    consumer: &'c Consumer,
    r: ManuallyDrop<Received>,
}

impl std::fmt::Debug for Sample<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sample")
            .field("seq", &self.seq())
            .field("len", &self.len())
            .field("lagged", &self.lagged())
            .finish()
    }
}

impl Sample<'_> {
    /// The payload.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: we hold this sample, so the producer does not write the
        // buffer (S1) and its bytes were published before we acquired it (S2);
        // `len` was checked against the buffer size; the mapping outlives the
        // consumer this sample borrows.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len()) }
    }

    /// Pointer to the payload, valid for [`Sample::len`] bytes while this
    /// sample lives; aligned to the channel's alignment.
    pub fn as_ptr(&self) -> *const u8 {
        self.consumer.core.region().buffer_ptr(self.r.buffer())
    }

    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        self.r.len() as usize
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.r.is_empty()
    }

    /// Sequence number: strictly increasing for this consumer.
    pub fn seq(&self) -> u64 {
        self.r.seq()
    }

    /// The producer's timestamp (`CLOCK_MONOTONIC` ns unless it set its own).
    pub fn timestamp_ns(&self) -> u64 {
        self.r.timestamp()
    }

    /// Samples lost just before this one (`DropOldest`; 0 under `Block`).
    pub fn lagged(&self) -> u64 {
        self.r.lagged()
    }

    /// Index of the buffer in the pool.
    pub fn buffer_index(&self) -> u32 {
        self.r.buffer()
    }

    /// The per-sample user metadata (`meta_size` bytes).
    pub fn meta(&self) -> &[u8] {
        let region = self.consumer.core.region();
        let n = region.geometry().meta_size as usize;
        // SAFETY: as for `as_slice`: the metadata area belongs to the held
        // buffer and lies in bounds of the mapping.
        unsafe { std::slice::from_raw_parts(region.meta_ptr(self.r.buffer()), n) }
    }

    /// What this sample's bytes are: the descriptor its producer set, else
    /// the one the channel fixes, else `None`. Read from shared memory,
    /// copied, parsed and checked against [`Sample::len`] at each call:
    /// [`Error::Descriptor`] for one that is malformed or reaches past the
    /// sample (a buggy or hostile producer).
    ///
    /// ```
    /// # use bips::{Consumer, DType, Descriptor, Options, Producer};
    /// # let name = format!("doc-desc-{}", std::process::id());
    /// # let producer = Producer::create(&name, &Options::new(2, 2 * 3 * 4))?;
    /// # let consumer = Consumer::open(&name)?;
    /// # let mut s = producer.loan()?;
    /// # s.set_descriptor(&Descriptor::image(2, 3, 4, DType::U8)?.with_format("RGBA")?)?;
    /// # s.publish()?;
    /// let sample = consumer.recv()?;
    /// if let Some(d) = sample.descriptor()? {
    ///     assert_eq!((d.dtype(), d.shape(), d.format()), (DType::U8, &[2, 3, 4][..], Some("RGBA")));
    ///     let px = sample.view::<u8>()?;
    ///     let _alpha = px[[1, 2, 3]];
    /// }
    /// # Ok::<(), bips::Error>(())
    /// ```
    pub fn descriptor(&self) -> Result<Option<Descriptor>> {
        frame::read(
            self.consumer.core.region(),
            self.r.buffer(),
            self.len(),
            self.consumer.payload.as_ref(),
        )
    }

    /// The payload as a typed, shaped view, as [`Sample::descriptor`] says:
    /// `view[[y, x, c]]`, `view.as_slice()` when densely packed. Fails when
    /// the sample has no descriptor, or one of another element type.
    pub fn view<T: Element>(&self) -> Result<View<'_, T>> {
        let d = self.descriptor()?.ok_or_else(frame::missing)?;
        Ok(View::new(self.as_slice(), &d)?)
    }

    /// The payload viewed as a slice of `T`. Fails when the length is not a
    /// multiple of `T`'s size.
    pub fn as_pod<T: bytemuck::AnyBitPattern>(&self) -> Result<&[T]> {
        bytemuck::try_cast_slice(self.as_slice()).map_err(|e| Error::InvalidOptions(e.to_string()))
    }
}

impl Sample<'_> {
    /// Detaches the sample from its borrow of the consumer, for loops that
    /// keep samples in their own structures. The buffer stays held until
    /// [`Consumer::release_raw`]; dropping a `RawSample` without releasing it
    /// keeps its buffer held (under `Block` that eventually stalls the
    /// producer) until the consumer itself drops.
    pub fn into_raw(self) -> RawSample {
        let mut this = std::mem::ManuallyDrop::new(self);
        RawSample {
            ptr: this.as_ptr(),
            owner: this.consumer.id,
            // SAFETY: `this` is never dropped (ManuallyDrop), so `r` is taken
            // exactly once.
            r: unsafe { ManuallyDrop::take(&mut this.r) },
        }
    }
}

/// A held sample without a borrow of its consumer: raw slot access for tight
/// loops. See [`Sample::into_raw`] and [`Consumer::release_raw`].
///
/// ```
/// # use bips::{Consumer, Options, Producer};
/// # let name = format!("doc-raw-{}", std::process::id());
/// # let producer = Producer::create(&name, &Options::new(4, 64))?;
/// # let consumer = Consumer::open(&name)?;
/// # for i in 0..2u8 { let mut s = producer.loan()?; s.write_pod(&[i])?; s.publish()?; }
/// let mut window = Vec::new(); // keep the last samples without borrowing
/// while let Some(s) = consumer.try_recv()? {
///     window.push(s.into_raw());
/// }
/// // SAFETY: not yet released, and `consumer` lives.
/// let first = unsafe { window[0].as_slice() }[0];
/// assert_eq!(first, 0);
/// for raw in window {
///     consumer.release_raw(raw);
/// }
/// # Ok::<(), bips::Error>(())
/// ```
#[derive(Debug)]
pub struct RawSample {
    ptr: *const u8,
    owner: u64,
    r: Received,
}

// SAFETY: a RawSample is a token (a hold) plus a pointer into a mapping
// shared by design; moving it to another thread moves no thread-bound state.
// Releasing needs the consumer, which is `!Sync`, so it happens on the
// consumer's thread.
unsafe impl Send for RawSample {}

impl RawSample {
    /// Pointer to the payload.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    /// Payload length.
    pub fn len(&self) -> usize {
        self.r.len() as usize
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.r.is_empty()
    }

    /// Sequence number.
    pub fn seq(&self) -> u64 {
        self.r.seq()
    }

    /// Producer timestamp (ns).
    pub fn timestamp_ns(&self) -> u64 {
        self.r.timestamp()
    }

    /// Samples lost just before this one.
    pub fn lagged(&self) -> u64 {
        self.r.lagged()
    }

    /// The buffer's index in the pool: its entry in [`Consumer::buffers`].
    pub fn buffer_index(&self) -> u32 {
        self.r.buffer()
    }

    /// The payload.
    ///
    /// # Safety
    /// The consumer that received this sample must still be alive (its
    /// mapping holds the bytes). While `self` is not released, the producer
    /// never writes the buffer.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the caller guarantees the mapping is alive; the hold keeps
        // the producer off the buffer; `len` was bounded by the buffer size.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len()) }
    }
}

impl Drop for Sample<'_> {
    fn drop(&mut self) {
        // SAFETY: taken exactly once, here.
        let r = unsafe { ManuallyDrop::take(&mut self.r) };
        self.consumer.core.release(r, &FutexWake);
    }
}

/// Iterator over a consumer's samples; see [`Consumer::iter`].
#[derive(Debug)]
pub struct Iter<'c> {
    consumer: &'c Consumer,
}

impl<'c> Iterator for Iter<'c> {
    type Item = Result<Sample<'c>>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.consumer.recv() {
            Err(Error::Disconnected) => None,
            r => Some(r),
        }
    }
}
