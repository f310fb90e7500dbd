//! Shared by the bridge test files (`bridge.rs`, `bridge_faults.rs`): the
//! producer and consumer child roles, a running `bips bridge` process, and
//! the setup of a channel pair over 127.0.0.1. Not every file uses every
//! helper.
#![allow(dead_code)]
use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bips::{Consumer, DType, Descriptor, Error, Options, Producer};
use bips_tests::{
    env, expect_order, fill_meta, fill_payload, say, spawn, verify_meta, verify_payload, Channel,
    Proc,
};

pub const BIPS: &str = env!("CARGO_BIN_EXE_bips");
pub const ENTRY: &str = "child";
pub const SIZE: usize = 64 * 1024;
pub const TAG: u64 = 0xB21D_6E00;

pub fn descriptor() -> Descriptor {
    // 128 x 128 RGBA u8 = exactly 64 KiB.
    Descriptor::image(128, 128, 4, DType::U8)
        .and_then(|d| d.with_format("RGBA"))
        .expect("descriptor")
}

pub fn timestamp_of(seq: u64) -> u64 {
    1_000_000 + seq * 1000 + 7
}

/// The payload of app sequence `seq`: `fill_payload` in full (`full`), or
/// its 16-byte header followed by a fixed pattern (cheap to write, so that a
/// producer can outrun the bridge).
pub fn fill(seq: u64, buf: &mut [u8], full: bool) {
    if full {
        fill_payload(seq, TAG, buf);
    } else {
        fill_payload(seq, TAG, &mut buf[..16]);
        for (i, b) in buf[16..].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(7);
        }
    }
}

pub fn check(s: &bips::Sample<'_>, full: bool, scratch: &mut Vec<u8>) -> Result<u64, String> {
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
pub fn publish_one(p: &Producer, seq: u64, full: bool, last: bool) {
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
/// `stream` publishes every 2 ms until stdin closes or says `stop` (after
/// order `go` when BIPS_GO=1; BIPS_EARLY samples at once, then once a
/// consumer is attached), app sequences from BIPS_FIRST (default 0).
pub fn producer() {
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
    let mut seq: u64 = bips_tests::env_or("BIPS_FIRST", 0);
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
            if bips_tests::env_or("BIPS_GO", 0) == 1 {
                expect_order("go");
            }
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let s2 = stop.clone();
            std::thread::spawn(move || {
                let _ = bips_tests::read_order();
                s2.store(true, std::sync::atomic::Ordering::Relaxed);
            });
            // BIPS_EARLY samples before anyone is attached (fewer than the
            // buffers: they stay retained).
            for _ in 0..bips_tests::env_or("BIPS_EARLY", 0u64) {
                publish_one(&p, seq, full, false);
                seq += 1;
            }
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

pub fn open_retry(ch: &str) -> Consumer {
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
pub fn consumer() {
    let ch: String = env("BIPS_CH");
    let mode: String = env("BIPS_MODE");
    if mode == "gaps" {
        return consumer_gaps(&ch);
    }
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

// ---------------------------------------------------------------- the parent

/// Consumer mode `gaps`: reads until order `stop` (or `stop-at N`: once app
/// sequence N or a later one arrived, at most 60 s later), checks every sample
/// (BIPS_FULL: the whole payload, default true), asserts strictly increasing
/// app sequences and counts the ones missing between consecutive samples
/// (`gaps`). A jump from below BIPS_BOUNDARY to at or above it is a new
/// producer (`sessions`), not a gap. Says `PROGRESS n= last= gaps=` every 50
/// samples, then `RESULT received= gaps= lagged= first= last= sessions=
/// first_after=` (the first app sequence at or above BIPS_BOUNDARY, or 0).
pub fn consumer_gaps(ch: &str) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let full: bool = bips_tests::env_or("BIPS_FULL", true);
    let boundary: u64 = bips_tests::env_or("BIPS_BOUNDARY", u64::MAX);
    let c = open_retry(ch);
    let stop = Arc::new(AtomicBool::new(false));
    let until = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let (s2, u2) = (stop.clone(), until.clone());
    std::thread::spawn(move || {
        match bips_tests::read_order()
            .as_deref()
            .and_then(|o| o.strip_prefix("stop-at "))
        {
            Some(n) => u2.store(n.parse().expect("stop-at N"), Ordering::Relaxed),
            None => s2.store(true, Ordering::Relaxed),
        }
    });
    say("READY");
    let mut scratch = Vec::new();
    let (mut n, mut gaps, mut lagged, mut sessions) = (0u64, 0u64, 0u64, 1u64);
    let (mut first, mut last, mut first_after) = (None::<u64>, None::<u64>, 0u64);
    let mut deadline = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let u = until.load(Ordering::Relaxed);
        if u != u64::MAX {
            if last.is_some_and(|l| l >= u) {
                break;
            }
            let d = *deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(60));
            if Instant::now() > d {
                break;
            }
        }
        let s = match c.recv_timeout(Duration::from_millis(100)) {
            Ok(s) => s,
            Err(Error::Timeout) => continue,
            Err(e) => panic!("recv after {n} samples (last {last:?}): {e}"),
        };
        let seq = check(&s, full, &mut scratch).unwrap_or_else(|e| panic!("sample {n}: {e}"));
        if let Some(l) = last {
            assert!(seq > l, "seq {seq} after {l}: duplicated or reordered");
            if l < boundary && seq >= boundary {
                sessions += 1;
                first_after = seq;
            } else {
                gaps += seq - l - 1;
            }
        }
        lagged += s.lagged();
        first.get_or_insert(seq);
        last = Some(seq);
        n += 1;
        if n % 50 == 0 {
            say(format!("PROGRESS n={n} last={seq} gaps={gaps}"));
        }
    }
    say(format!(
        "RESULT received={n} gaps={gaps} lagged={lagged} first={} last={} sessions={sessions} \
         first_after={first_after}",
        first.unwrap_or(0),
        last.unwrap_or(0)
    ));
}

/// A running `bips bridge ...`: its own process group, killed on drop.
pub struct Bridge {
    child: Child,
    lines: Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
    label: String,
}

impl Bridge {
    pub fn start(label: &str, args: &[&str]) -> Bridge {
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

    pub fn expect(&mut self, needle: &str, timeout: Duration) -> String {
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

    /// Ctrl-C: it must end by SIGINT within 5 s and print its final counters
    /// (the last counter line it printed: earlier ones are logged while it
    /// runs).
    pub fn interrupt(mut self) -> String {
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
        // Its stderr ends (the reader thread drops the sender) once the
        // process is gone: the last counter line is the final one.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains("forwarded=") => last = Some(l),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("bridge {}: stderr not closed", self.label)
                }
            }
        }
        last.unwrap_or_else(|| {
            panic!(
                "bridge {} printed no final counters; it said:\n{}",
                self.label,
                self.log()
            )
        })
    }

    /// Its process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `sig` to its process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) of our own child (not yet reaped: `child` is owned
        // and only waited for by `kill9`, `interrupt` or drop).
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0, "kill {sig}");
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its resident set (VmRSS of /proc/PID/status), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Everything it printed on stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn kill9(&mut self) {
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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn field(line: &str, key: &str) -> u64 {
    let pre = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&pre))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .parse()
        .unwrap()
}

