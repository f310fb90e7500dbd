//! Frames and tensors: `bips.Descriptor`, the shaped buffer-protocol export
//! geometry, `__array_interface__` and DLPack.
//!
//! A sample's descriptor is copied out of shared memory and validated once,
//! when the sample is received (`bips::Sample::descriptor`); every export
//! (buffer protocol, `__array_interface__`, DLPack) is built from that
//! validated copy, so a producer rewriting the slot later cannot change what
//! an export covers, and no export reaches past the sample.
//!
//! DLPack structs are written by hand from `dlpack.h` (version 1.0), so no
//! crate is needed: a capsule owns a boxed [`DlCtx`] that holds the shape and
//! strides arrays and a strong reference to the exporting object (whose export
//! count it raised); the DLPack deleter, which may run on any thread, takes the
//! GIL before it lowers the count and drops the reference.

#[cfg(not(feature = "abi3-py38"))]
use std::ffi::c_int;
use std::ffi::{c_void, CStr, CString};

use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::errors::{new_err, Kind};

/// Most dimensions of a descriptor (`bips_core::descriptor::MAX_DIMS`).
pub(crate) const MAX_DIMS: usize = 8;

/// The Python exception for a descriptor error.
pub(crate) fn desc_err(e: impl std::fmt::Display) -> PyErr {
    new_err(Kind::Descriptor, format!("sample descriptor: {e}"))
}

/// Parses a dtype: a name (`"uint8"`, `"u8"`, `"bfloat16"`) or anything
/// `numpy.dtype()` accepts (`np.uint8`, `np.dtype("<u2")`), little-endian.
pub(crate) fn parse_dtype(obj: &Bound<'_, PyAny>) -> PyResult<bips::DType> {
    let name: String = if let Ok(s) = obj.extract::<String>() {
        s
    } else {
        let np = obj.py().import("numpy").map_err(|_| {
            new_err(
                Kind::InvalidOptions,
                "dtype must be a name such as \"uint8\" (numpy is not installed)",
            )
        })?;
        let dt = np.getattr("dtype")?.call1((obj,))?;
        let order: String = dt.getattr("byteorder")?.extract()?;
        if order == ">" {
            return Err(desc_err(format!(
                "dtype {} is big-endian: descriptors are little-endian (use .astype(dtype.newbyteorder('<')))",
                dt.str()?
            )));
        }
        dt.getattr("name")?.extract()?
    };
    bips::DType::from_name(&name).ok_or_else(|| {
        let all: Vec<&str> = bips::DType::ALL.iter().map(|d| d.name()).collect();
        desc_err(format!(
            "unknown element type {name:?}: use one of {}",
            all.join(", ")
        ))
    })
}

/// The `__array_interface__` typestr of a dtype (`None` for bfloat16).
pub(crate) fn typestr(d: bips::DType) -> Option<&'static str> {
    use bips::DType as D;
    Some(match d {
        D::U8 => "|u1",
        D::I8 => "|i1",
        D::U16 => "<u2",
        D::I16 => "<i2",
        D::U32 => "<u4",
        D::I32 => "<i4",
        D::U64 => "<u8",
        D::I64 => "<i8",
        D::F16 => "<f2",
        D::F32 => "<f4",
        D::F64 => "<f8",
        D::Bool => "|b1",
        D::C64 => "<c8",
        D::C128 => "<c16",
        _ => return None, // bfloat16
    })
}

fn no_format_err(what: &str) -> PyErr {
    PyBufferError::new_err(format!(
        "{what} is bfloat16, which has no buffer-protocol format: use DLPack \
         (torch.from_dlpack(sample)), or the plain bytes (sample.raw)"
    ))
}

/// A frame/tensor descriptor: element type, shape, byte strides, offset and
/// optionally pixel format, colorimetry and planes.
///
/// ``Descriptor(dtype, shape, strides=None, *, offset=0, format=None,
/// colorimetry=None, planes=None)``: ``dtype`` a name (``"uint8"``,
/// ``"float32"``, ``"bfloat16"``, ...) or a NumPy dtype; ``strides`` in bytes
/// (default C-contiguous); ``planes`` a sequence of ``(offset, stride, rows,
/// row_bytes)``. Raises ``DescriptorError`` when it is not well-formed.
#[pyclass(
    frozen,
    eq,
    hash,
    skip_from_py_object,
    module = "bips",
    name = "Descriptor"
)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct PyDescriptor {
    pub(crate) d: bips::Descriptor,
}

