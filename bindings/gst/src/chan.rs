//! The producer side shared by `bipssink` and its buffer pool.
//!
//! `bips::Producer` is `!Sync`: it lives behind one mutex, in an `Arc` held
//! by the element, by its pool and by every `GstMemory` that wraps a loan.
//! The mapping therefore outlives every memory that points into it; the
//! channel closes (consumers drain, then see `Disconnected`) when the last of
//! them lets go.
//!
//! Nothing ever waits while holding the mutex: a loan that finds no free
//! buffer waits on a condition variable (which lets the mutex go) that
//! `publish`, `unloan` and a freed pool memory notify, for at most
//! [`LOAN_POLL`] (buffers are also freed by consumers in other processes,
//! which cannot notify it), then tries again. A render on another thread
//! (after a `queue`), a freed memory or a `stats` read therefore never waits
//! for a loan, and the loan notices a flush within [`LOAN_POLL`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use bips::{Producer, RawLoan};

/// The longest one loan attempt waits (without the mutex) before trying
/// again: how late a buffer freed by a consumer in another process is seen.
pub(crate) const LOAN_POLL: Duration = Duration::from_millis(1);

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
    /// Notified whenever a buffer may have come free in this process.
    freed: Condvar,
    capacity: usize,
    buffers: usize,
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
    /// Nothing free within the wait: try again (after checking for flushing).
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
            freed: Condvar::new(),
            capacity,
            buffers: n,
        })
    }

    /// Buffers upstream may hold at once from the pool: all but one, left
    /// for the copy path.
    pub(crate) fn pool_max(&self) -> u32 {
        self.buffers.saturating_sub(1).max(1) as u32
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

    /// One loan attempt: a free buffer now, else waits at most `wait` (zero:
    /// no waiting) for a notification, with the mutex released, and answers
    /// `Busy`.
    pub(crate) fn try_loan(&self, wait: Duration) -> Result<Loaned, bips::Error> {
        let inner = self.lock();
        if let Some(l) = inner.producer.try_loan()? {
            return Ok(Loaned::Got(l.into_raw()));
        }
        if !wait.is_zero() {
            // `wait_timeout` lets the mutex go while it waits; a buffer freed
            // in this process between the try above and the wait notifies
            // after we wait (it needs the mutex we hold until then).
            let (inner, _) = self
                .freed
                .wait_timeout(inner, wait)
                .unwrap_or_else(|e| e.into_inner());
            drop(inner);
        }
        Ok(Loaned::Busy)
    }

    /// Wakes loans waiting for a buffer (one came free, or a flush began).
    pub(crate) fn wake(&self) {
        self.freed.notify_all();
    }

    /// Publishes `loan`; returns its sequence number.
    pub(crate) fn publish(&self, loan: RawLoan) -> Result<u64, bips::Error> {
        let r = self.lock().producer.publish_raw(loan);
        // Without consumers (or under DropOldest) the published buffer, or
        // an older one, can be loaned again.
        self.wake();
        r
    }

    /// Writes the frame descriptor of `loan` (checked against its capacity;
    /// against its length at publish).
    pub(crate) fn set_descriptor(
        &self,
        loan: &mut RawLoan,
        d: &bips::Descriptor,
    ) -> Result<(), bips::Error> {
        self.lock().producer.set_raw_descriptor(loan, d)
    }

    /// Gives `loan` back unpublished.
    pub(crate) fn unloan(&self, loan: RawLoan) {
        self.lock().producer.unloan_raw(loan);
        self.wake();
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
            drop(inner);
            self.wake();
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
