//! Single-threaded protocol behaviour over a raw region (runs under Miri too).
#![cfg(not(loom))] // loom builds only tests/loom.rs
mod common;

use bips_core::{Consumer, NoWake, Policy, Producer, ProtocolError, Start};
use common::*;

#[test]
fn block_one_consumer_in_order() {
    let (raw, _) = RawRegion::formatted(small(4, 2, Policy::Block));
    let r = raw.region();
    let p = Producer::new(r);
    let c = Consumer::claim(r, 0, Start::Oldest, &NoWake).unwrap();
    for i in 0..20u64 {
        let b = p.try_loan().unwrap().expect("a buffer");
        assert_eq!(p.publish(b, i, i * 10, &NoWake).unwrap(), i);
        let s = c.try_recv().unwrap().expect("a sample");
        assert_eq!(
            (s.seq(), s.len(), s.timestamp(), s.lagged()),
            (i, i, i * 10, 0)
        );
        c.release(s, &NoWake);
    }
    assert!(c.try_recv().unwrap().is_none());
}

#[test]
fn block_waits_for_slowest_consumer() {
    let (raw, _) = RawRegion::formatted(small(2, 2, Policy::Block));
    let r = raw.region();
    let p = Producer::new(r);
    let c = Consumer::claim(r, 1, Start::Oldest, &NoWake).unwrap();
    for i in 0..2 {
        let b = p.try_loan().unwrap().unwrap();
        p.publish(b, 1, i, &NoWake).unwrap();
    }
    assert_eq!(
        p.try_loan().unwrap(),
        None,
        "both buffers unread: must wait"
    );
    let s = c.try_recv().unwrap().unwrap();
    assert_eq!(p.try_loan().unwrap(), None, "sample 0 still held");
    c.release(s, &NoWake);
    assert!(
        p.try_loan().unwrap().is_some(),
        "sample 0 consumed and released"
    );
}

#[test]
fn drop_oldest_never_waits_and_reports_lag() {
    let (raw, _) = RawRegion::formatted(small(4, 2, Policy::DropOldest));
    let r = raw.region();
    let p = Producer::new(r);
    let c = Consumer::claim(r, 0, Start::Oldest, &NoWake).unwrap();
    for i in 0..10u64 {
        let b = p.try_loan().unwrap().expect("DropOldest never waits");
        p.publish(b, 8, i, &NoWake).unwrap();
    }
    let s = c.try_recv().unwrap().unwrap();
    assert_eq!(s.seq(), 6, "4 buffers: samples 6..10 retained");
    assert_eq!(s.lagged(), 6);
    c.release(s, &NoWake);
}

#[test]
fn held_buffer_is_never_recycled_and_release_out_of_order() {
    let (raw, _) = RawRegion::formatted(small(4, 1, Policy::DropOldest));
    let r = raw.region();
    let p = Producer::new(r);
    let c = Consumer::claim(r, 0, Start::Oldest, &NoWake).unwrap();
    let b = p.try_loan().unwrap().unwrap();
    p.publish(b, 1, 0, &NoWake).unwrap();
    let held0 = c.try_recv().unwrap().unwrap();
    let b = p.try_loan().unwrap().unwrap();
    p.publish(b, 1, 1, &NoWake).unwrap();
    let held1 = c.try_recv().unwrap().unwrap();
    for _ in 0..50 {
        let b = p.try_loan().unwrap().unwrap();
        assert_ne!(b, held0.buffer());
        assert_ne!(b, held1.buffer());
        p.publish(b, 1, 0, &NoWake).unwrap();
    }
    c.release(held1, &NoWake);
    c.release(held0, &NoWake);
    let s = c.try_recv().unwrap().unwrap();
    assert!(s.lagged() > 0);
    c.release(s, &NoWake);
}