#[pymethods]
impl PyDescriptor {
    #[new]
    #[pyo3(signature = (dtype, shape, strides = None, *, offset = 0, format = None,
                        colorimetry = None, planes = None))]
    fn new(
        dtype: &Bound<'_, PyAny>,
        shape: Vec<u64>,
        strides: Option<Vec<i64>>,
        offset: u64,
        format: Option<&str>,
        colorimetry: Option<&str>,
        planes: Option<Vec<(u64, u32, u32, u32)>>,
    ) -> PyResult<Self> {
        let mut d = bips::Descriptor::new(parse_dtype(dtype)?, &shape).map_err(desc_err)?;
        if let Some(s) = strides {
            d = d.with_strides(&s).map_err(desc_err)?;
        }
        d = d.with_offset(offset);
        if let Some(f) = format {
            d = d.with_format(f).map_err(desc_err)?;
        }
        if let Some(c) = colorimetry {
            d = d.with_colorimetry(c).map_err(desc_err)?;
        }
        if let Some(p) = planes {
            let p: Vec<bips::Plane> = p
                .into_iter()
                .map(|(offset, stride, rows, row_bytes)| bips::Plane {
                    offset,
                    stride,
                    rows,
                    row_bytes,
                })
                .collect();
            d = d.with_planes(&p).map_err(desc_err)?;
        }
        d.extent().map_err(desc_err)?;
        Ok(PyDescriptor { d })
    }

    /// NumPy's name of the element type (``"uint8"``, ``"bfloat16"``, ...).
    #[getter]
    fn dtype(&self) -> &'static str {
        self.d.dtype().name()
    }

    /// Bytes per element.
    #[getter]
    fn itemsize(&self) -> usize {
        self.d.dtype().size()
    }

    /// Elements per dimension.
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.d.shape())
    }

    /// Bytes between neighbours along each dimension.
    #[getter]
    fn strides<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.d.strides())
    }

    /// Number of dimensions.
    #[getter]
    fn ndim(&self) -> usize {
        self.d.ndim()
    }

    /// Bytes from the buffer's start to the first element.
    #[getter]
    fn offset(&self) -> u64 {
        self.d.offset()
    }

    /// The pixel format (``"RGBA"``, ``"GRAY16_LE"``, ``"NV12"``, ...), if any.
    #[getter]
    fn format(&self) -> Option<&str> {
        self.d.format()
    }

    /// The colorimetry (``"bt709"``, ``"sRGB"``, ...), if any.
    #[getter]
    fn colorimetry(&self) -> Option<&str> {
        self.d.colorimetry()
    }

    /// The plane table: ``(offset, stride, rows, row_bytes)`` per plane.
    #[getter]
    fn planes(&self) -> Vec<(u64, u32, u32, u32)> {
        self.d
            .planes()
            .iter()
            .map(|p| (p.offset, p.stride, p.rows, p.row_bytes))
            .collect()
    }

    /// The PEP 3118 buffer format (``"<B"``, ``"<H"``, ...); ``None`` for bfloat16.
    #[getter]
    fn buffer_format(&self) -> Option<&'static str> {
        self.d.dtype().buffer_format()
    }

    /// The ``__array_interface__`` typestr (``"|u1"``, ``"<f4"``); ``None`` for bfloat16.
    #[getter]
    fn typestr(&self) -> Option<&'static str> {
        typestr(self.d.dtype())
    }

    /// Bytes needed from the buffer's start: one past the last byte used.
    #[getter]
    fn nbytes(&self) -> PyResult<u64> {
        self.d.extent().map_err(desc_err)
    }

    /// Whether the elements are densely packed in row-major order.
    #[getter]
    fn is_c_contiguous(&self) -> bool {
        self.d.is_c_contiguous()
    }

    fn __repr__(&self) -> String {
        format!("<bips.Descriptor {}>", self.d)
    }
}

