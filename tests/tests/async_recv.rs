//! Async receive and loan across processes: `Consumer::recv_async` and
//! `Producer::loan_async` (the `Send` futures, also in `tokio::spawn`ed
//! tasks of a multi-thread runtime) and their `!Send` `_local` forms on
//! tokio (current-thread and multi-thread runtimes), on both wait backends (the `futex_waitv` reactor and the
//! helper-thread fallback, `BIPS_ASYNC_NO_WAITV=1`): the runtime keeps
//! running while they wait, every sample arrives in order, a cancelled wait
//! loses nothing and leaves no sleeper bit, an idle wait costs no CPU, and a
//! consumer killed while it awaits is reclaimed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bips::{AsyncBackend, Backpressure, Error, Options, Producer};
use bips_tests::*;

const ENTRY: &str = "child_entry";
const TAG: u64 = 0xA51C_0000;
const CAP: usize = 4096;

/// Children of this file start here (a no-op in a normal test run).
#[test]
fn child_entry() {
    bips_tests::child_entry(&[
        ("publisher", publisher_role),
        ("tokio-consumer", tokio_consumer_role),
        ("spawned-consumers", spawned_consumers_role),
        ("spawned-loaner", spawned_loaner_role),
        ("cancel-consumer", cancel_consumer_role),
        ("slow-consumer", slow_consumer_role),
        ("async-loaner", async_loaner_role),
        ("idle", idle_role),
        ("await-forever", await_forever_role),
    ]);
}

fn options(buffers: u32) -> Options {
    Options::new(buffers, CAP).meta_size(16)
}

fn backend_env(threads: bool) -> &'static str {
    if threads {
        "1"
    } else {
        "0"
    }
}

/// The backend this child must be on, by `BIPS_ASYNC_NO_WAITV`.
fn check_backend() -> AsyncBackend {
    let want = if env_or::<String>(bips::NO_WAITV_ENV, "0".into()) == "1" {
        AsyncBackend::Threads
    } else {
        AsyncBackend::FutexWaitv
    };
    assert_eq!(bips::async_backend(), want, "wrong async backend");
    want
}

fn runtime(flavor: &str) -> tokio::runtime::Runtime {
    match flavor {
        "current" => tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap(),
        "multi" => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap(),
        other => panic!("unknown runtime {other:?}"),
    }
}

/// Creates the channel (`BIPS_BUFFERS` buffers, `Block`), says READY, waits
/// for `go`, then publishes `BIPS_N` checked samples, pausing `BIPS_PAUSE_MS`
/// before each (random 0..=pause when `BIPS_JITTER=1`); exits (closing the
/// channel) when done.
fn publisher_role() {
    let name: String = env("BIPS_CHANNEL");
    let n: u64 = env("BIPS_N");
    let pause: u64 = env("BIPS_PAUSE_MS");
    let jitter: u64 = env_or("BIPS_JITTER", 0);
    let producer = Producer::create(&name, &options(env_or("BIPS_BUFFERS", 4))).expect("create");
    say("READY");
    expect_order("go");
    let mut rng = Rng::new(n ^ pause);
    for seq in 0..n {
        let ms = if jitter == 1 {
            rng.below(pause + 1)
        } else {
            pause
        };
        std::thread::sleep(Duration::from_millis(ms));
        publish_checked(&producer, seq, TAG);
    }
    say("DONE");
}

/// What the ticker did during a receiver's waits. Only waits that lasted
/// (>= 5 ms) count: on this loaded machine a receiver is sometimes late, and
/// then finds its sample ready and waits not at all.
#[derive(Default)]
struct Waits {
    /// Waits of >= 5 ms.
    waited: u64,
    /// Ticks counted during them.
    ticks: u64,
}

impl Waits {
    fn start(ticks: &AtomicU64) -> (Instant, u64) {
        (Instant::now(), ticks.load(Ordering::Relaxed))
    }

    fn end(&mut self, start: (Instant, u64), ticks: &AtomicU64) {
        if start.0.elapsed() >= Duration::from_millis(5) {
            self.waited += 1;
            self.ticks += ticks.load(Ordering::Relaxed) - start.1;
        }
    }

