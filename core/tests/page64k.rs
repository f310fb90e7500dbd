//! The protocol over a region with a 64 KiB-page geometry.
//!
//! Some aarch64 kernels (RHEL/Ampere servers, some embedded BSPs) use 64 KiB
//! pages; NVIDIA's Jetson kernels use 4 KiB. bips never assumes 4 KiB: the
//! `bips` crate reads the page size at run time, uses it as the default buffer
//! alignment and rounds the segment to it. This file checks the core side of
//! that promise: a region formatted with `alignment = 65536` puts the data
//! area and every buffer on a 64 KiB boundary, buffers of odd sizes never
//! overlap, and payloads make the round trip producer -> consumer intact.
//!
//! The region is a zeroed heap allocation aligned to 65536 (`std::alloc`),
//! standing in for a mapping on a 64 KiB-page kernel; threads stand in for
//! processes. Runs natively, under Miri (smaller counts) and for aarch64 under
//! qemu-user. `scripts/test.sh`'s `aarch64` stage also runs this file under
//! `qemu-aarch64-static -p 65536` (`QEMU_PAGESIZE=65536`), where the process
//! sees a 64 KiB page size, with `BIPS_EXPECT_PAGE_SIZE=65536` so that
//! [`run_time_page_size_geometry`] proves the emulated page size took effect.
#![cfg(not(loom))] // loom builds only tests/loom.rs

use std::alloc::{alloc_zeroed, dealloc, Layout as AllocLayout};
use std::sync::atomic::AtomicU32;
use std::thread;

use bips_core::{
    Consumer, Geometry, Layout, LayoutError, NoWake, Policy, Producer, ProtocolError, Received,
    Region, Start, Wait,
};

/// A 64 KiB page.
const PAGE_64K: usize = 64 * 1024;

/// Odd buffer sizes around the page boundaries (each is a geometry's
/// `buffer_size`, so every stride is rounded up differently).
const ODD_SIZES: [u64; 7] = [1, 4095, 4097, 65_535, 65_537, 3 * 65_536 + 7, 1_000_003];

/// Bytes of user metadata per sample: an odd size too.
const META: u32 = 24;

/// A zeroed heap region of `len` bytes aligned to `align` (a stand-in for a
/// shared mapping on a kernel whose page size is `align`).
struct AlignedRegion {
    ptr: *mut u8,
    layout: AllocLayout,
}

// SAFETY: plain memory owned by this value; the protocol accesses it through
// atomics, and payload bytes under its ownership rules (loan/hold).
unsafe impl Send for AlignedRegion {}
// SAFETY: see Send.
unsafe impl Sync for AlignedRegion {}

impl AlignedRegion {
    fn zeroed(len: usize, align: usize) -> AlignedRegion {
        let layout = AllocLayout::from_size_align(len.max(1), align).expect("valid layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "allocation of {len} bytes failed");
        assert_eq!(ptr as usize % align, 0, "allocator ignored the alignment");
        AlignedRegion { ptr, layout }
    }

    /// `geometry`'s region, formatted at the start of a fresh allocation
    /// aligned to `geometry.alignment` and rounded up to a whole number of
    /// "pages" of that size, as the `bips` crate rounds a segment.
    fn formatted(geometry: Geometry) -> (AlignedRegion, Layout) {
        let layout = Layout::new(geometry).expect("valid geometry");
        let page = geometry.alignment as usize;
        let raw = AlignedRegion::zeroed(layout.total_size.div_ceil(page) * page, page);
        // SAFETY: `raw` owns `len() >= total_size` zeroed bytes, aligned to the
        // geometry's alignment, that nothing else uses yet.
        unsafe { Region::format(raw.ptr, raw.len(), geometry, 0x64) }.expect("format");
        (raw, layout)
    }

    fn len(&self) -> usize {
        self.layout.size()
    }

    /// A validated view, as another process attaching to the segment makes.
    fn attach(&self) -> Region<'_> {
        // SAFETY: the allocation lives as long as `self`, is aligned to at
        // least 128 and was formatted by `formatted`.
        unsafe { Region::attach(self.ptr, self.len()) }.expect("attach")
    }
}

