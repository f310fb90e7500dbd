//! `bips_producer` and its loans, `bips_sample_mut`.

use std::cell::UnsafeCell;
use std::ffi::{c_char, c_void};
use std::sync::atomic::AtomicBool;

use crate::options::{bips_geometry, bips_options, producer_options, write_geometry};
use crate::{
    bips_status, ffi, ffi_value, name_arg, new_token, out_arg, token_slot, Fail, FfiResult, InUse,
    Timeout, BIPS_E_HELD_LIMIT, BIPS_E_INTERNAL, BIPS_E_STALE, BIPS_E_TIMEOUT,
};

const PRODUCER_MAGIC: u64 = 0x6269_7073_5052_4f44; // "bipsPROD"

/// A channel's single writer (opaque). Made by `bips_producer_create`, ended
/// by `bips_producer_destroy`. Used by one thread at a time.
pub struct bips_producer {
    magic: u64,
    busy: AtomicBool,
    state: UnsafeCell<ProducerState>,
    // Dropped after `state`: the loans in it point into this producer's mapping.
    producer: bips::Producer,
}

struct ProducerState {
    destroyed: bool,
    outstanding: usize,
    /// One slot per buffer: a loan's slot is its buffer index.
    slots: Box<[LoanSlot]>,
}

#[derive(Default)]
struct LoanSlot {
    /// The token of the live loan in this slot, 0 when free.
    token: u64,
    raw: Option<bips::RawLoan>,
}

/// A loaned buffer being written (a value handle: copy it freely; it stays
/// valid until published or discarded). Its fields are private to bips: a
/// zeroed `bips_sample_mut` is "no loan".
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct bips_sample_mut {
    /// The producer that loaned it (private).
    pub owner: *mut bips_producer,
    /// Slot and generation (private).
    pub token: u64,
}

const NO_LOAN: bips_sample_mut = bips_sample_mut {
    owner: std::ptr::null_mut(),
    token: 0,
};

/// Checks a producer handle argument.
///
/// # Safety
/// `p` is null or a handle from `bips_producer_create` that was not freed
/// (the C caller's contract).
unsafe fn producer_ref<'a>(p: *const bips_producer) -> FfiResult<&'a bips_producer> {
    // SAFETY: null is checked by `as_ref`; otherwise a live handle (contract).
    let h = unsafe { p.as_ref() }.ok_or_else(|| Fail::invalid("producer is NULL"))?;
    if h.magic != PRODUCER_MAGIC {
        return Err(Fail::invalid("not a bips_producer handle"));
    }
    Ok(h)
}

/// Frees an owner, clearing its magic first: a handle used after this free
/// (undefined behaviour all the same) then most likely finds no magic and
/// gets `BIPS_E_INVALID_ARGUMENT` instead of reaching freed state.
///
/// # Safety
/// `h` was made by `Box::into_raw` in `bips_producer_create`, is freed once,
/// and no call is inside it.
unsafe fn free_producer(h: *mut bips_producer) {
    // SAFETY: this function's `# Safety` contract.
    let mut owner = unsafe { Box::from_raw(h) };
    // SAFETY: a valid, aligned field of the still-live allocation; volatile
    // so the store is not removed as dead before the free.
    unsafe { std::ptr::write_volatile(&mut owner.magic, 0) };
    drop(owner);
}

impl bips_producer {
    /// Enters the handle (one thread at a time) and gives its state.
    // The state is exclusive while the returned `InUse` lives (its atomic flag
    // admits one caller at a time), which a `&self` signature cannot show.
    #[allow(clippy::mut_from_ref)]
    fn enter(&self) -> FfiResult<(InUse<'_>, &mut ProducerState)> {
        let guard = InUse::enter(&self.busy)?;
        // SAFETY: `busy` is ours until `guard` drops, so no other reference
        // to the state exists; the returned borrow ends with the call.
        let st = unsafe { &mut *self.state.get() };
        Ok((guard, st))
    }
}

impl ProducerState {
    fn slot(&mut self, token: u64) -> FfiResult<&mut LoanSlot> {
        let s = self
            .slots
            .get_mut(token_slot(token))
            .filter(|s| token != 0 && s.token == token)
            .ok_or_else(|| {
                Fail::new(
                    BIPS_E_STALE,
                    "this loan was already published or discarded (or is not a loan)",
                )
            })?;
        Ok(s)
    }
}

