//! Property tests of the layout and of S3 (shared memory is untrusted input).
//!
//! * [`Layout::new`] over random geometries, in and far out of range: never
//!   panics; an `Ok` layout has every part in order, aligned, disjoint and
//!   inside `total_size`; an `Err` is exactly the variant a reference model
//!   predicts.
//! * Header validation: every header field set to a bad value gives its own
//!   typed [`LayoutError`].
//! * Random corruption of a formatted region, before attaching and between
//!   protocol operations (a hostile peer writing while we run): random bytes
//!   and words anywhere in the control part, plus aimed writes of plausible
//!   wrong values into named words (head, tail, stamps, holds, descriptors).
//!   Every call returns `Ok` or a typed error, never panics (indexing panics
//!   included); whatever a call hands out (buffer index, length) stays inside
//!   the region; each consumer's sequences still rise strictly with the gap
//!   reported (S4). Also: a header rewritten with another valid geometry, and
//!   a thread scribbling concurrently with a producer and two consumers.
//!
//! Case counts keep the file well under a second in release;
//! `PROPTEST_CASES=N` overrides them for a soak run. Failures are not
//! persisted to files: the minimal input is printed, to become a named test.
//!
//! Not run under Miri (proptest is too slow there); the protocol's memory
//! model is checked by `threads.rs` under Miri.
#![cfg(not(any(miri, loom)))]

mod common;

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};

use bips_core::descriptor::DESCRIPTOR_SIZE;
use bips_core::layout::{
    limits, BufferDesc, ConsumerEntry, Header, ProducerBlock, RingSlot, TypeBlock, LINE, MAGIC,
    VERSION,
};
use bips_core::{
    reclaim_consumer, Consumer, Geometry, Layout, LayoutError, NoWake, Policy, Producer, Received,
    Region, Spin, Start,
};
use common::RawRegion;
use proptest::prelude::*;
use proptest::test_runner::Config;

