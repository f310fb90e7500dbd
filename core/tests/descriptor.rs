//! Tests of the frame/tensor descriptor (`bips_core::descriptor`, issue 16):
//! a descriptor comes from another process and is untrusted.
#![cfg(not(loom))]

use bips_core::descriptor::{DType, Descriptor, DescriptorError, View, ViewMut};

// ---------------------------------------------------------------------------
// Named cases
// ---------------------------------------------------------------------------

/// The module docs' examples of hostile descriptors, each refused with its
/// typed error.
#[test]
fn hostile_descriptors_are_refused() {
    // An element before the start (negative stride from offset 0).
    let neg = Descriptor::new(DType::U8, &[2])
        .unwrap()
        .with_strides(&[-1])
        .unwrap();
    assert_eq!(
        neg.validate(100),
        Err(DescriptorError::OutOfBounds {
            what: "array",
            end: u64::MAX,
            len: 100
        })
    );
    assert_eq!(neg.with_offset(1).validate(2), Ok(()));
    // Spans overflowing 64 bits.
    let huge = Descriptor::new(DType::U8, &[4])
        .unwrap()
        .with_strides(&[i64::MAX])
        .unwrap();
    assert_eq!(huge.validate(u64::MAX), Err(DescriptorError::Overflow));
    // The offset near u64::MAX.
    let far = Descriptor::new(DType::U16, &[])
        .unwrap()
        .with_offset(u64::MAX - 1);
    assert!(far.validate(u64::MAX).is_err());
    // Unknown version, dtype, too many dims / planes, bad text.
    let mut w = Descriptor::new(DType::U8, &[1]).unwrap().encode();
    w[0] = 2;
    assert_eq!(
        Descriptor::decode(&w),
        Err(DescriptorError::UnknownVersion(2))
    );
    w[0] = 1;
    w[1] = 16;
    assert_eq!(
        Descriptor::decode(&w),
        Err(DescriptorError::UnknownDType(16))
    );
    w[1] = 0;
    assert_eq!(
        Descriptor::decode(&w),
        Err(DescriptorError::UnknownDType(0))
    );
    w[1] = 1;
    w[2] = 9;
    assert_eq!(Descriptor::decode(&w), Err(DescriptorError::TooManyDims(9)));
    w[2] = 1;
    w[3] = 5;
    assert_eq!(
        Descriptor::decode(&w),
        Err(DescriptorError::TooManyPlanes(5))
    );
    w[3] = 0;
    w[144] = b' ';
    assert_eq!(
        Descriptor::decode(&w),
        Err(DescriptorError::BadText("format"))
    );
    w[144] = 0;
    w[150] = b'A'; // text after the NUL
    assert_eq!(
        Descriptor::decode(&w),
        Err(DescriptorError::BadText("format"))
    );
    w[150] = 0;
    w[160..176].copy_from_slice(b"ABCDEFGHIJKLMNOP"); // no NUL
    assert_eq!(
        Descriptor::decode(&w),
        Err(DescriptorError::BadText("colorimetry"))
    );
}

/// Found by `structured_wire_stays_inside`: an empty array (a dimension of
/// 0) is valid whatever its strides and offset, since it addresses nothing;
/// `View::get` summed the leading, in-shape coordinates times their huge
/// strides before reaching the empty dimension, an `isize` overflow (a
/// panic in debug builds, where a `None` is due).
#[test]
fn empty_array_with_huge_strides_gets_none() {
    let cases = [
        (
            vec![2u64, 2, 0],
            vec![i64::MAX, i64::MAX, 1],
            0,
            vec![1usize, 1, 0],
        ),
        (vec![2, 0], vec![i64::MIN, 1], u64::MAX, vec![1, 0]),
        (vec![3, 0], vec![i64::MAX / 2 + 1, 0], 0, vec![2, 5]),
    ];
    for (shape, strides, offset, idx) in cases {
        let d = Descriptor::new(DType::U8, &vec![0; shape.len()])
            .unwrap()
            .with_strides(&strides)
            .unwrap()
            .with_offset(offset);
        // `new` refuses such strides on non-empty shapes: set the shape by wire.
        let mut w = d.encode();
        for (i, n) in shape.iter().enumerate() {
            w[16 + 8 * i..24 + 8 * i].copy_from_slice(&n.to_le_bytes());
        }
        let d = Descriptor::decode(&w).unwrap().unwrap();
        assert_eq!(d.shape(), &shape[..]);
        assert_eq!(d.validate(0), Ok(()));
        let v = View::<u8>::new(&[], &d).unwrap();
        assert_eq!(v.get(&idx), None, "{d:?}");
        let mut none = [0u8; 0];
        let mut vm = ViewMut::<u8>::new(&mut none, &d).unwrap();
        assert_eq!(vm.get_mut(&idx), None, "{d:?}");
    }
}

