//! Misuse through the extern "C" functions answers error codes, never UB or a
//! panic across the boundary (the C-side twin is tests/c/misuse.c).

mod common;

use std::ptr::null_mut;

use bips_c::*;
use common::*;

#[test]
fn null_arguments_are_invalid() {
    let n = name("null");
    let o = options(4, 4096);
    let mut p = null_mut();
    // SAFETY: (all calls below) every pointer is null or valid.
    unsafe {
        assert_eq!(
            bips_producer_create(std::ptr::null(), &o, &mut p),
            BIPS_E_INVALID_ARGUMENT
        );
        assert_eq!(
            bips_producer_create(n.as_ptr(), std::ptr::null(), &mut p),
            BIPS_E_INVALID_ARGUMENT
        );
        assert_eq!(
            bips_producer_create(n.as_ptr(), &o, null_mut()),
            BIPS_E_INVALID_ARGUMENT
        );
        assert_eq!(
            bips_producer_loan(null_mut(), 0, &mut zero_loan()),
            BIPS_E_INVALID_ARGUMENT
        );
        assert_eq!(bips_producer_destroy(null_mut()), BIPS_E_INVALID_ARGUMENT);
        assert_eq!(
            bips_consumer_recv(null_mut(), 0, &mut zero_sample()),
            BIPS_E_INVALID_ARGUMENT
        );
        assert_eq!(bips_consumer_destroy(null_mut()), BIPS_E_INVALID_ARGUMENT);
        assert_eq!(bips_sample_release(null_mut()), BIPS_E_INVALID_ARGUMENT);
        assert_eq!(
            bips_sample_release(&mut zero_sample()),
            BIPS_E_INVALID_ARGUMENT
        );
        assert_eq!(
            bips_sample_mut_publish(&mut zero_loan(), null_mut()),
            BIPS_E_INVALID_ARGUMENT
        );
        assert!(bips_sample_data(zero_sample()).is_null());
        assert_eq!(bips_sample_mut_capacity(zero_loan()), 0);
    }
    assert!(last_error().contains("NULL"), "{}", last_error());
}

#[test]
fn bad_options_are_invalid() {
    let n = name("opts");
    let mut p = null_mut();
    let mut o = options(4, 0);
    // SAFETY: valid pointers.
    let st = unsafe { bips_producer_create(n.as_ptr(), &o, &mut p) };
    assert_eq!(st, BIPS_E_INVALID_ARGUMENT);
    assert!(last_error().contains("buffer_size"));
    o.buffer_size = 4096;
    o.policy = 77;
    // SAFETY: valid pointers.
    let st = unsafe { bips_producer_create(n.as_ptr(), &o, &mut p) };
    assert_eq!(st, BIPS_E_INVALID_ARGUMENT);
    o.policy = BIPS_POLICY_DROP_OLDEST;
    o.struct_size = 0;
    // SAFETY: valid pointers.
    let st = unsafe { bips_producer_create(n.as_ptr(), &o, &mut p) };
    assert_eq!(st, BIPS_E_INVALID_ARGUMENT);
    // An older caller's shorter struct: the fields it lacks take their defaults.
    o.struct_size = 16; // struct_size, buffers, buffer_size
                        // SAFETY: valid pointers; the library reads only 16 bytes.
    let st = unsafe { bips_producer_create(n.as_ptr(), &o, &mut p) };
    assert_eq!(st, BIPS_OK);
    let mut g = bips_geometry::default();
    // SAFETY: live handle, valid out-pointer.
    unsafe {
        assert_eq!(bips_producer_geometry(p, &mut g), BIPS_OK);
        assert_eq!(
            (g.buffers, g.meta_size, g.policy),
            (4, 64, BIPS_POLICY_BLOCK)
        );
        assert_eq!(bips_producer_destroy(p), BIPS_OK);
    }
}