/// `cases` per property; `PROPTEST_CASES` overrides it for long soak runs.
fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    Config {
        cases,
        // No regression files written next to the sources: a failure prints
        // its minimal input, which belongs in a named test.
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------
// Layout::new
// ---------------------------------------------------------------------------

/// A `u32` near the interesting edges of a field whose limit is `limit`.
fn edge_u32(limit: u32) -> impl Strategy<Value = u32> {
    prop_oneof![
        3 => 0..=limit.saturating_mul(2),
        1 => Just(0u32),
        1 => Just(1u32),
        1 => Just(limit - 1),
        1 => Just(limit),
        1 => Just(limit.saturating_add(1)),
        1 => Just(u32::MAX),
        1 => Just(u32::MAX - 1),
        1 => Just(1u32 << 31),
        2 => (0u32..32).prop_map(|k| 1u32 << k),
        2 => any::<u32>(),
    ]
}

fn edge_u64(limit: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => 0..=limit.saturating_mul(2),
        1 => Just(0u64),
        1 => Just(1u64),
        1 => Just(limit - 1),
        1 => Just(limit),
        1 => Just(limit + 1),
        1 => Just(u64::MAX),
        1 => Just(u64::MAX - 1),
        1 => Just(isize::MAX as u64),
        1 => Just(u32::MAX as u64),
        2 => (0u32..64).prop_map(|k| 1u64 << k),
        2 => (0u32..64).prop_map(|k| (1u64 << k) - 1),
        2 => any::<u64>(),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![Just(Policy::Block), Just(Policy::DropOldest)]
}

/// Random geometries, mostly at or near the edges of every field.
fn any_geometry() -> impl Strategy<Value = Geometry> {
    (
        edge_u32(limits::MAX_BUFFERS),
        edge_u64(limits::MAX_BUFFER_SIZE),
        edge_u32(limits::MAX_ALIGN),
        // ring: raw, or derived from buffer_count (so that it often passes).
        (0u8..3, edge_u32(limits::MAX_RING), 0u32..4),
        edge_u32(limits::MAX_CONSUMERS),
        edge_u32(limits::MAX_META),
        (policy(), edge_u32(limits::MAX_HELD)),
    )
        .prop_map(
            |(bc, bs, al, (mode, ring, shift), mc, meta, (policy, mh))| {
                let ring_capacity = match mode {
                    0 => ring,
                    1 => bc.checked_next_power_of_two().unwrap_or(0) << shift,
                    _ => bc,
                };
                Geometry {
                    buffer_count: bc,
                    buffer_size: bs,
                    alignment: al,
                    ring_capacity,
                    max_consumers: mc,
                    meta_size: meta,
                    policy,
                    max_held: mh,
                }
            },
        )
}

/// Mostly valid geometries spanning the whole accepted range.
fn valid_geometry_wide() -> impl Strategy<Value = Geometry> {
    (
        1..=limits::MAX_BUFFERS,
        1..=limits::MAX_BUFFER_SIZE,
        6u32..=21,
        0u32..=20,
        1..=limits::MAX_CONSUMERS,
        0..=limits::MAX_META,
        (policy(), 1..=limits::MAX_HELD),
    )
        .prop_map(|(bc, bs, al, ring, mc, meta, (policy, mh))| Geometry {
            buffer_count: bc,
            buffer_size: bs,
            alignment: 1 << al,
            ring_capacity: (1u32 << ring).max(bc.next_power_of_two()),
            max_consumers: mc,
            meta_size: meta,
            policy,
            max_held: mh,
        })
}

/// The error [`Layout::new`] must give, checked in its documented order, or
/// `None` when every field is in range.
fn expected_error(g: &Geometry) -> Option<LayoutError> {
    use limits::*;
    let oor = |field, value: u64| Some(LayoutError::OutOfRange { field, value });
    if !(1..=MAX_BUFFERS).contains(&g.buffer_count) {
        return oor("buffer_count", g.buffer_count.into());
    }
    if !(1..=MAX_BUFFER_SIZE).contains(&g.buffer_size) {
        return oor("buffer_size", g.buffer_size);
    }
    if !(MIN_ALIGN..=MAX_ALIGN).contains(&g.alignment) || !g.alignment.is_power_of_two() {
        return oor("alignment", g.alignment.into());
    }
    if !(g.buffer_count..=MAX_RING).contains(&g.ring_capacity) || !g.ring_capacity.is_power_of_two()
    {
        return oor("ring_capacity", g.ring_capacity.into());
    }
    if !(1..=MAX_CONSUMERS).contains(&g.max_consumers) {
        return oor("max_consumers", g.max_consumers.into());
    }
    if g.meta_size > MAX_META {
        return oor("meta_size", g.meta_size.into());
    }
    if !(1..=MAX_HELD).contains(&g.max_held) {
        return oor("max_held", g.max_held.into());
    }
    None
}

/// Checks every structural property of an `Ok` layout (u128 arithmetic, so
/// the checks themselves cannot overflow).
fn check_layout(g: &Geometry, l: &Layout) -> Result<(), TestCaseError> {
    use core::mem::size_of;
    prop_assert_eq!(&l.geometry, g);
    let n = u128::from(g.buffer_count);
    let align = u128::from(g.alignment);
    let line = LINE as u128;
    prop_assert_eq!(l.meta_stride % 64, 0);
    prop_assert!(l.meta_stride as u128 >= u128::from(g.meta_size));
    prop_assert!((l.meta_stride as u128) < u128::from(g.meta_size) + 64);
    prop_assert_eq!(l.buffer_stride as u128 % align, 0);
    prop_assert!(l.buffer_stride as u128 >= u128::from(g.buffer_size));
    prop_assert!((l.buffer_stride as u128) < u128::from(g.buffer_size) + align);
    // (name, offset, bytes, required alignment), in region order.
    // The hold table: a run of `max_held` words per consumer, each rounded
    // up to a line, only when the holds do not fit the entry line.
    let spilled = g.max_held as usize > bips_core::INLINE_HELD;
    let run = if spilled {
        (u128::from(g.max_held) * 8).div_ceil(line) * line
    } else {
        0
    };
    prop_assert_eq!(l.holds_stride as u128, run);
    let parts: [(&str, usize, u128, u128); 10] = [
        ("header", 0, size_of::<Header>() as u128, line),
        (
            "producer",
            l.producer_offset,
            size_of::<ProducerBlock>() as u128,
            line,
        ),
        (
            "consumers",
            l.consumers_offset,
            u128::from(g.max_consumers) * size_of::<ConsumerEntry>() as u128,
            line,
        ),
        (
            "hold table",
            l.holds_offset,
            u128::from(g.max_consumers) * run,
            line,
        ),
        (
            "ring",
            l.ring_offset,
            u128::from(g.ring_capacity) * size_of::<RingSlot>() as u128,
            line,
        ),
        (
            "descriptors",
            l.buffers_offset,
            n * size_of::<BufferDesc>() as u128,
            line,
        ),
        (
            "type block",
            l.type_offset,
            size_of::<TypeBlock>() as u128,
            line,
        ),
        (
            "frame descriptors",
            l.desc_offset,
            n * DESCRIPTOR_SIZE as u128,
            line,
        ),
        ("meta", l.meta_offset, n * l.meta_stride as u128, line),
        ("data", l.data_offset, n * l.buffer_stride as u128, align),
    ];
    let mut end = 0u128;
    for (name, off, bytes, a) in parts {
        let off = off as u128;
        prop_assert_eq!(off % a, 0, "{} at {} not {}-aligned", name, off, a);
        prop_assert!(
            off >= end,
            "{} at {} overlaps the part ending at {}",
            name,
            off,
            end
        );
        prop_assert!(
            off - end < a,
            "{} at {}: gap after {} too large",
            name,
            off,
            end
        );
        end = off + bytes;
    }
    prop_assert!(end <= l.total_size as u128, "parts end at {}", end);
    prop_assert_eq!(end, l.total_size as u128, "no tail padding");
    prop_assert!(l.total_size as u128 <= isize::MAX as u128);
    Ok(())
}

proptest! {
    #![proptest_config(config(4096))]

    #[test]
    fn layout_new_never_panics_and_is_sound(g in any_geometry()) {
        match (Layout::new(g), expected_error(&g)) {
            (Ok(l), None) => check_layout(&g, &l)?,
            (Err(e), Some(want)) => prop_assert_eq!(e, want),
            // On 64-bit every in-range geometry fits (largest: 2^56 bytes of
            // data); `Overflow` may only appear where usize is smaller.
            (Err(LayoutError::Overflow), None) => prop_assert!(usize::BITS < 64),
            (got, want) => prop_assert!(false, "got {:?}, expected {:?}", got, want),
        }
    }

    #[test]
    fn layout_new_accepts_the_whole_valid_range(g in valid_geometry_wide()) {
        prop_assert_eq!(expected_error(&g), None);
        let l = Layout::new(g).expect("valid geometry");
        check_layout(&g, &l)?;
    }
}

// ---------------------------------------------------------------------------
// Header validation
// ---------------------------------------------------------------------------

fn header(raw: &RawRegion) -> &Header {
    // SAFETY: the region is 4096-aligned and at least 128 bytes; every field
    // of Header is an atomic.
    unsafe { &*(raw.ptr() as *const Header) }
}

fn attach(raw: &RawRegion, len: usize) -> Result<Layout, LayoutError> {
    // SAFETY: `raw` owns `raw.len() >= len` bytes, 4096-aligned.
    unsafe { Region::attach(raw.ptr(), len) }.map(|r| *r.layout())
}

fn test_geometry() -> Geometry {
    Geometry {
        buffer_count: 3,
        buffer_size: 100,
        alignment: 128,
        ring_capacity: 4,
        max_consumers: 2,
        meta_size: 24,
        policy: Policy::DropOldest,
        max_held: 8,
    }
}

/// One header field at a time set to a bad value, then restored: each gives
/// its own typed error.
#[test]
fn header_validation_table() {
    let g = test_geometry();
    let (raw, layout) = RawRegion::formatted(g);
    let len = layout.total_size;
    assert_eq!(attach(&raw, len), Ok(layout));
    let h = header(&raw);
    let oor = |field, value| Err(LayoutError::OutOfRange { field, value });

    type Case = (&'static str, u64, Result<Layout, LayoutError>);
    let u32_cases: Vec<(&AtomicU32, Vec<Case>)> = vec![
        (
            &h.version,
            vec![
                (
                    "version 0",
                    0,
                    Err(LayoutError::UnsupportedVersion {
                        found: 0,
                        expected: VERSION,
                    }),
                ),
                (
                    "version 1 (before the sleepers bitmap)",
                    1,
                    Err(LayoutError::UnsupportedVersion {
                        found: 1,
                        expected: VERSION,
                    }),
                ),
                (
                    "next version",
                    u64::from(VERSION) + 1,
                    Err(LayoutError::UnsupportedVersion {
                        found: VERSION + 1,
                        expected: VERSION,
                    }),
                ),
                (
                    "version max",
                    u32::MAX.into(),
                    Err(LayoutError::UnsupportedVersion {
                        found: u32::MAX,
                        expected: VERSION,
                    }),
                ),
            ],
        ),
        (
            &h.header_size,
            vec![
                (
                    "header_size 0",
                    0,
                    Err(LayoutError::Inconsistent {
                        field: "header_size",
                    }),
                ),
                (
                    "header_size 64",
                    64,
                    Err(LayoutError::Inconsistent {
                        field: "header_size",
                    }),
                ),
            ],
        ),
        (
            &h.max_held,
            vec![
                ("max_held 0", 0, oor("max_held", 0)),
                ("max_held 65", 65, oor("max_held", 65)),
                (
                    "max_held huge",
                    u64::from(u32::MAX),
                    oor("max_held", u64::from(u32::MAX)),
                ),
                // Past the entry line: the hold table would change the size.
                (
                    "max_held 16",
                    16,
                    Err(LayoutError::Inconsistent {
                        field: "total_size",
                    }),
                ),
            ],
        ),
        (
            &h.policy,
            vec![
                ("policy 0", 0, oor("policy", 0)),
                ("policy 3", 3, oor("policy", 3)),
                (
                    "policy max",
                    u32::MAX.into(),
                    oor("policy", u32::MAX.into()),
                ),
            ],
        ),
        (
            &h.buffer_count,
            vec![
                ("buffer_count 0", 0, oor("buffer_count", 0)),
                (
                    "buffer_count too many",
                    (limits::MAX_BUFFERS + 1).into(),
                    oor("buffer_count", (limits::MAX_BUFFERS + 1).into()),
                ),
                (
                    "buffer_count max",
                    u32::MAX.into(),
                    oor("buffer_count", u32::MAX.into()),
                ),
                // In range, but more buffers than ring slots.
                ("buffer_count > ring", 5, oor("ring_capacity", 4)),
                // In range and consistent with the ring, but the stored total
                // size no longer matches.
                (
                    "buffer_count 2",
                    2,
                    Err(LayoutError::Inconsistent {
                        field: "total_size",
                    }),
                ),
            ],
        ),
        (
            &h.alignment,
            vec![
                ("alignment 0", 0, oor("alignment", 0)),
                ("alignment 32", 32, oor("alignment", 32)),
                ("alignment 96", 96, oor("alignment", 96)),
                ("alignment 4 MiB", 1 << 22, oor("alignment", 1 << 22)),
                (
                    "alignment 4096",
                    4096,
                    Err(LayoutError::Inconsistent {
                        field: "total_size",
                    }),
                ),
            ],
        ),
        (
            &h.ring_capacity,
            vec![
                ("ring 0", 0, oor("ring_capacity", 0)),
                ("ring 2 < buffers", 2, oor("ring_capacity", 2)),
                ("ring 6", 6, oor("ring_capacity", 6)),
                ("ring 2^21", 1 << 21, oor("ring_capacity", 1 << 21)),
                (
                    "ring max",
                    u32::MAX.into(),
                    oor("ring_capacity", u32::MAX.into()),
                ),
                (
                    "ring 64",
                    64,
                    Err(LayoutError::Inconsistent {
                        field: "total_size",
                    }),
                ),
            ],
        ),
        (
            &h.max_consumers,
            vec![
                ("consumers 0", 0, oor("max_consumers", 0)),
                ("consumers 1025", 1025, oor("max_consumers", 1025)),
                (
                    "consumers 3",
                    3,
                    Err(LayoutError::Inconsistent {
                        field: "total_size",
                    }),
                ),
            ],
        ),
        (
            &h.meta_size,
            vec![
                ("meta 4097", 4097, oor("meta_size", 4097)),
                (
                    "meta max",
                    u32::MAX.into(),
                    oor("meta_size", u32::MAX.into()),
                ),
                (
                    "meta 200",
                    200,
                    Err(LayoutError::Inconsistent {
                        field: "total_size",
                    }),
                ),
            ],
        ),
    ];
    for (field, cases) in u32_cases {
        let saved = field.load(Relaxed);
        for (what, v, want) in cases {
            field.store(v as u32, Relaxed);
            assert_eq!(attach(&raw, len), want, "{what}");
        }
        field.store(saved, Relaxed);
        assert_eq!(attach(&raw, len), Ok(layout), "restored");
    }

    let u64_cases: Vec<(&AtomicU64, Vec<Case>)> = vec![
        (
            &h.magic,
            vec![
                ("magic 0", 0, Err(LayoutError::NotReady)),
                ("magic 1", 1, Err(LayoutError::BadMagic { found: 1 })),
                (
                    "magic swapped",
                    MAGIC.swap_bytes(),
                    Err(LayoutError::BadMagic {
                        found: MAGIC.swap_bytes(),
                    }),
                ),
                (
                    "magic max",
                    u64::MAX,
                    Err(LayoutError::BadMagic { found: u64::MAX }),
                ),
            ],
        ),
        (
            &h.buffer_size,
            vec![
                ("buffer_size 0", 0, oor("buffer_size", 0)),
                (
                    "buffer_size 2^40+1",
                    (1 << 40) + 1,
                    oor("buffer_size", (1 << 40) + 1),
                ),
                ("buffer_size max", u64::MAX, oor("buffer_size", u64::MAX)),
                (
                    "buffer_size 1000",
                    1000,
                    Err(LayoutError::Inconsistent {
                        field: "total_size",
                    }),
                ),
            ],
        ),
        (
            &h.total_size,
            vec![
                (
                    "total 0",
                    0,
                    Err(LayoutError::Inconsistent {
                        field: "total_size",
                    }),
                ),
                (
                    "total +1",
                    len as u64 + 1,
                    Err(LayoutError::Inconsistent {
                        field: "total_size",
                    }),
                ),
                (
                    "total -1",
                    len as u64 - 1,
                    Err(LayoutError::Inconsistent {
                        field: "total_size",
                    }),
                ),
                (
                    "total max",
                    u64::MAX,
                    Err(LayoutError::Inconsistent {
                        field: "total_size",
                    }),
                ),
            ],
        ),
        // Identity only: any value is accepted.
        (&h.epoch, vec![("epoch max", u64::MAX, Ok(layout))]),
    ];
    for (field, cases) in u64_cases {
        let saved = field.load(Relaxed);
        for (what, v, want) in cases {
            field.store(v, Relaxed);
            assert_eq!(attach(&raw, len), want, "{what}");
        }
        field.store(saved, Relaxed);
        assert_eq!(attach(&raw, len), Ok(layout), "restored");
    }

    // Reserved header words are ignored.
    for off in (core::mem::offset_of!(Header, max_held) + 4..128).step_by(4) {
        // SAFETY: an aligned header word after `max_held` (padding/reserved
        // atomics).
        unsafe { AtomicU32::from_ptr(raw.ptr().add(off) as *mut u32) }.store(u32::MAX, Relaxed);
    }
    assert_eq!(attach(&raw, len), Ok(layout), "reserved words");

    // Too short: for the header, then for the geometry.
    for have in [0, 1, 127] {
        assert_eq!(
            attach(&raw, have),
            Err(LayoutError::RegionTooSmall {
                need: 128,
                have: have as u64
            })
        );
    }
    for have in [128, layout.data_offset, len - 1] {
        assert_eq!(
            attach(&raw, have),
            Err(LayoutError::RegionTooSmall {
                need: len as u64,
                have: have as u64
            })
        );
    }
    // A base not on a 128-byte line.
    // SAFETY: in bounds of the allocation; attach only checks and reads.
    let off = unsafe { Region::attach(raw.ptr().add(64), len - 64) };
    assert_eq!(
        off.map(|_| ()),
        Err(LayoutError::Misaligned { need: LINE as u64 })
    );
    // A consistent header whose alignment the base does not meet.
    let big = Geometry {
        alignment: 1 << 21,
        ..g
    };
    let big_layout = Layout::new(big).unwrap();
    let raw2 = RawRegion::zeroed(big_layout.total_size);
    big_layout.write_header(header(&raw2), 1);
    let got = attach(&raw2, big_layout.total_size);
    if raw2.ptr() as usize % (1 << 21) == 0 {
        assert_eq!(got, Ok(big_layout));
    } else {
        assert_eq!(got, Err(LayoutError::Misaligned { need: 1 << 21 }));
    }
}

/// Where a header field lives, and how to store into it.
#[derive(Clone, Copy, Debug)]
enum HField {
    U32(usize),
    U64(usize),
}

macro_rules! hf {
    ($w:ident, $f:ident) => {
        (
            stringify!($f),
            HField::$w(core::mem::offset_of!(Header, $f)),
        )
    };
}

const HEADER_FIELDS: [(&str, HField); 12] = [
    hf!(U64, magic),
    hf!(U32, version),
    hf!(U32, header_size),
    hf!(U32, buffer_count),
    hf!(U32, ring_capacity),
    hf!(U32, max_consumers),
    hf!(U32, meta_size),
    hf!(U32, alignment),
    hf!(U32, policy),
    hf!(U64, buffer_size),
    hf!(U64, total_size),
    hf!(U32, max_held),
];

proptest! {
    #![proptest_config(config(2048))]

    /// One header geometry field set to any value: `attach` answers exactly
    /// what the recomputed layout predicts (typed error, or a layout that fits).
    #[test]
    fn one_bad_header_field_gives_the_predicted_answer(
        which in 0usize..HEADER_FIELDS.len(),
        v in edge_u64(1 << 40),
    ) {
        let g = test_geometry();
        let (raw, layout) = RawRegion::formatted(g);
        let (name, field) = HEADER_FIELDS[which];
        let stored = match field {
            HField::U32(off) => {
                let v = v as u32;
                // SAFETY: a 4-aligned header word.
                unsafe { AtomicU32::from_ptr(raw.ptr().add(off) as *mut u32) }.store(v, Relaxed);
                u64::from(v)
            }
            HField::U64(off) => {
                // SAFETY: an 8-aligned header word.
                unsafe { AtomicU64::from_ptr(raw.ptr().add(off) as *mut u64) }.store(v, Relaxed);
                v
            }
        };
        let got = attach(&raw, layout.total_size);
        let mut g2 = g;
        let want = match name {
            "magic" if stored == 0 => Err(LayoutError::NotReady),
            "magic" if stored != MAGIC => Err(LayoutError::BadMagic { found: stored }),
            "version" if stored != u64::from(VERSION) => Err(LayoutError::UnsupportedVersion {
                found: stored as u32,
                expected: VERSION,
            }),
            "header_size" if stored != 128 => Err(LayoutError::Inconsistent { field: name }),
            "total_size" if stored != layout.total_size as u64 => {
                Err(LayoutError::Inconsistent { field: name })
            }
            "policy" => match Policy::from_u32(stored as u32) {
                None => Err(LayoutError::OutOfRange { field: "policy", value: stored }),
                Some(p) => {
                    g2.policy = p;
                    Layout::new(g2)
                }
            },
            _ => {
                match name {
                    "buffer_count" => g2.buffer_count = stored as u32,
                    "ring_capacity" => g2.ring_capacity = stored as u32,
                    "max_consumers" => g2.max_consumers = stored as u32,
                    "meta_size" => g2.meta_size = stored as u32,
                    "alignment" => g2.alignment = stored as u32,
                    "buffer_size" => g2.buffer_size = stored,
                    "max_held" => g2.max_held = stored as u32,
                    _ => {}
                }
                match Layout::new(g2) {
                    Err(e) => Err(e),
                    Ok(l) if l.total_size != layout.total_size => {
                        Err(LayoutError::Inconsistent { field: "total_size" })
                    }
                    Ok(l) if raw.ptr() as usize % (g2.alignment as usize).max(LINE) != 0 => {
                        let _ = l;
                        Err(LayoutError::Misaligned { need: u64::from(g2.alignment).max(128) })
                    }
                    Ok(l) => Ok(l),
                }
            }
        };
        prop_assert_eq!(got, want, "{} = {:#x}", name, stored);
    }
}

// ---------------------------------------------------------------------------
// Corruption of a live region
// ---------------------------------------------------------------------------

/// Small valid geometries (so that random bytes hit every part often).
fn small_geometry() -> impl Strategy<Value = Geometry> {
    (
        1u32..=8,
        1u64..=300,
        prop_oneof![Just(64u32), Just(128), Just(256), Just(4096)],
        0u32..=2,
        1u32..=4,
        0u32..=100,
        // Inline holds (1..=8) and a hold table (9..=64) alike.
        (
            policy(),
            prop_oneof![1u32..=8, 9u32..=64, Just(limits::MAX_HELD)],
        ),
    )
        .prop_map(|(bc, bs, al, shift, mc, meta, (policy, mh))| Geometry {
            buffer_count: bc,
            buffer_size: bs,
            alignment: al,
            ring_capacity: bc.next_power_of_two() << shift,
            max_consumers: mc,
            meta_size: meta,
            policy,
            max_held: mh,
        })
}

/// One hostile write: which part, where in it (scaled to its size), how wide,
/// what value.
#[derive(Clone, Debug)]
struct Corruption {
    part: u8,
    at: u32,
    width: u8,
    value: u64,
}

fn hostile_value() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..8,        // states, small indices
        3 => 0u64..64,       // sequences / stamps near the live ones
        1 => Just(u64::MAX),
        1 => Just(u64::MAX - 1),
        1 => Just(u64::from(u32::MAX)),
        1 => Just(1u64 << 32),
        1 => Just(1u64 << 63),
        2 => any::<u64>(),
    ]
}

