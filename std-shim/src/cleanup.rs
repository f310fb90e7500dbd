//! Leaving cleanly on a signal: the channels this process's producers own
//! are removed when it is told to go (SIGINT, SIGTERM, SIGHUP).
//!
//! A [`Producer`](crate::Producer) removes its channel when it is dropped,
//! but a signal's default action ends the process without running any
//! destructor: Ctrl-C would leave the whole segment in `/dev/shm` (tens of
//! MB for video frames, in a Docker `/dev/shm` of 64 MB). So every live
//! producer of this process is listed here — its name and the identity
//! `(st_dev, st_ino)` of its object, so that only that very object is ever
//! removed, never one another process made under the same name since — and
//! [`remove_owned_channels`] closes and unlinks all of them.
//! [`cleanup_on_signals`] calls it from a watcher thread when a signal
//! arrives, then ends the process the way the signal would have.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bips_core::Region;
use rustix::fs as rfs;

use crate::os::shm::{ChannelName, Segment};
use crate::os::socket::{Files, Server};
use crate::waiting::FutexWake;

/// A channel a live producer of this process owns.
struct Owned {
    /// The producer's id (`Producer::id`).
    token: u64,
    name: ChannelName,
    /// `(st_dev, st_ino)` of the producer's object.
    file: Option<(u64, u64)>,
    /// A memfd channel's socket (path, identity) and lock file.
    socket: Option<Files>,
    /// The producer's mapping (address, length): valid while registered,
    /// since a producer deregisters in `Drop` before its mapping goes.
    base: usize,
    len: usize,
}

struct State {
    owned: Vec<Owned>,
    /// `Producer::create` calls under way: a channel being created is not
    /// registered yet, so a cleanup waits for them (briefly).
    creating: usize,
    /// Set by the cleanup that precedes the process's end: creations that
    /// start after it wait for that end.
    leaving: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    owned: Vec::new(),
    creating: 0,
    leaving: false,
});
static CHANGED: Condvar = Condvar::new();

/// How long a cleanup waits for creations under way to finish.
const CREATE_GRACE: Duration = Duration::from_secs(2);

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Held by `Producer::create` from start to finish.
pub(crate) struct Creating(());