/// Creates channel `name` (`/dev/shm/bips.<name>`; 1 to 200 bytes of
/// `[A-Za-z0-9._-]`) with `options` and stores the handle in `*out`.
///
/// `BIPS_E_BUSY` when a live producer owns the name (a stale segment left by a
/// dead producer is replaced).
///
/// # Safety
/// `name` is null or nul-terminated; `options` is null or filled by
/// `bips_options_default`; `out` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn bips_producer_create(
    name: *const c_char,
    options: *const bips_options,
    out: *mut *mut bips_producer,
) -> bips_status {
    ffi(|| {
        // SAFETY: caller's contract for `out`.
        let out = unsafe { out_arg(out, "out is NULL") }?;
        *out = std::ptr::null_mut();
        // SAFETY: caller's contract for `name` and `options`.
        let name = unsafe { name_arg(name) }?;
        // SAFETY: `options` is null or readable for its `struct_size` bytes, as filled by `bips_options_default` (this function's `# Safety` contract).
        let opts = unsafe { producer_options(options) }?;
        let producer = bips::Producer::create(name, &opts)?;
        let n = producer.geometry().buffer_count as usize;
        let slots = (0..n).map(|_| LoanSlot::default()).collect();
        *out = Box::into_raw(Box::new(bips_producer {
            magic: PRODUCER_MAGIC,
            busy: AtomicBool::new(false),
            state: UnsafeCell::new(ProducerState {
                destroyed: false,
                outstanding: 0,
                slots,
            }),
            producer,
        }));
        Ok(())
    })
}

/// Destroys a producer: closes the channel (consumers drain what is left,
/// then get `BIPS_E_DISCONNECTED`) and removes its name.
///
/// With loans outstanding the close is deferred until the last one is
/// published or discarded (both still work); the handle itself is dead at
/// once (every call on it fails with `BIPS_E_INVALID_ARGUMENT`). That last
/// publish/discard frees the producer: from then on no copy of any of its
/// handles may be used (a use after free).
///
/// # Safety
/// `producer` is null or a live handle; after a successful call (if no loan
/// was outstanding) it is freed and must not be used again.
#[no_mangle]
pub unsafe extern "C" fn bips_producer_destroy(producer: *mut bips_producer) -> bips_status {
    ffi(|| {
        // SAFETY: `producer` is null or a live handle from `bips_producer_create` (this function's `# Safety` contract).
        let h = unsafe { producer_ref(producer) }?;
        let free_now = {
            let (_in, st) = h.enter()?;
            if st.destroyed {
                return Err(Fail::invalid("producer already destroyed"));
            }
            st.destroyed = true;
            st.outstanding == 0
        };
        if free_now {
            // SAFETY: made by Box::into_raw in create; no loan and no other
            // call refers to it (the InUse guard was free), and the caller
            // gives the handle up.
            unsafe { free_producer(producer) };
        }
        Ok(())
    })
}

/// Loans a free buffer into `*out`: waits at most `timeout_ns` nanoseconds
/// (negative: as long as it takes; 0: only if one is free now, else
/// `BIPS_E_TIMEOUT`). Under `BIPS_POLICY_BLOCK` the slowest consumer paces
/// this; dead consumers are reclaimed while it waits.
///
/// With a negative timeout while every buffer is on loan to this producer
/// (nothing but its own publish/discard could free one), `BIPS_E_HELD_LIMIT`
/// at once instead of waiting forever; a timeout of 0 or more answers
/// `BIPS_E_TIMEOUT` then, as for any other lack of a free buffer.
///
/// The loan's length starts at the whole capacity; write the buffer through
/// `bips_sample_mut_data`, then `bips_sample_mut_publish` or
/// `bips_sample_mut_discard`.
///
/// # Safety
/// `producer` is null or a live handle; `out` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn bips_producer_loan(
    producer: *mut bips_producer,
    timeout_ns: i64,
    out: *mut bips_sample_mut,
) -> bips_status {
    ffi(|| {
        // SAFETY: caller's contract for `out`.
        let out = unsafe { out_arg(out, "out is NULL") }?;
        *out = NO_LOAN;
        // SAFETY: caller's contract for `producer`.
        let h = unsafe { producer_ref(producer) }?;
        let (_in, st) = h.enter()?;
        if st.destroyed {
            return Err(Fail::invalid("producer was destroyed"));
        }
        let p = &h.producer;
        let timeout = Timeout::from_ns(timeout_ns);
        if matches!(timeout, Timeout::Forever) && st.outstanding >= st.slots.len() {
            // Only this producer's own publish/discard could free a buffer,
            // and this thread would be waiting instead: a certain deadlock.
            return Err(Fail::new(
                BIPS_E_HELD_LIMIT,
                "every buffer is on loan to this producer; publish or discard one first",
            ));
        }
        let loan = match timeout {
            Timeout::Forever => p.loan()?,
            Timeout::Try => p
                .try_loan()?
                .ok_or_else(|| Fail::new(BIPS_E_TIMEOUT, "no free buffer right now"))?,
            Timeout::For(d) => p.loan_timeout(d)?,
        };
        let raw = loan.into_raw();
        let idx = raw.buffer_index() as usize;
        if idx >= st.slots.len() || st.slots[idx].token != 0 {
            p.unloan_raw(raw);
            return Err(Fail::new(
                BIPS_E_INTERNAL,
                "loaned a buffer already on loan",
            ));
        }
        let tok = new_token(idx);
        st.slots[idx] = LoanSlot {
            token: tok,
            raw: Some(raw),
        };
        st.outstanding += 1;
        *out = bips_sample_mut {
            owner: producer,
            token: tok,
        };
        Ok(())
    })
}

