//! The producer: creates a channel, loans buffers, publishes samples.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bips_core::descriptor::{Descriptor, Element, PayloadType, ViewMut};
use bips_core::Region;

use crate::error::{Error, Result};
use crate::frame;
use crate::options::{Backend, Options, WaitStrategy};
use crate::os::lock;
use crate::os::memfd;
use crate::os::shm::{page_size, Access, ChannelName, MapOptions, Object, Publish, Segment};
use crate::os::socket::{self, Server};
use crate::trust::OwnerPolicy;
use crate::waiting::{now_ns, DoorbellWake, FutexWake, ShimWait, LIVENESS_SLICE};
use crate::{consumer_lock_byte, map_protocol, PRODUCER_LOCK_BYTE};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The single writer of a channel.
///
/// Creating one makes `/dev/shm/bips.<name>`; dropping it closes the channel
/// (consumers drain what is left, then get [`Error::Disconnected`]) and
/// removes the name. Mappings held by consumers stay valid until they drop.
///
/// ```
/// use bips::{Consumer, Options, Producer};
/// # let name = format!("doc-producer-{}", std::process::id());
/// let producer = Producer::create(&name, &Options::new(4, 1024))?;
/// let consumer = Consumer::open(&name)?;
///
/// let mut sample = producer.loan()?;
/// sample.as_mut_slice()[..5].copy_from_slice(b"hello");
/// sample.set_len(5);
/// let seq = sample.publish()?;
///
/// let got = consumer.recv()?;
/// assert_eq!((got.seq(), got.as_slice()), (seq, &b"hello"[..]));
/// # Ok::<(), bips::Error>(())
/// ```
pub struct Producer {
    // Declared before `seg`: `core` borrows the mapping `seg` owns.
    core: bips_core::Producer<'static>,
    seg: Segment,
    wait: WaitStrategy,
    /// Tells this producer's [`RawLoan`]s from another's.
    id: u64,
    /// When dead consumers were last looked for: reaping costs a system
    /// call per consumer entry, so a full pool (the normal state of a
    /// `Block` channel paced by its consumers) must not trigger it on every
    /// loan (P1). At most once per liveness slice.
    last_reap: Cell<Instant>,
    /// Rings the doorbell on publish; counts wakes that found nobody.
    doorbell: DoorbellWake,
    /// When sleepers were last checked for being alive after wakes that
    /// found nobody (see [`Producer::after_publish`]).
    last_sleeper_check: Cell<Option<Instant>>,
    /// The channel's declared payload type.
    payload: Option<PayloadType>,
    /// Per buffer: whether its descriptor slot holds a descriptor from an
    /// earlier sample, to clear when a later sample of it sets none.
    desc_in_slot: Box<[Cell<bool>]>,
    /// A [`Backend::Memfd`] channel's socket server (taken by `close`).
    server: std::cell::RefCell<Option<Server>>,
    /// Set by [`Producer::close`]: no more loans or publishes.
    closed: Cell<bool>,
    /// Loans not yet published or given back (raw ones included).
    loans: Cell<u32>,
    /// Set by [`Producer::close_after_loans`] while loans were out.
    close_pending: Cell<bool>,
}