fn corruption() -> impl Strategy<Value = Corruption> {
    (
        0u8..7,
        any::<u32>(),
        prop_oneof![Just(1u8), Just(4), Just(8)],
        hostile_value(),
    )
        .prop_map(|(part, at, width, value)| Corruption {
            part,
            at,
            width,
            value,
        })
}

impl Corruption {
    /// Stores the value into the region (as a peer in another process would:
    /// with an atomic store of its own width).
    fn apply(&self, raw: &RawRegion, l: &Layout) -> usize {
        let (start, end) = match self.part {
            0 => (0, l.producer_offset),
            1 => (l.producer_offset, l.consumers_offset),
            2 => (l.consumers_offset, l.ring_offset),
            3 => (l.ring_offset, l.buffers_offset),
            4 => (l.buffers_offset, l.meta_offset),
            5 => (l.producer_offset, l.data_offset), // any control word but the header
            _ => (0, l.data_offset),                 // anywhere in the control part
        };
        let w = usize::from(self.width);
        let span = (end - start) / w;
        let off = start + (self.at as usize % span) * w;
        // SAFETY: `off + w <= data_offset <= raw.len()`, aligned to `w` (base
        // is 4096-aligned, `start` 128-aligned). No other thread runs; the
        // protocol reads these words only with atomics.
        unsafe {
            let p = raw.ptr().add(off);
            match w {
                1 => AtomicU8::from_ptr(p).store(self.value as u8, Relaxed),
                4 => AtomicU32::from_ptr(p as *mut u32).store(self.value as u32, Relaxed),
                _ => AtomicU64::from_ptr(p as *mut u64).store(self.value, Relaxed),
            }
        }
        off
    }
}

