//! `bips_options`, `bips_consumer_options` and `bips_geometry`.

use std::ffi::c_char;
use std::time::Duration;

use crate::bips_status;
use crate::frame::{
    bips_descriptor, bips_payload_type, payload_type_args, payload_type_from_c, NO_TYPE,
};
use crate::{ffi, out_arg, Fail, FfiResult};

/// Backpressure policy (`bips_options.policy`): one of `BIPS_POLICY_*`.
pub type bips_policy = u32;
/// Lossless: the slowest live consumer paces the producer.
pub const BIPS_POLICY_BLOCK: bips_policy = 1;
/// Latest wins: the producer never waits; slow consumers skip ahead and each
/// sample reports how many were lost before it (`bips_sample_lagged`).
pub const BIPS_POLICY_DROP_OLDEST: bips_policy = 2;

/// How a blocking call waits (`wait` fields): one of `BIPS_WAIT_*`.
pub type bips_wait = u32;
/// Busy-poll for `spin_ns`, then sleep on the shared futex (the default).
pub const BIPS_WAIT_SPIN_THEN_PARK: bips_wait = 0;
/// Busy-poll; never sleeps (lowest latency, one core burnt while waiting).
pub const BIPS_WAIT_SPIN: bips_wait = 1;
/// Sleep on the shared futex at once (lowest CPU use).
pub const BIPS_WAIT_PARK: bips_wait = 2;

/// Where a new consumer starts reading (`bips_consumer_options.start`).
pub type bips_start = u32;
/// At the newest sample still retained, or the next one (the default).
pub const BIPS_START_NEWEST: bips_start = 0;
/// At the oldest sample still retained.
pub const BIPS_START_OLDEST: bips_start = 1;
/// At the next sample to be published.
pub const BIPS_START_NEXT: bips_start = 2;

/// `flags` bit: fault every page in at create/open (`MAP_POPULATE`).
pub const BIPS_FLAG_PREFAULT: u32 = 1;
/// `flags` bit: lock the mapping in RAM (`mlock`; needs `RLIMIT_MEMLOCK`).
pub const BIPS_FLAG_MLOCK: u32 = 2;
/// `flags` bit (producer only): ask for transparent huge pages.
pub const BIPS_FLAG_HUGE_PAGES: u32 = 4;
/// `flags` bit (producer only): make the channel a sealed memfd served on a
/// Unix socket in the socket directory (`$BIPS_SOCKET_DIR`, else
/// `$XDG_RUNTIME_DIR/bips`, else `/run/bips`) instead of a `/dev/shm` object:
/// no peer can truncate it, and peers share only that directory. Consumers
/// find either kind by name. Without this bit the backend is `$BIPS_BACKEND`
/// (`shm`, the default, or `memfd`).
pub const BIPS_FLAG_MEMFD: u32 = 8;

/// How many uids `bips_options_trust_owner` / `bips_consumer_options_trust_owner`
/// can add to one options struct.
pub const BIPS_MAX_TRUSTED_UIDS: u32 = 8;

