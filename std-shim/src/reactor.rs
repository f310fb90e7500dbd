//! The doorbell reactor: how an async wait sleeps without a thread of its own.
//!
//! An async receive (or loan) that finds nothing arms the protocol's sleep
//! handshake (`bips_core::Consumer::arm_wait`), which yields a futex word (the
//! channel's `doorbell`, or `space_bell` for a loan) and the value it held.
//! It then registers `(word, value, deadline, Waker)` here and returns
//! `Pending`. A registration is one-shot: it fires (its `Waker` is woken and
//! it is removed) once the word changes, or at its deadline, and the future,
//! when polled again, re-checks and registers anew.
//!
//! * **futex_waitv** (Linux >= 5.16): one process-wide thread, started on the
//!   first registration, blocks in `futex_waitv(2)` on every registered word
//!   (shared futexes: a publish in another process wakes it) plus one
//!   process-local word that says "the registrations changed". Up to
//!   [`REACTOR_CAPACITY`] registrations at once; more go to the fallback.
//!   The reactor never reads a registered word itself (it may belong to a
//!   mapping unmapped since): the kernel compares the values, and an address
//!   that faults only fires its registration.
//! * **Threads** (older kernels, such as the 5.10/5.15 of NVIDIA's L4T, where
//!   `futex_waitv` answers `ENOSYS`; or `BIPS_ASYNC_NO_WAITV=1`): each pending
//!   registration is one blocking `FUTEX_WAIT` on a helper thread, reused
//!   from a pool (a helper idle for [`HELPER_IDLE`] exits).
//!
//! Both are per process: a child made by `fork` (Python's `multiprocessing`,
//! a pre-fork server) starts its own on its first async wait, as the
//! parent's threads do not exist there (a `pthread_atfork` child handler
//! counts forks).
//!
//! Deadlines are `CLOCK_MONOTONIC` nanoseconds ([`now_ns`]); async waits use
//! them for the liveness slice (a dead producer or consumer does not ring a
//! doorbell) and for caller timeouts.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::task::Waker;
use std::time::Duration;

use rustix::io::Errno;
use rustix::thread::futex::{self, Flags, Timespec, WaitFlags, WaitPtr, WaitvFlags};
use rustix::thread::futex::{ClockId, Wait as FutexWait};

use crate::waiting::now_ns;

/// Words one `futex_waitv` takes (the kernel's `FUTEX_WAITV_MAX`).
const WAITV_MAX: usize = 128;

/// Registrations the reactor thread serves at once (one word of the 128 is
/// its own "registrations changed" futex); further ones go to helper threads.
pub const REACTOR_CAPACITY: usize = WAITV_MAX - 1;

/// Set to `1` to make async waits use helper threads instead of
/// `futex_waitv` (what a kernel older than 5.16 gets anyway): for tests and
/// for sandboxes that filter the system call.
pub const NO_WAITV_ENV: &str = "BIPS_ASYNC_NO_WAITV";

/// How long an idle helper thread (fallback) waits for work before exiting.
pub const HELPER_IDLE: Duration = Duration::from_secs(5);

/// How async waits ([`crate::Consumer::recv_async`],
/// [`crate::Producer::loan_async`]) sleep in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AsyncBackend {
    /// One reactor thread per process in `futex_waitv` on every pending
    /// wait's word (up to [`REACTOR_CAPACITY`], then helper threads).
    FutexWaitv,
    /// One blocking helper thread per pending wait (kernel without
    /// `futex_waitv`, or [`NO_WAITV_ENV`] set).
    Threads,
}

/// The backend async waits use in this process, decided once (on first use)
/// from [`NO_WAITV_ENV`] and whether the kernel has `futex_waitv`.
///
/// ```
/// let b = bips::async_backend();
/// assert!(matches!(b, bips::AsyncBackend::FutexWaitv | bips::AsyncBackend::Threads));
/// ```
pub fn async_backend() -> AsyncBackend {
    match reactor() {
        Some(_) => AsyncBackend::FutexWaitv,
        None => AsyncBackend::Threads,
    }
}

/// A pending one-shot wait. Dropping it cancels the wait (a waker not yet
/// woken is never woken); it never blocks.
pub(crate) struct Registration {
    id: u64,
    via: Via,
}

