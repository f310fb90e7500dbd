//! `Producer.send(array)`: the source array's buffer export and the strided
//! copy of its elements into a loaned buffer.

#[cfg(not(feature = "abi3-py38"))]
use std::ffi::CStr;

use pyo3::exceptions::PyBufferError;
#[cfg(not(feature = "abi3-py38"))]
use pyo3::ffi;
use pyo3::prelude::*;

use crate::frames::desc_err;

/// Copies of at least this many bytes release the GIL.
const DETACH_BYTES: usize = 64 * 1024;

/// A read-only, strided buffer export of the array `send` publishes.
///
/// On the cp38-abi3 wheel (no `PyObject_GetBuffer` in the stable ABI before
/// 3.11) the export is `numpy.asarray(memoryview(obj))`, whose memory the
/// array (held here) keeps alive; its `__array_interface__` gives the address.
pub(crate) struct Source {
    #[cfg(not(feature = "abi3-py38"))]
    view: Box<ffi::Py_buffer>,
    #[cfg(feature = "abi3-py38")]
    _array: Py<PyAny>,
    /// Address of the first element.
    buf: usize,
    pub(crate) dtype: bips::DType,
    shape: Vec<isize>,
    /// Byte strides (C-contiguous ones when the exporter gave none).
    strides: Vec<isize>,
}

// SAFETY: the export's pointers stay valid until `PyBuffer_Release` (in
// `Drop`, with the GIL); between, the copy only reads the memory they point
// at, which the export keeps alive whichever thread reads it.
unsafe impl Send for Source {}