impl Creating {
    /// Counts a creation under way (waits while the process is leaving).
    pub(crate) fn begin() -> Creating {
        let mut st = state();
        while st.leaving {
            st = CHANGED.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        st.creating += 1;
        Creating(())
    }

    /// Lists the channel of producer `token`, published under its name in
    /// `seg` (call once it is published, before the producer is returned).
    pub(crate) fn register(&self, token: u64, seg: &Segment, server: Option<&Server>) {
        #[allow(clippy::unnecessary_cast)] // `c_ulong` on some ABIs
        let file = rfs::fstat(seg.fd())
            .ok()
            .map(|st| (st.st_dev as u64, st.st_ino as u64));
        state().owned.push(Owned {
            token,
            name: seg.name().clone(),
            file,
            socket: server.map(Server::files),
            base: seg.as_ptr() as usize,
            len: seg.len(),
        });
    }
}

impl Drop for Creating {
    fn drop(&mut self) {
        let mut st = state();
        st.creating -= 1;
        drop(st);
        CHANGED.notify_all();
    }
}

/// Forgets producer `token`'s channel (its `Drop` removed it). Waits while a
/// cleanup is using its mapping.
pub(crate) fn deregister(token: u64) {
    state().owned.retain(|o| o.token != token);
}

/// Closes and removes every channel owned by a live [`Producer`] of this
/// process; answers how many it removed.
///
/// Each channel is marked closed (its consumers drain what is left, then get
/// [`Error::Disconnected`](crate::Error::Disconnected)) and its name removed
/// if it still names the very object the producer created. The
/// [`Producer`]s stay valid objects, but their channels are gone: drop them
/// and leave. Creations under way are waited for (up to 2 s) so that a
/// channel being created is not missed.
///
/// [`cleanup_on_signals`] calls this when a signal arrives. Call it yourself
/// from your own shutdown path when your application handles signals itself
/// (a `tokio::signal` task, a `ctrlc` handler, an event loop's signalfd);
/// never from inside a signal handler (it takes a lock).
///
/// [`Producer`]: crate::Producer
pub fn remove_owned_channels() -> usize {
    remove_all(false)
}

fn remove_all(stay_leaving: bool) -> usize {
    let mut st = state();
    st.leaving = true;
    let deadline = Instant::now() + CREATE_GRACE;
    while st.creating > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        st = CHANGED
            .wait_timeout(st, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
    let owned = std::mem::take(&mut st.owned);
    let mut removed = 0;
    for o in &owned {
        // SAFETY: `base`/`len` are the mapping of a producer that is still
        // registered, and we hold the lock its `Drop` needs to deregister
        // before its mapping goes: the mapping lives until we release it.
        // `attach` validates the header before anything is touched; closing
        // is a pair of atomic stores and a futex wake, fine from any thread.
        if let Ok(region) = unsafe { Region::attach(o.base as *mut u8, o.len) } {
            region.close(&FutexWake);
        }
        if unlink_if_same(o) {
            removed += 1;
        }
    }
    if !stay_leaving {
        st.leaving = false;
        drop(st);
        CHANGED.notify_all();
    }
    removed
}

/// Unlinks `o`'s name if it still names `o`'s object.
#[allow(clippy::unnecessary_cast)] // `c_ulong` on some ABIs
fn unlink_if_same(o: &Owned) -> bool {
    if let Some(files) = &o.socket {
        return files.remove();
    }
    let Some(file) = o.file else { return false };
    match rfs::lstat(o.name.path()) {
        Ok(st) if (st.st_dev as u64, st.st_ino as u64) == file => {
            rustix::shm::unlink(o.name.shm_name()).is_ok()
        }
        _ => false,
    }
}

/// Makes SIGINT, SIGTERM and SIGHUP remove this process's channels before
/// it ends: call once, early in `main`.
///
/// A watcher thread waits for the signals (through `signal-hook`'s
/// iterator: the handler itself only writes to a pipe). When one arrives it
/// runs [`remove_owned_channels`] for every live [`Producer`] of the process,
/// then ends the process with that signal's default action, so the exit
/// status is the conventional one (a shell shows 130 after Ctrl-C). Without
/// this, Ctrl-C ends the process without running any destructor and its
/// segments stay in `/dev/shm` until `bips clean` removes them.
///
/// A signal the process ignores when this is called (`nohup` ignores
/// SIGHUP; a shell ignores SIGINT for background jobs) stays ignored.
/// Calling it again does nothing. If your application handles these
/// signals itself, don't call this: call [`remove_owned_channels`] from
/// your own shutdown path instead.
///
/// ```no_run
/// use bips::{Options, Producer};
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     bips::cleanup_on_signals()?; // Ctrl-C now removes /dev/shm/bips.camera
///     let producer = Producer::create("camera", &Options::new(4, 1920 * 1080 * 3))?;
///     loop {
///         let mut frame = producer.loan()?;
///         frame.as_mut_slice()[0] = 255;
///         frame.publish()?;
///     }
/// }
/// ```
///
/// Errors: the handlers could not be installed or the thread not started.
///
/// [`Producer`]: crate::Producer
#[cfg(feature = "signals")]
pub fn cleanup_on_signals() -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

    static STARTED: Mutex<bool> = Mutex::new(false);
    let mut started = STARTED.lock().unwrap_or_else(PoisonError::into_inner);
    if *started {
        return Ok(());
    }
    let wanted: Vec<i32> = [SIGINT, SIGTERM, SIGHUP]
        .into_iter()
        .filter(|&s| !ignored(s))
        .collect();
    if wanted.is_empty() {
        *started = true;
        return Ok(());
    }
    let mut signals = signal_hook::iterator::Signals::new(&wanted)?;
    std::thread::Builder::new()
        .name("bips-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                remove_all(true);
                // PID 1 (a container without an init) has no default action
                // for these signals: emulating it would end in abort(),
                // which PID 1 ignores too, and glibc's last resort then
                // faults (SIGSEGV, exit 139). Exit with the conventional
                // status instead.
                // SAFETY: getpid has no preconditions.
                if unsafe { libc::getpid() } != 1 {
                    let _ = signal_hook::low_level::emulate_default_handler(sig);
                }
                // Reached as PID 1 (or if the default action failed). `_exit`:
                // exit handlers and destructors must not run on this thread
                // while the main thread still runs.
                // SAFETY: `_exit` ends the process at once; it needs nothing
                // of this thread and touches no Rust state.
                unsafe { libc::_exit(128 + sig) };
            }
        })?;
    *started = true;
    Ok(())
}

/// Whether signal `sig` is ignored (`SIG_IGN`) right now.
#[cfg(feature = "signals")]
fn ignored(sig: i32) -> bool {
    // SAFETY: a zeroed `sigaction` is a valid out-parameter; with a null new
    // action `sigaction` only reads the current disposition.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}
