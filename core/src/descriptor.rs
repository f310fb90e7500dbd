//! What a sample's bytes are: the frame/tensor descriptor and the payload type
//! of a channel, as pure data parsed from untrusted bytes.
//!
//! A [`Descriptor`] says "this is a 1080x1920x3 `u8` image, rows of 5760 bytes,
//! BGR": element type ([`DType`]), up to [`MAX_DIMS`] dimensions with their
//! byte strides, the byte offset of the first element, and optionally a pixel
//! format, a colorimetry and a plane table for planar video. It travels beside
//! each sample (in the per-sample metadata area, before the user's own
//! metadata bytes) encoded in [`DESCRIPTOR_SIZE`] little-endian bytes, the
//! same in Rust, C and Python:
//!
//! ```text
//! offset size  field
//!   0     1    version: 1 (0 = no descriptor)
//!   1     1    dtype code (DType as u8)
//!   2     1    ndim, 0..=8
//!   3     1    nplanes, 0..=4
//!   4     4    reserved, 0
//!   8     8    offset: bytes from the buffer's start to element [0, ..., 0]
//!  16    64    shape[8]    (u64; entries past ndim are 0)
//!  80    64    strides[8]  (i64 bytes, may be negative or 0; entries past ndim are 0)
//! 144    16    pixel format: ASCII, NUL-padded (a fourcc or a GStreamer name: "RGBA", "GRAY16_LE", "NV12")
//! 160    16    colorimetry: ASCII, NUL-padded (e.g. GStreamer's "bt709", "sRGB", "2:4:5:4")
//! 176    96    planes[4], 24 bytes each: offset u64, stride u32, rows u32, row_bytes u32, reserved u32
//! 272    48    reserved, 0
//! ```
//!
//! For packed formats the array fields describe the whole frame (e.g.
//! `(h, w, 4)` for RGBA, `(h, w)` `u16` for GRAY16_LE; padded rows show as a
//! row stride larger than the row). For planar formats (I420, NV12, ...) the
//! array fields describe plane 0 (the luma plane, `(h, w)` `u8`) and the plane
//! table lists every plane, plane 0 included.
//!
//! Bytes from another process are untrusted: [`Descriptor::decode`] refuses
//! unknown versions, element types, too many dimensions or planes and
//! malformed text; [`Descriptor::validate`] refuses a descriptor whose
//! elements (or planes) do not all lie inside the buffer, with
//! overflow-checked arithmetic. A [`View`] is only ever built from a
//! validated descriptor, so it never reaches past the buffer.
//!
//! ```
//! use bips_core::descriptor::{DType, Descriptor, View};
//! // A 2x3 RGB image with rows padded to 12 bytes.
//! let d = Descriptor::image(2, 3, 3, DType::U8)
//!     .unwrap()
//!     .with_strides(&[12, 3, 1])
//!     .unwrap()
//!     .with_format("RGB")
//!     .unwrap();
//! let wire = d.encode();
//! let back = Descriptor::decode(&wire).unwrap().unwrap();
//! assert_eq!(back, d);
//! let bytes: Vec<u8> = (0..24).collect();
//! let view = View::<u8>::new(&bytes, &back).unwrap();
//! assert_eq!(view[[1, 2, 0]], 12 + 6);
//! // The last byte is element [1, 2, 2] at 12 + 6 + 2: 21 bytes are needed.
//! assert_eq!(back.extent(), Ok(21));
//! assert!(back.validate(21).is_ok() && back.validate(20).is_err());
//! ```

use core::fmt;
use core::marker::PhantomData;

/// Bytes of an encoded [`Descriptor`].
pub const DESCRIPTOR_SIZE: usize = 320;
/// Most dimensions of a descriptor.
pub const MAX_DIMS: usize = 8;
/// Most planes of a descriptor's plane table.
pub const MAX_PLANES: usize = 4;
/// Bytes of a text field (pixel format, colorimetry), NUL padding included.
pub const TEXT_SIZE: usize = 16;
/// Descriptor encoding version written by this build.
pub const DESCRIPTOR_VERSION: u8 = 1;
/// Longest payload type name, in bytes.
pub const MAX_TYPE_NAME: usize = 63;
/// Bytes of an encoded [`PayloadType`] (the region's type block).
pub const PAYLOAD_TYPE_SIZE: usize = 512;

const OFF_OFFSET: usize = 8;
const OFF_SHAPE: usize = 16;
const OFF_STRIDES: usize = 80;
const OFF_FORMAT: usize = 144;
const OFF_COLOR: usize = 160;
const OFF_PLANES: usize = 176;
const PLANE_SIZE: usize = 24;

/// Element type of a descriptor. The `u8` value is the wire code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum DType {
    /// `uint8`
    U8 = 1,
    /// `int8`
    I8 = 2,
    /// `uint16`
    U16 = 3,
    /// `int16`
    I16 = 4,
    /// `uint32`
    U32 = 5,
    /// `int32`
    I32 = 6,
    /// `uint64`
    U64 = 7,
    /// `int64`
    I64 = 8,
    /// IEEE 754 half precision, `float16`
    F16 = 9,
    /// `float32`
    F32 = 10,
    /// `float64`
    F64 = 11,
    /// bfloat16 (no NumPy buffer format; DLPack only)
    BF16 = 12,
    /// `bool`, one byte, 0 or 1
    Bool = 13,
    /// `complex64` (two `float32`)
    C64 = 14,
    /// `complex128` (two `float64`)
    C128 = 15,
}

