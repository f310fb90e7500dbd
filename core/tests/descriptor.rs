//! Property tests of the frame/tensor descriptor (`bips_core::descriptor`,
//! issue 16): a descriptor comes from another process and is untrusted.
//!
//! * Arbitrary and structured 320-byte wires: [`Descriptor::decode`] never
//!   panics; when decode and [`Descriptor::validate`]`(len)` accept, every
//!   element lies in `[0, len)` by a reference computation of our own (i128),
//!   all elements enumerated for small shapes, random ones sampled for large
//!   ones; a [`View`] / [`ViewMut`] built on such a buffer hands out exactly
//!   those addresses, `None` outside the shape, and `as_slice` stays inside.
//! * `validate` agrees with a brute-force "every element and plane byte
//!   inside" on small descriptors (negative and zero strides, empty dims).
//! * Round trips: `decode(encode(d)) == d` for built descriptors,
//!   `encode(decode(x))` is a fixed point and keeps every meaningful byte.
//! * [`PayloadType::decode`] on arbitrary 512-byte blocks never panics;
//!   [`Region::attach`] of a region whose type block is garbage answers
//!   `LayoutError::BadPayloadType` (or `Ok` exactly when the block parses).
//! * Named regression tests for the defects these properties found.
//!
//! Under Miri (`cargo +nightly miri test -p bips-core --test descriptor`,
//! ~10 s) the case counts are tiny and the properties without view pointer
//! arithmetic (round trips, type blocks) are skipped: Miri checks the views.
//! `PROPTEST_CASES=N` overrides the counts for a soak run.
#![cfg(not(loom))]

mod common;

use bips_core::descriptor::{
    DType, Descriptor, DescriptorError, Element, PayloadType, Plane, View, ViewMut,
    DESCRIPTOR_SIZE, MAX_DIMS, MAX_PLANES, PAYLOAD_TYPE_SIZE,
};
use bips_core::{LayoutError, Region};
use proptest::prelude::*;
use proptest::test_runner::Config;

/// `cases` per property (a handful under Miri); `PROPTEST_CASES` overrides.
fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(miri) { 2 } else { cases });
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Elements enumerated one by one up to this count; sampled beyond.
const ENUMERATE: u128 = if cfg!(miri) { 24 } else { 4096 };
/// Random elements checked on a large array.
const SAMPLES: usize = if cfg!(miri) { 4 } else { 256 };
/// Bytes of the test buffer views are built on.
const BUF: usize = 1024;

// ---------------------------------------------------------------------------
// Reference model (our own arithmetic, i128)
// ---------------------------------------------------------------------------

/// Byte address of element `idx`: offset + sum(i * stride), in i128.
fn addr(d: &Descriptor, idx: &[u64]) -> i128 {
    i128::from(d.offset())
        + idx
            .iter()
            .zip(d.strides())
            .map(|(&i, &s)| i128::from(i) * i128::from(s))
            .sum::<i128>()
}

/// Number of elements, saturating at `u128::MAX` (it only decides
/// whether to enumerate or sample, and compares with `as_slice`'s length).
fn count(d: &Descriptor) -> u128 {
    d.shape()
        .iter()
        .fold(1u128, |a, &n| a.saturating_mul(u128::from(n)))
}

