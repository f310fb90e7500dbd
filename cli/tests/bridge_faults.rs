//! Faults around `bips bridge`, as users meet them: real `bips bridge`
//! processes, producer and consumer processes, real channels in /dev/shm,
//! TCP on 127.0.0.1 only (ports chosen free at run time, scouting off).
//!
//! * The publishing bridge killed (kill -9) and restarted: the source channel
//!   reclaims its consumer entry (L1), the far stream resumes as the same
//!   stream, and every sample nobody carried is reported (the subscribing
//!   bridge's `dropped`), none twice.
//! * The link cut and restored (a TCP relay between the bridges closes every
//!   connection and refuses new ones, then relays again): both bridges keep
//!   running, the stream resumes in order, and what Zenoh lost in flight
//!   (its reliability is per link) is reported, never silent.
//! * The local producer restarting under the publishing bridge: it
//!   re-attaches, the far side sees a new stream.
//! * A stalled far side (the subscribing bridge stopped by SIGSTOP) under
//!   DropOldest: the publishing bridge's memory stays bounded.
//!
//! Each test removes what it made in /dev/shm (checked at the end).

mod bridge_util;

use std::time::{Duration, Instant};

use bips_tests::{spawn, Proc};
use bridge_util::*;

#[test]
fn child() {
    bips_tests::child_entry(&[("producer", producer), ("consumer", consumer)]);
}

/// A `gaps` consumer of `s.dst`, ready.
fn start_gaps_consumer(s: &Setup, full: bool, boundary: u64) -> Proc {
    let mut c = spawn(ENTRY, "consumer")
        .env("BIPS_CH", s.dst.name())
        .env("BIPS_MODE", "gaps")
        .env("BIPS_FULL", full)
        .env("BIPS_BOUNDARY", boundary)
        .start();
    c.expect_line("READY", Duration::from_secs(20));
    c
}

/// A streaming producer of `s.src` (every 2 ms after `go`), ready.
fn start_streamer(s: &Setup, policy: &str, buffers: u32, first: u64) -> Proc {
    start_streamer_early(s, policy, buffers, first, 0)
}

/// The same, but `early` > 0: no `go` awaited, `early` samples published at
/// once (before any consumer is attached), then on once one is.
fn start_streamer_early(s: &Setup, policy: &str, buffers: u32, first: u64, early: u64) -> Proc {
    let mut p = spawn(ENTRY, "producer")
        .env("BIPS_EARLY", early)
        .env("BIPS_CH", s.src.name())
        .env("BIPS_POLICY", policy)
        .env("BIPS_MODE", "stream")
        .env("BIPS_BUFFERS", buffers)
        .env("BIPS_GO", u8::from(early == 0))
        .env("BIPS_FIRST", first)
        .start();
    p.expect_line("READY", Duration::from_secs(20));
    p
}

/// Waits for a `PROGRESS` line of `c` whose `key` is at least `min`.
fn progress(c: &mut Proc, key: &str, min: u64, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no PROGRESS with {key} >= {min}");
        let l = c.expect_line("PROGRESS", left);
        if field(&l, key) >= min {
            return l;
        }
    }
}

/// Stops the producer, lets the consumer receive its last sample, and
/// returns (app sequences sent, the consumer's result).
fn finish(producer: &mut Proc, consumer: &mut Proc) -> (u64, bips_tests::Fields) {
    producer.send("stop");
    let sent = producer.expect_result(Duration::from_secs(20)).u64("sent");
    producer.expect_success(Duration::from_secs(10));
    consumer.send(&format!("stop-at {}", sent - 1));
    let r = consumer.expect_result(Duration::from_secs(90));
    consumer.expect_success(Duration::from_secs(10));
    (sent, r)
}

/// Consumer entries of `ch`: (active, active and dead).
fn entries(ch: &str) -> (usize, usize) {
    let info = bips::monitor::inspect(ch).expect("inspect");
    let active = info.consumers.iter().filter(|c| c.active).count();
    let dead = info
        .consumers
        .iter()
        .filter(|c| c.active && !c.alive)
        .count();
    (active, dead)
}

