//! `bips.Producer` and `bips.SampleMut`.
//!
//! Lifetimes: a loan is kept as a `bips::RawLoan` (a buffer index plus
//! pointers into the producer's mapping, detached from the borrow of the
//! producer by `SampleMut::into_raw`), made sound by ownership:
//!
//! * the producer lives in an `Arc<Serialized<bips::Producer>>`; every
//!   `bips.SampleMut` owns a clone of that `Arc` next to its loan, so the
//!   producer (and its mapping) outlives the loan; a loan parked in the
//!   pending list lives inside the `Serialized` and is settled (given back
//!   with `unloan_raw`) in its `Drop` before the producer drops;
//! * every use of the loan (publish, give back) happens with the producer's
//!   mutex held, as every use of the producer does: the `!Sync` producer is
//!   never used by two threads at once;
//! * the bytes are written by Python through the buffer protocol, by raw
//!   pointer, never through a Rust reference; exports keep the
//!   `bips.SampleMut` alive, and `publish()` is refused while any export
//!   lives, so no Python view can write into a buffer after it was handed to
//!   consumers.

use std::ffi::c_int;
use std::sync::{Arc, Mutex as StdMutex};

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyBufferError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;

use crate::errors::{new_err, to_py, IntoPyResult, Kind};
use crate::serial::{Serialized, Settle};
use crate::{deadline, parse_backpressure, parse_trust, parse_wait, slice_until};

/// A loaned buffer, detached from the producer's borrow.
pub(crate) struct Loan {
    raw: bips::RawLoan,
}

impl Settle for bips::Producer {
    type Item = Loan;

    fn settle(&self, loan: Loan) {
        self.unloan_raw(loan.raw); // given back unpublished
    }
}

type Core = Serialized<bips::Producer>;

/// Creates a channel and publishes buffers to its consumers.
///
/// ``Producer(name, buffers, size, *, backpressure="block", max_consumers=8,
/// meta_size=64, mode=0o600, wait="spin_then_park", ring_capacity=None,
/// alignment=None, prefault=False, trust_owner=None, trust_any_owner=False)``
///
/// Makes ``/dev/shm/bips.<name>`` with a pool of ``buffers`` buffers of
/// ``size`` bytes. ``backpressure``: ``"block"`` (lossless, the slowest
/// consumer paces the producer) or ``"drop_oldest"`` (latest wins, slow
/// consumers skip and see ``Sample.lagged``). ``close()`` (or ``with``, or
/// garbage collection) closes the channel: consumers drain and get
/// ``Disconnected``; loans still alive delay that until they go.
///
/// A stale object left under ``name`` by a dead producer is replaced only
/// when this process's effective uid owns it, or ``trust_owner`` (a uid or a
/// list of uids) / ``trust_any_owner=True`` trusts its owner; otherwise
/// ``UntrustedOwner``.
#[pyclass(frozen, module = "bips", name = "Producer")]
pub(crate) struct Producer {
    core: StdMutex<Option<Arc<Core>>>,
    name: String,
    buffers: u32,
    buffer_size: u64,
    meta_size: u32,
    max_consumers: u32,
}

