//! `bips_consumer` and its received samples, `bips_sample`.

use std::cell::UnsafeCell;
use std::ffi::{c_char, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::options::{bips_consumer_options, bips_geometry, consumer_options, write_geometry};
use crate::{
    bips_status, ffi, ffi_value, name_arg, new_token, out_arg, token_slot, Fail, FfiResult,
    Timeout, BIPS_E_BUSY, BIPS_E_HELD_LIMIT, BIPS_E_INTERNAL, BIPS_E_STALE, BIPS_E_TIMEOUT,
};

const CONSUMER_MAGIC: u64 = 0x6269_7073_434f_4e53; // "bipsCONS"

/// `gate` bit: a thread is inside a call on the consumer.
const INSIDE: u64 = 1;
/// Mailbox entries at most (one pending bit of `gate` each: bits 1..=63).
/// Entries are not tied to slots: a poster takes any free one. Each entry
/// has a bit of its own, which only the poster that filled the entry sets
/// (after filling it), so a drain takes a token only once its poster has
/// committed it: a bit shared by several entries would let a drain take a
/// token whose poster has not set its bit yet, and that poster, finding
/// nobody inside a moment later, would release it a second time (and could
/// touch a consumer the drain had freed).
const MAILBOX_MAX: usize = 63;
/// `gate` bits: a release waits in mailbox entry `j` (bit `j + 1`).
const PENDING_MASK: u64 = !INSIDE;
const _: () = assert!(bips::MAX_HELD_LIMIT < 1 << crate::SLOT_BITS);

const fn pending_bit(entry: usize) -> u64 {
    2 << entry
}

/// How long a blocking `recv` waits between looks at the mailbox.
const MAILBOX_SLICE: Duration = Duration::from_millis(10);

/// A reader of a channel (opaque). Made by `bips_consumer_open`, ended by
/// `bips_consumer_destroy`. Used by one thread at a time.
pub struct bips_consumer {
    magic: u64,
    /// `INSIDE` while a thread is in a call on this consumer (a second caller
    /// gets `BIPS_E_BUSY`), plus a pending bit per `mailbox` entry that another
    /// thread filled meanwhile (set only while `INSIDE` is).
    gate: AtomicU64,
    /// Tokens of releases made while another thread was inside: the thread
    /// inside applies them when it leaves, or between the slices of a
    /// blocking `recv`. `min(max_held, MAILBOX_MAX)` entries (a thread
    /// blocked inside `recv` holds at most `max_held - 1` samples, so every
    /// other one can be posted at once).
    mailbox: Box<[AtomicU64]>,
    /// The channel's `max_held` (slots of a token).
    max_held: usize,
    meta_size: usize,
    state: UnsafeCell<ConsumerState>,
    // Dropped after `state`: the held samples point into this mapping.
    consumer: bips::Consumer,
}

struct ConsumerState {
    destroyed: bool,
    outstanding: usize,
    /// One per sample the consumer may hold (the channel's `max_held`).
    slots: Box<[HeldSlot]>,
}

struct HeldSlot {
    /// The token of the sample held in this slot, 0 when free.
    token: u64,
    raw: Option<bips::RawSample>,
    meta: *const u8,
}

const FREE_SLOT: HeldSlot = HeldSlot {
    token: 0,
    raw: None,
    meta: std::ptr::null(),
};

/// A received sample, held (never rewritten by the producer) until
/// `bips_sample_release` (a value handle: copy it freely). Its fields are
/// private to bips: a zeroed `bips_sample` is "no sample".
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct bips_sample {
    /// The consumer that received it (private).
    pub owner: *mut bips_consumer,
    /// Slot and generation (private).
    pub token: u64,
}

const NO_SAMPLE: bips_sample = bips_sample {
    owner: std::ptr::null_mut(),
    token: 0,
};

/// Checks a consumer handle argument.
///
/// # Safety
/// `c` is null or a handle from `bips_consumer_open` that was not freed (the
/// C caller's contract).
unsafe fn consumer_ref<'a>(c: *const bips_consumer) -> FfiResult<&'a bips_consumer> {
    // SAFETY: null is checked by `as_ref`; otherwise a live handle (contract).
    let h = unsafe { c.as_ref() }.ok_or_else(|| Fail::invalid("consumer is NULL"))?;
    if h.magic != CONSUMER_MAGIC {
        return Err(Fail::invalid("not a bips_consumer handle"));
    }
    Ok(h)
}

/// Frees an owner, clearing its magic first: a handle used after this free
/// (undefined behaviour all the same) then most likely finds no magic and
/// gets `BIPS_E_INVALID_ARGUMENT` instead of reaching freed state.
///
/// # Safety
/// `h` was made by `Box::into_raw` in `bips_consumer_open`, is freed once,
/// and no call is inside it.
unsafe fn free_consumer(h: *mut bips_consumer) {
    // SAFETY: this function's `# Safety` contract.
    let mut owner = unsafe { Box::from_raw(h) };
    // SAFETY: a valid, aligned field of the still-live allocation; volatile
    // so the store is not removed as dead before the free.
    unsafe { std::ptr::write_volatile(&mut owner.magic, 0) };
    drop(owner);
}

/// A thread inside a call on a consumer (see `bips_consumer::enter`). When it
/// leaves it applies the releases left in the mailbox, and frees a destroyed
/// consumer whose last sample one of them was.
struct Inside {
    /// The handle as C gave it (the pointer a free needs).
    this: *mut bips_consumer,
}

impl bips_consumer {
    /// Enters the handle (one thread at a time) and gives its state. `this`
    /// is the handle pointer `self` was read from.
    // The state is exclusive while the returned `Inside` lives (the `INSIDE`
    // gate bit admits one caller at a time), which `&self` cannot show.
    #[allow(clippy::mut_from_ref)]
    fn enter(&self, this: *const bips_consumer) -> FfiResult<(Inside, &mut ConsumerState)> {
        // Pending bits are set only while INSIDE is, and cleared before it.
        if self
            .gate
            .compare_exchange(0, INSIDE, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(Fail::new(
                BIPS_E_BUSY,
                "another thread is inside a call on this handle: a bips handle (and its \
                 samples/loans) is used by one thread at a time",
            ));
        }
        // SAFETY: INSIDE is ours until the `Inside` drops, so no other
        // reference to the state exists; the returned borrow ends with the call.
        let st = unsafe { &mut *self.state.get() };
        Ok((
            Inside {
                this: this.cast_mut(),
            },
            st,
        ))
    }

    /// Applies the releases waiting in the mailbox; whether one freed a
    /// sample. The caller is inside (owns the state).
    fn drain(&self, st: &mut ConsumerState) -> bool {
        let bits = self.gate.fetch_and(!PENDING_MASK, Ordering::Acquire) & PENDING_MASK;
        let mut applied = false;
        for (i, m) in self.mailbox.iter().enumerate() {
            if bits & pending_bit(i) != 0 {
                let tok = m.swap(0, Ordering::Acquire);
                applied |= st.release(&self.consumer, tok).is_ok();
            }
        }
        applied
    }

    /// Leaves `tok`'s release in the mailbox for the thread inside: `true`
    /// when it is left (that thread applies it when it leaves), `false` when
    /// no thread is inside any more (the caller enters and releases itself).
    /// After `true` the caller must not touch the consumer again: the thread
    /// inside may free it.
    fn post_release(&self, tok: u64) -> FfiResult<bool> {
        let at = self.post_stage(tok)?;
        Ok(self.post_commit(at))
    }

    /// First half of [`bips_consumer::post_release`]: leaves `tok` in a
    /// free mailbox entry (not yet visible to a drain: its bit is not set);
    /// answers the entry.
    fn post_stage(&self, tok: u64) -> FfiResult<usize> {
        if tok == 0 || token_slot(tok) >= self.max_held {
            return Err(stale());
        }
        self.mailbox
            .iter()
            .position(|m| {
                m.compare_exchange(0, tok, Ordering::Release, Ordering::Relaxed)
                    .is_ok()
            })
            .ok_or_else(|| {
                Fail::new(
                    BIPS_E_BUSY,
                    "another thread is inside a call on this consumer and its mailbox of \
                     releases is full",
                )
            })
    }

    /// Second half of [`bips_consumer::post_release`]: hands entry `i` to
    /// the thread inside (`true`), or takes it back when none is (`false`).
    fn post_commit(&self, i: usize) -> bool {
        let mut g = self.gate.load(Ordering::Acquire);
        loop {
            if g & INSIDE == 0 {
                self.mailbox[i].store(0, Ordering::Relaxed);
                return false;
            }
            match self.gate.compare_exchange_weak(
                g,
                g | pending_bit(i),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => g = now,
            }
        }
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        // SAFETY: made from a live handle by `enter`, and still live: only
        // this thread (inside) may free it, below.
        let h = unsafe { &*self.this };
        loop {
            // SAFETY: still inside, so the state is ours (the caller's borrow
            // of it has ended: the guard drops last).
            let st = unsafe { &mut *h.state.get() };
            if h.drain(st) && st.destroyed && st.outstanding == 0 {
                // SAFETY: a destroyed consumer whose last sample was just
                // released from the mailbox: nothing refers to it any more
                // (a thread that posts a release never touches it after).
                unsafe { free_consumer(self.this) };
                return;
            }
            if h.gate
                .compare_exchange(INSIDE, 0, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }
}

fn stale() -> Fail {
    Fail::new(
        BIPS_E_STALE,
        "this sample was already released (or is not a sample)",
    )
}

impl ConsumerState {
    fn slot(&mut self, token: u64) -> FfiResult<&mut HeldSlot> {
        self.slots
            .get_mut(token_slot(token))
            .filter(|s| token != 0 && s.token == token)
            .ok_or_else(stale)
    }

    /// Releases the held sample `token` of `consumer`.
    fn release(&mut self, consumer: &bips::Consumer, token: u64) -> FfiResult {
        let slot = self.slot(token)?;
        let raw = slot.raw.take();
        *slot = FREE_SLOT;
        self.outstanding -= 1;
        match raw {
            Some(raw) => {
                consumer.release_raw(raw);
                Ok(())
            }
            None => Err(Fail::new(BIPS_E_INTERNAL, "empty sample slot")),
        }
    }
}

/// Opens channel `name` as a consumer and stores the handle in `*out`.
/// `options` may be NULL (start at the newest sample, default waiting).
///
/// `BIPS_E_NOT_FOUND` when no such channel exists, `BIPS_E_DISCONNECTED` when
/// its producer died, `BIPS_E_TOO_MANY_CONSUMERS` when its table is full.
///
/// # Safety
/// `name` is null or nul-terminated; `options` is null or filled by
/// `bips_consumer_options_default`; `out` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn bips_consumer_open(
    name: *const c_char,
    options: *const bips_consumer_options,
    out: *mut *mut bips_consumer,
) -> bips_status {
    ffi(|| {
        // SAFETY: caller's contract for `out`.
        let out = unsafe { out_arg(out, "out is NULL") }?;
        *out = std::ptr::null_mut();
        // SAFETY: caller's contract for `name`.
        let name = unsafe { name_arg(name) }?;
        // SAFETY: caller's contract for `options`.
        let opts = unsafe { consumer_options(options) }?;
        let consumer = bips::Consumer::open_with(name, &opts)?;
        let held = consumer.max_held() as usize;
        *out = Box::into_raw(Box::new(bips_consumer {
            magic: CONSUMER_MAGIC,
            gate: AtomicU64::new(0),
            mailbox: (0..held.min(MAILBOX_MAX))
                .map(|_| AtomicU64::new(0))
                .collect(),
            max_held: held,
            meta_size: consumer.geometry().meta_size as usize,
            state: UnsafeCell::new(ConsumerState {
                destroyed: false,
                outstanding: 0,
                slots: (0..held).map(|_| FREE_SLOT).collect(),
            }),
            consumer,
        }));
        Ok(())
    })
}

/// Destroys a consumer: detaches it from the channel.
///
/// With samples still held the detach is deferred until the last one is
/// released (their bytes stay readable); the handle itself is dead at once
/// (every call on it fails with `BIPS_E_INVALID_ARGUMENT`). The release of
/// the last held sample frees the consumer: from then on no copy of any of
/// its handles may be used (a use after free).
///
/// Until then the consumer stays attached and its read position does not
/// move: under `BIPS_POLICY_BLOCK` the producer, and with it every other
/// consumer, stalls once all buffers are published, until the held samples
/// are released. Release samples before destroying their consumer, or a
/// Block producer stalls once its pool is full.
///
/// # Safety
/// `consumer` is null or a live handle; after a successful call (if no sample
/// was held) it is freed and must not be used again.
#[no_mangle]
pub unsafe extern "C" fn bips_consumer_destroy(consumer: *mut bips_consumer) -> bips_status {
    ffi(|| {
        // SAFETY: `consumer` is null or a live handle from `bips_consumer_open` (this function's `# Safety` contract).
        let h = unsafe { consumer_ref(consumer) }?;
        let free_now = {
            let (_in, st) = h.enter(consumer)?;
            if st.destroyed {
                return Err(Fail::invalid("consumer already destroyed"));
            }
            st.destroyed = true;
            st.outstanding == 0
        };
        if free_now {
            // SAFETY: made by Box::into_raw in open; no sample and no other
            // call refers to it, and the caller gives the handle up.
            unsafe { free_consumer(consumer) };
        }
        Ok(())
    })
}

/// Receives the next sample into `*out`, waiting at most `timeout_ns`
/// nanoseconds (negative: as long as it takes; 0: only if one is ready now,
/// else `BIPS_E_TIMEOUT`, without a system call). `BIPS_E_DISCONNECTED` once
/// the producer is gone and every remaining sample was received;
/// `BIPS_E_HELD_LIMIT` while the channel's `max_held` samples are held
/// (`bips_consumer_max_held`; `BIPS_MAX_HELD` = 8 unless the producer chose
/// another).
///
/// A waiting `recv` looks every 10 ms for releases that other threads made
/// meanwhile (see `bips_sample_release`) and applies them, so a Block
/// producer waiting for one of those buffers makes progress.
///
/// # Safety
/// `consumer` is null or a live handle; `out` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn bips_consumer_recv(
    consumer: *mut bips_consumer,
    timeout_ns: i64,
    out: *mut bips_sample,
) -> bips_status {
    ffi(|| {
        // SAFETY: caller's contract for `out`.
        let out = unsafe { out_arg(out, "out is NULL") }?;
        *out = NO_SAMPLE;
        // SAFETY: caller's contract for `consumer`.
        let h = unsafe { consumer_ref(consumer) }?;
        let (_in, st) = h.enter(consumer)?;
        if st.destroyed {
            return Err(Fail::invalid("consumer was destroyed"));
        }
        let Some(idx) = st.slots.iter().position(|s| s.token == 0) else {
            return Err(Fail::new(
                BIPS_E_HELD_LIMIT,
                format!(
                    "this consumer already holds {n} samples, the channel's limit \
                     (max_held = {n}); release one first, or have the producer create the \
                     channel with a larger max_held (bips_options.max_held, up to \
                     BIPS_MAX_HELD_LIMIT = 64)",
                    n = st.slots.len()
                ),
            ));
        };
        let c = &h.consumer;
        let deadline = match Timeout::from_ns(timeout_ns) {
            Timeout::Try => None,
            Timeout::Forever => Some(None),
            Timeout::For(d) => Some(Some(Instant::now() + d)),
        };
        let sample = match deadline {
            None => c
                .try_recv()?
                .ok_or_else(|| Fail::new(BIPS_E_TIMEOUT, "no sample ready"))?,
            // Waits in slices: between them, applies the releases other
            // threads left in the mailbox meanwhile (a Block producer may
            // need one of those buffers before it can publish again).
            Some(deadline) => loop {
                let slice = match deadline {
                    Some(d) => d.saturating_duration_since(Instant::now()),
                    None => MAILBOX_SLICE,
                };
                match c.recv_timeout(slice.min(MAILBOX_SLICE)) {
                    Err(bips::Error::Timeout) => {
                        h.drain(st);
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            return Err(Fail::new(BIPS_E_TIMEOUT, "timed out"));
                        }
                    }
                    r => break r?,
                }
            },
        };
        let meta = sample.meta().as_ptr();
        let tok = new_token(idx);
        st.slots[idx] = HeldSlot {
            token: tok,
            raw: Some(sample.into_raw()),
            meta,
        };
        st.outstanding += 1;
        *out = bips_sample {
            owner: consumer,
            token: tok,
        };
        Ok(())
    })
}

