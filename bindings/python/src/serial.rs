//! One `!Sync` Rust object shared by many Python threads.
//!
//! `bips::Consumer` and `bips::Producer` keep process-local state in `Cell`s:
//! one thread at a time may use them. Python code may use one object from
//! several threads, and a thread blocked in `recv`/`loan` releases the GIL, so
//! the object sits behind a mutex with these rules:
//!
//! * Nobody acquires the GIL while holding the mutex (no lock-order inversion:
//!   a thread that holds the GIL may wait for the mutex, and the holder never
//!   waits for the GIL).
//! * A thread holding the GIL only *tries* the mutex; when it is busy it
//!   releases the GIL before waiting ([`Serialized::run`]), so a consumer
//!   blocked in `recv` never freezes the other Python threads.
//! * Code that must not wait at all (a sample dropped by the garbage
//!   collector, `__releasebuffer__`) hands its item to a pending list
//!   ([`Serialized::settle_or_defer`]); whoever holds the mutex settles the
//!   list before unlocking, and a store/fence/load handshake guarantees that
//!   an item is never stranded while the mutex is free.

use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::Mutex as StdMutex;

use parking_lot::{Mutex, MutexGuard};
use pyo3::marker::Ungil;
use pyo3::Python;

/// A Rust object whose deferred work items can be settled by whoever holds it.
pub(crate) trait Settle: Send {
    /// The deferred work: a sample to release, a loan to give back.
    type Item: Send;
    /// Settles one item; called with the mutex held.
    fn settle(&self, item: Self::Item);
}

/// `T` behind a mutex, plus a list of items to settle when it is free.
pub(crate) struct Serialized<T: Settle> {
    value: Mutex<T>,
    pending: StdMutex<Vec<T::Item>>,
    /// `pending.len()`, readable without the list's lock (the handshake).
    pending_len: AtomicUsize,
}

impl<T: Settle> Serialized<T> {
    pub(crate) fn new(value: T) -> Self {
        Serialized {
            value: Mutex::new(value),
            pending: StdMutex::new(Vec::new()),
            pending_len: AtomicUsize::new(0),
        }
    }

    /// Runs `f` with the value, from a thread that holds the GIL: takes the
    /// mutex at once when it is free; otherwise releases the GIL while waiting
    /// for it (another thread may hold it for a whole blocking slice).
    pub(crate) fn run<R, F>(&self, py: Python<'_>, f: F) -> R
    where
        F: FnOnce(&T) -> R + Ungil + Send,
        R: Ungil + Send,
    {
        match self.value.try_lock() {
            Some(guard) => self.with_guard(guard, f),
            None => py.detach(|| self.run_detached(f)),
        }
    }

    /// Runs `f` with the value, waiting for the mutex. Only for threads that
    /// do not hold the GIL (inside `Python::detach`).
    pub(crate) fn run_detached<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        self.with_guard(self.value.lock(), f)
    }

    fn with_guard<R>(&self, guard: MutexGuard<'_, T>, f: impl FnOnce(&T) -> R) -> R {
        self.settle_pending(&guard);
        // Unlock (and settle what arrived meanwhile) even if `f` panics.
        struct Unlock<'a, T: Settle>(&'a Serialized<T>, Option<MutexGuard<'a, T>>);
        impl<T: Settle> Drop for Unlock<'_, T> {
            fn drop(&mut self) {
                if let Some(guard) = self.1.take() {
                    self.0.unlock(guard);
                }
            }
        }
        let unlock = Unlock(self, Some(guard));
        let value: &T = unlock.1.as_ref().expect("guard present until drop");
        f(value)
    }

    /// Settles `item` now if the mutex is free, else defers it to whoever
    /// holds the mutex. Never waits; callable with or without the GIL.
    pub(crate) fn settle_or_defer(&self, item: T::Item) {
        if let Some(guard) = self.value.try_lock() {
            guard.settle(item);
            self.unlock(guard);
            return;
        }
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.push(item);
            self.pending_len.store(pending.len(), Ordering::Relaxed);
        }
        // Handshake with `unlock`: we store `pending_len`, fence, then look at
        // the mutex; the holder unlocks, fences, then loads `pending_len`. Of
        // the two fences one comes first, so either the holder sees our item,
        // or we see the mutex free (and settle it ourselves, or whoever beat us
        // to the mutex does on its own unlock).
        fence(Ordering::SeqCst);
        if let Some(guard) = self.value.try_lock() {
            self.unlock(guard);
        }
    }

    fn settle_pending(&self, value: &T) {
        if self.pending_len.load(Ordering::Relaxed) == 0 {
            return;
        }
        let items = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            self.pending_len.store(0, Ordering::Relaxed);
            std::mem::take(&mut *pending)
        };
        for item in items {
            value.settle(item);
        }
    }

    fn unlock<'a>(&'a self, mut guard: MutexGuard<'a, T>) {
        loop {
            self.settle_pending(&guard);
            // Fair: a thread waiting for the mutex (say, a `release()` while a
            // `recv` runs in slices) gets it before we could take it again.
            MutexGuard::unlock_fair(guard);
            fence(Ordering::SeqCst);
            if self.pending_len.load(Ordering::Relaxed) == 0 {
                return;
            }
            match self.value.try_lock() {
                Some(g) => guard = g,
                None => return, // its holder settles the list on unlock
            }
        }
    }
}

impl<T: Settle> Drop for Serialized<T> {
    fn drop(&mut self) {
        // Settle leftovers while `value` is alive: they may refer to it.
        let pending = std::mem::take(self.pending.get_mut().unwrap_or_else(|e| e.into_inner()));
        let value = self.value.lock();
        for item in pending {
            value.settle(item);
        }
    }
}
