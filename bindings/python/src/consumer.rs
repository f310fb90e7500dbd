//! `bips.Consumer` and `bips.Sample`.
//!
//! Lifetimes: a `bips::Sample<'c>` borrows its consumer, which Python cannot
//! express. A received sample is therefore detached with
//! [`bips::Sample::into_raw`] into a [`bips::RawSample`] (no borrow), which a
//! `bips.Sample` owns together with an `Arc` of the consumer. So:
//!
//! * the consumer (and its mapping of the segment) lives as long as any
//!   sample, and any buffer export, of it: a NumPy array's `base` chain ends
//!   at the `bips.Sample` (its `view.obj`), which holds the `Arc`;
//! * the hold on the buffer is given back (`Consumer::release_raw`) exactly
//!   once: by `release()` (refused while exports live), by `__exit__` or the
//!   last `__releasebuffer__` after it, or when the `bips.Sample` is freed
//!   (it cannot be freed while an export lives: the export holds a strong
//!   reference to it).

#[cfg(not(feature = "abi3-py38"))]
use std::ffi::c_int;
use std::sync::{Arc, Mutex as StdMutex};

use pyo3::exceptions::{PyBufferError, PyValueError};
#[cfg(not(feature = "abi3-py38"))]
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyMemoryView};

use crate::errors::{new_err, to_py, IntoPyResult, Kind};
use crate::frames::{bytes_geom, dlpack_args, to_capsule, Geom, PyDescriptor};
use crate::serial::{Serialized, Settle};
use crate::{deadline, parse_start, parse_trust, parse_wait, slice_until};

impl Settle for bips::Consumer {
    type Item = bips::RawSample;

    fn settle(&self, raw: bips::RawSample) {
        self.release_raw(raw);
    }
}

pub(crate) type Core = Serialized<bips::Consumer>;

/// What a blocking call got: a detached sample plus the copy of its metadata
/// and its descriptor (copied out of shared memory and validated against the
/// sample's length once, here: every export uses this copy).
pub(crate) struct Got {
    raw: bips::RawSample,
    meta: Vec<u8>,
    desc: Result<Option<bips::Descriptor>, String>,
}

pub(crate) fn detach_sample(s: bips::Sample<'_>) -> Got {
    let meta = s.meta().to_vec();
    let desc = s.descriptor().map_err(|e| e.to_string());
    Got {
        raw: s.into_raw(),
        meta,
        desc,
    }
}

/// Opens a channel as a reader and receives its samples in place.
///
/// ``Consumer(name, *, start="newest", wait="spin_then_park", prefault=False,
/// trust_owner=None, trust_any_owner=False)``
///
/// ``start``: ``"newest"`` (the newest retained sample, or the next one),
/// ``"oldest"`` (the oldest retained sample) or ``"next"`` (the next one
/// published). ``wait``: how ``recv`` waits, ``"spin_then_park"``, ``"spin"``
/// or ``"park"``. By default only a channel whose ``/dev/shm`` object is
/// owned by this process's effective uid is opened (root's too: uid 0 only);
/// another owner raises ``UntrustedOwner``. ``trust_owner``: a uid (or a list
/// of uids) also trusted, e.g. the producer's user; ``trust_any_owner=True``:
/// every owner (containers whose uids are not known in advance).
///
/// Blocking calls release the GIL. A ``Consumer`` may be shared by threads;
/// its calls are serialized. ``close()`` (or ``with``) detaches it; samples
/// still alive keep the mapping (and their buffers) until they are released.
#[pyclass(frozen, module = "bips", name = "Consumer")]
pub(crate) struct Consumer {
    core: StdMutex<Option<Arc<Core>>>,
    name: String,
    buffers: u32,
    buffer_size: u64,
    meta_size: u32,
    max_consumers: u32,
    max_held: u32,
    backpressure: &'static str,
    payload: Option<bips::PayloadType>,
}

