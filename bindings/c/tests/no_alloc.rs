//! The hot path (loan, publish, recv, release; and an empty try-recv, which
//! answers BIPS_E_TIMEOUT) allocates nothing once warmed up.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bips_c::*;
use common::*;

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Only the test's own thread is counted (libtest's threads allocate too).
    static COUNTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn count() {
    if COUNTED.try_with(|c| c.get()).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn round(p: *mut bips_producer, c: *mut bips_consumer) {
    // SAFETY: live handles, valid pointers.
    unsafe {
        let mut l = zero_loan();
        assert_eq!(bips_producer_loan(p, 0, &mut l), BIPS_OK);
        assert_eq!(bips_sample_mut_set_len(l, 8), BIPS_OK);
        assert_eq!(
            bips_sample_mut_publish(&mut l, std::ptr::null_mut()),
            BIPS_OK
        );
        let mut s = zero_sample();
        assert_eq!(bips_consumer_recv(c, 0, &mut s), BIPS_OK);
        let mut info = std::mem::zeroed::<bips_sample_info>();
        assert_eq!(bips_sample_get_info(s, &mut info), BIPS_OK);
        assert_eq!(bips_sample_release(&mut s), BIPS_OK);
        assert_eq!(bips_consumer_recv(c, 0, &mut s), BIPS_E_TIMEOUT);
        assert!(!bips_last_error_message().is_null());
    }
}

#[test]
fn hot_path_allocates_nothing() {
    let n = name("noalloc");
    let p = create(&n, 4);
    let c = open(&n);
    for _ in 0..100 {
        round(p, c);
    }
    COUNTED.with(|c| c.set(true));
    let before = ALLOCS.load(Ordering::Relaxed);
    for i in 0..10_000 {
        if i % 2_500 == 0 {
            // Let the 50 ms liveness checks of the polling paths run too.
            COUNTED.with(|c| c.set(false));
            std::thread::sleep(std::time::Duration::from_millis(60));
            COUNTED.with(|c| c.set(true));
        }
        round(p, c);
    }
    let after = ALLOCS.load(Ordering::Relaxed);
    COUNTED.with(|c| c.set(false));
    assert_eq!(after - before, 0, "allocations on the hot path");
    // SAFETY: live handles, nothing outstanding.
    unsafe {
        assert_eq!(bips_consumer_destroy(c), BIPS_OK);
        assert_eq!(bips_producer_destroy(p), BIPS_OK);
    }
}
