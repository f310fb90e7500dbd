//! asyncio support: `Consumer.arecv`, `async for`, `Producer.aloan`.
//!
//! The waiting itself is bips's (`bips::Consumer::poll_recv`,
//! `bips::Producer::poll_loan`): the process-wide doorbell reactor sleeps on
//! the channel's futex word and wakes a `Waker`. Here that waker writes to an
//! eventfd, which the event loop watches (`loop.add_reader`): no thread
//! takes the GIL to wake the loop, and the loop sleeps in its own `epoll`
//! meanwhile. The coroutine side is Python (`bips/_aio.py`): each step calls
//! `poll()`, and on `None` awaits the eventfd; `end()` in its `finally`
//! ends the wait whatever happens (a result, an error, a cancel).
//!
//! A sample is taken from the channel only inside a `poll()` that returns
//! it, and the coroutine returns it without awaiting again: a cancel (task
//! cancel, `asyncio.wait_for` timeout) can only hit the `await` of the
//! eventfd, before anything was received, so it loses nothing.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex as StdMutex};
use std::task::{Poll, Wake, Waker};
use std::time::Duration;

use pyo3::prelude::*;

use crate::consumer::{self, detach_sample, Consumer};
use crate::errors::IntoPyResult;
use crate::producer::{self, Producer};

/// An eventfd the waker writes to (it owns the descriptor: a late wake from
/// the reactor never writes to a descriptor number reused meanwhile).
struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    fn new() -> PyResult<Arc<EventFd>> {
        // SAFETY: eventfd takes no pointers; a negative result is an error.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Arc::new(EventFd { fd }))
    }

    /// Resets the counter (non-blocking; nothing to read is fine).
    fn drain(&self) {
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into `v`, a valid, writable u64.
        unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut v as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

impl Wake for EventFd {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let one = 1u64;
        // SAFETY: writes the 8 bytes of `one`, a valid u64, to our eventfd
        // (non-blocking: a saturated counter is already readable).
        unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

fn timeout_of(timeout: Option<f64>) -> PyResult<bips::AsyncWait> {
    let Some(t) = timeout else {
        return Ok(bips::AsyncWait::new());
    };
    if t.is_nan() || t < 0.0 {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "timeout must be None or a number of seconds >= 0, not {t}"
        )));
    }
    Ok(match Duration::try_from_secs_f64(t) {
        Ok(d) => bips::AsyncWait::with_timeout(d),
        Err(_) => bips::AsyncWait::new(), // absurdly long: none
    })
}

/// One `arecv` of a `Consumer` (driven by `bips._aio`).
#[pyclass(module = "bips._bips", name = "_RecvWait", frozen)]
pub(crate) struct RecvWait {
    consumer: Py<Consumer>,
    core: Arc<consumer::Core>,
    wait: StdMutex<bips::AsyncWait>,
    efd: Arc<EventFd>,
    waker: Waker,
}

impl RecvWait {
    pub(crate) fn new(
        consumer: Py<Consumer>,
        core: Arc<consumer::Core>,
        timeout: Option<f64>,
    ) -> PyResult<RecvWait> {
        let efd = EventFd::new()?;
        Ok(RecvWait {
            consumer,
            core,
            wait: StdMutex::new(timeout_of(timeout)?),
            waker: Waker::from(efd.clone()),
            efd,
        })
    }
}

#[pymethods]
impl RecvWait {
    /// The eventfd that becomes readable when `poll()` should run again.
    fn fileno(&self) -> RawFd {
        self.efd.fd.as_raw_fd()
    }

    /// Receives if it can: the sample, or ``None`` after arranging for the
    /// eventfd to become readable. Raises ``Timeout``, ``Disconnected``, ...
    fn poll(&self, py: Python<'_>) -> PyResult<Option<Py<consumer::Sample>>> {
        self.efd.drain();
        let mut wait = self.wait.lock().unwrap_or_else(|e| e.into_inner());
        let (waker, w) = (&self.waker, &mut *wait);
        let got = self
            .core
            .run(py, |c| match c.poll_recv(w, waker) {
                Poll::Ready(r) => r.map(|s| Some(detach_sample(s))),
                Poll::Pending => Ok(None),
            })
            .py_err()?;
        drop(wait);
        got.map(|g| self.consumer.get().wrap(py, &self.core, g))
            .transpose()
    }

