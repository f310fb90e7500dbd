//! Frames and tensors: `bips_descriptor` (what a sample's bytes are) and
//! `bips_payload_type` (what a channel carries), the C mirror of
//! `bips::Descriptor` and `bips::PayloadType`.
//!
//! A C struct is untrusted input like a descriptor from another process:
//! every conversion to Rust goes through the same parser as the wire form
//! (`bips::Descriptor::decode`), so an unknown dtype, more than 8 dimensions
//! or 4 planes, or text that is not NUL-terminated printable ASCII is a
//! `BIPS_E_DESCRIPTOR` status, never undefined behaviour.

use std::ffi::{c_char, CStr};

use crate::{bips_status, ffi, out_arg, Fail, FfiResult, BIPS_E_DESCRIPTOR};

/// Element type of a descriptor (`bips_descriptor.dtype`): one of
/// `BIPS_DTYPE_*`, the wire codes of the Rust `bips::DType`.
pub type bips_dtype = u32;
/// No element type: a zeroed descriptor (never valid in a call).
pub const BIPS_DTYPE_NONE: bips_dtype = 0;
/// `uint8`
pub const BIPS_DTYPE_U8: bips_dtype = 1;
/// `int8`
pub const BIPS_DTYPE_I8: bips_dtype = 2;
/// `uint16`
pub const BIPS_DTYPE_U16: bips_dtype = 3;
/// `int16`
pub const BIPS_DTYPE_I16: bips_dtype = 4;
/// `uint32`
pub const BIPS_DTYPE_U32: bips_dtype = 5;
/// `int32`
pub const BIPS_DTYPE_I32: bips_dtype = 6;
/// `uint64`
pub const BIPS_DTYPE_U64: bips_dtype = 7;
/// `int64`
pub const BIPS_DTYPE_I64: bips_dtype = 8;
/// IEEE 754 half precision
pub const BIPS_DTYPE_F16: bips_dtype = 9;
/// `float`
pub const BIPS_DTYPE_F32: bips_dtype = 10;
/// `double`
pub const BIPS_DTYPE_F64: bips_dtype = 11;
/// bfloat16
pub const BIPS_DTYPE_BF16: bips_dtype = 12;
/// `bool`, one byte, 0 or 1
pub const BIPS_DTYPE_BOOL: bips_dtype = 13;
/// two `float` (complex64)
pub const BIPS_DTYPE_C64: bips_dtype = 14;
/// two `double` (complex128)
pub const BIPS_DTYPE_C128: bips_dtype = 15;

/// Most dimensions of a descriptor.
pub const BIPS_MAX_DIMS: u32 = 8;
/// Most planes of a descriptor's plane table.
pub const BIPS_MAX_PLANES: u32 = 4;
/// Bytes of a descriptor's text fields (`format`, `colorimetry`), the
/// terminating NUL included: at most 15 characters.
pub const BIPS_TEXT_SIZE: u32 = 16;
/// Bytes of a payload type name, the terminating NUL included: at most 63
/// characters.
pub const BIPS_TYPE_NAME_SIZE: u32 = 64;

/// One plane of a planar frame (I420, NV12, ...): plane 0 is the luma plane
/// the array fields describe; the table lists every plane, plane 0 included.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct bips_plane {
    /// Bytes from the buffer's start to the plane's first row.
    pub offset: u64,
    /// Bytes between two rows.
    pub stride: u32,
    /// Rows.
    pub rows: u32,
    /// Bytes of pixels per row (`<= stride`).
    pub row_bytes: u32,
    /// 0 (ignored).
    pub reserved: u32,
}

/// What a sample's bytes are: element type, shape, byte strides, byte offset,
/// and optionally a pixel format, a colorimetry and a plane table. Make one
/// with `bips_descriptor_image` / `bips_descriptor_contiguous`, adjust the
/// fields (e.g. `strides[0]` for padded rows), name the format with
/// `bips_descriptor_set_format`; `bips_descriptor_validate` checks it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct bips_descriptor {
    /// `BIPS_DTYPE_*`.
    pub dtype: bips_dtype,
    /// Dimensions used, 0..=`BIPS_MAX_DIMS`.
    pub ndim: u32,
    /// Elements per dimension (entries past `ndim` are ignored).
    pub shape: [u64; BIPS_MAX_DIMS as usize],
    /// Bytes between neighbours along each dimension; may be negative or 0.
    pub strides: [i64; BIPS_MAX_DIMS as usize],
    /// Bytes from the buffer's start to element `[0, ..., 0]`.
    pub offset: u64,
    /// Pixel format (a fourcc or GStreamer name: "RGB", "GRAY16_LE", "NV12"):
    /// printable ASCII, NUL-terminated; "" for none.
    pub format: [c_char; BIPS_TEXT_SIZE as usize],
    /// Colorimetry (e.g. "bt709"): printable ASCII, NUL-terminated; "" for none.
    pub colorimetry: [c_char; BIPS_TEXT_SIZE as usize],
    /// Planes used, 0..=`BIPS_MAX_PLANES` (0 for packed formats).
    pub nplanes: u32,
    /// 0 (ignored).
    pub reserved: u32,
    /// The plane table (entries past `nplanes` are ignored).
    pub planes: [bips_plane; BIPS_MAX_PLANES as usize],
}