/// Options of a new channel. Fill it with `bips_options_default(&o)` (which
/// records `sizeof o` in `struct_size`), then set the fields you need.
/// `buffer_size` has no default: it must be set.
///
/// ABI evolution: fields are only ever appended; the library reads only the
/// first `struct_size` bytes, so a program built against an older header keeps
/// working with a newer library (the new fields take their defaults).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct bips_options {
    /// `sizeof(bips_options)` as the caller compiled it (set by `bips_options_default`).
    pub struct_size: u32,
    /// Buffers in the pool (default 4).
    pub buffers: u32,
    /// Bytes per buffer (no default: 0 is refused).
    pub buffer_size: u64,
    /// Bytes of per-sample user metadata, 0..=4096 (default 64).
    pub meta_size: u32,
    /// Consumer table capacity, 1..=1024 (default 8).
    pub max_consumers: u32,
    /// Descriptor ring capacity, a power of two >= `buffers` (0: the default,
    /// the next power of two of `buffers`).
    pub ring_capacity: u32,
    /// Buffer alignment, a power of two from 64 to the page size (0: the
    /// page size, so a buffer can be handed to DMA or `cudaHostRegister`).
    pub alignment: u32,
    /// `BIPS_POLICY_BLOCK` (default) or `BIPS_POLICY_DROP_OLDEST`.
    pub policy: bips_policy,
    /// How `bips_producer_loan` waits: `BIPS_WAIT_*` (default spin-then-park).
    pub wait: bips_wait,
    /// Spin time of `BIPS_WAIT_SPIN_THEN_PARK`, in ns (default 20000).
    pub spin_ns: u64,
    /// Permission bits of `/dev/shm/bips.<name>` (default 0600; 0660 shares
    /// with a group: consumers need read and write access).
    pub mode: u32,
    /// `BIPS_FLAG_*` bits (default 0).
    pub flags: u32,
    /// 1: replace a stale object under the name whoever owns it; 0 (default):
    /// only when this process's effective uid, root, or one of `trusted_uids` owns
    /// it (otherwise `BIPS_E_PERMISSION`). Set with `bips_options_trust_any_owner`.
    pub trust_any_owner: u32,
    /// How many of `trusted_uids` are set (default 0).
    pub trusted_uid_count: u32,
    /// Owners trusted besides the effective uid; add with
    /// `bips_options_trust_owner`.
    pub trusted_uids: [u32; BIPS_MAX_TRUSTED_UIDS as usize],
    /// What the channel carries (default: all zero, untyped); set with
    /// `bips_options_payload_type`.
    pub payload_type: bips_payload_type,
    /// Samples one consumer may hold at once, 1..=`BIPS_MAX_HELD_LIMIT` (64)
    /// (default `BIPS_MAX_HELD`, 8): a batching consumer keeps 16-64 frames.
    /// Held samples keep their buffers: size `buffers` to match.
    pub max_held: u32,
}

/// Options of a consumer. Fill it with `bips_consumer_options_default(&o)`,
/// then set the fields you need (same ABI rules as `bips_options`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct bips_consumer_options {
    /// `sizeof(bips_consumer_options)` as the caller compiled it.
    pub struct_size: u32,
    /// `BIPS_START_*` (default `BIPS_START_NEWEST`).
    pub start: bips_start,
    /// How `bips_consumer_recv` waits: `BIPS_WAIT_*` (default spin-then-park).
    pub wait: bips_wait,
    /// `BIPS_FLAG_PREFAULT` / `BIPS_FLAG_MLOCK` bits (default 0).
    pub flags: u32,
    /// Spin time of `BIPS_WAIT_SPIN_THEN_PARK`, in ns (default 20000).
    pub spin_ns: u64,
    /// 1: open the channel whoever owns its `/dev/shm` object; 0 (default):
    /// only when this process's effective uid, root (uid 0), or one of
    /// `trusted_uids` owns it (otherwise `BIPS_E_PERMISSION`, the message
    /// naming the owner). Set with `bips_consumer_options_trust_any_owner`.
    pub trust_any_owner: u32,
    /// How many of `trusted_uids` are set (default 0).
    pub trusted_uid_count: u32,
    /// Owners trusted besides the effective uid (e.g. the producer's user);
    /// add with `bips_consumer_options_trust_owner`.
    pub trusted_uids: [u32; BIPS_MAX_TRUSTED_UIDS as usize],
    /// The payload type the channel must declare (default: all zero, any
    /// channel); set with `bips_consumer_options_require_type`.
    pub required_type: bips_payload_type,
}

/// A channel's geometry, as `bips_producer_geometry` / `bips_consumer_geometry`
/// report it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct bips_geometry {
    /// Buffers in the pool.
    pub buffers: u32,
    /// Consumer table capacity.
    pub max_consumers: u32,
    /// Bytes per buffer.
    pub buffer_size: u64,
    /// Bytes of per-sample metadata.
    pub meta_size: u32,
    /// Descriptor ring capacity.
    pub ring_capacity: u32,
    /// Buffer alignment in bytes.
    pub alignment: u32,
    /// `BIPS_POLICY_*`.
    pub policy: bips_policy,
}