/// A channel's `max_held` beyond the entry line (holds in the hold table):
/// `max_held` samples held at once, the next one refused with the channel's
/// limit, and under `DropOldest` the producer, recycling all the while, never
/// hands out a held buffer (it scans the table, every word of the run: the
/// holds land in words 0..64). Two consumers, so the second's run is used too.
#[test]
fn spilled_holds_are_scanned_and_limited() {
    // Miri (8 seeds, every atomic load checked) gets the short version.
    let rounds = if cfg!(miri) { 12 } else { 100 };
    for max_held in [9u32, 64] {
        let buffers = max_held + 8;
        let g = bips_core::Geometry {
            max_held,
            ring_capacity: 128,
            ..small(buffers, 2, Policy::DropOldest)
        };
        let (raw, layout) = RawRegion::formatted(g);
        assert!(layout.holds_stride >= 8 * max_held as usize);
        let r = raw.region();
        let p = Producer::new(r);
        let c0 = Consumer::claim(r, 0, Start::Oldest, &NoWake).unwrap();
        let c1 = Consumer::claim(r, 1, Start::Oldest, &NoWake).unwrap();
        assert_eq!((c0.max_held(), c1.max_held()), (max_held, max_held));
        for _ in 0..max_held {
            let b = p.try_loan().unwrap().unwrap();
            p.publish(b, 1, 0, &NoWake).unwrap();
        }
        // c1 holds every sample; c0 holds none yet.
        let mut held = Vec::new();
        for _ in 0..max_held {
            held.push(c1.try_recv().unwrap().unwrap());
        }
        assert_eq!(
            c1.try_recv(),
            Err(ProtocolError::HeldLimit { max: max_held })
        );
        assert_eq!(r.consumer_info(1).unwrap().held, max_held);
        let pinned: Vec<u32> = held.iter().map(|s| s.buffer()).collect();
        // The producer keeps publishing on the 8 buffers left.
        for _ in 0..rounds {
            let b = p.try_loan().unwrap().expect("8 unheld buffers");
            assert!(!pinned.contains(&b), "loaned held buffer {b}");
            p.publish(b, 1, 0, &NoWake).unwrap();
        }
        // c0 takes what is retained (the 8 newest), in its own run.
        let mut held0 = Vec::new();
        while let Ok(Some(s)) = c0.try_recv() {
            held0.push(s);
        }
        assert_eq!(held0.len() as u32, max_held.min(8));
        for s in held.drain(..) {
            c1.release(s, &NoWake);
        }
        assert_eq!(r.consumer_info(1).unwrap().held, 0);
        let pinned0: Vec<u32> = held0.iter().map(|s| s.buffer()).collect();
        for _ in 0..if cfg!(miri) { buffers } else { 3 * buffers } {
            let b = p.try_loan().unwrap().expect("released buffers come back");
            assert!(!pinned0.contains(&b), "loaned buffer {b} c0 holds");
            p.publish(b, 1, 0, &NoWake).unwrap();
        }
        for s in held0 {
            c0.release(s, &NoWake);
        }
    }
}

#[test]
fn held_limit_is_enforced() {
    let (raw, _) = RawRegion::formatted(small(16, 1, Policy::Block));
    let r = raw.region();
    let p = Producer::new(r);
    let c = Consumer::claim(r, 0, Start::Oldest, &NoWake).unwrap();
    for _ in 0..16 {
        let b = p.try_loan().unwrap().unwrap();
        p.publish(b, 1, 0, &NoWake).unwrap();
    }
    let mut held = Vec::new();
    for _ in 0..bips_core::MAX_HELD {
        held.push(c.try_recv().unwrap().unwrap());
    }
    assert_eq!(c.try_recv(), Err(ProtocolError::HeldLimit { max: 8 }));
    c.release(held.remove(3), &NoWake);
    assert!(c.try_recv().unwrap().is_some());
}

