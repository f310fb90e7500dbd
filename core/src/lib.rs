//! `bips-core`: the shared-memory layout and lock-free protocol of bips.
//!
//! One producer fills buffers from a fixed pool and publishes them; up to
//! `max_consumers` consumers read the same bytes in place. This crate knows
//! nothing of files, processes or clocks: it works on a raw region (shared
//! memory mapped by the `bips` crate, or plain heap memory in tests) and waits
//! through the [`Wait`]/[`Wake`] traits.
//!
//! * [`descriptor`]: what a sample's bytes are (frame/tensor descriptor,
//!   payload type, typed views), parsed from untrusted bytes;
//! * [`layout`]: the `repr(C)` types, offsets and validation of a region;
//! * [`protocol`]: the producer and consumer state machines (all the
//!   atomics and orderings, in one file);
//! * [`wait`]: waiting strategies.
//!
//! `no_std`, no `alloc`, no system calls. The protocol is model-checked with
//! loom (`--cfg loom`) and run under Miri; see `docs/ARCHITECTURE.md`.
//!
//! ```
//! use bips_core::{Consumer, Geometry, NoWake, Producer, Region, Start};
//! # let geo = Geometry { alignment: 64, ..Geometry::new(4, 256) };
//! # let layout = bips_core::Layout::new(geo).unwrap();
//! # let mut mem = vec![0u128; layout.total_size / 16 + 8];
//! # let base = mem.as_mut_ptr() as *mut u8;
//! # // SAFETY: align_offset(128) < 128 and the vector has 128 spare bytes.
//! # let base = unsafe { base.add(base.align_offset(128)) };
//! // SAFETY: `base` points to `total_size` writable bytes, 128-aligned, that
//! // outlive the region and that nothing else uses.
//! let region = unsafe { Region::format(base, layout.total_size, geo, 1) }.unwrap();
//! let producer = Producer::new(region);
//! let consumer = Consumer::claim(region, 0, Start::Oldest, &NoWake).unwrap();
//!
//! let buf = producer.try_loan().unwrap().unwrap();
//! // ... write up to 256 bytes at region.buffer_ptr(buf) ...
//! let seq = producer.publish(buf, 100, 0, &NoWake).unwrap();
//!
//! let sample = consumer.try_recv().unwrap().unwrap();
//! assert_eq!((sample.seq(), sample.len()), (seq, 100));
//! consumer.release(sample, &NoWake);
//! ```
#![no_std]
#![deny(missing_docs)]

#[cfg(not(target_has_atomic = "64"))]
compile_error!(
    "bips-core needs 64-bit atomics: sequences are 64-bit by design (a 32-bit \
     sequence wraps in about an hour at 1M samples/s). Targets without \
     AtomicU64 (e.g. thumbv7em-none-eabihf) are not supported."
);

// Everything below needs `AtomicU64`: without it, only the compile_error!
// above is reported (not a cascade of unresolved imports after it).
#[cfg(target_has_atomic = "64")]
pub mod descriptor;
#[cfg(target_has_atomic = "64")]
pub mod layout;
#[cfg(target_has_atomic = "64")]
pub mod protocol;
#[cfg(target_has_atomic = "64")]
mod sync;
#[cfg(target_has_atomic = "64")]
pub mod wait;

#[cfg(target_has_atomic = "64")]
pub use descriptor::{DType, Descriptor, DescriptorError, PayloadType, Plane, View, ViewMut};
#[cfg(target_has_atomic = "64")]
pub use layout::{Geometry, Layout, LayoutError, Policy, INLINE_HELD, MAX_HELD};
#[cfg(target_has_atomic = "64")]
pub use protocol::{
    reclaim_consumer, Consumer, ConsumerInfo, Producer, ProtocolError, Received, Region, Start,
};
#[cfg(target_has_atomic = "64")]
pub use wait::{NoWake, Spin, Wait, Wake};
