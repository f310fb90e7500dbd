//! # bips-c — the C ABI of bips
//!
//! `libbips.so` / `libbips.a` with the header `include/bips/bips.h` (generated from
//! this crate by cbindgen) and the header-only C++17 wrapper
//! `include/bips/bips.hpp`. Only C types cross the boundary: opaque handles,
//! `repr(C)` plain structs, integers and pointers.
//!
//! ## Handles
//! * `bips_producer *` and `bips_consumer *` are opaque heap objects made by
//!   `bips_producer_create` / `bips_consumer_open` and ended by
//!   `bips_producer_destroy` / `bips_consumer_destroy`.
//! * `bips_sample_mut` (a loan) and `bips_sample` (a received sample) are small
//!   **value** handles: the owning producer/consumer pointer plus a token (a
//!   slot index and a generation). The state lives in a fixed slot table owned
//!   by the producer (one slot per buffer) or consumer (one per sample it may
//!   hold: the channel's `max_held`, 8 by default), made at create/open time, so the hot path allocates nothing and a
//!   stale handle (published, discarded or released already) is recognised by
//!   its generation and answered `BIPS_E_STALE`, as long as its owner lives.
//!   Generations come from one process-wide counter, so no two handles share
//!   a token: a handle carrying another owner (forged or mixed up) gets
//!   `BIPS_E_STALE` there. The calls that end a handle's life take its
//!   address and zero it. A handle must not be used once its owner is freed
//!   (see Destroy): that is a use after free, detected only by luck.
//!
//! ## Destroy
//! Destroying a producer or consumer while loans or samples are outstanding
//! is deferred: the handle is marked destroyed (every call on it then fails
//! with `BIPS_E_INVALID_ARGUMENT`), the outstanding loans/samples stay usable,
//! and the channel is closed/detached when the last one is given back: that
//! call (the last publish/discard, or the last release) also frees the owner,
//! so every copy of a handle of that owner is dead from then on.
//!
//! A consumer destroyed with samples held stays attached until they are
//! released, and its read position stops where it was: under
//! `BIPS_POLICY_BLOCK` the producer (and so every other consumer) stalls once
//! its pool is full, until the held samples are released. Release samples
//! before destroying their consumer.
//!
//! ## Threads
//! A producer or consumer handle, with its loans or samples, is used by one
//! thread at a time (the Rust types are `Send`, not `Sync`). Handing it to
//! another thread is fine. Two threads calling into the same handle at once
//! get `BIPS_E_BUSY` from the one that comes second (an atomic flag, not a
//! lock: nothing ever waits on it). One exception, so that a sample is never
//! lost: `bips_sample_release` while another thread is inside the consumer
//! leaves the release in the consumer's mailbox for that thread and answers
//! `BIPS_OK` (see there).
//!
//! ## Errors
//! Every call that can fail returns a `bips_status`; `bips_last_error_message()`
//! then describes the last failure of the calling thread. No panic unwinds
//! into C: every entry point catches it and answers `BIPS_E_INTERNAL`.
#![allow(non_camel_case_types)]
#![deny(missing_docs)]

mod consumer;
mod frame;
mod options;
mod producer;

pub use consumer::*;
pub use frame::*;
pub use options::*;
pub use producer::*;