#[test]
fn publish_side_killed_and_restarted_resumes_and_reports_what_nobody_carried() {
    let s = setup("pubkill");
    let mut producer = start_streamer(&s, "block", 8, 0);
    let mut publish1 = start_publish(&s);
    let subscribe = start_subscribe(&s, "block");
    let mut consumer = start_gaps_consumer(&s, true, u64::MAX);
    producer.send("go");
    let before = progress(&mut consumer, "n", 50, Duration::from_secs(60));
    assert_eq!(entries(s.src.name()), (1, 0), "one live bridge consumer");
    publish1.kill9();
    // L1: the dead bridge's entry is reclaimed; the Block producer is not
    // held by it (it publishes on, with nobody attached).
    let head = bips::monitor::inspect(s.src.name()).unwrap().head;
    let freed = bips_tests::wait_until(Duration::from_secs(20), || {
        let info = bips::monitor::inspect(s.src.name()).unwrap();
        info.head > head + 32 && entries(s.src.name()).1 == 0
    });
    assert!(
        freed,
        "the dead bridge's consumer entry still holds the producer"
    );
    let publish2 = start_publish(&s);
    let n0 = field(&before, "n");
    progress(&mut consumer, "n", n0 + 150, Duration::from_secs(60));
    assert_eq!(entries(s.src.name()), (1, 0), "one live bridge consumer");
    let (sent, r) = finish(&mut producer, &mut consumer);
    let sub = subscribe.interrupt();
    let publ = publish2.interrupt();
    eprintln!("publish-side restart: consumer {r:?}\n{sub}\n{publ}");
    assert_eq!(
        r.u64("last"),
        sent - 1,
        "the last sample must arrive: {r:?}"
    );
    // What the producer published while no bridge was attached never
    // crossed: the consumer sees a gap, and the subscribing bridge reports
    // exactly that many (not silently, and nothing twice: the consumer
    // checked strictly increasing sequences).
    assert!(r.u64("gaps") > 0, "no gap: the restart was not exercised");
    assert_eq!(field(&sub, "dropped"), r.u64("gaps"), "{sub} / {r:?}");
    assert_eq!(r.u64("lagged"), 0, "{r:?}");
    // The restarted bridge continues the same stream.
    assert_eq!(field(&sub, "sessions"), 1, "{sub}");
    assert!(field(&publ, "forwarded") >= 150, "{publ}");
    s.dst.assert_removed();
    s.src.assert_removed();
}

#[test]
fn link_cut_and_restored_resumes_in_order_and_reports_what_was_lost() {
    let s = setup("cut");
    let port = free_port();
    let relay = Relay::start(port);
    let mut producer = start_streamer(&s, "block", 8, 0);
    let mut publish = start_publish_at(&s, &format!("tcp/127.0.0.1:{port}"));
    let mut subscribe = start_subscribe_to(&s, "block", &format!("tcp/127.0.0.1:{}", relay.port));
    let mut consumer = start_gaps_consumer(&s, true, u64::MAX);
    producer.send("go");
    let before = progress(&mut consumer, "n", 100, Duration::from_secs(60));
    assert!(
        relay.bytes() > 100 * 64 * 1024,
        "the stream does not cross the relay"
    );
    relay.cut();
    // Nothing crosses while the link is down, and both bridges keep running.
    std::thread::sleep(Duration::from_millis(300));
    let b = relay.bytes();
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(relay.bytes(), b, "bytes crossed a cut link");
    assert!(
        publish.running(),
        "publish bridge exited: {}",
        publish.log()
    );
    assert!(
        subscribe.running(),
        "subscribe bridge exited: {}",
        subscribe.log()
    );
    relay.restore();
    let n0 = field(&before, "n");
    progress(&mut consumer, "n", n0 + 250, Duration::from_secs(60));
    assert!(relay.bytes() > b, "resumed without the relay?");
    let (sent, r) = finish(&mut producer, &mut consumer);
    assert!(publish.running() && subscribe.running());
    let sub = subscribe.interrupt();
    let publ = publish.interrupt();
    eprintln!("link cut: consumer {r:?}\n{sub}\n{publ}");
    assert_eq!(
        r.u64("last"),
        sent - 1,
        "the last sample must arrive: {r:?}"
    );
    // Zenoh's reliability is per link: samples queued when the link closed
    // may be lost, even with CongestionControl::Block. Order is kept (the
    // consumer checked strictly increasing sequences), and every loss is
    // reported by the subscribing bridge: exactly the consumer's gaps.
    assert_eq!(field(&sub, "dropped"), r.u64("gaps"), "{sub} / {r:?}");
    assert_eq!(field(&sub, "dropped_at_source"), 0, "{sub}");
    assert_eq!(r.u64("lagged"), 0, "{r:?}");
    assert_eq!(
        field(&sub, "sessions"),
        1,
        "one stream across the cut: {sub}"
    );
    assert_eq!(field(&publ, "sessions"), 1, "{publ}");
    s.dst.assert_removed();
    s.src.assert_removed();
}

