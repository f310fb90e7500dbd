//! `bips bridge publish` -> Zenoh over TCP on 127.0.0.1 -> `bips bridge
//! subscribe`, as users run it: the built `bips` binary (feature `bridge`),
//! a producer process on one side and a consumer process on the other, real
//! channels in /dev/shm. Every endpoint is 127.0.0.1 on a port chosen free at
//! run time, and scouting is off (endpoints given): no multicast, no traffic
//! off this machine.
//!
//! * Block: 1000 checked 64 KiB samples arrive in order, with metadata,
//!   descriptor and timestamp intact.
//! * DropOldest with a slow consumer: the producer is not stalled, the
//!   subscribing bridge reports drops, and every lost sample is accounted for.
//! * kill -9 of the subscribing bridge, restarted: the stream resumes.
//!
//! Each test removes what it made in /dev/shm (checked at the end).

mod bridge_util;

use std::process::Command;
use std::time::Duration;

use bips_tests::{spawn, Channel};
use bridge_util::*;

#[test]
fn child() {
    bips_tests::child_entry(&[("producer", producer), ("consumer", consumer)]);
}

#[test]
fn block_carries_1000_checked_samples_in_order() {
    let s = setup("block");
    let mut producer = start_producer(&s, "block", "count", 4, 1000);
    let publish = start_publish(&s);
    let subscribe = start_subscribe(&s, "block");
    let mut consumer = spawn(ENTRY, "consumer")
        .env("BIPS_CH", s.dst.name())
        .env("BIPS_MODE", "block")
        .env("BIPS_COUNT", 1000)
        .start();
    consumer.expect_line("READY", Duration::from_secs(20));
    producer.send("go");
    let r = consumer.expect_result(Duration::from_secs(120));
    assert_eq!(r.u64("received"), 1000);
    assert_eq!((r.u64("first"), r.u64("last")), (0, 999));
    consumer.expect_success(Duration::from_secs(10));
    producer.expect_result(Duration::from_secs(10));
    producer.send("exit");
    producer.expect_success(Duration::from_secs(10));
    let sub = subscribe.interrupt();
    assert_eq!(field(&sub, "forwarded"), 1000, "{sub}");
    assert_eq!(field(&sub, "dropped"), 0, "{sub}");
    // One stream: the source's last sample was not sent again when its
    // producer left.
    assert_eq!(field(&sub, "sessions"), 1, "{sub}");
    let publ = publish.interrupt();
    assert_eq!(field(&publ, "forwarded"), 1000, "{publ}");
    s.dst.assert_removed();
    s.src.assert_removed();
}

#[test]
fn drop_oldest_with_a_slow_consumer_reports_drops_instead_of_stalling() {
    let s = setup("drop");
    const BURST: u64 = 2000;
    // 2 buffers at the source: the publishing bridge cannot keep up with a
    // producer that only stamps a header, so it skips samples (DropOldest).
    let mut producer = start_producer(&s, "drop", "warm", 2, BURST);
    let publish = start_publish(&s);
    let subscribe = start_subscribe(&s, "drop-oldest");
    let mut consumer = spawn(ENTRY, "consumer")
        .env("BIPS_CH", s.dst.name())
        .env("BIPS_MODE", "slow")
        .start();
    consumer.expect_line("READY", Duration::from_secs(20));
    // Warm-up samples (one per 20 ms) reach the consumer: the route is up.
    consumer.expect_line("FIRST", Duration::from_secs(30));
    producer.send("go");
    let p = producer.expect_result(Duration::from_secs(60));
    let sent = p.u64("sent");
    // 5 ms per sample: carried losslessly the burst would take 10 s.
    assert!(
        p.u64("ms") < 5000,
        "the producer was stalled by the slow consumer: {p:?}"
    );
    let r = consumer.expect_result(Duration::from_secs(60));
    consumer.expect_success(Duration::from_secs(10));
    producer.send("exit");
    producer.expect_success(Duration::from_secs(10));
    let sub = subscribe.interrupt();
    let publ = publish.interrupt();
    let (received, lagged, first) = (r.u64("received"), r.u64("lagged"), r.u64("first"));
    let dropped = field(&sub, "dropped");
    eprintln!("drop-oldest: producer {p:?}\nconsumer {r:?}\n{sub}\n{publ}");
    assert_eq!(
        r.u64("last"),
        sent - 1,
        "the last sample must arrive: {r:?}"
    );
    assert!(
        dropped > 0,
        "the subscribing bridge reported no drops: {sub} / {publ}"
    );
    assert_eq!(field(&sub, "sessions"), 1, "{sub}");
    // Every sample from the consumer's first on is received, skipped by the
    // consumer (lagged) or counted as dropped upstream by the bridge.
    let accounted = received + lagged + dropped;
    assert!(
        accounted >= sent - first && accounted <= sent,
        "received {received} + lagged {lagged} + dropped {dropped} = {accounted}, \
         expected between {} and {sent} (first {first}); {sub}",
        sent - first
    );
    s.dst.assert_removed();
    s.src.assert_removed();
}

