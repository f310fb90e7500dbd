//! Wake-ups and timeouts across processes (L2): a consumer asleep in `recv`
//! wakes on a publish from another process; `recv_timeout` and `loan_timeout`
//! give `Error::Timeout` after (not before) their timeout; a consumer's
//! release wakes a producer asleep in `loan`.

use std::time::{Duration, Instant};

use bips::{now_ns, Error, Options, Producer, WaitStrategy};
use bips_tests::*;

const ENTRY: &str = "child_entry";

/// Children of this file start here (a no-op in a normal test run).
#[test]
fn child_entry() {
    bips_tests::child_entry(&[
        ("sleeper", sleeper_role),
        ("idle", idle_role),
        ("holder", holder_role),
    ]);
}

/// Receives `BIPS_N` samples with `recv_timeout(5 s)` (Park: asleep on the
/// futex between samples); for each prints how long `recv` blocked and the
/// latency from the producer's publish timestamp (same CLOCK_MONOTONIC).
fn sleeper_role() {
    let name: String = env("BIPS_CHANNEL");
    let n: u64 = env("BIPS_N");
    let consumer = open_consumer(&name, "park").expect("open");
    say("READY");
    for i in 0..n {
        let t = Instant::now();
        let s = match consumer.recv_timeout(Duration::from_secs(5)) {
            Ok(s) => s,
            Err(e) => panic!("sample {i}: recv_timeout(5 s) failed: {e}"),
        };
        let now = now_ns();
        let blocked = t.elapsed();
        assert_eq!(s.seq(), i);
        say(format!(
            "GOT seq={} blocked_us={} latency_us={}",
            s.seq(),
            blocked.as_micros(),
            now.saturating_sub(s.timestamp_ns()) / 1000
        ));
    }
}

#[test]
fn parked_consumer_wakes_on_publish_from_another_process() {
    let _s = serial();
    let ch = Channel::new("wake");
    let n = 20;
    let producer = Producer::create(ch.name(), &Options::new(4, 64)).expect("create");
    let mut kid = spawn(ENTRY, "sleeper")
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_N", n)
        .start();
    kid.expect_line("READY", Duration::from_secs(10));
    await_consumers(&producer, 1, Duration::from_secs(5));
    let mut latencies = Vec::new();
    for seq in 0..n {
        // Long enough for the consumer to be asleep in the futex.
        std::thread::sleep(Duration::from_millis(30));
        let mut s = producer.loan().expect("loan");
        s.set_len(8);
        assert_eq!(s.publish().expect("publish"), seq);
        let r = Fields::parse(&kid.expect_line("GOT", Duration::from_secs(6)));
        assert_eq!(r.u64("seq"), seq);
        assert!(
            r.u64("blocked_us") >= 15_000,
            "recv returned after {} us: the consumer was not blocked",
            r.u64("blocked_us")
        );
        latencies.push(r.u64("latency_us"));
    }
    kid.expect_success(Duration::from_secs(5));
    let max = *latencies.iter().max().unwrap();
    let med = median(&mut latencies);
    println!("wake-up latency across processes: median {med} us, max {max} us");
    // A lost wake-up would leave the consumer asleep until its next 50 ms
    // liveness slice (or the 5 s timeout): the median would be ~25 ms.
    assert!(max < 1_000_000, "a wake-up took {max} us (5 s timeout)");
    assert!(
        med < 10_000,
        "median wake-up latency {med} us: publishes do not wake sleepers"
    );
    drop(producer);
    ch.assert_removed();
}

/// `recv_timeout(100 ms)` on an idle channel, with every wait strategy.
fn idle_role() {
    let name: String = env("BIPS_CHANNEL");
    for wait in ["park", "spin", "spinpark", "default"] {
        let consumer = open_consumer(&name, wait).expect("open");
        let t = Instant::now();
        let r = consumer.recv_timeout(Duration::from_millis(100));
        let took = t.elapsed();
        assert!(
            matches!(r, Err(Error::Timeout)),
            "{wait}: recv_timeout on an idle channel gave {:?}",
            r.map(|s| s.seq())
        );
        say(format!(
            "RESULT wait={wait} elapsed_us={}",
            took.as_micros()
        ));
    }
}