impl From<&bips::Geometry> for bips_geometry {
    fn from(g: &bips::Geometry) -> bips_geometry {
        bips_geometry {
            buffers: g.buffer_count,
            max_consumers: g.max_consumers,
            buffer_size: g.buffer_size,
            meta_size: g.meta_size,
            ring_capacity: g.ring_capacity,
            alignment: g.alignment,
            policy: match g.policy {
                bips::Backpressure::DropOldest => BIPS_POLICY_DROP_OLDEST,
                _ => BIPS_POLICY_BLOCK,
            },
        }
    }
}

const DEFAULT_SPIN_NS: u64 = 20_000;

fn default_options() -> bips_options {
    bips_options {
        struct_size: std::mem::size_of::<bips_options>() as u32,
        buffers: 4,
        buffer_size: 0,
        meta_size: 64,
        max_consumers: 8,
        ring_capacity: 0,
        alignment: 0,
        policy: BIPS_POLICY_BLOCK,
        wait: BIPS_WAIT_SPIN_THEN_PARK,
        spin_ns: DEFAULT_SPIN_NS,
        mode: 0o600,
        flags: 0,
        trust_any_owner: 0,
        trusted_uid_count: 0,
        trusted_uids: [0; BIPS_MAX_TRUSTED_UIDS as usize],
        payload_type: NO_TYPE,
        max_held: crate::BIPS_MAX_HELD,
    }
}

fn default_consumer_options() -> bips_consumer_options {
    bips_consumer_options {
        struct_size: std::mem::size_of::<bips_consumer_options>() as u32,
        start: BIPS_START_NEWEST,
        wait: BIPS_WAIT_SPIN_THEN_PARK,
        flags: 0,
        spin_ns: DEFAULT_SPIN_NS,
        trust_any_owner: 0,
        trusted_uid_count: 0,
        trusted_uids: [0; BIPS_MAX_TRUSTED_UIDS as usize],
        required_type: NO_TYPE,
    }
}

/// Copies the first `size` bytes of `src` (the caller's version of the
/// struct) over `base` (the defaults).
///
/// # Safety
/// `src` is valid for reads of `size` bytes.
unsafe fn read_prefix<T: Copy>(base: T, src: *const u8, size: usize) -> T {
    let mut out = base;
    let n = size.min(std::mem::size_of::<T>());
    // SAFETY: `src` is readable for `size >= n` bytes (caller); `out` is a
    // local T of size >= n; the structs are repr(C) plain integers, for which
    // every byte pattern is valid.
    unsafe { std::ptr::copy_nonoverlapping(src, (&mut out as *mut T).cast::<u8>(), n) };
    out
}

/// Writes the first `size` bytes of `value` to `dst`.
///
/// # Safety
/// `dst` is valid for writes of `size` bytes.
unsafe fn write_prefix<T: Copy>(value: &T, dst: *mut u8, size: usize) {
    let n = size.min(std::mem::size_of::<T>());
    // SAFETY: `dst` is writable for `size >= n` bytes (caller); `value` is
    // readable for size_of::<T>() >= n bytes.
    unsafe { std::ptr::copy_nonoverlapping((value as *const T).cast::<u8>(), dst, n) };
}

/// Fills the first `struct_size` bytes of `*options` with the defaults and
/// stores `struct_size` in it. Call it through the `bips_options_default(o)`
/// macro, which passes `sizeof *(o)`.
///
/// # Safety
/// `options` is null or valid for writes of `struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn bips_options_init(
    options: *mut bips_options,
    struct_size: usize,
) -> bips_status {
    ffi(|| {
        if options.is_null() || struct_size < 4 {
            return Err(Fail::invalid("options is NULL or struct_size < 4"));
        }
        let mut d = default_options();
        d.struct_size = struct_size.min(u32::MAX as usize) as u32;
        // SAFETY: writable for `struct_size` bytes by the caller's contract.
        unsafe { write_prefix(&d, options.cast(), struct_size) };
        Ok(())
    })
}

/// Fills `*options` with the consumer defaults; call it through the
/// `bips_consumer_options_default(o)` macro.
///
/// # Safety
/// `options` is null or valid for writes of `struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn bips_consumer_options_init(
    options: *mut bips_consumer_options,
    struct_size: usize,
) -> bips_status {
    ffi(|| {
        if options.is_null() || struct_size < 4 {
            return Err(Fail::invalid("options is NULL or struct_size < 4"));
        }
        let mut d = default_consumer_options();
        d.struct_size = struct_size.min(u32::MAX as usize) as u32;
        // SAFETY: writable for `struct_size` bytes by the caller's contract.
        unsafe { write_prefix(&d, options.cast(), struct_size) };
        Ok(())
    })
}

