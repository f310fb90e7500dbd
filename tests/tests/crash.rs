//! Crashes (L1, L2): `kill -9` of a consumer that holds buffers while the
//! producer is blocked in `loan`, and `kill -9` of the producer while
//! consumers are blocked in `recv`.

use std::time::{Duration, Instant};

use bips::{Consumer, Error, Options, Producer, WaitStrategy};
use bips_tests::*;

const ENTRY: &str = "child_entry";

/// Children of this file start here (a no-op in a normal test run).
#[test]
fn child_entry() {
    bips_tests::child_entry(&[
        ("holder", holder_role),
        ("drainer", drainer_role),
        ("producer", producer_role),
    ]);
}

/// Receives `BIPS_HOLD` samples, keeps them all, says so, then waits for
/// orders (it is meant to be killed while holding them).
fn holder_role() {
    let name: String = env("BIPS_CHANNEL");
    let tag: u64 = env("BIPS_TAG");
    let hold: u64 = env("BIPS_HOLD");
    let consumer = open_consumer(&name, &env_or("BIPS_WAIT", "park".to_owned())).expect("open");
    let cap = consumer.geometry().buffer_size as usize;
    say("READY");
    let mut scratch = Vec::new();
    let mut held = Vec::new();
    for seq in 0..hold {
        let s = consumer.recv_timeout(Duration::from_secs(5)).expect("recv");
        check_sample(&s, seq, tag, cap, &mut scratch).unwrap();
        held.push(s);
    }
    say(format!("HOLDING {}", held.len()));
    let _ = read_order(); // killed before any order comes
    drop(held);
}

#[test]
fn kill9_of_holding_consumer_unblocks_producer_within_a_second() {
    let _s = serial();
    let ch = Channel::new("killcons");
    let tag = 0xC0_DE;
    let buffers = 4u32;
    // One consumer entry only: a new consumer can attach only if the dead
    // one's entry is reclaimed and reused.
    let opts = Options::new(buffers, 1024)
        .max_consumers(1)
        .wait(WaitStrategy::Park);
    let producer = Producer::create(ch.name(), &opts).expect("create");
    let mut victim = spawn(ENTRY, "holder")
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_TAG", tag)
        .env("BIPS_HOLD", buffers)
        .start();
    victim.expect_line("READY", Duration::from_secs(10));
    await_consumers(&producer, 1, Duration::from_secs(5));
    for seq in 0..u64::from(buffers) {
        publish_checked(&producer, seq, tag);
    }
    victim.expect_line("HOLDING 4", Duration::from_secs(5));
    // The pool is exhausted and held by a live consumer: the producer blocks.
    assert!(matches!(
        producer.loan_timeout(Duration::from_millis(100)),
        Err(Error::Timeout)
    ));
    assert!(matches!(
        Consumer::open(ch.name()),
        Err(Error::TooManyConsumers { max: 1 })
    ));

    // Kill the consumer while the producer is blocked in loan().
    let killer = kill_later(victim.pid(), Duration::from_millis(325));
    let t = Instant::now();
    let s = producer.loan().expect("loan after the consumer died");
    let resumed_at = Instant::now();
    let killed_at = killer.join().unwrap();
    let blocked = resumed_at - t;
    let after_kill = resumed_at.saturating_duration_since(killed_at);
    println!("producer blocked {blocked:?}, resumed {after_kill:?} after the kill -9");
    assert!(
        blocked >= Duration::from_millis(250),
        "loan returned after {blocked:?}: it was not blocked by the consumer"
    );
    assert!(
        after_kill < Duration::from_secs(1),
        "producer resumed {after_kill:?} after the consumer's kill -9 (> 1 s)"
    );
    let status = victim.wait_exit(Duration::from_secs(5));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    drop(s);

    // The dead consumer's cursor and held buffers were reclaimed: with no
    // consumer, the producer cycles through the whole pool again and again.
    assert_eq!(producer.consumer_count(), 0);
    for _ in 0..3 * buffers {
        let s = producer
            .loan_timeout(Duration::from_secs(1))
            .expect("every buffer is free again");
        s.publish().expect("publish");
    }

    // Its entry (the only one) is reused by a new consumer, which gets
    // everything published from now on, in order.
    let mut fresh = spawn(ENTRY, "drainer")
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_TAG", tag)
        .env("BIPS_START", "next")
        .label("new-consumer")
        .start();
    fresh.expect_line("READY", Duration::from_secs(10));
    await_consumers(&producer, 1, Duration::from_secs(5));
    let base = 4 + 3 * u64::from(buffers);
    let n = 50;
    for seq in base..base + n {
        publish_checked(&producer, seq, tag);
    }
    drop(producer);
    let r = fresh.expect_result(Duration::from_secs(5));
    fresh.expect_success(Duration::from_secs(5));
    assert_eq!(r.u64("received"), n);
    assert_eq!(r.u64("first"), base);
    assert_eq!(r.u64("last"), base + n - 1);
    ch.assert_removed();
}

