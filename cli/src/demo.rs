//! `bips demo`: producer and consumers in separate processes, live figures.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bips::{Consumer, ConsumerOptions, Error, Options, Producer, Start};
use clap::Args;

use crate::hist::Histogram;
use crate::{BackendArg, PolicyArg, WaitArg};

type BoxError = Box<dyn std::error::Error>;

/// Frame header magic, written at the start of every demo frame.
const MAGIC: u64 = 0xB1B5_DE40_F8A3_E000;

/// Largest buffer a channel can have (`Geometry::MAX_BUFFER_SIZE`, 1 TiB).
const MAX_FRAME: u64 = 1 << 40;

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Frame width in pixels.
    #[arg(long, default_value_t = 1920, value_parser = clap::value_parser!(u32).range(1..))]
    width: u32,
    /// Frame height in pixels.
    #[arg(long, default_value_t = 1080, value_parser = clap::value_parser!(u32).range(1..))]
    height: u32,
    /// Bytes per pixel (3 = RGB, 4 = RGBA; 1 to 16).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=16))]
    bpp: u32,
    /// Frame size in bytes, 16 B to 1 TiB (overrides width x height x bpp).
    #[arg(long, value_parser = clap::value_parser!(u64).range(16..=MAX_FRAME))]
    size: Option<u64>,
    /// Frames per second to publish (0: as fast as the consumers allow).
    #[arg(long, default_value_t = 0)]
    rate: u32,
    /// Number of consumer processes (1 to 64).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    consumers: u32,
    /// Backpressure policy.
    #[arg(long, value_enum, default_value_t = PolicyArg::Block)]
    policy: PolicyArg,
    /// How long to publish, in seconds (above 0, at most 1000000).
    #[arg(long, default_value_t = 3.0, value_parser = crate::parse_seconds)]
    seconds: f64,
    /// Buffers in the pool (1 to 65536).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=65536))]
    buffers: u32,
    /// How waiting processes wait.
    #[arg(long, value_enum, default_value_t = WaitArg::SpinThenPark)]
    wait: WaitArg,
    /// Where the channel's segment lives.
    #[arg(long, value_enum, default_value_t = BackendArg::Shm)]
    backend: BackendArg,
}

impl DemoArgs {
    /// Bytes per frame: `--size`, else width x height x bpp.
    fn frame_size(&self) -> Result<u64, String> {
        if let Some(size) = self.size {
            return Ok(size);
        }
        let (w, h, b) = (self.width, self.height, self.bpp);
        let size = u64::from(w)
            .checked_mul(u64::from(h))
            .and_then(|x| x.checked_mul(u64::from(b)))
            .filter(|&x| x <= MAX_FRAME)
            .ok_or_else(|| {
                format!("a frame of {w}x{h}x{b} bytes is larger than 1 TiB, the largest buffer")
            })?;
        if size < 16 {
            return Err(format!(
                "a frame of {w}x{h}x{b} = {size} bytes is too small: the demo needs 16 bytes \
                 (a header and a trailer); give larger dimensions or --size"
            ));
        }
        Ok(size)
    }

    /// Checks that span several options (each one alone is checked by clap).
    pub fn validate(&self) -> Result<(), String> {
        self.frame_size().map(|_| ())
    }
}

#[derive(Args, Debug, Clone)]
pub struct ChildArgs {
    #[arg(long)]
    channel: String,
    #[arg(long)]
    size: usize,
    #[arg(long)]
    rate: u32,
    #[arg(long)]
    consumers: u32,
    #[arg(long, value_enum)]
    policy: PolicyArg,
    #[arg(long)]
    seconds: f64,
    #[arg(long)]
    buffers: u32,
    #[arg(long, value_enum)]
    wait: WaitArg,
    #[arg(long, default_value_t = 0)]
    id: u32,
    #[arg(long, default_value_t = 0)]
    width: u32,
    #[arg(long, default_value_t = 0)]
    height: u32,
    #[arg(long, value_enum, default_value_t = BackendArg::Shm)]
    backend: BackendArg,
}

