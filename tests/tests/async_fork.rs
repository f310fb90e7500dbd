//! Async waits in a child made by `fork` (Python's `multiprocessing` on
//! Linux, a pre-fork server) after the parent already waited asynchronously:
//! the parent's reactor thread (or helper threads) did not survive the fork,
//! so the child must start its own instead of registering with a reactor
//! nobody serves (its `recv_async` then never completed, not even at the
//! liveness slice). Both wait backends.

use std::time::Duration;

use bips::{Options, Producer};
use bips_tests::*;

const ENTRY: &str = "child_entry";

/// Children of this file start here (a no-op in a normal test run).
#[test]
fn child_entry() {
    bips_tests::child_entry(&[("forker", forker_role)]);
}

fn publish_one(producer: &Producer, v: u8) {
    let mut s = producer.loan().expect("loan");
    s.write_pod(&[v]).expect("write");
    s.publish().expect("publish");
}

/// Receives one sample asynchronously on a fresh current-thread runtime,
/// giving up after `limit`: `Some(first byte)` or `None` on timeout.
fn recv_async_within(consumer: &mut bips::Consumer, limit: Duration) -> Option<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = tokio::time::timeout(limit, consumer.recv_async())
            .await
            .ok()?;
        Some(s.expect("recv_async").as_slice()[0])
    })
}

/// Creates `BIPS_CHANNEL`, waits asynchronously once (a sample published
/// 100 ms later by another task: the wait registers with the reactor or a
/// helper), then forks. The fork child opens its own consumer and awaits
/// with `recv_async` a sample the parent publishes 100 ms after the fork;
/// it exits 0 when it gets it within 2 s, 7 when not. The parent says
/// `CHILD <exit code>`.
fn forker_role() {
    let name: String = env("BIPS_CHANNEL");
    let producer = Producer::create(&name, &Options::new(4, 64)).expect("create");
    let mut consumer = open_consumer(&name, "park").expect("open");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let got = rt.block_on(async {
        let (got, ()) = tokio::join!(
            tokio::time::timeout(Duration::from_secs(5), consumer.recv_async()),
            async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                publish_one(&producer, 1);
            }
        );
        got.ok().map(|s| s.expect("recv_async").as_slice()[0])
    });
    assert_eq!(got, Some(1));
    drop(rt);
    // SAFETY: the child only opens a consumer, runs a fresh runtime and
    // exits with `_exit` (no destructors of the parent's state run there);
    // glibc keeps malloc usable in the child of a multithreaded parent.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = match open_consumer(&name, "park") {
            // Sample 1 first (still retained: the consumer starts at the
            // oldest), then it waits for 2.
            // (A wait nobody wakes still ends at the runtime's timeout, which
            // polls the future once more: hence the clock.)
            Ok(mut c) => {
                let t = std::time::Instant::now();
                let got = (
                    recv_async_within(&mut c, Duration::from_secs(5)),
                    recv_async_within(&mut c, Duration::from_secs(5)),
                );
                match got {
                    (Some(1), Some(2)) if t.elapsed() < Duration::from_secs(2) => 0,
                    _ => 7,
                }
            }
            Err(_) => 8,
        };
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    std::thread::sleep(Duration::from_millis(100));
    publish_one(&producer, 2);
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid out-pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid);
    say(format!(
        "CHILD {}",
        if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        }
    ));
}

fn fork_child_receives_async(threads: bool) {
    let ch = Channel::new(if threads { "afork-t" } else { "afork-w" });
    let mut p = spawn(ENTRY, "forker")
        .env("BIPS_CHANNEL", ch.name())
        .env(bips::NO_WAITV_ENV, if threads { "1" } else { "0" })
        .start();
    let (_, line) = p.expect_line_at("CHILD", Duration::from_secs(20));
    assert_eq!(
        line, "CHILD 0",
        "the fork child's recv_async did not complete (7: timed out)"
    );
    p.expect_success(Duration::from_secs(10));
    ch.assert_removed();
}

#[test]
fn fork_child_recv_async_futex_waitv() {
    fork_child_receives_async(false);
}

#[test]
fn fork_child_recv_async_fallback_threads() {
    fork_child_receives_async(true);
}