impl DType {
    /// Every element type, in code order.
    pub const ALL: [DType; 15] = [
        DType::U8,
        DType::I8,
        DType::U16,
        DType::I16,
        DType::U32,
        DType::I32,
        DType::U64,
        DType::I64,
        DType::F16,
        DType::F32,
        DType::F64,
        DType::BF16,
        DType::Bool,
        DType::C64,
        DType::C128,
    ];

    /// Decodes a wire code.
    pub fn from_code(code: u8) -> Option<DType> {
        DType::ALL.get(usize::from(code).wrapping_sub(1)).copied()
    }

    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            DType::U8 | DType::I8 | DType::Bool => 1,
            DType::U16 | DType::I16 | DType::F16 | DType::BF16 => 2,
            DType::U32 | DType::I32 | DType::F32 => 4,
            DType::U64 | DType::I64 | DType::F64 | DType::C64 => 8,
            DType::C128 => 16,
        }
    }

    /// NumPy's name for it (`"uint8"`, `"float32"`, `"bfloat16"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            DType::U8 => "uint8",
            DType::I8 => "int8",
            DType::U16 => "uint16",
            DType::I16 => "int16",
            DType::U32 => "uint32",
            DType::I32 => "int32",
            DType::U64 => "uint64",
            DType::I64 => "int64",
            DType::F16 => "float16",
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::BF16 => "bfloat16",
            DType::Bool => "bool",
            DType::C64 => "complex64",
            DType::C128 => "complex128",
        }
    }

    /// Parses [`DType::name`] (also `"u8"`, `"f32"`, ... short names).
    pub fn from_name(name: &str) -> Option<DType> {
        let short = [
            "u8", "i8", "u16", "i16", "u32", "i32", "u64", "i64", "f16", "f32", "f64", "bf16",
            "b1", "c64", "c128",
        ];
        DType::ALL
            .iter()
            .zip(short)
            .find(|(d, s)| d.name() == name || *s == name)
            .map(|(d, _)| *d)
    }

    /// The PEP 3118 (Python buffer protocol) format, little-endian;
    /// `None` for `bfloat16`, which has none.
    pub const fn buffer_format(self) -> Option<&'static str> {
        Some(match self {
            DType::U8 => "<B",
            DType::I8 => "<b",
            DType::U16 => "<H",
            DType::I16 => "<h",
            DType::U32 => "<I",
            DType::I32 => "<i",
            DType::U64 => "<Q",
            DType::I64 => "<q",
            DType::F16 => "<e",
            DType::F32 => "<f",
            DType::F64 => "<d",
            DType::BF16 => return None,
            DType::Bool => "<?",
            DType::C64 => "<Zf",
            DType::C128 => "<Zd",
        })
    }

    /// DLPack's `DLDataType` `(code, bits)` (lanes is 1): kDLInt 0, kDLUInt 1,
    /// kDLFloat 2, kDLBfloat 4, kDLComplex 5, kDLBool 6.
    pub const fn dlpack(self) -> (u8, u8) {
        let bits = (self.size() * 8) as u8;
        let code = match self {
            DType::I8 | DType::I16 | DType::I32 | DType::I64 => 0,
            DType::U8 | DType::U16 | DType::U32 | DType::U64 => 1,
            DType::F16 | DType::F32 | DType::F64 => 2,
            DType::BF16 => 4,
            DType::C64 | DType::C128 => 5,
            DType::Bool => 6,
        };
        (code, bits)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a descriptor, a payload type or a view was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DescriptorError {
    /// The descriptor's version byte is not one this build reads.
    UnknownVersion(u8),
    /// The element type code is not a known [`DType`].
    UnknownDType(u8),
    /// More than [`MAX_DIMS`] dimensions.
    TooManyDims(usize),
    /// More than [`MAX_PLANES`] planes.
    TooManyPlanes(usize),
    /// `strides` does not have one entry per dimension.
    StridesMismatch {
        /// Dimensions of the descriptor.
        ndim: usize,
        /// Strides given.
        strides: usize,
    },
    /// A text field is not printable ASCII, or is too long.
    BadText(&'static str),
    /// Sizes overflow 64 bits (or the address space).
    Overflow,
    /// An element (or plane byte) lies outside the buffer.
    OutOfBounds {
        /// What lies outside: `"array"` or `"plane N"` (N is the index).
        what: &'static str,
        /// One past the last byte needed (`u64::MAX` if before the start).
        end: u64,
        /// Bytes available.
        len: u64,
    },
    /// A typed view asked for another element type than the descriptor's.
    WrongDType {
        /// The view's element type.
        wanted: DType,
        /// The descriptor's.
        found: DType,
    },
    /// The buffer, offset or a stride is not a multiple of the element's alignment.
    Misaligned {
        /// Alignment needed.
        align: usize,
    },
    /// A typed view was asked of a sample that carries no descriptor (on a
    /// channel that fixes none).
    Missing,
    /// A view of dimension N was asked of a descriptor of another dimension.
    WrongNdim {
        /// Dimensions asked for.
        wanted: usize,
        /// Dimensions of the descriptor.
        found: usize,
    },
}

impl fmt::Display for DescriptorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DescriptorError::UnknownVersion(v) => write!(
                f,
                "descriptor version {v} is unknown to this build (it reads version {DESCRIPTOR_VERSION})"
            ),
            DescriptorError::UnknownDType(c) => write!(f, "unknown element type code {c}"),
            DescriptorError::TooManyDims(n) => {
                write!(f, "{n} dimensions (at most {MAX_DIMS})")
            }
            DescriptorError::TooManyPlanes(n) => {
                write!(f, "{n} planes (at most {MAX_PLANES})")
            }
            DescriptorError::StridesMismatch { ndim, strides } => {
                write!(f, "{strides} strides given for {ndim} dimensions")
            }
            DescriptorError::BadText(field) => write!(
                f,
                "`{field}` must be printable ASCII without spaces, NUL-padded, and fit its field"
            ),
            DescriptorError::Overflow => write!(f, "descriptor sizes overflow"),
            DescriptorError::OutOfBounds { what, end, len } if end == u64::MAX => write!(
                f,
                "descriptor {what} reaches before the start of the buffer ({len} bytes)"
            ),
            DescriptorError::OutOfBounds { what, end, len } => write!(
                f,
                "descriptor {what} needs {end} bytes, the sample has {len}"
            ),
            DescriptorError::WrongDType { wanted, found } => {
                write!(f, "a view of {wanted} asked of a sample of {found}")
            }
            DescriptorError::Misaligned { align } => write!(
                f,
                "elements are not aligned to {align} bytes (buffer, offset or a stride)"
            ),
            DescriptorError::Missing => write!(
                f,
                "the sample carries no descriptor (its producer set none and the channel fixes none)"
            ),
            DescriptorError::WrongNdim { wanted, found } => {
                write!(f, "a {wanted}-dimensional view asked of a {found}-dimensional sample")
            }
        }
    }
}