#[test]
fn close_drains_then_disconnects() {
    let (raw, _) = RawRegion::formatted(small(4, 1, Policy::Block));
    let r = raw.region();
    let p = Producer::new(r);
    let c = Consumer::claim(r, 0, Start::Oldest, &NoWake).unwrap();
    for i in 0..3 {
        let b = p.try_loan().unwrap().unwrap();
        p.publish(b, 1, i, &NoWake).unwrap();
    }
    p.close(&NoWake);
    for i in 0..3 {
        let s = c.try_recv().unwrap().unwrap();
        assert_eq!(s.seq(), i);
        c.release(s, &NoWake);
    }
    assert_eq!(c.try_recv(), Err(ProtocolError::Disconnected));
}

#[test]
fn reclaim_of_dead_consumer_unblocks_producer() {
    let (raw, _) = RawRegion::formatted(small(2, 2, Policy::Block));
    let r = raw.region();
    let p = Producer::new(r);
    let dead = Consumer::claim(r, 0, Start::Oldest, &NoWake).unwrap();
    for i in 0..2 {
        let b = p.try_loan().unwrap().unwrap();
        p.publish(b, 1, i, &NoWake).unwrap();
    }
    // The process "dies" holding sample 0: neither release nor detach.
    let _held = dead.try_recv().unwrap().unwrap();
    assert_eq!(p.try_loan().unwrap(), None);
    let w = r.consumer_word(0).unwrap();
    assert!(bips_core::reclaim_consumer(&r, 0, w, &NoWake));
    assert!(
        !bips_core::reclaim_consumer(&r, 0, w, &NoWake),
        "idempotent"
    );
    assert!(p.try_loan().unwrap().is_some());
    // The entry can be claimed again.
    let again = Consumer::claim(r, 0, Start::Newest, &NoWake).unwrap();
    assert_eq!(again.cursor(), 1);
}

/// Regression (found by tests/order.rs): under Block, a consumer keeping an
/// old sample while it reads and releases newer ones must not stall the
/// producer while buffers are free.
#[test]
fn block_out_of_order_release_keeps_the_stream_going() {
    let (raw, _) = RawRegion::formatted(small(4, 1, Policy::Block));
    let r = raw.region();
    let p = Producer::new(r);
    let c = Consumer::claim(r, 0, Start::Oldest, &NoWake).unwrap();
    for i in 0..4 {
        let b = p.try_loan().unwrap().unwrap();
        p.publish(b, 1, i, &NoWake).unwrap();
    }
    let kept = c.try_recv().unwrap().unwrap();
    assert_eq!(kept.seq(), 0);
    for seq in 1..40u64 {
        let s = c.try_recv().unwrap().expect("published");
        assert_eq!(s.seq(), seq);
        c.release(s, &NoWake);
        let b = p.try_loan().unwrap().expect("3 of 4 buffers are free");
        assert_ne!(b, kept.buffer(), "the kept sample's buffer is never reused");
        p.publish(b, 1, 0, &NoWake).unwrap();
    }
    c.release(kept, &NoWake);
}

/// Counts the wake calls a publish makes.
#[derive(Default)]
struct CountWake(std::cell::Cell<u32>);

impl bips_core::Wake for CountWake {
    fn wake(&self, _word: &core::sync::atomic::AtomicU32) {
        self.0.set(self.0.get() + 1);
    }
}