/// Receives (Park) until `Disconnected`: consecutive sequences of stream
/// `BIPS_TAG` from `BIPS_START` (`oldest` by default), each checked byte for
/// byte and announced with `GOT seq=`. With `BIPS_WAIT_GO=1` it first waits for
/// the order `go` (so it drains after the producer's death).
fn drainer_role() {
    let name: String = env("BIPS_CHANNEL");
    let tag: u64 = env("BIPS_TAG");
    let start = match env_or("BIPS_START", "oldest".to_owned()).as_str() {
        "next" => bips::Start::Next,
        _ => bips::Start::Oldest,
    };
    let consumer = Consumer::open_with(
        &name,
        &bips::ConsumerOptions::new()
            .start(start)
            .wait(WaitStrategy::Park),
    )
    .expect("open");
    let cap = consumer.geometry().buffer_size as usize;
    say("READY");
    if env_or("BIPS_WAIT_GO", 0u8) == 1 {
        expect_order("go");
    }
    let mut scratch = Vec::new();
    let (mut received, mut first, mut last) = (0u64, None, None::<u64>);
    loop {
        match consumer.recv() {
            Ok(s) => {
                let want = last.map_or(s.seq(), |l| l + 1);
                if let Err(e) = check_sample(&s, want, tag, cap, &mut scratch) {
                    panic!("{e}");
                }
                first.get_or_insert(s.seq());
                last = Some(s.seq());
                received += 1;
                say(format!("GOT seq={}", s.seq()));
            }
            Err(Error::Disconnected) => break,
            Err(e) => panic!("recv: {e}"),
        }
    }
    say(format!(
        "RESULT received={received} first={} last={}",
        first.unwrap_or(u64::MAX),
        last.unwrap_or(u64::MAX)
    ));
}

/// Creates the channel, waits for `BIPS_CONSUMERS` consumers, publishes
/// `BIPS_N` samples of stream `BIPS_TAG`, then waits for orders: `quit`
/// drops the producer cleanly; otherwise it is killed.
fn producer_role() {
    let name: String = env("BIPS_CHANNEL");
    let tag: u64 = env("BIPS_TAG");
    let n: u64 = env("BIPS_N");
    let want: usize = env("BIPS_CONSUMERS");
    let producer = Producer::create(&name, &Options::new(8, 1024)).expect("create");
    say("CREATED");
    await_consumers(&producer, want, Duration::from_secs(10));
    for seq in 0..n {
        publish_checked(&producer, seq, tag);
    }
    say(format!("PUBLISHED {n}"));
    expect_order("quit");
    drop(producer);
    say("DROPPED");
}