/// A child process of the demo.
struct Kid {
    /// "producer" or "consumer N".
    role: String,
    child: Child,
    /// Reads its stderr; yields the lines once it has exited.
    err: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Kid {
    /// Why it failed, in its own words (its stderr), once it has exited.
    fn reason(&mut self, status: std::process::ExitStatus) -> String {
        let lines = self
            .err
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let said: Vec<&str> = lines
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .map(|l| l.strip_prefix("bips: ").unwrap_or(l))
            .collect();
        if said.is_empty() {
            format!("the {} exited with {status}", self.role)
        } else {
            format!("the {} failed: {}", self.role, said.join("; "))
        }
    }
}

/// The demo's children and channel. On drop (an error, a failed child, a
/// signal): kills and reaps every child still running, then removes the
/// channel if no process uses it any more, so nothing is left behind.
struct Children {
    kids: Vec<Kid>,
    channel: String,
}

impl Children {
    /// `Err` with the reason when a signal came or a child failed; children
    /// that ended well are fine.
    fn check(&mut self) -> Result<(), BoxError> {
        crate::signals::check()?;
        for k in &mut self.kids {
            if let Ok(Some(st)) = k.child.try_wait() {
                if !st.success() {
                    // A child killed by the signal we are about to see:
                    // report the signal, not the child.
                    std::thread::sleep(Duration::from_millis(20));
                    crate::signals::check()?;
                    return Err(k.reason(st).into());
                }
            }
        }
        Ok(())
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for k in &mut self.kids {
            let _ = k.child.kill();
            let _ = k.child.wait();
        }
        // Every process of ours is gone; only a channel nobody uses is
        // removed (never one another process owns under the same name).
        let _ = bips::monitor::remove_if_dead(&self.channel, false);
    }
}

/// A consumer's closing report.
#[derive(Clone)]
struct Report {
    frames: u64,
    lagged: u64,
    errors: u64,
    secs: f64,
    hist: Histogram,
}

enum Msg {
    Stat {
        id: u32,
        received: u64,
        bytes: u64,
        lagged: u64,
        hist: Histogram,
    },
    Final {
        id: u32,
        received: u64,
        lagged: u64,
        errors: u64,
        secs: f64,
        hist: Histogram,
    },
    Published(u64, f64),
    Ready,
    Line(String),
}

fn parse(line: &str) -> Msg {
    let f: Vec<&str> = line.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    match f.first().copied() {
        Some("READY") => Msg::Ready,
        Some("PUBLISHED") => {
            Msg::Published(num(1), f.get(2).and_then(|s| s.parse().ok()).unwrap_or(0.0))
        }
        Some(k @ ("STAT" | "FINAL")) if f.len() >= 7 => {
            let hist = Histogram::decode(f[6]).unwrap_or_default();
            let (id, received, bytes, lagged, errors) =
                (num(1) as u32, num(2), num(3), num(4), num(5));
            if k == "STAT" {
                Msg::Stat {
                    id,
                    received,
                    bytes,
                    lagged,
                    hist,
                }
            } else {
                Msg::Final {
                    id,
                    received,
                    lagged,
                    errors,
                    secs: f.get(7).and_then(|s| s.parse().ok()).unwrap_or(0.0),
                    hist,
                }
            }
        }
        _ => Msg::Line(line.to_owned()),
    }
}

fn spawn(role: &str, a: &ChildArgs, tx: &mpsc::Sender<Msg>) -> Result<Kid, BoxError> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg(role)
        .args(["--channel", &a.channel])
        .args(["--size", &a.size.to_string()])
        .args(["--rate", &a.rate.to_string()])
        .args(["--consumers", &a.consumers.to_string()])
        .args(["--seconds", &a.seconds.to_string()])
        .args(["--buffers", &a.buffers.to_string()])
        .args(["--id", &a.id.to_string()])
        .args(["--width", &a.width.to_string()])
        .args(["--height", &a.height.to_string()])
        .args([
            "--policy",
            match a.policy {
                PolicyArg::Block => "block",
                PolicyArg::DropOldest => "drop-oldest",
            },
        ])
        .args([
            "--backend",
            match a.backend {
                BackendArg::Shm => "shm",
                BackendArg::Memfd => "memfd",
            },
        ])
        .args([
            "--wait",
            match a.wait {
                WaitArg::Spin => "spin",
                WaitArg::SpinThenPark => "spin-then-park",
                WaitArg::Park => "park",
            },
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let mut child = cmd.spawn()?;
    let out = child.stdout.take().expect("piped");
    let tx = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(parse(&line)).is_err() {
                break;
            }
        }
    });
    let err = child.stderr.take().expect("piped");
    let err = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if lines.len() < 20 {
                lines.push(line);
            }
        }
        lines
    });
    Ok(Kid {
        role: if role == "__demo-producer" {
            "producer".into()
        } else {
            format!("consumer {}", a.id)
        },
        child,
        err: Some(err),
    })
}

