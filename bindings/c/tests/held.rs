//! A channel's `max_held` through the C ABI: `bips_options.max_held` = 64,
//! a consumer holds 64 samples, the 65th is `BIPS_E_HELD_LIMIT` with a
//! message naming the limit, and releases made from another thread while a
//! thread is inside `bips_consumer_recv` reach every slot (slots 0, 31 and 62
//! share one pending bit of the handle's gate).

mod common;

use std::ptr::null_mut;
use std::time::Duration;

use bips_c::*;
use common::*;

/// `*mut` handles crossing to another test thread (the C API allows any
/// thread, one at a time; the test orders them).
struct Send<T>(T);
// SAFETY: the handles are used by one thread at a time (see each use).
unsafe impl<T> std::marker::Send for Send<T> {}

fn publish(p: *mut bips_producer, k: u8) {
    let mut l = zero_loan();
    // SAFETY: a live producer, valid out-pointers; the loan's data pointer
    // is valid for its capacity (4096 >= 1).
    unsafe {
        assert_eq!(
            bips_producer_loan(p, 0, &mut l),
            BIPS_OK,
            "{}",
            last_error()
        );
        *bips_sample_mut_data(l).cast::<u8>() = k;
        assert_eq!(bips_sample_mut_set_len(l, 1), BIPS_OK);
        assert_eq!(bips_sample_mut_publish(&mut l, null_mut()), BIPS_OK);
    }
}

#[test]
fn consumer_holds_64_and_mailbox_releases_reach_every_slot() {
    let n = name("held64");
    let mut o = options(72, 4096);
    assert_eq!(o.max_held, BIPS_MAX_HELD, "the default");
    o.max_held = 64;
    o.policy = BIPS_POLICY_DROP_OLDEST;
    let mut p = null_mut();
    let mut c = null_mut();
    let mut co = std::mem::MaybeUninit::<bips_consumer_options>::zeroed();
    // SAFETY: (all calls below) live handles, valid pointers, each handle
    // used by one thread at a time.
    unsafe {
        assert_eq!(bips_producer_create(n.as_ptr(), &o, &mut p), BIPS_OK);
        let size = std::mem::size_of::<bips_consumer_options>();
        assert_eq!(bips_consumer_options_init(co.as_mut_ptr(), size), BIPS_OK);
        let mut co = co.assume_init();
        co.start = BIPS_START_OLDEST;
        assert_eq!(bips_consumer_open(n.as_ptr(), &co, &mut c), BIPS_OK);
        let mut max = 0;
        assert_eq!(bips_consumer_max_held(c, &mut max), BIPS_OK);
        assert_eq!(max, 64);
        let mut g = bips_geometry::default();
        assert_eq!(bips_consumer_geometry(c, &mut g), BIPS_OK);
        assert_eq!(g.buffers, 72);

        for k in 0..64u8 {
            publish(p, k);
        }
        let mut held = Vec::new();
        for k in 0..64u8 {
            let mut s = zero_sample();
            assert_eq!(
                bips_consumer_recv(c, 0, &mut s),
                BIPS_OK,
                "{}",
                last_error()
            );
            assert_eq!(*bips_sample_data(s).cast::<u8>(), k);
            held.push(s);
        }
        // The limit is checked first: no sample needs to be ready.
        let mut s = zero_sample();
        assert_eq!(bips_consumer_recv(c, 0, &mut s), BIPS_E_HELD_LIMIT);
        let msg = last_error();
        assert!(
            msg.contains("holds 64 samples") && msg.contains("max_held = 64"),
            "{msg}"
        );

        // Free one slot (63), then have a thread wait inside recv (nothing is
        // published) while this one releases slots 0, 31 and 62 (one pending
        // bit of the gate) into the mailbox.
        assert_eq!(bips_sample_release(&mut held[63]), BIPS_OK);
        let waiter = {
            let c = Send(c);
            std::thread::spawn(move || {
                let c = c;
                let mut s = zero_sample();
                let st = bips_consumer_recv(c.0, 5_000_000_000, &mut s);
                (st, Send(s))
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        for i in [0, 31, 62] {
            let st = bips_sample_release(&mut held[i]);
            assert!(st == BIPS_OK, "release {i}: {st:?} {}", last_error());
        }
        std::thread::sleep(Duration::from_millis(50));
        publish(p, 64);
        let (st, got) = waiter.join().unwrap();
        assert_eq!(st, BIPS_OK);
        let mut got = got.0;
        assert_eq!(*bips_sample_data(got).cast::<u8>(), 64);
        // 60 + 1 held now: three more fit, then the limit.
        for k in 65..69u8 {
            publish(p, k);
        }
        let mut more = Vec::new();
        for _ in 0..3 {
            let mut s = zero_sample();
            assert_eq!(
                bips_consumer_recv(c, 0, &mut s),
                BIPS_OK,
                "{}",
                last_error()
            );
            more.push(s);
        }
        let mut s = zero_sample();
        assert_eq!(bips_consumer_recv(c, 0, &mut s), BIPS_E_HELD_LIMIT);
        // The producer goes on with the buffers left; the held bytes stay.
        for k in 69..250u8 {
            publish(p, k);
        }
        for (k, s) in held.iter().enumerate() {
            if !s.owner.is_null() {
                assert_eq!(
                    *bips_sample_data(*s).cast::<u8>(),
                    k as u8,
                    "held sample {k} rewritten"
                );
            }
        }
        assert_eq!(bips_sample_release(&mut got), BIPS_OK);
        for s in held.iter_mut().chain(more.iter_mut()) {
            if !s.owner.is_null() {
                assert_eq!(bips_sample_release(s), BIPS_OK);
            }
        }
        assert_eq!(bips_consumer_destroy(c), BIPS_OK);
        assert_eq!(bips_producer_destroy(p), BIPS_OK);
    }
}

#[test]
fn max_held_out_of_range_is_invalid() {
    let n = name("heldbad");
    for bad in [0u32, 65] {
        let mut o = options(4, 64);
        o.max_held = bad;
        let mut p = null_mut();
        // SAFETY: valid name, options and out-pointer.
        let st = unsafe { bips_producer_create(n.as_ptr(), &o, &mut p) };
        assert_eq!(st, BIPS_E_INVALID_ARGUMENT);
        assert!(last_error().contains("max_held"), "{}", last_error());
    }
}