/// Wakes that must find nobody before the producer checks whether the
/// consumers marked asleep are alive.
const MISSED_WAKES_BEFORE_CHECK: u32 = 2;
/// Least time between two such checks: a check costs a system call per
/// consumer marked asleep, and wakes finding nobody are also part of normal
/// operation under load (a consumer woken by the previous publish has not
/// run yet).
const SLEEPER_CHECK_INTERVAL: Duration = Duration::from_millis(10);

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("name", &self.seg.name().as_str())
            .field("geometry", self.core.region().geometry())
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// Creates channel `name` with `options`.
    ///
    /// Fails with [`Error::ChannelBusy`] when a live producer owns the name; a
    /// stale segment left by a dead producer is replaced.
    pub fn create(name: &str, options: &Options) -> Result<Producer> {
        let name = ChannelName::new(name)?;
        crate::options::Backend::check_env()?;
        let geometry = options.geometry()?;
        let layout =
            bips_core::Layout::new(geometry).map_err(|e| Error::InvalidOptions(e.to_string()))?;
        let page = page_size();
        let len = layout.total_size.div_ceil(page) * page;
        // Listed for `remove_owned_channels` (signals) once published.
        let creating = crate::cleanup::Creating::begin();
        let dir = socket::socket_dir(options.socket_dir.as_deref());
        if options.backend == Backend::Memfd {
            return Producer::create_memfd(&name, options, geometry, len, &dir, &creating);
        }
        // One name, one channel: not while a memfd channel has it.
        if socket::is_live(&dir, &name) {
            return Err(Error::ChannelBusy {
                name: name.as_str().to_owned(),
            });
        }
        // The segment is created, locked and formatted under a staging name
        // and renamed into place only then (never over an existing object):
        // whoever finds it under the channel's name finds it complete and,
        // while we live, locked — `bips clean` cannot mistake it for stale.
        // Each round ends in success, ChannelBusy (a live producer has the
        // name), or a retry: our staging object was removed before we locked
        // it, or the name's stale object went while we replaced it.
        'create: for _ in 0..32 {
            let mut seg = Segment::create_staged(&name, len, options.mode, &options.map)?;
            // Liveness: hold byte 0 for as long as we live. Only `bips clean`
            // could have seen the staging object; if it got the lock, retry.
            if !lock::try_lock(seg.fd(), PRODUCER_LOCK_BYTE).map_err(|e| io("lock", &name, e))? {
                continue;
            }
            // SAFETY: we just created `seg` under a staging name nobody else
            // uses (consumers cannot find it before `publish`), and the
            // region goes into the `Producer` that owns `seg`.
            let region = unsafe { format_segment(&seg, geometry, options) }?;
            for _ in 0..8 {
                match seg.publish()? {
                    Publish::Done => {
                        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                        creating.register(id, &seg, None);
                        return Ok(Producer::new(region, seg, options, id, None));
                    }
                    // A live producer answers ChannelBusy; a stale one is removed.
                    Publish::Exists => replace_stale(&name, &options.owner)?,
                    Publish::Vanished => continue 'create,
                }
            }
        }
        Err(Error::Io {
            op: "create",
            name: name.as_str().to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "creating the channel was interrupted 32 times in a row (its staging object \
                 removed by a `bips clean` with no grace period, or the name re-created by \
                 others); retry",
            ),
        })
    }

    fn new(
        region: Region<'static>,
        seg: Segment,
        options: &Options,
        id: u64,
        server: Option<Server>,
    ) -> Producer {
        Producer {
            core: bips_core::Producer::new(region),
            desc_in_slot: (0..region.geometry().buffer_count)
                .map(|_| Cell::new(false))
                .collect(),
            seg,
            wait: options.wait,
            id,
            last_reap: Cell::new(Instant::now()),
            doorbell: DoorbellWake::default(),
            last_sleeper_check: Cell::new(None),
            payload: options.payload,
            server: std::cell::RefCell::new(server),
            closed: Cell::new(false),
            loans: Cell::new(0),
            close_pending: Cell::new(false),
        }
    }

    /// [`Producer::create`] of a [`Backend::Memfd`] channel: claim the name
    /// in the socket directory (its lock file), create, lock, format and
    /// seal the memfd, then serve it.
    fn create_memfd(
        name: &ChannelName,
        options: &Options,
        geometry: bips_core::Geometry,
        len: usize,
        dir: &std::path::Path,
        creating: &crate::cleanup::Creating,
    ) -> Result<Producer> {
        // One name, one channel: not while a live producer has it in /dev/shm.
        if let Ok(obj) = Object::open(name, Access::ReadOnly) {
            if lock::is_locked_by_other(obj.fd(), PRODUCER_LOCK_BYTE).unwrap_or(false) {
                return Err(Error::ChannelBusy {
                    name: name.as_str().to_owned(),
                });
            }
        }
        let claim = socket::Claim::take(dir, name, options.mode)?;
        let fd = memfd::create(name, len, &options.map)?;
        let seg = Segment::from_memfd(fd, len, name, &options.map, true, Access::ReadWrite)?;
        // Liveness: byte 0 of the memfd, as for /dev/shm objects; consumers
        // open the memfd anew (their own open file description) to see it.
        if !lock::try_lock(seg.fd(), PRODUCER_LOCK_BYTE).map_err(|e| io("lock", name, e))? {
            return Err(Error::Corrupt {
                what: "a fresh memfd was locked by someone else",
            });
        }
        // SAFETY: nobody else has this memfd yet (it is served below), and
        // the region goes into the `Producer` that owns `seg`.
        let region = unsafe { format_segment(&seg, geometry, options) }?;
        let served = seg
            .fd()
            .try_clone_to_owned()
            .map_err(|e| io("dup", name, e))?;
        let server = claim.serve(served, len as u64, options.mode)?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        creating.register(id, &seg, Some(&server));
        Ok(Producer::new(region, seg, options, id, Some(server)))
    }

    /// Closes the channel now, as dropping the producer does: consumers
    /// receive what is left, then [`Error::Disconnected`]; the name is removed
    /// (a new producer may take it). The mapping stays valid while this value
    /// lives, so bytes a caller still references (a view handed to another
    /// language) stay readable; loans and publishes fail with
    /// [`Error::Closed`] from now on. Idempotent.
    ///
    /// ```
    /// # use bips::{Consumer, Error, Options, Producer};
    /// # let name = format!("doc-close-{}", std::process::id());
    /// let producer = Producer::create(&name, &Options::new(2, 64))?;
    /// let consumer = Consumer::open(&name)?;
    /// producer.close();
    /// assert!(matches!(consumer.recv(), Err(Error::Disconnected)));
    /// assert!(matches!(producer.loan(), Err(Error::Closed)));
    /// # Ok::<(), bips::Error>(())
    /// ```
    pub fn close(&self) {
        if self.closed.replace(true) {
            return;
        }
        self.core.close(&FutexWake);
        self.seg.unlink_if_same();
        // A memfd channel: stop serving, remove the socket and lock file.
        drop(self.server.borrow_mut().take());
        // Last: until now a signal's cleanup may still remove the channel.
        crate::cleanup::deregister(self.id);
    }

    /// [`Producer::close`] once every loan out now (raw ones included) is
    /// published or given back: those may still be published; no new loan
    /// is made ([`Error::Closed`]). At once when no loan is out. For a
    /// shutdown that lets a frame being written reach the consumers.
    pub fn close_after_loans(&self) {
        if self.loans.get() == 0 {
            self.close();
        } else {
            self.close_pending.set(true);
        }
    }

    /// Whether [`Producer::close`] ran.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// New loans: refused once a close is done or pending.
    pub(crate) fn check_loanable(&self) -> Result<()> {
        if self.closed.get() || self.close_pending.get() {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Publishes of loans already out: refused once the channel is closed.
    fn check_open(&self) -> Result<()> {
        if self.closed.get() {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// A loan was published or given back.
    fn loan_ended(&self) {
        let n = self.loans.get().saturating_sub(1);
        self.loans.set(n);
        if n == 0 && self.close_pending.get() {
            self.close();
        }
    }

    /// The channel name.
    pub fn name(&self) -> &str {
        self.seg.name().as_str()
    }

    /// Where the channel's segment lives.
    pub fn backend(&self) -> Backend {
        self.seg.backend()
    }

    /// Bytes per buffer.
    pub fn buffer_size(&self) -> usize {
        self.core.region().geometry().buffer_size as usize
    }

    /// Bytes of user metadata per sample.
    pub fn meta_size(&self) -> usize {
        self.core.region().geometry().meta_size as usize
    }

    /// The channel geometry.
    pub fn geometry(&self) -> &bips_core::Geometry {
        self.core.region().geometry()
    }

    /// The payload type this channel declares ([`Options::payload_type`]).
    pub fn payload_type(&self) -> Option<&PayloadType> {
        self.payload.as_ref()
    }

    /// Consumers attached right now.
    pub fn consumer_count(&self) -> usize {
        let r = self.core.region();
        (0..r.geometry().max_consumers)
            .filter(|&i| r.consumer_info(i).is_some_and(|c| c.active))
            .count()
    }

    /// Loans a buffer, waiting as long as it takes (under `Block`, for the
    /// slowest consumer). Dead consumers are reclaimed while waiting.
    pub fn loan(&self) -> Result<SampleMut<'_>> {
        self.loan_inner(None)
    }

    /// Loans a buffer, waiting at most `timeout`: [`Error::Timeout`] after.
    pub fn loan_timeout(&self, timeout: Duration) -> Result<SampleMut<'_>> {
        self.loan_inner(Some(timeout))
    }

    /// Loans a buffer if one is free now.
    pub fn try_loan(&self) -> Result<Option<SampleMut<'_>>> {
        self.check_loanable()?;
        match self.core.try_loan().map_err(map_protocol)? {
            Some(buf) => Ok(Some(self.sample(buf))),
            None => {
                // A dead consumer may be what keeps every buffer busy.
                if self.reap_due() && self.reap_dead_consumers() > 0 {
                    return Ok(self
                        .core
                        .try_loan()
                        .map_err(map_protocol)?
                        .map(|b| self.sample(b)));
                }
                Ok(None)
            }
        }
    }

    /// Every buffer of the pool: index, address, capacity, metadata area;
    /// stable for this producer's life. Register them once (a DMA engine,
    /// `cudaHostRegister`), then use [`Producer::loan_raw`]: see
    /// [`crate::raw`].
    pub fn buffers(&self) -> Vec<crate::BufferInfo> {
        crate::raw::table(self.core.region())
    }

    /// [`Producer::loan`] as a [`RawLoan`], which carries its buffer index
    /// and no borrow (the same call, no extra cost).
    pub fn loan_raw(&self) -> Result<RawLoan> {
        self.loan().map(SampleMut::into_raw)
    }

    /// [`Producer::loan_timeout`] as a [`RawLoan`].
    pub fn loan_raw_timeout(&self, timeout: Duration) -> Result<RawLoan> {
        self.loan_timeout(timeout).map(SampleMut::into_raw)
    }

    /// [`Producer::try_loan`] as a [`RawLoan`].
    pub fn try_loan_raw(&self) -> Result<Option<RawLoan>> {
        Ok(self.try_loan()?.map(SampleMut::into_raw))
    }

    fn loan_inner(&self, timeout: Option<Duration>) -> Result<SampleMut<'_>> {
        self.check_loanable()?;
        if let Some(buf) = self.core.try_loan().map_err(map_protocol)? {
            return Ok(self.sample(buf));
        }
        if self.reap_due() {
            self.reap_dead_consumers();
        }
        let mut check = || {
            if self.reap_due() {
                self.reap_dead_consumers();
            }
        };
        let mut wait = ShimWait::new(self.wait, timeout, &mut check);
        let buf = self.core.loan(&mut wait).map_err(map_protocol)?;
        Ok(self.sample(buf))
    }

    /// Whether a liveness slice passed since dead consumers were last
    /// looked for (and if so, starts a new slice).
    fn reap_due(&self) -> bool {
        let now = Instant::now();
        if now.duration_since(self.last_reap.get()) < LIVENESS_SLICE {
            return false;
        }
        self.last_reap.set(now);
        true
    }

    /// The protocol-level producer (for the async wait paths, `crate::aio`).
    pub(crate) fn core(&self) -> &bips_core::Producer<'static> {
        &self.core
    }

    /// Process-unique identity of this producer.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn sample(&self, buf: u32) -> SampleMut<'_> {
        self.loans.set(self.loans.get() + 1);
        SampleMut {
            producer: self,
            buf,
            len: self.buffer_size(),
            timestamp: None,
            desc_extent: None,
            done: false,
        }
    }

    /// Before publishing buffer `buf`: a descriptor set on the loan (its
    /// slot written already, `extent` bytes needed) must fit the published
    /// length; a loan that set none clears the slot if an earlier sample of
    /// the buffer left one there (only then: channels without descriptors
    /// never touch the slot).
    fn stage_descriptor(&self, buf: u32, extent: Option<u64>, len: usize) -> Result<()> {
        frame::check_len(extent, len)?;
        let Some(held) = self.desc_in_slot.get(buf as usize) else {
            return Ok(());
        };
        if extent.is_none() && held.get() {
            frame::write(self.core.region(), buf, None);
        }
        held.set(extent.is_some());
        Ok(())
    }

    /// Publishes a loan detached with [`SampleMut::into_raw`]; returns its
    /// sequence number.
    ///
    /// # Panics
    /// When `raw` was loaned by another producer.
    pub fn publish_raw(&self, raw: RawLoan) -> Result<u64> {
        self.check_owner(&raw);
        let r = self.publish_raw_inner(&raw);
        self.loan_ended();
        r
    }

    fn publish_raw_inner(&self, raw: &RawLoan) -> Result<u64> {
        let staged = self
            .check_open()
            .and_then(|()| self.stage_descriptor(raw.buf, raw.desc_extent, raw.len));
        if let Err(e) = staged {
            let _ = self.core.unloan(raw.buf);
            return Err(e);
        }
        let ts = raw.timestamp.unwrap_or_else(now_ns);
        let seq = self
            .core
            .publish(raw.buf, raw.len as u64, ts, &self.doorbell)
            .map_err(map_protocol)?;
        self.after_publish();
        Ok(seq)
    }

    /// After a publish: if its doorbell wakes keep finding nobody, a consumer
    /// may have died asleep (kill -9 in `recv`), its sleeper bit making every
    /// publish a system call. Reap dead consumers then, which clears their
    /// bits: a dead sleeper costs [`MISSED_WAKES_BEFORE_CHECK`] wake calls
    /// (at most [`SLEEPER_CHECK_INTERVAL`] of publishes when a check just
    /// ran), not one per publish for ever (P1).
    #[inline]
    fn after_publish(&self) {
        if self.doorbell.missed() >= MISSED_WAKES_BEFORE_CHECK {
            self.check_sleepers();
        }
    }

    #[cold]
    fn check_sleepers(&self) {
        let now = Instant::now();
        if self
            .last_sleeper_check
            .get()
            .is_some_and(|t| now.duration_since(t) < SLEEPER_CHECK_INTERVAL)
        {
            return;
        }
        self.last_sleeper_check.set(Some(now));
        self.doorbell.reset();
        self.reap_dead_sleepers();
    }

    /// Like [`Producer::reap_dead_consumers`], but probes only the entries
    /// marked asleep: a few system calls, not one per entry, inline in a
    /// publish.
    fn reap_dead_sleepers(&self) -> usize {
        let r = self.core.region();
        (0..r.geometry().max_consumers)
            .filter(|&i| r.is_sleeper(i))
            .filter(|&i| self.reap_if_dead(i))
            .count()
    }

    /// Sets the frame/tensor descriptor of a raw loan (as
    /// [`SampleMut::set_descriptor`]).
    ///
    /// # Panics
    /// When `raw` was loaned by another producer.
    pub fn set_raw_descriptor(&self, raw: &mut RawLoan, d: &Descriptor) -> Result<()> {
        self.check_owner(raw);
        let extent = frame::check_set(d, raw.capacity, self.payload.as_ref())?;
        frame::write(self.core.region(), raw.buf, Some(d));
        raw.desc_extent = Some(extent);
        Ok(())
    }

    /// The descriptor of a raw loan: the one set on it, else the channel's
    /// fixed one, else `None`.
    ///
    /// # Panics
    /// When `raw` was loaned by another producer.
    pub fn raw_descriptor(&self, raw: &RawLoan) -> Option<Descriptor> {
        self.check_owner(raw);
        let fixed = || self.payload.as_ref().and_then(|t| t.descriptor().copied());
        match raw.desc_extent {
            Some(_) => frame::read_own(self.core.region(), raw.buf).or_else(fixed),
            None => fixed(),
        }
    }

    /// Gives back, unpublished, a loan detached with [`SampleMut::into_raw`].
    ///
    /// # Panics
    /// When `raw` was loaned by another producer.
    pub fn unloan_raw(&self, raw: RawLoan) {
        self.check_owner(&raw);
        let _ = self.core.unloan(raw.buf);
        self.loan_ended();
    }

    /// Whether `raw` was loaned by this producer.
    pub fn owns(&self, raw: &RawLoan) -> bool {
        raw.owner == self.id
    }

    fn check_owner(&self, raw: &RawLoan) {
        assert!(
            self.owns(raw),
            "RawLoan given back to a producer that did not loan it"
        );
    }

    /// Frees the entries of consumers whose liveness lock is gone (they died:
    /// kill -9 included). Returns how many were reclaimed.
    ///
    /// Runs on its own while `loan` waits; call it to reclaim eagerly.
    pub fn reap_dead_consumers(&self) -> usize {
        let r = self.core.region();
        (0..r.geometry().max_consumers)
            .filter(|&i| self.reap_if_dead(i))
            .count()
    }

    /// Reclaims consumer entry `i` if it is claimed and its owner is dead
    /// (its liveness lock is free). Returns whether it did.
    fn reap_if_dead(&self, i: u32) -> bool {
        let r = self.core.region();
        let Some(word) = r.consumer_word(i) else {
            return false;
        };
        if bips_core::layout::entry_word_split(word).1 == bips_core::layout::ENTRY_FREE {
            return false;
        }
        let fd = self.seg.fd();
        let byte = consumer_lock_byte(i);
        // Holding the entry's lock proves its owner dead and keeps a new
        // consumer from claiming the entry while we free it.
        let mut freed = false;
        if let Ok(true) = lock::try_lock(fd, byte) {
            freed = bips_core::reclaim_consumer(r, i, word, &FutexWake);
            let _ = lock::unlock(fd, byte);
        }
        freed
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.close();
    }
}

