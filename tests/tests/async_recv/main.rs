//! Async receive and loan across processes: `Consumer::recv_async` and
//! `Producer::loan_async` (the `Send` futures, also in `tokio::spawn`ed
//! tasks of a multi-thread runtime) and their `!Send` `_local` forms on
//! tokio (current-thread and multi-thread runtimes), on both wait backends (the `futex_waitv` reactor and the
//! helper-thread fallback, `BIPS_ASYNC_NO_WAITV=1`): the runtime keeps
//! running while they wait, every sample arrives in order, a cancelled wait
//! loses nothing and leaves no sleeper bit, an idle wait costs no CPU, and a
//! consumer killed while it awaits is reclaimed.
//!
//! `main.rs` holds the tests (one per wait backend) and the harness they
//! share; the scenarios and the child roles they run are in
//! `recv.rs` (receiving), `loan.rs` (loaning) and
//! `idle.rs` (idle cost, a killed waiter, `Send`).

mod idle;
mod loan;
mod recv;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bips::{AsyncBackend, Error, Options, Producer};
use bips_tests::*;

const ENTRY: &str = "child_entry";
const TAG: u64 = 0xA51C_0000;
const CAP: usize = 4096;

/// Children of this file start here (a no-op in a normal test run).
#[test]
fn child_entry() {
    bips_tests::child_entry(&[
        ("publisher", publisher_role),
        ("tokio-consumer", recv::tokio_consumer_role),
        ("spawned-consumers", recv::spawned_consumers_role),
        ("spawned-loaner", loan::spawned_loaner_role),
        ("cancel-consumer", recv::cancel_consumer_role),
        ("slow-consumer", loan::slow_consumer_role),
        ("async-loaner", loan::async_loaner_role),
        ("idle", idle::idle_role),
        ("await-forever", idle::await_forever_role),
    ]);
}

/// Two tests of one scenario: `$futex_waitv` runs `$body` with `$threads`
/// false (the `futex_waitv` reactor), `$fallback_threads` with it true (the
/// helper-thread fallback).
macro_rules! on_both_backends {
    ($futex_waitv:ident, $fallback_threads:ident => |$threads:ident| $body:expr) => {
        #[test]
        fn $futex_waitv() {
            let $threads = false;
            $body
        }

        #[test]
        fn $fallback_threads() {
            let $threads = true;
            $body
        }
    };
}

on_both_backends! {
    tokio_current_thread_recv_async_futex_waitv,
    tokio_current_thread_recv_async_fallback_threads =>
        |threads| recv::tokio_recv("current", threads, false)
}

on_both_backends! {
    tokio_current_thread_recv_async_local_holding_two_futex_waitv,
    tokio_current_thread_recv_async_local_holding_two_fallback_threads =>
        |threads| recv::tokio_recv("current", threads, true)
}

on_both_backends! {
    tokio_multi_thread_recv_async_futex_waitv,
    tokio_multi_thread_recv_async_fallback_threads =>
        |threads| recv::tokio_recv("multi", threads, false)
}

on_both_backends! {
    tokio_spawn_recv_async_multi_thread_futex_waitv,
    tokio_spawn_recv_async_multi_thread_fallback_threads =>
        |threads| recv::spawned_recv(threads)
}

on_both_backends! {
    dropped_recv_async_loses_no_sample_futex_waitv,
    dropped_recv_async_loses_no_sample_fallback_threads =>
        |threads| recv::cancel_safety(threads)
}

on_both_backends! {
    loan_async_waits_for_slow_consumer_futex_waitv,
    loan_async_waits_for_slow_consumer_fallback_threads =>
        |threads| loan::loan_paced("aio-loan", "async-loaner", threads, "runtime", |_| {})
}

on_both_backends! {
    tokio_spawn_loan_async_paced_by_slow_consumer_futex_waitv,
    tokio_spawn_loan_async_paced_by_slow_consumer_fallback_threads =>
        |threads| loan::loan_paced("aio-spawn-loan", "spawned-loaner", threads, "worker", |r| {
            assert_eq!(r.u64("on_main"), 0, "the task ran on the main thread");
        })
}

on_both_backends! {
    idle_recv_async_costs_no_cpu_futex_waitv,
    idle_recv_async_costs_no_cpu_fallback_threads =>
        |threads| idle::idle_cost(threads)
}

on_both_backends! {
    consumer_killed_while_awaiting_is_reclaimed_futex_waitv,
    consumer_killed_while_awaiting_is_reclaimed_fallback_threads =>
        |threads| idle::killed_while_awaiting(threads)
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

/// Whether the platform running the tests has no `futex_waitv` (set by the
/// aarch64 stage: qemu-user answers ENOSYS, as a 5.10/5.15 Jetson kernel
/// would). The `*_futex_waitv` tests then check that the probe fell back to
/// helper threads and run there; everywhere else they insist on
/// `futex_waitv`, so a broken probe cannot pass unnoticed.
fn no_waitv_here() -> bool {
    env_or::<String>("BIPS_TEST_NO_FUTEX_WAITV", "0".into()) == "1"
}

/// The backend this child must be on, by `BIPS_ASYNC_NO_WAITV` (and
/// [`no_waitv_here`]).
fn check_backend() -> AsyncBackend {
    let want = if env_or::<String>(bips::NO_WAITV_ENV, "0".into()) == "1" || no_waitv_here() {
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

/// Child `role` of this file on channel `ch`, on the wait backend `threads`
/// picks.
fn child(role: &str, ch: &Channel, threads: bool) -> Spawn {
    spawn(ENTRY, role)
        .env("BIPS_CHANNEL", ch.name())
        .env(bips::NO_WAITV_ENV, backend_env(threads))
}

/// Starts a child and returns it once it said READY.
fn ready(child: Spawn) -> Proc {
    let mut p = child.start();
    p.expect_line("READY", Duration::from_secs(10));
    p
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

/// A publisher child and a receiving child on one channel.
struct Peers {
    publisher: Proc,
    consumer: Proc,
}

impl Peers {
    /// Starts a publisher child (`n` samples, `pause_ms` apart; random
    /// 0..=pause_ms with `jitter`), then `consumer`; once both said READY,
    /// tells the publisher to go.
    fn start(ch: &Channel, n: u64, pause_ms: u64, jitter: bool, consumer: Spawn) -> Peers {
        let mut publisher = ready(
            spawn(ENTRY, "publisher")
                .env("BIPS_CHANNEL", ch.name())
                .env("BIPS_N", n)
                .env("BIPS_PAUSE_MS", pause_ms)
                .env("BIPS_JITTER", u64::from(jitter)),
        );
        let consumer = ready(consumer);
        publisher.send("go");
        Peers {
            publisher,
            consumer,
        }
    }

    /// Both children exit successfully.
    fn finish(mut self) {
        self.publisher.expect_success(Duration::from_secs(10));
        self.consumer.expect_success(Duration::from_secs(10));
    }
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

/// The id of the current thread, as a number (for counting threads).
fn thread_no() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    static STATE: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
    STATE
        .get_or_init(RandomState::new)
        .hash_one(std::thread::current().id())
}

/// The receive after the last sample (`end`: its sequence number) found the
/// channel closed.
fn assert_disconnected(end: bips::Result<u64>) {
    assert!(
        matches!(end, Err(Error::Disconnected)),
        "after the last sample: {end:?}"
    );
}