fn fmt_ns(ns: u64) -> String {
    match ns {
        0..=9_999 => format!("{ns} ns"),
        10_000..=9_999_999 => format!("{:.1} us", ns as f64 / 1e3),
        _ => format!("{:.2} ms", ns as f64 / 1e6),
    }
}

pub fn run(a: DemoArgs) -> Result<(), BoxError> {
    let size = usize::try_from(a.frame_size()?)?;
    crate::signals::install()?;
    let channel = format!("demo-{}", std::process::id());
    let child = ChildArgs {
        channel: channel.clone(),
        size,
        rate: a.rate,
        consumers: a.consumers,
        policy: a.policy,
        seconds: a.seconds,
        buffers: a.buffers,
        wait: a.wait,
        id: 0,
        width: a.width,
        height: a.height,
        backend: a.backend,
    };
    let place = match a.backend {
        BackendArg::Shm => format!("/dev/shm/bips.{channel}"),
        BackendArg::Memfd => format!(
            "sealed memfd served on {}/bips.{channel}.sock",
            bips::socket_dir(None).display()
        ),
    };
    println!(
        "bips demo: 1 producer -> {} consumers, separate processes, channel {place}",
        a.consumers
    );
    println!(
        "  frames of {} bytes{}, {} buffers, policy {:?}, wait {:?}, rate {}, {} s",
        size,
        if a.size.is_some() {
            String::new()
        } else {
            format!(" ({}x{}x{})", a.width, a.height, a.bpp)
        },
        a.buffers,
        a.policy,
        a.wait,
        if a.rate == 0 {
            "unlimited".to_string()
        } else {
            format!("{} fps", a.rate)
        },
        a.seconds
    );
    println!(
        "  zero copy: frames are written and read in place; nothing is copied between processes."
    );
    // What zero copy saves, measured on this machine now: a copy of one frame.
    let copy = memcpy_cost(size);
    match copy {
        Some((d, n)) => println!(
            "  for scale: one memcpy of this frame costs {} here (median of {n}, measured now)",
            fmt_ns(d.as_nanos() as u64)
        ),
        None => println!("  for scale: frames over 256 MiB are not memcpy-timed"),
    }

    let (tx, rx) = mpsc::channel();
    let mut kids = Children {
        kids: Vec::new(),
        channel: channel.clone(),
    };
    kids.kids.push(spawn("__demo-producer", &child, &tx)?);
    // Wait for the producer to create the channel before consumers open it;
    // if it fails, say why at once.
    let t0 = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Msg::Ready) => break,
            Ok(Msg::Line(l)) => println!("  producer: {l}"),
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => unreachable!("we hold a sender"),
        }
        kids.check()?;
        if kids.kids[0].child.try_wait()?.is_some() {
            return Err("the producer exited before creating the channel".into());
        }
        if t0.elapsed() > Duration::from_secs(10) {
            return Err("the producer did not create the channel within 10 s".into());
        }
    }
    for id in 0..a.consumers {
        let c = ChildArgs {
            id,
            ..child.clone()
        };
        kids.kids.push(spawn("__demo-consumer", &c, &tx)?);
    }
    drop(tx);

    let tty = std::io::stdout().is_terminal();
    let n = a.consumers as usize;
    let mut last: Vec<(u64, u64)> = vec![(0, 0); n];
    let mut window = Histogram::default();
    let mut lagged = vec![0u64; n];
    let mut finals: Vec<Option<Report>> = vec![None; n];
    let mut published = (0u64, 0.0f64);
    let mut tick = Instant::now();
    let mut since = Instant::now();
    let mut win_frames = 0u64;
    let deadline = Instant::now() + Duration::from_secs_f64(a.seconds + 20.0);
    // Until every consumer's final report and the producer's count are in
    // (they come from different processes, in any order).
    let mut got_published = false;
    while finals.iter().any(Option::is_none) || !got_published {
        let msg = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(m) => m,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                kids.check()?;
                if Instant::now() > deadline {
                    return Err("demo did not finish in time".into());
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        kids.check()?;
        match msg {
            Msg::Stat {
                id,
                received,
                bytes,
                lagged: l,
                hist,
            } => {
                let i = id as usize % n;
                win_frames += received - last[i].0.min(received);
                last[i] = (received, bytes);
                lagged[i] = l;
                window.merge(&hist);
            }
            Msg::Final {
                id,
                received,
                lagged,
                errors,
                secs,
                hist,
            } => {
                finals[id as usize % n] = Some(Report {
                    frames: received,
                    lagged,
                    errors,
                    secs,
                    hist,
                })
            }
            Msg::Published(p, s) => {
                published = (p, s);
                got_published = true;
            }
            Msg::Ready => {}
            Msg::Line(l) => println!("  {l}"),
        }
        if tick.elapsed() >= Duration::from_millis(500) {
            let dt = since.elapsed().as_secs_f64();
            let line = format!(
                "  live: {:>9.0} frames/s  latency p50 {:>9}  p99 {:>9}  lagged {}",
                win_frames as f64 / dt,
                fmt_ns(window.quantile(0.5)),
                fmt_ns(window.quantile(0.99)),
                lagged.iter().sum::<u64>()
            );
            if tty {
                print!("\r{line}");
            } else {
                println!("{line}");
            }
            let _ = std::io::stdout().flush();
            tick = Instant::now();
            since = Instant::now();
            window = Histogram::default();
            win_frames = 0;
        }
    }
    if tty {
        println!();
    }
    let mut failed = false;
    for k in &mut kids.kids {
        let st = k.child.wait()?;
        if !st.success() {
            failed = true;
            eprintln!("  {}", k.reason(st));
        }
    }
    crate::signals::check()?;
    println!();
    println!(
        "  producer published {} frames in {:.2} s ({:.0} frames/s)",
        published.0,
        published.1,
        published.0 as f64 / published.1.max(1e-9)
    );
    println!(
        "  {:<9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>6}",
        "consumer", "frames", "frames/s", "p50", "p99", "p99.9", "max", "lagged", "errors"
    );
    let mut all = Histogram::default();
    for (i, f) in finals.iter().enumerate() {
        let Some(Report {
            frames,
            lagged: lag,
            errors,
            secs,
            hist: h,
        }) = f
        else {
            println!("  {i:<9} (no report)");
            failed = true;
            continue;
        };
        failed |= *errors > 0;
        all.merge(h);
        println!(
            "  {:<9} {:>10} {:>10.0} {:>10} {:>10} {:>10} {:>10} {:>8} {:>6}",
            i,
            frames,
            *frames as f64 / secs.max(1e-9),
            fmt_ns(h.quantile(0.5)),
            fmt_ns(h.quantile(0.99)),
            fmt_ns(h.quantile(0.999)),
            fmt_ns(h.max()),
            lag,
            errors
        );
    }
    println!(
        "  all       latency p50 {}  p99 {}  p99.9 {}  (publish -> receive, CLOCK_MONOTONIC)",
        fmt_ns(all.quantile(0.5)),
        fmt_ns(all.quantile(0.99)),
        fmt_ns(all.quantile(0.999))
    );
    if let Some((d, _)) = copy {
        let frames: u64 = finals.iter().flatten().map(|r| r.frames).sum();
        println!(
            "  zero copy: {frames} frames reached their consumers without a copy, each in {} \
             (p50); one memcpy of a frame takes {} here, {:.1} s of CPU for the {frames} of \
             this {:.1} s run",
            fmt_ns(all.quantile(0.5)),
            fmt_ns(d.as_nanos() as u64),
            d.as_secs_f64() * frames as f64,
            a.seconds,
        );
    }
    if std::path::Path::new(&format!("/dev/shm/bips.{channel}")).exists() {
        eprintln!("  /dev/shm/bips.{channel} was left behind");
        failed = true;
    }
    if failed {
        return Err("demo failed (see above)".into());
    }
    println!("  ok: every frame checked in place, no errors, nothing left in /dev/shm");
    Ok(())
}