/// What a channel carries: a name ("image/rgb8", printable ASCII, 1 to 63
/// characters), a version, and optionally a descriptor every sample has.
/// All zero: no type (an untyped channel).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct bips_payload_type {
    /// The name, NUL-terminated ("" for no type).
    pub name: [c_char; BIPS_TYPE_NAME_SIZE as usize],
    /// The version.
    pub version: u32,
    /// 1 when `descriptor` is the channel's fixed descriptor, else 0.
    pub has_descriptor: u32,
    /// The descriptor every sample has (when `has_descriptor` is 1).
    pub descriptor: bips_descriptor,
}

pub(crate) const NO_DESCRIPTOR: bips_descriptor = bips_descriptor {
    dtype: BIPS_DTYPE_NONE,
    ndim: 0,
    shape: [0; BIPS_MAX_DIMS as usize],
    strides: [0; BIPS_MAX_DIMS as usize],
    offset: 0,
    format: [0; BIPS_TEXT_SIZE as usize],
    colorimetry: [0; BIPS_TEXT_SIZE as usize],
    nplanes: 0,
    reserved: 0,
    planes: [bips_plane {
        offset: 0,
        stride: 0,
        rows: 0,
        row_bytes: 0,
        reserved: 0,
    }; BIPS_MAX_PLANES as usize],
};

pub(crate) const NO_TYPE: bips_payload_type = bips_payload_type {
    name: [0; BIPS_TYPE_NAME_SIZE as usize],
    version: 0,
    has_descriptor: 0,
    descriptor: NO_DESCRIPTOR,
};

fn descriptor_fail(e: bips::DescriptorError) -> Fail {
    Fail::from(bips::Error::Descriptor(e))
}

/// The bytes of a NUL-terminated C text field of `N` bytes (without the NUL).
fn c_text<const N: usize>(raw: &[c_char; N], field: &'static str) -> FfiResult<Vec<u8>> {
    let bytes: Vec<u8> = raw.iter().map(|&c| c as u8).collect();
    match bytes.iter().position(|&b| b == 0) {
        Some(n) => Ok(bytes[..n].to_vec()),
        None => Err(Fail::new(
            BIPS_E_DESCRIPTOR,
            format!("`{field}` is not NUL-terminated within its {N} bytes"),
        )),
    }
}

/// Writes `s` (ASCII, shorter than `N`) into a C text field, NUL-padded.
fn put_text<const N: usize>(out: &mut [c_char; N], s: &str) {
    *out = [0; N];
    for (o, b) in out.iter_mut().zip(s.bytes().take(N - 1)) {
        *o = b as c_char;
    }
}

