//! A channel's held-sample limit (`Options::max_held`, 1..=64), the way a
//! batching consumer hits it: a consumer process holds 64 samples at once
//! (batched inference) while the producer keeps publishing (`DropOldest`) or
//! waits for it (`Block`); every held payload stays intact (S1) until it is
//! released; the 65th hold is `Error::HeldLimit { max: 64 }`; a consumer
//! `kill -9`'d while holding 40 is reclaimed (L1); a header whose `max_held`
//! is out of range is refused at open (S3).

use std::time::{Duration, Instant};

use bips::{Backpressure, Consumer, Error, LayoutError, Options, Producer, WaitStrategy};
use bips_tests::*;

const ENTRY: &str = "child_entry";
const BUF_SIZE: usize = 4096;

/// Children of this file start here (a no-op in a normal test run).
#[test]
fn child_entry() {
    bips_tests::child_entry(&[("batcher", batcher_role)]);
}

/// Receives `BIPS_HOLD` samples (seq 0..) and keeps them all, checks that one
/// more is refused with the channel's limit, then on `check` re-verifies
/// every held payload, on `release` drops them and receives the rest until
/// `Disconnected` (strictly increasing, every payload checked). With
/// `BIPS_KEEP=1` it stops after `HOLDING` (to be killed holding them).
fn batcher_role() {
    let name: String = env("BIPS_CHANNEL");
    let tag: u64 = env("BIPS_TAG");
    let hold: u64 = env("BIPS_HOLD");
    let consumer = open_consumer(&name, "park").expect("open");
    let cap = consumer.geometry().buffer_size as usize;
    say(format!("READY max_held={}", consumer.max_held()));
    let mut scratch = Vec::new();
    let mut held = Vec::new();
    for seq in 0..hold {
        let s = consumer
            .recv_timeout(Duration::from_secs(10))
            .expect("recv");
        check_sample(&s, seq, tag, cap, &mut scratch).unwrap();
        held.push(s);
    }
    say(format!("HOLDING {} held={}", held.len(), consumer.held()));
    if env_or("BIPS_KEEP", 0u32) == 1 {
        let _ = read_order(); // killed before any order comes
        drop(held);
        return;
    }
    if hold == u64::from(consumer.max_held()) {
        match consumer.try_recv() {
            Err(e @ Error::HeldLimit { .. }) => say(format!("LIMIT {e}")),
            other => panic!("hold {} of max_held {hold}: {other:?}", hold + 1),
        }
    }
    expect_order("check");
    for (seq, s) in held.iter().enumerate() {
        check_sample(s, seq as u64, tag, cap, &mut scratch)
            .unwrap_or_else(|e| panic!("held sample {seq} changed while held: {e}"));
    }
    say(format!("INTACT {}", held.len()));
    expect_order("release");
    drop(held);
    say("RELEASED");
    let (mut received, mut lagged, mut last) = (hold, 0u64, hold - 1);
    loop {
        match consumer.recv_timeout(Duration::from_secs(10)) {
            Ok(s) => {
                assert!(s.seq() > last, "seq {} after {last}", s.seq());
                assert_eq!(s.seq() - last - 1, s.lagged(), "gap not reported");
                check_sample(&s, s.seq(), tag, cap, &mut scratch).unwrap();
                last = s.seq();
                lagged += s.lagged();
                received += 1;
            }
            Err(Error::Disconnected) => break,
            Err(e) => panic!("recv: {e}"),
        }
    }
    say(format!(
        "RESULT received={received} lagged={lagged} last={last}"
    ));
}

fn start_batcher(ch: &Channel, tag: u64, hold: u32) -> Proc {
    let mut b = spawn(ENTRY, "batcher")
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_TAG", tag)
        .env("BIPS_HOLD", hold)
        .start();
    let ready = b.expect_line("READY", Duration::from_secs(10));
    assert_eq!(
        ready, "READY max_held=64",
        "the consumer sees the channel's limit"
    );
    b
}