/// Finds out whether the existing object `name` has a live producer; if not,
/// removes it so a new one can be created.
///
/// T1: the name is removed only after this process opened the object, holds
/// its byte-0 lock and so has identified it as dead (a producer holds that
/// lock from before its object gets the name until it exits). Every other
/// outcome is an error, never a removal: a live producer is
/// [`Error::ChannelBusy`]; an object this process cannot open (out of file
/// descriptors, no permission, a symlink or a directory planted there, ...)
/// is that error. Locks need no mapping, so an object that cannot be mapped
/// (empty, truncated, garbage) is still judged by its lock; mapping it only
/// serves to tell its consumers, once it is known dead.
fn replace_stale(name: &ChannelName, owner: &OwnerPolicy) -> Result<()> {
    /// How many times (1 ms apart) a locked object is looked at again.
    const BUSY_RECHECKS: u32 = 20;
    let obj = match Object::open(name, Access::ReadWrite) {
        Ok(obj) => obj,
        // Gone in between: publish again.
        Err(Error::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    // Another user's object: never ours to judge or remove unless trusted (T2).
    owner.check(name, obj.owner_uid())?;
    // A live producer holds byte 0 for its whole life; `bips clean` holds it
    // only for the instant of its own check (then removes the object if it
    // is dead): look again for a little while before calling the channel busy.
    let mut rechecks = 0;
    while !lock::try_lock(obj.fd(), PRODUCER_LOCK_BYTE).map_err(|e| io("lock", name, e))? {
        if !obj.still_named() {
            // Removed meanwhile (by a sweep that found it dead): publish again.
            return Ok(());
        }
        rechecks += 1;
        if rechecks > BUSY_RECHECKS {
            return Err(Error::ChannelBusy {
                name: name.as_str().to_owned(),
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // We hold its byte-0 lock: its producer is dead (the lock died with it),
    // and no one else who follows T1 can remove or replace the name while we
    // hold it. Mark it closed so its consumers drain and disconnect (best
    // effort: an object that cannot be mapped or read as a channel has no
    // consumers to tell, and consumers also see the producer's lock gone).
    if let Ok(seg) = obj.map(&MapOptions::default()) {
        // SAFETY: `seg` maps the whole object and outlives `region` (dropped
        // at the end of this block); an unvalidated header is refused by attach.
        if let Ok(region) = unsafe { Region::attach(seg.as_ptr(), seg.len()) } {
            region.close(&FutexWake);
        }
    }
    // Only this dead object: never one another producer just made; another
    // user's object in the sticky /dev/shm is a clear error now.
    crate::trust::remove_stale(obj.fd(), obj.name())
}

/// Formats a fresh segment as a channel of `geometry` (and the payload type
/// of `options`) under a new epoch.
///
/// # Safety
/// `seg` must be a segment this process just created (sized for the
/// geometry) that no other process uses yet, and the region returned must
/// live in the `Producer` that owns `seg`, dropped before it (the region
/// borrows the mapping for 'static; `Producer` declares `core` before `seg`).
unsafe fn format_segment(
    seg: &Segment,
    geometry: bips_core::Geometry,
    options: &Options,
) -> Result<Region<'static>> {
    let epoch = now_ns() ^ (u64::from(std::process::id()) << 32);
    // SAFETY: `seg` maps `seg.len() >= total_size` bytes, page-aligned,
    // exclusively ours (the caller's contract) for as long as the region
    // lives (the caller's contract too).
    unsafe {
        Region::format_typed(
            seg.as_ptr(),
            seg.len(),
            geometry,
            epoch,
            options.payload.as_ref(),
        )
    }
    .map_err(|e| Error::InvalidOptions(e.to_string()))
}

fn io(op: &'static str, name: &ChannelName, e: std::io::Error) -> Error {
    Error::Io {
        op,
        name: name.as_str().to_owned(),
        source: e,
    }
}

/// A loaned buffer being written: publish it with [`SampleMut::publish`], or
/// drop it to give the buffer back unpublished.
///
/// ```
/// # use bips::{Options, Producer};
/// # let name = format!("doc-samplemut-{}", std::process::id());
/// # let producer = Producer::create(&name, &Options::new(2, 64).meta_size(8))?;
/// let mut s = producer.loan()?;
/// s.write_pod(&[1u32, 2, 3, 4])?; // bytemuck view, sets the length to 16
/// s.meta_mut()[..4].copy_from_slice(&640u32.to_le_bytes());
/// assert_eq!(s.len(), 16);
/// s.publish()?;
/// # Ok::<(), bips::Error>(())
/// ```
pub struct SampleMut<'p> {
    producer: &'p Producer,
    buf: u32,
    len: usize,
    timestamp: Option<u64>,
    /// Bytes the descriptor set on this loan needs (its slot is written).
    desc_extent: Option<u64>,
    done: bool,
}

impl std::fmt::Debug for SampleMut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampleMut")
            .field("buffer", &self.buf)
            .field("len", &self.len)
            .finish()
    }
}

impl<'p> SampleMut<'p> {
    /// The whole buffer, writable ([`SampleMut::capacity`] bytes).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the buffer is loaned to us: no consumer holds it (the
        // protocol only loans buffers nobody holds) and no one else writes it;
        // the pointer is in bounds for `capacity` bytes of our mapping, which
        // outlives `'p`; `&mut self` makes this the only live view.
        unsafe { std::slice::from_raw_parts_mut(self.as_mut_ptr(), self.capacity()) }
    }

    /// Pointer to the first byte of the buffer, valid for [`capacity`]
    /// bytes until this sample is published or dropped; aligned to the
    /// channel's alignment (the page size by default).
    ///
    /// [`capacity`]: SampleMut::capacity
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.producer.core.region().buffer_ptr(self.buf)
    }

    /// Bytes the buffer can hold.
    pub fn capacity(&self) -> usize {
        self.producer.buffer_size()
    }

    /// Bytes that will be published (default: the whole buffer).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the published payload would be empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets the number of bytes to publish.
    ///
    /// # Panics
    /// When `len` exceeds [`SampleMut::capacity`].
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.capacity(),
            "length {len} exceeds buffer capacity {}",
            self.capacity()
        );
        self.len = len;
    }

    /// Overrides the timestamp (default: `CLOCK_MONOTONIC` at publish, ns).
    pub fn set_timestamp_ns(&mut self, ns: u64) {
        self.timestamp = Some(ns);
    }

    /// The per-sample user metadata area (`meta_size` bytes), e.g. width,
    /// height and pixel format of a frame.
    pub fn meta_mut(&mut self) -> &mut [u8] {
        let r = self.producer.core.region();
        let n = r.geometry().meta_size as usize;
        // SAFETY: the metadata area of a loaned buffer belongs to the writer
        // like the buffer itself; in bounds of the mapping for `meta_size`.
        unsafe { std::slice::from_raw_parts_mut(r.meta_ptr(self.buf), n) }
    }

    /// Says what this sample's bytes are: its frame/tensor descriptor, read
    /// by consumers with [`crate::Sample::descriptor`]. It must fit the
    /// buffer (and, at publish, the published length); on a channel that
    /// fixes a descriptor ([`Options::payload_type`]) it must be that one
    /// (such a channel's samples need not set it at all).
    ///
    /// ```
    /// # use bips::{Consumer, DType, Descriptor, Options, Producer};
    /// # let name = format!("doc-setdesc-{}", std::process::id());
    /// let producer = Producer::create(&name, &Options::new(2, 4 * 6 * 2))?;
    /// let consumer = Consumer::open(&name)?;
    /// let mut s = producer.loan()?;
    /// s.set_descriptor(&Descriptor::image(4, 6, 1, DType::U16)?.with_format("GRAY16_LE")?)?;
    /// s.view_mut::<u16>()?[[3, 5]] = 4095; // (h, w) of u16, in place
    /// s.publish()?;
    /// let got = consumer.recv()?;
    /// assert_eq!(got.descriptor()?.unwrap().shape(), &[4, 6]);
    /// assert_eq!(got.view::<u16>()?[[3, 5]], 4095);
    /// # Ok::<(), bips::Error>(())
    /// ```
    pub fn set_descriptor(&mut self, d: &Descriptor) -> Result<()> {
        let extent = frame::check_set(d, self.capacity(), self.producer.payload.as_ref())?;
        frame::write(self.producer.core.region(), self.buf, Some(d));
        self.desc_extent = Some(extent);
        Ok(())
    }

    /// This sample's descriptor: the one set on it, else the channel's fixed
    /// one, else `None`.
    pub fn descriptor(&self) -> Option<Descriptor> {
        let fixed = || {
            self.producer
                .payload
                .as_ref()
                .and_then(|t| t.descriptor().copied())
        };
        match self.desc_extent {
            Some(_) => frame::read_own(self.producer.core.region(), self.buf).or_else(fixed),
            None => fixed(),
        }
    }

    /// The buffer as a typed, shaped, writable view, as its descriptor
    /// ([`SampleMut::descriptor`]) says: `view[[y, x, c]] = v`.
    pub fn view_mut<T: Element>(&mut self) -> Result<ViewMut<'_, T>> {
        let d = self.descriptor().ok_or_else(frame::missing)?;
        Ok(ViewMut::new(self.as_mut_slice(), &d)?)
    }

    /// Copies a slice of plain-old-data values to the start of the buffer
    /// and sets the length to its size in bytes.
    pub fn write_pod<T: bytemuck::NoUninit>(&mut self, values: &[T]) -> Result<()> {
        let bytes: &[u8] = bytemuck::cast_slice(values);
        if bytes.len() > self.capacity() {
            return Err(Error::InvalidOptions(format!(
                "value of {} bytes exceeds buffer capacity {}",
                bytes.len(),
                self.capacity()
            )));
        }
        self.as_mut_slice()[..bytes.len()].copy_from_slice(bytes);
        self.len = bytes.len();
        Ok(())
    }

    /// The buffer viewed as a mutable slice of `T` (as many as fit).
    /// Fails when the buffer's alignment is too small for `T`.
    pub fn as_mut_pod<T: bytemuck::Pod>(&mut self) -> Result<&mut [T]> {
        let n = self.capacity() / std::mem::size_of::<T>().max(1);
        let bytes = &mut self.as_mut_slice()[..n * std::mem::size_of::<T>()];
        bytemuck::try_cast_slice_mut(bytes).map_err(|e| Error::InvalidOptions(e.to_string()))
    }

    /// The buffer's index in the pool (`0..buffers`).
    pub fn buffer_index(&self) -> u32 {
        self.buf
    }

    /// Detaches the loan from the borrow of its producer, for code that
    /// must keep it in a place a lifetime cannot describe (a C handle, a
    /// GStreamer memory, a Python object). Hand it back with
    /// [`Producer::publish_raw`] or [`Producer::unloan_raw`]; a `RawLoan`
    /// that is simply dropped keeps its buffer loaned until the producer
    /// closes.
    pub fn into_raw(mut self) -> RawLoan {
        self.done = true;
        let r = self.producer.core.region();
        RawLoan {
            ptr: r.buffer_ptr(self.buf),
            capacity: self.capacity(),
            meta: r.meta_ptr(self.buf),
            meta_len: r.geometry().meta_size as usize,
            owner: self.producer.id,
            buf: self.buf,
            len: self.len,
            timestamp: self.timestamp,
            desc_extent: self.desc_extent,
        }
    }

    /// Publishes the sample: consumers see exactly the bytes written so far.
    /// Returns its sequence number.
    ///
    /// Fails with [`Error::Descriptor`] when the sample's descriptor reaches
    /// past the published length; the buffer then goes back unpublished.
    pub fn publish(mut self) -> Result<u64> {
        self.producer.check_open()?;
        self.producer
            .stage_descriptor(self.buf, self.desc_extent, self.len)?;
        self.done = true;
        let ts = self.timestamp.unwrap_or_else(now_ns);
        let r = self
            .producer
            .core
            .publish(self.buf, self.len as u64, ts, &self.producer.doorbell)
            .map_err(map_protocol);
        self.producer.loan_ended();
        let seq = r?;
        self.producer.after_publish();
        Ok(seq)
    }
}

