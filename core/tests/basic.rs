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
    assert_eq!(c.try_recv(), Err(ProtocolError::HeldLimit));
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
