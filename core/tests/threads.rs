//! Multi-threaded protocol tests over a raw heap region formatted exactly like a
//! shared-memory segment; threads stand in for processes.
//!
//! Payload bytes are real: the producer writes a pattern derived from the
//! sequence number into the buffer (`Region::buffer_ptr`) and its metadata
//! (`Region::meta_ptr`) with plain, non-atomic writes, and every consumer checks
//! every byte of every sample it receives (S1/S2) and the order of sequences
//! (S4). Under Miri a producer that rewrote a held buffer, or a publication
//! that did not synchronise with the consumer, is reported as a data race.
//!
//! Natively the counts are large; under Miri (`cfg!(miri)`) they are tiny:
//!
//! ```text
//! MIRIFLAGS="-Zmiri-many-seeds=0..8 -Zmiri-permissive-provenance" \
//!   cargo +nightly miri test -p bips-core --target-dir target/miri --test threads
//! ```
//!
//! Every waiting party polls with [`Spin`] (wrapped in [`Poll`], which also
//! yields the CPU natively) and every waker is [`NoWake`]: core has no futex of
//! its own.
#![cfg(not(loom))] // loom builds only tests/loom.rs
mod common;

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bips_core::{
    reclaim_consumer, Consumer, Geometry, NoWake, Policy, Producer, ProtocolError, Received,
    Region, Spin, Start, Wait,
};
use common::RawRegion;

/// Bytes of user metadata per sample: the sequence and its complement.
const META: usize = 16;
/// Largest buffer used here (native); Miri uses 64-byte buffers.
const MAX_SIZE: usize = 256;

/// `miri` under Miri, `native` otherwise.
fn count(miri: u64, native: u64) -> u64 {
    if cfg!(miri) {
        miri
    } else {
        native
    }
}

/// [`Spin`] with two additions for tests. Natively it also yields the CPU
/// every few polls: this machine may have two cores for five spinning threads,
/// where pure spinning wastes whole time slices. And it gives up (so `recv` or
/// `loan` fails with `TimedOut`) after [`PATIENCE`] without progress natively,
/// or [`MIRI_POLLS`] polls under Miri: when one party of a test panics, the
/// others would otherwise spin forever and hide the failure (a scoped thread's
/// panic is reported only when the scope ends). It never sleeps, so, like
/// `Spin`, it is not counted as a sleeper and needs no wake.
struct Poll {
    spin: Spin,
    polls: u64,
    since: Option<Instant>,
}

/// How long a native wait may last before the test is declared hung.
const PATIENCE: Duration = Duration::from_secs(20);
/// How many polls a wait may take under Miri before the test is declared hung
/// (each poll is a scheduling point there; the longest healthy wait seen
/// took ~420 polls).
const MIRI_POLLS: u64 = 20_000;

impl Poll {
    fn new() -> Poll {
        Poll {
            spin: Spin::new(),
            polls: 0,
            since: None,
        }
    }

    /// One poll: `false` once patience is exhausted.
    fn poll(&mut self) -> bool {
        self.polls += 1;
        if cfg!(miri) {
            return self.polls < MIRI_POLLS;
        }
        if self.polls % 8 == 0 {
            thread::yield_now();
        }
        if self.polls % 1024 == 0 {
            return self.since.get_or_insert_with(Instant::now).elapsed() < PATIENCE;
        }
        true
    }
}

impl Wait for Poll {
    fn sleeps(&self) -> bool {
        false
    }

    fn wait(&mut self, word: &AtomicU32, expected: u32) -> bool {
        self.spin.wait(word, expected) && self.poll()
    }
}

/// Spins (with the same patience as [`Poll`]) until `done()`; panics if it
/// never happens.
fn spin_until(what: &str, mut done: impl FnMut() -> bool) {
    let mut poll = Poll::new();
    while !done() {
        std::hint::spin_loop();
        assert!(poll.poll(), "gave up waiting for {what}");
    }
}

fn geometry(buffers: u32, consumers: u32, policy: Policy) -> Geometry {
    Geometry {
        buffer_count: buffers,
        buffer_size: if cfg!(miri) { 64 } else { MAX_SIZE as u64 },
        alignment: 64,
        ring_capacity: buffers.next_power_of_two(),
        max_consumers: consumers,
        meta_size: META as u32,
        policy,
        max_held: bips_core::MAX_HELD as u32,
    }
}