impl Drop for SampleMut<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.producer.core.unloan(self.buf);
            self.producer.loan_ended();
        }
    }
}

/// A loan detached from its producer's borrow by [`SampleMut::into_raw`]:
/// a buffer index plus pointers into the producer's mapping.
///
/// The bytes stay valid, and only this loan's holder writes them, as long as
/// the producer that made it is alive and the loan is not yet handed back
/// with [`Producer::publish_raw`] or [`Producer::unloan_raw`].
///
/// ```
/// # use bips::{Consumer, Options, Producer};
/// # let name = format!("doc-rawloan-{}", std::process::id());
/// let producer = Producer::create(&name, &Options::new(2, 64))?;
/// let consumer = Consumer::open(&name)?;
/// let mut raw = producer.loan()?.into_raw();
/// // SAFETY: `producer` is alive and `raw` not handed back yet.
/// unsafe { raw.as_mut_slice()[..3].copy_from_slice(b"abc") };
/// raw.set_len(3)?;
/// producer.publish_raw(raw)?;
/// assert_eq!(consumer.recv()?.as_slice(), b"abc");
/// # Ok::<(), bips::Error>(())
/// ```
#[derive(Debug)]
pub struct RawLoan {
    ptr: *mut u8,
    capacity: usize,
    meta: *mut u8,
    meta_len: usize,
    owner: u64,
    buf: u32,
    len: usize,
    timestamp: Option<u64>,
    /// Bytes the descriptor set on this loan needs (its slot is written).
    desc_extent: Option<u64>,
}