/// The trust fields shared by both options structs.
trait TrustFields: Copy {
    fn trust(
        &mut self,
    ) -> (
        &mut u32,
        &mut u32,
        &mut [u32; BIPS_MAX_TRUSTED_UIDS as usize],
    );
}

impl TrustFields for bips_options {
    fn trust(
        &mut self,
    ) -> (
        &mut u32,
        &mut u32,
        &mut [u32; BIPS_MAX_TRUSTED_UIDS as usize],
    ) {
        (
            &mut self.trust_any_owner,
            &mut self.trusted_uid_count,
            &mut self.trusted_uids,
        )
    }
}

impl TrustFields for bips_consumer_options {
    fn trust(
        &mut self,
    ) -> (
        &mut u32,
        &mut u32,
        &mut [u32; BIPS_MAX_TRUSTED_UIDS as usize],
    ) {
        (
            &mut self.trust_any_owner,
            &mut self.trusted_uid_count,
            &mut self.trusted_uids,
        )
    }
}

/// The owner policy the trust fields describe.
fn owner_policy<T: TrustFields>(mut o: T) -> FfiResult<bips::OwnerPolicy> {
    let (any, count, uids) = o.trust();
    let any = *any;
    let count = *count;
    if any > 1 {
        return Err(Fail::invalid(format!(
            "options.trust_any_owner is {any}: use 0 or 1"
        )));
    }
    if count > BIPS_MAX_TRUSTED_UIDS {
        return Err(Fail::invalid(format!(
            "options.trusted_uid_count is {count}, more than BIPS_MAX_TRUSTED_UIDS (8)"
        )));
    }
    if any == 1 {
        return Ok(bips::OwnerPolicy::Any);
    }
    Ok(uids[..count as usize]
        .iter()
        .fold(bips::OwnerPolicy::default(), |p, &uid| p.with_uid(uid)))
}

/// Applies `change` to the trust fields of the caller's options struct.
///
/// # Safety
/// `options` is null or a struct filled by its `_default` macro, valid for
/// reads and writes of its `struct_size` bytes.
unsafe fn change_trust<T: TrustFields>(
    options: *mut T,
    what: &'static str,
    base: T,
    change: impl FnOnce(&mut u32, &mut u32, &mut [u32; BIPS_MAX_TRUSTED_UIDS as usize]) -> FfiResult,
) -> FfiResult {
    if options.is_null() {
        return Err(Fail::invalid("options is NULL"));
    }
    // SAFETY: non-null and readable for its first field (caller's contract).
    let size = unsafe { options.cast::<u32>().read_unaligned() } as usize;
    if size < std::mem::size_of::<T>() {
        return Err(Fail::invalid(format!(
            "options.struct_size is {size}: fill the options with {what}_default() of this \
             header first (the trust fields are newer than the struct the caller has)"
        )));
    }
    // SAFETY: readable and writable for `size >= size_of::<T>()` bytes (the
    // caller's contract).
    let mut o = unsafe { read_prefix(base, options.cast(), size) };
    let (any, count, uids) = o.trust();
    change(any, count, uids)?;
    // SAFETY: as above.
    unsafe { write_prefix(&o, options.cast(), size) };
    Ok(())
}

/// Adds `uid` to the owners trusted besides the effective uid.
fn add_uid(
    _any: &mut u32,
    count: &mut u32,
    uids: &mut [u32; BIPS_MAX_TRUSTED_UIDS as usize],
    uid: u32,
) -> FfiResult {
    let n = (*count).min(BIPS_MAX_TRUSTED_UIDS) as usize;
    if uids[..n].contains(&uid) {
        return Ok(());
    }
    if n == BIPS_MAX_TRUSTED_UIDS as usize {
        return Err(Fail::invalid(
            "already BIPS_MAX_TRUSTED_UIDS (8) trusted uids: use trust_any_owner instead",
        ));
    }
    uids[n] = uid;
    *count = n as u32 + 1;
    Ok(())
}