/// Gives the sample `*s` back (the producer may reuse its buffer) and zeroes
/// `*s`. A second release of the same sample is `BIPS_E_STALE`, and so is a
/// handle whose `owner` is another consumer. Releasing the last sample of a
/// destroyed consumer frees that consumer.
///
/// When another thread is inside a call on the same consumer (a broken
/// one-thread-at-a-time contract, e.g. a C++ `bips::Sample` destroyed on
/// another thread than its blocked `recv`), the release is left in the
/// consumer's mailbox and `BIPS_OK` returned at once: the thread inside
/// applies it when it leaves, or within 10 ms if it is blocked in
/// `bips_consumer_recv`. The handle is then not checked (a stale one is
/// ignored when applied); `BIPS_E_BUSY` only if the mailbox is full (as
/// many releases waiting as the channel's `max_held`, at most 63).
///
/// # Safety
/// `s` is null or points to a sample handle whose consumer is live.
#[no_mangle]
pub unsafe extern "C" fn bips_sample_release(s: *mut bips_sample) -> bips_status {
    ffi(|| {
        // SAFETY: `s` is null or valid for reads and writes of a handle (this function's `# Safety` contract).
        let s = unsafe { out_arg(s, "sample is NULL") }?;
        let handle = *s;
        // SAFETY: caller's contract for the owner.
        let h = unsafe { consumer_ref(handle.owner) }?;
        let (result, free_now) = {
            let (_in, st) = match h.enter(handle.owner) {
                Err(f) if f.status == BIPS_E_BUSY => {
                    // Another thread is inside: leave the release to it.
                    if h.post_release(handle.token)? {
                        *s = NO_SAMPLE;
                        return Ok(()); // `h` may be freed by now
                    }
                    h.enter(handle.owner)?
                }
                r => r?,
            };
            st.slot(handle.token)?;
            *s = NO_SAMPLE;
            let result = st.release(&h.consumer, handle.token);
            (result, st.destroyed && st.outstanding == 0)
        };
        if free_now {
            // SAFETY: a destroyed consumer whose last sample was just
            // released: nothing refers to it any more.
            unsafe { free_consumer(handle.owner) };
        }
        result
    })
}

