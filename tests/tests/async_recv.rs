//! Async receive and loan across processes: `Consumer::recv_async` and
//! `Producer::loan_async` on tokio (current-thread and multi-thread
//! runtimes), on both wait backends (the `futex_waitv` reactor and the
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
/// while a spawned task ticks every millisecond; checks each sample, counts
/// the ticks seen during each wait, then expects `Disconnected`.
fn tokio_consumer_role() {
    let name: String = env("BIPS_CHANNEL");
    let n: u64 = env("BIPS_N");
    let flavor: String = env("BIPS_RUNTIME");
    let backend = check_backend();
    let consumer = open_consumer(&name, "park").expect("open");
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
        let (mut waits_with_ticks, mut min_ticks) = (0u64, u64::MAX);
        let mut latencies = Vec::new();
        for seq in 0..n {
            let before = ticks.load(Ordering::Relaxed);
            let s = consumer.recv_async().await.expect("recv_async");
            latencies.push(bips::now_ns().saturating_sub(s.timestamp_ns()) / 1000);
            let during = ticks.load(Ordering::Relaxed) - before;
            check_sample(&s, seq, TAG, CAP, &mut scratch).unwrap_or_else(|e| panic!("{e}"));
            if during > 0 {
                waits_with_ticks += 1;
            }
            min_ticks = min_ticks.min(during);
        }
        let end = consumer.recv_async().await;
        assert!(
            matches!(end, Err(Error::Disconnected)),
            "after the last sample: {:?}",
            end.map(|s| s.seq())
        );
        ticker.abort();
        say(format!(
            "RESULT got={n} waits_with_ticks={waits_with_ticks} min_ticks={min_ticks} ticks={} \
             backend={backend:?} latency_med_us={}",
            ticks.load(Ordering::Relaxed),
            median(&mut latencies)
        ));
    });
}

fn tokio_recv(flavor: &str, threads: bool) {
    let _s = serial();
    let ch = Channel::new("aio-tokio");
    let n = 40;
    let mut publisher = start_publisher(&ch, n, 20, false);
    let mut consumer = spawn(ENTRY, "tokio-consumer")
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_N", n)
        .env("BIPS_RUNTIME", flavor)
        .env(bips::NO_WAITV_ENV, backend_env(threads))
        .start();
    consumer.expect_line("READY", Duration::from_secs(10));
    publisher.send("go");
    let r = consumer.expect_result(Duration::from_secs(20));
    println!("{flavor} runtime, threads={threads}: {r:?}");
    assert_eq!(r.u64("got"), n);
    // Each wait lasts ~20 ms: a runtime that kept running ticked ~20 times
    // in every one (a blocked current-thread runtime ticks in none).
    assert_eq!(
        r.u64("waits_with_ticks"),
        n,
        "the ticker stood still during some waits: recv_async blocked the runtime"
    );
    assert!(r.u64("min_ticks") >= 3, "too few ticks during a wait");
    publisher.expect_success(Duration::from_secs(10));
    consumer.expect_success(Duration::from_secs(10));
    ch.assert_removed();
}

#[test]
fn tokio_current_thread_recv_async_futex_waitv() {
    tokio_recv("current", false);
}

#[test]
fn tokio_current_thread_recv_async_fallback_threads() {
    tokio_recv("current", true);
}

#[test]
fn tokio_multi_thread_recv_async_futex_waitv() {
    tokio_recv("multi", false);
}

#[test]
fn tokio_multi_thread_recv_async_fallback_threads() {
    tokio_recv("multi", true);
}

/// Receives `BIPS_N` samples, each through a loop of `recv_async` futures
/// dropped after a random 0-3 ms (`tokio::time::timeout`) until one
/// completes: checks order and payload, and that after every cancel this
/// consumer is no longer marked asleep in the channel.
fn cancel_consumer_role() {
    let name: String = env("BIPS_CHANNEL");
    let n: u64 = env("BIPS_N");
    check_backend();
    let consumer = open_consumer(&name, "park").expect("open");
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

/// A producer on 2 buffers (`Block`) that loans with `loan_async` on a
/// current-thread runtime while a task ticks; every other loan first goes
/// through a `loan_async` dropped after 1 ms. Counts ticks during the loans.
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
                let t = tokio::time::timeout(Duration::from_millis(1), producer.loan_async()).await;
                match t {
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
    let cs: Vec<_> = (0..3)
        .map(|_| open_consumer(&name, "park").expect("open"))
        .collect();
    let rt = runtime("current");
    let (cpu, reactors, helpers) = rt.block_on(async {
        let waits = futures_join3(cs[0].recv_async(), cs[1].recv_async(), cs[2].recv_async());
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
    let consumer = open_consumer(&name, "park").expect("open");
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