/// Also trusts channel objects owned by `uid` when a stale object (its
/// producer dead) is found under the name and must be replaced. By default
/// only the effective uid's (or root's) object is replaced; another owner's gives
/// `BIPS_E_PERMISSION`. Up to `BIPS_MAX_TRUSTED_UIDS` uids (calls add up).
///
/// # Safety
/// `options` is null or filled by `bips_options_default`.
#[no_mangle]
pub unsafe extern "C" fn bips_options_trust_owner(
    options: *mut bips_options,
    uid: u32,
) -> bips_status {
    ffi(|| {
        // SAFETY: forwarded caller's contract.
        unsafe {
            change_trust(options, "bips_options", default_options(), |a, c, u| {
                add_uid(a, c, u, uid)
            })
        }
    })
}

/// Replaces a stale object under the name whoever owns it (sets
/// `trust_any_owner`). Only its owner or root can remove another user's
/// object from `/dev/shm` (sticky bit): others get `BIPS_E_PERMISSION` at once.
///
/// # Safety
/// `options` is null or filled by `bips_options_default`.
#[no_mangle]
pub unsafe extern "C" fn bips_options_trust_any_owner(options: *mut bips_options) -> bips_status {
    ffi(|| {
        // SAFETY: forwarded caller's contract.
        unsafe {
            change_trust(options, "bips_options", default_options(), |a, _, _| {
                *a = 1;
                Ok(())
            })
        }
    })
}

/// Also trusts channels whose `/dev/shm` object is owned by `uid` (e.g. the
/// user the producer runs as). By default a consumer opens only channels of
/// its effective uid or root: another owner's gives
/// `BIPS_E_PERMISSION`, the message naming the owner. Up to
/// `BIPS_MAX_TRUSTED_UIDS` uids (calls add up).
///
/// # Safety
/// `options` is null or filled by `bips_consumer_options_default`.
#[no_mangle]
pub unsafe extern "C" fn bips_consumer_options_trust_owner(
    options: *mut bips_consumer_options,
    uid: u32,
) -> bips_status {
    ffi(|| {
        // SAFETY: forwarded caller's contract.
        unsafe {
            change_trust(
                options,
                "bips_consumer_options",
                default_consumer_options(),
                |a, c, u| add_uid(a, c, u, uid),
            )
        }
    })
}

/// Opens channels whoever owns them (sets `trust_any_owner`): for containers
/// whose uids are not known in advance, on a machine whose users are all
/// trusted.
///
/// # Safety
/// `options` is null or filled by `bips_consumer_options_default`.
#[no_mangle]
pub unsafe extern "C" fn bips_consumer_options_trust_any_owner(
    options: *mut bips_consumer_options,
) -> bips_status {
    ffi(|| {
        // SAFETY: forwarded caller's contract.
        unsafe {
            change_trust(
                options,
                "bips_consumer_options",
                default_consumer_options(),
                |a, _, _| {
                    *a = 1;
                    Ok(())
                },
            )
        }
    })
}

/// Applies `change` to the caller's whole options struct, which must be of
/// this header's size or larger (filled by its `_default` macro).
///
/// # Safety
/// `options` is null or a struct filled by its `_default` macro, valid for
/// reads and writes of its `struct_size` bytes.
unsafe fn change_options<T: Copy>(
    options: *mut T,
    what: &'static str,
    base: T,
    change: impl FnOnce(&mut T) -> FfiResult,
) -> FfiResult {
    if options.is_null() {
        return Err(Fail::invalid("options is NULL"));
    }
    // SAFETY: non-null and readable for its first field (caller's contract).
    let size = unsafe { options.cast::<u32>().read_unaligned() } as usize;
    if size < std::mem::size_of::<T>() {
        return Err(Fail::invalid(format!(
            "options.struct_size is {size}: fill the options with {what}_default() of this \
             header first (the payload type fields are newer than the struct the caller has)"
        )));
    }
    // SAFETY: readable and writable for `size >= size_of::<T>()` bytes (the
    // caller's contract).
    let mut o = unsafe { read_prefix(base, options.cast(), size) };
    change(&mut o)?;
    // SAFETY: as above.
    unsafe { write_prefix(&o, options.cast(), size) };
    Ok(())
}