use std::borrow::Cow;
use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The result of every call that can fail. `BIPS_OK` (0) is success; every
/// other value comes with a message from `bips_last_error_message()`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum bips_status {
    /// Success.
    BIPS_OK = 0,
    /// The timeout passed (or, with a timeout of 0, nothing was ready).
    BIPS_E_TIMEOUT = 1,
    /// The producer is gone and every remaining sample was received.
    BIPS_E_DISCONNECTED = 2,
    /// The channel does not exist.
    BIPS_E_NOT_FOUND = 3,
    /// A live producer already owns the channel, or another thread is inside
    /// a call on the same handle right now.
    BIPS_E_BUSY = 4,
    /// A null handle or pointer, a bad name or option, a length beyond the
    /// capacity, a destroyed handle.
    BIPS_E_INVALID_ARGUMENT = 5,
    /// The OS refused access to the channel's shared-memory object; or its
    /// owner is not trusted (see `bips_consumer_options_trust_owner`); or
    /// another user's stale object cannot be removed (sticky `/dev/shm`).
    BIPS_E_PERMISSION = 6,
    /// The shared segment holds an impossible value (a buggy or hostile peer).
    BIPS_E_CORRUPT = 7,
    /// The segment was made by another bips version, or is not a bips channel.
    BIPS_E_LAYOUT = 8,
    /// Not enough shared memory (`/dev/shm` too small).
    BIPS_E_NO_SPACE = 9,
    /// The channel's consumer table is full.
    BIPS_E_TOO_MANY_CONSUMERS = 10,
    /// This consumer already holds the channel's `max_held` samples
    /// (`bips_consumer_max_held`): release one first.
    /// Also from `bips_producer_loan` with a negative timeout when every
    /// buffer is on loan to that producer: publish or discard one first.
    BIPS_E_HELD_LIMIT = 11,
    /// The loan or sample was already published, discarded or released.
    BIPS_E_STALE = 12,
    /// Any other OS error.
    BIPS_E_IO = 13,
    /// A bug in bips (a caught panic); the message says where.
    BIPS_E_INTERNAL = 14,
    /// The channel does not carry the payload type the consumer requires
    /// (`bips_consumer_options_require_type`); the message names both.
    BIPS_E_TYPE_MISMATCH = 15,
    /// A frame/tensor descriptor is malformed (unknown dtype, more than
    /// `BIPS_MAX_DIMS` dimensions, bad text, ...) or does not fit its buffer:
    /// one given by the caller, or one read from a sample (a buggy or hostile
    /// producer). The message says which check failed.
    BIPS_E_DESCRIPTOR = 16,
    /// Not a failure: the sample (or loan) carries no descriptor and its
    /// channel fixes none (`bips_sample_descriptor`).
    BIPS_E_NO_DESCRIPTOR = 17,
}

pub use bips_status::*;

/// The default `bips_options.max_held`: samples one consumer may hold at
/// once unless the producer chose another (`bips_consumer_max_held`).
pub const BIPS_MAX_HELD: u32 = 8;
const _: () = assert!(BIPS_MAX_HELD as usize == bips::MAX_HELD);
/// The largest `bips_options.max_held` a producer may choose.
pub const BIPS_MAX_HELD_LIMIT: u32 = 64;
const _: () = assert!(BIPS_MAX_HELD_LIMIT == bips::MAX_HELD_LIMIT);

/// A failure on its way to C: the status and its message.
pub(crate) struct Fail {
    status: bips_status,
    message: Cow<'static, str>,
}

impl Fail {
    pub(crate) fn new(status: bips_status, message: impl Into<Cow<'static, str>>) -> Fail {
        Fail {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<Cow<'static, str>>) -> Fail {
        Fail::new(BIPS_E_INVALID_ARGUMENT, message)
    }
}

impl From<bips::Error> for Fail {
    fn from(e: bips::Error) -> Fail {
        use bips::Error as E;
        let status =
            match &e {
                E::InvalidName { .. } | E::InvalidOptions(_) => BIPS_E_INVALID_ARGUMENT,
                E::ChannelBusy { .. } => BIPS_E_BUSY,
                E::NotFound { .. } => BIPS_E_NOT_FOUND,
                E::PermissionDenied { .. }
                | E::UntrustedOwner { .. }
                | E::StaleNotRemovable { .. } => BIPS_E_PERMISSION,
                E::NoSpace { .. } => BIPS_E_NO_SPACE,
                // Static messages: a polling loop sees these all the time, and
                // formatting one would allocate on the hot path.
                E::Timeout => return Fail::new(BIPS_E_TIMEOUT, "timed out"),
                E::Disconnected => return Fail::new(
                    BIPS_E_DISCONNECTED,
                    "disconnected: the producer has gone and every remaining sample was received",
                ),
                E::TooManyConsumers { .. } => BIPS_E_TOO_MANY_CONSUMERS,
                E::HeldLimit { .. } => BIPS_E_HELD_LIMIT,
                E::Io { .. } => BIPS_E_IO,
                E::Layout { .. } => BIPS_E_LAYOUT,
                E::Corrupt { .. } => BIPS_E_CORRUPT,
                E::TypeMismatch { .. } => BIPS_E_TYPE_MISMATCH,
                E::Descriptor(_) => BIPS_E_DESCRIPTOR,
                E::Closed => BIPS_E_DISCONNECTED,
                _ => BIPS_E_INTERNAL,
            };
        Fail::new(status, e.to_string())
    }
}

pub(crate) type FfiResult<T = ()> = Result<T, Fail>;

enum LastError {
    None,
    Static(&'static str),
    Owned(CString),
}

thread_local! {
    static LAST_ERROR: RefCell<LastError> = const { RefCell::new(LastError::None) };
    /// Scratch space for a static message made nul-terminated.
    static STATIC_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn set_last_error(message: Cow<'static, str>) {
    let value = match message {
        Cow::Borrowed(s) => LastError::Static(s),
        Cow::Owned(s) => LastError::Owned(
            CString::new(s.replace('\0', " ")).unwrap_or_else(|_| CString::default()),
        ),
    };
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = value);
}

/// Runs an entry point body: catches panics and records the failure message.
pub(crate) fn ffi(body: impl FnOnce() -> FfiResult) -> bips_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => BIPS_OK,
        Ok(Err(f)) => {
            set_last_error(f.message);
            f.status
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(format!("internal error in bips (caught panic): {what}").into());
            BIPS_E_INTERNAL
        }
    }
}