impl Producer {
    fn core(&self) -> PyResult<Arc<Core>> {
        self.core
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| PyValueError::new_err("operation on a closed bips.Producer"))
    }

    /// Turns a fresh `SampleMut` into a `Loaned`, which gives the buffer back
    /// if dropped. Called with the mutex held (inside `Serialized::run`).
    fn wrap(sample: bips::SampleMut<'_>, core: &Arc<Core>) -> Loaned {
        Loaned {
            loan: Some(Loan {
                raw: sample.into_raw(),
            }),
            core: core.clone(),
        }
    }

    fn new_sample(&self, py: Python<'_>, loaned: Loaned) -> PyResult<Py<SampleMut>> {
        Py::new(
            py,
            SampleMut {
                capacity: loaned.loan.as_ref().map_or(0, |l| l.raw.capacity()),
                meta_size: self.meta_size as usize,
                state: StdMutex::new(LoanState {
                    loaned: Some(loaned),
                    exports: 0,
                    discard_when_unexported: false,
                    seq: None,
                }),
            },
        )
    }

    fn push_impl(
        &self,
        py: Python<'_>,
        buf: &SampleMut,
        length: Option<usize>,
        meta: Option<&Bound<'_, PyAny>>,
        timestamp_ns: Option<u64>,
    ) -> PyResult<u64> {
        let core = self.core()?;
        if !buf.loaned_by(&core) {
            return Err(PyValueError::new_err(
                "this buffer was loaned by another bips.Producer",
            ));
        }
        buf.publish_impl(py, length, meta, timestamp_ns)
    }

    fn loan_impl(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<SampleMut>> {
        let core = self.core()?;
        let deadline = deadline(timeout)?;
        let first = core.run(py, |p| {
            p.try_loan().map(|o| o.map(|s| Producer::wrap(s, &core)))
        });
        if let Some(loaned) = first.py_err()? {
            return self.new_sample(py, loaned);
        }
        loop {
            let Some(slice) = slice_until(deadline) else {
                return Err(to_py(bips::Error::Timeout));
            };
            let got = py.detach(|| {
                core.run_detached(|p| match p.loan_timeout(slice) {
                    Ok(s) => Ok(Some(Producer::wrap(s, &core))),
                    Err(bips::Error::Timeout) => Ok(None),
                    Err(e) => Err(e),
                })
            });
            if let Some(loaned) = got.py_err()? {
                return self.new_sample(py, loaned);
            }
            py.check_signals()?;
            self.core()?;
        }
    }
}

