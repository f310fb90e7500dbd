//! `bips`: the command-line face of bips.
//!
//! `bips demo` runs a producer and consumers as separate processes over a
//! real channel and shows live throughput and latency.

mod demo;
mod hist;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// bips — zero-copy shared-memory channels between processes.
///
/// Start with `bips demo`: a producer and two consumers, each its own process,
/// passing 1080p RGB frames through /dev/shm without copying them.
#[derive(Parser, Debug)]
#[command(name = "bips", version, about, long_about = None)]
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
    /// consumer: nothing is copied, so the GB/s shown is the rate at which frames
    /// are handed over, not a memcpy rate. Latency is publish -> receive, on
    /// CLOCK_MONOTONIC across processes.
    Demo(demo::DemoArgs),
    /// (internal) the producer process of `bips demo`.
    #[command(hide = true, name = "__demo-producer")]
    DemoProducer(demo::ChildArgs),
    /// (internal) a consumer process of `bips demo`.
    #[command(hide = true, name = "__demo-consumer")]
    DemoConsumer(demo::ChildArgs),
}

/// Backpressure policy on the command line.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum PolicyArg {
    /// Lossless: the slowest consumer paces the producer.
    Block,
    /// Latest wins: slow consumers skip frames (reported as lagged).
    DropOldest,
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
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Demo(a) => demo::run(a),
        Cmd::DemoProducer(a) => demo::producer(a),
        Cmd::DemoConsumer(a) => demo::consumer(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bips: {e}");
            ExitCode::FAILURE
        }
    }
}