/// A consumer asleep in `recv` is marked by its own bit (entry 99 lives in
/// the second word of the bitmap): a publish made while it sleeps wakes,
/// and the bit is gone when `recv` returns.
#[test]
fn a_sleeper_is_marked_by_its_bit_and_woken() {
    use bips_core::Wait;
    let (raw, _) = RawRegion::formatted(small(4, 100, Policy::Block));
    let r = raw.region();
    let p = Producer::new(r);
    let c = Consumer::claim(r, 99, Start::Oldest, &NoWake).unwrap();
    let woke = CountWake::default();
    struct PublishWhileAsleep<'a, 'r> {
        p: &'a Producer<'r>,
        r: bips_core::Region<'r>,
        woke: &'a CountWake,
    }
    impl Wait for PublishWhileAsleep<'_, '_> {
        fn wait(&mut self, _: &core::sync::atomic::AtomicU32, _: u32) -> bool {
            assert!(self.r.consumer_info(99).unwrap().sleeping, "bit set");
            assert!(!self.r.consumer_info(98).unwrap().sleeping);
            let b = self.p.try_loan().unwrap().unwrap();
            self.p.publish(b, 1, 0, self.woke).unwrap();
            true
        }
    }
    let s = c
        .recv(&mut PublishWhileAsleep {
            p: &p,
            r,
            woke: &woke,
        })
        .unwrap();
    assert_eq!(s.seq(), 0);
    assert_eq!(woke.0.get(), 1, "the publish saw the sleeper and woke it");
    assert!(
        !r.consumer_info(99).unwrap().sleeping,
        "bit cleared on return"
    );
    c.release(s, &NoWake);
    // Nobody sleeps now: publishing makes no wake call.
    let b = p.try_loan().unwrap().unwrap();
    p.publish(b, 1, 0, &woke).unwrap();
    assert_eq!(woke.0.get(), 1);
}

/// A consumer killed asleep leaves its bit set; reclaiming its entry clears
/// it, after which publishes make no wake call (P1 after the fault). Also
/// idempotent: a second reclaim changes nothing.
#[test]
#[allow(clippy::forget_non_drop)]
fn reclaiming_a_dead_sleeper_stops_the_wakes() {
    use bips_core::reclaim_consumer;
    let (raw, layout) = RawRegion::formatted(small(4, 70, Policy::DropOldest));
    let r = raw.region();
    let p = Producer::new(r);
    let dead = Consumer::claim(r, 65, Start::Oldest, &NoWake).unwrap();
    std::mem::forget(dead);
    // Its process died inside `recv`'s sleep: the bit it set stays.
    let word = layout.producer_offset
        + core::mem::offset_of!(bips_core::layout::ProducerBlock, sleepers)
        + 8;
    // SAFETY: `word` is the second (aligned) u64 of the sleepers bitmap,
    // inside the region `raw` owns; only atomics touch it.
    let w = unsafe { core::sync::atomic::AtomicU64::from_ptr(raw.ptr().add(word).cast()) };
    w.fetch_or(1 << 1, core::sync::atomic::Ordering::Relaxed);
    assert!(r.consumer_info(65).unwrap().sleeping);
    let woke = CountWake::default();
    let b = p.try_loan().unwrap().unwrap();
    p.publish(b, 1, 0, &woke).unwrap();
    assert_eq!(woke.0.get(), 1, "the dead sleeper costs a wake");
    let state = r.consumer_word(65).unwrap();
    assert!(reclaim_consumer(&r, 65, state, &NoWake));
    assert!(!reclaim_consumer(&r, 65, state, &NoWake));
    assert!(!r.consumer_info(65).unwrap().sleeping);
    assert_eq!(w.load(core::sync::atomic::Ordering::Relaxed), 0);
    for _ in 0..10 {
        let b = p.try_loan().unwrap().unwrap();
        p.publish(b, 1, 0, &woke).unwrap();
    }
    assert_eq!(woke.0.get(), 1, "no wake call after the reclaim");
}

/// A bit set (by a hostile peer) for an entry that does not exist would
/// never be cleared: it is ignored, publishes make no wake call for it.
#[test]
fn sleeper_bits_beyond_max_consumers_are_ignored() {
    let (raw, layout) = RawRegion::formatted(small(4, 3, Policy::DropOldest));
    let r = raw.region();
    let p = Producer::new(r);
    let word =
        layout.producer_offset + core::mem::offset_of!(bips_core::layout::ProducerBlock, sleepers);
    // SAFETY: `word` is the first (aligned) u64 of the sleepers bitmap,
    // inside the region `raw` owns; only atomics touch it.
    let w = unsafe { core::sync::atomic::AtomicU64::from_ptr(raw.ptr().add(word).cast()) };
    w.store(!0b111, core::sync::atomic::Ordering::Relaxed);
    let woke = CountWake::default();
    let b = p.try_loan().unwrap().unwrap();
    p.publish(b, 1, 0, &woke).unwrap();
    assert_eq!(woke.0.get(), 0, "bits of entries 3..63 ring nobody");
    w.store(0b100, core::sync::atomic::Ordering::Relaxed);
    let b = p.try_loan().unwrap().unwrap();
    p.publish(b, 1, 0, &woke).unwrap();
    assert_eq!(woke.0.get(), 1, "entry 2's bit does");
}