enum Via {
    Reactor(&'static Reactor),
    Helper(Arc<Job>),
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Wakes `waker` once `word` no longer holds `expected` (after a futex wake
/// of it), or at `deadline_ns` ([`now_ns`] clock), whichever comes first;
/// spurious wakes are possible. `word` must be in `MAP_SHARED` memory for a
/// waker in another process to reach it.
pub(crate) fn register(
    word: &AtomicU32,
    expected: u32,
    deadline_ns: u64,
    waker: &Waker,
) -> Registration {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let addr = word as *const AtomicU32 as usize;
    if let Some(r) = reactor() {
        if r.add(Reg {
            id,
            addr,
            expected,
            deadline_ns,
            waker: waker.clone(),
        }) {
            return Registration {
                id,
                via: Via::Reactor(r),
            };
        }
    }
    Registration {
        id,
        via: Via::Helper(helpers().submit(addr, expected, deadline_ns, waker.clone())),
    }
}

impl Registration {
    /// Whether this registration still waits for the same `expected` value
    /// (it has not fired); then only its waker is refreshed and `true` is
    /// answered, else `false` (register anew).
    pub(crate) fn refresh(&self, expected: u32, waker: &Waker) -> bool {
        match &self.via {
            Via::Reactor(r) => {
                let mut regs = r.lock();
                match regs.iter_mut().find(|g| g.id == self.id) {
                    Some(g) if g.expected == expected => {
                        if !g.waker.will_wake(waker) {
                            g.waker = waker.clone();
                        }
                        true
                    }
                    _ => false,
                }
            }
            Via::Helper(job) => {
                let mut st = job.lock();
                let live = job.expected == expected && !st.cancelled;
                match st.waker.as_mut() {
                    Some(w) if live => {
                        if !w.will_wake(waker) {
                            *w = waker.clone();
                        }
                        true
                    }
                    _ => false,
                }
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        match &self.via {
            Via::Reactor(r) => r.remove(self.id),
            Via::Helper(job) => {
                let mut st = job.lock();
                st.cancelled = true;
                st.waker = None;
            }
        }
    }
}

// ------------------------------------------------------------------ reactor

struct Reg {
    id: u64,
    addr: usize,
    expected: u32,
    deadline_ns: u64,
    waker: Waker,
}

struct Reactor {
    regs: Mutex<Vec<Reg>>,
    /// Bumped (and futex-woken) when a registration is added or cancelled.
    changed: AtomicU32,
}

fn reactor() -> Option<&'static Reactor> {
    static USE_WAITV: OnceLock<bool> = OnceLock::new();
    static REACTOR: PerProcess<Option<&'static Reactor>> = PerProcess::new();
    let on = *USE_WAITV.get_or_init(|| {
        let off = std::env::var(NO_WAITV_ENV).is_ok_and(|v| !v.is_empty() && v != "0");
        !off && has_waitv()
    });
    if !on {
        return None;
    }
    *REACTOR.get(|| {
        let r: &'static Reactor = Box::leak(Box::new(Reactor {
            regs: Mutex::new(Vec::new()),
            changed: AtomicU32::new(0),
        }));
        std::thread::Builder::new()
            .name("bips-reactor".into())
            .spawn(move || r.run())
            .ok()
            .map(|_| r)
    })
}

/// Bumped in the child of every `fork` (a `pthread_atfork` handler).
static FORKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn forked_child() {
    // Async-signal-safe: one atomic add.
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// A process-wide service whose threads are its life (the reactor, the
/// helper pool): made on first use, and made anew in a child of `fork`,
/// where the threads the parent's instance relies on do not exist (waits
/// registered with it would never be served).
struct PerProcess<T: 'static> {
    now: AtomicPtr<(u64, T)>,
    make: Mutex<()>,
}

impl<T: 'static> PerProcess<T> {
    const fn new() -> PerProcess<T> {
        PerProcess {
            now: AtomicPtr::new(std::ptr::null_mut()),
            make: Mutex::new(()),
        }
    }