/// `DropOldest`, 72 buffers, `max_held` 64: the consumer holds 64 samples
/// while the producer publishes 2,000 more on the 8 buffers left (it never
/// waits: `try_loan` always finds one). Every held payload is intact
/// afterwards, and the released buffers come back to the pool.
#[test]
fn drop_oldest_consumer_holds_64_while_producer_publishes() {
    let _s = serial();
    let ch = Channel::new("held64do");
    let tag = 0x4E1D;
    let opts = Options::new(72, BUF_SIZE)
        .backpressure(Backpressure::DropOldest)
        .max_held(64)
        .max_consumers(2);
    let producer = Producer::create(ch.name(), &opts).expect("create");
    let mut batcher = start_batcher(&ch, tag, 64);
    await_consumers(&producer, 1, Duration::from_secs(5));
    for seq in 0..64 {
        publish_checked(&producer, seq, tag);
    }
    batcher.expect_line("HOLDING 64 held=64", Duration::from_secs(10));
    let limit = batcher.expect_line("LIMIT", Duration::from_secs(5));
    assert!(
        limit.contains("holds 64 samples") && limit.contains("max_held = 64"),
        "the error names the channel's limit: {limit}"
    );
    // 64 buffers held: the producer cycles the 8 others, never waiting.
    let mut seq = 64;
    let mut used = std::collections::BTreeSet::new();
    while seq < 64 + 2_000 {
        let mut s = producer
            .try_loan()
            .expect("try_loan")
            .unwrap_or_else(|| panic!("DropOldest waited at seq {seq} with 8 unheld buffers"));
        used.insert(s.buffer_index());
        write_sample(&mut s, seq, tag);
        assert_eq!(s.publish().expect("publish"), seq);
        seq += 1;
    }
    assert_eq!(used.len(), 8, "only the 8 unheld buffers were rewritten");
    batcher.send("check");
    batcher.expect_line("INTACT 64", Duration::from_secs(10));
    batcher.send("release");
    batcher.expect_line("RELEASED", Duration::from_secs(10));
    // The released buffers are back: 72 distinct ones over the next loans.
    assert!(wait_until(Duration::from_secs(5), || {
        let s = producer.try_loan().unwrap().expect("a buffer");
        used.insert(s.buffer_index());
        let mut s = s;
        write_sample(&mut s, seq, tag);
        s.publish().unwrap();
        seq += 1;
        used.len() == 72
    }));
    drop(producer);
    let r = batcher.expect_result(Duration::from_secs(10));
    assert_eq!(r.u64("last"), seq - 1, "the newest sample is never dropped");
    batcher.expect_success(Duration::from_secs(5));
    ch.assert_removed();
}

/// `Block`, 72 buffers, `max_held` 64: the consumer holds 64; the producer
/// publishes the 8 more the pool allows and then waits (every buffer is held
/// or unread); the release lets it go on, and nothing is lost.
#[test]
fn block_consumer_holds_64_then_releases() {
    let _s = serial();
    let ch = Channel::new("held64bl");
    let tag = 0xB10C;
    let opts = Options::new(72, BUF_SIZE)
        .max_held(64)
        .wait(WaitStrategy::Park);
    let producer = Producer::create(ch.name(), &opts).expect("create");
    let mut batcher = start_batcher(&ch, tag, 64);
    await_consumers(&producer, 1, Duration::from_secs(5));
    for seq in 0..72 {
        publish_checked(&producer, seq, tag);
    }
    batcher.expect_line("HOLDING 64 held=64", Duration::from_secs(10));
    batcher.expect_line("LIMIT", Duration::from_secs(5));
    assert!(
        matches!(
            producer.loan_timeout(Duration::from_millis(200)),
            Err(Error::Timeout)
        ),
        "64 held + 8 unread: the Block producer must wait"
    );
    batcher.send("check");
    batcher.expect_line("INTACT 64", Duration::from_secs(10));
    batcher.send("release");
    let total = 500;
    for seq in 72..total {
        publish_checked(&producer, seq, tag);
    }
    drop(producer);
    let r = batcher.expect_result(Duration::from_secs(20));
    assert_eq!(
        (r.u64("received"), r.u64("lagged"), r.u64("last")),
        (total, 0, total - 1),
        "Block loses nothing"
    );
    batcher.expect_success(Duration::from_secs(5));
    ch.assert_removed();
}

