//! loom model tests of the lock-free protocol (`core/src/protocol.rs`).
//!
//! Run with
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p bips-core --release --test loom --target-dir target/loom`.
//!
//! Each buffer's payload is modelled by one `loom::cell::UnsafeCell<u64>`: the
//! producer writes the sample's sequence into it between loan and publish, a
//! consumer reads it while it holds the sample and checks it against
//! `Received::seq`. loom reports a producer writing a buffer a consumer reads
//! (S1) as a causality violation, and a missing release/acquire edge (S2) as a
//! causality violation or a wrong value. Sleeping parties use a condvar model
//! of a futex ([`LoomFutex`]), so a lost wake-up (L2) is a loom deadlock.
//!
//! Every model joins all the threads it spawns before it returns.
//!
//! A limit to keep in mind: loom 0.7 makes every `fence(SeqCst)` a
//! happens-before edge from all earlier SC fences (stronger than C11, where SC
//! fences order but do not synchronize), so a missing Release/Acquire pair is
//! only found on a path where no SC fence pair happens to cover it.
#![cfg(loom)]

mod common;

use std::mem;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use bips_core::{
    reclaim_consumer, Consumer, Policy, Producer, ProtocolError, Received, Region, Start, Wait,
    Wake,
};
use common::{small, HeapParts};
use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicU32, Ordering::SeqCst};
use loom::sync::{Condvar, Mutex};
use loom::thread;

/// Preemption bound used when `LOOM_MAX_PREEMPTIONS` is not set.
const DEFAULT_PREEMPTIONS: usize = 3;

/// Runs `f` under loom, exploring every interleaving with at most
/// `LOOM_MAX_PREEMPTIONS` (default 3) preemptions, capped at `max_preemptions`:
/// models with three threads use 2 (at 3 they run for many minutes), which
/// keeps the whole file at about 1-2 minutes on 2 cores.
fn model<F>(max_preemptions: usize, f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut b = loom::model::Builder::new();
    let bound = b.preemption_bound.unwrap_or(DEFAULT_PREEMPTIONS);
    b.preemption_bound = Some(bound.min(max_preemptions));
    // The scans over `held` (MAX_HELD words per entry) make long executions.
    b.max_branches = b.max_branches.max(100_000);
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let start = std::time::Instant::now();
    b.check(move || {
        counter.fetch_add(1, Relaxed);
        f()
    });
    // Shown with `--nocapture`: how much of the state space was explored.
    println!(
        "{} executions in {:.1?} (preemption bound {:?})",
        runs.load(Relaxed),
        start.elapsed(),
        b.preemption_bound
    );
}

// ---------------------------------------------------------------------------
// A futex model: `wait` blocks while `*word == expected`, `wake` wakes all.

/// A futex modelled with a mutex and a condvar. `wait` re-checks the word
/// under the lock and `wake` notifies under the lock, so a wake-up between a
/// waiter's check and its sleep cannot be lost, exactly as with `FUTEX_WAIT`
/// (and a wake-up the protocol forgets shows up as a loom deadlock).
struct LoomFutex {
    m: Mutex<()>,
    cv: Condvar,
}

impl LoomFutex {
    fn new() -> LoomFutex {
        LoomFutex {
            m: Mutex::new(()),
            cv: Condvar::new(),
        }
    }
}

impl Wake for LoomFutex {
    fn wake(&self, _word: &AtomicU32) {
        let _g = self.m.lock().unwrap();
        self.cv.notify_all();
    }
}

/// A sleeping [`Wait`] on a [`LoomFutex`] (never times out).
struct Sleep<'a>(&'a LoomFutex);

impl Wait for Sleep<'_> {
    fn wait(&mut self, word: &AtomicU32, expected: u32) -> bool {
        let g = self.0.m.lock().unwrap();
        if word.load(SeqCst) != expected {
            return true;
        }
        let _g = self.0.cv.wait(g).unwrap();
        true
    }
}

// ---------------------------------------------------------------------------
// The channel under test: region parts, payload cells and the futex.

struct Shared {
    parts: HeapParts,
    payload: Vec<UnsafeCell<u64>>,
    futex: LoomFutex,
}

// SAFETY: the region parts are atomics and the futex is a loom mutex/condvar;
// the payload cells are only accessed through `with`/`with_mut`, which loom
// checks for data races (that is the point of the test).
unsafe impl Sync for Shared {}
// SAFETY: as for `Sync`.
unsafe impl Send for Shared {}

/// Owns a [`Shared`] and hands out `'static` views of it to loom threads
/// (loom 0.7 has no scoped threads). Every model joins all of its threads
/// before the `Chan` drops.
struct Chan {
    shared: *mut Shared,
    region: Region<'static>,
}

