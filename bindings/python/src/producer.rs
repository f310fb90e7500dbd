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

#[cfg(not(feature = "abi3-py38"))]
use std::ffi::c_int;
use std::sync::{Arc, Mutex as StdMutex};

use pyo3::exceptions::{PyBufferError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyMemoryView, PyWeakrefReference};

use crate::errors::{new_err, to_py, IntoPyResult, Kind};
use crate::frames::{desc_err, parse_dtype, Geom, PyDescriptor};
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

pub(crate) type Core = Serialized<bips::Producer>;

/// Creates a channel and publishes buffers to its consumers.
///
/// ``Producer(name, buffers, size, *, backpressure="block", max_consumers=8,
/// meta_size=64, max_held=8, mode=0o600, wait="spin_then_park", ring_capacity=None,
/// alignment=None, prefault=False, trust_owner=None, trust_any_owner=False)``
///
/// Makes ``/dev/shm/bips.<name>`` with a pool of ``buffers`` buffers of
/// ``size`` bytes. ``backpressure``: ``"block"`` (lossless, the slowest
/// consumer paces the producer) or ``"drop_oldest"`` (latest wins, slow
/// consumers skip and see ``Sample.lagged``). ``close()`` (or ``with``, or
/// garbage collection) closes the channel: consumers drain and get
/// ``Disconnected``; loans still alive delay that until they go.
///
/// ``max_held`` (1..=64, default ``bips.MAX_HELD`` = 8): how many samples one
/// consumer may hold at once (a batching consumer keeps 16-64 frames as NumPy
/// arrays); one more raises ``HeldLimit``. Held samples keep their buffers:
/// size ``buffers`` to match.
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
    max_held: u32,
    payload: Option<bips::PayloadType>,
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
    pub(crate) fn wrap(sample: bips::SampleMut<'_>, core: &Arc<Core>) -> Loaned {
        Loaned {
            loan: Some(Loan {
                raw: sample.into_raw(),
            }),
            core: core.clone(),
        }
    }

    pub(crate) fn new_sample(
        &self,
        py: Python<'_>,
        mut loaned: Loaned,
        desc: Option<&bips::Descriptor>,
    ) -> PyResult<Py<SampleMut>> {
        // On failure `loaned` drops, which gives the buffer back.
        let core = loaned.core.clone();
        let loan = loaned
            .loan
            .as_mut()
            .expect("a Loaned holds its loan until it ends");
        let raw = &mut loan.raw;
        let shaped = desc.is_some();
        let desc = core
            .run(py, move |p| {
                if let Some(d) = desc {
                    p.set_raw_descriptor(raw, d)?;
                }
                Ok(p.raw_descriptor(raw))
            })
            .py_err()?;
        let geom = desc.map(Geom::new).transpose().map_err(desc_err)?;
        Py::new(
            py,
            SampleMut {
                capacity: loaned.loan.as_ref().map_or(0, |l| l.raw.capacity()),
                meta_size: self.meta_size as usize,
                geom,
                shaped,
                state: StdMutex::new(LoanState {
                    loaned: Some(loaned),
                    exports: 0,
                    discard_when_unexported: false,
                    seq: None,
                    frame: None,
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

    fn loan_impl(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
        desc: Option<&bips::Descriptor>,
    ) -> PyResult<Py<SampleMut>> {
        let core = self.core()?;
        let deadline = deadline(timeout)?;
        let first = core.run(py, |p| {
            p.try_loan().map(|o| o.map(|s| Producer::wrap(s, &core)))
        });
        if let Some(loaned) = first.py_err()? {
            return self.new_sample(py, loaned, desc);
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
                return self.new_sample(py, loaned, desc);
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
        max_held = 8, mode = 0o600, wait = "spin_then_park", ring_capacity = None, alignment = None,
        prefault = false, trust_owner = None, trust_any_owner = false, payload_type = None,
        descriptor = None, backend = "shm", socket_dir = None
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
        max_held: u32,
        mode: u32,
        wait: &str,
        ring_capacity: Option<u32>,
        alignment: Option<u32>,
        prefault: bool,
        trust_owner: Option<&Bound<'_, PyAny>>,
        trust_any_owner: bool,
        payload_type: Option<(String, u32)>,
        descriptor: Option<PyRef<'_, PyDescriptor>>,
        backend: &str,
        socket_dir: Option<std::path::PathBuf>,
    ) -> PyResult<Self> {
        let mut opts = bips::Options::new(buffers, size)
            .backpressure(parse_backpressure(backpressure)?)
            .max_consumers(max_consumers)
            .meta_size(meta_size)
            .max_held(max_held)
            .mode(mode)
            .wait(parse_wait(wait)?)
            .prefault(prefault)
            .trust(parse_trust(trust_owner, trust_any_owner)?)
            .backend(parse_backend(backend)?);
        if let Some(d) = socket_dir {
            opts = opts.socket_dir(d);
        }
        if let Some(r) = ring_capacity {
            opts = opts.ring_capacity(r);
        }
        if let Some(a) = alignment {
            opts = opts.alignment(a);
        }
        match (payload_type, descriptor) {
            (Some((tname, version)), d) => {
                opts = opts.payload_type(crate::payload_type(&tname, version, d.map(|d| d.d))?);
            }
            (None, Some(_)) => {
                return Err(new_err(
                    Kind::InvalidOptions,
                    "descriptor= fixes the descriptor of a typed channel: give payload_type=(name, version) too",
                ))
            }
            (None, None) => {}
        }
        let name = name.to_owned();
        let producer = py
            .detach(|| bips::Producer::create(&name, &opts))
            .py_err()?;
        let g = *producer.geometry();
        let payload = producer.payload_type().copied();
        Ok(Producer {
            payload,
            core: StdMutex::new(Some(Arc::new(Serialized::new(producer)))),
            name,
            buffers: g.buffer_count,
            buffer_size: g.buffer_size,
            meta_size: g.meta_size,
            max_consumers: g.max_consumers,
            max_held: g.max_held,
        })
    }

    /// Loans a free buffer, waiting at most ``timeout`` seconds (``None``: as
    /// long as it takes; under ``"block"`` the slowest consumer paces this).
    /// Raises ``Timeout``. Returns a writable ``SampleMut``.
    ///
    /// With ``shape`` and ``dtype`` (or ``descriptor``) the loan carries that
    /// descriptor (C-contiguous unless ``strides``, in bytes): its exports are
    /// shaped and typed, and ``with producer.loan(shape=..., dtype=...) as
    /// frame:`` binds ``frame`` to a NumPy array of the buffer.
    #[pyo3(signature = (timeout = None, *, shape = None, dtype = None, strides = None,
                        format = None, colorimetry = None, descriptor = None))]
    #[allow(clippy::too_many_arguments)]
    fn loan(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
        shape: Option<Vec<u64>>,
        dtype: Option<&Bound<'_, PyAny>>,
        strides: Option<Vec<i64>>,
        format: Option<&str>,
        colorimetry: Option<&str>,
        descriptor: Option<PyRef<'_, PyDescriptor>>,
    ) -> PyResult<Py<SampleMut>> {
        let desc = match (shape, descriptor) {
            (Some(_), Some(_)) => {
                return Err(new_err(
                    Kind::InvalidOptions,
                    "give shape=/dtype= or descriptor=, not both",
                ))
            }
            (None, Some(d)) => Some(d.d),
            (Some(shape), None) => {
                let dtype = dtype.ok_or_else(|| {
                    new_err(Kind::InvalidOptions, "shape= needs dtype= (e.g. np.uint8)")
                })?;
                let mut d = bips::Descriptor::new(parse_dtype(dtype)?, &shape).map_err(desc_err)?;
                if let Some(s) = strides {
                    d = d.with_strides(&s).map_err(desc_err)?;
                }
                if let Some(f) = format {
                    d = d.with_format(f).map_err(desc_err)?;
                }
                if let Some(c) = colorimetry {
                    d = d.with_colorimetry(c).map_err(desc_err)?;
                }
                Some(d)
            }
            (None, None) => {
                if dtype.is_some() || strides.is_some() || format.is_some() || colorimetry.is_some()
                {
                    return Err(new_err(
                        Kind::InvalidOptions,
                        "dtype=/strides=/format=/colorimetry= describe a shape: give shape= too",
                    ));
                }
                None
            }
        };
        self.loan_impl(py, timeout, desc.as_ref())
    }

    /// Publishes a copy of ``array`` (any buffer-protocol object: a NumPy
    /// array of any strides, a memoryview, bytes) in one step: loans a buffer
    /// (waiting at most ``timeout`` s), copies the elements in C order (the
    /// GIL released for large arrays), sets the C-contiguous descriptor of
    /// the array's dtype and shape (plus ``format``/``colorimetry``) and
    /// publishes it with ``meta``. Returns the sequence number.
    #[pyo3(signature = (array, *, format = None, colorimetry = None, meta = None,
                        timestamp_ns = None, timeout = None))]
    #[allow(clippy::too_many_arguments)]
    fn send(
        &self,
        py: Python<'_>,
        array: &Bound<'_, PyAny>,
        format: Option<&str>,
        colorimetry: Option<&str>,
        meta: Option<&Bound<'_, PyAny>>,
        timestamp_ns: Option<u64>,
        timeout: Option<f64>,
    ) -> PyResult<u64> {
        let src = crate::send::Source::get(array)?;
        let mut d = bips::Descriptor::new(src.dtype, &src.shape_u64()).map_err(desc_err)?;
        if let Some(f) = format {
            d = d.with_format(f).map_err(desc_err)?;
        }
        if let Some(c) = colorimetry {
            d = d.with_colorimetry(c).map_err(desc_err)?;
        }
        let nbytes = src.len();
        if nbytes as u64 > self.buffer_size {
            return Err(new_err(
                Kind::InvalidOptions,
                format!(
                    "an array of {nbytes} bytes does not fit this channel's buffers of {} bytes",
                    self.buffer_size
                ),
            ));
        }
        let buf = self.loan_impl(py, timeout, Some(&d))?;
        let dst = {
            let st = buf.get().state();
            st.loaned.as_ref().map_or(std::ptr::null_mut(), |l| l.ptr())
        };
        // SAFETY: `dst` is the fresh loan's buffer (capacity >= nbytes,
        // checked above), writable, exported to nobody (the SampleMut was
        // just made and is not shared); `src` keeps its buffer export until
        // dropped, after the copy.
        unsafe { src.copy_to(py, dst) };
        drop(src);
        let seq = buf
            .get()
            .publish_impl(py, Some(nbytes), meta, timestamp_ns)?;
        Ok(seq)
    }

    /// Loans a buffer if one is free now, else ``None``.
    fn try_loan(&self, py: Python<'_>) -> PyResult<Option<Py<SampleMut>>> {
        let core = self.core()?;
        let loaned = core
            .run(py, |p| {
                p.try_loan().map(|o| o.map(|s| Producer::wrap(s, &core)))
            })
            .py_err()?;
        loaned.map(|l| self.new_sample(py, l, None)).transpose()
    }

    /// Loans a buffer without blocking the event loop (asyncio):
    /// ``buf = await producer.aloan(timeout=None)``; under ``block`` it
    /// waits for the slowest consumer while the loop keeps running.
    /// ``descriptor=`` as for ``loan``. Cancelling it leaves no buffer
    /// loaned.
    #[pyo3(signature = (timeout = None, *, descriptor = None))]
    fn aloan<'py>(
        slf: &Bound<'py, Self>,
        timeout: Option<f64>,
        descriptor: Option<PyRef<'py, PyDescriptor>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let desc = descriptor.map(|d| d.d);
        let core = slf.get().core()?;
        let wait = crate::aio::LoanWait::new(slf.clone().unbind(), core, timeout, desc)?;
        crate::aio::coroutine(slf.py(), "aloan", (wait,))
    }

    /// Alias of ``loan`` (the BIPS API's call shape).
    #[pyo3(signature = (timeout = None))]
    fn pull(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<SampleMut>> {
        self.loan_impl(py, timeout, None)
    }

    /// Alias of ``loan`` (the BIPS API's call shape).
    #[pyo3(name = "Pull", signature = (timeout = None))]
    fn pull_bips(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<SampleMut>> {
        self.loan_impl(py, timeout, None)
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
    /// removes its name once no loan of it is out: loans still out may be
    /// published first. Arrays of frames already published (a shaped loan's
    /// ``frame`` after its ``with`` block) do not hold the close back: they
    /// stay readable. Idempotent.
    fn close(&self, py: Python<'_>) {
        let core = self.core.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(core) = core {
            core.run(py, |p| p.close_after_loans());
        }
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close(py);
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

    /// Samples one consumer may hold at once (the ``max_held`` it was made with).
    #[getter]
    fn max_held(&self) -> u32 {
        self.max_held
    }

    /// The payload type the channel declares, ``(name, version)``, or ``None``.
    #[getter]
    fn payload_type(&self) -> Option<(&str, u32)> {
        self.payload.as_ref().map(|t| (t.name(), t.version()))
    }

    /// The descriptor the channel fixes for every sample, or ``None``.
    #[getter]
    fn fixed_descriptor(&self) -> Option<PyDescriptor> {
        self.payload
            .as_ref()
            .and_then(|t| t.descriptor())
            .map(|d| PyDescriptor { d: *d })
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
pub(crate) struct Loaned {
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
    /// The frame array `with`/`.array` handed out (shaped loans), weakly:
    /// bips made it, so at publish it can tell its references from others.
    frame: Option<Py<PyWeakrefReference>>,
}

/// Keeps a producer (and its mapping) alive for a sealed frame array: held
/// by a `weakref.finalize` of the array's `base`, dropped when it dies.
#[pyclass(frozen, module = "bips")]
pub(crate) struct MappingKeeper {
    _core: Arc<Core>,
}

#[pymethods]
impl MappingKeeper {
    /// Called by the finalizer; dropping the finalizer's reference is what counts.
    fn __call__(&self) {}
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
    /// The descriptor set at loan time (or the channel's fixed one).
    geom: Option<Geom>,
    /// Loaned with a descriptor (`loan(shape=...)`): `with` binds the array.
    shaped: bool,
}

impl SampleMut {
    fn state(&self) -> std::sync::MutexGuard<'_, LoanState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn exports_error(&self, what: &str, exports: usize) -> PyErr {
        PyBufferError::new_err(format!(
            "cannot {what} this buffer: {exports} buffer export(s) (memoryview/NumPy array/tensor) \
             still use its memory; delete them first (del arr), write through a temporary \
             (np.frombuffer(buf, np.uint8)[:] = data), use the array `with \
             producer.loan(shape=..., dtype=...) as frame:` binds, or producer.send(array)"
        ))
    }

    /// The array bips made for a shaped loan, if it is alive (a new reference).
    fn managed_frame<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        let weak = self.state().frame.as_ref().map(|w| w.clone_ref(py))?;
        weak.bind(py).upgrade()
    }

    /// Before publishing a shaped loan whose bips-made array lives: checks
    /// that nothing but that one array object (bound to names in running
    /// frames) reaches the buffer, then seals it: makes it (and its `base`)
    /// read-only, ends its buffer export (the `base`'s memoryview is
    /// released, so NumPy can never make the array writable again), and
    /// keeps the mapping alive while the `base` lives, by a finalizer that
    /// holds `core`. `frame` is the caller's strong reference.
    fn seal_frame(py: Python<'_>, frame: &Bound<'_, PyAny>, core: Arc<Core>) -> PyResult<()> {
        // References to the array `base` (bips's, made with the buffer export):
        // the frame's `base` and ours below. Every view, slice or reshape of
        // the frame references it too (NumPy collapses view bases to it).
        let base = frame.getattr("base")?;
        // SAFETY: a live object (we hold a reference); reads its count.
        let base_refs = unsafe { ffi::Py_REFCNT(base.as_ptr()) };
        // References to the frame: ours (`frame`) and at most one more: the
        // `with` target (or `.array`'s name). Any other (an alias, a
        // memoryview, a tensor) is refused.
        // SAFETY: as above.
        let frame_refs = unsafe { ffi::Py_REFCNT(frame.as_ptr()) };
        let refused = |what: String| {
            PyBufferError::new_err(format!(
                "cannot publish this frame: {what} could write into it after the consumers \
                 see it. Delete them (del v) or copy (v.copy()) before publishing, and keep \
                 the frame array bound to one name (the `with` target)"
            ))
        };
        if base_refs > 2 {
            return Err(refused(format!(
                "{} view(s) of the frame array (slices, reshapes, transposes) are alive and",
                base_refs - 2
            )));
        }
        if frame_refs > 2 {
            return Err(refused(format!(
                "{} other reference(s) to the frame array (aliases, memoryviews, tensors) \
                 are alive and",
                frame_refs - 2
            )));
        }
        for a in [frame, &base] {
            a.getattr("flags")?.setattr("writeable", false)?;
        }
        let keeper = Bound::new(py, MappingKeeper { _core: core })?;
        py.import("weakref")?
            .getattr("finalize")?
            .call1((&base, keeper))?;
        // NumPy's memoryview of our export: releasing it ends the export
        // (`__releasebuffer__`); the arrays keep pointing at the bytes, which
        // the keeper keeps mapped, read-only for good (NumPy asks that
        // memoryview before it lets `writeable` become True again).
        base.getattr("base")?.call_method0("release")?;
        Ok(())
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
        // A shaped loan publishes the bytes its descriptor covers by default.
        let default_len = match &self.geom {
            Some(g) => usize::try_from(g.d.extent().map_err(desc_err)?).unwrap_or(usize::MAX),
            None => self.capacity,
        };
        let len = length.unwrap_or(default_len);
        if len > self.capacity {
            return Err(new_err(
                Kind::InvalidOptions,
                format!("length {len} exceeds the buffer size {}", self.capacity),
            ));
        }
        let meta: Vec<u8> = match meta {
            None => Vec::new(),
            // memoryview(meta).tobytes(): the buffer protocol of `meta` (a
            // bytes-like object) is CPython's, usable from every abi3 level.
            Some(m) => PyMemoryView::from(m)
                .map_err(|_| {
                    pyo3::exceptions::PyTypeError::new_err(
                        "meta must be a bytes-like object (bytes, bytearray, memoryview)",
                    )
                })?
                .call_method0("tobytes")?
                .extract()?,
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
        let frame = self.managed_frame(py);
        let own_exports = usize::from(frame.is_some());
        let core = {
            let st = self.state();
            if st.loaned.is_some() && st.exports > own_exports {
                return Err(self.exports_error("publish", st.exports - own_exports));
            }
            st.loaned.as_ref().map(|l| l.core.clone())
        };
        if let (Some(f), Some(core)) = (&frame, core) {
            SampleMut::seal_frame(py, f, core)?;
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
        {
            let mut st = self.state();
            st.seq = Some(seq);
            st.frame = None;
        }
        drop(frame);
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

    /// The NumPy array of a shaped loan's buffer (the one ``with`` binds):
    /// made by bips, so publishing can check that no other view of it lives
    /// and then make it read-only. ``BufferError`` for a loan without
    /// descriptor.
    #[getter]
    fn array<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        if this.geom.is_none() {
            return Err(PyBufferError::new_err(
                "this loan has no descriptor: loan(shape=..., dtype=...) gives a shaped array; \
                 else np.frombuffer(buf, np.uint8)",
            ));
        }
        if let Some(f) = this.managed_frame(py) {
            return Ok(f);
        }
        // The buffer export (raising BufferError once published) ...
        #[cfg(not(feature = "abi3-py38"))]
        let view = PyMemoryView::from(slf.as_any())?.into_any();
        // (on the cp38-abi3 wheel: an export with `__array_interface__`,
        // counted the same way; sealing `release()`s it as a memoryview)
        #[cfg(feature = "abi3-py38")]
        let view = SampleMut::export(slf)?.into_any();
        // ... wrapped by NumPy in `base`, and the frame, a view of it: views
        // of the frame collapse their `base` to `base`, not to the frame.
        let base = py.import("numpy")?.getattr("asarray")?.call1((view,))?;
        let frame = base.call_method0("view")?;
        drop(base);
        let weak = PyWeakrefReference::new(&frame)?;
        this.state().frame = Some(weak.unbind());
        Ok(frame)
    }

    /// The descriptor of a shaped loan (or the channel's fixed one), or ``None``.
    #[getter]
    fn descriptor(&self) -> Option<PyDescriptor> {
        self.geom.as_ref().map(|g| PyDescriptor { d: g.d })
    }

    /// ``self``; for a loan made with ``shape=``/``descriptor=``, the NumPy
    /// array of its buffer (``.array``).
    fn __enter__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        if slf.get().shaped {
            return SampleMut::array(slf);
        }
        Ok(slf.clone().into_any())
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

    /// ``np.array(buf)`` / ``np.asarray(buf)`` fallback (the buffer protocol
    /// comes first): raises the reason the buffer protocol refused (a
    /// published loan), rather than NumPy making an object array.
    #[cfg(not(feature = "abi3-py38"))]
    #[pyo3(signature = (dtype = None, copy = None))]
    fn __array__<'py>(
        slf: &Bound<'py, Self>,
        dtype: Option<&Bound<'py, PyAny>>,
        copy: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let view = PyMemoryView::from(slf.as_any())?;
        let arr = slf
            .py()
            .import("numpy")?
            .getattr("asarray")?
            .call1((view,))?;
        crate::frames::array_as(arr, dtype, copy)
    }

    /// ``np.asarray(buf)`` on the cp38-abi3 wheel (no buffer protocol): the
    /// writable array of the loan (shaped by its descriptor, else 1-D
    /// bytes), an export: ``publish()`` raises ``BufferError`` while the
    /// array or any view of it lives, as with a memoryview on the cp311 wheel.
    #[cfg(feature = "abi3-py38")]
    #[pyo3(signature = (dtype = None, copy = None))]
    fn __array__<'py>(
        slf: &Bound<'py, Self>,
        dtype: Option<&Bound<'py, PyAny>>,
        copy: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let export = SampleMut::export(slf)?;
        let arr = crate::export::Export::array(&export)?;
        crate::frames::array_as(arr, dtype, copy)
    }

    /// # Safety
    /// Called by CPython with a valid `view` (buffer protocol).
    #[cfg(not(feature = "abi3-py38"))]
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let this = slf.get();
        let mut st = this.state();
        let Some(loaned) = st.loaned.as_ref() else {
            return Err(this.done_err(&st));
        };
        if let Some(geom) = &this.geom {
            // SAFETY: `view` is CPython's; the loan's buffer (`capacity`
            // bytes, the descriptor validated against them at loan time) is
            // ours until publish, which refuses while exports other than the
            // bips-made array live (and seals that one first); `view.obj`
            // keeps this object (its `geom` and its `Arc` of the producer)
            // alive while the export lives.
            unsafe { geom.fill(view, slf.as_any(), loaned.ptr(), false, flags, "this loan")? };
            st.exports += 1;
            return Ok(());
        }
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
    #[cfg(not(feature = "abi3-py38"))]
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        self.unexport();
    }
}

#[cfg(feature = "abi3-py38")]
fn unexport_loan(obj: &Bound<'_, PyAny>) {
    if let Ok(s) = obj.cast::<SampleMut>() {
        s.get().unexport();
    }
}

impl SampleMut {
    /// Why the buffer can no longer be written (published or given back).
    fn done_err(&self, st: &LoanState) -> PyErr {
        let msg = match st.seq {
            Some(seq) => format!("this buffer was published as #{seq}: it is no longer writable"),
            None => "this buffer was given back: it is no longer writable".to_owned(),
        };
        PyBufferError::new_err(msg)
    }

    /// A counted, writable export of the loan for NumPy (cp38-abi3 wheel).
    #[cfg(feature = "abi3-py38")]
    fn export<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, crate::export::Export>> {
        let py = slf.py();
        let this = slf.get();
        let bytes;
        let geom = match &this.geom {
            Some(g) => g,
            None => {
                bytes = crate::frames::bytes_geom(this.capacity);
                &bytes
            }
        };
        let iface = {
            let mut st = this.state();
            let Some(loaned) = st.loaned.as_ref() else {
                return Err(this.done_err(&st));
            };
            let iface = geom.array_interface(py, loaned.ptr(), false, "this loan")?;
            st.exports += 1;
            iface
        };
        // The export count was raised: publish and discard refuse (and the
        // loan, with its `Arc` of the producer, stays) until the export is
        // freed or released, which lowers it (also if making it fails here).
        crate::export::Export::new(py, slf.clone().into_any().unbind(), unexport_loan, iface)
    }

    /// Ends one export (buffer protocol or `Export`).
    fn unexport(&self) {
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

/// `"shm"` or `"memfd"`.
fn parse_backend(s: &str) -> PyResult<bips::Backend> {
    match s {
        "shm" => Ok(bips::Backend::Shm),
        "memfd" => Ok(bips::Backend::Memfd),
        _ => Err(new_err(
            Kind::InvalidOptions,
            format!("backend must be \"shm\" or \"memfd\", not {s:?}"),
        )),
    }
}
