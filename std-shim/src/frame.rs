//! Frame/tensor descriptors on samples: the shim's glue between a region's
//! per-buffer descriptor slots and [`bips_core::descriptor`].
//!
//! A producer writes a sample's [`Descriptor`] into its buffer's slot
//! ([`SampleMut::set_descriptor`](crate::SampleMut::set_descriptor)); a
//! consumer copies the slot out, parses and validates the copy against the
//! sample's length ([`Sample::descriptor`](crate::Sample::descriptor)), so a
//! hostile producer rewriting the slot meanwhile cannot make a view reach
//! past the sample. A channel may fix one descriptor for every sample in its
//! [`PayloadType`]; a sample without its own then reports that one.

use bips_core::descriptor::{Descriptor, DescriptorError, PayloadType, DESCRIPTOR_SIZE};
use bips_core::Region;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::error::{Error, Result};

/// Reads buffer `buf`'s descriptor slot; falls back to the channel's fixed
/// descriptor; validates the result against `len` bytes.
pub(crate) fn read(
    region: &Region<'_>,
    buf: u32,
    len: usize,
    payload: Option<&PayloadType>,
) -> Result<Option<Descriptor>> {
    let p = region.desc_ptr(buf);
    if p.is_null() {
        return Ok(None);
    }
    // The slot is copied out before it is parsed, so a concurrent (hostile)
    // writer can at worst make the copy inconsistent, which decoding and
    // validation then refuse.
    let wire = load(p);
    let own = Descriptor::decode(&wire).map_err(Error::Descriptor)?;
    let d = match own.or_else(|| payload.and_then(|t| t.descriptor().copied())) {
        Some(d) => d,
        None => return Ok(None),
    };
    d.validate(len as u64).map_err(Error::Descriptor)?;
    Ok(Some(d))
}

/// Writes `d` into buffer `buf`'s slot.
pub(crate) fn write(region: &Region<'_>, buf: u32, d: Option<&Descriptor>) {
    let p = region.desc_ptr(buf);
    if p.is_null() {
        return;
    }
    let wire = match d {
        Some(d) => d.encode(),
        None => [0u8; DESCRIPTOR_SIZE],
    };
    // Clearing writes only the first word (its first byte is the version:
    // 0 = no descriptor).
    let n = if d.is_some() { WORDS } else { 1 };
    for (w, c) in slot(p).iter().zip(wire.chunks_exact(8)).take(n) {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        w.store(u64::from_le_bytes(b), Relaxed);
    }
}

/// Words of a descriptor slot.
const WORDS: usize = DESCRIPTOR_SIZE / 8;

/// The descriptor slot at `p` as words. Shared memory is accessed through
/// atomics only (another process may write it at any time: a plain access
/// would be a data race); the publish's Release and the receive's Acquire
/// order these Relaxed accesses.
fn slot<'a>(p: *mut u8) -> &'a [AtomicU64; WORDS] {
    // SAFETY: callers pass `Region::desc_ptr` of a valid buffer index (not
    // null): DESCRIPTOR_SIZE bytes inside the mapping, which outlives the
    // borrow (the caller holds the sample or the loan, and the mapping lives
    // as long as its producer or consumer); 64-aligned (the slots start on a
    // 128-byte line and are 320 bytes each), so aligned for `AtomicU64`; any
    // bit pattern is a valid atomic.
    unsafe { &*(p as *const [AtomicU64; WORDS]) }
}

/// Copies the slot at `p` out, word by word.
fn load(p: *mut u8) -> [u8; DESCRIPTOR_SIZE] {
    let mut wire = [0u8; DESCRIPTOR_SIZE];
    for (w, c) in slot(p).iter().zip(wire.chunks_exact_mut(8)) {
        c.copy_from_slice(&w.load(Relaxed).to_le_bytes());
    }
    wire
}

/// The descriptor this producer wrote into the slot of a buffer it has
/// loaned (`None` if the slot does not parse).
pub(crate) fn read_own(region: &Region<'_>, buf: u32) -> Option<Descriptor> {
    let p = region.desc_ptr(buf);
    if p.is_null() {
        return None;
    }
    Descriptor::decode(&load(p)).ok().flatten()
}

/// Checks a descriptor a producer sets on a loan: it must fit the buffer and,
/// on a channel that fixes a descriptor, be that one. Returns the bytes it
/// needs (checked against the length at publish).
pub(crate) fn check_set(
    d: &Descriptor,
    capacity: usize,
    payload: Option<&PayloadType>,
) -> Result<u64> {
    d.validate(capacity as u64).map_err(Error::Descriptor)?;
    if let Some(fixed) = payload.and_then(|t| t.descriptor()) {
        if fixed != d {
            return Err(not_fixed(fixed, d));
        }
    }
    d.extent().map_err(Error::Descriptor)
}

/// A sample's descriptor differs from the one its channel fixes.
fn not_fixed(fixed: &Descriptor, got: &Descriptor) -> Error {
    Error::InvalidOptions(format!(
        "this channel fixes every sample's descriptor to {fixed}; a sample cannot carry {got}"
    ))
}

/// Checks, at publish, that the sample's descriptor (needing `extent`
/// bytes) fits the published length.
pub(crate) fn check_len(extent: Option<u64>, len: usize) -> Result<()> {
    match extent {
        Some(end) if end > len as u64 => Err(Error::Descriptor(DescriptorError::OutOfBounds {
            what: "array",
            end,
            len: len as u64,
        })),
        _ => Ok(()),
    }
}

/// Whether the channel's type is what the consumer requires: name and
/// version, and the fixed descriptor when the requirement names one.
pub(crate) fn check_type(
    channel: &str,
    found: Option<&PayloadType>,
    required: Option<&PayloadType>,
) -> Result<()> {
    let Some(req) = required else { return Ok(()) };
    let ok = found.is_some_and(|f| {
        f.name() == req.name()
            && f.version() == req.version()
            && req.descriptor().is_none_or(|d| f.descriptor() == Some(d))
    });
    if ok {
        return Ok(());
    }
    Err(Error::TypeMismatch {
        name: channel.to_owned(),
        required: req.to_string(),
        found: found.map_or_else(|| "no declared type".to_owned(), |f| f.to_string()),
    })
}

/// A sample without a descriptor asked for a typed view.
pub(crate) fn missing() -> Error {
    Error::Descriptor(DescriptorError::Missing)
}
