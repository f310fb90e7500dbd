//! P1: the hot path (loan, publish, recv/try_recv, release) makes no system
//! call when nobody sleeps. A producer and a consumer process, both with
//! `WaitStrategy::Spin`, run under `strace -f -c` twice: with 0 samples (the
//! setup and teardown alone) and with N samples. The difference is what the
//! N samples cost in system calls; it must be far below one per sample.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use bips::{Error, Options, Producer, WaitStrategy};
use bips_tests::*;

const ENTRY: &str = "child_entry";
const N: u64 = 200_000;

/// Children of this file start here (a no-op in a normal test run).
#[test]
fn child_entry() {
    bips_tests::child_entry(&[
        ("producer", producer_role),
        ("consumer", consumer_role),
        ("deadsleep_producer", dead_sleeper_producer_role),
        ("sleeper", sleeper_role),
    ]);
}

/// Creates a Spin channel, starts the consumer process itself (so that
/// `strace -f` follows it), waits for it without any system call, publishes
/// `BIPS_N` samples, closes, and collects the consumer's result.
fn producer_role() {
    let name: String = env("BIPS_CHANNEL");
    let n: u64 = env("BIPS_N");
    let buffers: u32 = env("BIPS_BUFFERS");
    let work: u64 = env("BIPS_PRODUCER_WORK");
    let producer = Producer::create(&name, &Options::new(buffers, 64).wait(WaitStrategy::Spin))
        .expect("create");
    let mut consumer = spawn(ENTRY, "consumer")
        .env("BIPS_CHANNEL", &name)
        .env("BIPS_N", n)
        .env("BIPS_CONSUMER_WORK", env::<u64>("BIPS_CONSUMER_WORK"))
        .start();
    // Busy-wait (no sleep: a varying number of nanosleep calls would blur
    // the comparison between runs).
    let deadline = Instant::now() + Duration::from_secs(20);
    while producer.consumer_count() < 1 {
        assert!(Instant::now() < deadline, "the consumer never attached");
        std::hint::spin_loop();
    }
    let t = Instant::now();
    for seq in 0..n {
        let mut s = producer.loan().expect("loan");
        s.as_mut_slice()[..8].copy_from_slice(&seq.to_le_bytes());
        s.set_len(8);
        s.publish().expect("publish");
        busy(work);
    }
    let took = t.elapsed();
    drop(producer);
    let r = consumer.expect_result(Duration::from_secs(20));
    consumer.expect_success(Duration::from_secs(10));
    say(format!(
        "RESULT received={} hot_ns={}",
        r.u64("received"),
        took.as_nanos()
    ));
}

/// Receives with Spin until `Disconnected`, checking order and payload.
fn consumer_role() {
    let name: String = env("BIPS_CHANNEL");
    let work: u64 = env("BIPS_CONSUMER_WORK");
    let consumer = open_consumer(&name, "spin").expect("open");
    let mut next = 0u64;
    loop {
        match consumer.recv() {
            Ok(s) => {
                assert_eq!(s.seq(), next);
                assert_eq!(s.as_slice(), &next.to_le_bytes());
                next += 1;
                busy(work);
            }
            Err(Error::Disconnected) => break,
            Err(e) => panic!("recv: {e}"),
        }
    }
    say(format!("RESULT received={next}"));
}

/// About `n` ns of work without a system call (not even a clock read).
fn busy(n: u64) {
    let mut acc = 0u64;
    for i in 0..n {
        acc = std::hint::black_box(acc.wrapping_mul(31).wrapping_add(i));
    }
    std::hint::black_box(acc);
}

/// Per-syscall call counts and the total, from an `strace -c` summary.
fn parse_strace_summary(text: &str) -> (BTreeMap<String, u64>, u64) {
    let mut calls = BTreeMap::new();
    let mut total = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // `% time  seconds  usecs/call  calls  [errors]  syscall`
        if f.len() < 5 || f[0].parse::<f64>().is_err() {
            continue;
        }
        let Ok(n) = f[3].parse::<u64>() else { continue };
        let name = f[f.len() - 1].to_owned();
        if name == "total" {
            total = Some(n);
        } else {
            calls.insert(name, n);
        }
    }
    let total = total.unwrap_or_else(|| panic!("no total line in strace output:\n{text}"));
    (calls, total)
}

/// One traced configuration: pool size and busy work per sample (in
/// iterations of a ~1 ns loop) on each side.
#[derive(Clone, Copy, Debug)]
struct Setup {
    buffers: u32,
    producer_work: u64,
    consumer_work: u64,
}