/// The geometry of a shaped buffer-protocol / DLPack export, computed once
/// from a validated descriptor. Its arrays are what `Py_buffer.shape` /
/// `.strides` / `.format` point at: they live (unmoved, in the heap) as long
/// as the exporting object.
pub(crate) struct Geom {
    pub(crate) d: bips::Descriptor,
    shape: Vec<ffi::Py_ssize_t>,
    strides: Vec<ffi::Py_ssize_t>,
    // (`format`, `nbytes`, `f_contig`: for the buffer protocol only.)
    #[cfg_attr(feature = "abi3-py38", allow(dead_code))]
    format: Option<CString>,
    itemsize: usize,
    /// Byte offset of element [0, ..., 0] (0 for an empty array).
    pub(crate) offset: usize,
    /// Bytes of the elements (product of the shape times the item size).
    #[cfg_attr(feature = "abi3-py38", allow(dead_code))]
    nbytes: usize,
    c_contig: bool,
    #[cfg_attr(feature = "abi3-py38", allow(dead_code))]
    f_contig: bool,
}

impl Geom {
    /// `d` must be validated against the buffer it describes.
    pub(crate) fn new(d: bips::Descriptor) -> Result<Geom, bips::DescriptorError> {
        let of = bips::DescriptorError::Overflow;
        let conv = |v: u64| ffi::Py_ssize_t::try_from(v).map_err(|_| of);
        let shape = d
            .shape()
            .iter()
            .map(|&n| conv(n))
            .collect::<Result<Vec<_>, _>>()?;
        let strides = d
            .strides()
            .iter()
            .map(|&s| ffi::Py_ssize_t::try_from(s).map_err(|_| of))
            .collect::<Result<Vec<_>, _>>()?;
        let itemsize = d.dtype().size();
        let count = usize::try_from(d.len()?).map_err(|_| of)?;
        let nbytes = count.checked_mul(itemsize).ok_or(of)?;
        let empty = d.is_empty();
        let offset = if empty {
            0
        } else {
            usize::try_from(d.offset()).map_err(|_| of)?
        };
        let f_contig = {
            let mut acc = itemsize as i64;
            d.shape().iter().zip(d.strides()).all(|(&n, &s)| {
                let ok = n <= 1 || s == acc;
                acc = acc.saturating_mul(n.max(1) as i64);
                ok
            })
        };
        Ok(Geom {
            format: d
                .dtype()
                .buffer_format()
                .map(|f| CString::new(f).expect("formats have no NUL")),
            d,
            shape,
            strides,
            itemsize,
            offset,
            nbytes,
            c_contig: d.is_c_contiguous() || empty,
            f_contig: f_contig || empty,
        })
    }

    /// Fills `view` for a shaped export of the buffer at `base`.
    ///
    /// # Safety
    /// `view` is the Py_buffer CPython handed to `__getbuffer__`; `obj` the
    /// exporting object, which owns `self` (so the arrays outlive the view)
    /// and keeps the `base` bytes valid while the export lives; the
    /// descriptor was validated against those bytes.
    #[cfg(not(feature = "abi3-py38"))]
    pub(crate) unsafe fn fill(
        &self,
        view: *mut ffi::Py_buffer,
        obj: &Bound<'_, PyAny>,
        base: *mut u8,
        readonly: bool,
        flags: c_int,
        what: &str,
    ) -> PyResult<()> {
        let Some(format) = &self.format else {
            return Err(no_format_err(what));
        };
        let has = |f: c_int| flags & f == f;
        // The contiguity bits of PyBUF_C/F/ANY_CONTIGUOUS (each also implies STRIDES).
        const C_BIT: c_int = 0x20;
        const F_BIT: c_int = 0x40;
        const ANY_BIT: c_int = 0x80;
        let not_contig = |kind: &str| {
            PyBufferError::new_err(format!(
                "{what} is not {kind}-contiguous ({}): ask for a strided buffer \
                 (np.asarray(x), memoryview(x)), or use the plain bytes (sample.raw)",
                self.d
            ))
        };
        if flags & C_BIT != 0 && !self.c_contig {
            return Err(not_contig("C"));
        }
        if flags & F_BIT != 0 && !self.f_contig {
            return Err(not_contig("Fortran"));
        }
        if flags & ANY_BIT != 0 && !self.c_contig && !self.f_contig {
            return Err(not_contig("C- or Fortran"));
        }
        if !has(ffi::PyBUF_STRIDES) && !self.c_contig {
            return Err(not_contig("C"));
        }
        // SAFETY: see the function's contract. The offset lies inside the
        // validated buffer (0 for an empty array); the arrays are owned by
        // `obj`, which `view.obj` keeps alive (a new strong reference).
        unsafe {
            let v = &mut *view;
            v.obj = obj.clone().into_ptr();
            v.buf = base.wrapping_add(self.offset).cast::<c_void>();
            v.len = self.nbytes as ffi::Py_ssize_t;
            v.readonly = c_int::from(readonly);
            v.itemsize = self.itemsize as ffi::Py_ssize_t;
            v.format = if flags & ffi::PyBUF_FORMAT != 0 {
                format.as_ptr().cast_mut()
            } else {
                std::ptr::null_mut()
            };
            v.ndim = self.shape.len() as c_int;
            v.shape = if flags & ffi::PyBUF_ND != 0 {
                self.shape.as_ptr().cast_mut()
            } else {
                std::ptr::null_mut()
            };
            v.strides = if has(ffi::PyBUF_STRIDES) {
                self.strides.as_ptr().cast_mut()
            } else {
                std::ptr::null_mut()
            };
            v.suboffsets = std::ptr::null_mut();
            v.internal = std::ptr::null_mut();
        }
        Ok(())
    }