/// Payload length of sample `seq`: mostly full buffers, some shorter.
fn len_of(r: &Region<'_>, seq: u64) -> u64 {
    r.geometry().buffer_size - seq % 8
}

fn timestamp_of(seq: u64) -> u64 {
    seq.wrapping_mul(3).wrapping_add(7)
}

/// The first `len` payload bytes of sample `seq` (a prefix of the same stream
/// for every length).
fn pattern(seq: u64, len: usize) -> [u8; MAX_SIZE] {
    let mut out = [0u8; MAX_SIZE];
    let mut x = seq.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for (i, b) in out[..len].iter_mut().enumerate() {
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9).wrapping_add(i as u64);
        *b = (x >> 56) as u8;
    }
    out
}

fn meta_of(seq: u64) -> [u8; META] {
    let mut m = [0u8; META];
    m[..8].copy_from_slice(&seq.to_le_bytes());
    m[8..].copy_from_slice(&(!seq).to_le_bytes());
    m
}

/// Writes sample `seq` into loaned buffer `buf` (payload and metadata) and
/// publishes it.
fn produce_one(p: &Producer<'_>, buf: u32, seq: u64) {
    let r = p.region();
    let len = len_of(r, seq) as usize;
    let data = pattern(seq, len);
    let meta = meta_of(seq);
    // SAFETY: `buf` is loaned to us: no consumer reads it until it is
    // published; `buffer_ptr`/`meta_ptr` point to `buffer_size` >= `len` and
    // `meta_size` == META bytes inside the region.
    unsafe {
        std::ptr::copy_nonoverlapping(data.as_ptr(), r.buffer_ptr(buf), len);
        std::ptr::copy_nonoverlapping(meta.as_ptr(), r.meta_ptr(buf), META);
    }
    let got = p.publish(buf, len as u64, timestamp_of(seq), &NoWake);
    assert_eq!(got, Ok(seq), "publish of sample {seq}");
}

/// Loans (spinning) and publishes samples `0..n`, then closes the channel.
fn produce(p: &Producer<'_>, n: u64) {
    for seq in 0..n {
        assert_eq!(p.next_seq(), seq);
        let buf = p.loan(&mut Poll::new()).expect("loan");
        produce_one(p, buf, seq);
    }
    p.close(&NoWake);
}

/// Checks every byte of a held sample against what the producer wrote.
fn verify(r: &Region<'_>, s: &Received, who: &str) {
    let seq = s.seq();
    assert!(
        s.buffer() < r.geometry().buffer_count,
        "{who}: buffer index"
    );
    assert_eq!(s.len(), len_of(r, seq), "{who}: length of sample {seq}");
    assert_eq!(
        s.timestamp(),
        timestamp_of(seq),
        "{who}: timestamp of {seq}"
    );
    // SAFETY: the sample is held, so the producer does not write its buffer
    // (S1); `len <= buffer_size` and META == meta_size bytes are in the region.
    let (data, meta) = unsafe {
        (
            std::slice::from_raw_parts(r.buffer_ptr(s.buffer()), s.len() as usize),
            std::slice::from_raw_parts(r.meta_ptr(s.buffer()), META),
        )
    };
    assert!(
        data == &pattern(seq, data.len())[..data.len()],
        "{who}: payload of sample {seq} (buffer {}) torn or stale",
        s.buffer()
    );
    assert_eq!(meta, meta_of(seq), "{who}: metadata of sample {seq}");
}

/// What one consumer saw.
#[derive(Debug, Default)]
struct Tally {
    received: u64,
    lost: u64,
    first: Option<u64>,
    last: Option<u64>,
}

/// Checks the order of a new sample against the cursor before it: strictly
/// increasing, and the gap is exactly the reported lag (S4).
fn check_order(expected: &mut u64, s: &Received, lossless: bool, who: &str, t: &mut Tally) {
    assert_eq!(
        s.seq(),
        *expected + s.lagged(),
        "{who}: gap after {} is not the reported lag {}",
        *expected,
        s.lagged()
    );
    if lossless {
        assert_eq!(s.lagged(), 0, "{who}: lost samples under Block");
    }
    *expected = s.seq() + 1;
    t.received += 1;
    t.lost += s.lagged();
    t.first.get_or_insert(s.seq());
    t.last = Some(s.seq());
}