/// Runs `f` on the held sample `s`.
///
/// # Safety
/// `s.owner` is null or a live consumer handle.
unsafe fn with_sample<T>(
    s: bips_sample,
    f: impl FnOnce(&bips::RawSample, &HeldSlot, usize) -> T,
) -> FfiResult<T> {
    // SAFETY: `s.owner` is null or a live consumer handle (this function's `# Safety` contract).
    let h = unsafe { consumer_ref(s.owner) }?;
    let (_in, st) = h.enter(s.owner)?;
    let slot = st.slot(s.token)?;
    let raw = slot
        .raw
        .as_ref()
        .ok_or_else(|| Fail::new(BIPS_E_INTERNAL, "empty sample slot"))?;
    Ok(f(raw, slot, h.meta_size))
}

/// The payload, readable for `bips_sample_len` bytes until the sample is
/// released (NULL for an invalid sample). Aligned to the channel's alignment.
///
/// # Safety
/// `s.owner` is null or a live consumer handle.
#[no_mangle]
pub unsafe extern "C" fn bips_sample_data(s: bips_sample) -> *const c_void {
    ffi_value(std::ptr::null(), || {
        // SAFETY: `s.owner` is null or a live consumer handle (this function's `# Safety` contract; `with_sample` needs exactly that).
        unsafe { with_sample(s, |r, _, _| r.as_ptr().cast()) }
    })
}

