//! The frame descriptor ([`bips::Descriptor`]) of raw video: what
//! `bipssink` writes beside every `video/x-raw` sample and what `bipssrc`
//! checks against the caps before it trusts a sample's geometry.
//!
//! One rule, [`describe`], maps a format, its size and a plane layout (the
//! buffer's `GstVideoMeta`, else the caps' default layout) to a descriptor:
//!
//! * **Packed formats** ([`packed`]): the array fields describe the whole
//!   frame, rows padded as GStreamer pads them (the row stride is the real
//!   one, e.g. 964 for 321 RGB pixels):
//!   RGBA/BGRA/ARGB/ABGR/RGBx/BGRx/xRGB/xBGR/AYUV/VUYA -> `(h, w, 4)` `uint8`;
//!   RGB/BGR/v308 -> `(h, w, 3)` `uint8`; GRAY8 -> `(h, w)` `uint8`;
//!   GRAY16_LE -> `(h, w)` `uint16`; RGBA64_LE/BGRA64_LE/ARGB64_LE/ABGR64_LE
//!   -> `(h, w, 4)` `uint16`; GRAY16_BE -> `(h, w, 2)` `uint8` (the
//!   descriptor's element types are little-endian: a `uint16` view of
//!   big-endian samples would show wrong values, so the two bytes of each
//!   sample are given as they are, most significant first). No plane table.
//! * **Every other format** (planar and semi-planar YUV such as I420, YV12,
//!   NV12, NV21, Y42B, Y444, and packed formats not listed above such as
//!   YUY2 or v210): the array fields describe plane 0 (I420/NV12/...: the
//!   luma plane, `(h, w)` `uint8`; 16-bit little-endian planes: `uint16`;
//!   otherwise `(rows, row bytes)` `uint8`), and the plane table lists every
//!   plane (offset, stride, rows, bytes of pixels per row).
//! * Tiled formats get no descriptor (their strides count tiles, not rows).
//!
//! The pixel format is the GStreamer format name (`"RGBA"`, `"NV12"`), the
//! colorimetry the caps' `colorimetry` string when it fits (15 bytes).

use bips::{DType, Descriptor, Plane};
use gst_video::{VideoFormat, VideoInfo};

/// The payload type `bipssink` declares on a channel created for raw video
/// (name and version): every `video/x-raw` sample carries a descriptor by the
/// rules of this module. No fixed descriptor: caps may renegotiate.
pub const PAYLOAD_TYPE: (&str, u32) = ("video/x-raw", 1);

/// Most planes of a video frame.
pub const MAX_PLANES: usize = 4;

/// Where the planes of one frame are: byte offsets and row strides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// Planes in use.
    pub n: usize,
    /// Bytes from the buffer's start to each plane.
    pub offset: [usize; MAX_PLANES],
    /// Bytes per row of each plane.
    pub stride: [i32; MAX_PLANES],
}

impl Layout {
    /// The caps' own layout (`GstVideoInfo`'s offsets and strides).
    pub fn of_info(info: &VideoInfo) -> Layout {
        let mut l = Layout {
            n: (info.n_planes() as usize).min(MAX_PLANES),
            ..Layout::default()
        };
        for p in 0..l.n {
            l.offset[p] = info.offset()[p];
            l.stride[p] = info.stride()[p];
        }
        l
    }

    /// The layout a `GstVideoMeta` announces.
    pub fn of_meta(vm: &gst_video::VideoMeta) -> Layout {
        let mut l = Layout {
            n: (vm.n_planes() as usize).min(MAX_PLANES),
            ..Layout::default()
        };
        for p in 0..l.n {
            l.offset[p] = vm.offset()[p];
            l.stride[p] = vm.stride()[p];
        }
        l
    }
}

/// The packed formats whose array fields describe the whole frame:
/// `(channels, element type)` (1 channel: a 2-D array).
pub fn packed(format: VideoFormat) -> Option<(u64, DType)> {
    use VideoFormat as F;
    Some(match format {
        F::Rgba
        | F::Bgra
        | F::Argb
        | F::Abgr
        | F::Rgbx
        | F::Bgrx
        | F::Xrgb
        | F::Xbgr
        | F::Ayuv
        | F::Vuya => (4, DType::U8),
        F::Rgb | F::Bgr | F::V308 => (3, DType::U8),
        F::Gray8 => (1, DType::U8),
        F::Gray16Le => (1, DType::U16),
        F::Gray16Be => (2, DType::U8),
        F::Rgba64Le | F::Bgra64Le | F::Argb64Le | F::Abgr64Le => (4, DType::U16),
        _ => return None,
    })
}