#[test]
fn subscribe_side_killed_and_restarted_resumes_the_stream() {
    let s = setup("restart");
    let mut producer = start_producer(&s, "block", "stream", 8, 0);
    let publish = start_publish(&s);
    let mut sub1 = start_subscribe(&s, "block");
    let mut consumer = spawn(ENTRY, "consumer")
        .env("BIPS_CH", s.dst.name())
        .env("BIPS_MODE", "resume")
        .start();
    consumer.expect_line("READY", Duration::from_secs(20));
    let before = consumer.expect_line("PROGRESS", Duration::from_secs(30));
    sub1.kill9();
    let lost = consumer.expect_line("LOST", Duration::from_secs(30));
    let sub2 = start_subscribe(&s, "block");
    consumer.expect_line("REOPENED", Duration::from_secs(30));
    let r = consumer.expect_result(Duration::from_secs(60));
    consumer.expect_success(Duration::from_secs(10));
    assert_eq!(r.u64("sessions"), 2);
    // Strictly increasing app sequences across both sessions (checked in the
    // child) and samples after the restart: the last is past the loss.
    let last_before = field(&lost, "last");
    assert!(field(&before, "n") >= 50);
    assert!(
        r.u64("last") >= last_before + 100,
        "after the restart: {r:?}, before: {lost}"
    );
    producer.send("stop");
    producer.expect_result(Duration::from_secs(10));
    producer.expect_success(Duration::from_secs(10));
    let sub = sub2.interrupt();
    assert!(field(&sub, "forwarded") >= 100, "{sub}");
    eprintln!("restart: consumer {before} / {lost} / {r:?}\n{sub}");
    let publ = publish.interrupt();
    assert!(field(&publ, "sessions") >= 1, "{publ}");
    s.dst.assert_removed();
    s.src.assert_removed();
}

/// Bad key expressions, endpoints and channel names are refused before
/// anything starts (exit status 2, a message that says what is wrong), and
/// leave nothing in /dev/shm. No network traffic: nothing gets that far.
#[test]
fn bad_arguments_are_refused_with_exit_status_2() {
    let ch = Channel::new("bridge-bad");
    for (args, says) in [
        (
            vec![
                "publish",
                "x",
                "--key",
                "a//b",
                "--listen",
                "tcp/127.0.0.1:1",
            ],
            "invalid key expression \"a//b\"",
        ),
        (
            vec!["publish", "x", "--key", "k", "--listen", "udp/127.0.0.1:1"],
            "transport \"udp\" is not built in",
        ),
        (
            vec!["publish", "x", "--key", "k", "--connect", "tcp/127.0.0.1"],
            "no port",
        ),
        (
            vec![
                "publish",
                "bad/name",
                "--key",
                "k",
                "--listen",
                "tcp/127.0.0.1:1",
            ],
            "invalid channel name",
        ),
        (
            vec![
                "subscribe",
                "k",
                "--channel",
                ch.name(),
                "--size",
                "64",
                "--connect",
                "nonsense",
            ],
            "invalid endpoint \"nonsense\"",
        ),
    ] {
        let out = Command::new(BIPS)
            .arg("bridge")
            .args(&args)
            .output()
            .expect("run bips");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains(".rs:"), "{args:?}: a source location: {err}");
    }
    ch.assert_removed();
}