#[test]
fn kill9_of_producer_disconnects_blocked_consumers_and_name_is_reusable() {
    let _s = serial();
    let ch = Channel::new("killprod");
    let (old_tag, new_tag) = (0x01D, 0x2E3);
    let n = 5;
    let mut producer = spawn(ENTRY, "producer")
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_TAG", old_tag)
        .env("BIPS_N", n)
        .env("BIPS_CONSUMERS", 2)
        .start();
    producer.expect_line("CREATED", Duration::from_secs(10));
    // c1 drains as samples come and then blocks in recv(); c2 waits for the
    // order `go`, given only after the producer's death.
    let mut c1 = spawn(ENTRY, "drainer")
        .label("c1")
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_TAG", old_tag)
        .start();
    let mut c2 = spawn(ENTRY, "drainer")
        .label("c2")
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_TAG", old_tag)
        .env("BIPS_WAIT_GO", 1)
        .start();
    c1.expect_line("READY", Duration::from_secs(10));
    c2.expect_line("READY", Duration::from_secs(10));
    producer.expect_line("PUBLISHED", Duration::from_secs(10));
    c1.expect_line(&format!("GOT seq={}", n - 1), Duration::from_secs(5));
    // Let c1 fall asleep in recv().
    std::thread::sleep(Duration::from_millis(100));

    producer.kill9();
    let killed = Instant::now();
    let r = c1.expect_result(Duration::from_secs(2));
    let took = killed.elapsed();
    println!("blocked consumer disconnected {took:?} after the producer's kill -9");
    assert!(took < Duration::from_secs(2));
    assert_eq!(
        (r.u64("received"), r.u64("first"), r.u64("last")),
        (n, 0, n - 1)
    );
    c1.expect_success(Duration::from_secs(2));
    producer.wait_exit(Duration::from_secs(2));

    // The dead producer left its segment behind; opening it says Disconnected.
    assert!(ch.exists(), "the killed producer could not remove its name");
    assert!(matches!(
        Consumer::open(ch.name()),
        Err(Error::Disconnected)
    ));

    // A new producer replaces the stale segment, while c2 still maps the old
    // one; c2 and a consumer of the new channel each see their own stream.
    let new = Producer::create(ch.name(), &Options::new(4, 512)).expect("create over stale");
    let newc = open_consumer(ch.name(), "park").expect("open the new channel");
    for seq in 0..3 {
        publish_checked(&new, seq, new_tag);
    }
    let mut scratch = Vec::new();
    for seq in 0..3 {
        let s = newc
            .recv_timeout(Duration::from_secs(2))
            .expect("new stream");
        check_sample(&s, seq, new_tag, 512, &mut scratch).unwrap();
    }

    c2.send("go");
    let t = Instant::now();
    let r = c2.expect_result(Duration::from_secs(2));
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(
        (r.u64("received"), r.u64("first"), r.u64("last")),
        (n, 0, n - 1),
        "the old consumer drains the old stream, then Disconnected"
    );
    c2.expect_success(Duration::from_secs(2));

    drop(newc);
    drop(new);
    ch.assert_removed();
}

/// A consumer that only polls with `try_recv`, slowly (10 Hz, as a control
/// loop checking for frames now and then), learns of a kill -9 of the
/// producer within a few polls: the liveness check goes by time, not by a
/// count of empty polls (before: every 1024 polls, i.e. 100 s at 10 Hz).
#[test]
fn slow_try_recv_poller_learns_of_dead_producer_within_a_second() {
    let _s = serial();
    let ch = Channel::new("slowpoll");
    let tag = 0x5_10;
    let mut producer = spawn(ENTRY, "producer")
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_TAG", tag)
        .env("BIPS_N", 2)
        .env("BIPS_CONSUMERS", 1)
        .start();
    producer.expect_line("CREATED", Duration::from_secs(10));
    let consumer = open_consumer(ch.name(), "park").expect("open");
    producer.expect_line("PUBLISHED 2", Duration::from_secs(10));
    let cap = consumer.geometry().buffer_size as usize;
    let mut scratch = Vec::new();
    for seq in 0..2 {
        let s = consumer.try_recv().expect("try_recv").expect("published");
        check_sample(&s, seq, tag, cap, &mut scratch).unwrap();
    }
    producer.kill9();
    producer.wait_exit(Duration::from_secs(10));
    let killed = Instant::now();
    let period = Duration::from_millis(100);
    for poll in 1..=30 {
        std::thread::sleep(period);
        match consumer.try_recv() {
            Ok(None) => continue,
            Err(Error::Disconnected) => {
                let took = killed.elapsed();
                println!("Disconnected after {poll} polls, {took:?} after the kill");
                assert!(took < Duration::from_secs(1), "took {took:?}");
                return;
            }
            other => panic!("poll {poll}: {other:?}"),
        }
    }
    panic!("30 polls at 10 Hz after the producer's kill -9 and still no Disconnected");
}