/// Rows and bytes of pixels per row of plane `p`, from the format's
/// components (subsampling, pixel strides); formats without a per-pixel
/// stride (v210, ...) take the caps' default stride as the row.
fn plane_rows(info: &VideoInfo, p: usize) -> (u32, u32) {
    let finfo = info.format_info();
    let (width, height) = (info.width(), info.field_height());
    let mut rows = 0u32;
    let mut row_bytes = 0u64;
    let mut known = true;
    for c in 0..finfo.n_components() as u8 {
        if finfo.plane()[c as usize] as usize != p {
            continue;
        }
        rows = rows.max(finfo.scale_height(c, height));
        match u64::try_from(finfo.pixel_stride()[c as usize]) {
            Ok(ps) if ps > 0 => {
                row_bytes = row_bytes.max(ps * u64::from(finfo.scale_width(c, width)))
            }
            _ => known = false,
        }
    }
    if !known || row_bytes == 0 {
        row_bytes = row_bytes.max(info.stride()[p].max(0) as u64);
    }
    (rows, u32::try_from(row_bytes).unwrap_or(u32::MAX))
}

/// The descriptor of a frame of `info` laid out as `layout`: `Ok(None)` for
/// tiled formats (no descriptor), `Err` when the layout cannot be that
/// format's (wrong plane count, a stride shorter than a row or negative).
/// The result is not checked against a buffer size: see
/// [`Descriptor::validate`].
pub fn describe(
    info: &VideoInfo,
    colorimetry: Option<&str>,
    layout: &Layout,
) -> Result<Option<Descriptor>, String> {
    let finfo = info.format_info();
    if finfo.is_tiled() || info.format() == VideoFormat::Unknown {
        return Ok(None);
    }
    let n = info.n_planes() as usize;
    if n > MAX_PLANES || layout.n != n {
        return Err(format!(
            "{} planes for format {} (it has {n})",
            layout.n,
            info.format()
        ));
    }
    let err = |e: bips::DescriptorError| e.to_string();
    let (w, h) = (u64::from(info.width()), u64::from(info.field_height()));
    let mut planes = [Plane::default(); MAX_PLANES];
    for (p, plane) in planes.iter_mut().enumerate().take(n) {
        let (rows, row_bytes) = plane_rows(info, p);
        let stride = layout.stride[p];
        if stride <= 0 || (stride as u32) < row_bytes {
            return Err(format!(
                "plane {p}: stride {stride} is shorter than a row of {row_bytes} bytes"
            ));
        }
        *plane = Plane {
            offset: layout.offset[p] as u64,
            stride: stride as u32,
            rows,
            row_bytes,
        };
    }
    let d = if let Some((channels, dtype)) = packed(info.format()) {
        let size = dtype.size() as i64;
        let mut strides = vec![i64::from(layout.stride[0])];
        if channels > 1 {
            strides.push(channels as i64 * size);
        }
        strides.push(size);
        Descriptor::image(h, w, channels, dtype)
            .and_then(|d| d.with_strides(&strides))
            .map_err(err)?
            .with_offset(layout.offset[0] as u64)
    } else {
        // Plane 0 as an array, every plane in the table.
        let p0 = planes[0];
        let comps: Vec<u8> = (0..finfo.n_components() as u8)
            .filter(|&c| finfo.plane()[c as usize] == 0)
            .collect();
        let one = comps.len() == 1;
        let c = comps.first().copied().unwrap_or(0);
        let ps = finfo.pixel_stride()[c as usize];
        let cols = u64::from(finfo.scale_width(c, info.width()));
        let (dtype, cols, step) = if one && ps == 1 {
            (DType::U8, cols, 1)
        } else if one && ps == 2 && finfo.depth()[c as usize] > 8 && finfo.is_le() {
            (DType::U16, cols, 2)
        } else {
            (DType::U8, u64::from(p0.row_bytes), 1)
        };
        Descriptor::new(dtype, &[u64::from(p0.rows), cols])
            .and_then(|d| d.with_strides(&[i64::from(p0.stride), step]))
            .and_then(|d| d.with_planes(&planes[..n]))
            .map_err(err)?
            .with_offset(p0.offset)
    };
    // A format name longer than the field (none in GStreamer 1.22) is left
    // out; so is a colorimetry that does not fit.
    let d = d.with_format(info.format().to_str()).unwrap_or(d);
    let d = match colorimetry {
        Some(c) => d.with_colorimetry(c).unwrap_or(d),
        None => d,
    };
    Ok(Some(d))
}

/// The `colorimetry` field of raw-video caps, if any.
pub fn caps_colorimetry(caps: &gst::CapsRef) -> Option<String> {
    caps.structure(0)?
        .get::<String>("colorimetry")
        .ok()
        .filter(|c| c.len() < 16)
}