/// A consumer holding 40 of a `max_held` 64 channel is `kill -9`'d while the
/// Block producer waits on it: its 40 holds (in the hold table, past the
/// entry line) are reclaimed, the producer resumes within a second and gets
/// every buffer back, and a new consumer takes the dead one's entry.
#[test]
fn kill9_of_consumer_holding_40_is_reclaimed() {
    let _s = serial();
    let ch = Channel::new("held40k9");
    let tag = 0xDEAD;
    let buffers = 40u32;
    let opts = Options::new(buffers, BUF_SIZE)
        .max_held(64)
        .max_consumers(1)
        .wait(WaitStrategy::Park);
    let producer = Producer::create(ch.name(), &opts).expect("create");
    let mut victim = spawn(ENTRY, "batcher")
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_TAG", tag)
        .env("BIPS_HOLD", 40)
        .env("BIPS_KEEP", 1)
        .start();
    victim.expect_line("READY max_held=64", Duration::from_secs(10));
    await_consumers(&producer, 1, Duration::from_secs(5));
    for seq in 0..u64::from(buffers) {
        publish_checked(&producer, seq, tag);
    }
    victim.expect_line("HOLDING 40 held=40", Duration::from_secs(10));
    assert!(matches!(
        producer.loan_timeout(Duration::from_millis(100)),
        Err(Error::Timeout)
    ));
    let killer = kill_later(victim.pid(), Duration::from_millis(300));
    let s = producer.loan().expect("loan after the consumer died");
    let resumed = Instant::now();
    let killed = killer.join().unwrap();
    let after = resumed.saturating_duration_since(killed);
    assert!(
        after < Duration::from_secs(1),
        "producer resumed {after:?} after the kill -9"
    );
    victim.wait_exit(Duration::from_secs(5));
    drop(s);
    assert_eq!(producer.consumer_count(), 0);
    // All 40 buffers are back: with no consumer the pool cycles whole.
    let mut seen = std::collections::BTreeSet::new();
    let mut seq = u64::from(buffers);
    for _ in 0..3 * buffers {
        let mut s = producer
            .loan_timeout(Duration::from_secs(2))
            .expect("every buffer back");
        seen.insert(s.buffer_index());
        write_sample(&mut s, seq, tag);
        assert_eq!(s.publish().expect("publish"), seq);
        seq += 1;
    }
    assert_eq!(seen.len(), buffers as usize);
    // The dead consumer's entry (the only one) is free for a newcomer, which
    // starts with no holds: it may hold 64 again.
    let c = open_consumer(ch.name(), "park").expect("reuse the reclaimed entry");
    assert_eq!((c.max_held(), c.held()), (64, 0));
    let first = c.recv_timeout(Duration::from_secs(5)).expect("recv");
    assert_eq!(
        first.seq(),
        u64::from(buffers) * 3,
        "Start::Oldest: the oldest retained"
    );
    drop(first);
    publish_checked(&producer, seq, tag);
    let got = loop {
        let s = c.recv_timeout(Duration::from_secs(5)).expect("recv");
        if s.seq() == seq {
            break s;
        }
    };
    let mut scratch = Vec::new();
    check_sample(&got, seq, tag, BUF_SIZE, &mut scratch).unwrap();
    drop(got);
    drop(c);
    drop(producer);
    ch.assert_removed();
}

/// A header whose `max_held` is 0, 65 or huge is refused at open with a
/// typed error naming the field; one that moves 128 consumers' holds into a
/// 64 KiB table (8 -> 64) no longer matches the segment's size. Restored,
/// the channel opens.
#[test]
fn corrupt_max_held_in_header_is_refused_at_open() {
    let ch = Channel::new("heldhdr");
    // 128 consumers: spilling 64 holds each into a table (64 KiB) moves the
    // data region on every page size up to 64 KiB, so the stored total_size
    // no longer matches (a small table can hide in the alignment padding:
    // docs/ARCHITECTURE.md, "The held-sample limit").
    let producer =
        Producer::create(ch.name(), &Options::new(2, 64).max_consumers(128)).expect("create");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(ch.path())
        .expect("open the segment");
    // One page of this system (64 KiB on some aarch64 kernels: a 4096-byte
    // munmap there is refused, the mapping would stay).
    // SAFETY: sysconf has no preconditions.
    let len = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).expect("page size");
    // SAFETY: a fresh shared mapping of the segment's first page (the
    // header), unmapped below; its words are accessed only atomically.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    let off = std::mem::offset_of!(bips_core::layout::Header, max_held);
    // SAFETY: `off` is a 4-aligned word of the mapped header page.
    let word = unsafe { &*(p.cast::<u8>().add(off) as *const std::sync::atomic::AtomicU32) };
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(word.load(Relaxed), 8, "the default channel's max_held");
    for bad in [0u32, 65, u32::MAX] {
        word.store(bad, Relaxed);
        match Consumer::open(ch.name()) {
            Err(Error::Layout {
                name,
                source: LayoutError::OutOfRange { field, value },
            }) => {
                assert_eq!(
                    (name.as_str(), field, value),
                    (ch.name(), "max_held", bad.into())
                );
            }
            other => panic!("max_held {bad}: {other:?}"),
        }
    }
    word.store(64, Relaxed);
    match Consumer::open(ch.name()) {
        Err(
            e @ Error::Layout {
                source:
                    LayoutError::Inconsistent {
                        field: "total_size",
                    },
                ..
            },
        ) => assert!(e.to_string().contains("total_size"), "{e}"),
        other => panic!("max_held 64 on an 8-hold segment: {other:?}"),
    }
    word.store(8, Relaxed);
    let c = Consumer::open(ch.name()).expect("restored header opens");
    assert_eq!(c.max_held(), 8);
    drop(c);
    // SAFETY: the mapping made above, no longer used (`word` is dead).
    unsafe { libc::munmap(p, len) };
    drop(producer);
    ch.assert_removed();
}

/// The producer refuses a `max_held` outside 1..=64 with a typed error.
#[test]
fn max_held_out_of_range_is_invalid_options() {
    let ch = Channel::new("heldopt");
    for bad in [0u32, 65, 1000] {
        match Producer::create(ch.name(), &Options::new(2, 64).max_held(bad)) {
            Err(Error::InvalidOptions(msg)) => {
                assert!(
                    msg.contains("max_held") && msg.contains(&bad.to_string()),
                    "{msg}"
                )
            }
            other => panic!("max_held {bad}: {other:?}"),
        }
    }
    assert!(!ch.exists());
}