impl Source {
    #[cfg(feature = "abi3-py38")]
    pub(crate) fn get(obj: &Bound<'_, PyAny>) -> PyResult<Source> {
        use pyo3::types::{PyDict, PyMemoryView};
        let py = obj.py();
        let not_buffer = |e: PyErr| {
            PyBufferError::new_err(format!(
                "send() takes a buffer-protocol object (a NumPy array, memoryview, bytes): {e}"
            ))
        };
        let view = PyMemoryView::from(obj).map_err(not_buffer)?;
        let np = py.import("numpy").map_err(|_| {
            PyBufferError::new_err(
                "send() reads the array through NumPy on this wheel (cp38-abi3, no buffer \
                 protocol): pip install numpy",
            )
        })?;
        let array = np.getattr("asarray")?.call1((view,)).map_err(not_buffer)?;
        let iface = array
            .getattr("__array_interface__")?
            .cast_into::<PyDict>()?;
        let item = |k: &str| -> PyResult<Bound<'_, PyAny>> {
            iface
                .get_item(k)?
                .ok_or_else(|| PyBufferError::new_err(format!("__array_interface__ has no {k}")))
        };
        let typestr: String = item("typestr")?.extract()?;
        let dtype = dtype_of_typestr(&typestr)?;
        let shape: Vec<isize> = item("shape")?.extract()?;
        if shape.len() > crate::frames::MAX_DIMS {
            return Err(desc_err(format!(
                "{} dimensions (at most {})",
                shape.len(),
                crate::frames::MAX_DIMS
            )));
        }
        let strides: Option<Vec<isize>> = item("strides")?.extract()?;
        let (buf, _readonly): (usize, bool) = item("data")?.extract()?;
        let strides = strides.unwrap_or_else(|| c_strides(&shape, dtype.size() as isize));
        Ok(Source {
            _array: array.unbind(),
            buf,
            dtype,
            shape,
            strides,
        })
    }

    #[cfg(not(feature = "abi3-py38"))]
    pub(crate) fn get(obj: &Bound<'_, PyAny>) -> PyResult<Source> {
        let mut view: Box<ffi::Py_buffer> = Box::new(ffi::Py_buffer::new());
        // SAFETY: `obj` is a live object and `view` an owned, zeroed Py_buffer;
        // on success it is released exactly once, in `Drop`.
        let rc =
            unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &mut *view, ffi::PyBUF_RECORDS_RO) };
        if rc != 0 {
            let e = PyErr::fetch(obj.py());
            return Err(PyBufferError::new_err(format!(
                "send() takes a buffer-protocol object (a NumPy array, memoryview, bytes): {e}"
            )));
        }
        let buf = view.buf as usize;
        let mut src = Source {
            buf,
            view,
            dtype: bips::DType::U8,
            shape: Vec::new(),
            strides: Vec::new(),
        };
        let v = &*src.view;
        let itemsize = usize::try_from(v.itemsize).unwrap_or(0);
        let format = if v.format.is_null() {
            "B".to_owned()
        } else {
            // SAFETY: a non-NULL format is a NUL-terminated string owned by the export.
            unsafe { CStr::from_ptr(v.format) }
                .to_string_lossy()
                .into_owned()
        };
        src.dtype = dtype_of(&format, itemsize)?;
        let ndim = usize::try_from(v.ndim).unwrap_or(0);
        if ndim > crate::frames::MAX_DIMS {
            return Err(desc_err(format!(
                "{ndim} dimensions (at most {})",
                crate::frames::MAX_DIMS
            )));
        }
        if ndim > 0 && v.shape.is_null() {
            src.shape = vec![v.len / v.itemsize.max(1)];
        } else {
            // SAFETY: `ndim` entries, owned by the export.
            src.shape = (0..ndim).map(|i| unsafe { *v.shape.add(i) }).collect();
        }
        if v.strides.is_null() {
            let mut acc = v.itemsize;
            let mut st = vec![0; src.shape.len()];
            for i in (0..src.shape.len()).rev() {
                st[i] = acc;
                acc *= src.shape[i].max(1);
            }
            src.strides = st;
        } else {
            // SAFETY: `ndim` entries, owned by the export.
            src.strides = (0..ndim).map(|i| unsafe { *v.strides.add(i) }).collect();
        }
        Ok(src)
    }

    pub(crate) fn shape_u64(&self) -> Vec<u64> {
        self.shape.iter().map(|&n| n as u64).collect()
    }

    /// Bytes of the elements.
    pub(crate) fn len(&self) -> usize {
        self.shape.iter().product::<isize>() as usize * self.dtype.size()
    }

    /// Copies the elements, in C order, densely to `dst`.
    ///
    /// # Safety
    /// `dst` is valid for `self.len()` bytes of writes and aliases nothing
    /// the export covers.
    pub(crate) unsafe fn copy_to(&self, py: Python<'_>, dst: *mut u8) {
        let n = self.len();
        // Addresses as integers: the closure may run without the GIL, on this
        // thread, while the export (held by `self`) keeps the source alive.
        let (src, dst) = (self.buf, dst as usize);
        let (shape, strides, size) = (&self.shape, &self.strides, self.dtype.size());
        let copy = move || {
            // SAFETY: the caller's contract for `dst`; the export covers every
            // element `copy_strided` reads (its shape and strides describe it).
            unsafe { copy_strided(src as *const u8, shape, strides, size, dst as *mut u8) }
        };
        if n >= DETACH_BYTES {
            py.detach(copy);
        } else {
            copy();
        }
    }
}

#[cfg(not(feature = "abi3-py38"))]
impl Drop for Source {
    fn drop(&mut self) {
        // SAFETY: got by PyObject_GetBuffer in `get`, released once; a
        // `Source` lives only inside a call that holds the GIL.
        unsafe { ffi::PyBuffer_Release(&mut *self.view) };
    }
}

/// C-contiguous byte strides of `shape`.
#[cfg(feature = "abi3-py38")]
fn c_strides(shape: &[isize], itemsize: isize) -> Vec<isize> {
    let mut acc = itemsize;
    let mut st = vec![0; shape.len()];
    for i in (0..shape.len()).rev() {
        st[i] = acc;
        acc *= shape[i].max(1);
    }
    st
}

