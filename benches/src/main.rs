//! `bips-bench`: the cross-process benchmark harness (see the crate docs).
//!
//! ```text
//! cargo run --release -p bips-bench                  # full run, ~2 minutes
//! cargo run --release -p bips-bench -- --quick       # smoke run, ~20 s
//! cargo run --release -p bips-bench -- --plot docs/bench-latency.png
//! ```

use std::process::ExitCode;

use clap::Parser;

/// bips-bench — bips against the physical floor and its peers, in one run.
///
/// Spawns itself as the peer processes, pins the two sides to different CPUs
/// and measures one-way latency (busy-spin and blocking, 1->1 and 1->N),
/// throughput, and the baselines: a raw shared-memory atomic ping-pong (the
/// floor), a raw shared-futex ping-pong (the blocking floor), a Unix socket
/// copy, and iceoryx2 0.10 when benches/iceoryx2-peer is built. The payload is
/// never copied: the writer stamps an 8-byte header in place.
#[derive(Parser, Debug)]
#[command(name = "bips-bench", version, about, long_about)]
struct Cli {
    #[command(flatten)]
    args: bips_bench::BenchArgs,
}

/// The internal peer role: `bips-bench __peer --cpu N --index I`.
#[derive(Parser, Debug)]
#[command(name = "bips-bench __peer")]
struct PeerCli {
    #[command(flatten)]
    args: bips_bench::PeerArgs,
}

fn main() -> ExitCode {
    let mut argv: Vec<String> = std::env::args().collect();
    let r = if argv.get(1).map(String::as_str) == Some("__peer") {
        argv.remove(1);
        bips_bench::peer_main(&PeerCli::parse_from(argv).args)
    } else {
        let cli = Cli::parse();
        bips_bench::Launcher::current(&["__peer"])
            .map_err(Into::into)
            .and_then(|l| bips_bench::run(&cli.args, &l).map(|_| ()))
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bips-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
