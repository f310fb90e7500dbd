//! `bips top` (a live view of every channel on the machine, `--once` and
//! `--json` for scripts) and `bips metrics` (the same figures for
//! Prometheus). Both read through one collector ([`collect`]), which opens
//! channels read-only and never disturbs them; only `--latency` attaches a
//! consumer, and says so.

mod collect;
mod metrics;
mod render;
mod tui;

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::Failure;
pub use render::SortKey;

/// `bips top`.
#[derive(Args, Debug)]
pub struct TopArgs {
    /// Show only channels whose name contains one of these strings
    /// (default: every channel on the machine, both backends).
    patterns: Vec<String>,
    /// Seconds between refreshes; with --once or --json, between the two
    /// looks whose difference gives the rates.
    #[arg(long, default_value = "0.5", value_parser = crate::parse_seconds)]
    interval: f64,
    /// Initial order (the s key cycles; n, r, l choose).
    #[arg(long, value_enum, default_value = "name")]
    sort: SortKey,
    /// Print one plain-text snapshot (no terminal control codes) and exit.
    #[arg(long)]
    once: bool,
    /// Print one JSON document and exit (field names: README, "Watching
    /// channels: bips top").
    #[arg(long)]
    json: bool,
    /// Measure publish -> receive latency (p50/p99 per refresh) by attaching
    /// a consumer to each channel. It IS a consumer: it takes a consumer
    /// entry, and on a Block channel the producer waits for it like for any
    /// consumer (it receives in its own thread and releases each sample at
    /// once, so it paces the producer only when starved of CPU); on a
    /// DropOldest channel it never slows the producer. Without it, top is
    /// read-only and shows AGE: now - the newest sample's publish timestamp.
    #[arg(long)]
    latency: bool,
}

/// `bips metrics`.
#[derive(Args, Debug)]
pub struct MetricsArgs {
    /// Address to serve http://ADDR/metrics on (port 0: any free port; the
    /// address is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:9464")]
    listen: SocketAddr,
    /// Export only channels whose name contains one of these strings.
    patterns: Vec<String>,
}

/// `bips top`.
pub fn top(a: TopArgs) -> Result<(), Failure> {
    if a.once || a.json {
        once(&a)
    } else {
        tui::run(&a)
    }
}

/// `bips metrics`.
pub fn metrics(a: MetricsArgs) -> Result<(), Failure> {
    metrics::run(&a)
}

/// `--once` / `--json`: two looks `--interval` apart, one report.
fn once(a: &TopArgs) -> Result<(), Failure> {
    let first = collect::snapshot(&a.patterns)?;
    let mut probes = a.latency.then(collect::LatencyProbes::default);
    if let Some(p) = probes.as_mut() {
        p.update(&first);
    }
    std::thread::sleep(Duration::from_secs_f64(a.interval));
    let second = collect::snapshot(&a.patterns)?;
    let mut stats = collect::derive(Some(&first), &second, probes.as_mut());
    drop(probes);
    render::sort(&mut stats, a.sort);
    if a.json {
        let doc = collect::to_json(&stats, a.interval, a.latency);
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        println!("{}", render::title(stats.len(), a.interval, a.sort, false));
        for l in render::table(&stats, 80) {
            println!("{l}");
        }
    }
    Ok(())
}