/// Payload length in bytes (0 for an invalid sample).
///
/// # Safety
/// `s.owner` is null or a live consumer handle.
#[no_mangle]
pub unsafe extern "C" fn bips_sample_len(s: bips_sample) -> usize {
    // SAFETY: `s.owner` is null or a live consumer handle (this function's `# Safety` contract; `with_sample` needs exactly that).
    ffi_value(0, || unsafe { with_sample(s, |r, _, _| r.len()) })
}

/// Sequence number: strictly increasing for a consumer (0 for an invalid sample).
///
/// # Safety
/// `s.owner` is null or a live consumer handle.
#[no_mangle]
pub unsafe extern "C" fn bips_sample_seq(s: bips_sample) -> u64 {
    // SAFETY: `s.owner` is null or a live consumer handle (this function's `# Safety` contract; `with_sample` needs exactly that).
    ffi_value(0, || unsafe { with_sample(s, |r, _, _| r.seq()) })
}

/// The producer's timestamp in ns (`bips_now_ns()` at publish unless it set
/// its own; 0 for an invalid sample).
///
/// # Safety
/// `s.owner` is null or a live consumer handle.
#[no_mangle]
pub unsafe extern "C" fn bips_sample_timestamp_ns(s: bips_sample) -> u64 {
    // SAFETY: `s.owner` is null or a live consumer handle (this function's `# Safety` contract; `with_sample` needs exactly that).
    ffi_value(0, || unsafe { with_sample(s, |r, _, _| r.timestamp_ns()) })
}