    /// `__array_interface__` (version 3) of the array at `base`.
    pub(crate) fn array_interface<'py>(
        &self,
        py: Python<'py>,
        base: *const u8,
        readonly: bool,
        what: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let ts = typestr(self.d.dtype()).ok_or_else(|| no_format_err(what))?;
        let dict = PyDict::new(py);
        dict.set_item("version", 3)?;
        dict.set_item("shape", PyTuple::new(py, &self.shape)?)?;
        dict.set_item("typestr", ts)?;
        let addr = base.wrapping_add(self.offset) as usize;
        dict.set_item("data", (addr, readonly))?;
        if self.c_contig {
            dict.set_item("strides", py.None())?;
        } else {
            dict.set_item("strides", PyTuple::new(py, &self.strides)?)?;
        }
        Ok(dict)
    }

    /// Shape and element strides for DLPack; strides that are not whole
    /// elements raise `BufferError`.
    fn dlpack_dims(&self) -> PyResult<([i64; MAX_DIMS], [i64; MAX_DIMS])> {
        let mut shape = [0i64; MAX_DIMS];
        let mut strides = [0i64; MAX_DIMS];
        let size = self.itemsize as isize;
        for (i, (&n, &s)) in self.shape.iter().zip(&self.strides).enumerate() {
            if s % size != 0 {
                return Err(PyBufferError::new_err(format!(
                    "DLPack strides count elements: byte stride {s} of dimension {i} is not a \
                     multiple of the {size}-byte element ({}); use the buffer protocol \
                     (np.asarray(sample))",
                    self.d
                )));
            }
            shape[i] = n as i64;
            strides[i] = (s / size) as i64;
        }
        Ok((shape, strides))
    }
}

/// The geometry of a plain byte export (1-D `uint8`), for a sample without descriptor.
pub(crate) fn bytes_geom(len: usize) -> Geom {
    let d = bips::Descriptor::new(bips::DType::U8, &[len as u64])
        .expect("a 1-D byte array of a buffer's length is well-formed");
    Geom::new(d).expect("a buffer's length fits isize")
}

// ---------------------------------------------------------------- DLPack

