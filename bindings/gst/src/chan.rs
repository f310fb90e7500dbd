//! The producer side shared by `bipssink` and its buffer pool.
//!
//! `bips::Producer` is `!Sync`: it lives behind one mutex, in an `Arc` held
//! by the element, by its pool and by every `GstMemory` that wraps a loan.
//! The mapping therefore outlives every memory that points into it; the
//! channel closes (consumers drain, then see `Disconnected`) when the last of
//! them lets go.
//!
//! Nothing ever blocks while holding the mutex for long: a loan that must
//! wait does so in slices of [`LOAN_SLICE`], letting go of the mutex between
//! them, so a render on another thread (after a `queue`) can publish and free
//! the very buffer the waiting loan needs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bips::{Producer, RawLoan};

/// How long one loan attempt may wait with the mutex held.
pub(crate) const LOAN_SLICE: Duration = Duration::from_millis(5);

static NEXT_LOAN: AtomicU64 = AtomicU64::new(1);

/// A loan handed to a `GstMemory` of the pool, found again by that memory's
/// address when the buffer reaches `render()`.
struct PoolLoan {
    id: u64,
    memory: usize,
    loan: RawLoan,
}

pub(crate) struct Inner {
    pub(crate) producer: Producer,
    pool_loans: Vec<PoolLoan>,
}

/// One channel, shared by the sink, its pool and the pool's memories.
pub(crate) struct Chan {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl std::fmt::Debug for Chan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chan")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// The answer of one loan attempt.
pub(crate) enum Loaned {
    Got(RawLoan),
    /// Nothing free within the slice: try again (after checking for flushing).
    Busy,
}

impl Chan {
    pub(crate) fn new(producer: Producer) -> Arc<Chan> {
        let capacity = producer.buffer_size();
        let n = producer.geometry().buffer_count as usize;
        Arc::new(Chan {
            inner: Mutex::new(Inner {
                producer,
                pool_loans: Vec::with_capacity(n),
            }),
            capacity,
        })
    }

    /// Bytes per buffer.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the producer usable (its
        // state lives in shared memory, updated atomically).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One loan attempt: waits at most `slice` (zero: no waiting).
    pub(crate) fn try_loan(&self, slice: Duration) -> Result<Loaned, bips::Error> {
        let inner = self.lock();
        let r = if slice.is_zero() {
            inner.producer.try_loan().map(|o| o.map(|s| s.into_raw()))
        } else {
            match inner.producer.loan_timeout(slice) {
                Ok(s) => Ok(Some(s.into_raw())),
                Err(bips::Error::Timeout) => Ok(None),
                Err(e) => Err(e),
            }
        };
        Ok(match r? {
            Some(l) => Loaned::Got(l),
            None => Loaned::Busy,
        })
    }

    /// Publishes `loan`; returns its sequence number.
    pub(crate) fn publish(&self, loan: RawLoan) -> Result<u64, bips::Error> {
        self.lock().producer.publish_raw(loan)
    }

    /// Gives `loan` back unpublished.
    pub(crate) fn unloan(&self, loan: RawLoan) {
        self.lock().producer.unloan_raw(loan);
    }

    /// Consumers attached now.
    pub(crate) fn consumer_count(&self) -> usize {
        self.lock().producer.consumer_count()
    }

    /// Takes out the loan wrapped by the memory at address `memory`, if it
    /// is one of ours and still loaned.
    pub(crate) fn take_pool_loan(&self, memory: usize) -> Option<RawLoan> {
        let mut inner = self.lock();
        let i = inner.pool_loans.iter().position(|p| p.memory == memory)?;
        Some(inner.pool_loans.swap_remove(i).loan)
    }

    /// The memory with loan `id` is being freed: unloan it if it was never
    /// published.
    fn forget(&self, id: u64) {
        let mut inner = self.lock();
        if let Some(i) = inner.pool_loans.iter().position(|p| p.id == id) {
            let p = inner.pool_loans.swap_remove(i);
            inner.producer.unloan_raw(p.loan);
        }
    }

    /// Wraps `loan` in a `GstMemory` of `size` bytes that gives the loan back
    /// when freed (unless `render()` published it first).
    pub(crate) fn wrap(self: &Arc<Chan>, loan: RawLoan, size: usize) -> gst::Memory {
        let size = size.min(loan.capacity());
        let id = NEXT_LOAN.fetch_add(1, Ordering::Relaxed);
        let memory = gst::Memory::from_mut_slice(LoanMem {
            ptr: loan.as_mut_ptr(),
            len: size,
            id,
            chan: Arc::clone(self),
        });
        // Registered once the memory has an address; we hold its only
        // reference, so it cannot be freed (and look for `id`) before.
        self.lock().pool_loans.push(PoolLoan {
            id,
            memory: memory.as_ptr() as usize,
            loan,
        });
        memory
    }
}

/// The value wrapped by a pool `GstMemory`: a view of one loaned buffer.
pub(crate) struct LoanMem {
    ptr: *mut u8,
    len: usize,
    id: u64,
    chan: Arc<Chan>,
}

// SAFETY: a pointer into the channel's mapping (kept alive by `chan`) and an
// id; giving the loan back goes through the channel's mutex.
unsafe impl Send for LoanMem {}

impl AsMut<[u8]> for LoanMem {
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` points at a buffer of the channel's mapping, loaned
        // to this memory (nobody else writes it, no consumer reads it before
        // render() publishes it) and `len <= capacity`; `chan` keeps the
        // mapping alive as long as `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for LoanMem {
    fn drop(&mut self) {
        self.chan.forget(self.id);
    }
}
