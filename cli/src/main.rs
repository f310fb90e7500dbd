//! `bips`: the command-line face of bips.
//!
//! `bips demo` runs a producer and consumers as separate processes over a
//! real channel and shows live throughput and latency; `bips list`,
//! `bips inspect` and `bips clean` look after the channels in /dev/shm;
//! `bips bench` measures bips against the physical floor and its peers;
//! `bips bridge` carries a channel to other hosts over Zenoh (feature `bridge`).

mod bridge;
mod channels;
mod demo;
mod record;
mod signals;
mod soak;
mod top;

// The demo's log-linear histogram lives in bips-bench, which shares it.
use bips_bench::hist;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

/// bips — zero-copy shared-memory channels between processes.
///
/// A producer loans a buffer from a fixed pool in /dev/shm/bips.NAME, writes
/// it in place and publishes it; every consumer process reads the very same
/// bytes, in place. Start with `bips demo`; `bips list` shows the channels on
/// this machine, `bips inspect NAME` one channel in detail, `bips clean`
/// removes channels whose processes are all gone, `bips bench` measures.
#[derive(Parser, Debug)]
#[command(
    name = "bips",
    version,
    about,
    long_about,
    after_help = "Exit status: 0 success; 1 failure (the message says why); 2 bad usage \
                  (unknown option, invalid value, invalid channel name); 3 no such channel (inspect). \
                  On SIGINT, SIGTERM or SIGHUP, demo and soak stop their children, remove their \
                  channels and end by that signal (a shell shows 128 + its number).\n\n\
                  Examples:\n  \
                  bips demo                      # 1 producer -> 2 consumers, 1080p frames, 3 s\n  \
                  bips demo --consumers 4 --policy drop-oldest --rate 60\n  \
                  bips list                      # channels in /dev/shm, who is alive\n  \
                  bips inspect camera --json     # cursors, lag, buffer states of one channel\n  \
                  bips clean --dry-run           # what a clean would remove\n  \
                  bips bench --quick             # ~20 s benchmark smoke run\n  \
                  bips soak --seconds 30 --json  # chaos soak: kill -9 consumers and producer"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a producer and N consumers as separate processes for a few seconds,
    /// with a live progress line and a summary table.
    ///
    /// Each frame is written in place by the producer (a header with its
    /// sequence number at both ends of the frame) and checked in place by every
    /// consumer: nothing is copied. It reports frames/s and publish -> receive
    /// latency (CLOCK_MONOTONIC across processes), and, for scale, what one
    /// memcpy of a frame costs on this machine, measured in the same run.
    Demo(demo::DemoArgs),
    /// List the bips channels in /dev/shm: geometry, policy, liveness, size.
    ///
    /// PRODUCER is "alive" while a process holds the channel's producer
    /// liveness lock; CONSUMERS counts live consumers over the channel's
    /// maximum. STATE "stale" means the producer died and nobody closed the
    /// channel yet: `bips clean` removes such channels once no process uses
    /// them. Reading a channel never disturbs it (no lock is taken).
    List(channels::ListArgs),
    /// Show one channel in detail: header, head/tail, each consumer's cursor,
    /// lag, held and lost samples, buffer states, liveness.
    ///
    /// A snapshot of a running channel: values may move while they are read.
    Inspect(channels::InspectArgs),
    /// Remove channels whose producer and consumers are all dead.
    ///
    /// Liveness is proven by the kernel's open-file-description locks, which
    /// die with their process (kill -9 included); PIDs are never used, so this
    /// is safe across containers sharing /dev/shm. A channel any process still
    /// uses is kept, and so is a fresh one whose producer may still be creating it.
    Clean(channels::CleanArgs),
    /// Measure latency and throughput against the physical floor, a raw
    /// futex, a Unix socket copy and iceoryx2 (when built), in one run.
    ///
    /// Two processes pinned to different CPUs ping-pong samples of 64 B to
    /// 32 MiB; the writer stamps an 8-byte header in place and the payload is
    /// never copied. Writes target/bench/results.{md,csv,json} under the
    /// current directory. The full run takes about two minutes; --quick ~20 s.
    /// See BENCHMARKS.md in the repository for figures and how to read them.
    Bench(bips_bench::BenchArgs),
    /// Chaos soak: a producer and N consumer processes for a set time while
    /// consumers, and now and then the producer, are killed with SIGKILL and
    /// restarted; checks every sample and reports what was lost or broken.
    ///
    /// Every payload carries its sequence, the producer's incarnation, a
    /// varying length (32 B to 16 KiB) and a 64-bit hash, so a torn or stale
    /// read is caught. Within one consumer session (attach to detach, kill or
    /// disconnect) Block must deliver consecutive sequences with lagged() == 0,
    /// and DropOldest strictly increasing ones whose every gap equals
    /// lagged(). With --policy both, Block runs for the first half of
    /// --seconds and DropOldest for the second half, each on a fresh channel
    /// /dev/shm/bips.soak-PID-POLICY. Reported: sent, received, dropped by
    /// policy (sum of lagged()), corrupt, lost in Block, S4 violations,
    /// reclaim time of a killed consumer's entry, producer-restart recovery
    /// time (kill -9 until a consumer receives from the new producer), and
    /// /dev/shm entries left. Exit status 1 when any of corrupt, lost in Block,
    /// S4 violations, producer stalls, reclaim or recovery timeouts, child
    /// failures or /dev/shm entries left is not 0.
    Soak(soak::SoakArgs),
    /// Carry a channel to other hosts over Zenoh: `bridge publish` on the
    /// host of the producer, `bridge subscribe` on the host of the consumers.
    ///
    /// Needs a bips built with the `bridge` feature
    /// (`cargo install bips-cli --features bridge`). Example, host A:
    /// `bips bridge publish camera --key robot/camera --listen tcp/0.0.0.0:7447`;
    /// host B: `bips bridge subscribe robot/camera --channel camera --size 6220800
    /// --connect tcp/HOST-A:7447`. Ctrl-C stops a bridge and removes its channel.
    Bridge(bridge::BridgeArgs),
    /// A live view of every channel on this machine: producer alive,
    /// samples/s, per-consumer lag, drops and held samples, free buffers,
    /// age of the newest sample (publish -> receive latency with --latency).
    ///
    /// Read-only: it maps each channel PROT_READ, takes no lock and claims
    /// no consumer entry, so it never paces a producer nor changes the
    /// consumer count (except with --latency, see there). Keys: s cycles the
    /// order (n name, r rate, l lag), arrows scroll, q / Esc / Ctrl-C quit.
    /// For scripts: --once (plain text) and --json (one JSON document); both
    /// look twice, --interval apart, to give rates.
    Top(top::TopArgs),
    /// Serve the figures of `bips top` in the Prometheus text format on
    /// http://ADDR/metrics (default 127.0.0.1:9464). Read-only, like top.
    Metrics(top::MetricsArgs),
    /// Record a channel into an MCAP file (Foxglove, the mcap tools) as one
    /// of its consumers, until Ctrl-C, --count or --duration.
    ///
    /// Keeps every sample's payload, metadata, descriptor, sequence number
    /// and timestamp, and the channel's geometry and type. A consumer like
    /// any other: on a Block channel a disk slower than the stream slows the
    /// producer down; on DropOldest samples are lost and counted (lagged).
    /// Example: `bips record camera -o camera.mcap --duration 10`.
    Record(record::RecordArgs),
    /// Replay an MCAP file made by `bips record` into a new channel, with the
    /// recorded timing (or --rate X, --as-fast-as-possible), once or --loop.
    ///
    /// The channel gets the recorded geometry and type unless --buffers,
    /// --size or --meta-size say otherwise. Example:
    /// `bips replay camera.mcap --channel camera-replay --loop`.
    Replay(record::ReplayArgs),
    /// (internal) the producer process of `bips soak`.
    #[command(hide = true, name = "__soak-producer")]
    SoakProducer(soak::ChildArgs),
    /// (internal) a consumer process of `bips soak`.
    #[command(hide = true, name = "__soak-consumer")]
    SoakConsumer(soak::ChildArgs),
    /// (internal) the producer process of `bips demo`.
    #[command(hide = true, name = "__demo-producer")]
    DemoProducer(demo::ChildArgs),
    /// (internal) a consumer process of `bips demo`.
    #[command(hide = true, name = "__demo-consumer")]
    DemoConsumer(demo::ChildArgs),
    /// (internal) a peer process of `bips bench`.
    #[command(hide = true, name = "__bench-peer")]
    BenchPeer(bips_bench::PeerArgs),
}