#[test]
fn producer_restarted_under_the_publishing_bridge_is_reattached() {
    const SECOND: u64 = 1_000_000;
    let s = setup("prodrestart");
    let mut producer1 = start_streamer(&s, "block", 8, 0);
    let mut publish = start_publish(&s);
    let subscribe = start_subscribe(&s, "block");
    let mut consumer = start_gaps_consumer(&s, true, SECOND);
    producer1.send("go");
    progress(&mut consumer, "n", 50, Duration::from_secs(60));
    producer1.kill9();
    // The new producer takes the dead one's name over and publishes 4
    // samples before the bridge notices it (it looks every 50 ms); the
    // bridge opens it at its oldest retained sample, so none is lost.
    let mut producer2 = start_streamer_early(&s, "block", 8, SECOND, 4);
    progress(&mut consumer, "last", SECOND + 100, Duration::from_secs(60));
    assert!(
        publish.running(),
        "publish bridge exited: {}",
        publish.log()
    );
    let (sent, r) = finish(&mut producer2, &mut consumer);
    let sub = subscribe.interrupt();
    let publ = publish.interrupt();
    eprintln!("producer restart: consumer {r:?}\n{sub}\n{publ}");
    assert_eq!(r.u64("last"), sent - 1, "{r:?}");
    assert_eq!(r.u64("sessions"), 2, "{r:?}");
    // Block: nothing lost, the second producer's stream from its first
    // sample (published before the bridge re-attached).
    assert_eq!(r.u64("first_after"), SECOND, "{r:?}");
    assert_eq!(r.u64("gaps"), 0, "{r:?}");
    assert_eq!(field(&sub, "dropped"), 0, "{sub}");
    assert_eq!(field(&sub, "sessions"), 2, "a new stream: {sub}");
    assert_eq!(field(&publ, "sessions"), 2, "re-attached: {publ}");
    s.dst.assert_removed();
    s.src.assert_removed();
}

#[test]
fn stalled_far_side_keeps_the_publishing_bridge_memory_bounded() {
    let s = setup("rss");
    let mut producer = start_streamer(&s, "drop", 4, 0);
    let publish = start_publish(&s);
    let subscribe = start_subscribe(&s, "drop-oldest");
    let mut consumer = start_gaps_consumer(&s, false, u64::MAX);
    producer.send("go");
    let before = progress(&mut consumer, "n", 150, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let (p0, s0) = (publish.rss_kib(), subscribe.rss_kib());
    subscribe.signal(libc::SIGSTOP);
    let stalled = Instant::now();
    let mut p_max = p0;
    while stalled.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(200));
        p_max = p_max.max(publish.rss_kib());
    }
    subscribe.signal(libc::SIGCONT);
    let last0 = field(&before, "last");
    // ~2500 samples (64 KiB each, one per 2 ms) were published during the
    // stall: had the bridge kept them, its RSS would have grown by ~150 MiB.
    let after = progress(&mut consumer, "last", last0 + 1500, Duration::from_secs(60));
    let s1 = subscribe.rss_kib();
    let (sent, r) = finish(&mut producer, &mut consumer);
    let sub = subscribe.interrupt();
    let publ = publish.interrupt();
    eprintln!(
        "stall: publish RSS {p0} -> max {p_max} KiB, subscribe RSS {s0} -> {s1} KiB; \
         {after}; sent {sent}; consumer {r:?}\n{sub}\n{publ}"
    );
    let stalled_kib = (field(&after, "last") - last0) * 64;
    assert!(stalled_kib >= 1500 * 64);
    let bound = 32 * 1024;
    assert!(
        p_max < p0 + bound,
        "publishing bridge grew {} KiB while ~{stalled_kib} KiB went by",
        p_max - p0
    );
    assert!(
        s1 < s0 + bound,
        "subscribing bridge grew {} KiB after the stall",
        s1.saturating_sub(s0)
    );
    // The stall cost samples (latest wins), reported, never silent.
    // Every sample the consumer missed was dropped upstream (the bridge's
    // `dropped`) or skipped in its own channel (its `lagged`).
    assert!(field(&sub, "dropped") > 0, "{sub}");
    assert_eq!(
        r.u64("gaps"),
        field(&sub, "dropped") + r.u64("lagged"),
        "{r:?} / {sub}"
    );
    s.dst.assert_removed();
    s.src.assert_removed();
}
