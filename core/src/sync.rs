//! Atomics used by the shared region: `core::sync::atomic` normally, loom's
//! model-checked twins under `--cfg loom`.
//!
//! Everything that lives in shared memory is built from these types, so the
//! loom build checks exactly the orderings the real build uses.

#[cfg(loom)]
pub use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub use core::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// Spin-loop hint: a `PAUSE`/`YIELD` instruction normally, a scheduling point
/// under loom (a spin loop must yield to let loom explore other threads).
#[inline]
pub fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    core::hint::spin_loop();
}