/// A failure with its exit status.
#[derive(Debug)]
pub struct Failure {
    code: u8,
    msg: String,
}

impl Failure {
    /// A failure that exits with `code`.
    pub fn new(code: u8, msg: impl Into<String>) -> Failure {
        Failure {
            code,
            msg: msg.into(),
        }
    }
}

impl From<Box<dyn std::error::Error>> for Failure {
    fn from(e: Box<dyn std::error::Error>) -> Failure {
        // Stopped by SIGINT/SIGTERM/SIGHUP: everything is cleaned up by now
        // (the command returned); end as the signal would have.
        if let Some(signals::Interrupted(sig)) = e.downcast_ref() {
            signals::die_of(*sig);
        }
        Failure::new(1, e.to_string())
    }
}

/// Longest `--seconds` accepted (about 11.6 days).
const MAX_SECONDS: f64 = 1e6;

/// Parses a duration in seconds: a finite number, above 0, at most
/// [`MAX_SECONDS`].
pub fn parse_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !v.is_finite() || v <= 0.0 || v > MAX_SECONDS {
        return Err(format!(
            "{s} is out of range: give a number of seconds above 0 and at most {MAX_SECONDS:.0}"
        ));
    }
    Ok(v)
}

/// Backpressure policy on the command line.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum PolicyArg {
    /// Lossless: the slowest consumer paces the producer.
    Block,
    /// Latest wins: slow consumers skip frames (reported as lagged).
    DropOldest,
}