impl Consumer {
    fn core(&self) -> PyResult<Arc<Core>> {
        self.core
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| PyValueError::new_err("operation on a closed bips.Consumer"))
    }

    pub(crate) fn wrap(&self, py: Python<'_>, core: &Arc<Core>, got: Got) -> PyResult<Py<Sample>> {
        let len = got.raw.len();
        let geom = match &got.desc {
            Ok(None) => Ok(bytes_geom(len)),
            Ok(Some(d)) => Geom::new(*d).map_err(|e| format!("sample descriptor: {e}")),
            Err(e) => Err(e.clone()),
        };
        let sample = Sample {
            desc: got.desc,
            geom,
            seq: got.raw.seq(),
            timestamp_ns: got.raw.timestamp_ns(),
            lagged: got.raw.lagged(),
            len,
            meta: got.meta,
            state: StdMutex::new(SampleState {
                held: Some(Held {
                    raw: Some(got.raw),
                    core: core.clone(),
                }),
                exports: 0,
                release_when_unexported: false,
                pinned: false,
            }),
        };
        // On failure `sample` drops, which gives the hold back.
        Py::new(py, sample)
    }

    fn push_impl(&self, py: Python<'_>, sample: &Sample) -> PyResult<()> {
        // (A closed consumer still takes its samples back.)
        if let Some(core) = self.core.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            if !sample.received_by(core) {
                return Err(PyValueError::new_err(
                    "this sample was received by another bips.Consumer",
                ));
            }
        }
        sample.release_impl(py)
    }

    fn recv_impl(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<Sample>> {
        let core = self.core()?;
        let deadline = deadline(timeout)?;
        // Fast path, GIL held: no wait needed when a sample is ready.
        let first = core.run(py, |c| c.try_recv().map(|o| o.map(detach_sample)));
        if let Some(got) = first.py_err()? {
            return self.wrap(py, &core, got);
        }
        loop {
            let Some(slice) = slice_until(deadline) else {
                return Err(to_py(bips::Error::Timeout));
            };
            // Block for one slice with the GIL released, then come back for
            // signals (Ctrl-C) and `close()`, and to let other threads take
            // the consumer in between.
            let got = py.detach(|| {
                core.run_detached(|c| match c.recv_timeout(slice) {
                    Ok(s) => Ok(Some(detach_sample(s))),
                    Err(bips::Error::Timeout) => Ok(None),
                    Err(e) => Err(e),
                })
            });
            if let Some(got) = got.py_err()? {
                return self.wrap(py, &core, got);
            }
            py.check_signals()?;
            self.core()?; // closed meanwhile?
        }
    }
}

