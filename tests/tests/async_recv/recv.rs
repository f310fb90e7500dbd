//! Receiving: `recv_async`/`recv_async_local` on tokio runtimes, in
//! `tokio::spawn`ed tasks, and cancelled mid-wait.

use super::*;

/// Receives `BIPS_N` samples with `recv_async` on runtime `BIPS_RUNTIME`
/// (in `block_on`) while a spawned task ticks every millisecond; checks each
/// sample, counts the ticks seen during the waits, then expects
/// `Disconnected`. With `BIPS_LOCAL=1` it uses `recv_async_local` and keeps
/// the previous sample held while awaiting the next (what the `&self` form
/// is for).
pub(super) fn tokio_consumer_role() {
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
        let ticker = spawn_ticker(&ticks);
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
            assert_disconnected(consumer.recv_async_local().await.map(|s| s.seq()));
        } else {
            for seq in 0..n {
                let start = Waits::start(&ticks);
                let s = consumer.recv_async().await.expect("recv_async");
                wait_done(seq, &s, start);
            }
            assert_disconnected(consumer.recv_async().await.map(|s| s.seq()));
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

pub(super) fn tokio_recv(flavor: &str, threads: bool, local: bool) {
    let _s = serial();
    let ch = Channel::new("aio-tokio");
    let n = 40;
    let consumer = child("tokio-consumer", &ch, threads)
        .env("BIPS_N", n)
        .env("BIPS_RUNTIME", flavor)
        .env("BIPS_LOCAL", u64::from(local));
    let mut peers = Peers::start(&ch, n, 20, false, consumer);
    let r = peers.consumer.expect_result(Duration::from_secs(20));
    println!("{flavor} runtime, threads={threads}, local={local}: {r:?}");
    assert_eq!(r.u64("got"), n);
    // Each wait lasts ~20 ms: a runtime that kept running ticked ~20 times
    // in each (a blocked current-thread runtime ticks in none).
    Waits::check(&r, n);
    peers.finish();
    ch.assert_removed();
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

/// The `tokio::spawn` idiom: two consumers opened on the main thread, each
/// moved into a task spawned on a 2-worker multi-thread runtime, next to a
/// ticker task. Each task receives `BIPS_N` checked samples with
/// `recv_async`, holding every sample across an `.await`, then expects
/// `Disconnected`. If a wait blocked its worker, both workers would be
/// blocked while the publisher pauses, and the ticker would stand still.
pub(super) fn spawned_consumers_role() {
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
                    assert_disconnected(consumer.recv_async().await.map(|s| s.seq()));
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

pub(super) fn spawned_recv(threads: bool) {
    let _s = serial();
    let ch = Channel::new("aio-spawn");
    let n = 40;
    let consumer = child("spawned-consumers", &ch, threads).env("BIPS_N", n);
    let mut peers = Peers::start(&ch, n, 20, false, consumer);
    let r = peers.consumer.expect_result(Duration::from_secs(20));
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
    peers.finish();
    ch.assert_removed();
}

/// Receives `BIPS_N` samples, each through a loop of `recv_async` futures
/// dropped after a random 0-3 ms (`tokio::time::timeout`) until one
/// completes: checks order and payload, and that after every cancel this
/// consumer is no longer marked asleep in the channel.
pub(super) fn cancel_consumer_role() {
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

pub(super) fn cancel_safety(threads: bool) {
    let _s = serial();
    let ch = Channel::new("aio-cancel");
    let n = 150;
    let consumer = child("cancel-consumer", &ch, threads).env("BIPS_N", n);
    let mut peers = Peers::start(&ch, n, 6, true, consumer);
    let r = peers.consumer.expect_result(Duration::from_secs(25));
    println!("threads={threads}: {r:?}");
    assert_eq!(r.u64("got"), n);
    assert!(
        r.u64("cancels") >= 50,
        "only {} cancels: the test did not exercise cancellation",
        r.u64("cancels")
    );
    peers.finish();
}