    /// The receiver waited for most samples (they come every 20 ms) and the
    /// ticker kept ticking (every 1 ms) meanwhile: at least 3 ticks a wait
    /// on average. A wait that blocked the thread the ticker needs counts
    /// about none.
    fn check(r: &Fields, n: u64) {
        assert!(r.u64("waited") >= n / 2, "few receives waited: {r:?}");
        assert!(
            r.u64("ticks_in_waits") >= r.u64("waited") * 3,
            "the ticker stood still while recv_async waited: {r:?}"
        );
    }
}

/// Starts a publisher child and returns it once its channel exists.
fn start_publisher(ch: &Channel, n: u64, pause_ms: u64, jitter: bool) -> Proc {
    let mut p = spawn(ENTRY, "publisher")
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_N", n)
        .env("BIPS_PAUSE_MS", pause_ms)
        .env("BIPS_JITTER", u64::from(jitter))
        .start();
    p.expect_line("READY", Duration::from_secs(10));
    p
}

/// Receives `BIPS_N` samples with `recv_async` on runtime `BIPS_RUNTIME`
/// (in `block_on`) while a spawned task ticks every millisecond; checks each
/// sample, counts the ticks seen during the waits, then expects
/// `Disconnected`. With `BIPS_LOCAL=1` it uses `recv_async_local` and keeps
/// the previous sample held while awaiting the next (what the `&self` form
/// is for).
fn tokio_consumer_role() {
    let name: String = env("BIPS_CHANNEL");
    let n: u64 = env("BIPS_N");
    let flavor: String = env("BIPS_RUNTIME");
    let local = env_or::<u64>("BIPS_LOCAL", 0) == 1;
    let backend = check_backend();
    let mut consumer = open_consumer(&name, "park").expect("open");
    let rt = runtime(&flavor);
    let ticks = Arc::new(AtomicU64::new(0));
    say("READY");
    rt.block_on(async {
        let ticker = tokio::spawn({
            let ticks = ticks.clone();
            async move {
                let mut iv = tokio::time::interval(Duration::from_millis(1));
                loop {
                    iv.tick().await;
                    ticks.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let mut scratch = Vec::new();
        let mut waits = Waits::default();
        let mut latencies = Vec::new();
        let mut wait_done = |seq: u64, s: &bips::Sample, start: (Instant, u64)| {
            waits.end(start, &ticks);
            latencies.push(bips::now_ns().saturating_sub(s.timestamp_ns()) / 1000);
            check_sample(s, seq, TAG, CAP, &mut scratch).unwrap_or_else(|e| panic!("{e}"));
        };
        if local {
            let consumer = &consumer;
            let mut previous = None;
            for seq in 0..n {
                let start = Waits::start(&ticks);
                let s = consumer.recv_async_local().await.expect("recv_async_local");
                wait_done(seq, &s, start);
                // Two samples of one consumer alive at once.
                if let Some(p) = previous.replace(s) {
                    assert_eq!(p.seq() + 1, seq);
                }
            }
            drop(previous);
            let end = consumer.recv_async_local().await;
            assert!(
                matches!(end, Err(Error::Disconnected)),
                "after the last sample: {:?}",
                end.map(|s| s.seq())
            );
        } else {
            for seq in 0..n {
                let start = Waits::start(&ticks);
                let s = consumer.recv_async().await.expect("recv_async");
                wait_done(seq, &s, start);
            }
            let end = consumer.recv_async().await;
            assert!(
                matches!(end, Err(Error::Disconnected)),
                "after the last sample: {:?}",
                end.map(|s| s.seq())
            );
        }
        ticker.abort();
        say(format!(
            "RESULT got={n} waited={} ticks_in_waits={} ticks={} backend={backend:?} \
             latency_med_us={}",
            waits.waited,
            waits.ticks,
            ticks.load(Ordering::Relaxed),
            median(&mut latencies)
        ));
    });
}

fn tokio_recv(flavor: &str, threads: bool, local: bool) {
    let _s = serial();
    let ch = Channel::new("aio-tokio");
    let n = 40;
    let mut publisher = start_publisher(&ch, n, 20, false);
    let mut consumer = spawn(ENTRY, "tokio-consumer")
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_N", n)
        .env("BIPS_RUNTIME", flavor)
        .env("BIPS_LOCAL", u64::from(local))
        .env(bips::NO_WAITV_ENV, backend_env(threads))
        .start();
    consumer.expect_line("READY", Duration::from_secs(10));
    publisher.send("go");
    let r = consumer.expect_result(Duration::from_secs(20));
    println!("{flavor} runtime, threads={threads}, local={local}: {r:?}");
    assert_eq!(r.u64("got"), n);
    // Each wait lasts ~20 ms: a runtime that kept running ticked ~20 times
    // in each (a blocked current-thread runtime ticks in none).
    Waits::check(&r, n);
    publisher.expect_success(Duration::from_secs(10));
    consumer.expect_success(Duration::from_secs(10));
    ch.assert_removed();
}

#[test]
fn tokio_current_thread_recv_async_futex_waitv() {
    tokio_recv("current", false, false);
}

#[test]
fn tokio_current_thread_recv_async_fallback_threads() {
    tokio_recv("current", true, false);
}

#[test]
fn tokio_current_thread_recv_async_local_holding_two_futex_waitv() {
    tokio_recv("current", false, true);
}

#[test]
fn tokio_current_thread_recv_async_local_holding_two_fallback_threads() {
    tokio_recv("current", true, true);
}

#[test]
fn tokio_multi_thread_recv_async_futex_waitv() {
    tokio_recv("multi", false, false);
}

#[test]
fn tokio_multi_thread_recv_async_fallback_threads() {
    tokio_recv("multi", true, false);
}

/// The id of the current thread, as a number (for counting threads).
fn thread_no() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    static STATE: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
    STATE
        .get_or_init(RandomState::new)
        .hash_one(std::thread::current().id())
}

/// Awaits `f`, adding the time spent inside its `poll` calls to `busy`: a
/// future that waits without blocking spends a tiny part of its wait there,
/// one that blocks its thread, all of it.
async fn timed_polls<F: std::future::Future>(f: F, busy: &mut Duration) -> F::Output {
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(|cx| {
        let t = Instant::now();
        let r = f.as_mut().poll(cx);
        *busy += t.elapsed();
        r
    })
    .await
}

/// Spawns a task that ticks `ticks` every millisecond.
fn spawn_ticker(ticks: &Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    let ticks = ticks.clone();
    tokio::spawn(async move {
        let mut iv = tokio::time::interval(Duration::from_millis(1));
        loop {
            iv.tick().await;
            ticks.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// The `tokio::spawn` idiom: two consumers opened on the main thread, each
/// moved into a task spawned on a 2-worker multi-thread runtime, next to a
/// ticker task. Each task receives `BIPS_N` checked samples with
/// `recv_async`, holding every sample across an `.await`, then expects
/// `Disconnected`. If a wait blocked its worker, both workers would be
/// blocked while the publisher pauses, and the ticker would stand still.
fn spawned_consumers_role() {
    let name: String = env("BIPS_CHANNEL");
    let n: u64 = env("BIPS_N");
    let backend = check_backend();
    let main = thread_no();
    let consumers: Vec<_> = (0..2)
        .map(|_| open_consumer(&name, "park").expect("open"))
        .collect();
    let rt = runtime("multi");
    let ticks = Arc::new(AtomicU64::new(0));
    say("READY");
    let results = rt.block_on(async {
        let ticker = spawn_ticker(&ticks);
        let tasks: Vec<_> = consumers
            .into_iter()
            .map(|mut consumer| {
                let ticks = ticks.clone();
                tokio::spawn(async move {
                    let mut scratch = Vec::new();
                    let mut waits = Waits::default();
                    let mut threads = std::collections::HashSet::new();
                    let (mut busy, t0) = (Duration::ZERO, Instant::now());
                    for seq in 0..n {
                        let start = Waits::start(&ticks);
                        let s = timed_polls(consumer.recv_async(), &mut busy)
                            .await
                            .expect("recv_async");
                        waits.end(start, &ticks);
                        threads.insert(thread_no());
                        // Held across an await: the task may resume on
                        // the other worker with the sample.
                        tokio::task::yield_now().await;
                        threads.insert(thread_no());
                        check_sample(&s, seq, TAG, CAP, &mut scratch)
                            .unwrap_or_else(|e| panic!("{e}"));
                        drop(s);
                    }
                    let end = consumer.recv_async().await;
                    assert!(
                        matches!(end, Err(Error::Disconnected)),
                        "after the last sample: {:?}",
                        end.map(|s| s.seq())
                    );
                    (waits, threads, busy, t0.elapsed())
                })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.expect("receiving task"));
        }
        ticker.abort();
        results
    });
    // The task that waited least (each must have waited for most samples).
    let waits = &results.iter().min_by_key(|r| r.0.waited).unwrap().0;
    let threads: std::collections::HashSet<u64> =
        results.iter().flat_map(|r| r.1.iter().copied()).collect();
    let busy = results.iter().map(|r| r.2).max().unwrap();
    let total = results.iter().map(|r| r.3).min().unwrap();
    say(format!(
        "RESULT got={n} tasks={} waited={} ticks_in_waits={} busy_ms={} total_ms={} ticks={} \
         worker_threads={} on_main={} backend={backend:?}",
        results.len(),
        waits.waited,
        waits.ticks,
        busy.as_millis(),
        total.as_millis(),
        ticks.load(Ordering::Relaxed),
        threads.len(),
        u64::from(threads.contains(&main)),
    ));
}

fn spawned_recv(threads: bool) {
    let _s = serial();
    let ch = Channel::new("aio-spawn");
    let n = 40;
    let mut publisher = start_publisher(&ch, n, 20, false);
    let mut consumer = spawn(ENTRY, "spawned-consumers")
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_N", n)
        .env(bips::NO_WAITV_ENV, backend_env(threads))
        .start();
    consumer.expect_line("READY", Duration::from_secs(10));
    publisher.send("go");
    let r = consumer.expect_result(Duration::from_secs(20));
    println!("spawned, threads={threads}: {r:?}");
    assert_eq!((r.u64("got"), r.u64("tasks")), (n, 2));
    Waits::check(&r, n);
    // A receive that blocked its worker would spend its ~20 ms waits inside
    // `poll` (the ticker could still run on the other worker). Measured
    // here: 0-1 ms of ~810; with a blocking poll, 808 of 810.
    assert!(
        r.u64("busy_ms") * 4 <= r.u64("total_ms"),
        "recv_async spent its waits inside poll (blocking the worker): {r:?}"
    );
    assert_eq!(r.u64("on_main"), 0, "the tasks ran on the main thread");
    publisher.expect_success(Duration::from_secs(10));
    consumer.expect_success(Duration::from_secs(10));
    ch.assert_removed();
}

#[test]
fn tokio_spawn_recv_async_multi_thread_futex_waitv() {
    spawned_recv(false);
}

#[test]
fn tokio_spawn_recv_async_multi_thread_fallback_threads() {
    spawned_recv(true);
}

/// Receives `BIPS_N` samples, each through a loop of `recv_async` futures
/// dropped after a random 0-3 ms (`tokio::time::timeout`) until one
/// completes: checks order and payload, and that after every cancel this
/// consumer is no longer marked asleep in the channel.
fn cancel_consumer_role() {
    let name: String = env("BIPS_CHANNEL");
    let n: u64 = env("BIPS_N");
    check_backend();
    let mut consumer = open_consumer(&name, "park").expect("open");
    let me = consumer.entry_index();
    let rt = runtime("current");
    say("READY");
    let mut rng = Rng::new(7);
    let mut scratch = Vec::new();
    let mut cancels = 0u64;
    rt.block_on(async {
        for seq in 0..n {
            let s = loop {
                let t = Duration::from_micros(rng.below(3_000));
                match tokio::time::timeout(t, consumer.recv_async()).await {
                    Ok(r) => break r.expect("recv_async"),
                    Err(_) => {
                        cancels += 1;
                        let info = bips::monitor::inspect(&name).expect("inspect");
                        let entry = info.consumers.iter().find(|c| c.index == me).unwrap();
                        assert!(
                            !entry.sleeping,
                            "a dropped recv_async left the sleeper bit set"
                        );
                    }
                }
            };
            check_sample(&s, seq, TAG, CAP, &mut scratch).unwrap_or_else(|e| panic!("{e}"));
        }
    });
    say(format!("RESULT got={n} cancels={cancels}"));
}

fn cancel_safety(threads: bool) {
    let _s = serial();
    let ch = Channel::new("aio-cancel");
    let n = 150;
    let mut publisher = start_publisher(&ch, n, 6, true);
    let mut consumer = spawn(ENTRY, "cancel-consumer")
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_N", n)
        .env(bips::NO_WAITV_ENV, backend_env(threads))
        .start();
    consumer.expect_line("READY", Duration::from_secs(10));
    publisher.send("go");
    let r = consumer.expect_result(Duration::from_secs(25));
    println!("threads={threads}: {r:?}");
    assert_eq!(r.u64("got"), n);
    assert!(
        r.u64("cancels") >= 50,
        "only {} cancels: the test did not exercise cancellation",
        r.u64("cancels")
    );
    publisher.expect_success(Duration::from_secs(10));
    consumer.expect_success(Duration::from_secs(10));
}

#[test]
fn dropped_recv_async_loses_no_sample_futex_waitv() {
    cancel_safety(false);
}

#[test]
fn dropped_recv_async_loses_no_sample_fallback_threads() {
    cancel_safety(true);
}

/// A slow blocking consumer: receives `BIPS_N` checked samples, holding each
/// `BIPS_HOLD_MS`.
fn slow_consumer_role() {
    let name: String = env("BIPS_CHANNEL");
    let n: u64 = env("BIPS_N");
    let hold: u64 = env("BIPS_HOLD_MS");
    let consumer = open_consumer(&name, "park").expect("open");
    say("READY");
    let mut scratch = Vec::new();
    for seq in 0..n {
        let s = consumer
            .recv_timeout(Duration::from_secs(10))
            .expect("recv");
        check_sample(&s, seq, TAG, CAP, &mut scratch).unwrap_or_else(|e| panic!("{e}"));
        std::thread::sleep(Duration::from_millis(hold));
    }
    say(format!("RESULT got={n}"));
}

/// A producer on 2 buffers (`Block`) that loans with `loan_async_local` on
/// a current-thread runtime while a task ticks; every other loan first goes
/// through a `loan_async_local` dropped after 1 ms. Counts ticks during the
/// loans. (The `Send` `loan_async` in a spawned task: `spawned_loaner_role`.)
fn async_loaner_role() {
    let name: String = env("BIPS_CHANNEL");
    let n: u64 = env("BIPS_N");
    check_backend();
    let producer = Producer::create(&name, &options(2)).expect("create");
    say("READY");
    expect_order("go");
    let rt = runtime("current");
    let ticks = Arc::new(AtomicU64::new(0));
    let (mut waited, mut ticks_in_waits, mut cancels) = (0u64, 0u64, 0u64);
    rt.block_on(async {
        let ticker = tokio::spawn({
            let ticks = ticks.clone();
            async move {
                let mut iv = tokio::time::interval(Duration::from_millis(1));
                loop {
                    iv.tick().await;
                    ticks.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        for seq in 0..n {
            if seq % 2 == 1 {
                let t = tokio::time::timeout(Duration::from_millis(1), producer.loan_async_local());
                match t.await {
                    Err(_) => cancels += 1,
                    Ok(s) => drop(s.expect("loan_async_local")), // given back unpublished
                }
            }
            let before = (Instant::now(), ticks.load(Ordering::Relaxed));
            let mut s = producer.loan_async_local().await.expect("loan_async_local");
            if before.0.elapsed() >= Duration::from_millis(5) {
                waited += 1;
                ticks_in_waits += ticks.load(Ordering::Relaxed) - before.1;
            }
            write_sample(&mut s, seq, TAG);
            assert_eq!(s.publish().expect("publish"), seq);
        }
        ticker.abort();
    });
    say(format!(
        "RESULT sent={n} waited={waited} ticks_in_waits={ticks_in_waits} cancels={cancels}"
    ));
    expect_order("exit");
}

fn loan_async_block(threads: bool) {
    let _s = serial();
    let ch = Channel::new("aio-loan");
    let n = 30;
    let mut producer = spawn(ENTRY, "async-loaner")
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_N", n)
        .env(bips::NO_WAITV_ENV, backend_env(threads))
        .start();
    producer.expect_line("READY", Duration::from_secs(10));
    let mut consumer = spawn(ENTRY, "slow-consumer")
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_N", n)
        .env("BIPS_HOLD_MS", 15)
        .start();
    consumer.expect_line("READY", Duration::from_secs(10));
    producer.send("go");
    let r = producer.expect_result(Duration::from_secs(25));
    println!("threads={threads}: {r:?}");
    assert_eq!(
        consumer.expect_result(Duration::from_secs(10)).u64("got"),
        n
    );
    // Two buffers, a consumer holding each sample 15 ms: most loans wait.
    assert!(r.u64("waited") >= n / 2, "loans did not wait: {r:?}");
    assert!(
        r.u64("ticks_in_waits") >= r.u64("waited") * 3,
        "the runtime stood still while loan_async waited: {r:?}"
    );
    assert!(r.u64("cancels") >= 1, "no loan_async was cancelled: {r:?}");
    consumer.expect_success(Duration::from_secs(10));
    producer.send("exit");
    producer.expect_success(Duration::from_secs(10));
    ch.assert_removed();
}

#[test]
fn loan_async_waits_for_slow_consumer_futex_waitv() {
    loan_async_block(false);
}

#[test]
fn loan_async_waits_for_slow_consumer_fallback_threads() {
    loan_async_block(true);
}

/// The `tokio::spawn` idiom for a producer: created on the main thread (2
/// buffers, `Block`), moved into a task spawned on a multi-thread runtime
/// with one worker, which it shares with a ticker task (so a loan that
/// blocked its thread would stop the ticker). The task loans with
/// `loan_async`, holds each loan across an `.await` before filling and
/// publishing it; every other loan first goes through a `loan_async`
/// dropped after 1 ms. Counts the loans that waited and the ticks during
/// them.
fn spawned_loaner_role() {
    let name: String = env("BIPS_CHANNEL");
    let n: u64 = env("BIPS_N");
    check_backend();
    let main = thread_no();
    let mut producer = Producer::create(&name, &options(2)).expect("create");
    say("READY");
    expect_order("go");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    let ticks = Arc::new(AtomicU64::new(0));
    let (producer, waited, ticks_in_waits, cancels, on_main) = rt.block_on(async {
        let ticker = spawn_ticker(&ticks);
        let task = tokio::spawn({
            let ticks = ticks.clone();
            async move {
                let (mut waited, mut ticks_in_waits, mut cancels) = (0u64, 0u64, 0u64);
                let mut on_main = false;
                for seq in 0..n {
                    if seq % 2 == 1 {
                        let t =
                            tokio::time::timeout(Duration::from_millis(1), producer.loan_async());
                        match t.await {
                            Err(_) => cancels += 1,
                            Ok(s) => drop(s.expect("loan_async")), // given back unpublished
                        }
                    }
                    let before = (Instant::now(), ticks.load(Ordering::Relaxed));
                    let mut s = producer.loan_async().await.expect("loan_async");
                    if before.0.elapsed() >= Duration::from_millis(5) {
                        waited += 1;
                        ticks_in_waits += ticks.load(Ordering::Relaxed) - before.1;
                    }
                    on_main |= thread_no() == main;
                    tokio::task::yield_now().await; // the loan is held across it
                    let len = payload_len(seq, s.capacity());
                    fill_payload(seq, TAG, &mut s.as_mut_slice()[..len]);
                    s.set_len(len);
                    fill_meta(seq, TAG, s.meta_mut());
                    assert_eq!(s.publish().expect("publish"), seq);
                }
                (producer, waited, ticks_in_waits, cancels, on_main)
            }
        });
        let r = task.await.expect("loaning task");
        ticker.abort();
        r
    });
    say(format!(
        "RESULT sent={n} waited={waited} ticks_in_waits={ticks_in_waits} cancels={cancels} \
         on_main={}",
        u64::from(on_main)
    ));
    expect_order("exit");
    drop(producer);
}

fn spawned_loan(threads: bool) {
    let _s = serial();
    let ch = Channel::new("aio-spawn-loan");
    let n = 30;
    let mut producer = spawn(ENTRY, "spawned-loaner")
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_N", n)
        .env(bips::NO_WAITV_ENV, backend_env(threads))
        .start();
    producer.expect_line("READY", Duration::from_secs(10));
    let mut consumer = spawn(ENTRY, "slow-consumer")
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_N", n)
        .env("BIPS_HOLD_MS", 15)
        .start();
    consumer.expect_line("READY", Duration::from_secs(10));
    producer.send("go");
    let r = producer.expect_result(Duration::from_secs(25));
    println!("spawned loaner, threads={threads}: {r:?}");
    // Every sample arrived, checked and in order.
    assert_eq!(
        consumer.expect_result(Duration::from_secs(10)).u64("got"),
        n
    );
    assert!(r.u64("waited") >= n / 2, "loans did not wait: {r:?}");
    assert!(
        r.u64("ticks_in_waits") >= r.u64("waited") * 3,
        "the worker stood still while loan_async waited: {r:?}"
    );
    assert!(r.u64("cancels") >= 1, "no loan_async was cancelled: {r:?}");
    assert_eq!(r.u64("on_main"), 0, "the task ran on the main thread");
    consumer.expect_success(Duration::from_secs(10));
    producer.send("exit");
    producer.expect_success(Duration::from_secs(10));
    ch.assert_removed();
}

#[test]
fn tokio_spawn_loan_async_paced_by_slow_consumer_futex_waitv() {
    spawned_loan(false);
}

#[test]
fn tokio_spawn_loan_async_paced_by_slow_consumer_fallback_threads() {
    spawned_loan(true);
}

/// CPU seconds (user + system) this process used so far.
fn cpu_time() -> Duration {
    // SAFETY: all-zero is a valid `rusage`; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable `rusage`.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) }, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Threads of this process named `name` (`/proc/self/task/*/comm`).
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .count()
}

/// Three consumers of an idle channel await `recv_async` together for 1 s
/// (current-thread runtime): reports the CPU time used meanwhile and the
/// reactor and helper threads alive.
fn idle_role() {
    let name: String = env("BIPS_CHANNEL");
    check_backend();
    let mut cs: Vec<_> = (0..3)
        .map(|_| open_consumer(&name, "park").expect("open"))
        .collect();
    let rt = runtime("current");
    let (cpu, reactors, helpers) = rt.block_on(async {
        let [a, b, c] = &mut cs[..] else {
            unreachable!()
        };
        let waits = futures_join3(a.recv_async(), b.recv_async(), c.recv_async());
        let mut waits = std::pin::pin!(waits);
        // Let them all go to sleep first.
        assert!(tokio::time::timeout(Duration::from_millis(100), &mut waits)
            .await
            .is_err());
        let cpu0 = cpu_time();
        let r = tokio::time::timeout(Duration::from_secs(1), &mut waits).await;
        assert!(r.is_err(), "received on an idle channel");
        let cpu = cpu_time() - cpu0;
        (
            cpu,
            threads_named("bips-reactor"),
            threads_named("bips-async-wait"),
        )
    });
    say(format!(
        "RESULT cpu_us={} reactors={reactors} helpers={helpers}",
        cpu.as_micros()
    ));
}

/// Joins three futures (no `futures` dependency needed for one join).
async fn futures_join3<A, B, C>(a: A, b: B, c: C)
where
    A: std::future::Future,
    B: std::future::Future,
    C: std::future::Future,
{
    tokio::join!(a, b, c);
}

fn idle_cost(threads: bool) {
    let _s = serial();
    let ch = Channel::new("aio-idle");
    let producer = Producer::create(ch.name(), &options(4)).expect("create");
    let mut kid = spawn(ENTRY, "idle")
        .env("BIPS_CHANNEL", ch.name())
        .env(bips::NO_WAITV_ENV, backend_env(threads))
        .start();
    let r = kid.expect_result(Duration::from_secs(10));
    println!("idle, threads={threads}: {r:?}");
    kid.expect_success(Duration::from_secs(5));
    let cpu_us = r.u64("cpu_us");
    assert!(
        cpu_us < 50_000,
        "3 idle async waits used {cpu_us} us of CPU in 1 s (>= 5%)"
    );
    if threads {
        assert_eq!(r.u64("reactors"), 0);
        assert_eq!(r.u64("helpers"), 3, "one helper thread per pending wait");
    } else {
        assert_eq!(r.u64("reactors"), 1, "one reactor thread per process");
        assert_eq!(r.u64("helpers"), 0, "futex_waitv needs no helper");
    }
    drop(producer);
}

#[test]
fn idle_recv_async_costs_no_cpu_futex_waitv() {
    idle_cost(false);
}

#[test]
fn idle_recv_async_costs_no_cpu_fallback_threads() {
    idle_cost(true);
}

/// Opens a consumer, says READY, awaits `recv_async` (until killed).
fn await_forever_role() {
    let name: String = env("BIPS_CHANNEL");
    check_backend();
    let mut consumer = open_consumer(&name, "park").expect("open");
    say("READY");
    let r = futures_block_on(consumer.recv_async());
    panic!("recv_async returned {:?}", r.map(|s| s.seq()));
}

/// A minimal `block_on` (thread parking): the futures need no runtime.
fn futures_block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

fn killed_while_awaiting(threads: bool) {
    let _s = serial();
    let ch = Channel::new("aio-kill");
    let producer = Producer::create(
        ch.name(),
        &options(4).backpressure(Backpressure::DropOldest),
    )
    .expect("create");
    let mut kid = spawn(ENTRY, "await-forever")
        .env("BIPS_CHANNEL", ch.name())
        .env(bips::NO_WAITV_ENV, backend_env(threads))
        .start();
    kid.expect_line("READY", Duration::from_secs(10));
    let asleep = || {
        bips::monitor::inspect(ch.name())
            .unwrap()
            .consumers
            .iter()
            .any(|c| c.active && c.sleeping)
    };
    assert!(
        wait_until(Duration::from_secs(5), asleep),
        "the awaiting consumer never set its sleeper bit"
    );
    kid.kill9();
    kid.wait_exit(Duration::from_secs(5));
    // Publishing on: the dead consumer's bit makes a few wakes that find
    // nobody, then the producer reaps it (P1: not one wake per publish for
    // ever). Without the reaping the entry stays active and marked.
    let t = Instant::now();
    let mut published = 0;
    while t.elapsed() < Duration::from_millis(300) {
        let mut s = producer.loan_timeout(Duration::from_secs(1)).expect("loan");
        s.set_len(8);
        s.publish().expect("publish");
        published += 1;
        std::thread::sleep(Duration::from_micros(500));
    }
    assert_eq!(
        producer.consumer_count(),
        0,
        "the killed consumer was not reclaimed after {published} publishes"
    );
    assert!(!asleep(), "a stale sleeper bit is left");
    // And the publishes stay system-call free from now on: time many.
    let t = Instant::now();
    for _ in 0..20_000 {
        let mut s = producer.loan().expect("loan");
        s.set_len(8);
        s.publish().expect("publish");
    }
    let per = t.elapsed() / 20_000;
    println!(
        "threads={threads}: reclaimed within {published} publishes (300 ms); then {per:?}/publish"
    );
    assert!(
        per < Duration::from_micros(20),
        "publishes cost {per:?} each: still making wake-up calls?"
    );
    drop(producer);
    ch.assert_removed();
}

#[test]
fn consumer_killed_while_awaiting_is_reclaimed_futex_waitv() {
    killed_while_awaiting(false);
}

#[test]
fn consumer_killed_while_awaiting_is_reclaimed_fallback_threads() {
    killed_while_awaiting(true);
}

/// Compile-time: the futures of `recv_async`/`loan_async` are `Send`, and so
/// is a task that holds a received sample or a loan across an `.await`:
/// `tokio::spawn` takes them.
#[allow(dead_code)]
fn futures_are_send(mut consumer: bips::Consumer, mut producer: Producer) {
    fn assert_send<T: Send>(_: &T) {}
    assert_send(&consumer.recv_async());
    assert_send(&consumer.recv_raw_async());
    assert_send(&producer.loan_async());
    assert_send(&producer.loan_raw_async());
    assert_send(&async move {
        while let Ok(s) = consumer.recv_async().await {
            tokio::task::yield_now().await; // the sample is held across it
            let _ = s.len();
        }
    });
    assert_send(&async move {
        let mut s = producer.loan_async().await?;
        tokio::task::yield_now().await;
        s.write_pod(&[1u8])?;
        s.publish()
    });
}
