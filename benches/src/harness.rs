//! The harness: runs every row, between pinned processes, and reports.

use std::io::{BufRead, BufReader, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bips::{Backend, Consumer, ConsumerOptions, Options, Producer, Start};
use clap::Args;

use crate::hist::Histogram;
use crate::report::{Report, Row};
use crate::stats::{fmt_size, Summary};
use crate::sys::{allowed_cpus, futex_wait, futex_wake, pin_to_cpu, Machine, RawPage};
use crate::{read_seq, stamp, wait_strategy, STOP};

type BoxError = Box<dyn std::error::Error>;

/// The default payload sizes: 64 B, 4 KiB, 64 KiB, 1 MiB, a 1080p RGB frame
/// (6,220,800 B) and 32 MiB.
pub const DEFAULT_SIZES: [u64; 6] = [64, 4096, 65536, 1 << 20, 1920 * 1080 * 3, 32 << 20];

/// Most round trips kept per row (the vector is allocated before timing).
const MAX_SAMPLES: usize = 5_000_000;
/// Fewest round trips per row, whatever the time budget (slow copy rows).
const MIN_SAMPLES: usize = 20;

/// Options of the benchmark harness (`bips bench`, `bips-bench`).
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Smoke run (~20 s): every row, with short time budgets. Figures from a
    /// quick run are noisy; use the default run for numbers you quote.
    #[arg(long)]
    pub quick: bool,
    /// Payload sizes in bytes, comma-separated
    /// [default: 64,4096,65536,1048576,6220800,33554432].
    #[arg(long, value_delimiter = ',')]
    pub sizes: Option<Vec<u64>>,
    /// Seconds per row [default: 1.0 for spin rows, 1.5 for blocking rows; 0.1 with --quick].
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Consumer processes in the fan-out rows (0 skips them).
    #[arg(long, default_value_t = 4)]
    pub consumers: u32,
    /// Skip the throughput rows.
    #[arg(long)]
    pub no_throughput: bool,
    /// Skip the iceoryx2 rows even when its peer is built.
    #[arg(long)]
    pub no_iceoryx2: bool,
    /// The iceoryx2 peer binary [default: $BIPS_ICEORYX2_PEER, else
    /// benches/iceoryx2-peer/target/release/iceoryx2-peer].
    #[arg(long)]
    pub iceoryx2_peer: Option<PathBuf>,
    /// Directory for results.md, results.csv and results.json.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
    /// Also draw latency against payload size as a PNG here (bips-bench
    /// built with its default `plot` feature).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// The two CPUs to pin the initiating and the answering side to
    /// [default: the first two this process may use].
    #[arg(long, value_delimiter = ',')]
    pub cpus: Option<Vec<usize>>,
    /// Run every process of the benchmark (bips, baselines and the iceoryx2
    /// peer alike) as SCHED_FIFO, so other work on the machine cannot preempt
    /// it: the tails then show the system under test rather than the
    /// scheduler. Needs root or CAP_SYS_NICE.
    #[arg(long)]
    pub fifo: bool,
    /// The `max_held` of every bips channel of the run (1..=64): 8 (the
    /// default) keeps each consumer's holds in its entry line, more puts
    /// them in the hold table the producer scans (issue 14's cost).
    #[arg(long, default_value_t = bips::MAX_HELD as u32)]
    pub max_held: u32,
}

/// How to start this program again as a peer process: `exe prefix... --cpu N
/// --index I`, where `prefix` routes to [`crate::peer_main`].
#[derive(Clone, Debug)]
pub struct Launcher {
    /// The executable.
    pub exe: PathBuf,
    /// Arguments before the peer's own (e.g. `["__peer"]`).
    pub prefix: Vec<String>,
}

impl Launcher {
    /// This executable, with `prefix`.
    pub fn current(prefix: &[&str]) -> std::io::Result<Launcher> {
        Ok(Launcher {
            exe: std::env::current_exe()?,
            prefix: prefix.iter().map(|s| s.to_string()).collect(),
        })
    }
}