#[pymethods]
impl Producer {
    #[new]
    #[pyo3(signature = (
        name, buffers, size, *, backpressure = "block", max_consumers = 8, meta_size = 64,
        mode = 0o600, wait = "spin_then_park", ring_capacity = None, alignment = None,
        prefault = false, trust_owner = None, trust_any_owner = false
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: &str,
        buffers: u32,
        size: usize,
        backpressure: &str,
        max_consumers: u32,
        meta_size: u32,
        mode: u32,
        wait: &str,
        ring_capacity: Option<u32>,
        alignment: Option<u32>,
        prefault: bool,
        trust_owner: Option<&Bound<'_, PyAny>>,
        trust_any_owner: bool,
    ) -> PyResult<Self> {
        let mut opts = bips::Options::new(buffers, size)
            .backpressure(parse_backpressure(backpressure)?)
            .max_consumers(max_consumers)
            .meta_size(meta_size)
            .mode(mode)
            .wait(parse_wait(wait)?)
            .prefault(prefault)
            .trust(parse_trust(trust_owner, trust_any_owner)?);
        if let Some(r) = ring_capacity {
            opts = opts.ring_capacity(r);
        }
        if let Some(a) = alignment {
            opts = opts.alignment(a);
        }
        let name = name.to_owned();
        let producer = py
            .detach(|| bips::Producer::create(&name, &opts))
            .py_err()?;
        let g = *producer.geometry();
        Ok(Producer {
            core: StdMutex::new(Some(Arc::new(Serialized::new(producer)))),
            name,
            buffers: g.buffer_count,
            buffer_size: g.buffer_size,
            meta_size: g.meta_size,
            max_consumers: g.max_consumers,
        })
    }

    /// Loans a free buffer, waiting at most ``timeout`` seconds (``None``: as
    /// long as it takes; under ``"block"`` the slowest consumer paces this).
    /// Raises ``Timeout``. Returns a writable ``SampleMut``.
    #[pyo3(signature = (timeout = None))]
    fn loan(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<SampleMut>> {
        self.loan_impl(py, timeout)
    }

    /// Loans a buffer if one is free now, else ``None``.
    fn try_loan(&self, py: Python<'_>) -> PyResult<Option<Py<SampleMut>>> {
        let core = self.core()?;
        let loaned = core
            .run(py, |p| {
                p.try_loan().map(|o| o.map(|s| Producer::wrap(s, &core)))
            })
            .py_err()?;
        loaned.map(|l| self.new_sample(py, l)).transpose()
    }

    /// Alias of ``loan`` (the BIPS API's call shape).
    #[pyo3(signature = (timeout = None))]
    fn pull(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<SampleMut>> {
        self.loan_impl(py, timeout)
    }

    /// Alias of ``loan`` (the BIPS API's call shape).
    #[pyo3(name = "Pull", signature = (timeout = None))]
    fn pull_bips(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<SampleMut>> {
        self.loan_impl(py, timeout)
    }

    /// Publishes ``buf`` (same as ``buf.publish(length, meta)``); returns
    /// its sequence number.
    #[pyo3(signature = (buf, length = None, meta = None, timestamp_ns = None))]
    fn push(
        &self,
        py: Python<'_>,
        buf: &Bound<'_, SampleMut>,
        length: Option<usize>,
        meta: Option<&Bound<'_, PyAny>>,
        timestamp_ns: Option<u64>,
    ) -> PyResult<u64> {
        self.push_impl(py, buf.get(), length, meta, timestamp_ns)
    }

    /// Publishes ``buf`` (same as ``buf.publish(length, meta)``); returns
    /// its sequence number.
    #[pyo3(name = "Push", signature = (buf, length = None, meta = None, timestamp_ns = None))]
    fn push_bips(
        &self,
        py: Python<'_>,
        buf: &Bound<'_, SampleMut>,
        length: Option<usize>,
        meta: Option<&Bound<'_, PyAny>>,
        timestamp_ns: Option<u64>,
    ) -> PyResult<u64> {
        self.push_impl(py, buf.get(), length, meta, timestamp_ns)
    }

    /// Consumers attached right now.
    #[getter]
    fn consumer_count(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.core()?.run(py, |p| p.consumer_count()))
    }

    /// Frees the entries of consumers that died (normally automatic while
    /// ``loan`` waits); returns how many.
    fn reap_dead_consumers(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.core()?.run(py, |p| p.reap_dead_consumers()))
    }

    /// Closes the channel (consumers drain, then get ``Disconnected``) and
    /// removes its name, once no loan of it is alive. Idempotent.
    fn close(&self) {
        let core = self.core.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(core);
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close();
        false
    }

    /// Whether ``close()`` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.core
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// The channel name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// Buffers in the pool.
    #[getter]
    fn buffers(&self) -> u32 {
        self.buffers
    }

    /// Bytes per buffer.
    #[getter]
    fn buffer_size(&self) -> u64 {
        self.buffer_size
    }

    /// Bytes of per-sample metadata.
    #[getter]
    fn meta_size(&self) -> u32 {
        self.meta_size
    }

    /// The channel's consumer capacity.
    #[getter]
    fn max_consumers(&self) -> u32 {
        self.max_consumers
    }

    fn __repr__(&self) -> String {
        format!(
            "<bips.Producer {:?} buffers={} buffer_size={}{}>",
            self.name,
            self.buffers,
            self.buffer_size,
            if self.closed() { " closed" } else { "" }
        )
    }
}

/// A loan with the producer it belongs to.
struct Loaned {
    /// Always `Some` until published or given back.
    loan: Option<Loan>,
    /// Keeps the producer, and so its mapping, alive while the loan lasts.
    /// Dropped after `loan` (see `Drop`).
    core: Arc<Core>,
}

impl Loaned {
    fn ptr(&self) -> *mut u8 {
        self.loan
            .as_ref()
            .map_or(std::ptr::null_mut(), |l| l.raw.as_mut_ptr())
    }
}

impl Drop for Loaned {
    fn drop(&mut self) {
        // Given back unpublished; dropped by the garbage collector or a
        // buffer release: never wait.
        if let Some(loan) = self.loan.take() {
            self.core.settle_or_defer(loan);
        }
    }
}

struct LoanState {
    /// The loan; `None` once published or given back.
    loaned: Option<Loaned>,
    /// Live buffer exports (memoryviews, NumPy arrays, tensors).
    exports: usize,
    /// `__exit__` on an exception while exports lived: give the buffer back
    /// when the last one goes.
    discard_when_unexported: bool,
    /// The sequence number, once published.
    seq: Option<u64>,
}