#[test]
fn double_publish_and_release_are_stale() {
    let n = name("stale");
    let p = create(&n, 4);
    let c = open(&n);
    // SAFETY: (all calls below) live handles, valid pointers.
    unsafe {
        let mut l = zero_loan();
        assert_eq!(bips_producer_loan(p, 0, &mut l), BIPS_OK);
        assert_eq!(bips_sample_mut_set_len(l, 4097), BIPS_E_INVALID_ARGUMENT);
        assert_eq!(bips_sample_mut_set_len(l, 3), BIPS_OK);
        let copy = l;
        let mut seq = u64::MAX;
        assert_eq!(bips_sample_mut_publish(&mut l, &mut seq), BIPS_OK);
        assert_eq!(seq, 0);
        assert!(l.owner.is_null());
        let mut copy2 = copy;
        assert_eq!(
            bips_sample_mut_publish(&mut copy2, null_mut()),
            BIPS_E_STALE
        );
        assert!(bips_sample_mut_data(copy).is_null());

        let mut s = zero_sample();
        assert_eq!(bips_consumer_recv(c, -1, &mut s), BIPS_OK);
        assert_eq!(bips_sample_len(s), 3);
        let mut again = s;
        assert_eq!(bips_sample_release(&mut s), BIPS_OK);
        assert_eq!(bips_sample_release(&mut again), BIPS_E_STALE);
        assert_eq!(bips_consumer_recv(c, 0, &mut s), BIPS_E_TIMEOUT);
        assert_eq!(bips_consumer_destroy(c), BIPS_OK);
        assert_eq!(bips_producer_destroy(p), BIPS_OK);
    }
}

#[test]
fn destroy_waits_for_outstanding_samples_and_loans() {
    let n = name("defer");
    let p = create(&n, 4);
    let c = open(&n);
    // SAFETY: (all calls below) handles are live until their deferred free.
    unsafe {
        let mut l = zero_loan();
        assert_eq!(bips_producer_loan(p, 0, &mut l), BIPS_OK);
        *bips_sample_mut_data(l).cast::<u8>() = 42;
        assert_eq!(bips_sample_mut_set_len(l, 1), BIPS_OK);
        let mut l2 = zero_loan();
        assert_eq!(bips_producer_loan(p, 0, &mut l2), BIPS_OK);
        assert_eq!(bips_sample_mut_publish(&mut l, null_mut()), BIPS_OK);

        let mut s = zero_sample();
        assert_eq!(bips_consumer_recv(c, -1, &mut s), BIPS_OK);
        assert_eq!(bips_consumer_destroy(c), BIPS_OK); // deferred
        assert_eq!(
            bips_consumer_recv(c, 0, &mut zero_sample()),
            BIPS_E_INVALID_ARGUMENT
        );
        assert_eq!(*bips_sample_data(s).cast::<u8>(), 42);
        assert_eq!(bips_sample_release(&mut s), BIPS_OK); // frees the consumer

        assert_eq!(bips_producer_destroy(p), BIPS_OK); // deferred: l2 is out
        assert_eq!(
            bips_producer_loan(p, 0, &mut zero_loan()),
            BIPS_E_INVALID_ARGUMENT
        );
        // The channel is still there until the last loan comes back.
        let c2 = open(&n);
        assert_eq!(bips_sample_mut_discard(&mut l2), BIPS_OK); // frees the producer
                                                               // It drains what is retained (the sample of `l`), then is told.
        let mut s2 = zero_sample();
        assert_eq!(bips_consumer_recv(c2, -1, &mut s2), BIPS_OK);
        assert_eq!(*bips_sample_data(s2).cast::<u8>(), 42);
        assert_eq!(bips_sample_release(&mut s2), BIPS_OK);
        assert_eq!(bips_consumer_recv(c2, -1, &mut s2), BIPS_E_DISCONNECTED);
        assert_eq!(bips_consumer_destroy(c2), BIPS_OK);
    }
}

#[test]
fn busy_channel_and_missing_channel() {
    let n = name("busy");
    let p = create(&n, 2);
    let mut p2 = null_mut();
    let o = options(2, 64);
    let mut c = null_mut();
    // SAFETY: valid pointers, live handle.
    unsafe {
        assert_eq!(bips_producer_create(n.as_ptr(), &o, &mut p2), BIPS_E_BUSY);
        assert!(p2.is_null());
        assert_eq!(bips_producer_destroy(p), BIPS_OK);
        assert_eq!(
            bips_consumer_open(n.as_ptr(), std::ptr::null(), &mut c),
            BIPS_E_NOT_FOUND
        );
    }
    assert!(last_error().contains("does not exist"));
}