    fn current(&self) -> Option<&'static T> {
        let p = self.now.load(Ordering::Acquire);
        // SAFETY: a non-null pointer stored here comes from `Box::leak`
        // (below) and is never freed; Acquire pairs with its Release store.
        let (forks, v) = unsafe { p.as_ref() }?;
        (*forks == FORKS.load(Ordering::Relaxed)).then_some(v)
    }

    fn get(&self, make: impl FnOnce() -> T) -> &'static T {
        if let Some(v) = self.current() {
            return v;
        }
        static ATFORK: std::sync::Once = std::sync::Once::new();
        ATFORK.call_once(|| {
            // SAFETY: registers a handler that only does an atomic add (safe
            // in the child of a multithreaded fork); no prepare/parent ones.
            unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
        });
        let _g = self.make.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = self.current() {
            return v;
        }
        // The parent's instance (if any) is leaked in a fork child: its
        // registrations belong to tasks of the parent.
        let inst: &'static mut (u64, T) =
            Box::leak(Box::new((FORKS.load(Ordering::Relaxed), make())));
        self.now.store(inst, Ordering::Release);
        &inst.1
    }
}

/// Whether the kernel answers `futex_waitv` (a word that differs from the
/// expected value: `EAGAIN` at once when the call exists).
fn has_waitv() -> bool {
    let word = AtomicU32::new(1);
    let w = wait_entry(&word as *const AtomicU32 as usize, 0, true);
    !matches!(
        futex::waitv(&[w], WaitvFlags::empty(), None, ClockId::Monotonic),
        Err(Errno::NOSYS) | Err(Errno::PERM) | Err(Errno::INVAL)
    )
}

fn wait_entry(addr: usize, expected: u32, private: bool) -> FutexWait {
    let mut w = FutexWait::new();
    w.val = u64::from(expected);
    w.uaddr = WaitPtr::new(addr as *mut std::ffi::c_void);
    // Shared (no FUTEX2_PRIVATE): keyed by the page, so a wake from another
    // process that maps the same object reaches us.
    w.flags = if private {
        WaitFlags::SIZE_U32 | WaitFlags::PRIVATE
    } else {
        WaitFlags::SIZE_U32
    };
    w
}

fn timespec(ns: u64) -> Timespec {
    Timespec {
        tv_sec: (ns / 1_000_000_000) as _,
        tv_nsec: (ns % 1_000_000_000) as _,
    }
}

impl Reactor {
    fn lock(&self) -> MutexGuard<'_, Vec<Reg>> {
        self.regs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `reg` unless the reactor is full; wakes the reactor thread.
    fn add(&self, reg: Reg) -> bool {
        {
            let mut regs = self.lock();
            if regs.len() >= REACTOR_CAPACITY {
                return false;
            }
            regs.push(reg);
        }
        self.kick();
        true
    }

    fn remove(&self, id: u64) {
        let removed = {
            let mut regs = self.lock();
            regs.iter()
                .position(|g| g.id == id)
                .map(|i| regs.swap_remove(i))
        };
        if removed.is_some() {
            // Its word leaves the reactor's wait set now rather than at the
            // next event (the mapping may go away soon).
            self.kick();
        }
    }

    fn kick(&self) {
        self.changed.fetch_add(1, Ordering::Release);
        let _ = futex::wake(&self.changed, Flags::PRIVATE, 1);
    }

    /// Removes the registrations `pick` selects and wakes their wakers
    /// (outside the lock).
    fn fire(&self, mut pick: impl FnMut(&Reg) -> bool) {
        let fired: Vec<Waker> = {
            let mut regs = self.lock();
            let mut out = Vec::new();
            let mut i = 0;
            while i < regs.len() {
                if pick(&regs[i]) {
                    out.push(regs.swap_remove(i).waker);
                } else {
                    i += 1;
                }
            }
            out
        };
        for w in fired {
            wake_guarded(w);
        }
    }