impl Chan {
    fn new(buffers: u32, consumers: u32, policy: Policy) -> Chan {
        Chan::with_geometry(small(buffers, consumers, policy))
    }

    fn with_geometry(g: bips_core::Geometry) -> Chan {
        let buffers = g.buffer_count;
        let shared = Box::into_raw(Box::new(Shared {
            parts: HeapParts::new(g),
            payload: (0..buffers).map(|_| UnsafeCell::new(u64::MAX)).collect(),
            futex: LoomFutex::new(),
        }));
        // SAFETY: `shared` is a live allocation, freed only in `Drop` after
        // every thread using it was joined.
        let sh: &'static Shared = unsafe { &*shared };
        let region = sh.parts.region();
        Chan { shared, region }
    }

    fn sh(&self) -> &'static Shared {
        // SAFETY: see `Chan::new`.
        unsafe { &*self.shared }
    }
}

impl Drop for Chan {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A failing model may leave loom threads parked on this memory.
            return;
        }
        // SAFETY: allocated by `Box::into_raw` in `new`; all threads that used
        // it were joined by the model.
        drop(unsafe { Box::from_raw(self.shared) });
    }
}

fn len_of(seq: u64) -> u64 {
    seq % 64 + 1
}

fn ts_of(seq: u64) -> u64 {
    1_000 + seq
}

/// Writes the payload of loaned buffer `b` and publishes it; returns its seq.
fn fill_and_publish(p: &Producer<'_>, sh: &Shared, b: u32) -> u64 {
    let seq = p.next_seq();
    // SAFETY: `v` points to the live cell of loaned buffer `b`; whether a
    // consumer may access it concurrently is exactly what loom checks here.
    sh.payload[b as usize].with_mut(|v| unsafe { *v = seq });
    let s = p.publish(b, len_of(seq), ts_of(seq), &sh.futex).unwrap();
    assert_eq!(s, seq);
    s
}

/// Reads the payload of a held sample and checks it and its descriptor.
fn check(sh: &Shared, s: &Received) {
    // SAFETY: `v` points to the live cell of held buffer `s.buffer()`; whether
    // the producer may write it concurrently is exactly what loom checks here.
    let v = sh.payload[s.buffer() as usize].with(|v| unsafe { *v });
    assert_eq!(
        v,
        s.seq(),
        "payload of buffer {} is not sample {}",
        s.buffer(),
        s.seq()
    );
    assert_eq!(s.len(), len_of(s.seq()), "len of sample {}", s.seq());
    assert_eq!(
        s.timestamp(),
        ts_of(s.seq()),
        "timestamp of sample {}",
        s.seq()
    );
}

/// What a lossy consumer saw: samples, their lag sum, first and last seq.
#[derive(Debug, Default)]
struct Tally {
    seen: u64,
    lagged: u64,
    first: Option<u64>,
    last: Option<u64>,
}

