//! Cross-process futex wait/wake.
//!
//! These are *shared* futexes (`FUTEX_WAIT`/`FUTEX_WAKE` without
//! `FUTEX_PRIVATE_FLAG`): the kernel keys them by the physical page (inode and
//! offset for a file mapping), so a wake in one process reaches a waiter in
//! another, as long as both map the same shared-memory object.
//!
//! * For cross-process use the word **must** live in `MAP_SHARED` memory (a
//!   [`Segment`](super::shm::Segment)). On private memory the calls still work,
//!   but only within one process.
//! * Spurious wake-ups are possible: [`wait`] may return [`WaitOutcome::Woken`]
//!   (or [`WaitOutcome::Interrupted`]) although nobody changed the word or
//!   called [`wake`]. Callers always re-check their condition in a loop.
//! * `atomic-wait` and `std`'s internal futexes are process-private and cannot
//!   serve here.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use rustix::io::Errno;
use rustix::thread::futex::{self, Flags, Timespec};

/// How a [`wait`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// The thread slept and was woken (by [`wake`]/[`wake_all`], or spuriously).
    Woken,
    /// The word did not hold `expected` when the kernel checked it (`EAGAIN`);
    /// the thread did not sleep.
    ValueChanged,
    /// The timeout elapsed (`ETIMEDOUT`).
    TimedOut,
    /// A signal interrupted the wait (`EINTR`), or the kernel reported an
    /// unexpected error; treat it as a spurious wake-up.
    Interrupted,
}

/// Sleeps while `word == expected`, at most `timeout` (relative; `None`: no limit).
///
/// The kernel atomically checks `word == expected` and goes to sleep only if it
/// holds, so a [`wake`] that follows a change of `word` is never lost.
/// `timeout` is measured on `CLOCK_MONOTONIC`; one too large for a `timespec`
/// means no limit.
///
/// `word` must live in `MAP_SHARED` memory for a waker in another process to
/// reach it. Spurious wake-ups are possible: re-check the condition.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
    let ts: Option<Timespec> = timeout.and_then(|d| Timespec::try_from(d).ok());
    match futex::wait(word, Flags::empty(), expected, ts.as_ref()) {
        Ok(()) => WaitOutcome::Woken,
        Err(Errno::AGAIN) => WaitOutcome::ValueChanged,
        Err(Errno::TIMEDOUT) => WaitOutcome::TimedOut,
        Err(Errno::INTR) => WaitOutcome::Interrupted,
        Err(_) => {
            // EFAULT/EINVAL cannot happen for a valid reference and timeout;
            // ENOSYS/EPERM would come from a seccomp filter. Do not spin hot on
            // it: give the CPU away and let the caller re-check.
            std::thread::yield_now();
            WaitOutcome::Interrupted
        }
    }
}

/// Wakes at most `n` threads (in any process) waiting on `word`; returns how
/// many were woken.
///
/// `n` above `i32::MAX` is treated as `i32::MAX` (the kernel reads it as `int`).
pub fn wake(word: &AtomicU32, n: u32) -> usize {
    let n = n.min(i32::MAX as u32);
    futex::wake(word, Flags::empty(), n).unwrap_or(0)
}

/// Wakes every thread (in any process) waiting on `word`; returns how many
/// were woken.
pub fn wake_all(word: &AtomicU32) -> usize {
    wake(word, i32::MAX as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn wrong_expected_value_returns_immediately() {
        let w = AtomicU32::new(5);
        let t = Instant::now();
        assert_eq!(
            wait(&w, 6, Some(Duration::from_secs(5))),
            WaitOutcome::ValueChanged
        );
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn timeout_elapses() {
        let w = AtomicU32::new(0);
        let t = Instant::now();
        let mut outcome = wait(&w, 0, Some(Duration::from_millis(20)));
        // A signal may interrupt the wait; nothing else may end it early.
        while outcome == WaitOutcome::Interrupted {
            outcome = wait(&w, 0, Some(Duration::from_millis(20)));
        }
        assert_eq!(outcome, WaitOutcome::TimedOut);
        assert!(t.elapsed() >= Duration::from_millis(20));
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn wake_without_waiters_wakes_nobody() {
        let w = AtomicU32::new(0);
        assert_eq!(wake(&w, 1), 0);
        assert_eq!(wake_all(&w), 0);
        assert_eq!(wake(&w, u32::MAX), 0);
    }

    #[test]
    fn another_thread_wakes_a_waiter() {
        let w = Arc::new(AtomicU32::new(0));
        let woken = Arc::new(AtomicU32::new(0));
        let waiter = {
            let (w, woken) = (Arc::clone(&w), Arc::clone(&woken));
            std::thread::spawn(move || {
                // The usual loop: sleep while the word is 0.
                while w.load(Ordering::Acquire) == 0 {
                    if wait(&w, 0, Some(Duration::from_secs(10))) == WaitOutcome::Woken {
                        woken.fetch_add(1, Ordering::Relaxed);
                    }
                }
                w.load(Ordering::Acquire)
            })
        };
        // 1. Wake without changing the word until the kernel reports that it
        //    woke a sleeper: proves `wake` reaches a thread asleep in `wait`.
        let deadline = Instant::now() + Duration::from_secs(10);
        while wake(&w, 1) == 0 {
            assert!(Instant::now() < deadline, "the waiter never went to sleep");
            std::thread::sleep(Duration::from_millis(1));
        }
        // 2. The usual publish: change the word, then wake.
        w.store(7, Ordering::Release);
        wake_all(&w);
        assert_eq!(waiter.join().unwrap(), 7);
        assert!(woken.load(Ordering::Relaxed) >= 1);
    }
}