/// Runs `f` on the live loan `s`.
///
/// # Safety
/// `s.owner` is null or a live producer handle.
unsafe fn with_loan<T>(
    s: bips_sample_mut,
    f: impl FnOnce(&mut bips::RawLoan) -> FfiResult<T>,
) -> FfiResult<T> {
    // SAFETY: forwarded (this function's `# Safety` contract).
    unsafe { with_loan_of(s, |_, raw| f(raw)) }
}

/// Runs `f` on the producer and the live loan `s`.
///
/// # Safety
/// `s.owner` is null or a live producer handle.
unsafe fn with_loan_of<T>(
    s: bips_sample_mut,
    f: impl FnOnce(&bips::Producer, &mut bips::RawLoan) -> FfiResult<T>,
) -> FfiResult<T> {
    // SAFETY: `s.owner` is null or a live producer handle (this function's `# Safety` contract).
    let h = unsafe { producer_ref(s.owner) }?;
    let (_in, st) = h.enter()?;
    let slot = st.slot(s.token)?;
    let raw = slot
        .raw
        .as_mut()
        .ok_or_else(|| Fail::new(BIPS_E_INTERNAL, "empty loan slot"))?;
    f(&h.producer, raw)
}

/// Ends the loan `*s` (publish or discard) and frees a destroyed producer
/// after its last loan.
///
/// # Safety
/// `s` is null or points to a loan handle whose owner is null or live.
unsafe fn end_loan(s: *mut bips_sample_mut, publish: bool) -> FfiResult<u64> {
    // SAFETY: `s` is null or valid for reads and writes of a handle (this function's `# Safety` contract).
    let s = unsafe { out_arg(s, "sample is NULL") }?;
    let handle = *s;
    // SAFETY: caller's contract for the owner.
    let h = unsafe { producer_ref(handle.owner) }?;
    let (result, free_now) = {
        let (_in, st) = h.enter()?;
        let slot = st.slot(handle.token)?;
        slot.token = 0;
        let raw = slot.raw.take();
        st.outstanding -= 1;
        *s = NO_LOAN;
        let result = match raw {
            Some(raw) if publish => h.producer.publish_raw(raw).map_err(|e| {
                // The loan is consumed either way. A descriptor that does not
                // fit the length sends the buffer back unpublished; any other
                // failure loses it to this producer until it is destroyed.
                // Say which.
                let f = Fail::from(e);
                let message = if f.status == crate::BIPS_E_DESCRIPTOR {
                    format!(
                        "{}; the loan is gone (its handle is stale now), its buffer went \
                         back unpublished",
                        f.message
                    )
                } else {
                    format!(
                        "{}; the loan is gone (its handle is stale now) and its buffer stays \
                         unusable until the producer is destroyed",
                        f.message
                    )
                };
                Fail::new(f.status, message)
            }),
            Some(raw) => {
                h.producer.unloan_raw(raw);
                Ok(0)
            }
            None => Err(Fail::new(BIPS_E_INTERNAL, "empty loan slot")),
        };
        (result, st.destroyed && st.outstanding == 0)
    };
    if free_now {
        // SAFETY: a destroyed producer whose last loan just ended: nothing
        // refers to it any more (its destroy gave the handle up).
        unsafe { free_producer(handle.owner) };
    }
    result
}