/// One hostile write aimed at a named protocol word (a peer that knows the
/// layout): `relative` makes the value "head + delta", a plausible but wrong
/// sequence; otherwise it is `value`.
#[derive(Clone, Debug)]
struct FieldHit {
    field: u8,
    index: u8,
    value: u64,
    relative: Option<i8>,
}

fn field_hit() -> impl Strategy<Value = FieldHit> {
    (
        0u8..19,
        any::<u8>(),
        hostile_value(),
        prop_oneof![Just(None), (-3i8..=3).prop_map(Some)],
    )
        .prop_map(|(field, index, value, relative)| FieldHit {
            field,
            index,
            value,
            relative,
        })
}

impl FieldHit {
    fn apply(&self, raw: &RawRegion, l: &Layout) {
        let g = &l.geometry;
        let i = usize::from(self.index);
        let entry = l.consumers_offset + (i % g.max_consumers as usize) * 128;
        let slot = l.ring_offset + (i % g.ring_capacity as usize) * size_of::<RingSlot>();
        let desc = l.buffers_offset + (i % g.buffer_count as usize) * 64;
        let p = l.producer_offset;
        macro_rules! at {
            ($base:expr, $t:ty, $f:ident) => {
                $base + core::mem::offset_of!($t, $f)
            };
        }
        // A hold word: in the entry line, or in the entry's run of the hold
        // table when the channel's holds spill.
        let held_word = 8 * (i % g.max_held as usize);
        let holds_at = if l.holds_stride == 0 {
            entry + core::mem::offset_of!(ConsumerEntry, held)
        } else {
            l.holds_offset + (i % g.max_consumers as usize) * l.holds_stride
        };
        // (offset, is 64-bit)
        let (off, wide) = match self.field {
            0 => (at!(p, ProducerBlock, head), true),
            1 => (at!(p, ProducerBlock, tail), true),
            2 => (at!(p, ProducerBlock, doorbell), false),
            3 => (at!(p, ProducerBlock, state), false),
            4 => (
                at!(p, ProducerBlock, sleepers) + 8 * (i % bips_core::layout::SLEEPER_WORDS),
                true,
            ),
            5 => (at!(p, ProducerBlock, producer_waiting), false),
            6 => (at!(entry, ConsumerEntry, state), false),
            7 => (at!(entry, ConsumerEntry, received), true),
            8 => (at!(entry, ConsumerEntry, cursor), true),
            9 => (at!(entry, ConsumerEntry, lost), true),
            10 => (holds_at + held_word, true),
            11 | 17 => (at!(slot, RingSlot, stamp), true), // the hot word: twice
            12 => (at!(slot, RingSlot, buf), false),
            13 => (at!(desc, BufferDesc, state), false),
            14 => (at!(desc, BufferDesc, seq), true),
            15 => (at!(slot, RingSlot, len), true),
            16 => (at!(slot, RingSlot, timestamp), true),
            _ => (at!(p, ProducerBlock, tail), true), // likewise
        };
        let head_at = at!(p, ProducerBlock, head);
        // SAFETY: `head` is an aligned word of the producer block.
        let head = unsafe { AtomicU64::from_ptr(raw.ptr().add(head_at) as *mut u64) }.load(Relaxed);
        let v = match self.relative {
            // A stamp is seq + 1; a hold is seq + 1.
            Some(d) => head.wrapping_add_signed(i64::from(d)),
            None => self.value,
        };
        // SAFETY: every offset above is an aligned word inside the control part.
        unsafe {
            let q = raw.ptr().add(off);
            if wide {
                AtomicU64::from_ptr(q as *mut u64).store(v, Relaxed);
            } else {
                AtomicU32::from_ptr(q as *mut u32).store(v as u32, Relaxed);
            }
        }
    }
}