#[repr(C)]
#[derive(Clone, Copy)]
struct DLDevice {
    device_type: i32,
    device_id: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct DLDataType {
    code: u8,
    bits: u8,
    lanes: u16,
}

#[repr(C)]
struct DLTensor {
    data: *mut c_void,
    device: DLDevice,
    ndim: i32,
    dtype: DLDataType,
    shape: *mut i64,
    strides: *mut i64,
    byte_offset: u64,
}

#[repr(C)]
struct DLManagedTensor {
    dl_tensor: DLTensor,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

#[repr(C)]
struct DLPackVersion {
    major: u32,
    minor: u32,
}

#[repr(C)]
struct DLManagedTensorVersioned {
    version: DLPackVersion,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensorVersioned)>,
    flags: u64,
    dl_tensor: DLTensor,
}

const KDL_CPU: i32 = 1;
const DLPACK_FLAG_BITMASK_READ_ONLY: u64 = 1;
const NAME: &CStr = c"dltensor";
const NAME_VERSIONED: &CStr = c"dltensor_versioned";

/// What a DLPack capsule owns: the managed tensor (first, so a pointer to it
/// is a pointer to the box), its shape and strides, and the exporter.
#[repr(C)]
struct DlCtx<M> {
    managed: M,
    shape: [i64; MAX_DIMS],
    strides: [i64; MAX_DIMS],
    /// The exporting object; its export count was raised for this capsule.
    owner: Option<Py<PyAny>>,
    /// Lowers the owner's export count (with the GIL held).
    unexport: fn(&Bound<'_, PyAny>),
}

/// Ends one DLPack export: lowers the count and drops the reference, with
/// the GIL (the deleter may be called from any thread, with or without it).
fn finish<M>(ctx: Box<DlCtx<M>>) {
    // SAFETY: Py_IsInitialized only reads interpreter state.
    if unsafe { ffi::Py_IsInitialized() } == 0 {
        // The interpreter is gone: nothing to give back to; leak the reference.
        std::mem::forget(ctx.owner);
        return;
    }
    Python::attach(|py| {
        let DlCtx {
            owner, unexport, ..
        } = *ctx;
        if let Some(owner) = owner {
            unexport(owner.bind(py));
            drop(owner);
        }
    });
}

unsafe extern "C" fn deleter(m: *mut DLManagedTensor) {
    if m.is_null() {
        return;
    }
    // SAFETY: `m` is the `managed` field at the start of a `DlCtx` box made by
    // `to_capsule`; its `manager_ctx` points at that box, which the deleter
    // (called once, by the capsule's destructor or the consumer) now owns.
    let ctx = unsafe { Box::from_raw((*m).manager_ctx.cast::<DlCtx<DLManagedTensor>>()) };
    finish(ctx);
}

unsafe extern "C" fn deleter_versioned(m: *mut DLManagedTensorVersioned) {
    if m.is_null() {
        return;
    }
    // SAFETY: as in `deleter`, for the versioned struct.
    let ctx = unsafe { Box::from_raw((*m).manager_ctx.cast::<DlCtx<DLManagedTensorVersioned>>()) };
    finish(ctx);
}

/// The capsule destructor: a capsule still named "dltensor" (or
/// "dltensor_versioned") was never consumed, so its tensor is deleted here.
unsafe extern "C" fn capsule_destructor(capsule: *mut ffi::PyObject) {
    // SAFETY: called by CPython with the GIL for a live capsule; the names
    // are checked before the pointer is read, and a consumed capsule (renamed
    // "used_...") is left to its consumer.
    unsafe {
        if ffi::PyCapsule_IsValid(capsule, NAME.as_ptr()) == 1 {
            let m = ffi::PyCapsule_GetPointer(capsule, NAME.as_ptr()).cast::<DLManagedTensor>();
            if !m.is_null() {
                if let Some(d) = (*m).deleter {
                    d(m);
                }
            }
        } else if ffi::PyCapsule_IsValid(capsule, NAME_VERSIONED.as_ptr()) == 1 {
            let m = ffi::PyCapsule_GetPointer(capsule, NAME_VERSIONED.as_ptr())
                .cast::<DLManagedTensorVersioned>();
            if !m.is_null() {
                if let Some(d) = (*m).deleter {
                    d(m);
                }
            }
        }
    }
}

/// Checks the `__dlpack__` keyword arguments; returns whether to make a
/// versioned (DLPack >= 1.0) capsule.
pub(crate) fn dlpack_args(
    stream: Option<&Bound<'_, PyAny>>,
    max_version: Option<(u32, u32)>,
    dl_device: Option<(i32, i32)>,
    copy: Option<bool>,
) -> PyResult<bool> {
    if stream.is_some_and(|s| !s.is_none()) {
        return Err(PyBufferError::new_err(
            "a bips buffer is CPU memory: __dlpack__ takes stream=None only",
        ));
    }
    if dl_device.is_some_and(|d| d != (KDL_CPU, 0)) {
        return Err(PyBufferError::new_err(
            "a bips buffer is CPU memory (device (1, 0)); it cannot be exported to another device",
        ));
    }
    if copy == Some(true) {
        return Err(PyBufferError::new_err(
            "bips exports shared memory in place (copy=True is not supported): copy the result instead",
        ));
    }
    Ok(max_version.is_some_and(|(major, _)| major >= 1))
}

/// Makes a DLPack capsule of the array `geom` describes at `base`, owned by
/// `owner` (whose export count the caller already raised; `unexport` lowers it).
///
/// # Safety
/// `base` stays valid (and, when `readonly`, unwritten by this process)
/// while `owner` holds the raised export count.
pub(crate) unsafe fn to_capsule(
    py: Python<'_>,
    geom: &Geom,
    base: *mut u8,
    readonly: bool,
    versioned: bool,
    owner: Py<PyAny>,
    unexport: fn(&Bound<'_, PyAny>),
) -> PyResult<Py<PyAny>> {
    let (shape, strides) = match geom.dlpack_dims() {
        Ok(dims) => dims,
        Err(e) => {
            unexport(owner.bind(py));
            return Err(e);
        }
    };
    let (code, bits) = geom.d.dtype().dlpack();
    let tensor = || DLTensor {
        data: base.wrapping_add(geom.offset).cast(),
        device: DLDevice {
            device_type: KDL_CPU,
            device_id: 0,
        },
        ndim: geom.shape.len() as i32,
        dtype: DLDataType {
            code,
            bits,
            lanes: 1,
        },
        shape: std::ptr::null_mut(),
        strides: std::ptr::null_mut(),
        byte_offset: 0,
    };
    let (ptr, name): (*mut c_void, &CStr) = if versioned {
        let mut b = Box::new(DlCtx {
            managed: DLManagedTensorVersioned {
                version: DLPackVersion { major: 1, minor: 0 },
                manager_ctx: std::ptr::null_mut(),
                deleter: Some(deleter_versioned),
                flags: if readonly {
                    DLPACK_FLAG_BITMASK_READ_ONLY
                } else {
                    0
                },
                dl_tensor: tensor(),
            },
            shape,
            strides,
            owner: Some(owner),
            unexport,
        });
        b.managed.dl_tensor.shape = b.shape.as_mut_ptr();
        b.managed.dl_tensor.strides = b.strides.as_mut_ptr();
        let raw = Box::into_raw(b);
        // SAFETY: `raw` is the box just leaked; its first field is `managed`.
        unsafe { (*raw).managed.manager_ctx = raw.cast() };
        (raw.cast(), NAME_VERSIONED)
    } else {
        let mut b = Box::new(DlCtx {
            managed: DLManagedTensor {
                dl_tensor: tensor(),
                manager_ctx: std::ptr::null_mut(),
                deleter: Some(deleter),
            },
            shape,
            strides,
            owner: Some(owner),
            unexport,
        });
        b.managed.dl_tensor.shape = b.shape.as_mut_ptr();
        b.managed.dl_tensor.strides = b.strides.as_mut_ptr();
        let raw = Box::into_raw(b);
        // SAFETY: as above.
        unsafe { (*raw).managed.manager_ctx = raw.cast() };
        (raw.cast(), NAME)
    };
    // SAFETY: `ptr` points at the managed tensor (first field of its box);
    // `name` is a static C string; the destructor deletes an unconsumed tensor.
    let cap = unsafe { ffi::PyCapsule_New(ptr, name.as_ptr(), Some(capsule_destructor)) };
    if cap.is_null() {
        let err = PyErr::fetch(py);
        // SAFETY: the capsule was not made, so we still own the box: delete it
        // through its deleter (which lowers the export count).
        unsafe {
            if versioned {
                deleter_versioned(ptr.cast());
            } else {
                deleter(ptr.cast());
            }
        }
        return Err(err);
    }
    // SAFETY: a new reference returned by PyCapsule_New.
    Ok(unsafe { Bound::from_owned_ptr(py, cap) }.unbind())
}

/// The end of every `__array__`: NumPy's `dtype` and `copy` requests applied
/// to the array of a sample or loan (a cast, a copy, or the array itself).
pub(crate) fn array_as<'py>(
    arr: Bound<'py, PyAny>,
    dtype: Option<&Bound<'py, PyAny>>,
    copy: Option<bool>,
) -> PyResult<Bound<'py, PyAny>> {
    let arr = match dtype.filter(|d| !d.is_none()) {
        Some(dt) => arr.call_method1("astype", (dt,))?,
        None => arr,
    };
    if copy == Some(true) {
        return arr.call_method0("copy");
    }
    Ok(arr)
}