/// Declares what the new channel carries: a type `name` ("image/rgb8",
/// "sensor_msgs/Image"; 1 to 63 printable ASCII characters), a `version`,
/// and, unless `fixed` is NULL, one descriptor every sample has (samples
/// then need not carry their own, and one that sets another is refused).
/// Consumers see it (`bips_consumer_payload_type`, `bips list`) and may
/// require it (`bips_consumer_options_require_type`).
///
/// `BIPS_E_INVALID_ARGUMENT` for a bad name, `BIPS_E_DESCRIPTOR` for a
/// malformed `*fixed` (one that does not fit a buffer is refused at create).
///
/// # Safety
/// `options` is null or filled by `bips_options_default`; `name` is null or
/// nul-terminated; `fixed` is null or readable.
#[no_mangle]
pub unsafe extern "C" fn bips_options_payload_type(
    options: *mut bips_options,
    name: *const c_char,
    version: u32,
    fixed: *const bips_descriptor,
) -> bips_status {
    ffi(|| {
        // SAFETY: caller's contract for `name` and `fixed`.
        let t = unsafe { payload_type_args(name, version, fixed) }?;
        // SAFETY: caller's contract for `options`.
        unsafe {
            change_options(options, "bips_options", default_options(), |o| {
                o.payload_type = crate::frame::payload_type_to_c(Some(&t));
                Ok(())
            })
        }
    })
}

/// Makes `bips_consumer_open` accept only a channel that declares this
/// payload type: the same `name` and `version`, and, unless `fixed` is NULL,
/// the same fixed descriptor. Any other channel (an untyped one too) gives
/// `BIPS_E_TYPE_MISMATCH`, the message naming both types.
///
/// # Safety
/// `options` is null or filled by `bips_consumer_options_default`; `name` is
/// null or nul-terminated; `fixed` is null or readable.
#[no_mangle]
pub unsafe extern "C" fn bips_consumer_options_require_type(
    options: *mut bips_consumer_options,
    name: *const c_char,
    version: u32,
    fixed: *const bips_descriptor,
) -> bips_status {
    ffi(|| {
        // SAFETY: caller's contract for `name` and `fixed`.
        let t = unsafe { payload_type_args(name, version, fixed) }?;
        // SAFETY: caller's contract for `options`.
        unsafe {
            change_options(
                options,
                "bips_consumer_options",
                default_consumer_options(),
                |o| {
                    o.required_type = crate::frame::payload_type_to_c(Some(&t));
                    Ok(())
                },
            )
        }
    })
}

fn wait_strategy(wait: bips_wait, spin_ns: u64) -> FfiResult<bips::WaitStrategy> {
    Ok(match wait {
        BIPS_WAIT_SPIN_THEN_PARK => bips::WaitStrategy::SpinThenPark {
            spin: Duration::from_nanos(spin_ns),
        },
        BIPS_WAIT_SPIN => bips::WaitStrategy::Spin,
        BIPS_WAIT_PARK => bips::WaitStrategy::Park,
        w => {
            return Err(Fail::invalid(format!(
                "unknown wait strategy {w} (use BIPS_WAIT_*)"
            )))
        }
    })
}

fn check_flags(flags: u32, allowed: u32) -> FfiResult {
    if flags & !allowed != 0 {
        return Err(Fail::invalid(format!(
            "unknown flag bits {:#x}",
            flags & !allowed
        )));
    }
    Ok(())
}

