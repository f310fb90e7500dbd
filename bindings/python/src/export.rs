//! Exports without the buffer protocol: the cp38-abi3 wheel (feature
//! `abi3-py38`), built for CPython 3.8+, whose stable ABI has no
//! `bf_getbuffer` slot before 3.11.
//!
//! An [`Export`] is one view of a sample or a loan, counted like a buffer
//! export: made, it raises its owner's export count; freed (or `release()`d,
//! when a shaped loan's frame is sealed) it lowers it again. It shows the
//! bytes through `__array_interface__` (version 3), so `np.asarray(export)`
//! is a NumPy array of the shared memory whose `base` is the export: the
//! count stays raised exactly as long as that array or any view of it lives,
//! as with a memoryview on the cp311 wheel. `Sample.__array__` and
//! `SampleMut.__array__` make one, so `np.asarray(sample)` and
//! `np.asarray(buf)` work (and keep the lifetime rules) on both wheels.
//!
//! `Sample.raw` on this wheel: a `ctypes` array over the bytes (it has the
//! buffer protocol: ctypes implements it inside CPython, not through the
//! stable ABI) that holds an `Export` as an attribute, wrapped in a read-only
//! memoryview: `memoryview.obj` is the ctypes array, which keeps the export.

use std::sync::Mutex as StdMutex;

use pyo3::exceptions::PyBufferError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyMemoryView};

/// One view of a sample or a loan for NumPy (see the module docs).
#[pyclass(frozen, module = "bips", name = "_Export")]
pub(crate) struct Export {
    /// The sample or loan whose export count this raised; `None` once
    /// lowered (`release()` or drop).
    owner: StdMutex<Option<Py<PyAny>>>,
    /// Lowers the owner's export count (with the GIL held).
    unexport: fn(&Bound<'_, PyAny>),
    /// The array interface of the bytes, computed at export time.
    iface: Py<PyDict>,
}

impl Export {
    /// A new export of `owner`, whose count the caller already raised
    /// (dropping the result, also on failure, lowers it).
    pub(crate) fn new<'py>(
        py: Python<'py>,
        owner: Py<PyAny>,
        unexport: fn(&Bound<'_, PyAny>),
        iface: Bound<'py, PyDict>,
    ) -> PyResult<Bound<'py, Export>> {
        Bound::new(
            py,
            Export {
                owner: StdMutex::new(Some(owner)),
                unexport,
                iface: iface.unbind(),
            },
        )
    }

    fn end(&self, py: Python<'_>) {
        let owner = self.owner.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(owner) = owner {
            (self.unexport)(owner.bind(py));
        }
    }

    /// The NumPy array of this export (`np.asarray(self)`).
    pub(crate) fn array<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("numpy")?.getattr("asarray")?.call1((slf,))
    }

    /// A read-only memoryview of the 1-D bytes this export covers, through a
    /// ctypes array that keeps the export alive.
    pub(crate) fn memoryview<'py>(
        slf: &Bound<'py, Self>,
        addr: usize,
        len: usize,
    ) -> PyResult<Bound<'py, PyMemoryView>> {
        let py = slf.py();
        let ctypes = py.import("ctypes")?;
        let ty = ctypes.getattr("c_ubyte")?.mul(len)?;
        let arr = ty.call_method1("from_address", (addr,))?;
        // The ctypes array does not own the memory: this attribute keeps the
        // export (and so the hold on the buffer) as long as the array lives,
        // and the memoryview keeps the array (`memoryview.obj`).
        arr.setattr("_bips_export", slf)?;
        // ctypes says "<B"; cast to "B" (as the cp311 wheel's raw memoryview,
        // and so that indexing works), then read-only. Each memoryview shares
        // the one managed buffer, whose `obj` is the ctypes array.
        let mv = PyMemoryView::from(&arr)?
            .call_method1("cast", ("B",))?
            .call_method0("toreadonly")?;
        Ok(mv.cast_into::<PyMemoryView>()?)
    }
}

#[pymethods]
impl Export {
    /// NumPy's array interface (version 3) of the exported bytes; refused
    /// once the export ended (a sealed frame's).
    #[getter]
    fn __array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        if self
            .owner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
        {
            return Err(PyBufferError::new_err(
                "this bips export ended (its frame was published and sealed)",
            ));
        }
        Ok(self.iface.bind(py).clone())
    }

    /// Ends the export now (a shaped loan's frame, sealed at publish: the
    /// array stays, read-only, without counting as an export). Idempotent.
    fn release(&self, py: Python<'_>) {
        self.end(py);
    }
}

impl Drop for Export {
    fn drop(&mut self) {
        let owner = self
            .owner
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(owner) = owner {
            // Freed by Python (the GIL is held) or, on a failed creation,
            // by the caller, which holds it too.
            Python::attach(|py| (self.unexport)(owner.bind(py)));
        }
    }
}