/// Publishes the loan `*s`: consumers see the first `len` bytes written (and
/// the metadata). Stores the sample's sequence number in `*seq` (may be NULL)
/// and zeroes `*s`. A second publish of the same loan is `BIPS_E_STALE`, and
/// so is a handle whose `owner` is another producer.
///
/// A failed publish (e.g. `BIPS_E_CORRUPT`) ends the loan all the same: its
/// buffer stays unusable until the producer is destroyed, as the message says.
///
/// # Safety
/// `s` is null or points to a loan handle whose producer is live; `seq` is
/// null or writable.
#[no_mangle]
pub unsafe extern "C" fn bips_sample_mut_publish(
    s: *mut bips_sample_mut,
    seq: *mut u64,
) -> bips_status {
    ffi(|| {
        // SAFETY: `s` is null or points to a loan handle whose producer is live (this function's `# Safety` contract, as `end_loan` requires).
        let n = unsafe { end_loan(s, true) }?;
        // SAFETY: null or writable (caller's contract).
        if let Some(seq) = unsafe { seq.as_mut() } {
            *seq = n;
        }
        Ok(())
    })
}

/// Gives the loan `*s` back unpublished and zeroes `*s`.
///
/// # Safety
/// `s` is null or points to a loan handle whose producer is live.
#[no_mangle]
pub unsafe extern "C" fn bips_sample_mut_discard(s: *mut bips_sample_mut) -> bips_status {
    // SAFETY: `s` is null or points to a loan handle whose producer is live (this function's `# Safety` contract, as `end_loan` requires).
    ffi(|| unsafe { end_loan(s, false) }.map(|_| ()))
}

/// The loan's buffer, writable for `bips_sample_mut_capacity` bytes until it
/// is published or discarded; aligned to the channel's alignment. NULL for an
/// invalid loan.
///
/// # Safety
/// `s.owner` is null or a live producer handle.
#[no_mangle]
pub unsafe extern "C" fn bips_sample_mut_data(s: bips_sample_mut) -> *mut c_void {
    ffi_value(std::ptr::null_mut(), || {
        // SAFETY: `s.owner` is null or a live producer handle (this function's `# Safety` contract; `with_loan` needs exactly that).
        unsafe { with_loan(s, |r| Ok(r.as_mut_ptr().cast())) }
    })
}

/// Bytes the loan's buffer can hold (0 for an invalid loan).
///
/// # Safety
/// `s.owner` is null or a live producer handle.
#[no_mangle]
pub unsafe extern "C" fn bips_sample_mut_capacity(s: bips_sample_mut) -> usize {
    // SAFETY: `s.owner` is null or a live producer handle (this function's `# Safety` contract; `with_loan` needs exactly that).
    ffi_value(0, || unsafe { with_loan(s, |r| Ok(r.capacity())) })
}

/// Bytes that will be published (starts at the capacity; 0 for an invalid loan).
///
/// # Safety
/// `s.owner` is null or a live producer handle.
#[no_mangle]
pub unsafe extern "C" fn bips_sample_mut_len(s: bips_sample_mut) -> usize {
    // SAFETY: `s.owner` is null or a live producer handle (this function's `# Safety` contract; `with_loan` needs exactly that).
    ffi_value(0, || unsafe { with_loan(s, |r| Ok(r.len())) })
}

/// The per-sample metadata area, writable for `bips_sample_mut_meta_size`
/// bytes (NULL for an invalid loan).
///
/// # Safety
/// `s.owner` is null or a live producer handle.
#[no_mangle]
pub unsafe extern "C" fn bips_sample_mut_meta(s: bips_sample_mut) -> *mut c_void {
    ffi_value(std::ptr::null_mut(), || {
        // SAFETY: `s.owner` is null or a live producer handle (this function's `# Safety` contract; `with_loan` needs exactly that).
        unsafe { with_loan(s, |r| Ok(r.meta_mut_ptr().cast())) }
    })
}

/// Bytes of per-sample metadata (the channel's `meta_size`; 0 for an
/// invalid loan).
///
/// # Safety
/// `s.owner` is null or a live producer handle.
#[no_mangle]
pub unsafe extern "C" fn bips_sample_mut_meta_size(s: bips_sample_mut) -> usize {
    // SAFETY: `s.owner` is null or a live producer handle (this function's `# Safety` contract; `with_loan` needs exactly that).
    ffi_value(0, || unsafe { with_loan(s, |r| Ok(r.meta_len())) })
}

