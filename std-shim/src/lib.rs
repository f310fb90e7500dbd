//! # bips — zero-copy buffers between processes
//!
//! One [`Producer`] fills buffers from a fixed pool in POSIX shared memory and
//! publishes them; up to `max_consumers` [`Consumer`]s, each in any process,
//! read the very same bytes in place. Nothing is copied, nothing is allocated
//! and no system call is made on the hot path; a consumer that waits sleeps on
//! a shared futex and is woken by the next publish.
//!
//! ```
//! use bips::{Consumer, Options, Producer};
//! # let name = format!("doc-lib-{}", std::process::id());
//! // Process A:
//! let producer = Producer::create(&name, &Options::new(4, 1920 * 1080 * 3))?;
//! // Process B (here the same process, for the example):
//! let consumer = Consumer::open(&name)?;
//!
//! let mut frame = producer.loan()?;          // a free buffer, in shared memory
//! frame.as_mut_slice()[0] = 255;             // write the pixels in place
//! frame.meta_mut()[..4].copy_from_slice(&1920u32.to_le_bytes());
//! frame.publish()?;                          // consumers see it now
//!
//! let seen = consumer.recv()?;               // the same bytes, no copy
//! assert_eq!(seen.as_slice()[0], 255);
//! # Ok::<(), bips::Error>(())
//! ```
//!
//! ## Layers
//! * `bips-core` (no_std): the shared layout and the lock-free protocol;
//! * this crate: POSIX shared memory (`/dev/shm/bips.<name>`), shared-futex
//!   waits, liveness locks (Linux OFD byte-range locks: no PIDs, so it works
//!   across containers' PID namespaces), and the API.
//!
//! ## Liveness
//! Every participant holds an OFD lock on one byte of the segment (byte 0 the
//! producer, byte 1+i consumer entry i). The lock dies with its process, kill
//! -9 included. A producer blocked on a dead consumer reclaims its entry and
//! held buffers within ~50 ms; consumers of a dead producer drain what is left
//! and get [`Error::Disconnected`].
//!
//! ## Leaving on a signal
//! A producer removes its channel when dropped, but Ctrl-C (SIGINT), SIGTERM
//! and SIGHUP end a process without running destructors. Call
//! [`cleanup_on_signals`] early in `main` and those signals remove the
//! channels of this process's live producers before it ends (with the
//! signal's usual exit status); an application with its own signal handling
//! calls [`remove_owned_channels`] from its shutdown path instead.
#![deny(missing_docs)]

pub mod aio;
mod cleanup;
mod consumer;
pub mod error;
mod frame;
pub mod monitor;
mod options;
pub(crate) mod os;
mod producer;
pub mod raw;
pub mod reactor;
pub mod trust;
mod waiting;

pub use aio::{
    AsyncWait, LoanFuture, LocalLoanFuture, LocalRecvFuture, RecvFuture, SendSample, SendSampleMut,
};
pub use bips_core::descriptor::{
    DType, Descriptor, DescriptorError, Element, PayloadType, Plane, View, ViewMut,
};
pub use bips_core::{Geometry, LayoutError, Start, MAX_HELD};

/// The most samples a channel lets one consumer hold at once
/// ([`Options::max_held`] accepts 1..=`MAX_HELD_LIMIT`; the default is
/// [`MAX_HELD`]).
pub const MAX_HELD_LIMIT: u32 = bips_core::layout::limits::MAX_HELD;
#[cfg(feature = "signals")]
pub use cleanup::cleanup_on_signals;
pub use cleanup::remove_owned_channels;
pub use consumer::{Consumer, Iter, RawSample, Sample};
pub use error::{Error, Result};
pub use options::{Backend, Backpressure, ConsumerOptions, Options, WaitStrategy, BACKEND_ENV};
pub use os::shm::{list_channels, page_size};
pub use os::socket::{socket_dir, SOCKET_DIR_ENV};
pub use producer::{Producer, RawLoan, SampleMut};
pub use raw::BufferInfo;
pub use reactor::{async_backend, AsyncBackend, NO_WAITV_ENV};
pub use trust::OwnerPolicy;
pub use waiting::now_ns;

/// OFD lock byte held by the producer.
pub(crate) const PRODUCER_LOCK_BYTE: u64 = 0;

/// OFD lock byte held by the consumer of entry `i`.
pub(crate) fn consumer_lock_byte(i: u32) -> u64 {
    1 + u64::from(i)
}

pub(crate) fn map_protocol(e: bips_core::ProtocolError) -> Error {
    use bips_core::ProtocolError as P;
    match e {
        P::Corrupt(what) => Error::Corrupt { what },
        P::Disconnected => Error::Disconnected,
        P::TimedOut => Error::Timeout,
        P::HeldLimit { max } => Error::HeldLimit { max },
        P::EntryBusy => Error::Corrupt {
            what: "consumer entry taken while we held its lock",
        },
        P::OutOfRange | P::NotLoaned => Error::Corrupt {
            what: "buffer state changed under the producer",
        },
        P::TooLong => Error::InvalidOptions("length exceeds the buffer size".into()),
        _ => Error::Corrupt {
            what: "unknown protocol error",
        },
    }
}