/// Samples lost just before this one (`BIPS_POLICY_DROP_OLDEST`; always 0
/// under `BIPS_POLICY_BLOCK`).
///
/// # Safety
/// `s.owner` is null or a live consumer handle.
#[no_mangle]
pub unsafe extern "C" fn bips_sample_lagged(s: bips_sample) -> u64 {
    // SAFETY: `s.owner` is null or a live consumer handle (this function's `# Safety` contract; `with_sample` needs exactly that).
    ffi_value(0, || unsafe { with_sample(s, |r, _, _| r.lagged()) })
}

/// The per-sample metadata, readable for `bips_sample_meta_size` bytes until
/// the sample is released (NULL for an invalid sample).
///
/// # Safety
/// `s.owner` is null or a live consumer handle.
#[no_mangle]
pub unsafe extern "C" fn bips_sample_meta(s: bips_sample) -> *const c_void {
    ffi_value(std::ptr::null(), || {
        // SAFETY: `s.owner` is null or a live consumer handle (this function's `# Safety` contract; `with_sample` needs exactly that).
        unsafe { with_sample(s, |_, slot, _| slot.meta.cast()) }
    })
}

/// Bytes of per-sample metadata (the channel's `meta_size`; 0 for an
/// invalid sample).
///
/// # Safety
/// `s.owner` is null or a live consumer handle.
#[no_mangle]
pub unsafe extern "C" fn bips_sample_meta_size(s: bips_sample) -> usize {
    // SAFETY: `s.owner` is null or a live consumer handle (this function's `# Safety` contract; `with_sample` needs exactly that).
    ffi_value(0, || unsafe { with_sample(s, |_, _, n| n) })
}