#[test]
fn a_handle_with_another_owner_is_stale() {
    // Two consumers' first samples, and two producers' first loans: the
    // tokens differ, so swapping the owners reaches nothing.
    let n = name("swap");
    let n2 = name("swap2");
    let p = create(&n, 4);
    let p2 = create(&n2, 4);
    let a = open(&n);
    let b = open(&n);
    // SAFETY: (all calls below) live handles, valid pointers.
    unsafe {
        let mut l = zero_loan();
        let mut l2 = zero_loan();
        assert_eq!(bips_producer_loan(p, 0, &mut l), BIPS_OK);
        assert_eq!(bips_producer_loan(p2, 0, &mut l2), BIPS_OK);
        assert_ne!(l.token, l2.token);
        let mut forged = bips_sample_mut {
            owner: p2,
            token: l.token,
        };
        assert_eq!(
            bips_sample_mut_publish(&mut forged, null_mut()),
            BIPS_E_STALE
        );
        assert!(bips_sample_mut_data(forged).is_null());
        assert_eq!(bips_sample_mut_capacity(l2), 4096); // p2's loan intact
        assert_eq!(bips_sample_mut_discard(&mut l2), BIPS_OK);
        *bips_sample_mut_data(l).cast::<u8>() = 7;
        assert_eq!(bips_sample_mut_set_len(l, 1), BIPS_OK);
        assert_eq!(bips_sample_mut_publish(&mut l, null_mut()), BIPS_OK);

        let mut sa = zero_sample();
        let mut sb = zero_sample();
        assert_eq!(bips_consumer_recv(a, -1, &mut sa), BIPS_OK);
        assert_eq!(bips_consumer_recv(b, -1, &mut sb), BIPS_OK);
        assert_ne!(sa.token, sb.token);
        let mut swapped_a = bips_sample {
            owner: b,
            token: sa.token,
        };
        let mut swapped_b = bips_sample {
            owner: a,
            token: sb.token,
        };
        assert_eq!(bips_sample_release(&mut swapped_a), BIPS_E_STALE);
        assert_eq!(bips_sample_release(&mut swapped_b), BIPS_E_STALE);
        assert!(bips_sample_data(swapped_a).is_null());
        // Both samples intact and still held.
        assert_eq!(*bips_sample_data(sa).cast::<u8>(), 7);
        assert_eq!(*bips_sample_data(sb).cast::<u8>(), 7);
        assert_eq!(bips_sample_release(&mut sa), BIPS_OK);
        assert_eq!(bips_sample_release(&mut sb), BIPS_OK);
        assert_eq!(bips_consumer_destroy(a), BIPS_OK);
        assert_eq!(bips_consumer_destroy(b), BIPS_OK);
        assert_eq!(bips_producer_destroy(p), BIPS_OK);
        assert_eq!(bips_producer_destroy(p2), BIPS_OK);
    }
}

#[test]
fn loan_forever_with_every_buffer_on_loan_fails_at_once() {
    let n = name("selfloan");
    let p = create(&n, 2);
    // SAFETY: (all calls below) live handle, valid pointers.
    unsafe {
        let mut l = [zero_loan(), zero_loan()];
        assert_eq!(bips_producer_loan(p, -1, &mut l[0]), BIPS_OK);
        assert_eq!(bips_producer_loan(p, -1, &mut l[1]), BIPS_OK);
        let mut extra = zero_loan();
        assert_eq!(bips_producer_loan(p, -1, &mut extra), BIPS_E_HELD_LIMIT);
        assert!(extra.owner.is_null());
        assert!(
            last_error().contains("every buffer is on loan to this producer"),
            "{}",
            last_error()
        );
        // Finite timeouts keep answering TIMEOUT.
        assert_eq!(bips_producer_loan(p, 0, &mut extra), BIPS_E_TIMEOUT);
        assert_eq!(bips_sample_mut_discard(&mut l[0]), BIPS_OK);
        assert_eq!(bips_producer_loan(p, -1, &mut l[0]), BIPS_OK);
        for l in &mut l {
            assert_eq!(bips_sample_mut_discard(l), BIPS_OK);
        }
        assert_eq!(bips_producer_destroy(p), BIPS_OK);
    }
}