/// One step of a producer/consumer session.
#[derive(Clone, Debug)]
enum Op {
    Loan,
    LoanWait,
    Publish {
        which: u8,
        len: u64,
    },
    Unloan {
        which: u8,
    },
    Claim {
        idx: u8,
        start: u8,
    },
    Recv {
        idx: u8,
    },
    RecvWait {
        idx: u8,
    },
    Release {
        idx: u8,
        which: u8,
    },
    Detach {
        idx: u8,
    },
    /// `observed`: the current word (true), or a stale/random one.
    Reclaim {
        idx: u8,
        current: bool,
        word: u32,
    },
    Close,
    Corrupt(Corruption),
    Hit(FieldHit),
}

fn op() -> impl Strategy<Value = Op> {
    // Entry indices and lengths are reduced modulo the geometry when run, so
    // most are valid and a few are out of range. `Close` is rare: after it,
    // consumers only drain.
    prop_oneof![
        6 => Just(Op::Loan),
        1 => Just(Op::LoanWait),
        6 => (any::<u8>(), any::<u64>()).prop_map(|(which, len)| Op::Publish { which, len }),
        1 => any::<u8>().prop_map(|which| Op::Unloan { which }),
        3 => (any::<u8>(), 0u8..3).prop_map(|(idx, start)| Op::Claim { idx, start }),
        8 => any::<u8>().prop_map(|idx| Op::Recv { idx }),
        1 => any::<u8>().prop_map(|idx| Op::RecvWait { idx }),
        5 => (any::<u8>(), any::<u8>()).prop_map(|(idx, which)| Op::Release { idx, which }),
        1 => any::<u8>().prop_map(|idx| Op::Detach { idx }),
        1 => (any::<u8>(), any::<bool>(), any::<u32>())
            .prop_map(|(idx, current, word)| Op::Reclaim { idx, current, word }),
        1 => Just(Op::Close),
        3 => corruption().prop_map(Op::Corrupt),
        3 => field_hit().prop_map(Op::Hit),
    ]
}