/// Stores in `*out` how many samples this consumer may hold at once: the
/// channel's `max_held` (`bips_options.max_held` of its producer, 1..=64).
/// `bips_consumer_recv` answers `BIPS_E_HELD_LIMIT` while that many are held.
///
/// # Safety
/// `consumer` is null or a live handle; `out` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn bips_consumer_max_held(
    consumer: *const bips_consumer,
    out: *mut u32,
) -> bips_status {
    ffi(|| {
        // SAFETY: caller's contract for `out`.
        let out = unsafe { out_arg(out, "out is NULL") }?;
        // SAFETY: `consumer` is null or a live handle from `bips_consumer_open` (this function's `# Safety` contract).
        let h = unsafe { consumer_ref(consumer) }?;
        let (_in, st) = h.enter(consumer)?;
        if st.destroyed {
            return Err(Fail::invalid("consumer was destroyed"));
        }
        *out = st.slots.len() as u32;
        Ok(())
    })
}

/// Stores the channel's geometry in `*out`.
///
/// # Safety
/// `consumer` is null or a live handle; `out` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn bips_consumer_geometry(
    consumer: *const bips_consumer,
    out: *mut bips_geometry,
) -> bips_status {
    ffi(|| {
        // SAFETY: `consumer` is null or a live handle from `bips_consumer_open` (this function's `# Safety` contract).
        let h = unsafe { consumer_ref(consumer) }?;
        let (_in, st) = h.enter(consumer)?;
        if st.destroyed {
            return Err(Fail::invalid("consumer was destroyed"));
        }
        // SAFETY: caller's contract for `out`.
        unsafe { write_geometry(out, h.consumer.geometry()) }
    })
}

