//! `bips soak`: a chaos soak. One producer process and N consumer processes
//! (children of this binary) run for a set time while the coordinator kills
//! consumers and now and then the producer with SIGKILL and restarts them.
//! Every payload is self-checking (sequence, producer incarnation, varying
//! length, 64-bit hash), every consumer session checks order and loss, and
//! the coordinator measures how fast the dead are reclaimed.
//!
//! Children talk to the coordinator in lines on their stdout:
//!
//! * consumer: `ATTACH <entry>` (a session began on consumer entry
//!   `<entry>`), `SESSION <inc> <t_ns>` (its first sample, from producer
//!   incarnation `<inc>`, received at CLOCK_MONOTONIC `<t_ns>`), `DETACHING`,
//!   `STAT <received> <dropped> <sessions>` every 100 ms and `FINAL ...` at
//!   exit (cumulative for the process), and the events `CORRUPT <why>`,
//!   `LOST <n> <why>`, `S4 <why>`, `OPENERR <kind>`, printed the moment they
//!   happen: a killed child loses at most its last 100 ms of *counts*, never
//!   an event.
//! * producer: `READY <inc>`, `STAT <published>` every 100 ms, `FINAL
//!   <published>`, `STALL` (a loan waited 30 s).
//!
//! The coordinator stops children by closing their stdin.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bips::{
    Backpressure, Consumer, ConsumerOptions, Error, Options, Producer, Start, WaitStrategy,
};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use crate::PolicyArg;

pub(super) type BoxError = Box<dyn std::error::Error>;

/// Bytes per buffer of the soak channel.
const BUF_SIZE: usize = 16 * 1024;
/// Buffers in the pool.
const BUFFERS: u32 = 8;
/// Consumer table capacity: room for the soak's consumers (at most 8) plus
/// entries of dead ones not reclaimed yet.
const MAX_CONSUMERS: u32 = 16;
/// Smallest payload: header (24 B) + hash (8 B).
const MIN_LEN: usize = 32;
/// How often children report their counters.
const REPORT_EVERY: Duration = Duration::from_millis(100);
/// A producer loan that waits this long is a stall (reported, must be 0).
const STALL_AFTER: Duration = Duration::from_secs(30);
/// How long the coordinator waits for a killed consumer's entry to be
/// reclaimed before it counts a reclaim timeout.
const RECLAIM_DEADLINE: Duration = Duration::from_secs(10);
/// How long children get to finish once told to stop.
const STOP_DEADLINE: Duration = Duration::from_secs(30);
/// How long after a producer restart consumers get to receive again.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(30);
/// Self-test of the checker: with `BIPS_SOAK_INJECT=corrupt` the producer
/// flips a payload byte after hashing in about one sample of 2 000; with
/// `BIPS_SOAK_INJECT=skip` consumers ignore about one sample of 2 000 as if
/// it had never arrived (a silent loss). The soak must then fail.
const INJECT_ENV: &str = "BIPS_SOAK_INJECT";

fn inject(what: &str) -> bool {
    std::env::var(INJECT_ENV).is_ok_and(|v| v == what)
}

/// Which policies to soak.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum SoakPolicy {
    /// Block only.
    Block,
    /// DropOldest only.
    DropOldest,
    /// Block for the first half of the time, then DropOldest.
    Both,
}

/// Arguments of `bips soak`.
#[derive(Args, Debug, Clone)]
pub struct SoakArgs {
    /// Total duration in seconds (with `--policy both`, half for each policy,
    /// one after the other, each on a fresh channel).
    #[arg(long, default_value_t = 30.0, value_parser = crate::parse_seconds)]
    seconds: f64,
    /// Backpressure policy to soak.
    #[arg(long, value_enum, default_value_t = SoakPolicy::Both)]
    policy: SoakPolicy,
    /// Number of consumer processes (1 to 8).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=8))]
    consumers: u32,
    /// Seed of the coordinator's random choices (kill times, victims) and of
    /// the producer's (payload lengths, pauses); consumers also mix in the
    /// clock. Process timing makes no two runs alike; the seed is printed.
    /// Default: from the clock.
    #[arg(long)]
    seed: Option<u64>,
    /// Mean time between two kill -9 of a consumer, in ms (each interval is
    /// drawn uniformly from half to 1.5 times this); 0: never.
    #[arg(long, default_value_t = 500)]
    kill_every_ms: u64,
    /// How many times, per policy, the producer is killed (-9) and restarted,
    /// spread over the first 85% of that policy's time.
    #[arg(long, default_value_t = 2)]
    producer_restarts: u32,
    /// Print the result as one JSON object on stdout (progress goes to stderr).
    #[arg(long)]
    json: bool,
}

/// Arguments of the hidden child roles.
#[derive(Args, Debug, Clone)]
pub struct ChildArgs {
    #[arg(long)]
    channel: String,
    #[arg(long, value_enum)]
    policy: PolicyArg,
    /// Producer incarnation (producer), consumer slot (consumer).
    #[arg(long)]
    id: u64,
    #[arg(long)]
    seed: u64,
}

mod coordinator;
mod payload;
mod report;
mod roles;

use coordinator::*;
use payload::*;
use report::*;
pub use roles::{consumer, producer};