/// A loaned buffer, writable in place through the buffer protocol
/// (``np.frombuffer(buf, np.uint8)``, ``memoryview(buf)``,
/// ``np.asarray(buf)``, ``torch.frombuffer(memoryview(buf), dtype=torch.uint8)``),
/// ``len(buf)`` bytes.
///
/// ``publish(length=None, meta=b"")`` hands it to the consumers; a ``with``
/// block publishes on a clean exit and gives the buffer back unpublished on
/// an exception. Publishing is refused (``BufferError``) while exports are
/// alive: a view that outlived the publish could write into a buffer the
/// consumers are reading. Delete the views first (``del arr``), or write
/// through a temporary (``np.frombuffer(buf, np.uint8)[:] = frame``).
#[pyclass(frozen, module = "bips", name = "SampleMut")]
pub(crate) struct SampleMut {
    state: StdMutex<LoanState>,
    capacity: usize,
    meta_size: usize,
}

impl SampleMut {
    fn state(&self) -> std::sync::MutexGuard<'_, LoanState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn exports_error(&self, what: &str, exports: usize) -> PyErr {
        PyBufferError::new_err(format!(
            "cannot {what} this buffer: {exports} buffer export(s) (memoryview/NumPy array/tensor) \
             still use its memory; delete them first (del arr), or write through a temporary \
             (np.frombuffer(buf, np.uint8)[:] = data)"
        ))
    }

    /// Whether this buffer was loaned by `core` (a finished one matches any).
    fn loaned_by(&self, core: &Arc<Core>) -> bool {
        self.state()
            .loaned
            .as_ref()
            .is_none_or(|l| Arc::ptr_eq(&l.core, core))
    }

    pub(crate) fn publish_impl(
        &self,
        py: Python<'_>,
        length: Option<usize>,
        meta: Option<&Bound<'_, PyAny>>,
        timestamp_ns: Option<u64>,
    ) -> PyResult<u64> {
        let len = length.unwrap_or(self.capacity);
        if len > self.capacity {
            return Err(new_err(
                Kind::InvalidOptions,
                format!("length {len} exceeds the buffer size {}", self.capacity),
            ));
        }
        let meta: Vec<u8> = match meta {
            None => Vec::new(),
            Some(m) => PyBuffer::<u8>::get(m)
                .map_err(|_| {
                    pyo3::exceptions::PyTypeError::new_err(
                        "meta must be a bytes-like object (bytes, bytearray, memoryview)",
                    )
                })?
                .to_vec(py)?,
        };
        if meta.len() > self.meta_size {
            return Err(new_err(
                Kind::InvalidOptions,
                format!(
                    "meta of {} bytes exceeds the channel's meta_size {}",
                    meta.len(),
                    self.meta_size
                ),
            ));
        }
        let mut loaned = {
            let mut st = self.state();
            if st.exports > 0 {
                return Err(self.exports_error("publish", st.exports));
            }
            match st.loaned.take() {
                Some(loaned) => loaned,
                None => {
                    return Err(PyValueError::new_err(match st.seq {
                        Some(seq) => format!("this buffer was already published as #{seq}"),
                        None => "this buffer was given back unpublished".to_owned(),
                    }))
                }
            }
        };
        let loan = loaned
            .loan
            .take()
            .expect("a Loaned holds its loan until it ends");
        let published = loaned.core.run(py, move |producer| {
            let mut raw = loan.raw;
            raw.set_len(len)?;
            if let Some(ts) = timestamp_ns {
                raw.set_timestamp_ns(ts);
            }
            // SAFETY: `producer` (alive: we run under its mutex, and `loaned`
            // holds its `Arc`) made this loan, which is still outstanding; no
            // export lives (checked above), so no other view of the bytes.
            let area = unsafe { raw.meta_mut() };
            area[..meta.len()].copy_from_slice(&meta);
            area[meta.len()..].fill(0);
            producer.publish_raw(raw)
        });
        drop(loaned); // its `Arc` of the producer: a closed producer may go now
        let seq = published.py_err()?;
        self.state().seq = Some(seq);
        Ok(seq)
    }

    fn discard_impl(&self, py: Python<'_>) -> PyResult<()> {
        let loaned = {
            let mut st = self.state();
            if st.exports > 0 {
                return Err(self.exports_error("give back", st.exports));
            }
            st.loaned.take()
        };
        if let Some(mut loaned) = loaned {
            if let Some(loan) = loaned.loan.take() {
                loaned
                    .core
                    .run(py, move |producer| producer.unloan_raw(loan.raw));
            }
        }
        Ok(())
    }
}