/// What one memcpy of a `size`-byte frame costs here, measured now (the
/// same measure as bips-bench's `memcpy` rows): the median and how many
/// copies were timed, about 300 ms in all. `None` for frames over 256 MiB
/// (not worth the memory).
fn memcpy_cost(size: usize) -> Option<(Duration, u64)> {
    if size > 256 << 20 {
        return None;
    }
    let s = bips_bench::harness::memcpy_cost(size, 0.3, 1);
    Some((Duration::from_nanos(s.median), s.n))
}

fn write_frame(buf: &mut [u8], seq: u64) {
    let n = buf.len();
    buf[..8].copy_from_slice(&MAGIC.to_le_bytes());
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
    buf[n - 8..].copy_from_slice(&seq.to_le_bytes());
}

fn frame_ok(buf: &[u8], seq: u64) -> bool {
    let n = buf.len();
    n >= 16
        && buf[..8] == MAGIC.to_le_bytes()
        && buf[8..16] == seq.to_le_bytes()
        && buf[n - 8..] == seq.to_le_bytes()
}

pub fn producer(a: ChildArgs) -> Result<(), BoxError> {
    let opts = Options::new(a.buffers, a.size)
        .backpressure(a.policy.into())
        .max_consumers(a.consumers.max(1))
        .meta_size(16)
        .wait(a.wait.into())
        .backend(a.backend.into());
    // Ctrl-C, SIGTERM, SIGHUP: remove the channel before dying.
    bips::cleanup_on_signals()?;
    let p = Producer::create(&a.channel, &opts)?;
    println!("READY");
    // Wait for every consumer to attach (they report to the parent, not us).
    let t0 = Instant::now();
    while p.consumer_count() < a.consumers as usize {
        if t0.elapsed() > Duration::from_secs(10) {
            return Err("consumers did not attach".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let period = (a.rate > 0).then(|| Duration::from_secs_f64(1.0 / a.rate as f64));
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(a.seconds);
    let mut next = start;
    let mut n = 0u64;
    while Instant::now() < end {
        if let Some(p) = period {
            next += p;
            while Instant::now() < next {
                std::hint::spin_loop();
                if next.saturating_duration_since(Instant::now()) > Duration::from_micros(200) {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
        }
        let mut s = match p.loan_timeout(Duration::from_secs(2)) {
            Ok(s) => s,
            Err(Error::Timeout) => return Err("producer starved for 2 s".into()),
            Err(e) => return Err(e.into()),
        };
        let seq = n;
        write_frame(s.as_mut_slice(), seq);
        s.meta_mut()[..4].copy_from_slice(&a.width.to_le_bytes());
        s.meta_mut()[4..8].copy_from_slice(&a.height.to_le_bytes());
        let got = s.publish()?;
        debug_assert_eq!(got, seq);
        n += 1;
    }
    println!("PUBLISHED {n} {:.3}", start.elapsed().as_secs_f64());
    drop(p); // closes the channel: consumers drain and disconnect
    Ok(())
}

pub fn consumer(a: ChildArgs) -> Result<(), BoxError> {
    let c = Consumer::open_with(
        &a.channel,
        &ConsumerOptions::new()
            .start(Start::Oldest)
            .wait(a.wait.into()),
    )?;
    let mut hist = Histogram::default();
    let mut total = Histogram::default();
    let (mut received, mut bytes, mut lagged, mut errors) = (0u64, 0u64, 0u64, 0u64);
    let mut last_seq: Option<u64> = None;
    let mut first: Option<Instant> = None;
    let mut last_rx = Instant::now();
    let mut report = Instant::now();
    let stat = |k: &str, r: u64, b: u64, l: u64, e: u64, h: &Histogram, extra: &str| {
        println!("{k} {} {r} {b} {l} {e} {} {extra}", a.id, h.encode());
    };
    loop {
        let s = match c.recv_timeout(Duration::from_secs(5)) {
            Ok(s) => s,
            Err(Error::Disconnected) => break,
            Err(e) => return Err(e.into()),
        };
        let now = bips::now_ns();
        first.get_or_insert_with(Instant::now);
        last_rx = Instant::now();
        hist.record(now.saturating_sub(s.timestamp_ns()));
        let seq = s.seq();
        if last_seq.is_some_and(|l| seq <= l) || !frame_ok(s.as_slice(), seq) {
            errors += 1;
        }
        if let Some(l) = last_seq {
            if seq > l + 1 && s.lagged() != seq - l - 1 {
                errors += 1; // a gap must be reported as lag (S4)
            }
        }
        if s.meta()[..4] != a.width.to_le_bytes() {
            errors += 1;
        }
        last_seq = Some(seq);
        lagged += s.lagged();
        received += 1;
        bytes += s.len() as u64;
        drop(s);
        if report.elapsed() >= Duration::from_millis(250) {
            stat("STAT", received, bytes, lagged, errors, &hist, "");
            total.merge(&hist);
            hist = Histogram::default();
            report = Instant::now();
        }
    }
    total.merge(&hist);
    let secs = first.map_or(0.0, |f| (last_rx - f).as_secs_f64());
    stat(
        "FINAL",
        received,
        bytes,
        lagged,
        errors,
        &total,
        &format!("{secs:.3}"),
    );
    if errors > 0 {
        return Err(format!("{errors} bad frames").into());
    }
    Ok(())
}