impl core::error::Error for DescriptorError {}

/// One plane of a planar frame (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Plane {
    /// Bytes from the buffer's start to the plane's first row.
    pub offset: u64,
    /// Bytes between two rows.
    pub stride: u32,
    /// Rows.
    pub rows: u32,
    /// Bytes of pixels per row (`<= stride`).
    pub row_bytes: u32,
}

impl Plane {
    /// One past the plane's last byte, `None` on overflow; 0 for an empty plane.
    fn end(&self) -> Option<u64> {
        if self.rows == 0 || self.row_bytes == 0 {
            return Some(0);
        }
        u64::from(self.rows - 1)
            .checked_mul(self.stride.into())?
            .checked_add(self.row_bytes.into())?
            .checked_add(self.offset)
            // u64::MAX marks "before the start" in OutOfBounds; no buffer
            // has that many bytes anyway.
            .filter(|&end| end != u64::MAX)
    }
}

/// A short ASCII text field (pixel format, colorimetry, payload type name).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Text<const N: usize> {
    bytes: [u8; N],
}

impl<const N: usize> fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> Text<N> {
    const EMPTY: Text<N> = Text { bytes: [0; N] };

    /// `s` must be printable ASCII without spaces and shorter than `N`
    /// (a NUL always ends the field).
    fn new(s: &str, field: &'static str) -> Result<Self, DescriptorError> {
        if s.len() >= N || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(DescriptorError::BadText(field));
        }
        let mut bytes = [0; N];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Ok(Text { bytes })
    }

    fn decode(raw: &[u8], field: &'static str) -> Result<Self, DescriptorError> {
        let n = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        if n >= N
            || !raw[..n].iter().all(|b| b.is_ascii_graphic())
            || raw[n..].iter().any(|&b| b != 0)
        {
            return Err(DescriptorError::BadText(field));
        }
        let mut bytes = [0; N];
        bytes[..n].copy_from_slice(&raw[..n]);
        Ok(Text { bytes })
    }

    fn as_str(&self) -> &str {
        let n = self.bytes.iter().position(|&b| b == 0).unwrap_or(N);
        // Only ASCII ever gets in (new/decode check it).
        core::str::from_utf8(&self.bytes[..n]).unwrap_or("")
    }
}

/// What a sample's bytes are: element type, shape, byte strides, offset, and
/// optionally pixel format, colorimetry and planes. See the module docs for
/// the wire format and the planar convention.
///
/// ```
/// use bips_core::descriptor::{DType, Descriptor};
/// let d = Descriptor::image(1080, 1920, 3, DType::U8).unwrap().with_format("BGR").unwrap();
/// assert_eq!(d.shape(), &[1080, 1920, 3]);
/// assert_eq!(d.strides(), &[5760, 3, 1]);
/// assert_eq!(d.extent().unwrap(), 1080 * 5760);
/// assert_eq!(d.format(), Some("BGR"));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Descriptor {
    dtype: DType,
    ndim: u8,
    nplanes: u8,
    offset: u64,
    shape: [u64; MAX_DIMS],
    strides: [i64; MAX_DIMS],
    format: Text<TEXT_SIZE>,
    colorimetry: Text<TEXT_SIZE>,
    planes: [Plane; MAX_PLANES],
}

impl fmt::Debug for Descriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Descriptor");
        d.field("dtype", &self.dtype)
            .field("shape", &self.shape())
            .field("strides", &self.strides())
            .field("offset", &self.offset);
        if let Some(p) = self.format() {
            d.field("format", &p);
        }
        if let Some(c) = self.colorimetry() {
            d.field("colorimetry", &c);
        }
        if self.nplanes > 0 {
            d.field("planes", &self.planes());
        }
        d.finish()
    }
}

impl fmt::Display for Descriptor {
    /// `uint8 [1080, 1920, 3] strides [5760, 3, 1] BGR`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.dtype, self.shape())?;
        if !self.is_c_contiguous() {
            write!(f, " strides {:?}", self.strides())?;
        }
        if self.offset != 0 {
            write!(f, " offset {}", self.offset)?;
        }
        if let Some(p) = self.format() {
            write!(f, " {p}")?;
        }
        if let Some(c) = self.colorimetry() {
            write!(f, " {c}")?;
        }
        if self.nplanes > 0 {
            write!(f, " {} planes", self.nplanes)?;
        }
        Ok(())
    }
}