/// The Rust descriptor of a C one, checked as the wire form is (through
/// `Descriptor::decode`: dtype, counts, text); bounds are not checked.
pub(crate) fn descriptor_from_c(d: &bips_descriptor) -> FfiResult<bips::Descriptor> {
    let dtype = u8::try_from(d.dtype)
        .ok()
        .filter(|&c| bips::DType::from_code(c).is_some())
        .ok_or_else(|| {
            Fail::new(
                BIPS_E_DESCRIPTOR,
                format!(
                    "sample descriptor: unknown element type code {} (use BIPS_DTYPE_*)",
                    d.dtype
                ),
            )
        })?;
    let ndim = d.ndim as usize;
    if ndim > BIPS_MAX_DIMS as usize {
        return Err(descriptor_fail(bips::DescriptorError::TooManyDims(ndim)));
    }
    let nplanes = d.nplanes as usize;
    if nplanes > BIPS_MAX_PLANES as usize {
        return Err(descriptor_fail(bips::DescriptorError::TooManyPlanes(
            nplanes,
        )));
    }
    // The documented wire form (core/src/descriptor.rs), version 1.
    let mut w = [0u8; 320];
    w[0] = 1;
    w[1] = dtype;
    w[2] = ndim as u8;
    w[3] = nplanes as u8;
    w[8..16].copy_from_slice(&d.offset.to_le_bytes());
    for i in 0..ndim {
        w[16 + 8 * i..24 + 8 * i].copy_from_slice(&d.shape[i].to_le_bytes());
        w[80 + 8 * i..88 + 8 * i].copy_from_slice(&d.strides[i].to_le_bytes());
    }
    let format = c_text(&d.format, "format")?;
    let color = c_text(&d.colorimetry, "colorimetry")?;
    // Both fit: c_text stops before the NUL of a 16-byte field.
    w[144..144 + format.len()].copy_from_slice(&format);
    w[160..160 + color.len()].copy_from_slice(&color);
    for (i, p) in d.planes.iter().take(nplanes).enumerate() {
        let o = 176 + 24 * i;
        w[o..o + 8].copy_from_slice(&p.offset.to_le_bytes());
        w[o + 8..o + 12].copy_from_slice(&p.stride.to_le_bytes());
        w[o + 12..o + 16].copy_from_slice(&p.rows.to_le_bytes());
        w[o + 16..o + 20].copy_from_slice(&p.row_bytes.to_le_bytes());
    }
    bips::Descriptor::decode(&w)
        .map_err(descriptor_fail)?
        .ok_or_else(|| Fail::new(BIPS_E_DESCRIPTOR, "sample descriptor: version 0"))
}

/// The C form of a Rust descriptor.
pub(crate) fn descriptor_to_c(d: &bips::Descriptor) -> bips_descriptor {
    let mut out = NO_DESCRIPTOR;
    out.dtype = d.dtype() as u8 as bips_dtype;
    out.ndim = d.ndim() as u32;
    out.shape[..d.ndim()].copy_from_slice(d.shape());
    out.strides[..d.ndim()].copy_from_slice(d.strides());
    out.offset = d.offset();
    put_text(&mut out.format, d.format().unwrap_or(""));
    put_text(&mut out.colorimetry, d.colorimetry().unwrap_or(""));
    out.nplanes = d.planes().len() as u32;
    for (o, p) in out.planes.iter_mut().zip(d.planes()) {
        *o = bips_plane {
            offset: p.offset,
            stride: p.stride,
            rows: p.rows,
            row_bytes: p.row_bytes,
            reserved: 0,
        };
    }
    out
}

/// A payload type from its C arguments.
///
/// # Safety
/// `name` is null or nul-terminated; `fixed` is null or readable.
pub(crate) unsafe fn payload_type_args(
    name: *const c_char,
    version: u32,
    fixed: *const bips_descriptor,
) -> FfiResult<bips::PayloadType> {
    if name.is_null() {
        return Err(Fail::invalid("payload type name is NULL"));
    }
    // SAFETY: non-null and nul-terminated (the caller's contract).
    let name = unsafe { CStr::from_ptr(name) };
    let name = name
        .to_str()
        .map_err(|_| Fail::invalid("the payload type name is not ASCII"))?;
    let t = bips::PayloadType::new(name, version).map_err(|e| {
        Fail::invalid(format!(
            "payload type name {name:?}: {e} (1 to 63 printable ASCII characters)"
        ))
    })?;
    // SAFETY: null or readable (the caller's contract).
    Ok(match unsafe { fixed.as_ref() } {
        Some(d) => {
            let d = descriptor_from_c(d)?;
            // Sizes that overflow are refused now; the fit in a buffer at create.
            d.extent().map_err(descriptor_fail)?;
            t.with_descriptor(d)
        }
        None => t,
    })
}

/// The Rust payload type of a C one (`None` when it is all zero).
pub(crate) fn payload_type_from_c(
    t: &bips_payload_type,
    what: &str,
) -> FfiResult<Option<bips::PayloadType>> {
    let name = c_text(&t.name, "payload type name")?;
    if name.is_empty() {
        if t.version != 0 || t.has_descriptor != 0 {
            return Err(Fail::invalid(format!(
                "{what} has a version or descriptor but no name"
            )));
        }
        return Ok(None);
    }
    let name = String::from_utf8(name)
        .map_err(|_| Fail::invalid(format!("{what}: the name is not ASCII")))?;
    let p = bips::PayloadType::new(&name, t.version)
        .map_err(|e| Fail::invalid(format!("{what}: name {name:?}: {e}")))?;
    Ok(Some(match t.has_descriptor {
        0 => p,
        1 => p.with_descriptor(descriptor_from_c(&t.descriptor)?),
        n => {
            return Err(Fail::invalid(format!(
                "{what}.has_descriptor is {n}: use 0 or 1"
            )))
        }
    }))
}

