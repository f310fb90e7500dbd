//! `bips bridge publish` -> Zenoh over TCP on 127.0.0.1 -> `bips bridge
//! subscribe`, as users run it: the built `bips` binary (feature `bridge`),
//! a producer process on one side and a consumer process on the other, real
//! channels in /dev/shm. Every endpoint is 127.0.0.1 on a port chosen free at
//! run time, and scouting is off (endpoints given): no multicast, no traffic
//! off this machine.
//!
//! * Block: 1000 checked 64 KiB samples arrive in order, with metadata,
//!   descriptor and timestamp intact.
//! * DropOldest with a slow consumer: the producer is not stalled, the
//!   subscribing bridge reports drops, and every lost sample is accounted for.
//! * kill -9 of the subscribing bridge, restarted: the stream resumes.
//!
//! Each test removes what it made in /dev/shm (checked at the end).

use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bips::{Consumer, DType, Descriptor, Error, Options, Producer};
use bips_tests::{
    child_entry, env, expect_order, fill_meta, fill_payload, say, spawn, verify_meta,
    verify_payload, Channel, Proc,
};

const BIPS: &str = env!("CARGO_BIN_EXE_bips");
const ENTRY: &str = "child";
const SIZE: usize = 64 * 1024;
const TAG: u64 = 0xB21D_6E00;

fn descriptor() -> Descriptor {
    // 128 x 128 RGBA u8 = exactly 64 KiB.
    Descriptor::image(128, 128, 4, DType::U8)
        .and_then(|d| d.with_format("RGBA"))
        .expect("descriptor")
}

fn timestamp_of(seq: u64) -> u64 {
    1_000_000 + seq * 1000 + 7
}

/// The payload of app sequence `seq`: `fill_payload` in full (`full`), or
/// its 16-byte header followed by a fixed pattern (cheap to write, so that a
/// producer can outrun the bridge).
fn fill(seq: u64, buf: &mut [u8], full: bool) {
    if full {
        fill_payload(seq, TAG, buf);
    } else {
        fill_payload(seq, TAG, &mut buf[..16]);
        for (i, b) in buf[16..].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(7);
        }
    }
}

fn check(s: &bips::Sample<'_>, full: bool, scratch: &mut Vec<u8>) -> Result<u64, String> {
    let data = s.as_slice();
    if data.len() != SIZE {
        return Err(format!("length {} (want {SIZE})", data.len()));
    }
    let seq = u64::from_le_bytes(data[..8].try_into().unwrap());
    if full {
        verify_payload(seq, TAG, data, scratch)?;
    } else {
        verify_payload(seq, TAG, &data[..16], scratch)?;
        if let Some(i) = (16..SIZE).find(|&i| data[i] != ((i - 16) as u8).wrapping_mul(7)) {
            return Err(format!("seq {seq}: payload byte {i} differs"));
        }
    }
    verify_meta(seq, TAG, s.meta())?;
    if s.meta()[16..24] != *b"bridged!" {
        return Err(format!("seq {seq}: metadata bytes 16..24 lost"));
    }
    match s.descriptor() {
        Ok(Some(d)) if d == descriptor() => {}
        other => return Err(format!("seq {seq}: descriptor {other:?}")),
    }
    if s.timestamp_ns() != timestamp_of(seq) {
        return Err(format!(
            "seq {seq}: timestamp {} (want {})",
            s.timestamp_ns(),
            timestamp_of(seq)
        ));
    }
    Ok(seq)
}

/// Publishes app sequence `seq`; `last` marks the producer's last sample
/// (metadata byte 24).
fn publish_one(p: &Producer, seq: u64, full: bool, last: bool) {
    let mut s = p
        .loan_timeout(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("loan for {seq}: {e}"));
    fill(seq, s.as_mut_slice(), full);
    s.set_len(SIZE);
    fill_meta(seq, TAG, s.meta_mut());
    s.meta_mut()[16..24].copy_from_slice(b"bridged!");
    s.meta_mut()[24] = u8::from(last);
    s.set_descriptor(&descriptor()).expect("set_descriptor");
    s.set_timestamp_ns(timestamp_of(seq));
    s.publish().expect("publish");
}