fn c_strides(dtype: DType, shape: &[u64]) -> Result<[i64; MAX_DIMS], DescriptorError> {
    let mut strides = [0i64; MAX_DIMS];
    let mut acc = dtype.size() as u64;
    for i in (0..shape.len()).rev() {
        strides[i] = i64::try_from(acc).map_err(|_| DescriptorError::Overflow)?;
        acc = acc
            .checked_mul(shape[i].max(1))
            .ok_or(DescriptorError::Overflow)?;
    }
    Ok(strides)
}

impl Descriptor {
    /// A C-contiguous (row-major, densely packed) array of `shape`.
    pub fn new(dtype: DType, shape: &[u64]) -> Result<Descriptor, DescriptorError> {
        if shape.len() > MAX_DIMS {
            return Err(DescriptorError::TooManyDims(shape.len()));
        }
        let mut s = [0u64; MAX_DIMS];
        s[..shape.len()].copy_from_slice(shape);
        let d = Descriptor {
            dtype,
            ndim: shape.len() as u8,
            nplanes: 0,
            offset: 0,
            shape: s,
            strides: c_strides(dtype, shape)?,
            format: Text::EMPTY,
            colorimetry: Text::EMPTY,
            planes: [Plane::default(); MAX_PLANES],
        };
        d.extent()?;
        Ok(d)
    }

    /// A packed image: `(height, width, channels)`, or `(height, width)` when
    /// `channels` is 1 (a gray image is 2-D in NumPy and OpenCV).
    pub fn image(
        height: u64,
        width: u64,
        channels: u64,
        dtype: DType,
    ) -> Result<Descriptor, DescriptorError> {
        if channels == 1 {
            Descriptor::new(dtype, &[height, width])
        } else {
            Descriptor::new(dtype, &[height, width, channels])
        }
    }

    /// The same array with explicit byte strides, one per dimension (e.g. a
    /// row stride larger than the row for padded rows).
    pub fn with_strides(mut self, strides: &[i64]) -> Result<Descriptor, DescriptorError> {
        if strides.len() != self.ndim() {
            return Err(DescriptorError::StridesMismatch {
                ndim: self.ndim(),
                strides: strides.len(),
            });
        }
        self.strides = [0; MAX_DIMS];
        self.strides[..strides.len()].copy_from_slice(strides);
        Ok(self)
    }

    /// The same array starting `offset` bytes into the buffer.
    pub fn with_offset(mut self, offset: u64) -> Descriptor {
        self.offset = offset;
        self
    }

    /// A pixel format: a fourcc or GStreamer format name, printable ASCII, at most 15 bytes.
    pub fn with_format(mut self, format: &str) -> Result<Descriptor, DescriptorError> {
        self.format = Text::new(format, "format")?;
        Ok(self)
    }

    /// A colorimetry (e.g. GStreamer's `"bt709"`), printable ASCII, at most 15 bytes.
    pub fn with_colorimetry(mut self, colorimetry: &str) -> Result<Descriptor, DescriptorError> {
        self.colorimetry = Text::new(colorimetry, "colorimetry")?;
        Ok(self)
    }