/// `bips soak`.
pub fn run(a: SoakArgs) -> Result<(), BoxError> {
    // SIGINT/SIGTERM/SIGHUP end the phase at once; `cleanup` then kills the
    // children and removes this run's channels, and main dies of the signal.
    crate::signals::install()?;
    let seed = a
        .seed
        .unwrap_or_else(|| mix64(bips::now_ns() ^ u64::from(std::process::id())));
    let policies: &[PolicyArg] = match a.policy {
        SoakPolicy::Block => &[PolicyArg::Block],
        SoakPolicy::DropOldest => &[PolicyArg::DropOldest],
        SoakPolicy::Both => &[PolicyArg::Block, PolicyArg::DropOldest],
    };
    let mut cleanup = Cleanup {
        prefix: format!("soak-{}-", std::process::id()),
        kids: Vec::new(),
    };
    note(format!(
        "{} s, policies {:?}, {} consumers, kill -9 a consumer {}, {} producer restarts per policy, seed {seed}, channels /dev/shm/bips.{}*",
        a.seconds,
        policies,
        a.consumers,
        if a.kill_every_ms == 0 {
            "never".to_owned()
        } else {
            format!("every ~{} ms", a.kill_every_ms)
        },
        a.producer_restarts,
        cleanup.prefix
    ));
    let secs = a.seconds / policies.len() as f64;
    let mut phases = Vec::new();
    for &p in policies {
        let (tx, rx) = mpsc::channel();
        let mut ph = Phase {
            policy: p,
            channel: format!("{}{}", cleanup.prefix, policy_name(p)),
            seed,
            consumers: a.consumers as usize,
            kill_every: (a.kill_every_ms > 0).then(|| Duration::from_millis(a.kill_every_ms)),
            producer_restarts: a.producer_restarts,
            rng: Rng::new(seed ^ mix64(p as u64 + 1)),
            tx,
            rx,
            next_key: 0,
            kids: HashMap::new(),
            state: HashMap::new(),
            tally: Tally::default(),
            slots: vec![None; a.consumers as usize],
            respawn: Vec::new(),
            producer: None,
            inc: 1,
            last_restart: None,
            recovering: Vec::new(),
            watch: None,
            streams: HashMap::new(),
            ends: Vec::new(),
        };
        let r = ph.run(secs);
        // Whatever happened, children still running go to the guard.
        cleanup.kids.extend(ph.kids.drain().map(|(_, k)| k));
        r?;
        phases.push((p, ph.tally));
    }
    // Anything of this run still in /dev/shm is a leak.
    let left = remove_channels(&cleanup.prefix);
    let mut total = Tally::default();
    for (_, t) in &phases {
        total.add(t);
    }
    total.dev_shm_left += left;
    let failed: Vec<String> = total
        .must_be_zero()
        .iter()
        .chain(&[("dev_shm_left", total.dev_shm_left)])
        .filter(|(_, v)| *v != 0)
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    let ok = failed.is_empty();
    if a.json {
        let out = json!({
            "ok": ok,
            "seed": seed,
            "seconds": a.seconds,
            "consumers": a.consumers,
            "kill_every_ms": a.kill_every_ms,
            "producer_restarts_per_policy": a.producer_restarts,
            "policies": phases.iter().map(|(p, t)| {
                let mut v = t.json();
                v["policy"] = json!(policy_name(*p));
                v
            }).collect::<Vec<_>>(),
            "total": total.json(),
            "dev_shm_left": total.dev_shm_left,
            "failed": failed,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "bips soak: seed {seed}, {} consumers, {:.1} s",
            a.consumers, total.seconds
        );
        for (p, t) in phases
            .iter()
            .map(|(p, t)| (policy_name(*p), t))
            .chain([("total", &total)])
        {
            println!("  {p}:");
            println!(
                "    sent {}  received {}  dropped by policy {}  sessions {}",
                t.sent, t.received, t.dropped, t.sessions
            );
            println!(
                "    corrupt {}  lost (Block) {}  S4 violations {}  producer stalls {}  child failures {}",
                t.corrupt,
                t.lost_block,
                t.s4,
                t.stalls,
                t.child_failures.len()
            );
            println!(
                "    kill -9: {} consumers, {} producers",
                t.consumer_kills, t.producer_kills
            );
            println!(
                "    reclaim after kill -9 of a consumer: {} (by the producer {}, by a new consumer {}, timeouts {}, DropOldest still taken after 10 s {}, not measured {})",
                fmt_stats(&t.reclaim_ms),
                t.reclaimed_by_producer,
                t.reclaimed_by_open,
                t.reclaim_timeouts,
                t.reclaim_unreaped,
                t.reclaim_abandoned
            );
            println!(
                "    producer restart -> consumers receive again: {} (timeouts {})",
                fmt_stats(&t.recovery_ms),
                t.recovery_timeouts
            );
        }
        for e in total.events.iter().take(20) {
            println!("  event: {e}");
        }
        println!("  /dev/shm entries left: {}", total.dev_shm_left);
    }
    if ok {
        if !a.json {
            println!(
                "  ok: no corruption, no loss in Block, no S4 violation, nothing left in /dev/shm"
            );
        }
        Ok(())
    } else {
        Err(format!("soak failed: {}", failed.join(", ")).into())
    }
}