/// Receives (spinning) until `Disconnected`, verifying each sample, releasing
/// it at once.
fn consume_all(c: &Consumer<'_>, lossless: bool, who: &str) -> Tally {
    let r = *c.region();
    let mut expected = c.cursor();
    let mut t = Tally::default();
    loop {
        match c.recv(&mut Poll::new()) {
            Ok(s) => {
                check_order(&mut expected, &s, lossless, who, &mut t);
                verify(&r, &s, who);
                c.release(s, &NoWake);
            }
            Err(ProtocolError::Disconnected) => break,
            Err(e) => panic!("{who}: recv failed: {e}"),
        }
    }
    assert_eq!(
        c.try_recv(),
        Err(ProtocolError::Disconnected),
        "{who}: disconnect is sticky"
    );
    t
}

/// A small deterministic generator (xorshift) for hold patterns.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn block_one_to_n(consumers: u32) {
    let n = count(16, 20_000);
    let (raw, _) = RawRegion::formatted(geometry(4, consumers, Policy::Block));
    let r = raw.region();
    let p = Producer::new(r);
    let cs: Vec<_> = (0..consumers)
        .map(|i| Consumer::claim(r, i, Start::Oldest, &NoWake).unwrap())
        .collect();
    let tallies = thread::scope(|sc| {
        let handles: Vec<_> = cs
            .into_iter()
            .map(|c| sc.spawn(move || consume_all(&c, true, &format!("consumer {}", c.index()))))
            .collect();
        sc.spawn(move || produce(&p, n));
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    for t in tallies {
        assert_eq!(
            (t.received, t.lost, t.first, t.last),
            (n, 0, Some(0), Some(n - 1))
        );
    }
}

#[test]
fn block_one_to_one_lossless_in_order() {
    block_one_to_n(1);
}

#[test]
fn block_one_to_many_lossless_in_order() {
    block_one_to_n(if cfg!(miri) { 3 } else { 4 });
}

/// DropOldest, one fast consumer and one deliberately slow one that keeps up to
/// three samples held while the producer laps it. Held buffers are checked again
/// just before release: the producer never rewrote them (S1).
#[test]
fn drop_oldest_slow_consumer_holds_and_lags() {
    let n = count(28, 20_000);
    let buffers = 6;
    let (raw, _) = RawRegion::formatted(geometry(buffers, 2, Policy::DropOldest));
    let r = raw.region();
    let p = Producer::new(r);
    let fast = Consumer::claim(r, 0, Start::Oldest, &NoWake).unwrap();
    let slow = Consumer::claim(r, 1, Start::Oldest, &NoWake).unwrap();
    let (fast_t, slow_t) = thread::scope(|sc| {
        let f = sc.spawn(move || consume_all(&fast, false, "fast"));
        let s = sc.spawn(move || {
            let mut held: VecDeque<Received> = VecDeque::new();
            let mut expected = slow.cursor();
            let mut t = Tally::default();
            loop {
                match slow.recv(&mut Poll::new()) {
                    Ok(s) => {
                        check_order(&mut expected, &s, false, "slow", &mut t);
                        verify(&r, &s, "slow");
                        // Dawdle until the producer is well ahead, so samples
                        // are recycled under us (or the channel closes).
                        let target = s.seq() + 2 * u64::from(buffers);
                        spin_until("the producer to lap the slow consumer", || {
                            r.head_tail().0 >= target || r.is_closed()
                        });
                        held.push_back(s);
                        if held.len() == 3 {
                            let old = held.pop_front().unwrap();
                            verify(&r, &old, "slow (before release)");
                            slow.release(old, &NoWake);
                        }
                    }
                    Err(ProtocolError::Disconnected) => break,
                    Err(e) => panic!("slow: {e}"),
                }
            }
            for old in held.drain(..) {
                verify(&r, &old, "slow (before release)");
                slow.release(old, &NoWake);
            }
            t
        });
        sc.spawn(move || produce(&p, n));
        (f.join().unwrap(), s.join().unwrap())
    });
    for (t, idx) in [(&fast_t, 0), (&slow_t, 1)] {
        // Everything is either received or reported lost, and the newest
        // sample is never recycled (the producer stopped).
        assert_eq!(t.received + t.lost, n, "{t:?}");
        assert_eq!(t.last, Some(n - 1), "{t:?}");
        let info = r.consumer_info(idx).unwrap();
        assert_eq!(
            (info.received, info.lost, info.held),
            (t.received, t.lost, 0)
        );
    }
    assert!(slow_t.lost > 0, "the slow consumer was lapped: {slow_t:?}");
}

/// One consumer holds a changing number of samples (1 to 6 of MAX_HELD = 8,
/// with 8 buffers) across the producer's progress and releases them in a
/// scrambled order, checking each again first; another reads normally.
fn out_of_order_release(policy: Policy) {
    let n = count(20, 20_000);
    let lossless = policy == Policy::Block;
    let (raw, _) = RawRegion::formatted(geometry(8, 2, policy));
    let r = raw.region();
    let p = Producer::new(r);
    let holder = Consumer::claim(r, 0, Start::Oldest, &NoWake).unwrap();
    let plain = Consumer::claim(r, 1, Start::Oldest, &NoWake).unwrap();
    let (ht, pt) = thread::scope(|sc| {
        let h = sc.spawn(move || {
            let mut rng = Rng(0x2545_F491_4F6C_DD1D);
            let mut held: Vec<Received> = Vec::new();
            let mut expected = holder.cursor();
            let mut t = Tally::default();
            let mut want = 1 + rng.below(6) as usize;
            let mut idle = Poll::new();
            loop {
                // Holds are given back only when `want` is reached, never
                // because nothing is arriving: they stay held while the
                // producer moves on and recycles around them.
                if held.len() >= want {
                    let s = held.swap_remove(rng.below(held.len() as u64) as usize);
                    verify(&r, &s, "holder (before release)");
                    holder.release(s, &NoWake);
                    want = 1 + rng.below(6) as usize;
                    continue;
                }
                match holder.try_recv() {
                    Ok(Some(s)) => {
                        check_order(&mut expected, &s, lossless, "holder", &mut t);
                        verify(&r, &s, "holder");
                        held.push(s);
                        idle = Poll::new();
                    }
                    Ok(None) => assert!(idle.poll(), "holder: gave up waiting for a sample"),
                    Err(ProtocolError::Disconnected) => break,
                    Err(e) => panic!("holder: {e}"),
                }
            }
            // Drained: give the rest back in a scrambled order.
            while !held.is_empty() {
                let s = held.swap_remove(rng.below(held.len() as u64) as usize);
                verify(&r, &s, "holder (before release)");
                holder.release(s, &NoWake);
            }
            t
        });
        let q = sc.spawn(move || consume_all(&plain, lossless, "plain"));
        sc.spawn(move || produce(&p, n));
        (h.join().unwrap(), q.join().unwrap())
    });
    for t in [&ht, &pt] {
        assert_eq!(t.received + t.lost, n, "{t:?}");
        assert_eq!(t.last, Some(n - 1), "{t:?}");
        if lossless {
            assert_eq!(t.received, n);
        }
    }
}

#[test]
fn block_out_of_order_release_of_held_samples() {
    out_of_order_release(Policy::Block);
}

#[test]
fn drop_oldest_out_of_order_release_of_held_samples() {
    out_of_order_release(Policy::DropOldest);
}

/// Consumers claim, read a few samples, detach and claim again (Oldest, Newest,
/// Next in turn) while the producer runs. The first sample after a claim is
/// the claimed cursor (plus the reported lag under DropOldest), then the
/// order is strict.
fn attach_while_running(policy: Policy) {
    let n = count(20, 20_000);
    let lossless = policy == Policy::Block;
    let (raw, _) = RawRegion::formatted(geometry(4, 2, policy));
    let r = raw.region();
    let p = Producer::new(r);
    let attach_loop = move |idx: u32| {
        let starts = [Start::Oldest, Start::Newest, Start::Next];
        let per_claim = count(4, 300);
        let mut claims = 0u64;
        let mut t = Tally::default();
        for round in 0.. {
            let start = starts[round % starts.len()];
            let c = Consumer::claim(r, idx, start, &NoWake).expect("claim");
            claims += 1;
            let mut expected = c.cursor();
            let (head, tail) = r.head_tail();
            // The cursor is a published sample or the next one...
            assert!(
                expected <= head,
                "{start:?}: cursor {expected} beyond head {head}"
            );
            // ...that, under Block, nothing can recycle while we are attached.
            if lossless {
                assert!(
                    tail <= expected,
                    "{start:?}: cursor {expected} behind tail {tail}"
                );
            }
            let mut got = None;
            let who = format!("entry {idx} ({start:?})");
            for _ in 0..per_claim {
                match c.recv(&mut Poll::new()) {
                    Ok(s) => {
                        check_order(&mut expected, &s, lossless, &who, &mut t);
                        verify(&r, &s, &who);
                        got = Some(s.seq());
                        c.release(s, &NoWake);
                    }
                    Err(ProtocolError::Disconnected) => {
                        c.detach(&NoWake);
                        // Oldest and Newest always find the last sample
                        // (it is retained); Next may start past it.
                        if start != Start::Next {
                            assert_eq!(got, Some(n - 1), "{start:?}: drained to the end");
                        }
                        return (claims, t);
                    }
                    Err(e) => panic!("entry {idx}: {e}"),
                }
            }
            c.detach(&NoWake);
        }
        unreachable!()
    };
    let results = thread::scope(|sc| {
        let a = sc.spawn(move || attach_loop(0));
        let b = sc.spawn(move || attach_loop(1));
        sc.spawn(move || produce(&p, n));
        [a.join().unwrap(), b.join().unwrap()]
    });
    for (claims, t) in results {
        assert!(claims >= 1, "{t:?}");
    }
    for idx in 0..2 {
        assert!(!r.consumer_info(idx).unwrap().active, "detached");
    }
}

#[test]
fn block_consumers_attach_and_detach_while_producer_runs() {
    attach_while_running(Policy::Block);
}

#[test]
fn drop_oldest_consumers_attach_and_detach_while_producer_runs() {
    attach_while_running(Policy::DropOldest);
}

/// A consumer "dies" (`mem::forget`) holding two samples; a reclaimer that has
/// proven its death (here: a flag) frees its entry while the producer runs.
/// Under Block the producer is stuck on the dead consumer until then.
fn reclaim_dead_consumer(policy: Policy) {
    let n = count(16, 20_000);
    let buffers = 4u32;
    let lossless = policy == Policy::Block;
    let (raw, _) = RawRegion::formatted(geometry(buffers, 3, policy));
    let r = raw.region();
    let p = Producer::new(r);
    let live = Consumer::claim(r, 0, Start::Oldest, &NoWake).unwrap();
    let doomed = Consumer::claim(r, 1, Start::Oldest, &NoWake).unwrap();
    let dead = AtomicBool::new(false);
    let reclaimed = AtomicBool::new(false);
    let (dead, reclaimed) = (&dead, &reclaimed);
    let (live_t, after_reclaim, successor) = thread::scope(|sc| {
        let l = sc.spawn(move || consume_all(&live, lossless, "live"));
        sc.spawn(move || {
            let a = doomed.recv(&mut Poll::new()).unwrap();
            let b = doomed.recv(&mut Poll::new()).unwrap();
            verify(&r, &a, "doomed");
            verify(&r, &b, "doomed");
            assert_eq!(b.seq(), a.seq() + 1 + b.lagged());
            // Dies holding both samples: neither released nor detached.
            // (`Consumer` and `Received` have no `Drop`: like a crash, going
            // out of scope gives nothing back; no `mem::forget` needed.)
            let _crashed = (doomed, a, b);
            dead.store(true, Ordering::Release);
        });
        let reclaimer = sc.spawn(move || {
            spin_until("the doomed consumer to die", || {
                dead.load(Ordering::Acquire)
            });
            let w = r.consumer_word(1).unwrap();
            assert!(r.consumer_info(1).unwrap().active);
            assert!(
                reclaim_consumer(&r, 1, w, &NoWake),
                "reclaim frees the entry"
            );
            assert!(!reclaim_consumer(&r, 1, w, &NoWake), "idempotent");
            reclaimed.store(true, Ordering::Release);
            // The entry is free for a new consumer; a stale reclaim (same
            // observed word) must not touch it.
            let c = Consumer::claim(r, 1, Start::Newest, &NoWake).expect("re-claim");
            assert_ne!(r.consumer_word(1).unwrap(), w, "generation bumped");
            assert!(!reclaim_consumer(&r, 1, w, &NoWake), "stale word");
            assert!(r.consumer_info(1).unwrap().active);
            consume_all(&c, lossless, "successor")
        });
        let prod = sc.spawn(move || {
            // Keep going until the reclaimed buffers were handed out again.
            let mut after: BTreeSet<u32> = BTreeSet::new();
            let mut seq = 0;
            while seq < n || after.len() < buffers as usize {
                assert!(seq < 100 * n, "reclaimed buffers never reused: {after:?}");
                let seen = reclaimed.load(Ordering::Acquire);
                let buf = p.loan(&mut Poll::new()).expect("loan");
                if seen {
                    after.insert(buf);
                }
                produce_one(&p, buf, seq);
                seq += 1;
            }
            p.close(&NoWake);
            after
        });
        (
            l.join().unwrap(),
            prod.join().unwrap(),
            reclaimer.join().unwrap(),
        )
    });
    assert_eq!(
        after_reclaim.len(),
        buffers as usize,
        "all buffers back in use"
    );
    let total = live_t.last.unwrap() + 1;
    assert!(total >= n);
    assert_eq!(live_t.received + live_t.lost, total, "{live_t:?}");
    assert_eq!(successor.last, Some(total - 1), "{successor:?}");
}

#[test]
fn block_reclaim_dead_consumer_while_producer_runs() {
    reclaim_dead_consumer(Policy::Block);
}

#[test]
fn drop_oldest_reclaim_dead_consumer_while_producer_runs() {
    reclaim_dead_consumer(Policy::DropOldest);
}

/// Consumers spin in `recv` while the producer publishes and closes: each
/// drains every remaining sample, then gets `Disconnected`. A consumer that
/// claims after the close still drains what is retained.
#[test]
fn close_drains_remaining_then_disconnects() {
    let n = count(8, 5_000);
    for policy in [Policy::Block, Policy::DropOldest] {
        let lossless = policy == Policy::Block;
        let (raw, _) = RawRegion::formatted(geometry(4, 3, policy));
        let r = raw.region();
        let p = Producer::new(r);
        let a = Consumer::claim(r, 0, Start::Oldest, &NoWake).unwrap();
        let b = Consumer::claim(r, 1, Start::Oldest, &NoWake).unwrap();
        let published = AtomicU32::new(0);
        let published = &published;
        let tallies = thread::scope(|sc| {
            let ha = sc.spawn(move || consume_all(&a, lossless, "a"));
            let hb = sc.spawn(move || {
                // Stays away while the producer runs (under Block: until
                // every buffer waits for it), then drains.
                spin_until("the producer to fill the buffers or finish", || {
                    published.load(Ordering::Acquire) != 0 || (lossless && r.head_tail().0 >= 4)
                });
                consume_all(&b, lossless, "b")
            });
            sc.spawn(move || {
                produce(&p, n);
                published.store(1, Ordering::Release);
            });
            [ha.join().unwrap(), hb.join().unwrap()]
        });
        for t in &tallies {
            assert_eq!(t.received + t.lost, n, "{policy:?} {t:?}");
            assert_eq!(t.last, Some(n - 1), "{policy:?} {t:?}");
        }
        // Late consumer: the retained samples, in order, then Disconnected.
        let late = Consumer::claim(r, 2, Start::Oldest, &NoWake).unwrap();
        let (head, tail) = r.head_tail();
        assert_eq!((head, late.cursor()), (n, tail));
        let t = consume_all(&late, lossless, "late");
        assert_eq!((t.received, t.lost, t.last), (n - tail, 0, Some(n - 1)));
        assert!(t.received >= 1 && t.received <= 4);
    }
}

/// Nothing is ever published: a consumer spinning in `recv` gets
/// `Disconnected` when a third party (one that proved the producer dead)
/// closes the channel.
#[test]
fn close_by_third_party_wakes_idle_spinning_consumer() {
    let (raw, _) = RawRegion::formatted(geometry(2, 2, Policy::Block));
    let r = raw.region();
    let _producer = Producer::new(r);
    let c = Consumer::claim(r, 0, Start::Next, &NoWake).unwrap();
    thread::scope(|sc| {
        let h = sc.spawn(move || c.recv(&mut Poll::new()));
        sc.spawn(move || {
            for _ in 0..count(3, 1_000) {
                thread::yield_now();
            }
            r.close(&NoWake);
        });
        assert_eq!(h.join().unwrap(), Err(ProtocolError::Disconnected));
    });
}