impl Drop for AlignedRegion {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

fn geometry_64k(buffers: u32, size: u64, policy: Policy) -> Geometry {
    Geometry {
        buffer_count: buffers,
        buffer_size: size,
        alignment: PAGE_64K as u32,
        ring_capacity: buffers.next_power_of_two(),
        max_consumers: 3,
        meta_size: META,
        policy,
        max_held: bips_core::MAX_HELD as u32,
    }
}

/// Checks the layout invariants of a `page`-aligned geometry.
fn check_layout(l: &Layout, page: usize) {
    let g = l.geometry;
    assert_eq!(l.data_offset % page, 0, "data offset: {g:?}");
    assert!(
        l.data_offset >= l.meta_offset + l.meta_stride * g.buffer_count as usize,
        "data overlaps metadata: {g:?}"
    );
    assert!(
        l.data_offset < l.meta_offset + l.meta_stride * g.buffer_count as usize + page,
        "more than one page of padding before the data: {g:?}"
    );
    assert_eq!(l.buffer_stride % page, 0, "stride: {g:?}");
    assert!(l.buffer_stride as u64 >= g.buffer_size, "stride: {g:?}");
    assert!(
        (l.buffer_stride as u64) < g.buffer_size + page as u64,
        "stride wastes a page: {g:?}"
    );
    assert_eq!(
        l.total_size,
        l.data_offset + l.buffer_stride * g.buffer_count as usize,
        "total size: {g:?}"
    );
    assert_eq!(l.total_size % page, 0, "total size: {g:?}");
}

/// Checks that every buffer of a formatted region starts on a `page` boundary
/// and that buffers (and the metadata areas) do not overlap.
fn check_buffers(r: &Region<'_>, base: *mut u8, len: usize, page: usize) {
    let l = r.layout();
    let g = r.geometry();
    let base = base as usize;
    for i in 0..g.buffer_count {
        let p = r.buffer_ptr(i) as usize;
        assert_eq!(p % page, 0, "buffer {i} of {g:?} is not {page}-aligned");
        assert_eq!(p - base, l.data_offset + i as usize * l.buffer_stride);
        assert!(
            p - base + g.buffer_size as usize <= len,
            "buffer {i} ends outside"
        );
        if i + 1 < g.buffer_count {
            let next = r.buffer_ptr(i + 1) as usize;
            assert!(
                p + g.buffer_size as usize <= next,
                "buffer {i} overlaps {}",
                i + 1
            );
        }
        let m = r.meta_ptr(i) as usize;
        assert!(
            m + g.meta_size as usize <= base + l.data_offset,
            "meta {i} overlaps data"
        );
    }
    assert!(r.buffer_ptr(g.buffer_count).is_null());
}

/// The first `len` payload bytes of sample `seq`: a fill byte that depends
/// on the sequence, and at every 4 KiB offset (and at the very end) an 8-byte
/// marker naming the sequence and the offset, so that a buffer written at the
/// wrong place, shifted, torn or stale does not compare equal. Built with bulk
/// operations only (a per-byte loop takes minutes under Miri's many seeds).
fn pattern(seq: u64, len: usize) -> Vec<u8> {
    let mut out = vec![(seq as u8).wrapping_mul(37) | 1; len];
    let mut put = |at: usize, what: u64| {
        let n = 8.min(len - at);
        out[at..at + n].copy_from_slice(&what.to_le_bytes()[..n]);
    };
    for at in (0..len).step_by(4096) {
        put(at, seq << 24 | at as u64);
    }
    if len >= 8 {
        put(len - 8, !seq);
    }
    out
}

/// Payload length of sample `seq` in buffers of `size` bytes: all of it, one
/// byte, one short of a 4 KiB or 64 KiB boundary, or past one.
fn len_of(size: u64, seq: u64) -> u64 {
    let candidates = [size, 1, 4095, 4097, 65_535, 65_537, size - 1];
    candidates[(seq % candidates.len() as u64) as usize].min(size)
}

fn meta_of(seq: u64) -> [u8; META as usize] {
    let mut m = [0u8; META as usize];
    m[..8].copy_from_slice(&seq.to_le_bytes());
    m[8..16].copy_from_slice(&(!seq).to_le_bytes());
    m[16..].copy_from_slice(&0x64_4b_50_41_47_45_u64.to_le_bytes());
    m
}

/// Writes sample `seq` into loaned buffer `buf` and publishes it.
fn produce_one(p: &Producer<'_>, buf: u32, seq: u64) {
    let r = p.region();
    let len = len_of(r.geometry().buffer_size, seq) as usize;
    // SAFETY: `buf` is loaned to us, so no consumer reads it until published;
    // `buffer_ptr`/`meta_ptr` point to `buffer_size >= len` and `meta_size`
    // bytes inside the region.
    let (data, meta) = unsafe {
        (
            std::slice::from_raw_parts_mut(r.buffer_ptr(buf), len),
            std::slice::from_raw_parts_mut(r.meta_ptr(buf), META as usize),
        )
    };
    data.copy_from_slice(&pattern(seq, len));
    meta.copy_from_slice(&meta_of(seq));
    assert_eq!(p.publish(buf, len as u64, seq * 10, &NoWake), Ok(seq));
}

/// Checks every byte of a held sample.
fn verify(r: &Region<'_>, s: &Received, who: &str) {
    let seq = s.seq();
    assert_eq!(
        s.len(),
        len_of(r.geometry().buffer_size, seq),
        "{who}: length of {seq}"
    );
    assert_eq!(s.timestamp(), seq * 10, "{who}: timestamp of {seq}");
    assert_eq!(
        r.buffer_ptr(s.buffer()) as usize % r.geometry().alignment as usize,
        0
    );
    // SAFETY: the sample is held, so the producer does not write its buffer
    // (S1); `len <= buffer_size` and `meta_size` bytes lie inside the region.
    let (data, meta) = unsafe {
        (
            std::slice::from_raw_parts(r.buffer_ptr(s.buffer()), s.len() as usize),
            std::slice::from_raw_parts(r.meta_ptr(s.buffer()), META as usize),
        )
    };
    let want = pattern(seq, data.len());
    if data != &want[..] {
        let i = data.iter().zip(&want).position(|(a, b)| a != b).unwrap();
        panic!(
            "{who}: sample {seq} (buffer {}, {} bytes) differs at byte {i}",
            s.buffer(),
            s.len()
        );
    }
    assert_eq!(meta, meta_of(seq), "{who}: metadata of {seq}");
}

/// Buffer sizes to run the protocol with (fewer and smaller under Miri).
fn sizes() -> &'static [u64] {
    if cfg!(miri) {
        &ODD_SIZES[..3]
    } else {
        &ODD_SIZES
    }
}