/// Receives (sleeping) until `Disconnected`, checking payload, strict order
/// and that each sequence gap equals the reported lag (S4).
fn drain(c: &Consumer<'_>, sh: &Shared) -> Tally {
    let mut t = Tally::default();
    let mut expect = c.cursor();
    loop {
        match c.recv(&mut Sleep(&sh.futex)) {
            Ok(s) => {
                check(sh, &s);
                assert!(
                    s.seq() >= expect,
                    "sequence went back: {} < {expect}",
                    s.seq()
                );
                assert_eq!(s.seq() - expect, s.lagged(), "gap not reported as lag");
                expect = s.seq() + 1;
                t.seen += 1;
                t.lagged += s.lagged();
                t.first.get_or_insert(s.seq());
                t.last = Some(s.seq());
                c.release(s, &sh.futex);
            }
            Err(ProtocolError::Disconnected) => return t,
            Err(e) => panic!("recv failed: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------
// 1. Block, two sleeping consumers: lossless, in order, then Disconnected.

#[test]
fn block_two_consumers() {
    const K: u64 = 2;
    model(2, || {
        // One buffer: the producer waits for both consumers for every sample.
        let ch = Chan::new(1, 2, Policy::Block);
        let (r, sh) = (ch.region, ch.sh());
        let c0 = Consumer::claim(r, 0, Start::Oldest, &sh.futex).unwrap();
        let c1 = Consumer::claim(r, 1, Start::Oldest, &sh.futex).unwrap();

        let producer = thread::spawn(move || {
            let p = Producer::new(r);
            for _ in 0..K {
                let b = p.loan(&mut Sleep(&sh.futex)).unwrap();
                fill_and_publish(&p, sh, b);
            }
            p.close(&sh.futex);
        });
        let consume = move |c: Consumer<'static>| {
            for i in 0..K {
                let s = c.recv(&mut Sleep(&sh.futex)).unwrap();
                assert_eq!((s.seq(), s.lagged()), (i, 0), "Block must not lose samples");
                check(sh, &s);
                c.release(s, &sh.futex);
            }
            assert_eq!(
                c.recv(&mut Sleep(&sh.futex)),
                Err(ProtocolError::Disconnected)
            );
        };
        let other = thread::spawn(move || consume(c1));
        consume(c0);
        other.join().unwrap();
        producer.join().unwrap();
    });
}

// ---------------------------------------------------------------------------
// 2. DropOldest, two consumers: the producer never waits; gaps are reported.

#[test]
fn drop_oldest_two_consumers() {
    const K: u64 = 4;
    model(2, || {
        // 3 buffers, each consumer holds at most one sample at a time.
        let ch = Chan::new(3, 2, Policy::DropOldest);
        let (r, sh) = (ch.region, ch.sh());
        let c0 = Consumer::claim(r, 0, Start::Oldest, &sh.futex).unwrap();
        let c1 = Consumer::claim(r, 1, Start::Oldest, &sh.futex).unwrap();

        let producer = thread::spawn(move || {
            let p = Producer::new(r);
            for _ in 0..K {
                let b = p
                    .try_loan()
                    .unwrap()
                    .expect("DropOldest with buffers > held must never wait");
                fill_and_publish(&p, sh, b);
            }
            p.close(&sh.futex);
        });
        let consume = move |c: Consumer<'static>| {
            let t = drain(&c, sh);
            assert_eq!(
                t.seen + t.lagged,
                K,
                "every sample seen or reported lost: {t:?}"
            );
            assert_eq!(t.last, Some(K - 1), "the newest sample is never dropped");
            assert_eq!(c.cursor(), K);
        };
        let other = thread::spawn(move || consume(c1));
        consume(c0);
        other.join().unwrap();
        producer.join().unwrap();
    });
}

// ---------------------------------------------------------------------------
// 3. Out-of-order release while the producer keeps recycling.

#[test]
fn out_of_order_release() {
    const K: u64 = 4;
    // Executions in which the consumer held two samples at once.
    static BOTH_HELD: AtomicUsize = AtomicUsize::new(0);
    model(3, || {
        let ch = Chan::new(3, 1, Policy::DropOldest);
        let (r, sh) = (ch.region, ch.sh());
        let c = Consumer::claim(r, 0, Start::Oldest, &sh.futex).unwrap();

        let producer = thread::spawn(move || {
            let p = Producer::new(r);
            for _ in 0..K {
                // A blocking loan: `try_loan` may answer `None` for the
                // instant a consumer's mid-receive hold is being withdrawn;
                // the withdrawal must wake the sleeping producer.
                let b = p.loan(&mut Sleep(&sh.futex)).unwrap();
                fill_and_publish(&p, sh, b);
            }
            p.close(&sh.futex);
            p
        });
        let a = c.recv(&mut Sleep(&sh.futex)).unwrap();
        check(sh, &a);
        let mut last = a.seq();
        match c.recv(&mut Sleep(&sh.futex)) {
            Ok(b) => {
                BOTH_HELD.fetch_add(1, Relaxed);
                check(sh, &b);
                assert!(b.seq() > a.seq());
                assert_eq!(b.seq() - a.seq() - 1, b.lagged());
                last = b.seq();
                c.release(b, &sh.futex); // the newer one first
                check(sh, &a); // still held: still intact
                c.release(a, &sh.futex);
            }
            // Only when the producer had already dropped all but `a`.
            Err(ProtocolError::Disconnected) => {
                assert_eq!(a.seq(), K - 1);
                c.release(a, &sh.futex);
            }
            Err(e) => panic!("recv failed: {e}"),
        }

        let p = producer.join().unwrap();
        // Whatever is left is still in order and intact.
        loop {
            match c.try_recv() {
                Ok(Some(s)) => {
                    check(sh, &s);
                    assert!(s.seq() > last);
                    last = s.seq();
                    c.release(s, &sh.futex);
                }
                Err(ProtocolError::Disconnected) => break,
                other => panic!("closed and drained, got {other:?}"),
            }
        }
        assert_eq!(last, K - 1);
        // Nothing is held any more: every buffer, retired or not, comes back.
        let mut loaned = Vec::new();
        for _ in 0..3 {
            let b = p.try_loan().unwrap().expect("all buffers unheld");
            assert!(!loaned.contains(&b));
            loaned.push(b);
        }
    });
    assert!(BOTH_HELD.load(Relaxed) > 0, "no execution held two samples");
}

// ---------------------------------------------------------------------------
// 4. A dead consumer is reclaimed while the producer is blocked on it.

#[test]
// `forget` marks the consumer's death (no `Drop` runs in a dead process), even
// though neither type implements `Drop` today.
#[allow(clippy::forget_non_drop)]
fn reclaim_races_producer() {
    const K: u64 = 3;
    model(3, || {
        let ch = Chan::new(1, 1, Policy::Block);
        let (r, sh) = (ch.region, ch.sh());
        let c = Consumer::claim(r, 0, Start::Oldest, &sh.futex).unwrap();

        let victim = thread::spawn(move || {
            let s = c.recv(&mut Sleep(&sh.futex)).unwrap();
            assert_eq!(s.seq(), 0);
            check(sh, &s);
            // The process dies holding sample 0.
            mem::forget(s);
            mem::forget(c);
        });
        let reclaimer = thread::spawn(move || {
            // Proof of death (the OS layer's liveness lock): a join.
            victim.join().unwrap();
            let w = r.consumer_word(0).unwrap();
            assert!(r.consumer_info(0).unwrap().active);
            assert!(reclaim_consumer(&r, 0, w, &sh.futex), "first reclaim frees");
            assert!(
                !reclaim_consumer(&r, 0, w, &sh.futex),
                "reclaim is idempotent"
            );
        });

        let p = Producer::new(r);
        for _ in 0..K {
            // Blocks from sample 1 on until the reclaim frees buffer 0.
            let b = p.loan(&mut Sleep(&sh.futex)).unwrap();
            assert_eq!(b, 0);
            fill_and_publish(&p, sh, b);
        }
        reclaimer.join().unwrap();
        assert_eq!(p.next_seq(), K);
        assert!(!r.consumer_info(0).unwrap().active);
    });
}

// ---------------------------------------------------------------------------
// 5. No lost wake-ups (L2).

/// A consumer asleep in `recv` races the only publish.
#[test]
fn no_lost_wakeup_recv() {
    model(3, || {
        let ch = Chan::new(1, 1, Policy::Block);
        let (r, sh) = (ch.region, ch.sh());
        let c = Consumer::claim(r, 0, Start::Oldest, &sh.futex).unwrap();
        let producer = thread::spawn(move || {
            let p = Producer::new(r);
            let b = p.try_loan().unwrap().unwrap();
            fill_and_publish(&p, sh, b);
        });
        let s = c.recv(&mut Sleep(&sh.futex)).unwrap();
        assert_eq!(s.seq(), 0);
        check(sh, &s);
        c.release(s, &sh.futex);
        producer.join().unwrap();
    });
}

/// The producer asleep in `loan` (Block, one buffer) races the release.
#[test]
fn no_lost_wakeup_loan() {
    model(3, || {
        let ch = Chan::new(1, 1, Policy::Block);
        let (r, sh) = (ch.region, ch.sh());
        let c = Consumer::claim(r, 0, Start::Oldest, &sh.futex).unwrap();
        let p = Producer::new(r);
        let b = p.try_loan().unwrap().unwrap();
        fill_and_publish(&p, sh, b);

        let consumer = thread::spawn(move || {
            let s = c.try_recv().unwrap().expect("sample 0 is published");
            check(sh, &s);
            c.release(s, &sh.futex);
        });
        let b = p.loan(&mut Sleep(&sh.futex)).unwrap();
        assert_eq!(b, 0);
        assert_eq!(fill_and_publish(&p, sh, b), 1);
        consumer.join().unwrap();
    });
}

/// DropOldest, producer sleeping in `loan`: a consumer keeps one of the two
/// buffers held while it receives the rest. The other buffer must always come
/// back to the producer, also when the producer retired it because of a hold
/// the consumer announced and then withdrew (it saw `tail` pass the sample).
#[test]
fn no_lost_wakeup_loan_drop_oldest() {
    const K: u64 = 3;
    model(3, || {
        let ch = Chan::new(2, 1, Policy::DropOldest);
        let (r, sh) = (ch.region, ch.sh());
        let c = Consumer::claim(r, 0, Start::Oldest, &sh.futex).unwrap();
        let consumer = thread::spawn(move || {
            let kept = c.recv(&mut Sleep(&sh.futex)).unwrap();
            check(sh, &kept);
            let t = drain(&c, sh);
            assert_eq!(kept.seq() + 1 + t.seen + t.lagged, K);
            check(sh, &kept); // held throughout: never rewritten
            c.release(kept, &sh.futex);
        });
        let p = Producer::new(r);
        for _ in 0..K {
            let b = p.loan(&mut Sleep(&sh.futex)).unwrap();
            fill_and_publish(&p, sh, b);
        }
        p.close(&sh.futex);
        consumer.join().unwrap();
    });
}

/// A consumer asleep in `recv` races the close: it must see `Disconnected`.
#[test]
fn no_lost_wakeup_close() {
    model(3, || {
        let ch = Chan::new(1, 1, Policy::Block);
        let (r, sh) = (ch.region, ch.sh());
        let c = Consumer::claim(r, 0, Start::Oldest, &sh.futex).unwrap();
        let closer = thread::spawn(move || r.close(&sh.futex));
        assert_eq!(
            c.recv(&mut Sleep(&sh.futex)),
            Err(ProtocolError::Disconnected)
        );
        closer.join().unwrap();
    });
}

/// Handshake 2 split for async receives (`arm_wait` / `try_recv` /
/// wait elsewhere / `rearm_wait` / `disarm_wait`): two waits armed on one
/// consumer (two futures), the first cancelled before the publish. The
/// second must still be woken: the `sleepers` bit is counted, not cleared by
/// the first disarm (a plain set/clear deadlocks here). After the last
/// disarm the bit is clear.
#[test]
fn no_lost_wakeup_split_recv() {
    model(3, || {
        let ch = Chan::new(1, 1, Policy::Block);
        let (r, sh) = (ch.region, ch.sh());
        let c = Consumer::claim(r, 0, Start::Oldest, &sh.futex).unwrap();
        let producer = thread::spawn(move || {
            let p = Producer::new(r);
            let b = p.try_loan().unwrap().unwrap();
            fill_and_publish(&p, sh, b);
        });
        let _first = c.arm_wait();
        let mut bell = c.arm_wait();
        c.disarm_wait(); // the first wait is cancelled
        let s = loop {
            if let Some(s) = c.try_recv().unwrap() {
                break s;
            }
            // What the reactor does with the word and the value read.
            Sleep(&sh.futex).wait(c.doorbell(), bell);
            bell = c.rearm_wait();
        };
        c.disarm_wait();
        assert!(
            !r.is_sleeper(0),
            "sleeper bit left set after the last disarm"
        );
        assert_eq!(s.seq(), 0);
        check(sh, &s);
        c.release(s, &sh.futex);
        producer.join().unwrap();
    });
}

/// Handshake 3 split for async loans: the producer arms, re-checks, waits on
/// the space bell elsewhere, while the consumer releases the only buffer.
#[test]
fn no_lost_wakeup_split_loan() {
    model(3, || {
        let ch = Chan::new(1, 1, Policy::Block);
        let (r, sh) = (ch.region, ch.sh());
        let c = Consumer::claim(r, 0, Start::Oldest, &sh.futex).unwrap();
        let p = Producer::new(r);
        let b = p.try_loan().unwrap().unwrap();
        fill_and_publish(&p, sh, b);

        let consumer = thread::spawn(move || {
            let s = c.try_recv().unwrap().expect("sample 0 is published");
            check(sh, &s);
            c.release(s, &sh.futex);
        });
        let mut bell = p.arm_wait();
        let b = loop {
            if let Some(b) = p.try_loan().unwrap() {
                break b;
            }
            Sleep(&sh.futex).wait(p.space_bell(), bell);
            bell = p.rearm_wait();
        };
        p.disarm_wait();
        assert_eq!(b, 0);
        assert_eq!(fill_and_publish(&p, sh, b), 1);
        consumer.join().unwrap();
    });
}

// ---------------------------------------------------------------------------
// 6. A consumer attaches (Start::Oldest) while the producer recycles.

fn attach_races_retire(policy: Policy) {
    const K: u64 = 3;
    model(3, move || {
        let ch = Chan::new(2, 1, policy);
        let (r, sh) = (ch.region, ch.sh());

        let consumer = thread::spawn(move || {
            let (_, tail_before) = r.head_tail();
            let c = Consumer::claim(r, 0, Start::Oldest, &sh.futex).unwrap();
            let start = c.cursor();
            assert!(start >= tail_before, "attached behind the tail");
            let t = drain(&c, sh);
            let first = t.first.expect("the last sample is always retained");
            assert!(first >= start && first >= tail_before);
            if policy == Policy::Block {
                assert_eq!(first, start, "Block: the confirmed cursor is kept");
                assert_eq!(t.lagged, 0, "Block never loses a sample");
            }
            assert_eq!(t.seen + t.lagged, K - start);
            assert_eq!(t.last, Some(K - 1));
        });

        let p = Producer::new(r);
        for _ in 0..K {
            let b = match policy {
                Policy::Block => p.loan(&mut Sleep(&sh.futex)).unwrap(),
                Policy::DropOldest => p
                    .try_loan()
                    .unwrap()
                    .expect("DropOldest with buffers > held must never wait"),
            };
            fill_and_publish(&p, sh, b);
        }
        p.close(&sh.futex);
        consumer.join().unwrap();
    });
}

#[test]
fn attach_races_retire_block() {
    attach_races_retire(Policy::Block);
}

#[test]
fn attach_races_retire_drop_oldest() {
    attach_races_retire(Policy::DropOldest);
}

// ---------------------------------------------------------------------------
// 7. A consumer that died asleep is reclaimed while a new consumer takes its
//    entry and goes to sleep (P1 after a fault, L2 for the newcomer).

/// The dead consumer's sleeper bit is still set (it was killed in `recv`).
/// The reclaim clears it; a newcomer claims the freed entry, sets the same
/// bit and sleeps; the producer publishes once and waits for the newcomer
/// before closing. Were the reclaim to clear the bit after freeing the entry
/// (so possibly after the newcomer set it), the publish would skip the wake
/// and the newcomer would sleep for ever: a loom deadlock.
#[test]
#[allow(clippy::forget_non_drop)]
fn reclaim_of_dead_sleeper_races_newcomer() {
    model(3, || {
        let ch = Chan::new(1, 1, Policy::Block);
        let (r, sh) = (ch.region, ch.sh());
        let dead = Consumer::claim(r, 0, Start::Oldest, &sh.futex).unwrap();
        // It died asleep in `recv`: its bit set, never cleared by itself.
        sh.parts.producer.sleepers[0].fetch_or(1, SeqCst);
        mem::forget(dead);
        assert!(r.consumer_info(0).unwrap().sleeping);

        let reclaimer = thread::spawn(move || {
            let w = r.consumer_word(0).unwrap();
            assert!(reclaim_consumer(&r, 0, w, &sh.futex));
        });
        let newcomer = thread::spawn(move || {
            let c = loop {
                match Consumer::claim(r, 0, Start::Oldest, &sh.futex) {
                    Ok(c) => break c,
                    Err(ProtocolError::EntryBusy) => thread::yield_now(),
                    Err(e) => panic!("claim: {e}"),
                }
            };
            let s = c.recv(&mut Sleep(&sh.futex)).unwrap();
            assert_eq!(s.seq(), 0);
            check(sh, &s);
            c.release(s, &sh.futex);
            c.detach(&sh.futex);
        });
        let p = Producer::new(r);
        let b = p.try_loan().unwrap().expect("one free buffer");
        fill_and_publish(&p, sh, b);
        newcomer.join().unwrap();
        reclaimer.join().unwrap();
        assert!(!r.consumer_info(0).unwrap().sleeping, "no bit left behind");
        p.close(&sh.futex);
    });
}

// ---------------------------------------------------------------------------
// 8. Holds past the entry line (max_held > INLINE_HELD): the consumer's holds
//    live in its run of the hold table, which the producer's retire scans.

/// As `no_lost_wakeup_loan_drop_oldest`, on a channel whose `max_held` (9)
/// puts the holds in the hold table: the consumer keeps sample `kept` in
/// word 0 of its run while it receives the rest through word 1, announcing
/// and withdrawing holds there as the producer retires under it (handshake
/// 1), and the producer sleeps in `loan` on a withdrawn hold (handshake 3).
/// A scan that missed the table would let the producer rewrite `kept`
/// (a causality violation on its payload cell) and one that missed a
/// withdrawal would leave the producer asleep (a deadlock).
#[test]
fn spilled_holds_race_retire() {
    const K: u64 = 3;
    model(3, || {
        let g = bips_core::Geometry {
            max_held: bips_core::INLINE_HELD as u32 + 1,
            ..small(2, 1, Policy::DropOldest)
        };
        let ch = Chan::with_geometry(g);
        let (r, sh) = (ch.region, ch.sh());
        assert!(r.layout().holds_stride > 0, "holds spill to the table");
        let c = Consumer::claim(r, 0, Start::Oldest, &sh.futex).unwrap();
        let consumer = thread::spawn(move || {
            let kept = c.recv(&mut Sleep(&sh.futex)).unwrap();
            check(sh, &kept);
            let t = drain(&c, sh);
            assert_eq!(kept.seq() + 1 + t.seen + t.lagged, K);
            check(sh, &kept); // held throughout: never rewritten
            c.release(kept, &sh.futex);
        });
        let p = Producer::new(r);
        for _ in 0..K {
            let b = p.loan(&mut Sleep(&sh.futex)).unwrap();
            fill_and_publish(&p, sh, b);
        }
        p.close(&sh.futex);
        consumer.join().unwrap();
    });
}