/// Checks a descriptor received with a frame of `info` (from another
/// process: anything) and returns the plane layout it announces. It must be
/// exactly what [`describe`] makes of that layout (format, size, element
/// type, shape, inner strides, rows and row bytes of every plane), and each
/// stride at least a row; the caller has validated it against the sample's
/// length already, so every plane lies inside the sample.
pub fn check(info: &VideoInfo, d: &Descriptor) -> Result<Layout, String> {
    let mismatch = |why: String| {
        format!(
            "sample descriptor ({d}) does not match the caps ({} {}x{}): {why}",
            info.format(),
            info.width(),
            info.height()
        )
    };
    let mut layout = Layout {
        n: info.n_planes() as usize,
        ..Layout::default()
    };
    let to_layout = |offset: u64, stride: i64| -> Option<(usize, i32)> {
        Some((usize::try_from(offset).ok()?, i32::try_from(stride).ok()?))
    };
    if packed(info.format()).is_some() {
        if layout.n != 1 || d.ndim() == 0 {
            return Err(mismatch("not a packed frame".into()));
        }
        let (o, s) = to_layout(d.offset(), d.strides()[0])
            .ok_or_else(|| mismatch("offset or row stride out of range".into()))?;
        layout.offset[0] = o;
        layout.stride[0] = s;
    } else {
        if d.planes().len() != layout.n || layout.n > MAX_PLANES {
            return Err(mismatch(format!(
                "{} planes, the format has {}",
                d.planes().len(),
                layout.n
            )));
        }
        for (p, plane) in d.planes().iter().enumerate() {
            let (o, s) = to_layout(plane.offset, plane.stride.into())
                .ok_or_else(|| mismatch(format!("plane {p}: offset or stride out of range")))?;
            layout.offset[p] = o;
            layout.stride[p] = s;
        }
    }
    match describe(info, d.colorimetry(), &layout).map_err(mismatch)? {
        Some(expected) if expected == *d => Ok(layout),
        Some(expected) => Err(mismatch(format!("expected {expected}"))),
        None => Err(mismatch(
            "a descriptor for a tiled format (bipssink writes none)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(format: VideoFormat, w: u32, h: u32) -> VideoInfo {
        VideoInfo::builder(format, w, h).build().unwrap()
    }

    #[test]
    fn packed_and_planar_descriptors() {
        gst::init().unwrap();
        let i = info(VideoFormat::Rgb, 321, 10);
        let d = describe(&i, Some("sRGB"), &Layout::of_info(&i))
            .unwrap()
            .unwrap();
        assert_eq!(d.shape(), &[10, 321, 3]);
        assert_eq!(d.strides(), &[964, 3, 1]);
        assert_eq!((d.format(), d.colorimetry()), (Some("RGB"), Some("sRGB")));
        assert!(d.planes().is_empty());
        assert_eq!(check(&i, &d).unwrap(), Layout::of_info(&i));

        let i = info(VideoFormat::Gray16Be, 8, 2);
        let d = describe(&i, None, &Layout::of_info(&i)).unwrap().unwrap();
        assert_eq!((d.dtype(), d.shape()), (DType::U8, &[2u64, 8, 2][..]));

        let i = info(VideoFormat::Nv12, 6, 4);
        let d = describe(&i, None, &Layout::of_info(&i)).unwrap().unwrap();
        assert_eq!(
            (d.dtype(), d.shape(), d.strides()),
            (DType::U8, &[4u64, 6][..], &[8i64, 1][..])
        );
        assert_eq!(
            d.planes(),
            &[
                Plane {
                    offset: 0,
                    stride: 8,
                    rows: 4,
                    row_bytes: 6
                },
                Plane {
                    offset: 32,
                    stride: 8,
                    rows: 2,
                    row_bytes: 6
                },
            ]
        );

        let i = info(VideoFormat::I42010le, 4, 2);
        let d = describe(&i, None, &Layout::of_info(&i)).unwrap().unwrap();
        assert_eq!((d.dtype(), d.shape()), (DType::U16, &[2u64, 4][..]));
        assert_eq!(d.planes().len(), 3);
    }

    #[test]
    fn check_refuses_what_the_caps_do_not_say() {
        gst::init().unwrap();
        let i = info(VideoFormat::Rgb, 64, 48);
        let good = describe(&i, None, &Layout::of_info(&i)).unwrap().unwrap();
        let bad = [
            good.with_format("BGR").unwrap(),
            Descriptor::image(48, 64, 4, DType::U8)
                .unwrap()
                .with_format("RGB")
                .unwrap(),
            good.with_strides(&[100, 3, 1]).unwrap(),
            good.with_strides(&[-192, 3, 1]).unwrap(),
            good.with_strides(&[192, 1, 1]).unwrap(),
            Descriptor::new(DType::U8, &[48 * 192])
                .unwrap()
                .with_format("RGB")
                .unwrap(),
        ];
        for d in bad {
            assert!(check(&i, &d).is_err(), "{d}");
        }
        let padded = good.with_strides(&[256, 3, 1]).unwrap();
        assert_eq!(check(&i, &padded).unwrap().stride[0], 256);

        let i = info(VideoFormat::I420, 64, 48);
        let good = describe(&i, None, &Layout::of_info(&i)).unwrap().unwrap();
        let mut planes = good.planes().to_vec();
        planes[2].rows = 48; // not what 4:2:0 has
        assert!(check(&i, &good.with_planes(&planes).unwrap()).is_err());
        assert!(check(&i, &good.with_planes(&planes[..2]).unwrap()).is_err());
    }
}