/// Where a channel's segment lives (`--backend`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendArg {
    /// A POSIX shared-memory object in /dev/shm.
    #[default]
    Shm,
    /// A sealed memfd (nobody can truncate it) served over a Unix socket in
    /// the socket directory ($BIPS_SOCKET_DIR, else $XDG_RUNTIME_DIR/bips,
    /// else /run/bips).
    Memfd,
}

impl From<BackendArg> for bips::Backend {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Shm => bips::Backend::Shm,
            BackendArg::Memfd => bips::Backend::Memfd,
        }
    }
}

impl From<PolicyArg> for bips::Backpressure {
    fn from(p: PolicyArg) -> Self {
        match p {
            PolicyArg::Block => bips::Backpressure::Block,
            PolicyArg::DropOldest => bips::Backpressure::DropOldest,
        }
    }
}

/// Wait strategy on the command line.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum WaitArg {
    /// Busy-poll, never sleep (one core per waiting process).
    Spin,
    /// Poll 20 us, then sleep on the shared futex.
    SpinThenPark,
    /// Sleep on the shared futex at once.
    Park,
}

impl From<WaitArg> for bips::WaitStrategy {
    fn from(w: WaitArg) -> Self {
        match w {
            WaitArg::Spin => bips::WaitStrategy::Spin,
            WaitArg::SpinThenPark => bips::WaitStrategy::default(),
            WaitArg::Park => bips::WaitStrategy::Park,
        }
    }
}

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of our output goes
    // away (`bips list | head`) instead of panicking on EPIPE.
    // SAFETY: called first thing in main, before any other thread exists;
    // restoring the default disposition of SIGPIPE has no other effect.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    // Checks that span several options, before anything starts (exit 2).
    if let Cmd::Demo(a) = &cli.cmd {
        if let Err(msg) = a.validate() {
            Cli::command()
                .error(clap::error::ErrorKind::ValueValidation, msg)
                .exit();
        }
    }
    let r: Result<(), Failure> = match cli.cmd {
        Cmd::Demo(a) => demo::run(a).map_err(Into::into),
        Cmd::DemoProducer(a) => demo::producer(a).map_err(Into::into),
        Cmd::DemoConsumer(a) => demo::consumer(a).map_err(Into::into),
        Cmd::Soak(a) => soak::run(a).map_err(Into::into),
        Cmd::SoakProducer(a) => soak::producer(a).map_err(Into::into),
        Cmd::SoakConsumer(a) => soak::consumer(a).map_err(Into::into),
        Cmd::List(a) => channels::list(a),
        Cmd::Inspect(a) => channels::inspect(a),
        Cmd::Clean(a) => channels::clean(a),
        Cmd::Bench(a) => bips_bench::Launcher::current(&["__bench-peer"])
            .map_err(|e| Failure::new(1, e.to_string()))
            .and_then(|l| bips_bench::run(&a, &l).map(|_| ()).map_err(Into::into)),
        Cmd::BenchPeer(a) => bips_bench::peer_main(&a).map_err(Into::into),
        Cmd::Bridge(a) => bridge::run(a),
        Cmd::Top(a) => top::top(a),
        Cmd::Metrics(a) => top::metrics(a),
        Cmd::Record(a) => record::record(a),
        Cmd::Replay(a) => record::replay(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("bips: {}", f.msg);
            ExitCode::from(f.code)
        }
    }
}
