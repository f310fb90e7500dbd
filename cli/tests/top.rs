//! `bips top` and `bips metrics` as users run them: the built `bips` binary
//! watching real producer and consumer processes over real channels (both
//! backends).
//!
//! * `--json` reports the channel: producer alive, a rate near the
//!   producer's, the consumer's lag and held samples as the consumer itself
//!   reports them; a producer killed with SIGKILL shows as not alive.
//! * The live view in tmux (80 x 24): the channel and a non-zero rate show,
//!   the counters refresh, `q` quits and the terminal is restored; so does a
//!   SIGTERM and a panic.
//! * top never disturbs a channel: the consumer count and the producer's
//!   Block pacing are the same while it runs; `--latency` is a consumer and
//!   says so.
//! * `bips metrics` on 127.0.0.1: the exposition parses and its values match.
//!
//! tmux is required (scripts/setup.sh installs it): without it the tmux
//! tests fail and say so.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bips::{Backend, Backpressure, Consumer, Options, Producer};
use bips_tests::{child_entry, children_of, env, env_or, say, spawn, Channel, Proc};
use serde_json::Value;

const BIPS: &str = env!("CARGO_BIN_EXE_bips");
const ENTRY: &str = "child";
const T: Duration = Duration::from_secs(10);

// ------------------------------------------------------------------ children

#[test]
fn child() {
    child_entry(&[("producer", producer), ("consumer", consumer)]);
}