/// The element type of an `__array_interface__` typestr (`"<f4"`, `"|u1"`).
#[cfg(feature = "abi3-py38")]
fn dtype_of_typestr(ts: &str) -> PyResult<bips::DType> {
    if let Some(d) = bips::DType::ALL
        .iter()
        .copied()
        .find(|&d| crate::frames::typestr(d) == Some(ts))
    {
        return Ok(d);
    }
    if ts.starts_with('>') {
        return Err(desc_err(format!(
            "array typestr {ts:?} is big-endian: descriptors are little-endian \
             (a.astype(a.dtype.newbyteorder('<')))"
        )));
    }
    Err(desc_err(format!(
        "send() cannot describe elements of type {ts:?}: use a NumPy array of a plain number type"
    )))
}

/// The element type of a PEP 3118 format of `itemsize` bytes.
#[cfg(not(feature = "abi3-py38"))]
fn dtype_of(format: &str, itemsize: usize) -> PyResult<bips::DType> {
    use bips::DType as D;
    let (order, code) = match format.chars().next() {
        Some(c @ ('@' | '=' | '<' | '>' | '!')) => (c, &format[1..]),
        _ => ('@', format),
    };
    let d = match (code, itemsize) {
        ("b", 1) => D::I8,
        ("B", 1) => D::U8,
        ("?", 1) => D::Bool,
        ("h", 2) => D::I16,
        ("H", 2) => D::U16,
        ("i" | "l" | "q", 4) => D::I32,
        ("I" | "L" | "Q", 4) => D::U32,
        ("i" | "l" | "q" | "n", 8) => D::I64,
        ("I" | "L" | "Q" | "N", 8) => D::U64,
        ("e", 2) => D::F16,
        ("f", 4) => D::F32,
        ("d", 8) => D::F64,
        ("Zf", 8) => D::C64,
        ("Zd", 16) => D::C128,
        _ => {
            return Err(desc_err(format!(
                "send() cannot describe elements of buffer format {format:?} ({itemsize} bytes): \
                 use a NumPy array of a plain number type"
            )))
        }
    };
    if matches!(order, '>' | '!') && itemsize > 1 {
        return Err(desc_err(format!(
            "buffer format {format:?} is big-endian: descriptors are little-endian \
             (a.astype(a.dtype.newbyteorder('<')))"
        )));
    }
    Ok(d)
}

/// Copies a strided array densely (C order) to `dst`: memcpy of the largest
/// contiguous inner block, an odometer over the outer dimensions.
///
/// # Safety
/// Every element `src + sum(i_k * strides[k])` is readable for `itemsize`
/// bytes; `dst` is writable for `product(shape) * itemsize` bytes and does
/// not overlap them.
unsafe fn copy_strided(
    src: *const u8,
    shape: &[isize],
    strides: &[isize],
    itemsize: usize,
    dst: *mut u8,
) {
    if shape.contains(&0) {
        return;
    }
    // Coalesce the innermost dimensions that are contiguous.
    let mut inner = itemsize as isize;
    let mut k = shape.len();
    while k > 0 && (strides[k - 1] == inner || shape[k - 1] == 1) {
        inner *= shape[k - 1];
        k -= 1;
    }
    let outer = &shape[..k];
    let mut idx = vec![0isize; k];
    let mut out = dst;
    loop {
        let off: isize = idx.iter().zip(strides).map(|(&i, &s)| i * s).sum();
        // SAFETY: the function's contract: element `idx` and the `inner`
        // contiguous bytes after it are in the source; `out` advances through
        // `dst` by `inner` per block, product(shape) * itemsize in all.
        unsafe {
            std::ptr::copy_nonoverlapping(src.offset(off), out, inner as usize);
            out = out.add(inner as usize);
        }
        // Next outer index, last dimension fastest.
        let mut d = k;
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < outer[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}