/// Stores the consumer's whole buffer table (as mapped in this process) in
/// `out[0..min(cap, buffers)]` and the number of buffers in `*count` (`out`
/// may be NULL with `cap` 0 to ask for the size). Entry `i` is buffer `i`,
/// stable for the consumer's life; find a sample's buffer by the
/// `buffer_index` of `bips_sample_get_info`. Read a buffer only while
/// holding a sample of its index, and never write it.
///
/// # Safety
/// `consumer` is null or a live handle; `out` is null or writable for `cap`
/// entries; `count` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn bips_consumer_buffers(
    consumer: *const bips_consumer,
    out: *mut crate::bips_buffer_info,
    cap: usize,
    count: *mut usize,
) -> bips_status {
    ffi(|| {
        // SAFETY: caller's contract for `count`.
        let count = unsafe { out_arg(count, "count is NULL") }?;
        // SAFETY: `consumer` is null or a live handle from `bips_consumer_open` (this function's `# Safety` contract).
        let h = unsafe { consumer_ref(consumer) }?;
        let (_in, st) = h.enter(consumer)?;
        if st.destroyed {
            return Err(Fail::invalid("consumer was destroyed"));
        }
        // SAFETY: caller's contract for `out` and `cap`.
        *count = unsafe { crate::write_buffer_table(&h.consumer.buffers(), out, cap) }?;
        Ok(())
    })
}

/// Everything about a held sample at once (see `bips_sample_get_info`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct bips_sample_info {
    /// The payload (as `bips_sample_data`).
    pub data: *const c_void,
    /// Payload length in bytes.
    pub len: usize,
    /// Sequence number.
    pub seq: u64,
    /// The producer's timestamp in ns.
    pub timestamp_ns: u64,
    /// Samples lost just before this one.
    pub lagged: u64,
    /// The per-sample metadata (as `bips_sample_meta`).
    pub meta: *const c_void,
    /// Bytes of per-sample metadata.
    pub meta_size: usize,
    /// The buffer's index in the pool: its entry in the table of
    /// `bips_consumer_buffers`.
    pub buffer_index: u32,
}

/// Stores everything about the held sample `s` in `*out` with one call (the
/// pointers stay valid until the sample is released). `BIPS_E_STALE` for a
/// released sample.
///
/// # Safety
/// `s.owner` is null or a live consumer handle; `out` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn bips_sample_get_info(
    s: bips_sample,
    out: *mut bips_sample_info,
) -> bips_status {
    ffi(|| {
        // SAFETY: caller's contract for `out`.
        let out = unsafe { out_arg(out, "out is NULL") }?;
        // SAFETY: caller's contract for `s`.
        *out = unsafe {
            with_sample(s, |r, slot, meta_size| bips_sample_info {
                data: r.as_ptr().cast(),
                len: r.len(),
                seq: r.seq(),
                timestamp_ns: r.timestamp_ns(),
                lagged: r.lagged(),
                meta: slot.meta.cast(),
                meta_size,
                buffer_index: r.buffer_index(),
            })
        }?;
        Ok(())
    })
}

/// Stores the sample's descriptor in `*out`: the one its producer set, else
/// the channel's fixed one, checked against the sample's length.
/// `BIPS_E_NO_DESCRIPTOR` (and `*out` zeroed) when there is none;
/// `BIPS_E_DESCRIPTOR` (and `*out` zeroed) when the producer left a
/// malformed one or one that reaches past the sample (a buggy or hostile
/// producer): no element `*out` describes then lies outside the payload.
///
/// # Safety
/// `s.owner` is null or a live consumer handle; `out` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn bips_sample_descriptor(
    s: bips_sample,
    out: *mut crate::bips_descriptor,
) -> bips_status {
    ffi(|| {
        // SAFETY: caller's contract for `out`.
        let out = unsafe { out_arg(out, "out is NULL") }?;
        *out = crate::frame::NO_DESCRIPTOR;
        // SAFETY: `s.owner` is null or a live consumer handle (this function's `# Safety` contract).
        let h = unsafe { consumer_ref(s.owner) }?;
        let (_in, st) = h.enter(s.owner)?;
        let slot = st.slot(s.token)?;
        let raw = slot
            .raw
            .as_ref()
            .ok_or_else(|| Fail::new(BIPS_E_INTERNAL, "empty sample slot"))?;
        let d = h
            .consumer
            .raw_descriptor(raw)?
            .ok_or_else(crate::frame::no_descriptor)?;
        *out = crate::frame::descriptor_to_c(&d);
        Ok(())
    })
}