/// Sets how many bytes to publish; `BIPS_E_INVALID_ARGUMENT` beyond the
/// capacity (the length is then unchanged).
///
/// # Safety
/// `s.owner` is null or a live producer handle.
#[no_mangle]
pub unsafe extern "C" fn bips_sample_mut_set_len(s: bips_sample_mut, len: usize) -> bips_status {
    ffi(|| {
        // SAFETY: `s.owner` is null or a live producer handle (this function's `# Safety` contract; `with_loan` needs exactly that).
        unsafe { with_loan(s, |r| r.set_len(len).map_err(Fail::from)) }
    })
}

/// Overrides the sample's timestamp (default: `bips_now_ns()` at publish).
///
/// # Safety
/// `s.owner` is null or a live producer handle.
#[no_mangle]
pub unsafe extern "C" fn bips_sample_mut_set_timestamp_ns(
    s: bips_sample_mut,
    timestamp_ns: u64,
) -> bips_status {
    ffi(|| {
        // SAFETY: `s.owner` is null or a live producer handle (this function's `# Safety` contract; `with_loan` needs exactly that).
        unsafe {
            with_loan(s, |r| {
                r.set_timestamp_ns(timestamp_ns);
                Ok(())
            })
        }
    })
}

/// Stores the channel's geometry in `*out`.
///
/// # Safety
/// `producer` is null or a live handle; `out` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn bips_producer_geometry(
    producer: *const bips_producer,
    out: *mut bips_geometry,
) -> bips_status {
    ffi(|| {
        // SAFETY: `producer` is null or a live handle from `bips_producer_create` (this function's `# Safety` contract).
        let h = unsafe { producer_ref(producer) }?;
        let (_in, st) = h.enter()?;
        if st.destroyed {
            return Err(Fail::invalid("producer was destroyed"));
        }
        // SAFETY: caller's contract for `out`.
        unsafe { write_geometry(out, h.producer.geometry()) }
    })
}

/// Stores the number of consumers attached right now in `*out`.
///
/// # Safety
/// `producer` is null or a live handle; `out` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn bips_producer_consumer_count(
    producer: *const bips_producer,
    out: *mut u32,
) -> bips_status {
    ffi(|| {
        // SAFETY: caller's contract for `out`.
        let out = unsafe { out_arg(out, "out is NULL") }?;
        // SAFETY: `producer` is null or a live handle from `bips_producer_create` (this function's `# Safety` contract).
        let h = unsafe { producer_ref(producer) }?;
        let (_in, st) = h.enter()?;
        if st.destroyed {
            return Err(Fail::invalid("producer was destroyed"));
        }
        *out = h.producer.consumer_count() as u32;
        Ok(())
    })
}

/// Stores the producer's whole buffer table in `out[0..min(cap, buffers)]`
/// and the number of buffers in `*count` (so `out` may be NULL with `cap` 0
/// to ask for the size). Entry `i` is buffer `i`: its address, capacity and
/// metadata area, stable for the producer's life; register them once (a DMA
/// engine, `cudaHostRegister`) and find a loan's buffer by the
/// `buffer_index` of `bips_sample_mut_get_info`. The producer writes a
/// buffer only while it holds a loan of its index.
///
/// # Safety
/// `producer` is null or a live handle; `out` is null or writable for `cap`
/// entries; `count` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn bips_producer_buffers(
    producer: *const bips_producer,
    out: *mut crate::bips_buffer_info,
    cap: usize,
    count: *mut usize,
) -> bips_status {
    ffi(|| {
        // SAFETY: caller's contract for `count`.
        let count = unsafe { out_arg(count, "count is NULL") }?;
        // SAFETY: `producer` is null or a live handle from `bips_producer_create` (this function's `# Safety` contract).
        let h = unsafe { producer_ref(producer) }?;
        let (_in, st) = h.enter()?;
        if st.destroyed {
            return Err(Fail::invalid("producer was destroyed"));
        }
        // SAFETY: caller's contract for `out` and `cap`.
        *count = unsafe { crate::write_buffer_table(&h.producer.buffers(), out, cap) }?;
        Ok(())
    })
}

