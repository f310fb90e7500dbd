//! Loaning: `loan_async_local` on a current-thread runtime and `loan_async`
//! in a `tokio::spawn`ed task, both paced by a slow consumer.

use super::*;

/// A slow blocking consumer: receives `BIPS_N` checked samples, holding each
/// `BIPS_HOLD_MS`.
pub(super) fn slow_consumer_role() {
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

/// Awaits `loan` for at most 1 ms: 1 if it was dropped unfinished, 0 if it
/// completed (the buffer is then given back unpublished).
async fn loan_dropped_early<T>(loan: impl std::future::Future<Output = bips::Result<T>>) -> u64 {
    match tokio::time::timeout(Duration::from_millis(1), loan).await {
        Err(_) => 1,
        Ok(s) => {
            drop(s.expect("loan dropped early"));
            0
        }
    }
}

/// A producer on 2 buffers (`Block`) that loans with `loan_async_local` on
/// a current-thread runtime while a task ticks; every other loan first goes
/// through a `loan_async_local` dropped after 1 ms. Counts ticks during the
/// loans. (The `Send` `loan_async` in a spawned task: `spawned_loaner_role`.)
pub(super) fn async_loaner_role() {
    let name: String = env("BIPS_CHANNEL");
    let n: u64 = env("BIPS_N");
    check_backend();
    let producer = Producer::create(&name, &options(2)).expect("create");
    say("READY");
    expect_order("go");
    let rt = runtime("current");
    let ticks = Arc::new(AtomicU64::new(0));
    let (mut waits, mut cancels) = (Waits::default(), 0u64);
    rt.block_on(async {
        let ticker = spawn_ticker(&ticks);
        for seq in 0..n {
            if seq % 2 == 1 {
                cancels += loan_dropped_early(producer.loan_async_local()).await;
            }
            let start = Waits::start(&ticks);
            let mut s = producer.loan_async_local().await.expect("loan_async_local");
            waits.end(start, &ticks);
            write_sample(&mut s, seq, TAG);
            assert_eq!(s.publish().expect("publish"), seq);
        }
        ticker.abort();
    });
    say(format!(
        "RESULT sent={n} waited={} ticks_in_waits={} cancels={cancels}",
        waits.waited, waits.ticks
    ));
    expect_order("exit");
}

/// The `tokio::spawn` idiom for a producer: created on the main thread (2
/// buffers, `Block`), moved into a task spawned on a multi-thread runtime
/// with one worker, which it shares with a ticker task (so a loan that
/// blocked its thread would stop the ticker). The task loans with
/// `loan_async`, holds each loan across an `.await` before filling and
/// publishing it; every other loan first goes through a `loan_async`
/// dropped after 1 ms. Counts the loans that waited and the ticks during
/// them.
pub(super) fn spawned_loaner_role() {
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
    let (producer, waits, cancels, on_main) = rt.block_on(async {
        let ticker = spawn_ticker(&ticks);
        let task = tokio::spawn({
            let ticks = ticks.clone();
            async move {
                let (mut waits, mut cancels, mut on_main) = (Waits::default(), 0u64, false);
                for seq in 0..n {
                    if seq % 2 == 1 {
                        cancels += loan_dropped_early(producer.loan_async()).await;
                    }
                    let start = Waits::start(&ticks);
                    let mut s = producer.loan_async().await.expect("loan_async");
                    waits.end(start, &ticks);
                    on_main |= thread_no() == main;
                    tokio::task::yield_now().await; // the loan is held across it
                    let len = payload_len(seq, s.capacity());
                    fill_payload(seq, TAG, &mut s.as_mut_slice()[..len]);
                    s.set_len(len);
                    fill_meta(seq, TAG, s.meta_mut());
                    assert_eq!(s.publish().expect("publish"), seq);
                }
                (producer, waits, cancels, on_main)
            }
        });
        let r = task.await.expect("loaning task");
        ticker.abort();
        r
    });
    say(format!(
        "RESULT sent={n} waited={} ticks_in_waits={} cancels={cancels} on_main={}",
        waits.waited,
        waits.ticks,
        u64::from(on_main)
    ));
    expect_order("exit");
    drop(producer);
}

/// Loaning child `role` (2 buffers, `Block`, on the backend `threads`
/// picks) paced by a slow consumer child that holds each sample 15 ms:
/// every sample arrives, most loans wait while the loaner's `runtime` keeps
/// ticking, some loan was cancelled; then `more` checks the rest of the
/// loaner's RESULT.
pub(super) fn loan_paced(
    tag: &str,
    role: &str,
    threads: bool,
    runtime: &str,
    more: impl FnOnce(&Fields),
) {
    let _s = serial();
    let ch = Channel::new(tag);
    let n = 30;
    let mut producer = ready(child(role, &ch, threads).env("BIPS_N", n));
    let mut consumer = ready(
        spawn(ENTRY, "slow-consumer")
            .env("BIPS_CHANNEL", ch.name())
            .env("BIPS_N", n)
            .env("BIPS_HOLD_MS", 15),
    );
    producer.send("go");
    let r = producer.expect_result(Duration::from_secs(25));
    println!("{role}, threads={threads}: {r:?}");
    // Every sample arrived, checked and in order.
    assert_eq!(
        consumer.expect_result(Duration::from_secs(10)).u64("got"),
        n
    );
    // Two buffers, a consumer holding each sample 15 ms: most loans wait.
    assert!(r.u64("waited") >= n / 2, "loans did not wait: {r:?}");
    assert!(
        r.u64("ticks_in_waits") >= r.u64("waited") * 3,
        "the {runtime} stood still while loan_async waited: {r:?}"
    );
    assert!(r.u64("cancels") >= 1, "no loan_async was cancelled: {r:?}");
    more(&r);
    consumer.expect_success(Duration::from_secs(10));
    producer.send("exit");
    producer.expect_success(Duration::from_secs(10));
    ch.assert_removed();
}
