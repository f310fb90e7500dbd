//! Shared test support: a region built on the heap from its parts (works for
//! loom, whose atomics cannot live in raw memory) and a raw, page-aligned,
//! zeroed heap region formatted like shared memory (works under Miri).
#![allow(dead_code)]

use bips_core::layout::{BufferDesc, ConsumerEntry, Header, ProducerBlock, RingSlot};
use bips_core::{Geometry, Layout, Region};

#[cfg(loom)]
use loom::sync::atomic::AtomicU64;
#[cfg(not(loom))]
use std::sync::atomic::AtomicU64;

/// A region whose parts live in separate heap allocations.
pub struct HeapParts {
    pub geometry: Geometry,
    pub header: Box<Header>,
    pub producer: Box<ProducerBlock>,
    pub consumers: Vec<ConsumerEntry>,
    pub holds: Vec<AtomicU64>,
    pub ring: Vec<RingSlot>,
    pub buffers: Vec<BufferDesc>,
}

impl HeapParts {
    pub fn new(geometry: Geometry) -> HeapParts {
        HeapParts {
            geometry,
            header: Box::new(Header::new()),
            producer: Box::new(ProducerBlock::new()),
            consumers: (0..geometry.max_consumers)
                .map(|_| ConsumerEntry::new())
                .collect(),
            holds: {
                let layout = Layout::new(geometry).expect("valid geometry");
                (0..geometry.max_consumers as usize * layout.holds_stride / 8)
                    .map(|_| AtomicU64::new(0))
                    .collect()
            },
            ring: (0..geometry.ring_capacity)
                .map(|_| RingSlot::new())
                .collect(),
            buffers: (0..geometry.buffer_count)
                .map(|_| BufferDesc::new())
                .collect(),
        }
    }

    pub fn region(&self) -> Region<'_> {
        Region::from_parts(
            self.geometry,
            &self.header,
            &self.producer,
            &self.consumers,
            &self.holds,
            &self.ring,
            &self.buffers,
        )
        .expect("valid geometry")
    }
}

/// A raw heap region laid out exactly like a shared-memory segment.
pub struct RawRegion {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

// SAFETY: the allocation is plain memory owned by this value; the protocol
// only accesses it through atomics (and payload under its ownership rules).
unsafe impl Send for RawRegion {}
// SAFETY: see Send.
unsafe impl Sync for RawRegion {}

impl RawRegion {
    /// Allocates `len` zeroed bytes aligned to 4096.
    pub fn zeroed(len: usize) -> RawRegion {
        let layout = std::alloc::Layout::from_size_align(len.max(1), 4096).unwrap();
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        RawRegion { ptr, layout }
    }

    /// Allocates and formats a region for `geometry`.
    pub fn formatted(geometry: Geometry) -> (RawRegion, Layout) {
        let layout = Layout::new(geometry).unwrap();
        let raw = RawRegion::zeroed(layout.total_size);
        // SAFETY: `raw` owns `total_size` zeroed bytes, 4096-aligned, unused.
        unsafe { Region::format(raw.ptr, layout.total_size, geometry, 7) }.unwrap();
        (raw, layout)
    }

    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub fn len(&self) -> usize {
        self.layout.size()
    }

    /// A validated view (as a consumer process would attach).
    pub fn region(&self) -> Region<'_> {
        // SAFETY: the allocation lives as long as `self` and is 4096-aligned.
        unsafe { Region::attach(self.ptr, self.layout.size()) }.unwrap()
    }

    /// The whole region as bytes, for corruption tests (no concurrent users).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: exclusive borrow of the allocation we own.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for RawRegion {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// A small geometry for model checking and unit tests.
pub fn small(buffers: u32, consumers: u32, policy: bips_core::Policy) -> Geometry {
    Geometry {
        buffer_count: buffers,
        buffer_size: 64,
        alignment: 64,
        ring_capacity: buffers.next_power_of_two(),
        max_consumers: consumers,
        meta_size: 0,
        policy,
        max_held: bips_core::MAX_HELD as u32,
    }
}
