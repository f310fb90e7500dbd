//! SIGINT, SIGTERM and SIGHUP in the coordinating process of `bips demo` and
//! `bips soak`: the signal only sets a flag (signal-hook's `flag`, an atomic
//! store); the coordinator's loop sees it, stops its children, removes its
//! channels and then dies of the same signal ([`die_of`]), so the exit status
//! is the conventional one. The producer children use
//! [`bips::cleanup_on_signals`] themselves: a signal sent to the whole
//! process group (Ctrl-C in a terminal) is handled by each process.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

static PENDING: OnceLock<Arc<AtomicUsize>> = OnceLock::new();

/// The coordinator stopped because of signal `.0`.
#[derive(Debug)]
pub struct Interrupted(pub i32);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by signal {}", self.0)
    }
}

impl std::error::Error for Interrupted {}

/// Catches SIGINT, SIGTERM and SIGHUP from now on (those not ignored: `nohup`
/// and background jobs of a shell keep ignoring theirs).
pub fn install() -> std::io::Result<()> {
    let flag = PENDING.get_or_init(|| Arc::new(AtomicUsize::new(0)));
    for sig in [SIGINT, SIGTERM, SIGHUP] {
        if !ignored(sig) {
            signal_hook::flag::register_usize(sig, flag.clone(), sig as usize)?;
        }
    }
    Ok(())
}

/// The signal caught, if any.
pub fn pending() -> Option<i32> {
    let sig = PENDING.get()?.load(Ordering::Acquire);
    (sig != 0).then_some(sig as i32)
}

/// `Err(Interrupted)` once a signal was caught.
pub fn check() -> Result<(), Interrupted> {
    match pending() {
        Some(sig) => Err(Interrupted(sig)),
        None => Ok(()),
    }
}

/// Ends the process as signal `sig`'s default action would (call once
/// everything is cleaned up).
pub fn die_of(sig: i32) -> ! {
    let _ = signal_hook::low_level::emulate_default_handler(sig);
    std::process::exit(128 + sig)
}

/// Whether signal `sig` is ignored (`SIG_IGN`) right now.
fn ignored(sig: i32) -> bool {
    // SAFETY: a zeroed `sigaction` is a valid out-parameter; with a null new
    // action `sigaction` only reads the current disposition.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}