/// Time budgets per row, in seconds.
#[derive(Clone, Copy, Debug)]
struct Budget {
    spin: f64,
    park: f64,
    copy: f64,
    throughput: f64,
    warm_spin: u64,
    warm_park: u64,
}

impl Budget {
    fn new(a: &BenchArgs) -> Budget {
        let (spin, park) = match (a.seconds, a.quick) {
            (Some(s), _) => (s, s),
            (None, true) => (0.1, 0.15),
            (None, false) => (1.0, 1.5),
        };
        Budget {
            spin,
            park,
            copy: spin,
            throughput: spin,
            warm_spin: if a.quick { 2_000 } else { 20_000 },
            warm_park: if a.quick { 100 } else { 1_000 },
        }
    }
}

/// A peer process and its line-oriented control channel.
struct Peer {
    child: Child,
    stdin: ChildStdin,
    rx: mpsc::Receiver<String>,
    index: u32,
}

impl Peer {
    fn spawn(
        l: &Launcher,
        cpu: Option<usize>,
        index: u32,
        fifo: bool,
        max_held: u32,
    ) -> Result<Peer, BoxError> {
        let mut cmd = Command::new(&l.exe);
        cmd.args(&l.prefix).args(["--index", &index.to_string()]);
        if fifo {
            cmd.arg("--fifo");
        }
        cmd.args(["--max-held", &max_held.to_string()]);
        if let Some(cpu) = cpu {
            cmd.args(["--cpu", &cpu.to_string()]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting peer {}: {e}", l.exe.display()))?;
        let stdin = child.stdin.take().ok_or("no peer stdin")?;
        let out = child.stdout.take().ok_or("no peer stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Peer {
            child,
            stdin,
            rx,
            index,
        })
    }

    fn send(&mut self, cmd: &str) -> Result<(), BoxError> {
        writeln!(self.stdin, "{cmd}")?;
        self.stdin.flush()?;
        Ok(())
    }

    /// Waits for a line starting with `word`; returns the rest of it.
    fn expect(&self, word: &str, timeout: Duration) -> Result<String, BoxError> {
        let line = self.rx.recv_timeout(timeout).map_err(|_| {
            format!(
                "peer {} did not answer {word} within {:?}",
                self.index, timeout
            )
        })?;
        if let Some(rest) = line.strip_prefix("ERR ") {
            return Err(format!("peer {}: {rest}", self.index).into());
        }
        match line.strip_prefix(word) {
            Some(rest) => Ok(rest.trim().to_owned()),
            None => Err(format!("peer {}: expected {word}, got {line:?}", self.index).into()),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.send("quit");
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(2) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SETUP: Duration = Duration::from_secs(30);

/// Where the iceoryx2 peer binary is expected by default.
pub fn default_iceoryx2_peer() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("iceoryx2-peer/target/release/iceoryx2-peer")
}

/// A socket directory this run made, removed when it ends.
struct SocketDir(PathBuf);

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the whole benchmark and writes the report. `launcher` starts peers.
pub fn run(a: &BenchArgs, launcher: &Launcher) -> Result<Report, BoxError> {
    let machine = Machine::probe();
    let sizes: Vec<u64> = a.sizes.clone().unwrap_or_else(|| DEFAULT_SIZES.to_vec());
    if sizes.is_empty() {
        return Err("--sizes is empty".into());
    }
    if sizes.iter().any(|&s| s < 8) {
        return Err("every payload size must be at least 8 bytes (the header)".into());
    }
    let budget = Budget::new(a);
    // The memfd rows serve their channels from a socket directory: one of
    // this run's own unless the caller named one (peers inherit it).
    let own_sockets = std::env::var_os(bips::SOCKET_DIR_ENV).is_none().then(|| {
        let d = std::env::temp_dir().join(format!("bips-bench-{}", std::process::id()));
        // Single-threaded still: no other thread reads the environment yet.
        std::env::set_var(bips::SOCKET_DIR_ENV, &d);
        SocketDir(d)
    });
    let allowed = allowed_cpus();
    let cpus: Option<(usize, usize)> = match &a.cpus {
        Some(v) if v.len() == 2 => Some((v[0], v[1])),
        Some(_) => return Err("--cpus takes exactly two CPUs, e.g. --cpus 0,1".into()),
        None if allowed.len() >= 2 => Some((allowed[0], allowed[1])),
        None => None,
    };
    let mut notes = Vec::new();
    match cpus {
        Some((x, y)) => {
            pin_to_cpu(x).map_err(|e| format!("pinning to CPU {x}: {e}"))?;
            notes.push(format!(
                "initiator pinned to CPU {x}, peers pinned to CPU {y} (sched_setaffinity)"
            ));
        }
        None => notes.push("only one CPU available: processes are not pinned".into()),
    }
    if a.fifo {
        crate::sys::set_fifo()
            .map_err(|e| format!("--fifo: sched_setscheduler(SCHED_FIFO): {e}"))?;
        notes.push(format!(
            "every process ran SCHED_FIFO priority {} (--fifo): other work could not preempt it",
            crate::sys::FIFO_PRIORITY
        ));
    }
    if a.max_held != bips::MAX_HELD as u32 {
        notes.push(format!(
            "bips channels made with max_held {} (--max-held; the default is {})",
            a.max_held,
            bips::MAX_HELD
        ));
    }
    if machine.load_start > 0.5 {
        notes.push(format!(
            "load average {:.2} at start: the machine was not idle, tails are pessimistic",
            machine.load_start
        ));
    }

    let iox = if a.no_iceoryx2 {
        None
    } else {
        let p = a
            .iceoryx2_peer
            .clone()
            .or_else(|| std::env::var_os("BIPS_ICEORYX2_PEER").map(PathBuf::from))
            .unwrap_or_else(default_iceoryx2_peer);
        if p.is_file() {
            Some(p)
        } else {
            notes.push(format!(
                "iceoryx2 rows skipped: {} not built; build it with \
                 `cargo build --release --manifest-path benches/iceoryx2-peer/Cargo.toml`",
                p.display()
            ));
            None
        }
    };

    let fan = a.consumers;
    let npeers = fan.max(1);
    println!(
        "bips-bench: {} ({} CPUs, kernel {}), sizes {}, {} peer process(es){}",
        machine.cpu_model,
        machine.cpus,
        machine.kernel,
        sizes
            .iter()
            .map(|&s| fmt_size(s))
            .collect::<Vec<_>>()
            .join(", "),
        npeers,
        if a.quick { ", quick" } else { "" }
    );
    for n in &notes {
        println!("  note: {n}");
    }
    let peer_cpu = cpus.map(|c| c.1);
    let mut peers = Vec::new();
    for i in 0..npeers {
        peers.push(Peer::spawn(launcher, peer_cpu, i, a.fifo, a.max_held)?);
    }
    let page = RawPage::create()?;
    let iox_before = iox_shm_entries();
    let mut h = Harness {
        peers,
        page,
        budget,
        row: 0,
        cpus,
        fifo: a.fifo,
        max_held: a.max_held,
    };

    let mut rows: Vec<Row> = Vec::new();
    let started = Instant::now();
    // Decomposition of the busy-spin path, once (size-independent): the floor
    // plus one and two dependent cache lines (a ring slot -> descriptor ->
    // payload header chase is three lines where the floor is one).
    for lines in [1usize, 2] {
        let r = Row::latency(
            if lines == 1 {
                "raw +1 line"
            } else {
                "raw +2 lines"
            },
            "spin",
            1,
            sizes[0],
            h.raw_chain(lines)?,
        );
        println!("  {}", r.one_line());
        rows.push(r);
    }
    for &size in &sizes {
        let s = size as usize;
        let mut push = |r: Row| {
            println!("  {}", r.one_line());
            rows.push(r);
        };
        push(Row::latency("raw atomic", "spin", 1, size, h.raw_spin()?));
        let (l, ts) = h.bips_pingpong(s, "spin", 1)?;
        push(Row::latency("bips", "spin", 1, size, l).with_ts(ts));
        // The same exchange on sealed memfd channels: the hot path does not
        // know the backend, so this should match the row above.
        let (l, ts) = h.bips_pingpong_on(s, "spin", 1, Backend::Memfd)?;
        push(Row::latency("bips memfd", "spin", 1, size, l).with_ts(ts));
        if let Some(p) = &iox {
            push(Row::latency("iceoryx2", "spin", 1, size, h.iceoryx2(p, s)?));
        }
        push(Row::latency("raw futex", "park", 1, size, h.raw_futex()?));
        let (l, ts) = h.bips_pingpong(s, "park", 1)?;
        push(Row::latency("bips", "park", 1, size, l).with_ts(ts));
        if fan > 1 {
            let (l, ts) = h.bips_pingpong(s, "park", fan)?;
            push(Row::latency("bips", "park", fan, size, l).with_ts(ts));
        }
        push(Row::latency("uds copy", "park", 1, size, h.uds(s)?));
        // What zero copy saves: one memcpy of the payload, this process,
        // this CPU, this run (buffers faulted in and warm).
        let warm = (h.budget.warm_park / 10).max(3);
        push(Row::latency(
            "memcpy",
            "copy",
            1,
            size,
            memcpy_cost(s, h.budget.copy, warm),
        ));
        if !a.no_throughput {
            let (rate, errors) = h.bips_throughput(s, "spin", 1)?;
            push(Row::throughput("bips", "spin", 1, size, rate, errors));
            if let Some(p) = &iox {
                let (rate, errors) = h.iceoryx2_throughput(p, s)?;
                push(Row::throughput("iceoryx2", "spin", 1, size, rate, errors));
            }
            if fan > 1 {
                let (rate, errors) = h.bips_throughput(s, "park", fan)?;
                push(Row::throughput("bips", "park", fan, size, rate, errors));
            }
        }
    }
    let took = started.elapsed();
    drop(h);
    drop(own_sockets);
    remove_new_iox_entries(&iox_before);

    let mut report = Report::new(machine, notes, rows, took);
    report.compute_ratios();
    std::fs::create_dir_all(&a.out).map_err(|e| format!("creating {}: {e}", a.out.display()))?;
    report.write_files(&a.out)?;
    println!();
    print!("{}", report.markdown());
    println!(
        "wrote {}/results.{{md,csv,json}} in {:.1} s",
        a.out.display(),
        took.as_secs_f64()
    );
    if let Some(path) = &a.plot {
        #[cfg(feature = "plot")]
        {
            crate::plot::draw(&report, path)?;
            println!("wrote {}", path.display());
        }
        #[cfg(not(feature = "plot"))]
        {
            return Err(format!(
                "cannot draw {}: this build has no plot support; use \
                 `cargo run --release -p bips-bench -- --plot FILE`",
                path.display()
            )
            .into());
        }
    }
    let bad: u64 = report.rows.iter().map(|r| r.errors).sum();
    if bad > 0 {
        return Err(format!("{bad} samples arrived out of order or corrupt").into());
    }
    Ok(report)
}

struct Harness {
    peers: Vec<Peer>,
    page: RawPage,
    budget: Budget,
    row: u32,
    cpus: Option<(usize, usize)>,
    fifo: bool,
    max_held: u32,
}

/// Runs `one` (one round trip, returning its duration in ns) for `warm`
/// iterations, then until `secs` have passed (at least MIN_SAMPLES times).
fn timed(
    secs: f64,
    warm: u64,
    mut one: impl FnMut() -> Result<u64, BoxError>,
) -> Result<Vec<u64>, BoxError> {
    for _ in 0..warm {
        one()?;
    }
    let budget = Duration::from_secs_f64(secs);
    let mut v = Vec::with_capacity(MAX_SAMPLES);
    let start = Instant::now();
    while v.len() < MAX_SAMPLES && (v.len() < MIN_SAMPLES || start.elapsed() < budget) {
        v.push(one()?);
        if v.len() > MIN_SAMPLES && start.elapsed() > budget * 4 {
            break;
        }
    }
    Ok(v)
}

/// One `memcpy` of `size` bytes between two warm buffers of this process,
/// timed for about `secs` (at least 20 copies) after `warm` untimed ones:
/// what a copying transport pays per sample and consumer, i.e. what zero copy
/// saves. Not halved: it is a one-way cost already. Shared by the harness's
/// `memcpy` rows and `bips demo`.
pub fn memcpy_cost(size: usize, secs: f64, warm: u64) -> Summary {
    let src = vec![0x5Au8; size];
    let mut dst = vec![0u8; size];
    let mut v = timed(secs, warm, || {
        let t = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        Ok(t.elapsed().as_nanos() as u64)
    })
    .unwrap_or_default(); // the closure never fails
    Summary::of(&mut v)
}

/// Half of each round trip.
fn one_way(mut rtt: Vec<u64>) -> Summary {
    for r in &mut rtt {
        *r /= 2;
    }
    Summary::of(&mut rtt)
}

impl Harness {
    fn name(&mut self, what: &str) -> String {
        self.row += 1;
        format!("bench-{}-{}-{what}", std::process::id(), self.row)
    }

    /// The physical floor: one atomic store seen by the other process, and back.
    fn raw_spin(&mut self) -> Result<Summary, BoxError> {
        let (ping, pong) = self.page.spin_words();
        ping.store(0, Ordering::Release);
        pong.store(0, Ordering::Release);
        let path = self.page.path();
        let peer = &mut self.peers[0];
        peer.send(&format!("raw-spin {path}"))?;
        peer.expect("READY", SETUP)?;
        let mut seq = 0u64;
        let rtt = timed(self.budget.spin, self.budget.warm_spin, || {
            seq += 1;
            let t = Instant::now();
            ping.store(seq, Ordering::Release);
            while pong.load(Ordering::Acquire) != seq {
                std::hint::spin_loop();
            }
            Ok(t.elapsed().as_nanos() as u64)
        })?;
        ping.store(STOP, Ordering::Release);
        while pong.load(Ordering::Acquire) != STOP {
            std::hint::spin_loop();
        }
        peer.expect("DONE", SETUP)?;
        Ok(one_way(rtt))
    }

    /// The floor plus `lines` dependent cache lines: the writer fills the lines,
    /// then publishes the first one's offset with the sequence; the reader
    /// chases the offsets before answering.
    fn raw_chain(&mut self, lines: usize) -> Result<Summary, BoxError> {
        let (ping, pong) = self.page.spin_words();
        ping.store(0, Ordering::Release);
        pong.store(0, Ordering::Release);
        let path = self.page.path();
        let page = &self.page;
        let offs: Vec<u64> = (0..lines)
            .map(|i| (crate::sys::CHAIN_BASE + 128 * i) as u64)
            .collect();
        let peer = &mut self.peers[0];
        peer.send(&format!("raw-chain {path}"))?;
        peer.expect("READY", SETUP)?;
        let mut seq = 0u64;
        let rtt = timed(self.budget.spin, self.budget.warm_spin, || {
            seq += 1;
            let t = Instant::now();
            for i in (0..lines).rev() {
                let next = offs.get(i + 1).copied().unwrap_or(0);
                page.chain_word(i)
                    .store(seq << 16 | next, Ordering::Relaxed);
            }
            let v = seq << 16 | offs.first().copied().unwrap_or(0);
            ping.store(v, Ordering::Release);
            while pong.load(Ordering::Acquire) != v {
                std::hint::spin_loop();
            }
            Ok(t.elapsed().as_nanos() as u64)
        })?;
        ping.store(STOP, Ordering::Release);
        while pong.load(Ordering::Acquire) != STOP {
            std::hint::spin_loop();
        }
        peer.expect("DONE", SETUP)?;
        Ok(one_way(rtt))
    }

    /// The blocking floor: a store plus FUTEX_WAKE each way, each side asleep
    /// in FUTEX_WAIT until woken.
    fn raw_futex(&mut self) -> Result<Summary, BoxError> {
        let (ping, pong) = self.page.futex_words();
        ping.store(0, Ordering::Release);
        pong.store(0, Ordering::Release);
        let path = self.page.path();
        let peer = &mut self.peers[0];
        peer.send(&format!("raw-futex {path}"))?;
        peer.expect("READY", SETUP)?;
        let mut seq = 0u32;
        let exchange = |seq: u32| {
            ping.store(seq, Ordering::Release);
            futex_wake(ping);
            loop {
                let v = pong.load(Ordering::Acquire);
                if v == seq {
                    return;
                }
                futex_wait(pong, v);
            }
        };
        let rtt = timed(self.budget.park, self.budget.warm_park, || {
            seq += 1;
            let t = Instant::now();
            exchange(seq);
            Ok(t.elapsed().as_nanos() as u64)
        })?;
        exchange(u32::MAX);
        peer.expect("DONE", SETUP)?;
        Ok(one_way(rtt))
    }

    /// The copy baseline over a Unix stream socket (abstract name: nothing on disk).
    fn uds(&mut self, size: usize) -> Result<Summary, BoxError> {
        let name = self.name("uds");
        let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
        let listener = UnixListener::bind_addr(&addr)?;
        let peer = &mut self.peers[0];
        peer.send(&format!("uds {name} {size}"))?;
        let (mut s, _) = listener.accept()?;
        peer.expect("READY", SETUP)?;
        let mut buf = vec![0u8; size];
        let mut back = vec![0u8; size];
        let mut seq = 0u64;
        let mut errors = 0u64;
        let warm = (self.budget.warm_park / 10).max(5);
        let rtt = timed(self.budget.copy, warm, || {
            seq += 1;
            stamp(&mut buf, seq);
            let t = Instant::now();
            std::io::Write::write_all(&mut s, &buf)?;
            std::io::Read::read_exact(&mut s, &mut back)?;
            let d = t.elapsed().as_nanos() as u64;
            if read_seq(&back) != seq {
                errors += 1;
            }
            Ok(d)
        })?;
        stamp(&mut buf, STOP);
        std::io::Write::write_all(&mut s, &buf)?;
        std::io::Read::read_exact(&mut s, &mut back)?;
        peer.expect("DONE", SETUP)?;
        if errors > 0 {
            return Err(format!("uds: {errors} answers carried the wrong sequence").into());
        }
        Ok(one_way(rtt))
    }

    /// bips ping-pong with `fan` consumer processes: publish a sample of
    /// `size` bytes (header stamped in place), wait for every consumer's answer
    /// on its own channel. Returns half the round trip (to the last answer)
    /// and the consumers' publish -> receive latencies.
    fn bips_pingpong(
        &mut self,
        size: usize,
        wait: &str,
        fan: u32,
    ) -> Result<(Summary, Summary), BoxError> {
        self.bips_pingpong_on(size, wait, fan, Backend::Shm)
    }

    /// [`Harness::bips_pingpong`] with every channel on `backend`.
    fn bips_pingpong_on(
        &mut self,
        size: usize,
        wait: &str,
        fan: u32,
        backend: Backend,
    ) -> Result<(Summary, Summary), BoxError> {
        let w = wait_strategy(wait)?;
        let ping = self.name("ping");
        let producer = Producer::create(
            &ping,
            &Options::new(4, size)
                .max_consumers(fan)
                .max_held(self.max_held)
                .wait(w)
                .backend(backend),
        )?;
        let suffix = if backend == Backend::Memfd {
            " memfd"
        } else {
            ""
        };
        for i in 0..fan as usize {
            let cmd = format!("bips-pp {size} {wait} {ping} {ping}-pong{i}{suffix}");
            self.peers[i].send(&cmd)?;
        }
        let mut pongs = Vec::new();
        for i in 0..fan as usize {
            self.peers[i].expect("READY", SETUP)?;
            pongs.push(Consumer::open_with(
                &format!("{ping}-pong{i}"),
                &ConsumerOptions::new().start(Start::Oldest).wait(w),
            )?);
        }
        let mut next = Some(producer.loan()?);
        let mut seq = 0u64;
        let mut exchange = |seq: u64| -> Result<u64, BoxError> {
            let mut s = next.take().ok_or("no loaned sample")?;
            stamp(s.as_mut_slice(), seq);
            let t = Instant::now();
            s.publish()?;
            if seq != STOP {
                next = Some(producer.loan()?); // while the answers travel
            }
            for c in &pongs {
                loop {
                    let r = c.recv()?;
                    if read_seq(r.as_slice()) == seq {
                        break;
                    }
                }
            }
            Ok(t.elapsed().as_nanos() as u64)
        };
        let (secs, warm) = if wait == "spin" {
            (self.budget.spin, self.budget.warm_spin)
        } else {
            (self.budget.park, self.budget.warm_park)
        };
        let rtt = timed(secs, warm, || {
            seq += 1;
            exchange(seq)
        })?;
        exchange(STOP)?;
        drop(pongs);
        let mut ts = Histogram::default();
        for i in 0..fan as usize {
            let h = self.peers[i].expect("DONE", SETUP)?;
            ts.merge(&Histogram::decode(&h).ok_or("bad histogram from peer")?);
        }
        Ok((one_way(rtt), Summary::of_hist(&ts)))
    }

    /// Throughput: publish as fast as the consumers take samples (Block policy,
    /// 8 buffers). Returns samples/s (each consumer receives every one) and the
    /// count of out-of-order samples the consumers saw.
    fn bips_throughput(
        &mut self,
        size: usize,
        wait: &str,
        fan: u32,
    ) -> Result<(f64, u64), BoxError> {
        let w = wait_strategy(wait)?;
        let chan = self.name("tp");
        let producer = Producer::create(
            &chan,
            &Options::new(8, size)
                .max_consumers(fan)
                .max_held(self.max_held)
                .wait(w),
        )?;
        for i in 0..fan as usize {
            self.peers[i].send(&format!("bips-tp {wait} {chan}"))?;
        }
        for i in 0..fan as usize {
            self.peers[i].expect("READY", SETUP)?;
        }
        let budget = Duration::from_secs_f64(self.budget.throughput);
        let start = Instant::now();
        let mut n = 0u64;
        loop {
            let mut s = producer.loan()?;
            stamp(s.as_mut_slice(), n);
            s.publish()?;
            n += 1;
            if n % 64 == 0 && start.elapsed() >= budget {
                break;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let mut s = producer.loan()?;
        stamp(s.as_mut_slice(), STOP);
        s.publish()?;
        let mut errors = 0;
        for i in 0..fan as usize {
            let done = self.peers[i].expect("DONE", SETUP)?;
            let f: Vec<u64> = done
                .split_whitespace()
                .take(2)
                .filter_map(|x| x.parse().ok())
                .collect();
            if f.len() != 2 {
                return Err(format!("bad throughput report {done:?}").into());
            }
            if f[0] != n {
                return Err(format!(
                    "consumer {i} received {} of {n} samples (Block policy loses none)",
                    f[0]
                )
                .into());
            }
            errors += f[1];
        }
        drop(producer);
        Ok((n as f64 / secs, errors))
    }

    /// A fresh iceoryx2 service tag for one row.
    fn iox_tag(&mut self) -> String {
        self.row += 1;
        format!("{}-{}", std::process::id(), self.row)
    }

    /// The iceoryx2 peer started in `role` on `cpu` (of `self.cpus`), under
    /// the same scheduling as our own processes.
    fn iox_command(
        &self,
        bin: &Path,
        role: &str,
        size: usize,
        tag: &str,
        cpu: Option<usize>,
    ) -> Command {
        let mut c = Command::new(bin);
        c.args([role, "--size", &size.to_string(), "--tag", tag]);
        if let Some(cpu) = cpu {
            c.args(["--cpu", &cpu.to_string()]);
        }
        if self.fifo {
            c.args(["--fifo", "1"]);
        }
        c
    }

    /// iceoryx2 throughput, same conditions as [`Harness::bips_throughput`]
    /// at 1->1 (a lossless service holding 8 samples, the subscriber checks
    /// each sequence in place): samples/s and out-of-order samples seen.
    fn iceoryx2_throughput(&mut self, bin: &Path, size: usize) -> Result<(f64, u64), BoxError> {
        let tag = self.iox_tag();
        let rx = self
            .iox_command(bin, "rx", size, &tag, self.cpus.map(|c| c.1))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut rx = Children(vec![rx]);
        let out = self
            .iox_command(bin, "tx", size, &tag, self.cpus.map(|c| c.0))
            .args(["--seconds", &self.budget.throughput.to_string()])
            .stderr(Stdio::inherit())
            .output()?;
        let field = |text: &str| -> Option<(f64, f64)> {
            let l = text.lines().find_map(|l| l.strip_prefix("RESULT_TP "))?;
            let mut f = l.split_whitespace().map(|x| x.parse::<f64>().ok());
            Some((f.next()??, f.next()??))
        };
        let (sent, secs) = field(&String::from_utf8_lossy(&out.stdout))
            .ok_or_else(|| format!("iceoryx2 tx gave no result ({})", out.status))?;
        let child = rx.0.pop().ok_or("iceoryx2 rx not started")?;
        let got = child.wait_with_output()?;
        let (received, errors) = field(&String::from_utf8_lossy(&got.stdout))
            .ok_or_else(|| format!("iceoryx2 rx gave no result ({})", got.status))?;
        if received != sent {
            return Err(format!(
                "iceoryx2 rx received {received} of {sent} samples on a lossless service"
            )
            .into());
        }
        Ok((sent / secs, errors as u64))
    }

    /// iceoryx2 publish-subscribe ping-pong, its two processes pinned like ours.
    fn iceoryx2(&mut self, bin: &Path, size: usize) -> Result<Summary, BoxError> {
        let tag = self.iox_tag();
        let pong = self
            .iox_command(bin, "pong", size, &tag, self.cpus.map(|c| c.1))
            .stdout(Stdio::null())
            .spawn()?;
        let mut pong = Children(vec![pong]);
        let mut ping = self.iox_command(bin, "ping", size, &tag, self.cpus.map(|c| c.0));
        ping.args(["--seconds", &self.budget.spin.to_string()])
            .args(["--warmup", &self.budget.warm_spin.to_string()]);
        let out = ping.stderr(Stdio::inherit()).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("RESULT "))
            .ok_or_else(|| format!("iceoryx2 peer gave no result ({})", out.status))?;
        let f: Vec<&str> = line.split_whitespace().collect();
        let s = Summary::parse(&f).ok_or("bad iceoryx2 result line")?;
        let t = Instant::now();
        for c in &mut pong.0 {
            while t.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(s)
    }
}

/// Kills and reaps child processes on drop, so an error never leaves them.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

/// iceoryx2's entries in /dev/shm (its persistent global management segment
/// survives its last node).
fn iox_shm_entries() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with("iox2_"))
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the iceoryx2 entries this run created (those not there before).
fn remove_new_iox_entries(before: &[String]) {
    for n in iox_shm_entries() {
        if !before.contains(&n) {
            let _ = std::fs::remove_file(Path::new("/dev/shm").join(n));
        }
    }
}