/// Runs the producer (and its consumer) under `strace -f -c` with `n`
/// samples; returns the syscall counts and the hot loop's duration.
fn traced_run(setup: Setup, n: u64) -> (BTreeMap<String, u64>, u64, Duration) {
    let ch = Channel::new(&format!("strace{n}"));
    let out = std::env::temp_dir().join(format!("bips-strace-{}.txt", ch.name()));
    let _ = std::fs::remove_file(&out);
    let mut p = spawn(ENTRY, "producer")
        .wrapper([
            "strace".into(),
            "-f".into(),
            "-c".into(),
            "-o".into(),
            out.clone().into_os_string(),
        ])
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_N", n)
        .env("BIPS_BUFFERS", setup.buffers)
        .env("BIPS_PRODUCER_WORK", setup.producer_work)
        .env("BIPS_CONSUMER_WORK", setup.consumer_work)
        .label(&format!("strace-producer-{n}"))
        .start();
    // Generous: strace slows every process it follows, and two spinners on a
    // loaded 2-core machine may wait long for a CPU (a hang still fails).
    let r = p.expect_result(Duration::from_secs(120));
    p.expect_success(Duration::from_secs(10));
    assert_eq!(r.u64("received"), n, "the consumer must get every sample");
    let text = std::fs::read_to_string(&out).expect("strace summary");
    let _ = std::fs::remove_file(&out);
    ch.assert_removed();
    let (calls, total) = parse_strace_summary(&text);
    (calls, total, Duration::from_nanos(r.u64("hot_ns")))
}

/// Traces `setup` with 0 and with [`N`] samples and asserts that the samples
/// cost fewer than one system call per 100.
fn assert_hot_path_syscall_free(test: &str, setup: Setup) {
    if let Err(why) = strace_available() {
        skip(test, &format!("{why} (and it could not be installed)"));
        return;
    }
    let (base_calls, base, _) = traced_run(setup, 0);
    let (calls, total, hot) = traced_run(setup, N);
    let extra = total.saturating_sub(base);
    let mut grew: Vec<(u64, &str)> = calls
        .iter()
        .map(|(name, &c)| {
            (
                c.saturating_sub(*base_calls.get(name).unwrap_or(&0)),
                name.as_str(),
            )
        })
        .filter(|(d, _)| *d > 0)
        .collect();
    grew.sort_unstable_by(|a, b| b.cmp(a));
    println!(
        "{test} {setup:?}: syscalls: {base} with 0 samples, {total} with {N} samples ({extra} \
         more: {:.4} per sample; hot loop {hot:?}); grew: {grew:?}",
        extra as f64 / N as f64
    );
    assert!(
        extra < N / 100,
        "{N} samples cost {extra} system calls (> 1% of samples): the hot path enters the \
         kernel; by syscall: {grew:?}"
    );
}

fn strace_available() -> Result<(), String> {
    let works = |out: std::io::Result<std::process::Output>| match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "`strace -f -c true` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("strace: {e}")),
    };
    let probe = || {
        Command::new("strace")
            .args(["-f", "-c", "-o", "/dev/null", "true"])
            .output()
    };
    if works(probe()).is_ok() {
        return Ok(());
    }
    // Not installed: try the distribution's package (CI machines are root).
    if is_root() {
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-qq", "strace"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output();
    }
    works(probe())
}

/// The consumer keeps up (the producer does a little work per sample, and
/// the pool is deep enough to ride out the consumer being descheduled for
/// milliseconds): loan, publish, recv and release alone.
#[test]
fn hot_path_makes_no_syscalls_when_nobody_waits() {
    let _s = serial();
    assert_hot_path_syscall_free(
        "hot_path_makes_no_syscalls_when_nobody_waits",
        Setup {
            buffers: 4096,
            producer_work: 500,
            consumer_work: 0,
        },
    );
}

/// The producer outruns the consumer (which does ~2 µs of work per sample),
/// so under `Block` nearly every `loan` waits, spinning: nobody sleeps, so
/// no system call is needed either (liveness checks are due every 50 ms).
#[test]
fn spinning_producer_paced_by_consumer_makes_no_syscalls() {
    let _s = serial();
    assert_hot_path_syscall_free(
        "spinning_producer_paced_by_consumer_makes_no_syscalls",
        Setup {
            buffers: 8,
            producer_work: 0,
            consumer_work: 2000,
        },
    );
}

// ---------------------------------------------------------------------------
// P1 after a fault: a consumer killed while asleep in `recv` must not make
// every later publish a futex wake (it stays marked as a sleeper until its
// entry is reclaimed, and a DropOldest producer that never runs out of
// buffers would otherwise never reclaim it).

/// Samples published after the sleeper's death.
const AFTER_DEATH: u64 = 20_000;

/// Creates a DropOldest channel, says `CREATED`, waits for order `GO` (the
/// test has then started a `Park` consumer and killed it -9 while it slept
/// in `recv`), then publishes `BIPS_N` samples.
fn dead_sleeper_producer_role() {
    let name: String = env("BIPS_CHANNEL");
    let n: u64 = env("BIPS_N");
    let producer = Producer::create(
        &name,
        &Options::new(4, 64).backpressure(bips::Backpressure::DropOldest),
    )
    .expect("create");
    say("CREATED");
    expect_order("GO");
    for seq in 0..n {
        let mut s = producer.loan().expect("loan");
        s.as_mut_slice()[..8].copy_from_slice(&seq.to_le_bytes());
        s.set_len(8);
        s.publish().expect("publish");
    }
    let alive = producer.consumer_count();
    drop(producer);
    say(format!("RESULT attached_after={alive}"));
}