/// One consumer of the session and what it has seen.
struct Reader<'a> {
    c: Consumer<'a>,
    held: Vec<Received>,
    /// Last sequence received.
    last: Option<u64>,
    /// Sequence expected next (cursor at claim, then last + 1).
    next: u64,
}

/// Checks what a call handed out against the caller's view of the region: a
/// buffer index in range, a length within the buffer, and payload pointers
/// that stay inside the allocation. Then touches those bytes as a user would.
fn check_buffer(r: &Region<'_>, raw: &RawRegion, buf: u32, len: u64) -> Result<(), TestCaseError> {
    let g = r.geometry();
    prop_assert!(buf < g.buffer_count, "buffer {} of {}", buf, g.buffer_count);
    prop_assert!(len <= g.buffer_size, "length {} > {}", len, g.buffer_size);
    let base = raw.ptr() as usize;
    let p = r.buffer_ptr(buf) as usize;
    let m = r.meta_ptr(buf) as usize;
    prop_assert!(p >= base + r.layout().data_offset);
    prop_assert!(p + g.buffer_size as usize <= base + raw.len());
    prop_assert!(m >= base + r.layout().meta_offset);
    prop_assert!(m + g.meta_size as usize <= base + r.layout().data_offset);
    Ok(())
}

fn check_received(
    r: &Region<'_>,
    raw: &RawRegion,
    reader: &mut Reader<'_>,
    s: &Received,
) -> Result<(), TestCaseError> {
    check_buffer(r, raw, s.buffer(), s.len())?;
    // S4 holds even against a hostile peer: strictly increasing, and the gap
    // is the reported lag.
    if let Some(last) = reader.last {
        prop_assert!(s.seq() > last, "sequence {} after {}", s.seq(), last);
    }
    prop_assert_eq!(
        Some(s.seq()),
        reader.next.checked_add(s.lagged()),
        "gap after {} is not the reported lag",
        reader.next
    );
    reader.last = Some(s.seq());
    reader.next = s.seq().wrapping_add(1);
    // Read the payload the way a user would (in bounds, checked above).
    // SAFETY: in bounds of the allocation; single-threaded here.
    let bytes = unsafe { std::slice::from_raw_parts(r.buffer_ptr(s.buffer()), s.len() as usize) };
    std::hint::black_box(bytes.iter().fold(0u8, |a, &b| a ^ b));
    Ok(())
}

