//! Frames and tensors through the C ABI: `bips_descriptor` conversions refuse
//! malformed input with `BIPS_E_DESCRIPTOR` (a C struct is untrusted input),
//! descriptors set on loans are read from samples, a consumer requiring
//! another payload type gets `BIPS_E_TYPE_MISMATCH` at open, and a slot
//! rewritten by a hostile process gives `BIPS_E_DESCRIPTOR`, never a
//! descriptor reaching past the sample. The C/C++ twins are tests/c/frames.c
//! and tests/c/cpp_frames.cpp (scripts/test-c.sh).

mod common;

use std::ffi::{c_char, CStr};
use std::io::{Seek, SeekFrom, Write};
use std::ptr::{null, null_mut};

use bips_c::*;
use common::*;

fn image(h: u64, w: u64, c: u64, dtype: bips_dtype) -> bips_descriptor {
    let mut d = std::mem::MaybeUninit::<bips_descriptor>::uninit();
    // SAFETY: a writable descriptor.
    let st = unsafe { bips_descriptor_image(h, w, c, dtype, d.as_mut_ptr()) };
    assert_eq!(st, BIPS_OK, "{}", last_error());
    // SAFETY: written by bips_descriptor_image on success.
    unsafe { d.assume_init() }
}

fn text(s: &[c_char]) -> String {
    // SAFETY: the fields the library writes are NUL-terminated.
    unsafe { CStr::from_ptr(s.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

fn validate(d: &bips_descriptor, len: usize) -> bips_status {
    // SAFETY: a valid descriptor pointer.
    unsafe { bips_descriptor_validate(d, len) }
}

fn cleanup(name: &CStr) {
    let _ = std::fs::remove_file(format!("/dev/shm/bips.{}", name.to_str().unwrap()));
}

#[test]
fn builders_fill_the_struct() {
    let mut d = image(2, 3, 3, BIPS_DTYPE_U8);
    assert_eq!((d.dtype, d.ndim), (BIPS_DTYPE_U8, 3));
    assert_eq!(&d.shape[..3], &[2, 3, 3]);
    assert_eq!(&d.strides[..3], &[9, 3, 1]);
    assert_eq!(d.shape[3..], [0; 5]);
    // SAFETY: valid pointers and strings.
    unsafe {
        assert_eq!(bips_descriptor_set_format(&mut d, c"RGB".as_ptr()), BIPS_OK);
        assert_eq!(
            bips_descriptor_set_colorimetry(&mut d, c"sRGB".as_ptr()),
            BIPS_OK
        );
    }
    assert_eq!(
        (text(&d.format), text(&d.colorimetry)),
        ("RGB".into(), "sRGB".into())
    );
    d.strides[0] = 12; // padded rows
    let mut extent = 0;
    // SAFETY: valid pointers.
    assert_eq!(unsafe { bips_descriptor_extent(&d, &mut extent) }, BIPS_OK);
    assert_eq!(extent, 12 + 9);
    assert_eq!(validate(&d, 21), BIPS_OK);
    assert_eq!(validate(&d, 20), BIPS_E_DESCRIPTOR);
    assert!(last_error().contains("needs 21 bytes"), "{}", last_error());

    let gray = image(4, 5, 1, BIPS_DTYPE_U16);
    assert_eq!((gray.ndim, gray.strides[0], gray.strides[1]), (2, 10, 2));
    let mut t = gray;
    let shape = [2u64, 3, 4, 5];
    // SAFETY: `shape` holds 4 entries; `t` is writable.
    unsafe {
        assert_eq!(
            bips_descriptor_contiguous(BIPS_DTYPE_F32, 4, shape.as_ptr(), &mut t),
            BIPS_OK
        );
        assert_eq!(
            bips_descriptor_contiguous(BIPS_DTYPE_F32, 9, shape.as_ptr(), &mut t),
            BIPS_E_DESCRIPTOR
        );
        assert_eq!(
            bips_descriptor_contiguous(BIPS_DTYPE_F32, 2, null(), &mut t),
            BIPS_E_INVALID_ARGUMENT
        );
    }
    for code in 1..=15u32 {
        // SAFETY: returns a static string.
        let name = unsafe { CStr::from_ptr(bips_dtype_name(code)) };
        let rust = bips::DType::from_code(code as u8).unwrap();
        assert_eq!(name.to_str().unwrap(), rust.name());
        assert_eq!(bips_dtype_size(code), rust.size());
    }
    assert_eq!(bips_dtype_size(0), 0);
    assert_eq!(bips_dtype_size(16), 0);
}

#[test]
fn malformed_structs_are_refused() {
    let good = image(2, 3, 3, BIPS_DTYPE_U8);
    assert_eq!(validate(&good, 18), BIPS_OK);
    type Spoil = Box<dyn Fn(&mut bips_descriptor)>;
    let cases: Vec<(&str, Spoil, &str)> = vec![
        (
            "dtype 0",
            Box::new(|d| d.dtype = 0),
            "unknown element type code 0",
        ),
        (
            "dtype 16",
            Box::new(|d| d.dtype = 16),
            "unknown element type code 16",
        ),
        ("dtype 257", Box::new(|d| d.dtype = 257), "code 257"),
        ("ndim 9", Box::new(|d| d.ndim = 9), "9 dimensions"),
        ("ndim 2^32-1", Box::new(|d| d.ndim = u32::MAX), "dimensions"),
        ("nplanes 5", Box::new(|d| d.nplanes = 5), "5 planes"),
        (
            "non-ASCII format",
            Box::new(|d| {
                d.format[0] = 0xC3u8 as c_char;
                d.format[1] = 0xA9u8 as c_char;
            }),
            "format",
        ),
        (
            "format without NUL",
            Box::new(|d| d.format = [b'A' as c_char; 16]),
            "not NUL-terminated",
        ),
        (
            "colorimetry with a space",
            Box::new(|d| {
                d.colorimetry[..3].copy_from_slice(&[
                    b'a' as c_char,
                    b' ' as c_char,
                    b'b' as c_char,
                ])
            }),
            "colorimetry",
        ),
        ("shape 2^63", Box::new(|d| d.shape[0] = 1 << 63), "overflow"),
        (
            "negative stride",
            Box::new(|d| d.strides[0] = -9),
            "before the start",
        ),
        (
            "plane past the buffer",
            Box::new(|d| {
                d.nplanes = 1;
                d.planes[0] = bips_plane {
                    offset: 10,
                    stride: 9,
                    rows: 2,
                    row_bytes: 9,
                    reserved: 0,
                };
            }),
            "plane 0 needs 28 bytes",
        ),
    ];
    for (what, spoil, message) in cases {
        let mut d = good;
        spoil(&mut d);
        assert_eq!(validate(&d, 18), BIPS_E_DESCRIPTOR, "{what}");
        assert!(last_error().contains(message), "{what}: {}", last_error());
    }
    let mut d = good;
    // SAFETY: valid pointers and strings.
    unsafe {
        assert_eq!(
            bips_descriptor_set_format(&mut d, c"SIXTEEN_LETTERS_".as_ptr()),
            BIPS_E_DESCRIPTOR
        );
        assert_eq!(
            bips_descriptor_set_format(&mut d, c"caf\xc3\xa9".as_ptr()),
            BIPS_E_DESCRIPTOR
        );
        assert_eq!(text(&d.format), "", "unchanged");
        assert_eq!(bips_descriptor_validate(null(), 1), BIPS_E_INVALID_ARGUMENT);
        assert_eq!(
            bips_descriptor_image(1, 1, 1, 99, &mut d),
            BIPS_E_DESCRIPTOR
        );
        assert_eq!(d.dtype, BIPS_DTYPE_NONE, "zeroed on failure");
    }
}

/// A producer with payload type "image/rgb8" v1 (no fixed descriptor).
fn typed_producer(n: &CStr, fixed: Option<&bips_descriptor>) -> *mut bips_producer {
    let mut o = options(2, 4096);
    // SAFETY: valid options, name and descriptor pointers.
    let st = unsafe {
        bips_options_payload_type(
            &mut o,
            c"image/rgb8".as_ptr(),
            1,
            fixed.map_or(null(), |d| d as *const _),
        )
    };
    assert_eq!(st, BIPS_OK, "{}", last_error());
    let mut p = null_mut();
    // SAFETY: valid name, options and out-pointer.
    let st = unsafe { bips_producer_create(n.as_ptr(), &o, &mut p) };
    assert_eq!(st, BIPS_OK, "{}", last_error());
    p
}

fn open_requiring(n: &CStr, name: &CStr, version: u32) -> (bips_status, *mut bips_consumer) {
    let mut co = std::mem::MaybeUninit::<bips_consumer_options>::uninit();
    let mut c = null_mut();
    // SAFETY: a writable options struct of this size; valid strings and pointers.
    unsafe {
        let size = std::mem::size_of::<bips_consumer_options>();
        assert_eq!(bips_consumer_options_init(co.as_mut_ptr(), size), BIPS_OK);
        let mut co = co.assume_init();
        assert_eq!(
            bips_consumer_options_require_type(&mut co, name.as_ptr(), version, null()),
            BIPS_OK
        );
        (bips_consumer_open(n.as_ptr(), &co, &mut c), c)
    }
}

#[test]
fn descriptors_travel_from_loan_to_sample() {
    let n = name("frames");
    let p = typed_producer(&n, None);
    let c = open(&n);
    let mut d = image(2, 3, 3, BIPS_DTYPE_U8);
    d.strides[0] = 12;
    // SAFETY: (all calls below) live handles, valid pointers.
    unsafe {
        assert_eq!(bips_descriptor_set_format(&mut d, c"RGB".as_ptr()), BIPS_OK);
        let mut t = std::mem::zeroed::<bips_payload_type>();
        assert_eq!(bips_consumer_payload_type(c, &mut t), BIPS_OK);
        assert_eq!(
            (text(&t.name), t.version, t.has_descriptor),
            ("image/rgb8".into(), 1, 0)
        );
        assert_eq!(bips_producer_payload_type(p, &mut t), BIPS_OK);
        assert_eq!(text(&t.name), "image/rgb8");

        // Past the capacity: refused at set.
        let mut l = zero_loan();
        assert_eq!(bips_producer_loan(p, 0, &mut l), BIPS_OK);
        let mut big = image(64, 64, 2, BIPS_DTYPE_U8);
        assert_eq!(bips_sample_mut_set_descriptor(l, &big), BIPS_E_DESCRIPTOR);
        assert!(last_error().contains("8192 bytes"), "{}", last_error());
        big.dtype = 77;
        assert_eq!(bips_sample_mut_set_descriptor(l, &big), BIPS_E_DESCRIPTOR);
        assert_eq!(
            bips_sample_mut_set_descriptor(l, null()),
            BIPS_E_INVALID_ARGUMENT
        );
        let mut got = d;
        assert_eq!(
            bips_sample_mut_descriptor(l, &mut got),
            BIPS_E_NO_DESCRIPTOR
        );
        assert_eq!(got.dtype, BIPS_DTYPE_NONE);
        assert_eq!(bips_sample_mut_set_descriptor(l, &d), BIPS_OK);
        assert_eq!(bips_sample_mut_descriptor(l, &mut got), BIPS_OK);
        assert_eq!(&got.strides[..3], &[12, 3, 1]);
        // Past the published length: the publish fails, the buffer goes back.
        assert_eq!(bips_sample_mut_set_len(l, 20), BIPS_OK);
        assert_eq!(
            bips_sample_mut_publish(&mut l, null_mut()),
            BIPS_E_DESCRIPTOR
        );
        assert!(
            last_error().contains("went back unpublished"),
            "{}",
            last_error()
        );
        let mut s = zero_sample();
        assert_eq!(bips_consumer_recv(c, 0, &mut s), BIPS_E_TIMEOUT);

        for _ in 0..2 {
            // both buffers are free again
            assert_eq!(bips_producer_loan(p, 0, &mut l), BIPS_OK);
            assert_eq!(bips_sample_mut_set_descriptor(l, &d), BIPS_OK);
            assert_eq!(bips_sample_mut_set_len(l, 21), BIPS_OK);
            assert_eq!(bips_sample_mut_publish(&mut l, null_mut()), BIPS_OK);
            assert_eq!(bips_consumer_recv(c, 0, &mut s), BIPS_OK);
            let mut got = std::mem::zeroed::<bips_descriptor>();
            assert_eq!(bips_sample_descriptor(s, &mut got), BIPS_OK);
            assert_eq!((got.dtype, got.ndim, got.offset), (BIPS_DTYPE_U8, 3, 0));
            assert_eq!(&got.shape[..3], &[2, 3, 3]);
            assert_eq!(&got.strides[..3], &[12, 3, 1]);
            assert_eq!(text(&got.format), "RGB");
            assert_eq!(bips_sample_release(&mut s), BIPS_OK);
        }
        // A sample without a descriptor (the slot's earlier one is not reported).
        assert_eq!(bips_producer_loan(p, 0, &mut l), BIPS_OK);
        assert_eq!(bips_sample_mut_publish(&mut l, null_mut()), BIPS_OK);
        assert_eq!(bips_consumer_recv(c, 0, &mut s), BIPS_OK);
        let mut got = d;
        assert_eq!(bips_sample_descriptor(s, &mut got), BIPS_E_NO_DESCRIPTOR);
        assert_eq!(got.dtype, BIPS_DTYPE_NONE);
        assert_eq!(
            bips_sample_descriptor(s, null_mut()),
            BIPS_E_INVALID_ARGUMENT
        );
        assert_eq!(bips_sample_release(&mut s), BIPS_OK);
        assert_eq!(bips_sample_descriptor(s, &mut got), BIPS_E_INVALID_ARGUMENT);
        assert_eq!(bips_consumer_destroy(c), BIPS_OK);
        assert_eq!(bips_producer_destroy(p), BIPS_OK);
    }
}

#[test]
fn a_fixed_descriptor_is_every_samples() {
    let n = name("fixed");
    let fixed = image(8, 8, 1, BIPS_DTYPE_U16);
    let p = typed_producer(&n, Some(&fixed));
    let c = open(&n);
    // SAFETY: (all calls below) live handles, valid pointers.
    unsafe {
        let mut l = zero_loan();
        assert_eq!(bips_producer_loan(p, 0, &mut l), BIPS_OK);
        let other = image(8, 4, 1, BIPS_DTYPE_U16);
        assert_eq!(
            bips_sample_mut_set_descriptor(l, &other),
            BIPS_E_INVALID_ARGUMENT
        );
        assert!(
            last_error().contains("fixes every sample"),
            "{}",
            last_error()
        );
        assert_eq!(bips_sample_mut_set_len(l, 128), BIPS_OK);
        assert_eq!(bips_sample_mut_publish(&mut l, null_mut()), BIPS_OK);
        let mut s = zero_sample();
        assert_eq!(bips_consumer_recv(c, 0, &mut s), BIPS_OK);
        let mut got = std::mem::zeroed::<bips_descriptor>();
        assert_eq!(bips_sample_descriptor(s, &mut got), BIPS_OK);
        assert_eq!((got.dtype, got.ndim, got.shape[1]), (BIPS_DTYPE_U16, 2, 8));
        let mut t = std::mem::zeroed::<bips_payload_type>();
        assert_eq!(bips_consumer_payload_type(c, &mut t), BIPS_OK);
        assert_eq!((t.has_descriptor, t.descriptor.strides[0]), (1, 16));
        assert_eq!(bips_sample_release(&mut s), BIPS_OK);
        assert_eq!(bips_consumer_destroy(c), BIPS_OK);
        assert_eq!(bips_producer_destroy(p), BIPS_OK);
    }
    // A fixed descriptor larger than a buffer: refused at create.
    let n = name("fixed-big");
    let mut o = options(2, 64);
    let mut p = null_mut();
    // SAFETY: valid pointers.
    unsafe {
        assert_eq!(
            bips_options_payload_type(&mut o, c"image/gray16".as_ptr(), 1, &fixed),
            BIPS_OK
        );
        assert_eq!(
            bips_producer_create(n.as_ptr(), &o, &mut p),
            BIPS_E_INVALID_ARGUMENT
        );
        assert!(p.is_null());
    }
    cleanup(&n);
}

#[test]
fn a_consumer_requiring_another_type_is_refused_at_open() {
    let n = name("mismatch");
    let p = typed_producer(&n, None);
    let (st, c) = open_requiring(&n, c"image/bgr8", 1);
    assert_eq!(st, BIPS_E_TYPE_MISMATCH);
    assert!(c.is_null());
    let m = last_error();
    assert!(
        m.contains("image/rgb8 v1") && m.contains("image/bgr8 v1"),
        "{m}"
    );
    let (st, _) = open_requiring(&n, c"image/rgb8", 2);
    assert_eq!(st, BIPS_E_TYPE_MISMATCH);
    // SAFETY: a status code.
    let sname = unsafe { CStr::from_ptr(bips_status_name(st as i32)) };
    assert_eq!(sname.to_str().unwrap(), "BIPS_E_TYPE_MISMATCH");
    let (st, c) = open_requiring(&n, c"image/rgb8", 1);
    assert_eq!(st, BIPS_OK, "{}", last_error());
    // SAFETY: live handles.
    unsafe {
        let mut count = 0;
        assert_eq!(bips_producer_consumer_count(p, &mut count), BIPS_OK);
        assert_eq!(count, 1, "the refused consumers did not stay attached");
        assert_eq!(bips_consumer_destroy(c), BIPS_OK);
        assert_eq!(bips_producer_destroy(p), BIPS_OK);
    }
    // An untyped channel does not satisfy a requirement either.
    let n = name("untyped");
    let p = create(&n, 2);
    let (st, _) = open_requiring(&n, c"image/rgb8", 1);
    assert_eq!(st, BIPS_E_TYPE_MISMATCH);
    assert!(
        last_error().contains("no declared type"),
        "{}",
        last_error()
    );
    // SAFETY: a live handle.
    assert_eq!(unsafe { bips_producer_destroy(p) }, BIPS_OK);
}

#[test]
fn payload_type_options_are_checked() {
    let n = name("badtype");
    let mut o = options(2, 4096);
    let mut p = null_mut();
    let d = image(2, 2, 1, BIPS_DTYPE_U8);
    // SAFETY: (all calls below) valid pointers; `short` claims fewer bytes than it has.
    unsafe {
        assert_eq!(
            bips_options_payload_type(&mut o, c"".as_ptr(), 1, null()),
            BIPS_E_INVALID_ARGUMENT
        );
        assert_eq!(
            bips_options_payload_type(&mut o, c"has space".as_ptr(), 1, null()),
            BIPS_E_INVALID_ARGUMENT
        );
        assert_eq!(
            bips_options_payload_type(&mut o, null(), 1, null()),
            BIPS_E_INVALID_ARGUMENT
        );
        let mut bad = d;
        bad.ndim = 12;
        assert_eq!(
            bips_options_payload_type(&mut o, c"x".as_ptr(), 1, &bad),
            BIPS_E_DESCRIPTOR
        );
        assert_eq!(o.payload_type.name[0], 0, "unchanged after a failure");
        // An older caller's struct has no payload type fields.
        let mut short = o;
        short.struct_size = 64;
        assert_eq!(
            bips_options_payload_type(&mut short, c"x".as_ptr(), 1, null()),
            BIPS_E_INVALID_ARGUMENT
        );
        // Fields set by hand are checked at create.
        assert_eq!(
            bips_options_payload_type(&mut o, c"image/gray8".as_ptr(), 3, &d),
            BIPS_OK
        );
        o.payload_type.has_descriptor = 2;
        assert_eq!(
            bips_producer_create(n.as_ptr(), &o, &mut p),
            BIPS_E_INVALID_ARGUMENT
        );
        o.payload_type.has_descriptor = 1;
        o.payload_type.descriptor.dtype = 200;
        assert_eq!(
            bips_producer_create(n.as_ptr(), &o, &mut p),
            BIPS_E_DESCRIPTOR
        );
        o.payload_type.descriptor.dtype = BIPS_DTYPE_U8;
        o.payload_type.name = [b'a' as c_char; 64];
        assert_eq!(
            bips_producer_create(n.as_ptr(), &o, &mut p),
            BIPS_E_DESCRIPTOR
        );
        assert!(last_error().contains("NUL-terminated"), "{}", last_error());
        o.payload_type = std::mem::zeroed();
        o.payload_type.version = 1;
        assert_eq!(
            bips_producer_create(n.as_ptr(), &o, &mut p),
            BIPS_E_INVALID_ARGUMENT
        );
        assert!(p.is_null());
    }
    cleanup(&n);
}

#[test]
fn a_hostile_slot_gives_a_descriptor_error() {
    let n = name("hostile");
    let p = typed_producer(&n, None);
    let c = open(&n);
    let geometry = *bips::Consumer::open(n.to_str().unwrap())
        .unwrap()
        .geometry();
    let layout = bips_core::Layout::new(geometry).unwrap();
    let d = image(8, 8, 1, BIPS_DTYPE_U8);
    // SAFETY: (all calls below) live handles, valid pointers.
    unsafe {
        let mut l = zero_loan();
        assert_eq!(bips_producer_loan(p, 0, &mut l), BIPS_OK);
        let mut info = std::mem::zeroed::<bips_sample_mut_info>();
        assert_eq!(bips_sample_mut_get_info(l, &mut info), BIPS_OK);
        let slot = layout.desc_offset as u64 + 320 * u64::from(info.buffer_index);
        assert_eq!(bips_sample_mut_set_descriptor(l, &d), BIPS_OK);
        assert_eq!(bips_sample_mut_set_len(l, 64), BIPS_OK);
        assert_eq!(bips_sample_mut_publish(&mut l, null_mut()), BIPS_OK);
        let mut s = zero_sample();
        assert_eq!(bips_consumer_recv(c, 0, &mut s), BIPS_OK);
        let mut got = std::mem::zeroed::<bips_descriptor>();
        assert_eq!(bips_sample_descriptor(s, &mut got), BIPS_OK);

        let wire = |f: &dyn Fn(&mut [u8; 320])| {
            let mut w = bips::Descriptor::new(bips::DType::U8, &[8, 8])
                .unwrap()
                .encode();
            f(&mut w);
            w
        };
        let hostile = [
            wire(&|w| w[8] = 1), // offset 1: one byte past
            wire(&|w| w[16..24].copy_from_slice(&9u64.to_le_bytes())), // 9 rows
            wire(&|w| w[80..88].copy_from_slice(&(-8i64).to_le_bytes())), // before the start
            wire(&|w| w[1] = 200), // unknown dtype
            wire(&|w| w[2] = 9), // ndim 9
            wire(&|w| w[0] = 7), // unknown version
            wire(&|w| w[144] = 0xff), // non-ASCII format
        ];
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/dev/shm/bips.{}", n.to_str().unwrap()))
            .unwrap();
        for (i, w) in hostile.iter().enumerate() {
            f.seek(SeekFrom::Start(slot)).unwrap();
            f.write_all(w).unwrap();
            let mut got = image(1, 1, 1, BIPS_DTYPE_U8);
            assert_eq!(
                bips_sample_descriptor(s, &mut got),
                BIPS_E_DESCRIPTOR,
                "hostile {i}"
            );
            assert_eq!(got.dtype, BIPS_DTYPE_NONE, "hostile {i}: zeroed");
            assert!(
                last_error().starts_with("sample descriptor:"),
                "{}",
                last_error()
            );
        }
        assert_eq!(bips_sample_release(&mut s), BIPS_OK);
        assert_eq!(bips_consumer_destroy(c), BIPS_OK);
        assert_eq!(bips_producer_destroy(p), BIPS_OK);
    }
}
