//! Waiting and nothing more: what idle waits cost, a consumer killed while it
//! awaits, and (at compile time) which futures are `Send`.

use super::*;
use bips::Backpressure;

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
pub(super) fn idle_role() {
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

pub(super) fn idle_cost(threads: bool) {
    let _s = serial();
    let ch = Channel::new("aio-idle");
    let producer = Producer::create(ch.name(), &options(4)).expect("create");
    let mut kid = child("idle", &ch, threads).start();
    let r = kid.expect_result(Duration::from_secs(10));
    println!("idle, threads={threads}: {r:?}");
    kid.expect_success(Duration::from_secs(5));
    let cpu_us = r.u64("cpu_us");
    assert!(
        cpu_us < 50_000,
        "3 idle async waits used {cpu_us} us of CPU in 1 s (>= 5%)"
    );
    if threads || no_waitv_here() {
        assert_eq!(r.u64("reactors"), 0);
        assert_eq!(r.u64("helpers"), 3, "one helper thread per pending wait");
    } else {
        assert_eq!(r.u64("reactors"), 1, "one reactor thread per process");
        assert_eq!(r.u64("helpers"), 0, "futex_waitv needs no helper");
    }
    drop(producer);
}

/// Opens a consumer, says READY, awaits `recv_async` (until killed).
pub(super) fn await_forever_role() {
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

pub(super) fn killed_while_awaiting(threads: bool) {
    let _s = serial();
    let ch = Channel::new("aio-kill");
    let producer = Producer::create(
        ch.name(),
        &options(4).backpressure(Backpressure::DropOldest),
    )
    .expect("create");
    let mut kid = ready(child("await-forever", &ch, threads));
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