/// A consumer whose entry was reclaimed while it lived (a misjudged
/// liveness check) and claimed anew must not, on detach, free the new
/// owner's entry or drop its holds.
#[test]
#[allow(clippy::forget_non_drop)]
fn detach_leaves_a_new_owners_entry_alone() {
    use bips_core::reclaim_consumer;
    let (raw, _) = RawRegion::formatted(small(4, 1, Policy::Block));
    let r = raw.region();
    let p = Producer::new(r);
    let old = Consumer::claim(r, 0, Start::Oldest, &NoWake).unwrap();
    assert!(reclaim_consumer(
        &r,
        0,
        r.consumer_word(0).unwrap(),
        &NoWake
    ));
    let new = Consumer::claim(r, 0, Start::Oldest, &NoWake).unwrap();
    let b = p.try_loan().unwrap().unwrap();
    p.publish(b, 1, 0, &NoWake).unwrap();
    let s = new.try_recv().unwrap().expect("sample 0");
    old.detach(&NoWake);
    let info = r.consumer_info(0).unwrap();
    assert!(info.active, "the new owner's entry is still claimed");
    assert_eq!(info.held, 1, "and its hold still announced");
    new.release(s, &NoWake);
    new.detach(&NoWake);
    assert!(!r.consumer_info(0).unwrap().active);
}

/// The sample's fields live in its ring slot. A slot rewritten for a later
/// sample while a consumer reads it (here: `tail` moved past sample 0 and
/// slot 0's `len`/`timestamp` already carry sample 2's, the stamp still 0's)
/// must never be taken for sample 0: under DropOldest the tail check of
/// handshake 1 drops what was read.
#[test]
fn fields_of_a_slot_being_rewritten_are_never_taken_for_the_old_sample() {
    use bips_core::layout::{ProducerBlock, RingSlot};
    use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
    let (raw, layout) = RawRegion::formatted(small(2, 1, Policy::DropOldest));
    let r = raw.region();
    let p = Producer::new(r);
    let c = Consumer::claim(r, 0, Start::Oldest, &NoWake).unwrap();
    let b = p.try_loan().unwrap().unwrap();
    assert_eq!(p.publish(b, 7, 700, &NoWake).unwrap(), 0);
    let word = |off: usize| {
        // SAFETY: `off` is an aligned u64 of the region `raw` owns; only
        // atomics touch it.
        unsafe { AtomicU64::from_ptr(raw.ptr().add(off).cast()) }
    };
    let slot0 = layout.ring_offset;
    // As the producer would, one sample later than the ring allows: sample 0
    // retired, slot 0 being rewritten for sample 2 (its stamp not yet).
    word(layout.producer_offset + core::mem::offset_of!(ProducerBlock, tail)).store(1, Relaxed);
    word(slot0 + core::mem::offset_of!(RingSlot, len)).store(33, Relaxed);
    word(slot0 + core::mem::offset_of!(RingSlot, timestamp)).store(3300, Relaxed);
    match c.try_recv() {
        Ok(Some(s)) => {
            assert_ne!(s.seq(), 0, "sample 0 taken with sample 2's fields: {s:?}");
        }
        Ok(None) => {}
        Err(e) => panic!("try_recv: {e}"),
    }
    assert!(
        c.cursor() >= 1,
        "the consumer skipped past the retired sample"
    );
}