/// Every index of a shape of at most `ENUMERATE` elements, row-major.
fn all_indices(shape: &[u64]) -> Vec<Vec<u64>> {
    let mut out = Vec::new();
    if shape.contains(&0) {
        return out;
    }
    let mut idx = vec![0u64; shape.len()];
    loop {
        out.push(idx.clone());
        let mut k = shape.len();
        loop {
            if k == 0 {
                return out;
            }
            k -= 1;
            idx[k] += 1;
            if idx[k] < shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
}

/// A small deterministic generator for sampled indices (splitmix64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// In `[0, n)`, with the corners (0 and n - 1) often.
    fn below(&mut self, n: u64) -> u64 {
        match self.next() % 4 {
            0 => 0,
            1 => n - 1,
            _ => self.next() % n,
        }
    }
}

/// The indices to check: all of them for a small array, else the corners
/// and random samples.
fn indices(d: &Descriptor, seed: u64) -> Vec<Vec<u64>> {
    if d.is_empty() {
        return Vec::new();
    }
    if count(d) <= ENUMERATE {
        return all_indices(d.shape());
    }
    let mut rng = Rng(seed);
    let mut out = vec![vec![0; d.ndim()], d.shape().iter().map(|n| n - 1).collect()];
    for _ in 0..SAMPLES {
        out.push(d.shape().iter().map(|&n| rng.below(n)).collect());
    }
    out
}

/// Reference: every element and every plane byte lies in `[0, len)`
/// (brute force over elements and plane rows; small descriptors only).
fn all_inside(d: &Descriptor, len: u64) -> bool {
    let size = d.dtype().size() as i128;
    let len = i128::from(len);
    let array = all_indices(d.shape()).iter().all(|idx| {
        let a = addr(d, idx);
        a >= 0 && a + size <= len
    });
    let planes = d.planes().iter().all(|p| {
        p.row_bytes == 0
            || (0..p.rows).all(|r| {
                let start = i128::from(p.offset) + i128::from(r) * i128::from(p.stride);
                start >= 0 && start + i128::from(p.row_bytes) <= len
            })
    });
    array && planes
}

// ---------------------------------------------------------------------------
// Views: every element the view hands out is the reference's, inside
// ---------------------------------------------------------------------------

/// An 8-aligned buffer of `BUF` bytes with a recognisable pattern.
fn buffer() -> Vec<u64> {
    (0..BUF as u64 / 8)
        .map(|i| i.wrapping_mul(0x0101_0101_0101_0101))
        .collect()
}

/// `d` is validated against `len` (<= BUF): a view over the first `len`
/// bytes addresses exactly the reference's bytes, all inside.
fn check_views<T: Element>(d: &Descriptor, len: usize, seed: u64) {
    let mut store = buffer();
    let bytes: &mut [u8] = &mut bytemuck::cast_slice_mut(&mut store)[..len];
    let base = bytes.as_ptr() as usize;
    let size = core::mem::size_of::<T>();
    let checked = indices(d, seed);
    match View::<T>::new(bytes, d) {
        Ok(v) => {
            assert_eq!(v.shape().len(), d.ndim());
            for idx in &checked {
                let ui: Vec<usize> = idx.iter().map(|&i| i as usize).collect();
                let p = v.get(&ui).expect("an index inside the shape") as *const T as usize;
                let want = addr(d, idx);
                assert!(want >= 0 && want as usize + size <= len, "{d:?} {idx:?}");
                assert_eq!(p - base, want as usize, "{d:?} {idx:?}");
                std::hint::black_box(*v.get(&ui).unwrap());
            }
            check_outside(d, |i| v.get(i).is_none());
            if let Some(s) = v.as_slice() {
                let start = s.as_ptr() as usize;
                assert!(start >= base && start + std::mem::size_of_val(s) <= base + len);
                assert_eq!(s.len() as u128, count(d));
                if let Some(first) = checked.first() {
                    assert_eq!(start - base, addr(d, first) as usize);
                }
            }
        }
        Err(DescriptorError::Misaligned { .. }) => {}
        Err(e) => panic!("a validated {d:?} refused by View::new: {e}"),
    }
    match ViewMut::<T>::new(bytes, d) {
        Ok(mut v) => {
            for idx in checked.iter().take(SAMPLES) {
                let ui: Vec<usize> = idx.iter().map(|&i| i as usize).collect();
                let r = v.get_mut(&ui).expect("an index inside the shape");
                *r = T::zeroed();
                let p = r as *mut T as usize;
                assert_eq!(p - base, addr(d, idx) as usize, "{d:?} {idx:?}");
            }
            check_outside(d, |i| v.get(i).is_none());
            if let Some(s) = v.as_mut_slice() {
                let start = s.as_ptr() as usize;
                assert!(start >= base && start + std::mem::size_of_val(s) <= base + len);
            }
        }
        Err(DescriptorError::Misaligned { .. }) => {}
        Err(e) => panic!("a validated {d:?} refused by ViewMut::new: {e}"),
    }
}

/// Indices out of the shape (one coordinate == its dim, or the wrong
/// number of dimensions) are `None`; on an empty array every index is (the
/// leading coordinates inside, as far as they go).
fn check_outside(d: &Descriptor, none: impl Fn(&[usize]) -> bool) {
    let shape: Vec<usize> = d.shape().iter().map(|&n| n as usize).collect();
    for k in 0..shape.len() {
        let mut idx: Vec<usize> = shape.iter().map(|&n| n.saturating_sub(1)).collect();
        idx[k] = shape[k];
        assert!(none(&idx), "{d:?} {idx:?}");
    }
    let mut longer = vec![0usize; shape.len() + 1];
    assert!(none(&longer), "{d:?}: {} indices", longer.len());
    longer.truncate(shape.len().saturating_sub(1));
    if !shape.is_empty() {
        assert!(none(&longer), "{d:?}: {} indices", longer.len());
    }
    if d.is_empty() {
        // Every coordinate as large as its dimension allows: the first
        // coordinates are inside, an empty one is not.
        let idx: Vec<usize> = shape.iter().map(|&n| n.saturating_sub(1)).collect();
        assert!(none(&idx), "{d:?} {idx:?}");
    }
}

/// Dispatches [`check_views`] on the element type (dtypes without an
/// `Element` type are checked by the reference alone).
fn check_views_any(d: &Descriptor, len: usize, seed: u64) {
    match d.dtype() {
        DType::U8 => check_views::<u8>(d, len, seed),
        DType::I8 => check_views::<i8>(d, len, seed),
        DType::U16 => check_views::<u16>(d, len, seed),
        DType::I16 => check_views::<i16>(d, len, seed),
        DType::U32 => check_views::<u32>(d, len, seed),
        DType::I32 => check_views::<i32>(d, len, seed),
        DType::U64 => check_views::<u64>(d, len, seed),
        DType::I64 => check_views::<i64>(d, len, seed),
        DType::F32 => check_views::<f32>(d, len, seed),
        DType::F64 => check_views::<f64>(d, len, seed),
        _ => {}
    }
}

/// Everything a decoded descriptor must survive: formatting, extent,
/// validation against `len`, and (when it fits `BUF`) views.
fn check_decoded(d: &Descriptor, len: u64, seed: u64) {
    assert!(!d.to_string().is_empty());
    assert!(!format!("{d:?}").is_empty());
    let _ = d.is_c_contiguous();
    let _ = d.len();
    let extent = d.extent();
    match d.validate(len) {
        Ok(()) => {
            // The extent agrees (planes included), and every element checked
            // by the reference lies inside.
            let e = extent.expect("a valid descriptor has an extent");
            assert!(e <= len, "{d:?}: extent {e} > {len}");
            let size = d.dtype().size() as i128;
            for idx in indices(d, seed) {
                let a = addr(d, &idx);
                assert!(
                    a >= 0 && a + size <= i128::from(len),
                    "{d:?}: element {idx:?} at {a} outside {len} bytes"
                );
            }
            if len <= BUF as u64 {
                check_views_any(d, len as usize, seed);
            }
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            match e {
                DescriptorError::Overflow => {}
                DescriptorError::OutOfBounds { len: l, .. } => assert_eq!(l, len),
                e => panic!("validate answered {e:?}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

fn dim() -> BoxedStrategy<u64> {
    prop_oneof![
        8 => 0u64..5,
        2 => 5u64..300,
        1 => Just(u64::MAX),
        1 => Just(u64::MAX / 2 + 1),
        1 => Just(1u64 << 32),
        1 => any::<u64>(),
    ]
    .boxed()
}

fn stride() -> BoxedStrategy<i64> {
    prop_oneof![
        8 => -64i64..64,
        2 => -4096i64..4096,
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
        1 => Just(1i64 << 32),
        1 => any::<i64>(),
    ]
    .boxed()
}

fn offset() -> BoxedStrategy<u64> {
    prop_oneof![
        8 => 0u64..256,
        1 => Just(u64::MAX),
        1 => Just(u64::MAX - 1),
        1 => Just(i64::MAX as u64 + 1),
        1 => any::<u64>(),
    ]
    .boxed()
}

fn text() -> BoxedStrategy<[u8; 16]> {
    prop_oneof![
        4 => Just([0u8; 16]),
        2 => "[A-Za-z0-9_:]{1,15}".prop_map(|s| {
            let mut t = [0u8; 16];
            t[..s.len()].copy_from_slice(s.as_bytes());
            t
        }),
        1 => any::<[u8; 16]>(),
    ]
    .boxed()
}

fn plane() -> BoxedStrategy<[u32; 5]> {
    // offset (low, high), stride, rows, row_bytes
    (
        prop_oneof![4 => 0u32..512, 1 => any::<u32>()],
        prop_oneof![4 => Just(0u32), 1 => any::<u32>()],
        prop_oneof![4 => 0u32..64, 1 => any::<u32>()],
        prop_oneof![4 => 0u32..8, 1 => any::<u32>()],
        prop_oneof![4 => 0u32..64, 1 => any::<u32>()],
    )
        .prop_map(|(a, b, c, d, e)| [a, b, c, d, e])
        .boxed()
}

/// A 320-byte wire: mostly well-formed headers with interesting numbers,
/// then a few random byte mutations (or none).
fn wire() -> BoxedStrategy<Vec<u8>> {
    let head = (
        prop_oneof![6 => Just(1u8), 1 => Just(0u8), 1 => any::<u8>()],
        prop_oneof![6 => 1u8..16, 1 => any::<u8>()],
        prop_oneof![6 => 0u8..=8, 1 => any::<u8>()],
        prop_oneof![6 => 0u8..=4, 1 => any::<u8>()],
        offset(),
    );
    let arrays = (
        proptest::array::uniform8(dim()),
        proptest::array::uniform8(stride()),
    );
    let rest = (
        text(),
        text(),
        proptest::array::uniform4(plane()),
        proptest::collection::vec((0usize..DESCRIPTOR_SIZE, any::<u8>()), 0..3),
    );
    (head, arrays, rest)
        .prop_map(
            |((v, code, ndim, nplanes, off), (shape, strides), (fmt, col, planes, muts))| {
                let mut w = vec![0u8; DESCRIPTOR_SIZE];
                w[..4].copy_from_slice(&[v, code, ndim, nplanes]);
                w[8..16].copy_from_slice(&off.to_le_bytes());
                for i in 0..MAX_DIMS {
                    w[16 + 8 * i..24 + 8 * i].copy_from_slice(&shape[i].to_le_bytes());
                    w[80 + 8 * i..88 + 8 * i].copy_from_slice(&strides[i].to_le_bytes());
                }
                w[144..160].copy_from_slice(&fmt);
                w[160..176].copy_from_slice(&col);
                for (i, p) in planes.iter().enumerate() {
                    let o = 176 + 24 * i;
                    for (k, x) in p.iter().enumerate() {
                        w[o + 4 * k..o + 4 * k + 4].copy_from_slice(&x.to_le_bytes());
                    }
                }
                for (at, b) in muts {
                    w[at] = b;
                }
                w
            },
        )
        .boxed()
}

fn len() -> BoxedStrategy<u64> {
    prop_oneof![
        6 => 0u64..=BUF as u64,
        1 => Just(u64::MAX),
        1 => any::<u64>(),
    ]
    .boxed()
}

fn as_wire(v: &[u8]) -> [u8; DESCRIPTOR_SIZE] {
    v.try_into().unwrap()
}

/// A small descriptor, built: up to 4 dims of 0..4, strides in -24..24
/// (zero and negative included), offset 0..64, 0..=2 small planes.
fn small_descriptor() -> BoxedStrategy<Descriptor> {
    let planes = proptest::collection::vec(
        (0u64..96, 0u32..16, 0u32..4, 0u32..12).prop_map(|(offset, stride, rows, row_bytes)| {
            Plane {
                offset,
                stride,
                rows,
                row_bytes,
            }
        }),
        0..=2,
    );
    (
        0usize..DType::ALL.len(),
        proptest::collection::vec((0u64..4, -24i64..24), 0..=4),
        0u64..64,
        planes,
    )
        .prop_map(|(t, dims, off, planes)| {
            let shape: Vec<u64> = dims.iter().map(|d| d.0).collect();
            let strides: Vec<i64> = dims.iter().map(|d| d.1).collect();
            Descriptor::new(DType::ALL[t], &shape)
                .unwrap()
                .with_strides(&strides)
                .unwrap()
                .with_offset(off)
                .with_planes(&planes)
                .unwrap()
        })
        .boxed()
}

/// Any descriptor the builders make (not necessarily valid for any length).
fn built_descriptor() -> BoxedStrategy<Descriptor> {
    let planes = proptest::collection::vec(
        (any::<u64>(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
            |(offset, stride, rows, row_bytes)| Plane {
                offset,
                stride,
                rows,
                row_bytes,
            },
        ),
        0..=MAX_PLANES,
    );
    (
        0usize..DType::ALL.len(),
        proptest::collection::vec((0u64..1000, stride()), 0..=MAX_DIMS),
        offset(),
        "[A-Za-z0-9_]{0,15}",
        "[a-z0-9:]{0,15}",
        planes,
    )
        .prop_filter_map(
            "shape too large for Descriptor::new",
            |(t, dims, off, fmt, col, planes)| {
                let shape: Vec<u64> = dims.iter().map(|d| d.0).collect();
                let strides: Vec<i64> = dims.iter().map(|d| d.1).collect();
                let d = Descriptor::new(DType::ALL[t], &shape).ok()?;
                let d = d.with_strides(&strides).unwrap().with_offset(off);
                let d = if fmt.is_empty() {
                    d
                } else {
                    d.with_format(&fmt).unwrap()
                };
                let d = if col.is_empty() {
                    d
                } else {
                    d.with_colorimetry(&col).unwrap()
                };
                Some(d.with_planes(&planes).unwrap())
            },
        )
        .boxed()
}

/// The bytes of a wire that mean something for a descriptor: header,
/// offset, the first `ndim` shape and stride entries, text, the first
/// `nplanes` planes (without their reserved word).
fn meaningful(w: &[u8; DESCRIPTOR_SIZE], d: &Descriptor) -> Vec<u8> {
    let mut out = w[..4].to_vec();
    out.extend_from_slice(&w[8..16]);
    for i in 0..d.ndim() {
        out.extend_from_slice(&w[16 + 8 * i..24 + 8 * i]);
        out.extend_from_slice(&w[80 + 8 * i..88 + 8 * i]);
    }
    out.extend_from_slice(&w[144..176]);
    for i in 0..d.planes().len() {
        out.extend_from_slice(&w[176 + 24 * i..176 + 24 * i + 20]);
    }
    out
}

fn type_block() -> BoxedStrategy<Vec<u8>> {
    (
        prop_oneof![
            2 => Just(0u32),
            3 => Just(1u32),
            3 => Just(3u32),
            1 => Just(2u32),
            1 => any::<u32>(),
        ],
        any::<u32>(),
        prop_oneof![
            3 => "[ -~]{0,63}".prop_map(|s| s.into_bytes()),
            1 => proptest::collection::vec(any::<u8>(), 64),
        ],
        wire(),
        proptest::collection::vec(any::<u8>(), 64),
    )
        .prop_map(|(flags, version, name, desc, tail)| {
            let mut w = vec![0u8; PAYLOAD_TYPE_SIZE];
            w[..4].copy_from_slice(&flags.to_le_bytes());
            w[4..8].copy_from_slice(&version.to_le_bytes());
            w[8..8 + name.len().min(64)].copy_from_slice(&name[..name.len().min(64)]);
            w[128..448].copy_from_slice(&desc);
            w[448..].copy_from_slice(&tail);
            w
        })
        .boxed()
}

/// Checks a decoded payload type (or its error) from a 512-byte block.
fn check_type_block(
    block: &[u8; PAYLOAD_TYPE_SIZE],
) -> Result<Option<PayloadType>, DescriptorError> {
    let got = PayloadType::decode(block);
    match &got {
        Ok(Some(t)) => {
            assert!(!t.name().is_empty() && t.name().len() <= 63);
            assert!(t.to_string().starts_with(t.name()));
            assert_eq!(PayloadType::decode(&t.encode()), Ok(Some(*t)));
            if let Some(d) = t.descriptor() {
                let w: [u8; DESCRIPTOR_SIZE] = block[128..448].try_into().unwrap();
                assert_eq!(Descriptor::decode(&w), Ok(Some(*d)));
            }
        }
        Ok(None) => assert_eq!(block[..4], [0; 4]),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    got
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(2048))]

    /// (a, d) Arbitrary bytes: decode never panics; what it accepts
    /// survives formatting, validation and views.
    #[test]
    fn arbitrary_wire_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), DESCRIPTOR_SIZE),
        len in len(),
        seed in any::<u64>(),
    ) {
        if let Ok(Some(d)) = Descriptor::decode(&as_wire(&bytes)) {
            check_decoded(&d, len, seed);
        }
    }

    /// (a, c, d) Structured wires (interesting numbers, then mutations):
    /// accepted elements lie inside, views address exactly them, and the
    /// wire round-trips without losing a meaningful byte.
    #[test]
    fn structured_wire_stays_inside(w in wire(), len in len(), seed in any::<u64>()) {
        let w = as_wire(&w);
        match Descriptor::decode(&w) {
            Ok(Some(d)) => {
                check_decoded(&d, len, seed);
                let e = d.encode();
                prop_assert_eq!(Descriptor::decode(&e), Ok(Some(d)));
                prop_assert_eq!(Descriptor::decode(&e).unwrap().unwrap().encode(), e);
                prop_assert_eq!(meaningful(&e, &d), meaningful(&w, &d));
            }
            Ok(None) => prop_assert_eq!(w[0], 0),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    /// (b) validate agrees with brute force on small descriptors, and the
    /// extent is the brute-force end.
    #[test]
    fn validate_matches_brute_force(d in small_descriptor(), len in 0u64..160) {
        let inside = all_inside(&d, len);
        let got = d.validate(len);
        prop_assert_eq!(got.is_ok(), inside, "{:?} len {}: {:?}", d, len, got);
        if let Err(e) = got {
            let is_oob = matches!(e, DescriptorError::OutOfBounds { .. });
            prop_assert!(is_oob, "{:?}", e);
        }
        // Extent: one past the last element byte / plane byte (or an error
        // when an element lies before the start).
        let size = d.dtype().size() as i128;
        let idx = all_indices(d.shape());
        let lo = idx.iter().map(|i| addr(&d, i)).min();
        let hi = idx.iter().map(|i| addr(&d, i) + size).max().unwrap_or(0);
        let planes = d.planes().iter().map(|p| {
            if p.rows == 0 || p.row_bytes == 0 {
                0
            } else {
                i128::from(p.offset)
                    + i128::from(p.rows - 1) * i128::from(p.stride)
                    + i128::from(p.row_bytes)
            }
        });
        let end = planes.fold(hi, i128::max);
        match lo {
            Some(lo) if lo < 0 => prop_assert!(d.extent().is_err()),
            _ => prop_assert_eq!(d.extent().map(i128::from), Ok(end)),
        }
        if got.is_ok() && len <= BUF as u64 {
            check_views_any(&d, len as usize, len);
        }
    }

    /// (c) What the builders make round-trips exactly.
    #[test]
    #[cfg_attr(miri, ignore = "no view arithmetic; proptest generation is slow under Miri")]
    fn built_descriptors_round_trip(d in built_descriptor()) {
        let w = d.encode();
        prop_assert_eq!(Descriptor::decode(&w), Ok(Some(d)));
        prop_assert_eq!(Descriptor::decode(&w).unwrap().unwrap().encode(), w);
        prop_assert!(!d.to_string().is_empty());
    }

    /// (e) Arbitrary type blocks never panic; accepted ones round-trip.
    #[test]
    #[cfg_attr(miri, ignore = "no view arithmetic; proptest generation is slow under Miri")]
    fn arbitrary_type_block_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), PAYLOAD_TYPE_SIZE),
    ) {
        let _ = check_type_block(&bytes.try_into().unwrap());
    }

    /// (e) Structured type blocks (valid flags, names, descriptors).
    #[test]
    #[cfg_attr(miri, ignore = "no view arithmetic; proptest generation is slow under Miri")]
    fn structured_type_block_never_panics(block in type_block()) {
        let _ = check_type_block(&block.try_into().unwrap());
    }

    /// (f) A region whose type block is garbage: attach answers exactly
    /// what parsing the block (and fitting its descriptor to a buffer) says,
    /// as `LayoutError::BadPayloadType`; never a panic.
    #[test]
    #[cfg_attr(miri, ignore = "no view arithmetic; proptest generation is slow under Miri")]
    fn attach_refuses_a_garbage_type_block(block in type_block(), typed in any::<bool>()) {
        let g = common::small(2, 1, bips_core::Policy::Block);
        let (mut raw, layout) = common::RawRegion::formatted(g);
        if typed {
            // Start from a typed channel, as a producer would have made.
            let t = PayloadType::new("image/gray8", 1)
                .unwrap()
                .with_descriptor(Descriptor::image(8, 8, 1, DType::U8).unwrap());
            raw.bytes_mut()[layout.type_offset..layout.type_offset + PAYLOAD_TYPE_SIZE]
                .copy_from_slice(&t.encode());
            prop_assert_eq!(raw.region().payload_type(), Ok(Some(t)));
        }
        raw.bytes_mut()[layout.type_offset..layout.type_offset + PAYLOAD_TYPE_SIZE]
            .copy_from_slice(&block);
        let block: [u8; PAYLOAD_TYPE_SIZE] = block.try_into().unwrap();
        let want = check_type_block(&block).and_then(|t| {
            if let Some(d) = t.as_ref().and_then(|t| t.descriptor()) {
                d.validate(g.buffer_size)?;
            }
            Ok(t)
        });
        // SAFETY: `raw` owns `len` bytes, 4096-aligned, used by nobody else.
        let got = unsafe { Region::attach(raw.ptr(), raw.len()) };
        match (got, want) {
            (Ok(r), Ok(t)) => prop_assert_eq!(r.payload_type(), Ok(t)),
            (Err(LayoutError::BadPayloadType(e)), Err(w)) => {
                prop_assert_eq!(e, w);
                let err = LayoutError::BadPayloadType(e);
                prop_assert!(err.to_string().starts_with("bad payload type"));
            }
            (got, want) => prop_assert!(false, "attach {:?}, expected {:?}", got.map(|_| ()), want),
        }
    }
}

// ---------------------------------------------------------------------------
// Named cases
// ---------------------------------------------------------------------------

/// Typed refusals of hostile wires and descriptors.
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
    assert!(broadcast.validate(2).is_err());
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