/// Stores the channel's payload type (what its producer declared) in
/// `*out`; all zero (`out->name` "") for an untyped channel.
///
/// # Safety
/// `consumer` is null or a live handle; `out` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn bips_consumer_payload_type(
    consumer: *const bips_consumer,
    out: *mut crate::bips_payload_type,
) -> bips_status {
    ffi(|| {
        // SAFETY: caller's contract for `out`.
        let out = unsafe { out_arg(out, "out is NULL") }?;
        *out = crate::frame::NO_TYPE;
        // SAFETY: `consumer` is null or a live handle from `bips_consumer_open` (this function's `# Safety` contract).
        let h = unsafe { consumer_ref(consumer) }?;
        let (_in, st) = h.enter(consumer)?;
        if st.destroyed {
            return Err(Fail::invalid("consumer was destroyed"));
        }
        *out = crate::frame::payload_type_to_c(h.consumer.payload_type());
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::*;
    use crate::*;
    use std::ffi::CString;
    use std::ptr::null_mut;

    fn publish(p: *mut bips_producer) {
        let mut l = std::mem::MaybeUninit::<bips_sample_mut>::zeroed();
        // SAFETY: a live producer and valid out-pointers.
        unsafe {
            assert_eq!(bips_producer_loan(p, 0, l.as_mut_ptr()), BIPS_OK);
            let mut l = l.assume_init();
            assert_eq!(bips_sample_mut_publish(&mut l, null_mut()), BIPS_OK);
        }
    }

    /// Two releases posted from other threads while a thread is inside and
    /// about to leave, into slots that share a gate bit on a channel of
    /// `max_held` 64 (slots 0 and 31): poster A has left its token in the
    /// mailbox but not yet set its bit when B posts and the thread inside
    /// leaves. A's release must then be applied exactly once and answered
    /// `BIPS_OK`: either handed to the thread inside (`post_commit` true) or
    /// taken back and applied by A itself. A drain that took A's token
    /// before A's bit was set applied it behind A's back: A then found
    /// nobody inside, released again and got `BIPS_E_STALE` (and had the
    /// consumer been destroyed, the drain freed it while A still used it).
    #[test]
    fn a_release_posted_but_not_committed_is_not_drained_by_a_shared_bit() {
        let name = CString::new(format!("ctest-unit-gate-{}", std::process::id())).unwrap();
        let mut o = std::mem::MaybeUninit::<bips_options>::zeroed();
        // SAFETY: (all below) valid pointers and live handles, one thread.
        unsafe {
            let size = std::mem::size_of::<bips_options>();
            assert_eq!(bips_options_init(o.as_mut_ptr(), size), BIPS_OK);
            let mut o = o.assume_init();
            o.buffers = 40;
            o.buffer_size = 64;
            o.max_held = 64;
            o.policy = BIPS_POLICY_DROP_OLDEST;
            let mut p = null_mut();
            assert_eq!(bips_producer_create(name.as_ptr(), &o, &mut p), BIPS_OK);
            let mut c = null_mut();
            assert_eq!(
                bips_consumer_open(name.as_ptr(), null_mut(), &mut c),
                BIPS_OK
            );
            let mut held = Vec::new();
            for _ in 0..32 {
                publish(p);
                let mut s = std::mem::MaybeUninit::<bips_sample>::zeroed();
                assert_eq!(bips_consumer_recv(c, 0, s.as_mut_ptr()), BIPS_OK);
                held.push(s.assume_init());
            }
            let (a, b) = (held[0].token, held[31].token);
            assert_eq!((token_slot(a), token_slot(b)), (0, 31));
            let h = &*c;
            {
                let (_inside, _st) = h.enter(c).ok().unwrap();
                // A stages; B posts in full; then the thread inside leaves.
                let at = h.post_stage(a).ok().unwrap();
                assert!(h.post_release(b).ok().unwrap(), "B handed over");
                drop(_inside);
                if !h.post_commit(at) {
                    // Nobody inside: A releases itself, as
                    // `bips_sample_release` does.
                    let (_in, st) = h.enter(c).ok().unwrap();
                    let r = st.release(&h.consumer, a);
                    assert!(r.is_ok(), "A's release was applied behind its back");
                }
            }
            // Both released exactly once: 30 held.
            assert_eq!(h.consumer.held(), 30);
            for s in held.iter_mut().filter(|s| s.token != a && s.token != b) {
                assert_eq!(bips_sample_release(s), BIPS_OK);
            }
            assert_eq!(bips_consumer_destroy(c), BIPS_OK);
            assert_eq!(bips_producer_destroy(p), BIPS_OK);
        }
    }
}