pub struct Setup {
    pub src: Channel,
    pub dst: Channel,
    pub key: String,
    pub endpoint: String,
}

pub fn setup(tag: &str) -> Setup {
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

pub fn start_producer(s: &Setup, policy: &str, mode: &str, buffers: u32, count: u64) -> Proc {
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

pub fn start_publish(s: &Setup) -> Bridge {
    start_publish_at(s, &s.endpoint)
}

/// `bips bridge publish` of `s.src`, listening on `listen`.
pub fn start_publish_at(s: &Setup, listen: &str) -> Bridge {
    Bridge::start(
        "publish",
        &["publish", s.src.name(), "--key", &s.key, "--listen", listen],
    )
}

pub fn start_subscribe(s: &Setup, policy: &str) -> Bridge {
    start_subscribe_to(s, policy, &s.endpoint)
}

/// `bips bridge subscribe` into `s.dst` (4 x 64 KiB, `policy`), connecting
/// to `connect`.
pub fn start_subscribe_to(s: &Setup, policy: &str, connect: &str) -> Bridge {
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
            connect,
        ],
    )
}

/// A TCP relay on 127.0.0.1 between the two bridges (the subscribing one
/// connects to it, it connects to the publishing one): the test cuts the
/// link (closes every connection and, until [`Relay::restore`], closes each
/// new one at once) and restores it. Counts the bytes it carried.
pub struct Relay {
    /// The port the relay listens on.
    pub port: u16,
    cut: Arc<std::sync::atomic::AtomicBool>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<Mutex<Vec<std::net::TcpStream>>>,
    bytes: Arc<std::sync::atomic::AtomicU64>,
}

impl Relay {
    /// Relays 127.0.0.1:(a free port) to 127.0.0.1:`target`.
    pub fn start(target: u16) -> Relay {
        use std::net::{Shutdown, TcpListener, TcpStream};
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let l = TcpListener::bind("127.0.0.1:0").expect("relay bind");
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let bytes = Arc::new(AtomicU64::new(0));
        let (c2, s2, k2, b2) = (cut.clone(), stop.clone(), conns.clone(), bytes.clone());
        std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                let down = match l.accept() {
                    Ok((down, _)) => down,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                if c2.load(Ordering::Relaxed) {
                    let _ = down.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(up) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                down.set_nonblocking(false).unwrap();
                let mut k = k2.lock().unwrap();
                for (from, to) in [(&down, &up), (&up, &down)] {
                    let (mut from, mut to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    let b = b2.clone();
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            match from.read(&mut buf) {
                                Ok(n) if n > 0 && to.write_all(&buf[..n]).is_ok() => {
                                    b.fetch_add(n as u64, Ordering::Relaxed);
                                }
                                _ => break,
                            }
                        }
                        let _ = from.shutdown(Shutdown::Both);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
                k.push(down);
                k.push(up);
                if c2.load(Ordering::Relaxed) {
                    // Cut while this one was being set up.
                    for c in k.drain(..) {
                        let _ = c.shutdown(Shutdown::Both);
                    }
                }
            }
        });
        Relay {
            port,
            cut,
            stop,
            conns,
            bytes,
        }
    }

    /// Cuts the link: closes every relayed connection; new ones are closed
    /// as soon as accepted until [`Relay::restore`].
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::Relaxed);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Accepts and relays connections again.
    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Bytes carried so far (both directions).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.cut();
    }
}