/// Found by `validate_matches_brute_force`: an empty array's offset is not
/// bounded by `validate` (nothing is addressed), yet `View::as_slice` built
/// its empty slice at `buffer + offset`, past the buffer: `ptr::add` out of
/// the allocation is undefined behaviour (Miri reports it), and the slice's
/// address lies outside the bytes the view borrows.
#[test]
fn empty_array_far_offset_slices_inside() {
    let mut bytes = [0u8; 4];
    let base = bytes.as_ptr() as usize;
    for (shape, offset) in [(vec![0u64], 39u64), (vec![2, 0], 1 << 40), (vec![0, 3], 5)] {
        let d = Descriptor::new(DType::U8, &shape)
            .unwrap()
            .with_offset(offset);
        assert!(d.is_c_contiguous());
        assert_eq!(d.validate(4), Ok(()));
        let v = View::<u8>::new(&bytes, &d).unwrap();
        let s = v.as_slice().expect("an empty array is contiguous");
        assert!(s.is_empty());
        let p = s.as_ptr() as usize;
        assert!(
            p >= base && p <= base + 4,
            "{d:?}: slice at +{}",
            p.wrapping_sub(base)
        );
        let mut vm = ViewMut::<u8>::new(&mut bytes, &d).unwrap();
        let p = vm.as_mut_slice().unwrap().as_ptr() as usize;
        assert!(
            p >= base && p <= base + 4,
            "{d:?}: slice at +{}",
            p.wrapping_sub(base)
        );
    }
}

/// Found by `structured_wire_stays_inside`: `Descriptor::len` multiplied the
/// shape left to right with overflow checks, so an empty array with a huge
/// leading dimension (`[2^63, 3, 0]`) had `Overflow` elements instead of 0,
/// and `View::new` refused validated descriptors whose element count
/// overflows 64 bits (broadcast dimensions of stride 0), though a view needs
/// that count only for `as_slice` of a contiguous array.
#[test]
fn validated_descriptors_with_huge_counts_get_views() {
    let wire = |shape: &[u64], strides: &[i64]| {
        let mut w = Descriptor::new(DType::U8, &vec![1; shape.len()])
            .unwrap()
            .with_strides(strides)
            .unwrap()
            .encode();
        for (i, n) in shape.iter().enumerate() {
            w[16 + 8 * i..24 + 8 * i].copy_from_slice(&n.to_le_bytes());
        }
        Descriptor::decode(&w).unwrap().unwrap()
    };
    let bytes = [7u8; 3];
    let empty = wire(&[1 << 63, 3, 0], &[1, 1, 1]);
    assert_eq!(empty.len(), Ok(0));
    assert_eq!(empty.validate(0), Ok(()));
    let v = View::<u8>::new(&bytes, &empty).unwrap();
    assert_eq!(v.get(&[0, 0, 0]), None);
    // Every element of a broadcast is byte 2.
    let broadcast = wire(&[u64::MAX, u64::MAX], &[0, 0]).with_offset(2);
    assert_eq!(broadcast.len(), Err(DescriptorError::Overflow));
    assert_eq!(broadcast.validate(3), Ok(()));
    assert_eq!(broadcast.validate(2).is_err(), true);
    let v = View::<u8>::new(&bytes, &broadcast).unwrap();
    let last = (u64::MAX - 1) as usize;
    assert!(std::ptr::eq(v.get(&[last, last]).unwrap(), &bytes[2]));
    assert!(std::ptr::eq(&v[[0, last]], &bytes[2]));
    assert_eq!(v.as_slice(), None);
}

/// Review: `OutOfBounds { end: u64::MAX }` means "an element before the
/// buffer's start", but an array or plane ending exactly at `u64::MAX`
/// (offset `u64::MAX - 1`, one byte) produced that same error, and its
/// message told the user the descriptor reached before the start. Such an
/// end is now `Overflow` (no buffer has `u64::MAX` bytes).
#[test]
fn an_end_at_u64_max_is_not_before_the_start() {
    let far = Descriptor::new(DType::U8, &[])
        .unwrap()
        .with_offset(u64::MAX - 1);
    let plane = Descriptor::new(DType::U8, &[0])
        .unwrap()
        .with_planes(&[bips_core::Plane {
            offset: u64::MAX - 1,
            stride: 0,
            rows: 1,
            row_bytes: 1,
        }]);
    for d in [far, plane.unwrap()] {
        let e = d.validate(10).unwrap_err();
        assert!(!e.to_string().contains("before the start"), "{d:?}: {e}");
        assert_eq!(e, DescriptorError::Overflow, "{d:?}");
        assert_eq!(d.extent(), Err(DescriptorError::Overflow));
    }
    // One byte less is a plain "needs N bytes".
    let e = Descriptor::new(DType::U8, &[])
        .unwrap()
        .with_offset(u64::MAX - 2)
        .validate(10)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "descriptor array needs {} bytes, the sample has 10",
            u64::MAX - 1
        )
    );
}