/// Runs `ops` with the producer on `pr` (the creator's view) and consumers on
/// `cr` (an attached view, if attaching succeeded).
fn run_session(
    raw: &RawRegion,
    pr: Region<'_>,
    cr: Option<Region<'_>>,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let producer = Producer::new(pr);
    let layout = *pr.layout();
    let mut loaned: Vec<u32> = Vec::new();
    let starts = [Start::Oldest, Start::Newest, Start::Next];
    let g = *pr.geometry();
    // An entry index: one in eight is out of range (`max_consumers`).
    let n = g.max_consumers as usize;
    let entry = |idx: u8| {
        if idx % 8 == 7 {
            n
        } else {
            usize::from(idx) % n
        }
    };
    let mut readers: Vec<Option<Reader<'_>>> = (0..=g.max_consumers).map(|_| None).collect();
    for op in ops {
        match op {
            Op::Loan | Op::LoanWait => {
                let got = match op {
                    Op::Loan => producer.try_loan(),
                    _ => producer.loan(&mut Spin::with_limit(3)).map(Some),
                };
                if let Ok(Some(b)) = got {
                    check_buffer(&pr, raw, b, 0)?;
                    // The writer fills its buffer (in bounds, checked above).
                    let size = pr.geometry().buffer_size as usize;
                    // SAFETY: inside the allocation; single-threaded.
                    unsafe { std::ptr::write_bytes(pr.buffer_ptr(b), 0xA5, size) };
                    loaned.push(b);
                }
            }
            Op::Publish { which, len } => {
                if loaned.is_empty() {
                    // Publishing a buffer we never loaned: a caller bug the
                    // producer must refuse (or accept if the region says so).
                    let _ = producer.publish(u32::from(*which), *len, 0, &NoWake);
                } else {
                    let b = loaned.remove(usize::from(*which) % loaned.len());
                    // Mostly a valid length, sometimes one byte too many.
                    let len = len % (g.buffer_size + 2);
                    let _ = producer.publish(b, len, 1, &NoWake);
                }
            }
            Op::Unloan { which } => {
                let b = if loaned.is_empty() {
                    u32::from(*which)
                } else {
                    loaned.remove(usize::from(*which) % loaned.len())
                };
                let _ = producer.unloan(b);
            }
            Op::Claim { idx, start } => {
                let Some(cr) = cr else { continue };
                let idx = entry(*idx);
                let slot = &mut readers[idx];
                if slot.is_none() {
                    let start = starts[usize::from(*start)];
                    if let Ok(c) = Consumer::claim(cr, idx as u32, start, &NoWake) {
                        *slot = Some(Reader {
                            next: c.cursor(),
                            c,
                            held: Vec::new(),
                            last: None,
                        });
                    }
                }
            }
            Op::Recv { idx } | Op::RecvWait { idx } => {
                let Some(cr) = cr else { continue };
                let Some(reader) = readers[entry(*idx)].as_mut() else {
                    continue;
                };
                let got = match op {
                    Op::Recv { .. } => reader.c.try_recv(),
                    _ => reader.c.recv(&mut Spin::with_limit(3)).map(Some),
                };
                if let Ok(Some(s)) = got {
                    check_received(&cr, raw, reader, &s)?;
                    reader.held.push(s);
                }
            }
            Op::Release { idx, which } => {
                let Some(reader) = readers[entry(*idx)].as_mut() else {
                    continue;
                };
                if !reader.held.is_empty() {
                    let s = reader.held.remove(usize::from(*which) % reader.held.len());
                    reader.c.release(s, &NoWake);
                }
            }
            Op::Detach { idx } => {
                if let Some(reader) = readers[entry(*idx)].take() {
                    reader.c.detach(&NoWake);
                }
            }
            Op::Reclaim { idx, current, word } => {
                let r = cr.unwrap_or(pr);
                let idx = entry(*idx) as u32;
                let w = if *current {
                    r.consumer_word(idx).unwrap_or(*word)
                } else {
                    *word
                };
                // Possibly the entry of one of our live readers: it keeps
                // running, reclaimed, as a consumer wrongly declared dead would.
                let _ = reclaim_consumer(&r, idx, w, &NoWake);
            }
            Op::Close => producer.close(&NoWake),
            Op::Corrupt(c) => {
                c.apply(raw, &layout);
            }
            Op::Hit(h) => h.apply(raw, &layout),
        }
        // Monitoring reads never panic either.
        for i in 0..6 {
            let _ = pr.consumer_info(i);
            let _ = pr.buffer_state(i);
            if let Some(cr) = cr {
                let _ = cr.consumer_info(i);
            }
        }
        let _ = pr.head_tail();
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(1024))]

    /// Corrupt a formatted region, attach (Ok or a typed error), then run a
    /// producer and consumers while corrupting more between operations.
    #[test]
    fn corrupt_region_never_panics(
        g in small_geometry(),
        before in proptest::collection::vec(corruption(), 0..4),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let (raw, layout) = RawRegion::formatted(g);
        // SAFETY: `raw` owns `total_size` bytes, 4096-aligned.
        let pr = unsafe { Region::attach(raw.ptr(), layout.total_size) }.unwrap();
        // The producer takes its role on the fresh region; corruption follows.
        let _ = Producer::new(pr);
        for c in &before {
            c.apply(&raw, &layout);
        }
        // SAFETY: as above.
        let cr = match unsafe { Region::attach(raw.ptr(), raw.len()) } {
            Ok(r) => {
                // What attach accepted fits in the allocation.
                prop_assert!(r.layout().total_size <= raw.len());
                Some(r)
            }
            Err(e) => {
                // A typed error, with a message.
                prop_assert!(!e.to_string().is_empty());
                None
            }
        };
        run_session(&raw, pr, cr, &ops)?;
    }

    /// No corruption before attaching, hostile writes only while running:
    /// consumers always attach, so the protocol paths are exercised more.
    #[test]
    fn corruption_while_running_never_panics(
        g in small_geometry(),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let (raw, layout) = RawRegion::formatted(g);
        // SAFETY: `raw` owns `total_size` bytes, 4096-aligned.
        let pr = unsafe { Region::attach(raw.ptr(), layout.total_size) }.unwrap();
        run_session(&raw, pr, Some(pr), &ops)?;
    }

    /// A hostile creator rewrites the header with another valid geometry that
    /// fits the mapping: the consumers' view then disagrees with the
    /// producer's, and everything still stays in bounds.
    #[test]
    fn header_rewritten_with_another_geometry(
        g in small_geometry(),
        g2 in small_geometry(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        // A mapping large enough for both geometries.
        let l2 = Layout::new(g2).unwrap();
        let len = Layout::new(g).unwrap().total_size.max(l2.total_size);
        let raw = RawRegion::zeroed(len);
        // SAFETY: `raw` owns `len` zeroed bytes, 4096-aligned, unused.
        let pr = unsafe { Region::format(raw.ptr(), len, g, 7) }.unwrap();
        l2.write_header(header(&raw), 9);
        // SAFETY: as above.
        let cr = unsafe { Region::attach(raw.ptr(), raw.len()) };
        prop_assert_eq!(cr.map(|r| *r.layout()), Ok(l2));
        run_session(&raw, pr, cr.ok(), &ops)?;
    }
}