#[pymethods]
impl Consumer {
    #[new]
    #[pyo3(signature = (
        name, *, start = "newest", wait = "spin_then_park", prefault = false,
        trust_owner = None, trust_any_owner = false, require_type = None, socket_dir = None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        name: &str,
        start: &str,
        wait: &str,
        prefault: bool,
        trust_owner: Option<&Bound<'_, PyAny>>,
        trust_any_owner: bool,
        require_type: Option<(String, u32)>,
        socket_dir: Option<std::path::PathBuf>,
    ) -> PyResult<Self> {
        let mut opts = bips::ConsumerOptions::new()
            .start(parse_start(start)?)
            .wait(parse_wait(wait)?)
            .prefault(prefault)
            .trust(parse_trust(trust_owner, trust_any_owner)?);
        if let Some((tname, version)) = require_type {
            opts = opts.require_type(crate::payload_type(&tname, version, None)?);
        }
        if let Some(d) = socket_dir {
            opts = opts.socket_dir(d);
        }
        let name = name.to_owned();
        // Opening may wait up to ~1 s for a producer still formatting.
        let consumer = py
            .detach(|| bips::Consumer::open_with(&name, &opts))
            .py_err()?;
        let g = *consumer.geometry();
        let payload = consumer.payload_type().copied();
        Ok(Consumer {
            payload,
            core: StdMutex::new(Some(Arc::new(Serialized::new(consumer)))),
            name,
            buffers: g.buffer_count,
            buffer_size: g.buffer_size,
            meta_size: g.meta_size,
            max_consumers: g.max_consumers,
            max_held: g.max_held,
            backpressure: match g.policy {
                bips::Backpressure::Block => "block",
                bips::Backpressure::DropOldest => "drop_oldest",
            },
        })
    }

    /// Receives the next sample, waiting at most ``timeout`` seconds (``None``:
    /// as long as it takes). Raises ``Timeout``, or ``Disconnected`` once the
    /// producer is gone and every remaining sample was received.
    #[pyo3(signature = (timeout = None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<Sample>> {
        self.recv_impl(py, timeout)
    }

    /// Receives the next sample if one is ready (no waiting), else ``None``.
    fn try_recv(&self, py: Python<'_>) -> PyResult<Option<Py<Sample>>> {
        let core = self.core()?;
        let got = core
            .run(py, |c| c.try_recv().map(|o| o.map(detach_sample)))
            .py_err()?;
        got.map(|g| self.wrap(py, &core, g)).transpose()
    }

    /// Alias of ``recv`` (the BIPS API's call shape).
    #[pyo3(signature = (timeout = None))]
    fn pull(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<Sample>> {
        self.recv_impl(py, timeout)
    }

    /// Alias of ``recv`` (the BIPS API's call shape).
    #[pyo3(name = "Pull", signature = (timeout = None))]
    fn pull_bips(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<Sample>> {
        self.recv_impl(py, timeout)
    }

    /// Releases ``sample`` (same as ``sample.release()``).
    fn push(&self, py: Python<'_>, sample: &Bound<'_, Sample>) -> PyResult<()> {
        self.push_impl(py, sample.get())
    }

    /// Releases ``sample`` (same as ``sample.release()``).
    #[pyo3(name = "Push")]
    fn push_bips(&self, py: Python<'_>, sample: &Bound<'_, Sample>) -> PyResult<()> {
        self.push_impl(py, sample.get())
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// The next sample; iteration ends when the channel disconnects.
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<Sample>>> {
        match self.recv_impl(py, None) {
            Ok(s) => Ok(Some(s)),
            Err(e) if crate::errors::is_kind(py, &e, crate::errors::Kind::Disconnected) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Receives the next sample without blocking the event loop (asyncio):
    /// ``sample = await consumer.arecv(timeout=None)``. While nothing is
    /// published the loop keeps running; the wait sleeps in bips's reactor
    /// thread (see the README, "Async receive"). Raises ``Timeout`` after
    /// ``timeout`` seconds, ``Disconnected`` as ``recv`` does. Cancelling
    /// it (``task.cancel()``, ``asyncio.wait_for``) loses no sample.
    #[pyo3(signature = (timeout = None))]
    fn arecv<'py>(slf: &Bound<'py, Self>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        crate::aio::coroutine(slf.py(), "arecv", (slf, timeout))
    }

    /// The wait object ``arecv`` drives (internal).
    #[pyo3(signature = (timeout = None))]
    fn _recv_wait(slf: &Bound<'_, Self>, timeout: Option<f64>) -> PyResult<crate::aio::RecvWait> {
        let core = slf.get().core()?;
        crate::aio::RecvWait::new(slf.clone().unbind(), core, timeout)
    }

    fn __aiter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// ``async for sample in consumer``: ends when the channel disconnects.
    fn __anext__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        crate::aio::coroutine(slf.py(), "anext", (slf,))
    }

    /// Detaches from the channel. Samples still alive keep the mapping and
    /// their buffers until they are released. Idempotent.
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

    /// Buffers in the channel's pool.
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

    /// Samples this consumer may hold at once: the channel's ``max_held``
    /// (chosen by its producer). Receiving with that many alive raises
    /// ``HeldLimit``.
    #[getter]
    fn max_held(&self) -> u32 {
        self.max_held
    }

    /// The channel's policy, set by its producer: ``"block"`` or ``"drop_oldest"``.
    #[getter]
    fn backpressure(&self) -> &'static str {
        self.backpressure
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
            "<bips.Consumer {:?} buffers={} buffer_size={}{}>",
            self.name,
            self.buffers,
            self.buffer_size,
            if self.closed() { " closed" } else { "" }
        )
    }
}