    fn run(&'static self) {
        let mut waits: Vec<FutexWait> = Vec::with_capacity(WAITV_MAX);
        let mut ids: Vec<u64> = Vec::with_capacity(WAITV_MAX);
        loop {
            let changed = self.changed.load(Ordering::Acquire);
            let now = now_ns();
            self.fire(|g| g.deadline_ns <= now);
            let mut next = u64::MAX;
            waits.clear();
            ids.clear();
            waits.push(wait_entry(
                &self.changed as *const AtomicU32 as usize,
                changed,
                true,
            ));
            for g in self.lock().iter() {
                waits.push(wait_entry(g.addr, g.expected, false));
                ids.push(g.id);
                next = next.min(g.deadline_ns);
            }
            let ts = (next != u64::MAX).then(|| timespec(next));
            match futex::waitv(&waits, WaitvFlags::empty(), ts.as_ref(), ClockId::Monotonic) {
                Ok(0) => {}
                Ok(i) => {
                    let id = ids[i - 1];
                    self.fire(|g| g.id == id);
                }
                Err(Errno::AGAIN) | Err(Errno::FAULT) => {
                    if self.changed.load(Ordering::Acquire) == changed {
                        // Some registered word changed (or its mapping is
                        // gone): find which, one kernel compare each.
                        self.probe(&waits[1..], &ids);
                    }
                }
                Err(Errno::TIMEDOUT) | Err(Errno::INTR) => {}
                Err(_) => {
                    // Unexpected (a seccomp filter changing its mind?): fire
                    // everything, the futures re-check; do not spin hot.
                    self.fire(|_| true);
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// Fires every registration among `ids` whose word no longer holds its
    /// value or cannot be read: `futex_waitv` on that word alone with a
    /// deadline already past answers `ETIMEDOUT` only when it still holds.
    fn probe(&self, waits: &[FutexWait], ids: &[u64]) {
        let past = timespec(0);
        let stale: Vec<u64> = waits
            .iter()
            .zip(ids)
            .filter(|(w, _)| {
                !matches!(
                    futex::waitv(
                        std::slice::from_ref(*w),
                        WaitvFlags::empty(),
                        Some(&past),
                        ClockId::Monotonic
                    ),
                    Err(Errno::TIMEDOUT)
                )
            })
            .map(|(_, &id)| id)
            .collect();
        if !stale.is_empty() {
            self.fire(|g| stale.contains(&g.id));
        }
    }
}

// ------------------------------------------------------------------ helpers

struct JobState {
    waker: Option<Waker>,
    cancelled: bool,
}

struct Job {
    addr: usize,
    expected: u32,
    deadline_ns: u64,
    state: Mutex<JobState>,
}

impl Job {
    fn lock(&self) -> MutexGuard<'_, JobState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fire(&self) {
        let w = self.lock().waker.take();
        if let Some(w) = w {
            wake_guarded(w);
        }
    }
}

struct Helpers {
    queue: Mutex<(VecDeque<Arc<Job>>, usize)>,
    cv: Condvar,
}

fn helpers() -> &'static Helpers {
    static HELPERS: PerProcess<Helpers> = PerProcess::new();
    HELPERS.get(|| Helpers {
        queue: Mutex::new((VecDeque::new(), 0)),
        cv: Condvar::new(),
    })
}

impl Helpers {
    /// Queues a wait for an idle helper, starting one if none is idle.
    fn submit(
        &'static self,
        addr: usize,
        expected: u32,
        deadline_ns: u64,
        waker: Waker,
    ) -> Arc<Job> {
        let job = Arc::new(Job {
            addr,
            expected,
            deadline_ns,
            state: Mutex::new(JobState {
                waker: Some(waker),
                cancelled: false,
            }),
        });
        let spawn = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.0.push_back(job.clone());
            // Each idle helper takes one queued job.
            q.0.len() > q.1
        };
        if spawn {
            let started = std::thread::Builder::new()
                .name("bips-async-wait".into())
                .spawn(move || self.serve());
            if started.is_err() {
                // No thread to wait with: fire now; the future re-checks
                // (it then polls, which is the best left to do).
                job.fire();
            }
        } else {
            self.cv.notify_one();
        }
        job
    }

    fn serve(&'static self) {
        // Whether this helper is counted idle already (it counts itself
        // back before waking a job's waker, so the future's next
        // registration finds it instead of starting another helper).
        let mut counted = false;
        loop {
            let job = {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                if !counted {
                    q.1 += 1;
                }
                loop {
                    if let Some(j) = q.0.pop_front() {
                        q.1 -= 1;
                        break Some(j);
                    }
                    let (g, t) = self
                        .cv
                        .wait_timeout(q, HELPER_IDLE)
                        .unwrap_or_else(|e| e.into_inner());
                    q = g;
                    if t.timed_out() && q.0.is_empty() {
                        q.1 -= 1;
                        break None;
                    }
                }
            };
            let Some(job) = job else { return };
            let fire = wait_job(&job);
            self.queue.lock().unwrap_or_else(|e| e.into_inner()).1 += 1;
            counted = true;
            if fire {
                job.fire();
            }
        }
    }
}

/// Blocks this helper until the job's word changes, its deadline passes, or
/// (noticed at the deadline at the latest) it is cancelled. Returns whether
/// to fire it.
fn wait_job(job: &Job) -> bool {
    loop {
        if job.lock().cancelled {
            return false;
        }
        let now = now_ns();
        if now >= job.deadline_ns {
            return true;
        }
        let left = job.deadline_ns - now;
        let ts = libc::timespec {
            tv_sec: (left / 1_000_000_000) as _,
            tv_nsec: (left % 1_000_000_000) as _,
        };
        // SAFETY: FUTEX_WAIT (shared) reads the 4 bytes at `addr` inside the
        // kernel only, which checks the address itself (EFAULT when it is no
        // longer mapped: the registrant's mapping may be gone after a
        // cancel); it writes nothing; `ts` is a valid timespec for the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                job.addr as *const u32,
                libc::FUTEX_WAIT,
                job.expected,
                &ts as *const libc::timespec,
            )
        };
        let err = std::io::Error::last_os_error().raw_os_error();
        match (r, err) {
            (-1, Some(libc::ETIMEDOUT)) | (-1, Some(libc::EINTR)) => continue,
            // Woken, the word changed (EAGAIN), or unreadable (EFAULT).
            _ => return true,
        }
    }
}