/// The C form of a payload type (all zero for `None`).
pub(crate) fn payload_type_to_c(t: Option<&bips::PayloadType>) -> bips_payload_type {
    let Some(t) = t else { return NO_TYPE };
    let mut out = NO_TYPE;
    put_text(&mut out.name, t.name());
    out.version = t.version();
    if let Some(d) = t.descriptor() {
        out.has_descriptor = 1;
        out.descriptor = descriptor_to_c(d);
    }
    out
}

fn dtype_arg(dtype: bips_dtype) -> FfiResult<bips::DType> {
    u8::try_from(dtype)
        .ok()
        .and_then(bips::DType::from_code)
        .ok_or_else(|| {
            Fail::new(
                BIPS_E_DESCRIPTOR,
                format!("unknown element type code {dtype} (use BIPS_DTYPE_*)"),
            )
        })
}

/// Stores in `*out` a C-contiguous (row-major, packed) array of `ndim`
/// dimensions `shape[0..ndim]` of `dtype`, without format.
/// `BIPS_E_DESCRIPTOR` for an unknown dtype, `ndim > BIPS_MAX_DIMS` or sizes
/// that overflow.
///
/// # Safety
/// `shape` is null (with `ndim` 0) or readable for `ndim` entries; `out` is
/// null or writable.
#[no_mangle]
pub unsafe extern "C" fn bips_descriptor_contiguous(
    dtype: bips_dtype,
    ndim: usize,
    shape: *const u64,
    out: *mut bips_descriptor,
) -> bips_status {
    ffi(|| {
        // SAFETY: caller's contract for `out`.
        let out = unsafe { out_arg(out, "out is NULL") }?;
        *out = NO_DESCRIPTOR;
        let dtype = dtype_arg(dtype)?;
        if ndim > BIPS_MAX_DIMS as usize {
            return Err(descriptor_fail(bips::DescriptorError::TooManyDims(ndim)));
        }
        let shape: &[u64] = if ndim == 0 {
            &[]
        } else if shape.is_null() {
            return Err(Fail::invalid("shape is NULL but ndim is not 0"));
        } else {
            // SAFETY: non-null and readable for `ndim` entries (caller's contract).
            unsafe { std::slice::from_raw_parts(shape, ndim) }
        };
        *out = descriptor_to_c(&bips::Descriptor::new(dtype, shape).map_err(descriptor_fail)?);
        Ok(())
    })
}

/// Stores in `*out` a packed image: `(height, width, channels)`, or
/// `(height, width)` when `channels` is 1, of `dtype`, rows not padded (set
/// `strides[0]` for padded rows, `bips_descriptor_set_format` for the format).
///
/// # Safety
/// `out` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn bips_descriptor_image(
    height: u64,
    width: u64,
    channels: u64,
    dtype: bips_dtype,
    out: *mut bips_descriptor,
) -> bips_status {
    ffi(|| {
        // SAFETY: caller's contract for `out`.
        let out = unsafe { out_arg(out, "out is NULL") }?;
        *out = NO_DESCRIPTOR;
        let d = bips::Descriptor::image(height, width, channels, dtype_arg(dtype)?)
            .map_err(descriptor_fail)?;
        *out = descriptor_to_c(&d);
        Ok(())
    })
}

/// Sets a text field after checking it (printable ASCII, at most 15 bytes).
///
/// # Safety
/// `d` null or writable; `text` null or nul-terminated.
unsafe fn set_text(
    d: *mut bips_descriptor,
    text: *const c_char,
    field: &'static str,
    pick: fn(&mut bips_descriptor) -> &mut [c_char; BIPS_TEXT_SIZE as usize],
) -> FfiResult {
    // SAFETY: caller's contract for `d`.
    let d = unsafe { out_arg(d, "descriptor is NULL") }?;
    let s = if text.is_null() {
        ""
    } else {
        // SAFETY: non-null and nul-terminated (caller's contract).
        unsafe { CStr::from_ptr(text) }
            .to_str()
            .unwrap_or("\u{fffd}")
    };
    let ok = s.len() < BIPS_TEXT_SIZE as usize && s.bytes().all(|b| b.is_ascii_graphic());
    if !ok {
        return Err(descriptor_fail(bips::DescriptorError::BadText(field)));
    }
    put_text(pick(d), s);
    Ok(())
}