/// Everything about a loan at once (see `bips_sample_mut_get_info`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct bips_sample_mut_info {
    /// The buffer (as `bips_sample_mut_data`).
    pub data: *mut c_void,
    /// Bytes the buffer can hold.
    pub capacity: usize,
    /// Bytes that will be published.
    pub len: usize,
    /// The per-sample metadata area (as `bips_sample_mut_meta`).
    pub meta: *mut c_void,
    /// Bytes of per-sample metadata.
    pub meta_size: usize,
    /// The buffer's index in the pool: its entry in the table of
    /// `bips_producer_buffers`.
    pub buffer_index: u32,
}

/// Stores everything about the loan `s` in `*out` with one call (the
/// pointers stay valid until the loan is published or discarded).
/// `BIPS_E_STALE` for a loan already given back.
///
/// # Safety
/// `s.owner` is null or a live producer handle; `out` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn bips_sample_mut_get_info(
    s: bips_sample_mut,
    out: *mut bips_sample_mut_info,
) -> bips_status {
    ffi(|| {
        // SAFETY: caller's contract for `out`.
        let out = unsafe { out_arg(out, "out is NULL") }?;
        // SAFETY: caller's contract for `s`.
        *out = unsafe {
            with_loan(s, |r| {
                Ok(bips_sample_mut_info {
                    data: r.as_mut_ptr().cast(),
                    capacity: r.capacity(),
                    len: r.len(),
                    meta: r.meta_mut_ptr().cast(),
                    meta_size: r.meta_len(),
                    buffer_index: r.buffer_index(),
                })
            })
        }?;
        Ok(())
    })
}

/// Sets the loan's frame/tensor descriptor (what its bytes are), checked
/// first: `BIPS_E_DESCRIPTOR` when `*d` is malformed or reaches past the
/// buffer's capacity, `BIPS_E_INVALID_ARGUMENT` when the channel fixes
/// another descriptor (`bips_options_payload_type`). At publish it must fit
/// the published length, else the publish fails with `BIPS_E_DESCRIPTOR`
/// and the buffer goes back unpublished. A loan that sets none publishes
/// none (consumers see the channel's fixed one, if any).
///
/// # Safety
/// `s.owner` is null or a live producer handle; `d` is null or readable.
#[no_mangle]
pub unsafe extern "C" fn bips_sample_mut_set_descriptor(
    s: bips_sample_mut,
    d: *const crate::bips_descriptor,
) -> bips_status {
    ffi(|| {
        // SAFETY: caller's contract for `d`.
        let d = unsafe { d.as_ref() }.ok_or_else(|| Fail::invalid("descriptor is NULL"))?;
        let d = crate::frame::descriptor_from_c(d)?;
        // SAFETY: caller's contract for `s`.
        unsafe { with_loan_of(s, |p, r| p.set_raw_descriptor(r, &d).map_err(Fail::from)) }
    })
}

/// Stores the loan's descriptor in `*out`: the one set on it, else the
/// channel's fixed one. `BIPS_E_NO_DESCRIPTOR` (and `*out` zeroed) when
/// there is none.
///
/// # Safety
/// `s.owner` is null or a live producer handle; `out` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn bips_sample_mut_descriptor(
    s: bips_sample_mut,
    out: *mut crate::bips_descriptor,
) -> bips_status {
    ffi(|| {
        // SAFETY: caller's contract for `out`.
        let out = unsafe { out_arg(out, "out is NULL") }?;
        *out = crate::frame::NO_DESCRIPTOR;
        // SAFETY: caller's contract for `s`.
        let d = unsafe { with_loan_of(s, |p, r| Ok(p.raw_descriptor(r))) }?;
        let d = d.ok_or_else(crate::frame::no_descriptor)?;
        *out = crate::frame::descriptor_to_c(&d);
        Ok(())
    })
}

/// Stores the channel's payload type (`bips_options_payload_type`) in
/// `*out`; all zero (`out->name` "") for an untyped channel.
///
/// # Safety
/// `producer` is null or a live handle; `out` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn bips_producer_payload_type(
    producer: *const bips_producer,
    out: *mut crate::bips_payload_type,
) -> bips_status {
    ffi(|| {
        // SAFETY: caller's contract for `out`.
        let out = unsafe { out_arg(out, "out is NULL") }?;
        *out = crate::frame::NO_TYPE;
        // SAFETY: `producer` is null or a live handle from `bips_producer_create` (this function's `# Safety` contract).
        let h = unsafe { producer_ref(producer) }?;
        let (_in, st) = h.enter()?;
        if st.destroyed {
            return Err(Fail::invalid("producer was destroyed"));
        }
        *out = crate::frame::payload_type_to_c(h.producer.payload_type());
        Ok(())
    })
}