/// Producer. BIPS_CH, BIPS_POLICY (block|drop), BIPS_BUFFERS, BIPS_MODE:
/// `count` publishes BIPS_COUNT samples after order `go` once a consumer
/// (the bridge) is attached, then (drop) a last one after a pause;
/// `warm` (drop) first publishes one sample every 20 ms until `go`;
/// `stream` publishes every 2 ms until stdin closes or says `stop`.
fn producer() {
    let ch: String = env("BIPS_CH");
    let policy = match env::<String>("BIPS_POLICY").as_str() {
        "block" => bips::Backpressure::Block,
        _ => bips::Backpressure::DropOldest,
    };
    let mode: String = env("BIPS_MODE");
    let full = policy == bips::Backpressure::Block;
    let opts = Options::new(env("BIPS_BUFFERS"), SIZE).backpressure(policy);
    let p = Producer::create(&ch, &opts).expect("create");
    say("READY");
    let mut seq = 0u64;
    match mode.as_str() {
        "count" => {
            expect_order("go");
            bips_tests::await_consumers(&p, 1, Duration::from_secs(20));
            let n: u64 = env("BIPS_COUNT");
            let t0 = Instant::now();
            for _ in 0..n {
                publish_one(&p, seq, full, false);
                seq += 1;
            }
            let secs = t0.elapsed().as_secs_f64();
            say(format!("RESULT sent={seq} ms={}", (secs * 1000.0) as u64));
        }
        "warm" => {
            // Warm-up until `go`: proves the route is up before the burst.
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                while let Some(order) = bips_tests::read_order() {
                    let _ = tx.send(order);
                }
            });
            bips_tests::await_consumers(&p, 1, Duration::from_secs(20));
            while rx.try_recv().is_err() {
                publish_one(&p, seq, full, false);
                seq += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            let n: u64 = env("BIPS_COUNT");
            let t0 = Instant::now();
            for _ in 0..n {
                publish_one(&p, seq, full, false);
                seq += 1;
            }
            let ms = t0.elapsed().as_millis();
            // The last one after a pause: it gets through (latest wins).
            std::thread::sleep(Duration::from_millis(500));
            publish_one(&p, seq, full, true);
            seq += 1;
            say(format!("RESULT sent={seq} ms={ms}"));
            assert_eq!(rx.recv().as_deref(), Ok("exit"));
            return;
        }
        _ => {
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let s2 = stop.clone();
            std::thread::spawn(move || {
                let _ = bips_tests::read_order();
                s2.store(true, std::sync::atomic::Ordering::Relaxed);
            });
            bips_tests::await_consumers(&p, 1, Duration::from_secs(20));
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                publish_one(&p, seq, full, false);
                seq += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            say(format!("RESULT sent={seq}"));
            return;
        }
    }
    expect_order("exit");
}

fn open_retry(ch: &str) -> Consumer {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Consumer::open(ch) {
            Ok(c) => return c,
            Err(Error::NotFound { .. } | Error::Disconnected) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("open {ch}: {e}"),
        }
    }
}