// SAFETY: a RawLoan is a buffer index plus pointers into a mapping that is
// shared by design; it carries no thread-bound state. Publishing it needs
// the producer, which is `!Sync`, so that happens on the producer's thread
// (or under the caller's lock).
unsafe impl Send for RawLoan {}

impl RawLoan {
    /// Pointer to the first byte of the buffer, valid for
    /// [`RawLoan::capacity`] bytes while the loan is outstanding.
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Bytes the buffer can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes that will be published.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the published payload would be empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets the number of bytes to publish; [`Error::InvalidOptions`] when
    /// `len` exceeds the capacity (the length is then unchanged).
    pub fn set_len(&mut self, len: usize) -> Result<()> {
        if len > self.capacity {
            return Err(Error::InvalidOptions(format!(
                "length {len} exceeds buffer capacity {}",
                self.capacity
            )));
        }
        self.len = len;
        Ok(())
    }

    /// Overrides the timestamp (default: `CLOCK_MONOTONIC` at publish, ns).
    pub fn set_timestamp_ns(&mut self, ns: u64) {
        self.timestamp = Some(ns);
    }

    /// Pointer to the per-sample metadata area, valid for
    /// [`RawLoan::meta_len`] bytes while the loan is outstanding.
    pub fn meta_mut_ptr(&self) -> *mut u8 {
        self.meta
    }

    /// Bytes of per-sample metadata (the channel's `meta_size`).
    pub fn meta_len(&self) -> usize {
        self.meta_len
    }

    /// The buffer's index in the pool.
    pub fn buffer_index(&self) -> u32 {
        self.buf
    }

    /// The whole buffer, writable.
    ///
    /// # Safety
    /// The producer that loaned it must be alive, the loan not handed back,
    /// and no other reference to the buffer's bytes may be live.
    pub unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the caller guarantees the mapping lives and the loan is
        // outstanding (no consumer holds the buffer, nobody else writes it);
        // `&mut self` keeps this the only view made through this loan.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.capacity) }
    }

    /// The metadata area, writable.
    ///
    /// # Safety
    /// As for [`RawLoan::as_mut_slice`].
    pub unsafe fn meta_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_mut_slice`; the metadata area of a loaned buffer
        // belongs to its writer and spans `meta_len` bytes of the mapping.
        unsafe { std::slice::from_raw_parts_mut(self.meta, self.meta_len) }
    }
}