    /// The plane table of a planar frame (plane 0 first).
    pub fn with_planes(mut self, planes: &[Plane]) -> Result<Descriptor, DescriptorError> {
        if planes.len() > MAX_PLANES {
            return Err(DescriptorError::TooManyPlanes(planes.len()));
        }
        self.planes = [Plane::default(); MAX_PLANES];
        self.planes[..planes.len()].copy_from_slice(planes);
        self.nplanes = planes.len() as u8;
        Ok(self)
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of dimensions (0..=8).
    pub fn ndim(&self) -> usize {
        self.ndim.into()
    }

    /// Elements per dimension.
    pub fn shape(&self) -> &[u64] {
        &self.shape[..self.ndim()]
    }

    /// Bytes between neighbours along each dimension.
    pub fn strides(&self) -> &[i64] {
        &self.strides[..self.ndim()]
    }

    /// Bytes from the buffer's start to the first element.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The pixel format, if any.
    pub fn format(&self) -> Option<&str> {
        Some(self.format.as_str()).filter(|s| !s.is_empty())
    }

    /// The colorimetry, if any.
    pub fn colorimetry(&self) -> Option<&str> {
        Some(self.colorimetry.as_str()).filter(|s| !s.is_empty())
    }

    /// The plane table (empty for packed formats).
    pub fn planes(&self) -> &[Plane] {
        &self.planes[..usize::from(self.nplanes)]
    }

    /// Number of elements (the product of the shape).
    pub fn len(&self) -> Result<u64, DescriptorError> {
        if self.is_empty() {
            return Ok(0);
        }
        self.shape()
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or(DescriptorError::Overflow)
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.shape().contains(&0)
    }

    /// Whether the elements are densely packed in row-major order.
    pub fn is_c_contiguous(&self) -> bool {
        match c_strides(self.dtype, self.shape()) {
            Ok(c) => self
                .shape()
                .iter()
                .zip(self.strides().iter().zip(&c[..self.ndim()]))
                .all(|(&n, (&s, &cs))| n <= 1 || s == cs),
            Err(_) => false,
        }
    }

    /// One past the last byte the array and its planes use, counted from the
    /// buffer's start (0 for an empty array without planes). Errors when an
    /// element lies before the buffer's start or the sizes overflow.
    pub fn extent(&self) -> Result<u64, DescriptorError> {
        let mut end = 0u64;
        if !self.is_empty() {
            let mut lo = i128::from(self.offset);
            let mut hi = lo;
            for (&n, &s) in self.shape().iter().zip(self.strides()) {
                let span = i128::from(n - 1)
                    .checked_mul(s.into())
                    .ok_or(DescriptorError::Overflow)?;
                if span < 0 {
                    lo = lo.checked_add(span).ok_or(DescriptorError::Overflow)?;
                } else {
                    hi = hi.checked_add(span).ok_or(DescriptorError::Overflow)?;
                }
            }
            if lo < 0 {
                return Err(DescriptorError::OutOfBounds {
                    what: "array",
                    end: u64::MAX,
                    len: 0,
                });
            }
            let hi = hi
                .checked_add(self.dtype.size() as i128)
                .ok_or(DescriptorError::Overflow)?;
            // An end of u64::MAX would read as "before the start" in
            // OutOfBounds (and no buffer has that many bytes): overflow.
            end = u64::try_from(hi)
                .ok()
                .filter(|&end| end != u64::MAX)
                .ok_or(DescriptorError::Overflow)?;
        }
        for p in self.planes() {
            end = end.max(p.end().ok_or(DescriptorError::Overflow)?);
        }
        Ok(end)
    }

    /// Checks that every element and every plane lies inside a sample of
    /// `len` bytes.
    pub fn validate(&self, len: u64) -> Result<(), DescriptorError> {
        let fix = |e: DescriptorError| match e {
            DescriptorError::OutOfBounds { what, end, .. } => {
                DescriptorError::OutOfBounds { what, end, len }
            }
            e => e,
        };
        if !self.is_empty() {
            let end = Descriptor {
                nplanes: 0,
                ..*self
            }
            .extent()
            .map_err(fix)?;
            if end > len {
                return Err(DescriptorError::OutOfBounds {
                    what: "array",
                    end,
                    len,
                });
            }
        }
        const NAMES: [&str; MAX_PLANES] = ["plane 0", "plane 1", "plane 2", "plane 3"];
        for (p, name) in self.planes().iter().zip(NAMES) {
            let end = p.end().ok_or(DescriptorError::Overflow)?;
            if end > len {
                return Err(DescriptorError::OutOfBounds {
                    what: name,
                    end,
                    len,
                });
            }
        }
        Ok(())
    }

    /// The wire form (see the module docs).
    pub fn encode(&self) -> [u8; DESCRIPTOR_SIZE] {
        let mut w = [0u8; DESCRIPTOR_SIZE];
        w[0] = DESCRIPTOR_VERSION;
        w[1] = self.dtype as u8;
        w[2] = self.ndim;
        w[3] = self.nplanes;
        w[OFF_OFFSET..OFF_OFFSET + 8].copy_from_slice(&self.offset.to_le_bytes());
        for i in 0..MAX_DIMS {
            let o = OFF_SHAPE + 8 * i;
            w[o..o + 8].copy_from_slice(&self.shape[i].to_le_bytes());
            let o = OFF_STRIDES + 8 * i;
            w[o..o + 8].copy_from_slice(&self.strides[i].to_le_bytes());
        }
        w[OFF_FORMAT..OFF_FORMAT + TEXT_SIZE].copy_from_slice(&self.format.bytes);
        w[OFF_COLOR..OFF_COLOR + TEXT_SIZE].copy_from_slice(&self.colorimetry.bytes);
        for (i, p) in self.planes.iter().enumerate() {
            let o = OFF_PLANES + PLANE_SIZE * i;
            w[o..o + 8].copy_from_slice(&p.offset.to_le_bytes());
            w[o + 8..o + 12].copy_from_slice(&p.stride.to_le_bytes());
            w[o + 12..o + 16].copy_from_slice(&p.rows.to_le_bytes());
            w[o + 16..o + 20].copy_from_slice(&p.row_bytes.to_le_bytes());
        }
        w
    }

    /// Parses the wire form: `Ok(None)` when the version byte is 0 (no
    /// descriptor). Checks version, element type, counts and text; entries
    /// past `ndim`/`nplanes` and reserved bytes are ignored. Does not check
    /// bounds: see [`Descriptor::validate`].
    pub fn decode(w: &[u8; DESCRIPTOR_SIZE]) -> Result<Option<Descriptor>, DescriptorError> {
        match w[0] {
            0 => return Ok(None),
            DESCRIPTOR_VERSION => {}
            v => return Err(DescriptorError::UnknownVersion(v)),
        }
        let dtype = DType::from_code(w[1]).ok_or(DescriptorError::UnknownDType(w[1]))?;
        let ndim = usize::from(w[2]);
        if ndim > MAX_DIMS {
            return Err(DescriptorError::TooManyDims(ndim));
        }
        let nplanes = usize::from(w[3]);
        if nplanes > MAX_PLANES {
            return Err(DescriptorError::TooManyPlanes(nplanes));
        }
        let u64_at = |o: usize| u64::from_le_bytes(w[o..o + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |o: usize| u32::from_le_bytes(w[o..o + 4].try_into().unwrap_or([0; 4]));
        let mut d = Descriptor {
            dtype,
            ndim: ndim as u8,
            nplanes: nplanes as u8,
            offset: u64_at(OFF_OFFSET),
            shape: [0; MAX_DIMS],
            strides: [0; MAX_DIMS],
            format: Text::decode(&w[OFF_FORMAT..OFF_FORMAT + TEXT_SIZE], "format")?,
            colorimetry: Text::decode(&w[OFF_COLOR..OFF_COLOR + TEXT_SIZE], "colorimetry")?,
            planes: [Plane::default(); MAX_PLANES],
        };
        for i in 0..ndim {
            d.shape[i] = u64_at(OFF_SHAPE + 8 * i);
            d.strides[i] = u64_at(OFF_STRIDES + 8 * i) as i64;
        }
        for i in 0..nplanes {
            let o = OFF_PLANES + PLANE_SIZE * i;
            d.planes[i] = Plane {
                offset: u64_at(o),
                stride: u32_at(o + 8),
                rows: u32_at(o + 12),
                row_bytes: u32_at(o + 16),
            };
        }
        Ok(Some(d))
    }
}

/// What a channel carries, declared by its producer at creation: a name
/// (`"image/rgb8"`, `"sensor_msgs/Image"`, printable ASCII, 1..=63 bytes), a
/// version, and optionally one [`Descriptor`] every sample has (then samples
/// need not carry their own). A consumer may require a type when it opens.
///
/// ```
/// use bips_core::descriptor::{DType, Descriptor, PayloadType};
/// let t = PayloadType::new("image/bgr8", 1)
///     .unwrap()
///     .with_descriptor(Descriptor::image(480, 640, 3, DType::U8).unwrap());
/// let back = PayloadType::decode(&t.encode()).unwrap().unwrap();
/// assert_eq!(back, t);
/// assert_eq!(back.to_string(), "image/bgr8 v1 (uint8 [480, 640, 3])");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PayloadType {
    name: Text<{ MAX_TYPE_NAME + 1 }>,
    version: u32,
    descriptor: Option<Descriptor>,
}

const TYPE_FLAG_TYPED: u32 = 1;
const TYPE_FLAG_DESCRIPTOR: u32 = 2;
const TYPE_OFF_NAME: usize = 8;
const TYPE_OFF_DESC: usize = 128;

impl PayloadType {
    /// A type named `name` (printable ASCII, 1..=63 bytes) at `version`.
    pub fn new(name: &str, version: u32) -> Result<PayloadType, DescriptorError> {
        if name.is_empty() {
            return Err(DescriptorError::BadText("payload type name"));
        }
        Ok(PayloadType {
            name: Text::new(name, "payload type name")?,
            version,
            descriptor: None,
        })
    }

    /// The same type, with a descriptor every sample has.
    pub fn with_descriptor(mut self, d: Descriptor) -> PayloadType {
        self.descriptor = Some(d);
        self
    }

    /// The name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The descriptor every sample has, if the channel fixes one.
    pub fn descriptor(&self) -> Option<&Descriptor> {
        self.descriptor.as_ref()
    }

    /// The wire form of a channel's type block; `None` encodes "untyped".
    pub fn encode_block(t: Option<&PayloadType>) -> [u8; PAYLOAD_TYPE_SIZE] {
        let mut w = [0u8; PAYLOAD_TYPE_SIZE];
        if let Some(t) = t {
            let mut flags = TYPE_FLAG_TYPED;
            if let Some(d) = &t.descriptor {
                flags |= TYPE_FLAG_DESCRIPTOR;
                w[TYPE_OFF_DESC..TYPE_OFF_DESC + DESCRIPTOR_SIZE].copy_from_slice(&d.encode());
            }
            w[0..4].copy_from_slice(&flags.to_le_bytes());
            w[4..8].copy_from_slice(&t.version.to_le_bytes());
            w[TYPE_OFF_NAME..TYPE_OFF_NAME + MAX_TYPE_NAME + 1].copy_from_slice(&t.name.bytes);
        }
        w
    }

    /// The wire form of this type (see [`PayloadType::encode_block`]).
    pub fn encode(&self) -> [u8; PAYLOAD_TYPE_SIZE] {
        PayloadType::encode_block(Some(self))
    }

    /// Parses a type block: `Ok(None)` for an untyped channel. Checks flags,
    /// the name and the descriptor's form (not its bounds).
    pub fn decode(w: &[u8; PAYLOAD_TYPE_SIZE]) -> Result<Option<PayloadType>, DescriptorError> {
        let flags = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        if flags == 0 {
            return Ok(None);
        }
        if flags & !(TYPE_FLAG_TYPED | TYPE_FLAG_DESCRIPTOR) != 0 || flags & TYPE_FLAG_TYPED == 0 {
            return Err(DescriptorError::BadText("payload type flags"));
        }
        let name = Text::decode(
            &w[TYPE_OFF_NAME..TYPE_OFF_NAME + MAX_TYPE_NAME + 1],
            "payload type name",
        )?;
        if name.as_str().is_empty() {
            return Err(DescriptorError::BadText("payload type name"));
        }
        let descriptor = if flags & TYPE_FLAG_DESCRIPTOR != 0 {
            let mut d = [0u8; DESCRIPTOR_SIZE];
            d.copy_from_slice(&w[TYPE_OFF_DESC..TYPE_OFF_DESC + DESCRIPTOR_SIZE]);
            Some(Descriptor::decode(&d)?.ok_or(DescriptorError::UnknownVersion(0))?)
        } else {
            None
        };
        Ok(Some(PayloadType {
            name,
            version: u32::from_le_bytes([w[4], w[5], w[6], w[7]]),
            descriptor,
        }))
    }
}

impl fmt::Display for PayloadType {
    /// `image/bgr8 v1`, plus the fixed descriptor in parentheses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} v{}", self.name(), self.version)?;
        if let Some(d) = &self.descriptor {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

/// Element types a [`View`] can be typed as (all plain data, any bit pattern valid).
pub trait Element: bytemuck::Pod {
    /// The descriptor's element type that matches.
    const DTYPE: DType;
}

macro_rules! elements {
    ($($t:ty => $d:ident),*) => {$(
        impl Element for $t {
            const DTYPE: DType = DType::$d;
        }
    )*};
}
elements!(u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32,
          u64 => U64, i64 => I64, f32 => F32, f64 => F64);

/// Element offsets of a validated descriptor, checked for alignment.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    offset: usize,
    shape: [usize; MAX_DIMS],
    strides: [isize; MAX_DIMS],
    ndim: usize,
    contiguous: bool,
    len: usize,
}

impl Geometry {
    fn new<T: Element>(
        base: *const u8,
        len: usize,
        d: &Descriptor,
    ) -> Result<Geometry, DescriptorError> {
        if d.dtype != T::DTYPE {
            return Err(DescriptorError::WrongDType {
                wanted: T::DTYPE,
                found: d.dtype,
            });
        }
        d.validate(len as u64)?;
        let align = core::mem::align_of::<T>();
        let misaligned = (base as usize) % align != 0
            || d.offset % align as u64 != 0
            || d.strides()
                .iter()
                .any(|s| s.unsigned_abs() % align as u64 != 0);
        if misaligned {
            return Err(DescriptorError::Misaligned { align });
        }
        let contiguous = d.is_c_contiguous();
        let mut g = Geometry {
            // Validated: every element lies inside `len` bytes, so the offset,
            // each dimension and each span fit in `usize`/`isize`. An empty
            // array addresses no byte and its offset is not validated (it may
            // lie anywhere): its view starts at the buffer's start, so that
            // `as_slice` is an empty slice inside the borrowed bytes.
            offset: if d.is_empty() {
                0
            } else {
                usize::try_from(d.offset).map_err(|_| DescriptorError::Overflow)?
            },
            shape: [0; MAX_DIMS],
            strides: [0; MAX_DIMS],
            ndim: d.ndim(),
            contiguous,
            // Only `as_slice` needs the count, and only when contiguous:
            // then all `len` elements lie inside the buffer (no overflow). A
            // broadcast (stride 0) may count more than 64 bits hold.
            len: if contiguous {
                usize::try_from(d.len()?).map_err(|_| DescriptorError::Overflow)?
            } else {
                0
            },
        };
        for i in 0..g.ndim {
            g.shape[i] = usize::try_from(d.shape[i]).map_err(|_| DescriptorError::Overflow)?;
            g.strides[i] = isize::try_from(d.strides[i]).map_err(|_| DescriptorError::Overflow)?;
        }
        Ok(g)
    }

    /// Byte offset of element `idx`, `None` when `idx` is out of the shape.
    fn at(&self, idx: &[usize]) -> Option<usize> {
        // Every coordinate is checked before any arithmetic: an empty array
        // (a dimension of 0) was validated without bounds on its strides and
        // offset, so the partial sums of its leading coordinates may overflow.
        if idx.len() != self.ndim || idx.iter().zip(&self.shape).any(|(&i, &n)| i >= n) {
            return None;
        }
        // Not empty, validated: every element, and so every partial sum (an
        // element with trailing coordinates 0), lies inside the borrowed
        // bytes (at most `isize::MAX`), and each term `i * s` is at most
        // `(n - 1) * |s|`, a span of the extent (or 0 when `s` is 0): no
        // overflow. Wrapping ops only because `i as isize` may wrap when `s`
        // is 0 (a broadcast dimension longer than `isize::MAX`).
        let mut off = self.offset as isize;
        for (&i, &s) in idx.iter().zip(&self.strides) {
            off += (i as isize).wrapping_mul(s);
        }
        Some(off as usize)
    }
}

/// A typed, shaped, read-only view of a sample's bytes, built from a
/// validated [`Descriptor`]: `view[[y, x, c]]`, [`View::get`],
/// [`View::as_slice`] when densely packed.
///
/// ```
/// use bips_core::descriptor::{DType, Descriptor, View};
/// let d = Descriptor::new(DType::U16, &[2, 2]).unwrap();
/// let words: [u16; 4] = [1, 2, 3, 4];
/// let view = View::<u16>::new(bytemuck::cast_slice(&words), &d).unwrap();
/// assert_eq!(view[[1, 0]], 3);
/// assert_eq!(view.as_slice(), Some(&words[..]));
/// assert!(View::<u8>::new(bytemuck::cast_slice(&words), &d).is_err()); // wrong dtype
/// ```
#[derive(Clone, Copy, Debug)]
pub struct View<'a, T> {
    base: *const u8,
    g: Geometry,
    _bytes: PhantomData<&'a [T]>,
}

// SAFETY: a `View` is a shared borrow of bytes (`&'a [u8]`) plus plain
// numbers; sharing or sending it is like sharing `&'a [T]` with `T: Sync`
// (all `Element`s are).
unsafe impl<T: Sync> Send for View<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for View<'_, T> {}

impl<'a, T: Element> View<'a, T> {
    /// A view of `bytes` as `desc` says; refuses a descriptor of another
    /// element type, one that reaches past `bytes`, or misaligned elements.
    pub fn new(bytes: &'a [u8], desc: &Descriptor) -> Result<View<'a, T>, DescriptorError> {
        let g = Geometry::new::<T>(bytes.as_ptr(), bytes.len(), desc)?;
        Ok(View {
            base: bytes.as_ptr(),
            g,
            _bytes: PhantomData,
        })
    }

    /// Elements per dimension.
    pub fn shape(&self) -> &[usize] {
        &self.g.shape[..self.g.ndim]
    }

    /// Byte strides.
    pub fn strides(&self) -> &[isize] {
        &self.g.strides[..self.g.ndim]
    }

    /// The element at `idx` (one index per dimension), `None` out of the shape.
    pub fn get(&self, idx: &[usize]) -> Option<&'a T> {
        let off = self.g.at(idx)?;
        // SAFETY: `off` addresses an element inside the validated extent of
        // the borrowed bytes, aligned for `T` (checked in `Geometry::new`);
        // `T` is plain data, valid for any bytes.
        Some(unsafe { &*(self.base.add(off) as *const T) })
    }

    /// All elements as one slice, when they are densely packed in row-major
    /// order (`None` otherwise: padded rows, negative strides...).
    pub fn as_slice(&self) -> Option<&'a [T]> {
        if !self.g.contiguous {
            return None;
        }
        // SAFETY: C-contiguous: `len` elements from `offset`, all inside the
        // validated extent of the borrowed bytes, aligned for `T`.
        Some(unsafe {
            core::slice::from_raw_parts(self.base.add(self.g.offset) as *const T, self.g.len)
        })
    }
}

impl<T: Element, const N: usize> core::ops::Index<[usize; N]> for View<'_, T> {
    type Output = T;
    /// # Panics
    /// When `idx` is out of the shape or has another number of dimensions.
    fn index(&self, idx: [usize; N]) -> &T {
        match self.get(&idx) {
            Some(v) => v,
            None => panic!("index {idx:?} out of shape {:?}", self.shape()),
        }
    }
}