/// Consumer of the bridged channel. BIPS_CH, BIPS_MODE: `block` (BIPS_COUNT
/// samples, consecutive, lagged 0), `slow` (5 ms per sample, strictly
/// increasing, until the producer's last sample), `resume` (survives its producer's
/// death: reopens, ends after 100 samples of the second session).
fn consumer() {
    let ch: String = env("BIPS_CH");
    let mode: String = env("BIPS_MODE");
    let mut c = open_retry(&ch);
    say("READY");
    let mut scratch = Vec::new();
    let full = mode != "slow";
    let (mut n, mut lagged, mut first, mut last) = (0u64, 0u64, None, None::<u64>);
    let mut session = 1;
    let mut after = 0;
    loop {
        let wait = Duration::from_millis(if mode == "resume" { 100 } else { 20_000 });
        let r = c.recv_timeout(wait);
        if mode == "resume" && matches!(r, Err(Error::Disconnected)) {
            drop(r);
            // Its producer (the subscribing bridge) died: open the channel
            // of the next one.
            say(format!("LOST n={n} last={}", last.unwrap_or(0)));
            c = open_retry(&ch);
            session += 1;
            say("REOPENED");
            continue;
        }
        let s = match r {
            Ok(s) => s,
            Err(Error::Timeout) if mode == "resume" => continue,
            Err(e) => panic!("recv after {n} samples (last {last:?}): {e}"),
        };
        let seq = check(&s, full, &mut scratch).unwrap_or_else(|e| panic!("sample {n}: {e}"));
        match (mode.as_str(), last) {
            ("block", Some(l)) => assert_eq!(seq, l + 1, "Block: out of order or lost"),
            ("block", None) => assert_eq!(seq, 0, "Block: the first sample is not 0"),
            (_, Some(l)) => assert!(seq > l, "seq {seq} after {l}: not increasing"),
            _ => {}
        }
        if mode == "block" {
            assert_eq!(s.lagged(), 0, "Block: lagged");
        }
        lagged += s.lagged();
        if first.is_none() {
            say(format!("FIRST seq={seq}"));
            first = Some(seq);
        }
        let is_last = s.meta()[24] == 1;
        last = Some(seq);
        n += 1;
        drop(s);
        match mode.as_str() {
            "block" if n == env::<u64>("BIPS_COUNT") => break,
            "slow" => {
                if is_last {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            "resume" => {
                if n % 50 == 0 {
                    say(format!("PROGRESS n={n} last={seq}"));
                }
                if session > 1 {
                    after += 1;
                    if after == 100 {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    say(format!(
        "RESULT received={n} lagged={lagged} first={} last={} sessions={session}",
        first.unwrap(),
        last.unwrap()
    ));
}

#[test]
fn child() {
    child_entry(&[("producer", producer), ("consumer", consumer)]);
}

// ---------------------------------------------------------------- the parent

/// A running `bips bridge ...`: its own process group, killed on drop.
struct Bridge {
    child: Child,
    lines: Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
    label: String,
}

impl Bridge {
    fn start(label: &str, args: &[&str]) -> Bridge {
        let mut cmd = Command::new(BIPS);
        cmd.arg("bridge")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: runs in the forked child before exec; one async-signal-safe
        // system call (prctl), no locks or allocations.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn bips bridge");
        let err = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                log2.lock().unwrap().push(l.clone());
                let _ = tx.send(l);
            }
        });
        let mut b = Bridge {
            child,
            lines,
            log,
            label: label.to_owned(),
        };
        b.expect("running", Duration::from_secs(20));
        b
    }

    fn expect(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(_) => panic!(
                    "bridge {} printed no {needle:?} within {timeout:?}; it said:\n{}",
                    self.label,
                    self.log.lock().unwrap().join("\n")
                ),
            }
        }
    }

    /// Ctrl-C: it must end by SIGINT within 5 s and print its final counters.
    fn interrupt(mut self) -> String {
        // SAFETY: kill(2) of our own child's process group (not yet reaped).
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "bridge {} did not stop on SIGINT",
                self.label
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(
            status.signal(),
            Some(libc::SIGINT),
            "bridge {} ended with {status:?}; it said:\n{}",
            self.label,
            self.log.lock().unwrap().join("\n")
        );
        self.expect("forwarded=", Duration::from_secs(2))
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: as above.
            unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn field(line: &str, key: &str) -> u64 {
    let pre = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&pre))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .parse()
        .unwrap()
}

struct Setup {
    src: Channel,
    dst: Channel,
    key: String,
    endpoint: String,
}

fn setup(tag: &str) -> Setup {
    let src = Channel::new(&format!("bridge-{tag}-src"));
    let dst = Channel::new(&format!("bridge-{tag}-dst"));
    let key = format!("bips-test/{}/{tag}", std::process::id());
    let endpoint = format!("tcp/127.0.0.1:{}", free_port());
    Setup {
        src,
        dst,
        key,
        endpoint,
    }
}

fn start_producer(s: &Setup, policy: &str, mode: &str, buffers: u32, count: u64) -> Proc {
    let mut p = spawn(ENTRY, "producer")
        .env("BIPS_CH", s.src.name())
        .env("BIPS_POLICY", policy)
        .env("BIPS_MODE", mode)
        .env("BIPS_BUFFERS", buffers)
        .env("BIPS_COUNT", count)
        .start();
    p.expect_line("READY", Duration::from_secs(20));
    p
}

fn start_publish(s: &Setup) -> Bridge {
    Bridge::start(
        "publish",
        &[
            "publish",
            s.src.name(),
            "--key",
            &s.key,
            "--listen",
            &s.endpoint,
        ],
    )
}

fn start_subscribe(s: &Setup, policy: &str) -> Bridge {
    Bridge::start(
        "subscribe",
        &[
            "subscribe",
            &s.key,
            "--channel",
            s.dst.name(),
            "--buffers",
            "4",
            "--size",
            &SIZE.to_string(),
            "--policy",
            policy,
            "--connect",
            &s.endpoint,
        ],
    )
}

#[test]
fn block_carries_1000_checked_samples_in_order() {
    let s = setup("block");
    let mut producer = start_producer(&s, "block", "count", 4, 1000);
    let publish = start_publish(&s);
    let subscribe = start_subscribe(&s, "block");
    let mut consumer = spawn(ENTRY, "consumer")
        .env("BIPS_CH", s.dst.name())
        .env("BIPS_MODE", "block")
        .env("BIPS_COUNT", 1000)
        .start();
    consumer.expect_line("READY", Duration::from_secs(20));
    producer.send("go");
    let r = consumer.expect_result(Duration::from_secs(120));
    assert_eq!(r.u64("received"), 1000);
    assert_eq!((r.u64("first"), r.u64("last")), (0, 999));
    consumer.expect_success(Duration::from_secs(10));
    producer.expect_result(Duration::from_secs(10));
    producer.send("exit");
    producer.expect_success(Duration::from_secs(10));
    let sub = subscribe.interrupt();
    assert_eq!(field(&sub, "forwarded"), 1000, "{sub}");
    assert_eq!(field(&sub, "dropped"), 0, "{sub}");
    // One stream: the source's last sample was not sent again when its
    // producer left.
    assert_eq!(field(&sub, "sessions"), 1, "{sub}");
    let publ = publish.interrupt();
    assert_eq!(field(&publ, "forwarded"), 1000, "{publ}");
    s.dst.assert_removed();
    s.src.assert_removed();
}

#[test]
fn drop_oldest_with_a_slow_consumer_reports_drops_instead_of_stalling() {
    let s = setup("drop");
    const BURST: u64 = 2000;
    // 2 buffers at the source: the publishing bridge cannot keep up with a
    // producer that only stamps a header, so it skips samples (DropOldest).
    let mut producer = start_producer(&s, "drop", "warm", 2, BURST);
    let publish = start_publish(&s);
    let subscribe = start_subscribe(&s, "drop-oldest");
    let mut consumer = spawn(ENTRY, "consumer")
        .env("BIPS_CH", s.dst.name())
        .env("BIPS_MODE", "slow")
        .start();
    consumer.expect_line("READY", Duration::from_secs(20));
    // Warm-up samples (one per 20 ms) reach the consumer: the route is up.
    consumer.expect_line("FIRST", Duration::from_secs(30));
    producer.send("go");
    let p = producer.expect_result(Duration::from_secs(60));
    let sent = p.u64("sent");
    // 5 ms per sample: carried losslessly the burst would take 10 s.
    assert!(
        p.u64("ms") < 5000,
        "the producer was stalled by the slow consumer: {p:?}"
    );
    let r = consumer.expect_result(Duration::from_secs(60));
    consumer.expect_success(Duration::from_secs(10));
    producer.send("exit");
    producer.expect_success(Duration::from_secs(10));
    let sub = subscribe.interrupt();
    let publ = publish.interrupt();
    let (received, lagged, first) = (r.u64("received"), r.u64("lagged"), r.u64("first"));
    let dropped = field(&sub, "dropped");
    eprintln!("drop-oldest: producer {p:?}\nconsumer {r:?}\n{sub}\n{publ}");
    assert_eq!(
        r.u64("last"),
        sent - 1,
        "the last sample must arrive: {r:?}"
    );
    assert!(
        dropped > 0,
        "the subscribing bridge reported no drops: {sub} / {publ}"
    );
    assert_eq!(field(&sub, "sessions"), 1, "{sub}");
    // Every sample from the consumer's first on is received, skipped by the
    // consumer (lagged) or counted as dropped upstream by the bridge.
    let accounted = received + lagged + dropped;
    assert!(
        accounted >= sent - first && accounted <= sent,
        "received {received} + lagged {lagged} + dropped {dropped} = {accounted}, \
         expected between {} and {sent} (first {first}); {sub}",
        sent - first
    );
    s.dst.assert_removed();
    s.src.assert_removed();
}

#[test]
fn subscribe_side_killed_and_restarted_resumes_the_stream() {
    let s = setup("restart");
    let mut producer = start_producer(&s, "block", "stream", 8, 0);
    let publish = start_publish(&s);
    let mut sub1 = start_subscribe(&s, "block");
    let mut consumer = spawn(ENTRY, "consumer")
        .env("BIPS_CH", s.dst.name())
        .env("BIPS_MODE", "resume")
        .start();
    consumer.expect_line("READY", Duration::from_secs(20));
    let before = consumer.expect_line("PROGRESS", Duration::from_secs(30));
    sub1.kill9();
    let lost = consumer.expect_line("LOST", Duration::from_secs(30));
    let sub2 = start_subscribe(&s, "block");
    consumer.expect_line("REOPENED", Duration::from_secs(30));
    let r = consumer.expect_result(Duration::from_secs(60));
    consumer.expect_success(Duration::from_secs(10));
    assert_eq!(r.u64("sessions"), 2);
    // Strictly increasing app sequences across both sessions (checked in the
    // child) and samples after the restart: the last is past the loss.
    let last_before = field(&lost, "last");
    assert!(field(&before, "n") >= 50);
    assert!(
        r.u64("last") >= last_before + 100,
        "after the restart: {r:?}, before: {lost}"
    );
    producer.send("stop");
    producer.expect_result(Duration::from_secs(10));
    producer.expect_success(Duration::from_secs(10));
    let sub = sub2.interrupt();
    assert!(field(&sub, "forwarded") >= 100, "{sub}");
    eprintln!("restart: consumer {before} / {lost} / {r:?}\n{sub}");
    let publ = publish.interrupt();
    assert!(field(&publ, "sessions") >= 1, "{publ}");
    s.dst.assert_removed();
    s.src.assert_removed();
}

/// Bad key expressions, endpoints and channel names are refused before
/// anything starts (exit status 2, a message that says what is wrong), and
/// leave nothing in /dev/shm. No network traffic: nothing gets that far.
#[test]
fn bad_arguments_are_refused_with_exit_status_2() {
    let ch = Channel::new("bridge-bad");
    for (args, says) in [
        (
            vec![
                "publish",
                "x",
                "--key",
                "a//b",
                "--listen",
                "tcp/127.0.0.1:1",
            ],
            "invalid key expression \"a//b\"",
        ),
        (
            vec!["publish", "x", "--key", "k", "--listen", "udp/127.0.0.1:1"],
            "transport \"udp\" is not built in",
        ),
        (
            vec!["publish", "x", "--key", "k", "--connect", "tcp/127.0.0.1"],
            "no port",
        ),
        (
            vec![
                "publish",
                "bad/name",
                "--key",
                "k",
                "--listen",
                "tcp/127.0.0.1:1",
            ],
            "invalid channel name",
        ),
        (
            vec![
                "subscribe",
                "k",
                "--channel",
                ch.name(),
                "--size",
                "64",
                "--connect",
                "nonsense",
            ],
            "invalid endpoint \"nonsense\"",
        ),
    ] {
        let out = Command::new(BIPS)
            .arg("bridge")
            .args(&args)
            .output()
            .expect("run bips");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains(".rs:"), "{args:?}: a source location: {err}");
    }
    ch.assert_removed();
}