/// A hold on a buffer, with the consumer it must be given back to.
struct Held {
    /// Always `Some` until given back.
    raw: Option<bips::RawSample>,
    /// Keeps the consumer, and so its mapping, alive while the hold lasts.
    core: Arc<Core>,
}

impl Held {
    fn ptr(&self) -> *const u8 {
        self.raw.as_ref().map_or(std::ptr::null(), |r| r.as_ptr())
    }

    /// Gives the buffer back now, waiting for the consumer (GIL released
    /// while another thread holds it).
    fn release(mut self, py: Python<'_>) {
        if let Some(raw) = self.raw.take() {
            self.core.run(py, move |c| c.release_raw(raw));
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Dropped by the garbage collector or a buffer release: never wait.
        if let Some(raw) = self.raw.take() {
            self.core.settle_or_defer(raw);
        }
    }
}

struct SampleState {
    /// The hold; `None` once released.
    held: Option<Held>,
    /// Live buffer exports (memoryviews, NumPy arrays, tensors).
    exports: usize,
    /// `__exit__` ran while exports lived: release when the last one goes.
    release_when_unexported: bool,
    /// `__array_interface__` was read: an array may use the memory without
    /// an export the count could see, so the hold lasts until this object is
    /// freed (the array's `base` keeps it alive).
    pinned: bool,
}

/// A received sample: the producer's bytes, in place, read-only.
///
/// Supports the buffer protocol (``memoryview(s)``, ``np.frombuffer(s,
/// np.uint8)``, ``np.asarray(s)``, ``torch.frombuffer(s, ...)``): the views
/// share the shared-memory bytes and keep the sample (and its buffer) held
/// while they live. ``release()`` gives the buffer back early; it raises
/// ``BufferError`` while views exist. Leaving a ``with`` block releases the
/// sample now, or when its last view goes.
#[pyclass(frozen, module = "bips", name = "Sample")]
pub(crate) struct Sample {
    state: StdMutex<SampleState>,
    seq: u64,
    timestamp_ns: u64,
    lagged: u64,
    len: usize,
    meta: Vec<u8>,
    /// The validated descriptor (own or the channel's), or why it is unusable.
    desc: Result<Option<bips::Descriptor>, String>,
    /// The export geometry: the descriptor's, or 1-D bytes without one.
    geom: Result<Geom, String>,
}

impl Sample {
    fn state(&self) -> std::sync::MutexGuard<'_, SampleState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this sample came from `core` (a released one matches any).
    fn received_by(&self, core: &Arc<Core>) -> bool {
        self.state()
            .held
            .as_ref()
            .is_none_or(|h| Arc::ptr_eq(&h.core, core))
    }

    /// Explicit release: refuses while exports live; waits for the consumer.
    pub(crate) fn release_impl(&self, py: Python<'_>) -> PyResult<()> {
        let held = {
            let mut st = self.state();
            if st.exports > 0 {
                return Err(PyBufferError::new_err(format!(
                    "cannot release sample #{}: {} buffer export(s) (memoryview/NumPy array/tensor) \
                     still use its memory; delete them first",
                    self.seq, st.exports
                )));
            }
            if st.pinned && st.held.is_some() {
                return Err(PyBufferError::new_err(format!(
                    "cannot release sample #{}: its __array_interface__ was taken, and an array \
                     made from it may still use the memory; it is released when the sample \
                     is freed",
                    self.seq
                )));
            }
            st.held.take()
        };
        if let Some(held) = held {
            held.release(py);
        }
        Ok(())
    }
}

#[pymethods]
impl Sample {
    /// Gives the buffer back to the producer. Raises ``BufferError`` while
    /// buffer exports (memoryviews, arrays) are alive. Idempotent.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        self.release_impl(py)
    }