#[test]
fn layout_with_64k_alignment_puts_data_and_every_buffer_on_a_64k_boundary() {
    for &size in &ODD_SIZES {
        for buffers in [1, 2, 3, 5, 17] {
            for (consumers, meta) in [(1, 0), (3, 17), (8, 4096), (600, 24), (1024, 4096)] {
                let g = Geometry {
                    max_consumers: consumers,
                    meta_size: meta,
                    ..geometry_64k(buffers, size, Policy::Block)
                };
                let l = Layout::new(g).expect("valid geometry");
                check_layout(&l, PAGE_64K);
                // A large consumer table pushes the data area past the first
                // 64 KiB page: it must move to the next boundary, not overlap.
                if consumers >= 600 {
                    assert!(l.data_offset >= 2 * PAGE_64K, "{g:?}: {l:?}");
                }
            }
        }
    }
    // The same geometry with 4 KiB alignment is smaller: the alignment, not a
    // constant, decides the padding.
    let l4 = Layout::new(Geometry {
        alignment: 4096,
        ..geometry_64k(5, 65_537, Policy::Block)
    })
    .unwrap();
    let l64 = Layout::new(geometry_64k(5, 65_537, Policy::Block)).unwrap();
    check_layout(&l4, 4096);
    // Control part: 4288 bytes (header, producer block, 3 entries, 8 slots,
    // 5 buffer words, the type block, 5 frame descriptors, 5 x 64 B meta).
    assert_eq!((l4.data_offset, l4.buffer_stride), (8192, 69_632));
    assert_eq!(
        (l64.data_offset, l64.buffer_stride),
        (PAGE_64K, 2 * PAGE_64K)
    );
}