/// Runs a getter body: catches panics, answers `fallback` on failure.
pub(crate) fn ffi_value<T>(fallback: T, body: impl FnOnce() -> FfiResult<T>) -> T {
    let mut out = None;
    let status = ffi(|| {
        out = Some(body()?);
        Ok(())
    });
    match (status, out) {
        (BIPS_OK, Some(v)) => v,
        _ => fallback,
    }
}

/// The message of the calling thread's last failed call ("" if none). The
/// string stays valid until the thread's next failing bips call.
#[no_mangle]
pub extern "C" fn bips_last_error_message() -> *const c_char {
    let r = catch_unwind(|| {
        LAST_ERROR.with(|e| match &*e.borrow() {
            LastError::None => c"".as_ptr(),
            LastError::Owned(s) => s.as_ptr(),
            LastError::Static(s) => STATIC_BUF.with(|b| {
                let mut b = b.borrow_mut();
                b.clear();
                b.extend_from_slice(s.as_bytes());
                b.push(0);
                b.as_ptr().cast()
            }),
        })
    });
    r.unwrap_or(c"".as_ptr())
}

/// The name of a status code (`"BIPS_E_TIMEOUT"`), or `"BIPS_E_UNKNOWN"`.
#[no_mangle]
pub extern "C" fn bips_status_name(status: i32) -> *const c_char {
    let name: &'static CStr = match status {
        0 => c"BIPS_OK",
        1 => c"BIPS_E_TIMEOUT",
        2 => c"BIPS_E_DISCONNECTED",
        3 => c"BIPS_E_NOT_FOUND",
        4 => c"BIPS_E_BUSY",
        5 => c"BIPS_E_INVALID_ARGUMENT",
        6 => c"BIPS_E_PERMISSION",
        7 => c"BIPS_E_CORRUPT",
        8 => c"BIPS_E_LAYOUT",
        9 => c"BIPS_E_NO_SPACE",
        10 => c"BIPS_E_TOO_MANY_CONSUMERS",
        11 => c"BIPS_E_HELD_LIMIT",
        12 => c"BIPS_E_STALE",
        13 => c"BIPS_E_IO",
        14 => c"BIPS_E_INTERNAL",
        15 => c"BIPS_E_TYPE_MISMATCH",
        16 => c"BIPS_E_DESCRIPTOR",
        17 => c"BIPS_E_NO_DESCRIPTOR",
        _ => c"BIPS_E_UNKNOWN",
    };
    name.as_ptr()
}

/// The library version, e.g. `"0.1.0"`.
#[no_mangle]
pub extern "C" fn bips_version() -> *const c_char {
    const V: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        };
    V.as_ptr()
}

/// One buffer of a channel's pool (see `bips_producer_buffers`,
/// `bips_consumer_buffers`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct bips_buffer_info {
    /// The buffer's index in the pool (`0..buffers`).
    pub index: u32,
    /// Its first byte in this process's mapping (aligned to the channel's
    /// alignment, the page size by default).
    pub data: *mut c_void,
    /// Its size in bytes.
    pub capacity: usize,
    /// Its per-sample metadata area.
    pub meta: *mut c_void,
    /// Bytes of per-sample metadata.
    pub meta_size: usize,
}