#[test]
fn recv_timeout_on_idle_channel_times_out_after_the_timeout() {
    let _s = serial();
    let ch = Channel::new("idle");
    let producer = Producer::create(ch.name(), &Options::new(2, 64)).expect("create");
    let mut kid = spawn(ENTRY, "idle").env("BIPS_CHANNEL", ch.name()).start();
    for wait in ["park", "spin", "spinpark", "default"] {
        let r = kid.expect_result(Duration::from_secs(5));
        assert_eq!(r.str("wait"), wait);
        let us = r.u64("elapsed_us");
        assert!(
            us >= 100_000,
            "{wait}: Timeout after only {us} us (< 100 ms)"
        );
        assert!(us < 1_000_000, "{wait}: Timeout after {us} us (>= 1 s)");
    }
    kid.expect_success(Duration::from_secs(5));
    drop(producer);
    ch.assert_removed();
}

/// Receives `BIPS_HOLD` samples and holds them until told `release`; then
/// drops them and prints when (CLOCK_MONOTONIC), and waits for `quit`.
fn holder_role() {
    let name: String = env("BIPS_CHANNEL");
    let hold: usize = env("BIPS_HOLD");
    let consumer = open_consumer(&name, "park").expect("open");
    say("READY");
    let mut held = Vec::new();
    for _ in 0..hold {
        held.push(consumer.recv_timeout(Duration::from_secs(5)).expect("recv"));
    }
    say(format!("HOLDING {}", held.len()));
    expect_order("release");
    held.clear();
    say(format!("RELEASED at_ns={}", now_ns()));
    expect_order("quit");
}

#[test]
fn loan_timeout_under_block_times_out_then_release_wakes_producer() {
    let _s = serial();
    let ch = Channel::new("loanto");
    let buffers = 4;
    let producer = Producer::create(
        ch.name(),
        &Options::new(buffers, 256).wait(WaitStrategy::Park),
    )
    .expect("create");
    let mut kid = spawn(ENTRY, "holder")
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_HOLD", buffers)
        .start();
    kid.expect_line("READY", Duration::from_secs(10));
    await_consumers(&producer, 1, Duration::from_secs(5));
    for seq in 0..u64::from(buffers) {
        publish_checked(&producer, seq, 7);
    }
    kid.expect_line("HOLDING 4", Duration::from_secs(5));

    // Every buffer is held by a live consumer that never releases.
    assert!(producer.try_loan().expect("try_loan").is_none());
    for timeout in [Duration::from_millis(100), Duration::from_millis(250)] {
        let t = Instant::now();
        let r = producer.loan_timeout(timeout);
        let took = t.elapsed();
        assert!(
            matches!(r, Err(Error::Timeout)),
            "loan_timeout({timeout:?}) with every buffer held gave {r:?}"
        );
        assert!(took >= timeout, "Timeout after {took:?} < {timeout:?}");
        assert!(
            took < timeout + Duration::from_secs(1),
            "Timeout after {took:?}"
        );
    }

    // Now the consumer releases while the producer sleeps in loan: it must
    // wake promptly (not only at the next liveness slice or the timeout).
    let mut stdin = kid.take_stdin();
    let releaser = std::thread::spawn(move || {
        use std::io::Write;
        std::thread::sleep(Duration::from_millis(200));
        writeln!(stdin, "release").unwrap();
        stdin.flush().unwrap();
        stdin
    });
    let t = Instant::now();
    let s = producer
        .loan_timeout(Duration::from_secs(5))
        .expect("loan after the release");
    let got_ns = now_ns();
    let took = t.elapsed();
    drop(s);
    let mut stdin = releaser.join().unwrap();
    let released = Fields::parse(&kid.expect_line("RELEASED", Duration::from_secs(5)));
    let wake_us = got_ns.saturating_sub(released.u64("at_ns")) / 1000;
    println!("producer blocked {took:?}; woke {wake_us} us after the release");
    assert!(
        took >= Duration::from_millis(150),
        "loan did not block ({took:?})"
    );
    assert!(took < Duration::from_secs(2), "loan took {took:?}");
    assert!(
        wake_us < 500_000,
        "producer woke {wake_us} us after the release"
    );
    {
        use std::io::Write;
        writeln!(stdin, "quit").unwrap();
    }
    kid.expect_success(Duration::from_secs(5));
    drop(producer);
    ch.assert_removed();
}