/// Every operation on a region whose every control byte is the same hostile
/// value (all zeros, all ones, ...) after the producer started.
#[test]
fn uniform_garbage_in_every_control_byte() {
    for policy in [Policy::Block, Policy::DropOldest] {
        for fill in [0x00u8, 0x01, 0x02, 0x03, 0x7f, 0x80, 0xff] {
            let g = Geometry {
                policy,
                ..test_geometry()
            };
            let (raw, layout) = RawRegion::formatted(g);
            // SAFETY: `raw` owns `total_size` bytes, 4096-aligned.
            let pr = unsafe { Region::attach(raw.ptr(), layout.total_size) }.unwrap();
            let c = Consumer::claim(pr, 0, Start::Oldest, &NoWake).unwrap();
            let p = Producer::new(pr);
            for b in layout.producer_offset..layout.data_offset {
                // SAFETY: in bounds; single-threaded.
                unsafe { AtomicU8::from_ptr(raw.ptr().add(b)) }.store(fill, Relaxed);
            }
            for _ in 0..4 {
                let _ = p.try_loan();
                let _ = p.publish(0, 10, 0, &NoWake);
                if let Ok(Some(s)) = c.try_recv() {
                    assert!(s.buffer() < g.buffer_count && s.len() <= g.buffer_size);
                    c.release(s, &NoWake);
                }
                let _ = reclaim_consumer(&pr, 0, pr.consumer_word(0).unwrap(), &NoWake);
                let _ = Consumer::claim(pr, 1, Start::Newest, &NoWake);
            }
            p.close(&NoWake);
            assert!(matches!(c.try_recv(), Ok(_) | Err(_)));
        }
    }
}

/// A hostile peer scribbling on the control part *concurrently* with a
/// producer and two consumers (threads standing in for processes). Every call
/// returns `Ok` or a typed error, nothing panics or hangs, and every buffer
/// index and length handed out stays in range. (Payload is not read here: a
/// hostile peer can make the producer rewrite a held buffer, which costs data,
/// not memory safety, across processes — but is a data race between threads.)
#[test]
fn concurrent_hostile_writer_never_panics() {
    use std::sync::atomic::AtomicBool;
    use std::thread;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    for policy in [Policy::Block, Policy::DropOldest] {
        let g = Geometry {
            buffer_count: 4,
            buffer_size: 64,
            alignment: 64,
            ring_capacity: 4,
            max_consumers: 2,
            meta_size: 0,
            policy,
            max_held: 8,
        };
        let (raw, layout) = RawRegion::formatted(g);
        let r = raw.region();
        let producer = Producer::new(r);
        let done = AtomicBool::new(false);
        let (raw, done) = (&raw, &done);
        thread::scope(|sc| {
            sc.spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ policy as u64);
                let span = (layout.data_offset - layout.producer_offset) / 8;
                let mut writes = 0u64;
                while !done.load(Relaxed) {
                    let x = rng.next();
                    let off = layout.producer_offset + (x as usize % span) * 8;
                    let v = match x >> 60 {
                        0..=7 => rng.next() % 8,
                        8..=11 => rng.next() % 64,
                        12 => u64::MAX,
                        _ => rng.next(),
                    };
                    // SAFETY: an aligned word of the control part; the
                    // protocol reads it only with atomics.
                    unsafe { AtomicU64::from_ptr(raw.ptr().add(off) as *mut u64) }
                        .store(v, Relaxed);
                    writes += 1;
                    if writes % 16 == 0 {
                        thread::yield_now();
                    }
                }
            });
            for idx in 0..2u32 {
                sc.spawn(move || {
                    let mut held = std::collections::VecDeque::new();
                    while !done.load(Relaxed) {
                        let Ok(c) = Consumer::claim(r, idx, Start::Oldest, &NoWake) else {
                            thread::yield_now();
                            continue;
                        };
                        for _ in 0..200 {
                            match c.recv(&mut Spin::with_limit(50)) {
                                Ok(s) => {
                                    assert!(s.buffer() < g.buffer_count, "{s:?}");
                                    assert!(s.len() <= g.buffer_size, "{s:?}");
                                    held.push_back(s);
                                    if held.len() > 2 {
                                        c.release(held.pop_front().unwrap(), &NoWake);
                                    }
                                }
                                Err(_) => thread::yield_now(),
                            }
                        }
                        for s in held.drain(..) {
                            c.release(s, &NoWake);
                        }
                        c.detach(&NoWake);
                    }
                });
            }
            sc.spawn(move || {
                // 20,000 loans or one second, whichever comes first.
                let start = std::time::Instant::now();
                for i in 0..20_000u64 {
                    if start.elapsed() > std::time::Duration::from_secs(1) {
                        break;
                    }
                    match producer.loan(&mut Spin::with_limit(50)) {
                        Ok(b) => {
                            assert!(b < g.buffer_count);
                            // SAFETY: a loaned buffer, in range (checked).
                            unsafe { std::ptr::write_bytes(r.buffer_ptr(b), i as u8, 64) };
                            if producer.publish(b, i % 80, i, &NoWake).is_err() {
                                let _ = producer.unloan(b);
                            }
                        }
                        Err(_) => thread::yield_now(),
                    }
                }
                producer.close(&NoWake);
                done.store(true, Relaxed);
            });
        });
    }
}