/// Attaches with `Park` and sleeps in `recv` until killed.
fn sleeper_role() {
    let name: String = env("BIPS_CHANNEL");
    let consumer = open_consumer(&name, "park").expect("open");
    say("ATTACHED");
    let r = consumer.recv();
    panic!("the sleeper was to be killed in recv, but recv returned {r:?}");
}

/// Futex calls of the producer process (all its threads) with `n`
/// samples published after the sleeper's death.
/// Also returns how many consumers were still attached at the end.
fn dead_sleeper_futex_calls(n: u64) -> (u64, u64) {
    let ch = Channel::new(&format!("deadsleep{n}"));
    let out = std::env::temp_dir().join(format!("bips-strace-{}.txt", ch.name()));
    let _ = std::fs::remove_file(&out);
    let mut p = spawn(ENTRY, "deadsleep_producer")
        .wrapper([
            "strace".into(),
            "-f".into(),
            "-c".into(),
            "-e".into(),
            "trace=futex".into(),
            "-o".into(),
            out.clone().into_os_string(),
        ])
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_N", n)
        .label(&format!("deadsleep-producer-{n}"))
        .start();
    p.expect_line("CREATED", Duration::from_secs(20));
    // The sleeper is the test's child, not the producer's: `strace -f`
    // counts the producer's calls alone. A `Park` sleeper leaves the kernel
    // every 50 ms to check the producer, clearing and setting its bit: a
    // kill in that instant leaves no bit, so try again then (with another
    // sleeper: the dead one's entry stays claimed).
    let mut dead_without_bit = 0;
    loop {
        let mut sleeper = spawn(ENTRY, "sleeper")
            .env("BIPS_CHANNEL", ch.name())
            .label("sleeper")
            .start();
        sleeper.expect_line("ATTACHED", Duration::from_secs(20));
        let asleep = wait_until(Duration::from_secs(20), || {
            bips::monitor::inspect(ch.name())
                .map(|i| i.consumers.iter().any(|c| c.alive && c.sleeping))
                .unwrap_or(false)
        });
        assert!(asleep, "the consumer never went to sleep in recv");
        sleeper.kill9();
        sleeper.wait_exit(Duration::from_secs(10));
        let marked = bips::monitor::inspect(ch.name())
            .map(|i| i.consumers.iter().any(|c| c.sleeping))
            .unwrap_or(false);
        if marked {
            break;
        }
        dead_without_bit += 1;
        assert!(dead_without_bit < 5, "5 sleepers killed, none left its bit");
    }
    p.send("GO");
    let r = p.expect_result(Duration::from_secs(60));
    p.expect_success(Duration::from_secs(10));
    let text = std::fs::read_to_string(&out).expect("strace summary");
    let _ = std::fs::remove_file(&out);
    ch.assert_removed();
    // Dead consumers without a bit are not the point (DropOldest reaps them
    // only when it runs dry): they stay attached.
    let attached = r.u64("attached_after").saturating_sub(dead_without_bit);
    // No futex call at all leaves an empty table (no `total` line).
    if !text.contains("total") {
        return (0, attached);
    }
    let (calls, _) = parse_strace_summary(&text);
    (calls.get("futex").copied().unwrap_or(0), attached)
}

/// A consumer killed asleep costs a bounded number of wake calls, not one
/// per publish for ever (issue: 20,001 futex calls for 20,000 publishes).
#[test]
fn dead_sleeper_costs_a_bounded_number_of_wakes() {
    let _s = serial();
    let test = "dead_sleeper_costs_a_bounded_number_of_wakes";
    if let Err(why) = strace_available() {
        skip(test, &format!("{why} (and it could not be installed)"));
        return;
    }
    let (base, _) = dead_sleeper_futex_calls(0);
    let (with, attached) = dead_sleeper_futex_calls(AFTER_DEATH);
    let extra = with.saturating_sub(base);
    println!(
        "{test}: futex calls {base} with 0 publishes after the kill, {with} with {AFTER_DEATH} \
         ({extra} more)"
    );
    // The fix costs 2 calls; the defect one per publish, 100 times this
    // bound. (Under qemu-user strace also counts qemu's own futex calls, 70
    // to 250 in a run: the aarch64 stage skips this test.)
    assert!(
        extra <= AFTER_DEATH / 100,
        "{AFTER_DEATH} publishes after a consumer died asleep made {extra} futex calls: \
         the dead sleeper keeps every publish ringing"
    );
    assert_eq!(attached, 0, "the dead consumer's entry was reclaimed");
}