/// Reads the caller's `bips_options` into Rust options.
///
/// # Safety
/// `options` is valid for reads of its `struct_size` bytes (caller's contract).
pub(crate) unsafe fn producer_options(options: *const bips_options) -> FfiResult<bips::Options> {
    if options.is_null() {
        return Err(Fail::invalid(
            "options is NULL: fill a bips_options with bips_options_default() and set buffer_size",
        ));
    }
    // SAFETY: non-null and readable for at least its first field (the
    // caller's contract covers `struct_size` bytes, at least 4).
    let size = unsafe { options.cast::<u32>().read_unaligned() } as usize;
    if size < 4 {
        return Err(Fail::invalid(
            "options.struct_size is not set: fill the options with bips_options_default()",
        ));
    }
    // SAFETY: readable for `size` bytes by the caller's contract.
    let o = unsafe { read_prefix(default_options(), options.cast(), size) };
    if o.buffer_size == 0 {
        return Err(Fail::invalid(
            "options.buffer_size must be set (it has no default)",
        ));
    }
    let buffer_size = usize::try_from(o.buffer_size)
        .map_err(|_| Fail::invalid("options.buffer_size does not fit in size_t"))?;
    let policy = match o.policy {
        BIPS_POLICY_BLOCK => bips::Backpressure::Block,
        BIPS_POLICY_DROP_OLDEST => bips::Backpressure::DropOldest,
        p => {
            return Err(Fail::invalid(format!(
                "unknown policy {p} (use BIPS_POLICY_*)"
            )))
        }
    };
    check_flags(
        o.flags,
        BIPS_FLAG_PREFAULT | BIPS_FLAG_MLOCK | BIPS_FLAG_HUGE_PAGES | BIPS_FLAG_MEMFD,
    )?;
    let mut r = bips::Options::new(o.buffers, buffer_size)
        .backpressure(policy)
        .max_consumers(o.max_consumers)
        .meta_size(o.meta_size)
        .max_held(o.max_held)
        .wait(wait_strategy(o.wait, o.spin_ns)?)
        .mode(o.mode)
        .prefault(o.flags & BIPS_FLAG_PREFAULT != 0)
        .mlock(o.flags & BIPS_FLAG_MLOCK != 0)
        .huge_pages(o.flags & BIPS_FLAG_HUGE_PAGES != 0)
        .trust(owner_policy(o)?);
    if o.flags & BIPS_FLAG_MEMFD != 0 {
        r = r.backend(bips::Backend::Memfd);
    }
    if o.ring_capacity != 0 {
        r = r.ring_capacity(o.ring_capacity);
    }
    if o.alignment != 0 {
        r = r.alignment(o.alignment);
    }
    if let Some(t) = payload_type_from_c(&o.payload_type, "options.payload_type")? {
        r = r.payload_type(t);
    }
    Ok(r)
}

/// Reads the caller's `bips_consumer_options` (NULL: the defaults).
///
/// # Safety
/// `options` is null or valid for reads of its `struct_size` bytes.
pub(crate) unsafe fn consumer_options(
    options: *const bips_consumer_options,
) -> FfiResult<bips::ConsumerOptions> {
    let o = if options.is_null() {
        default_consumer_options()
    } else {
        // SAFETY: non-null; readable for its first field (caller's contract).
        let size = unsafe { options.cast::<u32>().read_unaligned() } as usize;
        if size < 4 {
            return Err(Fail::invalid(
                "options.struct_size is not set: fill the options with \
                 bips_consumer_options_default()",
            ));
        }
        // SAFETY: readable for `size` bytes by the caller's contract.
        unsafe { read_prefix(default_consumer_options(), options.cast(), size) }
    };
    let start = match o.start {
        BIPS_START_NEWEST => bips::Start::Newest,
        BIPS_START_OLDEST => bips::Start::Oldest,
        BIPS_START_NEXT => bips::Start::Next,
        s => {
            return Err(Fail::invalid(format!(
                "unknown start {s} (use BIPS_START_*)"
            )))
        }
    };
    check_flags(o.flags, BIPS_FLAG_PREFAULT | BIPS_FLAG_MLOCK)?;
    let mut r = bips::ConsumerOptions::new()
        .start(start)
        .wait(wait_strategy(o.wait, o.spin_ns)?)
        .prefault(o.flags & BIPS_FLAG_PREFAULT != 0)
        .mlock(o.flags & BIPS_FLAG_MLOCK != 0)
        .trust(owner_policy(o)?);
    if let Some(t) = payload_type_from_c(&o.required_type, "options.required_type")? {
        r = r.require_type(t);
    }
    Ok(r)
}

/// Writes a geometry to an out-pointer.
///
/// # Safety
/// `out` is null or valid for writes of a `bips_geometry`.
pub(crate) unsafe fn write_geometry(out: *mut bips_geometry, g: &bips::Geometry) -> FfiResult {
    // SAFETY: `out` is null or writable (our caller's contract, forwarded).
    let out = unsafe { out_arg(out, "out is NULL") }?;
    *out = g.into();
    Ok(())
}