#[pymethods]
impl SampleMut {
    /// Publishes the buffer: consumers see its first ``length`` bytes
    /// (default: all of it) and ``meta`` (bytes-like, at most ``meta_size``
    /// bytes; the rest of the metadata area is zeroed). Returns the sequence
    /// number. Raises ``BufferError`` while buffer exports are alive.
    #[pyo3(signature = (length = None, meta = None, timestamp_ns = None))]
    fn publish(
        &self,
        py: Python<'_>,
        length: Option<usize>,
        meta: Option<&Bound<'_, PyAny>>,
        timestamp_ns: Option<u64>,
    ) -> PyResult<u64> {
        self.publish_impl(py, length, meta, timestamp_ns)
    }

    /// Gives the buffer back unpublished. Raises ``BufferError`` while
    /// buffer exports are alive. Idempotent.
    fn discard(&self, py: Python<'_>) -> PyResult<()> {
        self.discard_impl(py)
    }

    /// Whether the buffer was published or given back (it is no longer
    /// writable).
    #[getter]
    fn done(&self) -> bool {
        self.state().loaned.is_none()
    }

    /// The sequence number once published, else ``None``.
    #[getter]
    fn seq(&self) -> Option<u64> {
        self.state().seq
    }

    /// Bytes the buffer holds (its whole size).
    #[getter]
    fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes of per-sample metadata ``publish`` accepts.
    #[getter]
    fn meta_size(&self) -> usize {
        self.meta_size
    }

    fn __len__(&self) -> usize {
        self.capacity
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// On a clean exit publishes the whole buffer (unless already published
    /// or given back); on an exception gives it back unpublished (when the
    /// last export goes, if some are alive).
    #[pyo3(signature = (exc_type, _exc = None, _tb = None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let clean = exc_type.is_none_or(|t| t.is_none());
        if clean {
            if !self.done() {
                self.publish_impl(py, None, None, None)?;
            }
        } else {
            {
                let mut st = self.state();
                if st.exports > 0 {
                    st.discard_when_unexported = true;
                    return Ok(false);
                }
            }
            self.discard_impl(py)?;
        }
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let st = self.state();
        let what = match (&st.loaned, st.seq) {
            (Some(_), _) => "loaned".to_owned(),
            (None, Some(seq)) => format!("published #{seq}"),
            (None, None) => "given back".to_owned(),
        };
        format!("<bips.SampleMut capacity={} {what}>", self.capacity)
    }

    /// # Safety
    /// Called by CPython with a valid `view` (buffer protocol).
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let this = slf.get();
        let mut st = this.state();
        let Some(loaned) = st.loaned.as_ref() else {
            let msg = match st.seq {
                Some(seq) => {
                    format!("this buffer was published as #{seq}: it is no longer writable")
                }
                None => "this buffer was given back: it is no longer writable".to_owned(),
            };
            return Err(PyBufferError::new_err(msg));
        };
        // SAFETY: `view` is the valid Py_buffer CPython handed us. The loan's pointer
        // is `capacity` writable bytes of the producer's mapping, loaned to us
        // (no consumer reads them until publish). `view.obj` becomes a new
        // strong reference to this object, which owns an `Arc` of the producer
        // (so the mapping stays mapped) and the loan; the loan is not published
        // or given back while `exports > 0`.
        let rc = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                loaned.ptr().cast(),
                this.capacity as ffi::Py_ssize_t,
                0,
                flags,
            )
        };
        if rc != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        st.exports += 1;
        Ok(())
    }

    /// # Safety
    /// Called by CPython for a view that `__getbuffer__` filled.
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        let loaned = {
            let mut st = self.state();
            st.exports = st.exports.saturating_sub(1);
            if st.exports == 0 && st.discard_when_unexported {
                st.loaned.take()
            } else {
                None
            }
        };
        // `Loaned::drop` gives the buffer back without waiting.
        drop(loaned);
    }
}
