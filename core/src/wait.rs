//! How a blocked party waits and how it is woken, kept behind two traits so the
//! protocol never names the OS.
//!
//! The std shim supplies a shared-futex [`Wake`] and [`Wait`]s that sleep on a
//! futex with deadlines and liveness checks; the loom tests supply a
//! condvar-based futex model; [`Spin`] is the never-sleeping strategy for
//! real-time loops.

use crate::sync::{spin_hint, AtomicU32};

/// Wakes every party asleep on a futex word of the shared region.
pub trait Wake {
    /// Wakes all waiters blocked on `word` (the protocol has already changed
    /// `word`, so a waiter that has not yet gone to sleep will not).
    fn wake(&self, word: &AtomicU32);
}

/// A strategy for waiting until the protocol has something to do.
pub trait Wait {
    /// Whether [`Wait::wait`] may put the thread to sleep. A strategy that
    /// never sleeps is not counted as a sleeper, so publishers skip the wake-up
    /// for it (the hot path stays free of system calls).
    fn sleeps(&self) -> bool {
        true
    }

    /// Called when there is nothing to do yet. A sleeping strategy blocks while
    /// `*word == expected` (futex semantics); returning early or spuriously is
    /// always allowed, since the protocol re-checks. Returns `false` to give up
    /// (a timeout or a cancel), `true` to try again.
    ///
    /// The protocol calls `sleeps()` right before each `wait`, and counts the
    /// caller as a sleeper only when it answered `true`. A `wait` that follows
    /// `sleeps() == false` must therefore not block: nobody would wake it.
    fn wait(&mut self, word: &AtomicU32, expected: u32) -> bool;
}

/// Never sleeps: busy-polls with a CPU spin hint, for loops that must not
/// enter the kernel. `limit` bounds the number of polls (`None`: forever).
///
/// ```
/// use bips_core::{Spin, Wait};
/// use core::sync::atomic::AtomicU32;
/// let word = AtomicU32::new(0);
/// let mut spin = Spin::with_limit(3);
/// assert!(!spin.sleeps());
/// assert!(spin.wait(&word, 0) && spin.wait(&word, 0) && spin.wait(&word, 0));
/// assert!(!spin.wait(&word, 0)); // budget spent: give up
/// ```
#[derive(Clone, Debug, Default)]
pub struct Spin {
    polls: u64,
    limit: Option<u64>,
}

impl Spin {
    /// Spins forever.
    pub fn new() -> Spin {
        Spin::default()
    }

    /// Spins at most `polls` times in total (across calls), then gives up.
    pub fn with_limit(polls: u64) -> Spin {
        Spin {
            polls: 0,
            limit: Some(polls),
        }
    }
}

impl Wait for Spin {
    fn sleeps(&self) -> bool {
        false
    }

    fn wait(&mut self, _word: &AtomicU32, _expected: u32) -> bool {
        if self.limit.is_some_and(|l| self.polls >= l) {
            return false;
        }
        self.polls += 1;
        spin_hint();
        true
    }
}

/// A [`Wake`] that does nothing: for regions where no party ever sleeps
/// (every waiter uses [`Spin`]), such as in-process tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoWake;

impl Wake for NoWake {
    fn wake(&self, _word: &AtomicU32) {}
}