/// Creates `BIPS_CHANNEL` (8 buffers; `BIPS_POLICY` block or drop; on the
/// memfd backend in `BIPS_SOCKET_DIR` when `BIPS_MEMFD` is set) and
/// publishes `BIPS_RATE` samples/s (0: as fast as the channel lets it).
fn producer() {
    let name: String = env("BIPS_CHANNEL");
    let policy = match env::<String>("BIPS_POLICY").as_str() {
        "block" => Backpressure::Block,
        _ => Backpressure::DropOldest,
    };
    let rate: f64 = env_or("BIPS_RATE", 0.0);
    let mut opts = Options::new(8, 256).backpressure(policy).max_consumers(4);
    if std::env::var_os("BIPS_MEMFD").is_some() {
        opts = opts.backend(Backend::Memfd);
    }
    let p = Producer::create(&name, &opts).expect("create the channel");
    say("READY");
    let start = Instant::now();
    for n in 0u64.. {
        if rate > 0.0 {
            let due = start + Duration::from_secs_f64(n as f64 / rate);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let mut s = p.loan().expect("loan");
        s.as_mut_slice()[..8].copy_from_slice(&n.to_le_bytes());
        s.publish().expect("publish");
    }
}

/// Opens `BIPS_CHANNEL`, receives and keeps `BIPS_HOLD` samples, says
/// `READY entry=E cursor=C held=H`; then receives one sample every
/// `BIPS_RECV_MS` ms (releasing it), or, with 0, nothing more.
fn consumer() {
    let name: String = env("BIPS_CHANNEL");
    let hold: usize = env_or("BIPS_HOLD", 0);
    let every: u64 = env_or("BIPS_RECV_MS", 0);
    let c = Consumer::open(&name).expect("open the channel");
    let mut held = Vec::new();
    while held.len() < hold {
        held.push(c.recv_timeout(T).expect("recv"));
    }
    let cursor = held.last().map_or(0, |s| s.seq() + 1);
    say(format!(
        "READY entry={} cursor={cursor} held={}",
        c.entry_index(),
        held.len()
    ));
    loop {
        if every == 0 {
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        let s = c.recv_timeout(T).expect("recv");
        std::thread::sleep(Duration::from_millis(every));
        drop(s);
    }
}

// ------------------------------------------------------------------ helpers

fn start_producer(ch: &Channel, policy: &str, rate: u32) -> Proc {
    let mut p = spawn(ENTRY, "producer")
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_POLICY", policy)
        .env("BIPS_RATE", rate)
        .start();
    p.expect_line("READY", T);
    p
}

struct ConsumerChild {
    /// Kept to keep the child alive (killed on drop).
    _proc: Proc,
    entry: u64,
    cursor: u64,
    held: u64,
}

fn start_consumer(ch: &Channel, hold: usize, recv_ms: u64) -> ConsumerChild {
    let mut proc = spawn(ENTRY, "consumer")
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_HOLD", hold)
        .env("BIPS_RECV_MS", recv_ms)
        .start();
    let f = bips_tests::Fields::parse(&proc.expect_line("READY", T));
    ConsumerChild {
        entry: f.u64("entry"),
        cursor: f.u64("cursor"),
        held: f.u64("held"),
        _proc: proc,
    }
}

/// `bips ARGS` to completion; its stdout (it must succeed).
fn bips(args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = Command::new(BIPS)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run bips");
    assert!(
        out.status.success(),
        "bips {args:?}: {:?}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `bips top --json --interval S NAME`: the object of channel `name`.
fn top_json(name: &str, interval: &str, extra: &[&str], envs: &[(&str, &str)]) -> Value {
    let mut args = vec!["top", "--json", "--interval", interval];
    args.extend_from_slice(extra);
    args.push(name);
    let doc: Value = serde_json::from_str(&bips(&args, envs)).expect("top --json is JSON");
    doc["channels"]
        .as_array()
        .expect("channels array")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {doc:#}"))
        .clone()
}

fn consumer_entry(ch: &Value, entry: u64) -> &Value {
    ch["consumers"]
        .as_array()
        .expect("consumers")
        .iter()
        .find(|c| c["index"] == entry)
        .unwrap_or_else(|| panic!("no consumer entry {entry} in {ch:#}"))
}

fn live_consumers(name: &str) -> usize {
    bips::monitor::inspect(name)
        .expect("inspect")
        .consumers
        .iter()
        .filter(|c| c.alive)
        .count()
}

fn head(name: &str) -> u64 {
    bips::monitor::inspect(name).expect("inspect").head
}

// ------------------------------------------------------------------ tmux

/// A tmux server of our own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `cmd` in an 80 x 24 session. Fails, pointing at
    /// scripts/setup.sh, when tmux is missing.
    fn start(cmd: &str) -> Tmux {
        let socket = format!("bips-top-test-{}-{}", std::process::id(), unique());
        let t = Tmux { socket };
        match Command::new("tmux").arg("-V").output() {
            Ok(o) if o.status.success() => {}
            _ => panic!(
                "tmux is not installed: the `bips top` terminal tests need it; \
                 run scripts/setup.sh (it installs tmux with the other APT packages)"
            ),
        }
        // The pane's shell keeps the pane open after the command, so the
        // state of the terminal can be read afterwards.
        let script = format!("{cmd}; echo EXITED=$?; stty -a; echo STTY-DONE; sleep 60");
        t.run(&[
            "new-session",
            "-d",
            "-x",
            "80",
            "-y",
            "24",
            "-s",
            "top",
            "sh",
            "-c",
            &script,
        ]);
        t
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn capture(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }

    /// Waits until the pane shows `what`; the capture.
    fn wait_for(&self, what: &str) -> String {
        let deadline = Instant::now() + T;
        loop {
            let c = self.capture();
            if c.contains(what) {
                return c;
            }
            assert!(Instant::now() < deadline, "{what:?} never showed:\n{c}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The pid of the pane's command (`sh -c ...`).
    fn pane_pid(&self) -> i32 {
        self.run(&["display-message", "-p", "-t", "top", "#{pane_pid}"])
            .trim()
            .parse()
            .expect("pane pid")
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
        // The server's socket file (tmux leaves it behind).
        let dir = std::env::var("TMUX_TMPDIR").unwrap_or_else(|_| "/tmp".to_owned());
        // SAFETY: getuid(2) has no preconditions.
        let uid = unsafe { libc::getuid() };
        let _ = std::fs::remove_file(format!("{dir}/tmux-{uid}/{}", self.socket));
    }
}

/// Whether process `pid` exists and is not a zombie.
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|st| {
            let after = st.rsplit_once(')')?.1;
            after
                .split_whitespace()
                .next()
                .map(|s| s != "Z" && s != "X")
        })
        .unwrap_or(false)
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Asserts that the shell after `bips top` has its terminal back: cooked
/// mode and echo (`stty -a` shows `icanon` and `echo`, not `-icanon`,
/// `-echo`), the main screen (top's title is gone), and the exit line.
#[track_caller]
fn assert_restored(screen: &str, exit_line: &str) {
    assert!(screen.contains(exit_line), "no {exit_line}:\n{screen}");
    let words: Vec<&str> = screen.split_whitespace().collect();
    for flag in ["icanon", "echo", "isig"] {
        assert!(
            words.contains(&flag) && !words.contains(&format!("-{flag}").as_str()),
            "terminal not restored ({flag}):\n{screen}"
        );
    }
    assert!(
        !screen.contains("sort: name"),
        "top's screen is still shown (alternate screen not left):\n{screen}"
    );
}

// ------------------------------------------------------------------ tests

/// `--json`: producer alive, a rate near the producer's 200/s, the held
/// consumer's entry, lag (head - its cursor, as it reports) and held count;
/// after kill -9 of the producer, not alive.
#[test]
fn json_reports_rate_lag_held_and_a_dead_producer() {
    let ch = Channel::new("top-json");
    let mut prod = start_producer(&ch, "drop", 200);
    let cons = start_consumer(&ch, 3, 0);
    // Let the rate settle, then one report over 1 s.
    std::thread::sleep(Duration::from_millis(300));
    let c = top_json(ch.name(), "1", &[], &[]);
    assert_eq!(c["producer_alive"], true, "{c:#}");
    assert_eq!(c["state"], "open");
    assert_eq!(c["backend"], "shm");
    assert_eq!(c["policy"], "drop-oldest");
    assert_eq!(c["consumers_alive"], 1, "{c:#}");
    let rate = c["samples_per_s"].as_f64().expect("a rate");
    assert!((100.0..=300.0).contains(&rate), "rate {rate} for 200/s");
    let published = c["published_total"].as_u64().unwrap();
    assert!(published >= cons.cursor + 100, "{c:#}");
    let k = consumer_entry(&c, cons.entry);
    assert_eq!(k["alive"], true);
    assert_eq!(k["held"].as_u64(), Some(cons.held), "{k:#}");
    assert_eq!(k["cursor"].as_u64(), Some(cons.cursor), "{k:#}");
    assert_eq!(k["lag"].as_u64(), Some(published - cons.cursor), "{k:#}");
    assert_eq!(c["buffers"]["held"].as_u64(), Some(cons.held));
    assert_eq!(c["buffers"]["total"], 8);
    let age = c["newest_sample_age_s"].as_f64().expect("an age");
    assert!(
        (0.0..1.0).contains(&age),
        "newest sample {age} s old at 200/s"
    );
    assert_eq!(c["latency"], Value::Null, "no --latency, no latency");

    prod.kill9();
    let c = top_json(ch.name(), "0.1", &[], &[]);
    assert_eq!(c["producer_alive"], false, "{c:#}");
    assert_eq!(c["state"], "stale", "{c:#}");
    assert_eq!(c["samples_per_s"].as_f64(), Some(0.0), "{c:#}");
    drop(cons);
}

/// The memfd backend: a channel served on a socket shows in top with its
/// rate; once its producer is killed, as stale and not alive.
#[test]
fn json_sees_memfd_channels() {
    let ch = Channel::new("top-memfd");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("top-sock-{}", unique()));
    std::fs::create_dir_all(&dir).expect("socket dir");
    let d = dir.to_str().unwrap().to_owned();
    let mut prod = spawn(ENTRY, "producer")
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_POLICY", "drop")
        .env("BIPS_RATE", 200)
        .env("BIPS_MEMFD", 1)
        .env("BIPS_SOCKET_DIR", &d)
        .start();
    prod.expect_line("READY", T);
    let envs = [("BIPS_SOCKET_DIR", d.as_str())];
    let c = top_json(ch.name(), "0.5", &[], &envs);
    assert_eq!(c["backend"], "memfd", "{c:#}");
    assert_eq!(c["producer_alive"], true, "{c:#}");
    let rate = c["samples_per_s"].as_f64().expect("a rate");
    assert!((100.0..=300.0).contains(&rate), "rate {rate} for 200/s");
    prod.kill9();
    let c = top_json(ch.name(), "0.1", &[], &envs);
    assert_eq!(c["producer_alive"], false, "{c:#}");
    assert_eq!(c["state"], "stale", "{c:#}");
    std::fs::remove_dir_all(&dir).expect("remove the socket dir");
}

/// The live view in tmux at 80 x 24: the channel, a non-zero rate,
/// refreshing counters, every line within 80 columns and nothing cut off
/// the right edge; `q` quits and gives the terminal back.
#[test]
fn live_view_in_tmux_refreshes_and_quits_on_q() {
    let ch = Channel::new("top-tmux");
    let _prod = start_producer(&ch, "drop", 200);
    let _cons = start_consumer(&ch, 1, 0);
    let tmux = Tmux::start(&format!("{BIPS} top --interval 0.2 {}", ch.name()));
    let first = tmux.wait_for(ch.name());
    // The title, the header in full (its last column is AGE), the name line,
    // then the channel's row: PROD POL RATE ... (the name is on its own line).
    let lines: Vec<&str> = first.lines().collect();
    assert!(lines[0].starts_with("bips top - 1 channel"), "{first}");
    assert!(lines[1].trim_end().ends_with("AGE"), "header cut:\n{first}");
    for l in &lines {
        assert!(l.chars().count() <= 80, "wider than 80: {l:?}");
    }
    let row_of = |screen: &str| -> Vec<String> {
        let ls: Vec<&str> = screen.lines().collect();
        let i = ls
            .iter()
            .position(|l| l.trim() == ch.name())
            .unwrap_or_else(|| panic!("no name line:\n{screen}"));
        ls[i + 1].split_whitespace().map(str::to_owned).collect()
    };
    // A rate shows once two looks were taken.
    let deadline = Instant::now() + T;
    let rate = loop {
        let row = row_of(&tmux.capture());
        assert_eq!(row[0], "up", "{row:?}");
        if let Ok(r) = row[2].parse::<f64>() {
            break r;
        }
        assert!(Instant::now() < deadline, "no rate: {row:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(rate > 50.0, "rate {rate} for 200/s");
    // The counters move: some later capture differs (rate, lag, age).
    let a = tmux.capture();
    let moved = (0..40).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        tmux.capture() != a
    });
    assert!(moved, "the screen never changed:\n{a}");
    tmux.run(&["send-keys", "-t", "top", "q"]);
    let after = tmux.wait_for("STTY-DONE");
    assert_restored(&after, "EXITED=0");
}

/// SIGTERM (and SIGHUP, as a dropped SSH session sends) ends top with the
/// terminal restored and the signal's status; so does a panic.
#[test]
fn terminal_restored_on_sigterm_and_on_panic() {
    let ch = Channel::new("top-sig");
    let _prod = start_producer(&ch, "drop", 100);
    let tmux = Tmux::start(&format!("{BIPS} top --interval 0.2 {}", ch.name()));
    tmux.wait_for(ch.name());
    let sh = tmux.pane_pid();
    let top = children_of(sh);
    assert_eq!(top.len(), 1, "the pane's shell runs top: {top:?}");
    // SAFETY: kill(2) of the bips top process we started (our tmux's child).
    assert_eq!(unsafe { libc::kill(top[0], libc::SIGTERM) }, 0);
    let after = tmux.wait_for("STTY-DONE");
    assert_restored(&after, &format!("EXITED={}", 128 + libc::SIGTERM));
    drop(tmux);

    let tmux = Tmux::start(&format!(
        "RUST_BACKTRACE=0 BIPS_TOP_TEST_PANIC=1 {BIPS} top --interval 0.2 {}",
        ch.name()
    ));
    let after = tmux.wait_for("STTY-DONE");
    assert_restored(&after, "EXITED=101");
    assert!(after.contains("panicking on purpose"), "{after}");
}

/// Not disturbing: a Block channel paced by one slow consumer (20 ms per
/// sample) keeps one consumer and its pace while top refreshes every 0.1 s;
/// `--latency` attaches a consumer (documented) and measures latency.
#[test]
fn top_does_not_disturb_a_block_channel_but_latency_is_a_consumer() {
    let ch = Channel::new("top-block");
    let _prod = start_producer(&ch, "block", 0);
    let _cons = start_consumer(&ch, 0, 20);
    std::thread::sleep(Duration::from_millis(300));
    let pace = |secs: f64| {
        let h0 = head(ch.name());
        let t0 = Instant::now();
        let mut max_consumers = 0;
        while t0.elapsed().as_secs_f64() < secs {
            max_consumers = max_consumers.max(live_consumers(ch.name()));
            std::thread::sleep(Duration::from_millis(20));
        }
        (
            (head(ch.name()) - h0) as f64 / t0.elapsed().as_secs_f64(),
            max_consumers,
        )
    };
    let (before, n_before) = pace(1.5);
    assert_eq!(n_before, 1);
    assert!(before > 10.0, "the producer publishes: {before}/s");
    // top, live and refreshing fast, then --once and --json.
    let tmux = Tmux::start(&format!("{BIPS} top --interval 0.1 {}", ch.name()));
    tmux.wait_for(ch.name());
    let (during, n_during) = pace(1.5);
    assert_eq!(n_during, 1, "top must not attach as a consumer");
    assert!(
        during > before * 0.6 && during < before * 1.6,
        "pace {before:.1}/s before top, {during:.1}/s during"
    );
    // The terminal goes away under top (tmux killed, as a dropped SSH
    // session): top must end, not spin on a dead terminal.
    let top = children_of(tmux.pane_pid());
    assert_eq!(top.len(), 1, "the pane's shell runs top: {top:?}");
    drop(tmux);
    if !bips_tests::wait_until(T, || !running(top[0])) {
        // SAFETY: kill(2) of the bips top we started, so the failure leaves
        // nothing behind.
        unsafe { libc::kill(top[0], libc::SIGKILL) };
        panic!(
            "bips top (pid {}) still ran 10 s after its terminal hung up",
            top[0]
        );
    }
    let c = top_json(ch.name(), "0.5", &[], &[]);
    assert_eq!(c["consumers_alive"], 1, "{c:#}");
    let once = bips(&["top", "--once", "--interval", "0.2", ch.name()], &[]);
    assert!(!once.contains('\x1b'), "control codes in --once: {once:?}");
    assert!(once.contains(ch.name()), "{once}");
    for l in once.lines() {
        assert!(l.len() <= 80, "wider than 80: {l:?}");
    }

    // --latency is a consumer: one more entry, marked, with latency figures.
    let c = top_json(ch.name(), "1", &["--latency"], &[]);
    assert_eq!(c["consumers_alive"], 2, "{c:#}");
    let lat = &c["latency"];
    let probe = lat["consumer"].as_u64().expect("probe entry");
    assert_eq!(consumer_entry(&c, probe)["is_latency_probe"], true);
    assert!(lat["samples"].as_u64().unwrap() > 0, "{lat:#}");
    let (p50, p99) = (
        lat["p50_s"].as_f64().unwrap(),
        lat["p99_s"].as_f64().unwrap(),
    );
    assert!(0.0 <= p50 && p50 <= p99 && p99 < 1.0, "{lat:#}");
    // And it detached when top exited.
    assert!(bips_tests::wait_until(T, || live_consumers(ch.name()) == 1));
}

/// `bips metrics` on 127.0.0.1: HELP/TYPE/sample lines only, values that
/// match the channel, counters that grow; SIGINT stops it.
#[test]
fn metrics_serves_prometheus_text_on_localhost() {
    let ch = Channel::new("top-metrics");
    let _prod = start_producer(&ch, "drop", 200);
    let cons = start_consumer(&ch, 2, 0);
    let mut server = Command::new(BIPS)
        .args(["metrics", "--listen", "127.0.0.1:0", ch.name()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bips metrics");
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("the address line");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");

    let scrape = || -> Vec<(String, String, f64)> {
        let mut s = TcpStream::connect(&addr).expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP response");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("text/plain; version=0.0.4"), "{head}");
        parse_exposition(body)
    };
    let get = |m: &[(String, String, f64)], name: &str, labels: &str| -> f64 {
        m.iter()
            .find(|(n, l, _)| n == name && l == labels)
            .unwrap_or_else(|| panic!("no {name}{{{labels}}}"))
            .2
    };
    let chl = format!("channel=\"{}\"", ch.name());
    let cl = format!("{chl},consumer=\"{}\"", cons.entry);
    let m1 = scrape();
    assert_eq!(get(&m1, "bips_producer_alive", &chl), 1.0);
    assert_eq!(get(&m1, "bips_consumers", &chl), 1.0);
    assert_eq!(get(&m1, "bips_consumers_max", &chl), 4.0);
    assert_eq!(get(&m1, "bips_consumer_held", &cl), cons.held as f64);
    assert_eq!(get(&m1, "bips_samples_held", &chl), cons.held as f64);
    let published = get(&m1, "bips_samples_published_total", &chl);
    assert_eq!(
        get(&m1, "bips_consumer_lag", &cl),
        published - cons.cursor as f64
    );
    assert_eq!(
        get(&m1, "bips_consumer_received_total", &cl),
        cons.held as f64
    );
    let buffers: f64 = ["free", "loaned", "published", "retired"]
        .iter()
        .map(|s| get(&m1, "bips_buffers", &format!("{chl},state=\"{s}\"")))
        .sum();
    assert_eq!(buffers, 8.0);
    let info = format!("{chl},backend=\"shm\",policy=\"drop-oldest\",state=\"open\"");
    assert_eq!(get(&m1, "bips_channel_info", &info), 1.0);
    std::thread::sleep(Duration::from_millis(300));
    let m2 = scrape();
    assert!(get(&m2, "bips_samples_published_total", &chl) > published);

    // SAFETY: kill(2) of the server we spawned.
    assert_eq!(unsafe { libc::kill(server.id() as i32, libc::SIGINT) }, 0);
    let deadline = Instant::now() + T;
    let st = loop {
        if let Some(st) = server.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "bips metrics ignored SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(st.signal(), Some(libc::SIGINT), "{st:?}");
    assert!(TcpStream::connect(&addr).is_err(), "still listening");
}

/// Checks every line of a text exposition (`# HELP name text`, `# TYPE
/// name kind`, `name{labels} value`, each sample's family declared before
/// it) and returns the samples.
fn parse_exposition(body: &str) -> Vec<(String, String, f64)> {
    let mut typed = std::collections::HashSet::new();
    let mut out = Vec::new();
    for l in body.lines() {
        if let Some(rest) = l.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(name.starts_with("bips_") && !help.is_empty(), "{l}");
        } else if let Some(rest) = l.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(matches!(kind, "gauge" | "counter"), "{l}");
            assert!(
                kind != "counter" || name.ends_with("_total"),
                "counter without _total: {l}"
            );
            typed.insert(name.to_owned());
        } else {
            let (name, rest) = l
                .split_once('{')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            let (labels, value) = rest.rsplit_once("} ").expect("labels} value");
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{l}"
            );
            assert!(typed.contains(name), "sample before its TYPE: {l}");
            for pair in labels.split(',') {
                let (k, v) = pair.split_once('=').expect("label=value");
                assert!(
                    !k.is_empty() && v.starts_with('"') && v.ends_with('"'),
                    "{l}"
                );
            }
            let v: f64 = value.parse().unwrap_or_else(|_| panic!("value of {l}"));
            out.push((name.to_owned(), labels.to_owned(), v));
        }
    }
    assert!(!out.is_empty(), "no samples");
    out
}