#[test]
fn format_and_attach_refuse_a_base_that_is_not_64k_aligned() {
    let g = geometry_64k(3, 4097, Policy::Block);
    let l = Layout::new(g).unwrap();
    // 4 KiB-aligned (a page on most kernels) but not 64 KiB-aligned.
    let raw = AlignedRegion::zeroed(l.total_size + PAGE_64K, PAGE_64K);
    // SAFETY: `raw` owns `total_size + 64 KiB` zeroed bytes; the view at
    // +4096 has `total_size + 61440` of them, and nothing else uses them.
    let err = unsafe { Region::format(raw.ptr.add(4096), raw.len() - 4096, g, 1) }.unwrap_err();
    assert_eq!(
        err,
        LayoutError::Misaligned {
            need: PAGE_64K as u64
        }
    );

    // A correctly formatted region, copied to a 4 KiB-but-not-64 KiB-aligned
    // place (a peer that mapped it wrongly), is refused on attach.
    let (good, _) = AlignedRegion::formatted(g);
    assert_eq!(good.len(), l.total_size);
    // SAFETY: `good.len()` is `total_size` (already a multiple of 64 KiB), so
    // `raw`'s `total_size + 64 KiB` bytes hold it at +4096; two allocations
    // never overlap, and no other party uses either.
    unsafe { std::ptr::copy_nonoverlapping(good.ptr, raw.ptr.add(4096), good.len()) };
    // SAFETY: as above; the bytes are a formatted region (atomics only).
    let err = unsafe { Region::attach(raw.ptr.add(4096), good.len()) }.unwrap_err();
    assert_eq!(
        err,
        LayoutError::Misaligned {
            need: PAGE_64K as u64
        }
    );
    // And one byte short of the whole layout is too small.
    // SAFETY: `good` owns `len()` bytes; we view fewer.
    let err = unsafe { Region::attach(good.ptr, l.total_size - 1) }.unwrap_err();
    assert!(matches!(err, LayoutError::RegionTooSmall { .. }), "{err:?}");
}

#[test]
fn block_round_trip_with_odd_buffer_sizes() {
    for &size in sizes() {
        let g = geometry_64k(3, size, Policy::Block);
        let (raw, layout) = AlignedRegion::formatted(g);
        check_layout(&layout, PAGE_64K);
        let r = raw.attach();
        assert_eq!(*r.layout(), layout, "attach recomputes the same layout");
        check_buffers(&r, raw.ptr, raw.len(), PAGE_64K);

        let p = Producer::new(r);
        // Two consumers with their own views, as two processes would attach.
        let views = [raw.attach(), raw.attach()];
        let cs: Vec<Consumer<'_>> = (0..2)
            .map(|i| Consumer::claim(views[i], i as u32, Start::Oldest, &NoWake).unwrap())
            .collect();
        let n = if cfg!(miri) { 4 } else { 3 * 7 };
        for seq in 0..n {
            let buf = p.try_loan().unwrap().expect("a free buffer");
            produce_one(&p, buf, seq);
            for (i, c) in cs.iter().enumerate() {
                let s = c.try_recv().unwrap().expect("a sample");
                assert_eq!((s.seq(), s.lagged()), (seq, 0));
                verify(c.region(), &s, &format!("consumer {i}, size {size}"));
                c.release(s, &NoWake);
            }
        }
        p.close(&NoWake);
        for c in &cs {
            assert_eq!(c.try_recv(), Err(ProtocolError::Disconnected));
        }
    }
}

#[test]
fn drop_oldest_round_trip_keeps_held_64k_buffers_intact() {
    for &size in sizes() {
        let (raw, _) = AlignedRegion::formatted(geometry_64k(5, size, Policy::DropOldest));
        let r = raw.attach();
        let p = Producer::new(r);
        let c = Consumer::claim(raw.attach(), 0, Start::Oldest, &NoWake).unwrap();
        produce_one(&p, p.try_loan().unwrap().unwrap(), 0);
        let held = c.try_recv().unwrap().unwrap();
        // The producer laps the consumer; the held buffer must survive.
        let n = if cfg!(miri) { 8 } else { 40 };
        for seq in 1..n {
            let buf = p.try_loan().unwrap().expect("DropOldest never waits");
            assert_ne!(buf, held.buffer(), "a held buffer was loaned again");
            produce_one(&p, buf, seq);
        }
        verify(c.region(), &held, &format!("held sample, size {size}"));
        c.release(held, &NoWake);
        let s = c.try_recv().unwrap().unwrap();
        assert_eq!(s.seq(), n - 4, "4 samples retained (one buffer was held)");
        assert_eq!(s.lagged(), n - 5);
        verify(c.region(), &s, &format!("after lag, size {size}"));
        c.release(s, &NoWake);
    }
}

/// Polls without sleeping, yielding the CPU (2 cores, qemu): not counted as a
/// sleeper, so no wake is needed.
#[derive(Default)]
struct Poll;

