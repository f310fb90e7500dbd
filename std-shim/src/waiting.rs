//! The OS side of waiting: shared-futex wake-ups, deadlines and liveness
//! checks, plugged into `bips-core` through its `Wait`/`Wake` traits.

use std::cell::Cell;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use crate::options::WaitStrategy;
use crate::os::futex;

/// How often a blocked party checks that its peers are alive. Bounds the time
/// a producer waits on a dead consumer (L1) and a consumer on a dead producer
/// (L2).
pub(crate) const LIVENESS_SLICE: Duration = Duration::from_millis(50);

/// Wakes sleepers with a shared (not process-private) futex wake.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FutexWake;

impl bips_core::Wake for FutexWake {
    fn wake(&self, word: &AtomicU32) {
        futex::wake_all(word);
    }
}

/// The producer's doorbell wake: a shared futex wake that also counts the
/// wakes that found nobody asleep (since the count was last reset).
///
/// A wake that finds nobody is normal now and then (a consumer between
/// setting its sleeper bit and entering the kernel, or one already woken by
/// the previous publish); it may also mean a consumer died asleep and its bit
/// keeps publishes ringing. The producer then checks the marked sleepers'
/// liveness (see `Producer::after_publish`). Wakes that do wake someone do
/// not reset the count: a dead sleeper next to a live one that sleeps every
/// other publish must still be found.
#[derive(Debug, Default)]
pub(crate) struct DoorbellWake {
    missed: Cell<u32>,
}

impl DoorbellWake {
    /// Wakes that woke nobody since the last [`DoorbellWake::reset`].
    pub(crate) fn missed(&self) -> u32 {
        self.missed.get()
    }

    /// Starts counting anew.
    pub(crate) fn reset(&self) {
        self.missed.set(0);
    }
}

impl bips_core::Wake for DoorbellWake {
    fn wake(&self, word: &AtomicU32) {
        if futex::wake_all(word) == 0 {
            self.missed.set(self.missed.get().saturating_add(1));
        }
    }
}

/// A `Wait` for one blocking call: the strategy, the deadline, and a liveness
/// check run at most every [`LIVENESS_SLICE`] while waiting.
pub(crate) struct ShimWait<'a> {
    strategy: WaitStrategy,
    start: Instant,
    deadline: Option<Instant>,
    next_check: Instant,
    polls: u32,
    /// The answer of the last `sleeps()`: `wait` must not block unless the
    /// protocol counted us as a sleeper, or a publish would not wake us.
    counted: std::cell::Cell<bool>,
    check: &'a mut dyn FnMut(),
}

impl<'a> ShimWait<'a> {
    pub(crate) fn new(
        strategy: WaitStrategy,
        timeout: Option<Duration>,
        check: &'a mut dyn FnMut(),
    ) -> ShimWait<'a> {
        let now = Instant::now();
        ShimWait {
            strategy,
            start: now,
            deadline: timeout.map(|t| now + t),
            next_check: now + LIVENESS_SLICE,
            polls: 0,
            counted: std::cell::Cell::new(false),
            check,
        }
    }

    fn spinning(&self) -> bool {
        match self.strategy {
            WaitStrategy::Spin => true,
            WaitStrategy::Park => false,
            WaitStrategy::SpinThenPark { spin } => self.start.elapsed() < spin,
        }
    }

    /// Runs the liveness check when due; `false` once the deadline passed.
    fn tick(&mut self, now: Instant) -> bool {
        if now >= self.next_check {
            self.next_check = now + LIVENESS_SLICE;
            (self.check)();
        }
        self.deadline.is_none_or(|d| now < d)
    }
}

impl bips_core::Wait for ShimWait<'_> {
    fn sleeps(&self) -> bool {
        let sleeps = !self.spinning();
        self.counted.set(sleeps);
        sleeps
    }

    fn wait(&mut self, word: &AtomicU32, expected: u32) -> bool {
        // Decide by what `sleeps` answered, not by the clock again: the spin
        // phase may have ended in between, and an uncounted sleeper is never
        // woken by a publish.
        if !self.counted.get() {
            std::hint::spin_loop();
            self.polls = self.polls.wrapping_add(1);
            // Reading the clock costs ~20 ns: do it every 64 polls.
            if self.polls % 64 != 0 {
                return true;
            }
            return self.tick(Instant::now());
        }
        let now = Instant::now();
        let mut slice = self.next_check.saturating_duration_since(now);
        if let Some(d) = self.deadline {
            slice = slice.min(d.saturating_duration_since(now));
        }
        if !slice.is_zero() {
            futex::wait(word, expected, Some(slice));
        }
        self.tick(Instant::now())
    }
}

/// Nanoseconds of `CLOCK_MONOTONIC` (one clock for every process on the
/// machine, containers included; read through the vDSO, no system call).
pub fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Nanoseconds of `CLOCK_MONOTONIC_COARSE`: the time of the last timer tick
/// (1-4 ms resolution), read through the vDSO in a few ns. Good enough for
/// "has a liveness slice passed", cheap enough for every empty poll.
pub(crate) fn coarse_now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use bips_core::Wait;

    /// Regression: `sleeps()` answered "spinning" (so the protocol did not
    /// count us as a sleeper), the spin phase then ran out before `wait()`;
    /// `wait()` must not park, since no publish would wake it (it used to
    /// sleep a whole liveness slice).
    #[test]
    fn uncounted_waiter_never_parks() {
        let word = AtomicU32::new(0);
        let mut check = || {};
        let spin = Duration::from_millis(5);
        let mut w = ShimWait::new(WaitStrategy::SpinThenPark { spin }, None, &mut check);
        assert!(!w.sleeps(), "still in the spin phase");
        std::thread::sleep(spin * 2); // the spin phase ends here
        let t = Instant::now();
        assert!(w.wait(&word, 0));
        assert!(
            t.elapsed() < LIVENESS_SLICE / 2,
            "parked for {:?} without being counted",
            t.elapsed()
        );
        // Counted now: it may park (the word is unchanged, so it sleeps until
        // the slice ends or a wake arrives).
        assert!(w.sleeps());
    }

    #[test]
    fn deadline_gives_up() {
        let word = AtomicU32::new(0);
        let mut check = || {};
        let mut w = ShimWait::new(
            WaitStrategy::Park,
            Some(Duration::from_millis(20)),
            &mut check,
        );
        let t = Instant::now();
        while w.sleeps() && w.wait(&word, 0) {}
        assert!(t.elapsed() >= Duration::from_millis(20));
    }
}