    /// Whether the sample was released (its bytes are no longer readable).
    #[getter]
    fn released(&self) -> bool {
        self.state().held.is_none()
    }

    /// Sequence number, strictly increasing for this consumer.
    #[getter]
    fn seq(&self) -> u64 {
        self.seq
    }

    /// The producer's timestamp, ``CLOCK_MONOTONIC`` nanoseconds (as
    /// ``time.monotonic_ns()``) unless it set its own.
    #[getter]
    fn timestamp_ns(&self) -> u64 {
        self.timestamp_ns
    }

    /// Samples lost just before this one (``drop_oldest`` channels; 0 else).
    #[getter]
    fn lagged(&self) -> u64 {
        self.lagged
    }

    /// The per-sample metadata (``meta_size`` bytes, a copy).
    #[getter]
    fn meta<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.meta)
    }

    /// Payload bytes.
    fn __len__(&self) -> usize {
        self.len
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Releases the sample, or, while buffer exports live, marks it to be
    /// released when the last one goes.
    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        {
            let mut st = self.state();
            if st.pinned {
                return Ok(false); // released when freed
            }
            if st.exports > 0 {
                st.release_when_unexported = true;
                return Ok(false);
            }
        }
        self.release_impl(py)?;
        Ok(false)
    }

    /// The sample's frame/tensor descriptor (its own, else the one its
    /// channel fixes), or ``None``. Raises ``DescriptorError`` when the
    /// producer wrote an unusable one.
    #[getter]
    fn descriptor(&self) -> PyResult<Option<PyDescriptor>> {
        match &self.desc {
            Ok(d) => Ok(d.map(|d| PyDescriptor { d })),
            Err(e) => Err(new_err(Kind::Descriptor, e.clone())),
        }
    }

    /// The plain bytes of the whole sample: a read-only 1-D ``memoryview``
    /// of ``len(sample)`` bytes (an export: it keeps the sample held).
    #[cfg(not(feature = "abi3-py38"))]
    #[getter]
    fn raw<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyMemoryView>> {
        let exporter = Bound::new(
            slf.py(),
            RawBytes {
                sample: slf.clone().unbind(),
            },
        )?;
        PyMemoryView::from(exporter.as_any())
    }

    /// The plain bytes of the whole sample: a read-only 1-D ``memoryview``
    /// of ``len(sample)`` bytes (an export: it keeps the sample held). On
    /// this wheel (no buffer protocol) the memoryview is of a ctypes array
    /// that holds the export.
    #[cfg(feature = "abi3-py38")]
    #[getter]
    fn raw<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyMemoryView>> {
        let export = Sample::export(slf, Some(bytes_geom(slf.get().len)))?;
        let addr = {
            let st = slf.get().state();
            st.held.as_ref().map_or(0, |h| h.ptr() as usize)
        };
        crate::export::Export::memoryview(&export, addr, slf.get().len)
    }

    /// NumPy's array interface (version 3): the shaped, typed, strided,
    /// read-only array. Reading it pins the sample: ``release()`` then
    /// refuses, and the buffer is given back when the sample is freed (an
    /// array made from the interface keeps it alive as its ``base``). Not on
    /// the cp38-abi3 wheel, where ``np.asarray(sample)`` goes through
    /// ``__array__`` (an export counted like a memoryview) instead.
    #[cfg(not(feature = "abi3-py38"))]
    #[getter]
    fn __array_interface__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let geom = self.geom_or_err()?;
        let mut st = self.state();
        let Some(held) = st.held.as_ref() else {
            return Err(self.released_err());
        };
        let d = geom.array_interface(py, held.ptr(), true, "this sample")?;
        st.pinned = true;
        Ok(d)
    }

    /// ``np.array(sample)`` / ``np.asarray(sample)`` fallback (the buffer
    /// protocol comes first): raises the reason the buffer protocol refused.
    #[cfg(not(feature = "abi3-py38"))]
    #[pyo3(signature = (dtype = None, copy = None))]
    fn __array__<'py>(
        slf: &Bound<'py, Self>,
        dtype: Option<&Bound<'py, PyAny>>,
        copy: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let view = PyMemoryView::from(slf.as_any())?;
        let np = py.import("numpy")?;
        let arr = np.getattr("asarray")?.call1((view,))?;
        crate::frames::array_as(arr, dtype, copy)
    }

    /// ``np.asarray(sample)`` / ``np.array(sample)`` on the cp38-abi3 wheel
    /// (no buffer protocol): the shaped, read-only array of an export that
    /// keeps the sample held while the array (or any view of it) lives;
    /// ``release()`` raises ``BufferError`` meanwhile.
    #[cfg(feature = "abi3-py38")]
    #[pyo3(signature = (dtype = None, copy = None))]
    fn __array__<'py>(
        slf: &Bound<'py, Self>,
        dtype: Option<&Bound<'py, PyAny>>,
        copy: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let export = Sample::export(slf, None)?;
        let arr = crate::export::Export::array(&export)?;
        crate::frames::array_as(arr, dtype, copy)
    }

    /// DLPack export (``np.from_dlpack(sample)``, ``torch.from_dlpack(sample)``):
    /// zero copy, CPU, read-only when the consumer speaks DLPack >= 1.0. The
    /// tensor keeps the sample held until it is deleted.
    #[pyo3(signature = (*, stream = None, max_version = None, dl_device = None, copy = None))]
    fn __dlpack__(
        slf: &Bound<'_, Self>,
        stream: Option<&Bound<'_, PyAny>>,
        max_version: Option<(u32, u32)>,
        dl_device: Option<(i32, i32)>,
        copy: Option<bool>,
    ) -> PyResult<Py<PyAny>> {
        let versioned = dlpack_args(stream, max_version, dl_device, copy)?;
        let this = slf.get();
        let geom = this.geom_or_err()?;
        let base = {
            let mut st = this.state();
            let Some(held) = st.held.as_ref() else {
                return Err(this.released_err());
            };
            let p = held.ptr().cast_mut();
            st.exports += 1;
            p
        };
        // SAFETY: the export count was raised: the hold (and the consumer's
        // mapping, through its `Arc`) lasts until the capsule's deleter lowers
        // it; the bytes are the producer's, never written by this process.
        unsafe {
            to_capsule(
                slf.py(),
                geom,
                base,
                true,
                versioned,
                slf.clone().into_any().unbind(),
                unexport_sample,
            )
        }
    }

    /// ``(1, 0)``: kDLCPU, device 0.
    fn __dlpack_device__(&self) -> (i32, i32) {
        (1, 0)
    }

    fn __repr__(&self) -> String {
        format!(
            "<bips.Sample seq={} len={} lagged={}{}>",
            self.seq,
            self.len,
            self.lagged,
            if self.released() { " released" } else { "" }
        )
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
        let Some(held) = st.held.as_ref() else {
            return Err(this.released_err());
        };
        if flags & ffi::PyBUF_WRITABLE != 0 {
            return Err(PyBufferError::new_err(
                "a bips.Sample is read-only: it is the producer's buffer, shared by every consumer",
            ));
        }
        if !matches!(this.desc, Ok(None)) {
            let geom = this.geom_or_err()?;
            // SAFETY: `view` is CPython's; this sample owns `geom` and, through
            // `view.obj` (a new strong reference), keeps the hold and the
            // consumer's mapping while the export lives (`exports > 0`); the
            // descriptor was validated against the sample's length.
            unsafe {
                geom.fill(
                    view,
                    slf.as_any(),
                    held.ptr().cast_mut(),
                    true,
                    flags,
                    "this sample",
                )?
            };
            st.exports += 1;
            return Ok(());
        }
        // SAFETY: `view` is the valid Py_buffer CPython handed us. The pointer
        // is `len` bytes inside the consumer's mapping (the length was bounded
        // by the buffer size on receipt). `view.obj` becomes a new strong
        // reference to this sample, which owns an `Arc` of the consumer (so the
        // mapping stays mapped) and the hold (so the producer does not rewrite
        // the buffer, S1) until the export is released: the hold is not given
        // back while `exports > 0`. Read-only (`readonly = 1`).
        let rc = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                held.ptr() as *mut std::ffi::c_void,
                this.len as ffi::Py_ssize_t,
                1,
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

impl Sample {
    /// A counted export of the sample for NumPy (cp38-abi3 wheel): its
    /// geometry (or `geom`, the plain bytes), read-only.
    #[cfg(feature = "abi3-py38")]
    fn export<'py>(
        slf: &Bound<'py, Self>,
        geom: Option<Geom>,
    ) -> PyResult<Bound<'py, crate::export::Export>> {
        let py = slf.py();
        let this = slf.get();
        let geom = match &geom {
            Some(g) => g,
            None => this.geom_or_err()?,
        };
        let iface = {
            let mut st = this.state();
            let Some(held) = st.held.as_ref() else {
                return Err(this.released_err());
            };
            let iface = geom.array_interface(py, held.ptr(), true, "this sample")?;
            st.exports += 1;
            iface
        };
        // The export count was raised: the hold (and the consumer's mapping,
        // through its `Arc`) lasts until the export is freed, which lowers it
        // (also if making it fails here).
        crate::export::Export::new(py, slf.clone().into_any().unbind(), unexport_sample, iface)
    }

    fn released_err(&self) -> PyErr {
        PyBufferError::new_err(format!(
            "sample #{} was released: its buffer is no longer readable",
            self.seq
        ))
    }

    fn geom_or_err(&self) -> PyResult<&Geom> {
        self.geom
            .as_ref()
            .map_err(|e| new_err(Kind::Descriptor, e.clone()))
    }

    /// Ends one export (buffer, raw bytes or DLPack).
    fn unexport(&self) {
        let held = {
            let mut st = self.state();
            st.exports = st.exports.saturating_sub(1);
            if st.exports == 0 && st.release_when_unexported {
                st.held.take()
            } else {
                None
            }
        };
        // May run during garbage collection: `Held::drop` never waits.
        drop(held);
    }
}