/// A typed, shaped, writable view of a loaned buffer: [`View`]'s twin for the
/// producer side.
///
/// ```
/// use bips_core::descriptor::{DType, Descriptor, ViewMut};
/// let d = Descriptor::image(2, 3, 1, DType::U8).unwrap();
/// let mut bytes = [0u8; 6];
/// let mut view = ViewMut::<u8>::new(&mut bytes, &d).unwrap();
/// view[[1, 2]] = 7;
/// assert_eq!(bytes[5], 7);
/// ```
#[derive(Debug)]
pub struct ViewMut<'a, T> {
    base: *mut u8,
    g: Geometry,
    _bytes: PhantomData<&'a mut [T]>,
}

// SAFETY: a `ViewMut` is an exclusive borrow of bytes plus plain numbers,
// like `&'a mut [T]`.
unsafe impl<T: Send> Send for ViewMut<'_, T> {}
// SAFETY: as above; shared access only reads.
unsafe impl<T: Sync> Sync for ViewMut<'_, T> {}

impl<'a, T: Element> ViewMut<'a, T> {
    /// As [`View::new`], writable.
    pub fn new(bytes: &'a mut [u8], desc: &Descriptor) -> Result<ViewMut<'a, T>, DescriptorError> {
        let g = Geometry::new::<T>(bytes.as_ptr(), bytes.len(), desc)?;
        Ok(ViewMut {
            base: bytes.as_mut_ptr(),
            g,
            _bytes: PhantomData,
        })
    }

    /// Elements per dimension.
    pub fn shape(&self) -> &[usize] {
        &self.g.shape[..self.g.ndim]
    }

    /// The element at `idx`, `None` out of the shape.
    pub fn get(&self, idx: &[usize]) -> Option<&T> {
        let off = self.g.at(idx)?;
        // SAFETY: as in `View::get`; `&self` borrows the exclusive view.
        Some(unsafe { &*(self.base.add(off) as *const T) })
    }

    /// The element at `idx`, writable, `None` out of the shape.
    pub fn get_mut(&mut self, idx: &[usize]) -> Option<&mut T> {
        let off = self.g.at(idx)?;
        // SAFETY: as in `View::get`; `&mut self` makes this the only live
        // reference made through this view (which borrows the bytes exclusively).
        Some(unsafe { &mut *(self.base.add(off) as *mut T) })
    }

    /// All elements as one writable slice, when densely packed in row-major order.
    pub fn as_mut_slice(&mut self) -> Option<&mut [T]> {
        if !self.g.contiguous {
            return None;
        }
        // SAFETY: as in `View::as_slice`; exclusive through `&mut self`.
        Some(unsafe {
            core::slice::from_raw_parts_mut(self.base.add(self.g.offset) as *mut T, self.g.len)
        })
    }
}

impl<T: Element, const N: usize> core::ops::Index<[usize; N]> for ViewMut<'_, T> {
    type Output = T;
    fn index(&self, idx: [usize; N]) -> &T {
        match self.get(&idx) {
            Some(v) => v,
            None => panic!("index {idx:?} out of shape {:?}", self.shape()),
        }
    }
}

impl<T: Element, const N: usize> core::ops::IndexMut<[usize; N]> for ViewMut<'_, T> {
    fn index_mut(&mut self, idx: [usize; N]) -> &mut T {
        let shape = self.g.shape;
        let ndim = self.g.ndim;
        match self.get_mut(&idx) {
            Some(v) => v,
            None => panic!("index {idx:?} out of shape {:?}", &shape[..ndim]),
        }
    }
}