/// Copies `table` into `out[..cap]`; answers the table's length.
///
/// # Safety
/// `out` is null or writable for `cap` entries.
pub(crate) unsafe fn write_buffer_table(
    table: &[bips::BufferInfo],
    out: *mut bips_buffer_info,
    cap: usize,
) -> FfiResult<usize> {
    if out.is_null() && cap > 0 {
        return Err(Fail::invalid("out is NULL but cap is not 0"));
    }
    for (i, b) in table.iter().take(cap).enumerate() {
        // SAFETY: `i < cap` and the caller made `out` writable for `cap`
        // entries (non-null when `cap > 0`, checked above).
        unsafe {
            out.add(i).write(bips_buffer_info {
                index: b.index,
                data: b.ptr.cast(),
                capacity: b.capacity,
                meta: b.meta.cast(),
                meta_size: b.meta_len,
            })
        };
    }
    Ok(table.len())
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of sample timestamps.
#[no_mangle]
pub extern "C" fn bips_now_ns() -> u64 {
    bips::now_ns()
}

/// Reads a channel name argument.
///
/// # Safety
/// `name` is null or points to a nul-terminated string (the C caller's
/// contract for every `const char *name` argument).
pub(crate) unsafe fn name_arg<'a>(name: *const c_char) -> FfiResult<&'a str> {
    if name.is_null() {
        return Err(Fail::invalid("name is NULL"));
    }
    // SAFETY: non-null, and nul-terminated by the caller's contract.
    let c = unsafe { CStr::from_ptr(name) };
    c.to_str()
        .map_err(|_| Fail::invalid("the channel name is not valid UTF-8"))
}

/// Checks an out-pointer argument.
///
/// # Safety
/// `p` is null or valid for writes of a `T` (the C caller's contract for
/// every out-pointer).
pub(crate) unsafe fn out_arg<'a, T>(p: *mut T, what: &'static str) -> FfiResult<&'a mut T> {
    // SAFETY: null is checked by `as_mut`; otherwise valid for writes of a T
    // and not aliased during the call, by the caller's contract.
    unsafe { p.as_mut() }.ok_or_else(|| Fail::invalid(what))
}

/// A negative timeout waits forever, 0 tries once, a positive one waits that
/// many nanoseconds at most.
pub(crate) enum Timeout {
    Forever,
    Try,
    For(std::time::Duration),
}

impl Timeout {
    pub(crate) fn from_ns(ns: i64) -> Timeout {
        match ns {
            n if n < 0 => Timeout::Forever,
            0 => Timeout::Try,
            n => Timeout::For(std::time::Duration::from_nanos(n as u64)),
        }
    }
}

/// Marks a handle in use for the duration of a call: a second thread calling
/// in at the same time gets `BIPS_E_BUSY` instead of a data race.
pub(crate) struct InUse<'a>(&'a AtomicBool);

impl<'a> InUse<'a> {
    pub(crate) fn enter(flag: &'a AtomicBool) -> FfiResult<InUse<'a>> {
        if flag.swap(true, Ordering::Acquire) {
            return Err(Fail::new(
                BIPS_E_BUSY,
                "another thread is inside a call on this handle: a bips handle (and its \
                 samples/loans) is used by one thread at a time",
            ));
        }
        Ok(InUse(flag))
    }
}

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Token layout of sample and loan handles: generation above, slot below.
pub(crate) const SLOT_BITS: u32 = 16;

/// The generation of the next handle, shared by every producer and consumer
/// of the process: no two handles ever get the same token, so a handle given
/// to another owner (a forged or mixed-up `owner`) never matches a slot there
/// and gets `BIPS_E_STALE`. 2^48 generations: nine years at a million
/// handles a second before they wrap.
static NEXT_GEN: AtomicU64 = AtomicU64::new(1);

/// A fresh token for `slot`, unique in the process (generation above, slot
/// below; never 0).
pub(crate) fn new_token(slot: usize) -> u64 {
    let gen = NEXT_GEN.fetch_add(1, Ordering::Relaxed) & ((1 << (64 - SLOT_BITS)) - 1);
    // A wrapped generation of 0 with slot 0 would be the "free" token.
    let gen = if gen == 0 { 1 } else { gen };
    (gen << SLOT_BITS) | slot as u64
}

pub(crate) fn token_slot(token: u64) -> usize {
    (token & ((1 << SLOT_BITS) - 1)) as usize
}