fn unexport_sample(obj: &Bound<'_, PyAny>) {
    if let Ok(s) = obj.cast::<Sample>() {
        s.get().unexport();
    }
}

/// The exporter behind ``Sample.raw``: the sample's plain bytes, 1-D ``uint8``.
#[cfg(not(feature = "abi3-py38"))]
#[pyclass(frozen, module = "bips")]
pub(crate) struct RawBytes {
    sample: Py<Sample>,
}

#[cfg(not(feature = "abi3-py38"))]
#[pymethods]
impl RawBytes {
    /// # Safety
    /// Called by CPython with a valid `view` (buffer protocol).
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let sample = slf.get().sample.get();
        let mut st = sample.state();
        let Some(held) = st.held.as_ref() else {
            return Err(sample.released_err());
        };
        if flags & ffi::PyBUF_WRITABLE != 0 {
            return Err(PyBufferError::new_err("a bips.Sample is read-only"));
        }
        // SAFETY: as in `Sample::__getbuffer__`: `len` bytes of the mapping,
        // held while `exports > 0`; `view.obj` keeps this object, and so the
        // sample, alive.
        let rc = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                held.ptr() as *mut std::ffi::c_void,
                sample.len as ffi::Py_ssize_t,
                1,
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
        self.sample.get().unexport();
    }
}