impl Wait for Poll {
    fn sleeps(&self) -> bool {
        false
    }
    fn wait(&mut self, _word: &AtomicU32, _expected: u32) -> bool {
        if !cfg!(miri) {
            thread::yield_now();
        }
        std::hint::spin_loop();
        true
    }
}

#[test]
fn threads_stream_through_64k_aligned_buffers() {
    let size = if cfg!(miri) { 4097 } else { 65_537 };
    let n: u64 = if cfg!(miri) { 6 } else { 300 };
    let (raw, _) = AlignedRegion::formatted(geometry_64k(4, size, Policy::Block));
    let consumers: Vec<Consumer<'_>> = (0..2)
        .map(|i| Consumer::claim(raw.attach(), i, Start::Oldest, &NoWake).unwrap())
        .collect();
    let p = Producer::new(raw.attach());
    thread::scope(|sc| {
        let handles: Vec<_> = consumers
            .into_iter()
            .map(|c| {
                sc.spawn(move || {
                    let who = format!("consumer {}", c.index());
                    let mut next = 0;
                    loop {
                        match c.recv(&mut Poll) {
                            Ok(s) => {
                                assert_eq!((s.seq(), s.lagged()), (next, 0), "{who}");
                                verify(c.region(), &s, &who);
                                next += 1;
                                c.release(s, &NoWake);
                            }
                            Err(ProtocolError::Disconnected) => return next,
                            Err(e) => panic!("{who}: {e}"),
                        }
                    }
                })
            })
            .collect();
        sc.spawn(move || {
            for seq in 0..n {
                let buf = p.loan(&mut Poll).expect("loan");
                produce_one(&p, buf, seq);
            }
            p.close(&NoWake);
        });
        for h in handles {
            assert_eq!(h.join().unwrap(), n, "every sample received");
        }
    });
}

/// `AT_PAGESZ` from the auxiliary vector (std only: core has no libc).
/// Under qemu-user, `/proc/self/auxv` is the guest's, so this is the page size
/// the emulated process sees.
fn run_time_page_size() -> usize {
    const AT_NULL: u64 = 0;
    const AT_PAGESZ: u64 = 6;
    let auxv = std::fs::read("/proc/self/auxv").expect("read /proc/self/auxv");
    let word = std::mem::size_of::<usize>();
    let mut pairs = auxv.chunks_exact(2 * word).map(|kv| {
        let get = |b: &[u8]| {
            let mut w = [0u8; 8];
            w[..word].copy_from_slice(b);
            u64::from_ne_bytes(w)
        };
        (get(&kv[..word]), get(&kv[word..]))
    });
    let (_, page) = pairs
        .find(|&(k, _)| k == AT_PAGESZ || k == AT_NULL)
        .filter(|&(k, _)| k == AT_PAGESZ)
        .expect("AT_PAGESZ in /proc/self/auxv");
    page as usize
}

/// The geometry the `bips` crate makes by default on this machine (alignment
/// = the run-time page size), formatted and streamed through. With
/// `BIPS_EXPECT_PAGE_SIZE` set (the aarch64 stage sets 65536 and runs under
/// `QEMU_PAGESIZE=65536`), the run-time page size must be exactly that.
#[test]
#[cfg_attr(miri, ignore = "reads /proc/self/auxv")]
fn run_time_page_size_geometry() {
    let page = run_time_page_size();
    assert!(page.is_power_of_two() && page >= 4096, "page size {page}");
    if let Some(want) = std::env::var_os("BIPS_EXPECT_PAGE_SIZE") {
        let want: usize = want
            .to_str()
            .and_then(|s| s.parse().ok())
            .expect("a number");
        assert_eq!(
            page, want,
            "run-time page size (is QEMU_PAGESIZE honoured?)"
        );
    }
    println!("run-time page size: {page}");
    let g = Geometry {
        alignment: page as u32,
        ..geometry_64k(3, page as u64 + 1, Policy::Block)
    };
    let (raw, layout) = AlignedRegion::formatted(g);
    check_layout(&layout, page);
    let r = raw.attach();
    check_buffers(&r, raw.ptr, raw.len(), page);
    let p = Producer::new(r);
    let c = Consumer::claim(raw.attach(), 0, Start::Oldest, &NoWake).unwrap();
    for seq in 0..7 {
        produce_one(&p, p.try_loan().unwrap().unwrap(), seq);
        let s = c.try_recv().unwrap().unwrap();
        verify(c.region(), &s, "run-time page size");
        c.release(s, &NoWake);
    }
}