/// Wakes `w` on a reactor or helper thread. A `Waker` is the executor's
/// code: one that panics must not take the shared thread (and with it every
/// later async wait of the process) down, so the panic is caught and
/// reported once on stderr. That one wake-up is lost (its waker failed);
/// every other wait of the process is still served.
fn wake_guarded(w: Waker) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.wake())).is_err() {
        static REPORTED: std::sync::Once = std::sync::Once::new();
        REPORTED.call_once(|| {
            eprintln!("bips: an async waker panicked on the reactor thread; the reactor goes on")
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn wait_for(cond: impl Fn() -> bool) -> bool {
        let t = std::time::Instant::now();
        while !cond() {
            if t.elapsed() > Duration::from_secs(5) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    #[test]
    fn fires_on_change_and_deadline_not_after_cancel() {
        let word = Box::leak(Box::new(AtomicU32::new(0)));
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let far = now_ns() + 10_000_000_000;
        let r = register(word, 0, far, &waker);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "fired with no change");
        word.store(1, Ordering::Release);
        crate::os::futex::wake_all(word);
        assert!(wait_for(|| count.0.load(Ordering::SeqCst) == 1));
        assert!(!r.refresh(0, &waker), "a fired registration is gone");
        drop(r);
        // A deadline fires without a change.
        let r = register(word, 1, now_ns() + 20_000_000, &waker);
        assert!(wait_for(|| count.0.load(Ordering::SeqCst) == 2));
        drop(r);
        // A cancelled registration never fires.
        let r = register(word, 1, far, &waker);
        drop(r);
        word.store(2, Ordering::Release);
        crate::os::futex::wake_all(word);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
    }
    struct Panics;
    impl Wake for Panics {
        fn wake(self: Arc<Self>) {
            panic!("a waker that panics (test)");
        }
    }

    #[test]
    fn a_panicking_waker_does_not_stop_the_reactor() {
        let word = Box::leak(Box::new(AtomicU32::new(0)));
        let bad = Waker::from(Arc::new(Panics));
        let r = register(word, 0, now_ns() + 10_000_000, &bad);
        std::thread::sleep(Duration::from_millis(60));
        drop(r);
        // The same thread(s) still serve the next wait.
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let good = Waker::from(count.clone());
        let r = register(word, 0, now_ns() + 10_000_000_000, &good);
        word.store(1, Ordering::Release);
        crate::os::futex::wake_all(word);
        assert!(
            wait_for(|| count.0.load(Ordering::SeqCst) == 1),
            "no wake-up after a waker panicked"
        );
        drop(r);
    }
}