    /// Ends the wait (idempotent): uncounts the consumer as a sleeper and
    /// cancels the reactor registration.
    fn end(&self, py: Python<'_>) {
        let mut wait = self.wait.lock().unwrap_or_else(|e| e.into_inner());
        let w = &mut *wait;
        self.core.run(py, |c| c.end_wait(w));
    }
}

impl Drop for RecvWait {
    fn drop(&mut self) {
        let wait = self.wait.get_mut().unwrap_or_else(|e| e.into_inner());
        if wait.is_armed() {
            // `end()` was not called (the coroutine was never finished):
            // end it here, waiting for the consumer with the GIL released.
            let core = &self.core;
            Python::attach(|py| core.run(py, |c| c.end_wait(wait)));
        }
    }
}

/// One `aloan` of a `Producer` (driven by `bips._aio`).
#[pyclass(module = "bips._bips", name = "_LoanWait", frozen)]
pub(crate) struct LoanWait {
    producer: Py<Producer>,
    core: Arc<producer::Core>,
    desc: Option<bips::Descriptor>,
    wait: StdMutex<bips::AsyncWait>,
    efd: Arc<EventFd>,
    waker: Waker,
}

impl LoanWait {
    pub(crate) fn new(
        producer: Py<Producer>,
        core: Arc<producer::Core>,
        timeout: Option<f64>,
        desc: Option<bips::Descriptor>,
    ) -> PyResult<LoanWait> {
        let efd = EventFd::new()?;
        Ok(LoanWait {
            producer,
            core,
            desc,
            wait: StdMutex::new(timeout_of(timeout)?),
            waker: Waker::from(efd.clone()),
            efd,
        })
    }
}

#[pymethods]
impl LoanWait {
    /// The eventfd that becomes readable when `poll()` should run again.
    fn fileno(&self) -> RawFd {
        self.efd.fd.as_raw_fd()
    }

    /// Loans if it can: the ``SampleMut``, or ``None`` after arranging for
    /// the eventfd to become readable. Raises ``Timeout``, ``Closed``, ...
    fn poll(&self, py: Python<'_>) -> PyResult<Option<Py<producer::SampleMut>>> {
        self.efd.drain();
        let mut wait = self.wait.lock().unwrap_or_else(|e| e.into_inner());
        let (waker, core, w) = (&self.waker, &self.core, &mut *wait);
        let got = core
            .run(py, |p| match p.poll_loan(w, waker) {
                Poll::Ready(r) => r.map(|s| Some(Producer::wrap(s, core))),
                Poll::Pending => Ok(None),
            })
            .py_err()?;
        drop(wait);
        got.map(|l| self.producer.get().new_sample(py, l, self.desc.as_ref()))
            .transpose()
    }

    /// Ends the wait (idempotent).
    fn end(&self, py: Python<'_>) {
        let mut wait = self.wait.lock().unwrap_or_else(|e| e.into_inner());
        let w = &mut *wait;
        self.core.run(py, |p| p.end_wait(w));
    }
}

impl Drop for LoanWait {
    fn drop(&mut self) {
        let wait = self.wait.get_mut().unwrap_or_else(|e| e.into_inner());
        if wait.is_armed() {
            let core = &self.core;
            Python::attach(|py| core.run(py, |p| p.end_wait(wait)));
        }
    }
}

/// `bips._aio.<name>(*args)`: the coroutine that drives a wait.
pub(crate) fn coroutine<'py>(
    py: Python<'py>,
    name: &str,
    args: impl pyo3::call::PyCallArgs<'py>,
) -> PyResult<Bound<'py, PyAny>> {
    py.import("bips._aio")?.getattr(name)?.call1(args)
}