/// Sets `d->format` (a fourcc or GStreamer format name: "RGB", "BGRx",
/// "GRAY16_LE", "NV12"; NULL or "" clears it). `BIPS_E_DESCRIPTOR` unless
/// printable ASCII of at most 15 characters (then `d` is unchanged).
///
/// # Safety
/// `d` is null or writable; `format` is null or nul-terminated.
#[no_mangle]
pub unsafe extern "C" fn bips_descriptor_set_format(
    d: *mut bips_descriptor,
    format: *const c_char,
) -> bips_status {
    // SAFETY: forwarded caller's contract.
    ffi(|| unsafe { set_text(d, format, "format", |d| &mut d.format) })
}

/// Sets `d->colorimetry` (e.g. "bt709", "sRGB"; NULL or "" clears it), as
/// `bips_descriptor_set_format` does the format.
///
/// # Safety
/// `d` is null or writable; `colorimetry` is null or nul-terminated.
#[no_mangle]
pub unsafe extern "C" fn bips_descriptor_set_colorimetry(
    d: *mut bips_descriptor,
    colorimetry: *const c_char,
) -> bips_status {
    // SAFETY: forwarded caller's contract.
    ffi(|| unsafe { set_text(d, colorimetry, "colorimetry", |d| &mut d.colorimetry) })
}

/// Checks `*d` as bips will: a known dtype, at most `BIPS_MAX_DIMS`
/// dimensions and `BIPS_MAX_PLANES` planes, NUL-terminated printable ASCII
/// text, and every element and plane inside a buffer of `len` bytes.
/// `BIPS_E_DESCRIPTOR` (with the reason in `bips_last_error_message()`)
/// otherwise.
///
/// # Safety
/// `d` is null or readable.
#[no_mangle]
pub unsafe extern "C" fn bips_descriptor_validate(
    d: *const bips_descriptor,
    len: usize,
) -> bips_status {
    ffi(|| {
        // SAFETY: caller's contract for `d`.
        let d = unsafe { d.as_ref() }.ok_or_else(|| Fail::invalid("descriptor is NULL"))?;
        descriptor_from_c(d)?
            .validate(len as u64)
            .map_err(descriptor_fail)
    })
}

/// Stores in `*out` the bytes a buffer needs for `*d`: one past the last
/// byte its elements and planes use (0 for an empty array without planes).
///
/// # Safety
/// `d` is null or readable; `out` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn bips_descriptor_extent(
    d: *const bips_descriptor,
    out: *mut u64,
) -> bips_status {
    ffi(|| {
        // SAFETY: caller's contract for `out`.
        let out = unsafe { out_arg(out, "out is NULL") }?;
        // SAFETY: caller's contract for `d`.
        let d = unsafe { d.as_ref() }.ok_or_else(|| Fail::invalid("descriptor is NULL"))?;
        *out = descriptor_from_c(d)?.extent().map_err(descriptor_fail)?;
        Ok(())
    })
}

/// Bytes per element of `dtype` (0 for an unknown code).
#[no_mangle]
pub extern "C" fn bips_dtype_size(dtype: bips_dtype) -> usize {
    dtype_arg(dtype).map_or(0, |d| d.size())
}

/// NumPy's name of `dtype` ("uint8", "float32", ...), or "unknown".
#[no_mangle]
pub extern "C" fn bips_dtype_name(dtype: bips_dtype) -> *const c_char {
    let name: &'static CStr = match dtype_arg(dtype) {
        Ok(bips::DType::U8) => c"uint8",
        Ok(bips::DType::I8) => c"int8",
        Ok(bips::DType::U16) => c"uint16",
        Ok(bips::DType::I16) => c"int16",
        Ok(bips::DType::U32) => c"uint32",
        Ok(bips::DType::I32) => c"int32",
        Ok(bips::DType::U64) => c"uint64",
        Ok(bips::DType::I64) => c"int64",
        Ok(bips::DType::F16) => c"float16",
        Ok(bips::DType::F32) => c"float32",
        Ok(bips::DType::F64) => c"float64",
        Ok(bips::DType::BF16) => c"bfloat16",
        Ok(bips::DType::Bool) => c"bool",
        Ok(bips::DType::C64) => c"complex64",
        Ok(bips::DType::C128) => c"complex128",
        _ => c"unknown",
    };
    name.as_ptr()
}

/// The answer of a descriptor getter when there is none.
pub(crate) fn no_descriptor() -> Fail {
    Fail::new(
        crate::BIPS_E_NO_DESCRIPTOR,
        "no descriptor: the sample carries none and its channel fixes none",
    )
}
