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

type BoxError = Box<dyn std::error::Error>;

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
    #[arg(long, default_value_t = 30.0)]
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

// ------------------------------------------------------------------ payload

/// SplitMix64 finaliser.
fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(mix64(seed ^ 0x5EED_50A4_0000_0001))
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }
    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }
    /// True with probability `1/n`.
    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// 64-bit hash of `data` (word-wise multiply-xorshift, then SplitMix64).
fn hash64(data: &[u8]) -> u64 {
    let mut h = 0x243F_6A88_85A3_08D3u64 ^ data.len() as u64;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 29;
    }
    for &b in chunks.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
    }
    mix64(h)
}

/// The payload's identity word: a tag and the producer incarnation.
fn epoch_word(inc: u64) -> u64 {
    0xB1B5_50A0_0000_0000 | (inc & 0xFFFF_FFFF)
}

/// Writes a payload of `len` bytes (`MIN_LEN..`) into `buf`:
/// `[epoch u64][seq u64][len u32][0 u32][body...][hash u64]`, the hash over
/// everything before it; the body is pseudo-random from (epoch, seq).
fn write_payload(buf: &mut [u8], len: usize, inc: u64, seq: u64) {
    let buf = &mut buf[..len];
    buf[0..8].copy_from_slice(&epoch_word(inc).to_le_bytes());
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
    buf[16..20].copy_from_slice(&(len as u32).to_le_bytes());
    buf[20..24].copy_from_slice(&0u32.to_le_bytes());
    let body_end = len - 8;
    let mut g = mix64(epoch_word(inc) ^ seq.rotate_left(17));
    let mut chunks = buf[24..body_end].chunks_exact_mut(8);
    for c in &mut chunks {
        g = g.wrapping_add(0x9E37_79B9_7F4A_7C15);
        c.copy_from_slice(&mix64(g).to_le_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b = (g >> (8 * i)) as u8;
    }
    let h = hash64(&buf[..body_end]);
    buf[body_end..].copy_from_slice(&h.to_le_bytes());
}

/// Checks a received payload against its sample's sequence and length;
/// answers the producer incarnation it names.
fn check_payload(data: &[u8], seq: u64) -> Result<u64, String> {
    let len = data.len();
    if len < MIN_LEN {
        return Err(format!("seq {seq}: length {len} < {MIN_LEN}"));
    }
    let word = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"));
    let body_end = len - 8;
    if hash64(&data[..body_end]) != word(body_end) {
        return Err(format!(
            "seq {seq}: hash mismatch (torn or overwritten, len {len})"
        ));
    }
    let epoch = word(0);
    if epoch & 0xFFFF_FFFF_0000_0000 != epoch_word(0) {
        return Err(format!("seq {seq}: bad tag {epoch:#x}"));
    }
    if word(8) != seq {
        return Err(format!("seq {seq}: payload names seq {}", word(8)));
    }
    let named_len = u32::from_le_bytes(data[16..20].try_into().expect("4 bytes")) as usize;
    if named_len != len {
        return Err(format!(
            "seq {seq}: payload names len {named_len}, sample has {len}"
        ));
    }
    Ok(epoch & 0xFFFF_FFFF)
}

/// Draws a payload length: half small (32..=256 B), half anywhere up to `cap`.
fn draw_len(rng: &mut Rng, cap: usize) -> usize {
    if rng.one_in(2) {
        rng.range(MIN_LEN as u64, 256) as usize
    } else {
        rng.range(MIN_LEN as u64, cap as u64) as usize
    }
}

// ----------------------------------------------------------------- children

/// A flag set when our stdin reaches EOF (the coordinator's stop order).
fn stop_on_stdin_eof() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        s.store(true, Ordering::Release);
    });
    stop
}

fn say(line: std::fmt::Arguments<'_>) {
    // Line-buffered stdout: every line is written to the pipe at once.
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(line);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// The producer role: create (replacing a stale segment), publish
/// self-checking payloads of varying length until stdin closes.
pub fn producer(a: ChildArgs) -> Result<(), BoxError> {
    let stop = stop_on_stdin_eof();
    let inc = a.id;
    let mut rng = Rng::new(a.seed ^ mix64(inc) ^ 0x9D0D);
    let opts = Options::new(BUFFERS, BUF_SIZE)
        .backpressure(a.policy.into())
        .max_consumers(MAX_CONSUMERS)
        .meta_size(16);
    let p = Producer::create(&a.channel, &opts)
        .map_err(|e| format!("producer incarnation {inc}: create: {e}"))?;
    say(format_args!("READY {inc}"));
    let cap = p.buffer_size();
    let corrupt = inject("corrupt");
    let mut published = 0u64;
    let mut last_report = Instant::now();
    while !stop.load(Ordering::Acquire) {
        // Now and then a pause, so consumers drain and go to sleep on the
        // futex (wake-ups get exercised, not only the spinning path).
        if rng.one_in(4000) {
            std::thread::sleep(Duration::from_micros(rng.range(100, 5000)));
        }
        let mut s = match p.loan_timeout(STALL_AFTER) {
            Ok(s) => s,
            Err(Error::Timeout) => {
                say(format_args!("STALL"));
                continue;
            }
            Err(e) => return Err(format!("producer incarnation {inc}: loan: {e}").into()),
        };
        let len = draw_len(&mut rng, cap);
        let seq = published; // this incarnation's stream starts at 0
        write_payload(s.as_mut_slice(), len, inc, seq);
        if corrupt && rng.one_in(2_000) {
            s.as_mut_slice()[len / 2] ^= 0x20;
        }
        s.set_len(len);
        s.meta_mut()[..8].copy_from_slice(&seq.to_le_bytes());
        s.meta_mut()[8..16].copy_from_slice(&epoch_word(inc).to_le_bytes());
        let got = s
            .publish()
            .map_err(|e| format!("producer incarnation {inc}: publish: {e}"))?;
        if got != seq {
            return Err(
                format!("producer incarnation {inc}: published seq {got}, expected {seq}").into(),
            );
        }
        published += 1;
        if last_report.elapsed() >= REPORT_EVERY {
            say(format_args!("STAT {published}"));
            last_report = Instant::now();
        }
    }
    say(format_args!("FINAL {published}"));
    drop(p); // closes the channel and removes its name
    Ok(())
}

/// What one consumer process counted (cumulative over its sessions).
#[derive(Default)]
struct Counts {
    received: u64,
    dropped: u64,
    sessions: u64,
}

/// The consumer role: open, receive and check, detach and reopen now and
/// then, reopen after `Disconnected`, until stdin closes (then finish the
/// current session up to `Disconnected`).
pub fn consumer(a: ChildArgs) -> Result<(), BoxError> {
    let stop = stop_on_stdin_eof();
    let policy: Backpressure = a.policy.into();
    let mut rng = Rng::new(a.seed ^ mix64(a.id) ^ bips::now_ns());
    let skip = inject("skip");
    let mut n = Counts::default();
    let mut last_report = Instant::now();
    let report = |n: &Counts, kind: &str| {
        say(format_args!(
            "{kind} {} {} {}",
            n.received, n.dropped, n.sessions
        ))
    };
    loop {
        if stop.load(Ordering::Acquire) {
            break;
        }
        if last_report.elapsed() >= REPORT_EVERY {
            report(&n, "STAT");
            last_report = Instant::now();
        }
        let start = match rng.below(3) {
            0 => Start::Newest,
            1 => Start::Oldest,
            _ => Start::Next,
        };
        let wait = if rng.one_in(2) {
            WaitStrategy::Park
        } else {
            WaitStrategy::default()
        };
        let opts = ConsumerOptions::new().start(start).wait(wait);
        let c = match Consumer::open_with(&a.channel, &opts) {
            Ok(c) => c,
            // The producer is restarting: not there yet, dead, or its
            // segment half-made (killed while creating it).
            Err(
                e @ (Error::NotFound { .. }
                | Error::Disconnected
                | Error::Layout { .. }
                | Error::Io { .. }
                | Error::TooManyConsumers { .. }),
            ) => {
                let kind = format!("{e:?}");
                let kind = kind
                    .split(|c: char| !c.is_alphanumeric())
                    .next()
                    .unwrap_or("?");
                say(format_args!("OPENERR {kind}"));
                std::thread::sleep(Duration::from_millis(rng.range(2, 10)));
                continue;
            }
            Err(e) => return Err(format!("consumer {}: open: {e}", a.id).into()),
        };
        let entry = i64::from(c.entry_index());
        say(format_args!("ATTACH {entry}"));
        n.sessions += 1;
        // Detach of our own accord after a while (70% of sessions).
        let until =
            (!rng.one_in(3)).then(|| Instant::now() + Duration::from_millis(rng.range(100, 3000)));
        let polling = rng.one_in(4); // try_recv + short sleeps instead of recv
        let hold_prev = rng.one_in(2); // keep the previous sample while reading the next
        let mut prev = None;
        let mut last_seq: Option<u64> = None;
        let mut session_inc: Option<u64> = None;
        let mut why = "voluntary";
        loop {
            if last_report.elapsed() >= REPORT_EVERY {
                report(&n, "STAT");
                last_report = Instant::now();
            }
            if !stop.load(Ordering::Acquire) && until.is_some_and(|u| Instant::now() >= u) {
                break;
            }
            let r = if polling {
                match c.try_recv() {
                    Ok(Some(s)) => Ok(s),
                    Ok(None) => {
                        std::thread::sleep(Duration::from_micros(50));
                        continue;
                    }
                    Err(e) => Err(e),
                }
            } else {
                c.recv_timeout(Duration::from_millis(100))
            };
            let s = match r {
                Ok(s) => s,
                Err(Error::Timeout) => continue,
                Err(Error::Disconnected) => {
                    why = "disconnected";
                    break;
                }
                Err(Error::Corrupt { what }) => {
                    say(format_args!("CORRUPT recv: {what}"));
                    why = "corrupt";
                    break;
                }
                Err(e) => return Err(format!("consumer {}: recv: {e}", a.id).into()),
            };
            if skip && last_seq.is_some() && rng.one_in(2_000) {
                continue; // self-test: as if this sample had not arrived
            }
            let seq = s.seq();
            let lagged = s.lagged();
            match check_payload(s.as_slice(), seq) {
                Ok(inc) => {
                    if s.meta()[..8] != seq.to_le_bytes()
                        || s.meta()[8..16] != epoch_word(inc).to_le_bytes()
                    {
                        say(format_args!("CORRUPT seq {seq}: metadata does not match"));
                    }
                    match session_inc {
                        None => {
                            session_inc = Some(inc);
                            say(format_args!("SESSION {inc} {}", bips::now_ns()));
                        }
                        Some(si) if si != inc => say(format_args!(
                            "CORRUPT seq {seq}: from producer incarnation {inc} in a session of {si} (stale)"
                        )),
                        Some(_) => {}
                    }
                }
                Err(why) => say(format_args!("CORRUPT {why}")),
            }
            match last_seq {
                Some(l) if seq <= l => {
                    say(format_args!("S4 seq {seq} after {l}"));
                }
                Some(l) => {
                    let gap = seq - l - 1;
                    match policy {
                        Backpressure::Block => {
                            if gap > 0 || lagged > 0 {
                                say(format_args!(
                                    "LOST {} seq {seq} after {l}, lagged {lagged}",
                                    gap.max(lagged)
                                ));
                            }
                        }
                        _ => {
                            if gap != lagged {
                                say(format_args!(
                                    "S4 seq {seq} after {l}: gap {gap} reported as lagged {lagged}"
                                ));
                            }
                        }
                    }
                }
                None => {
                    if policy == Backpressure::Block && lagged > 0 {
                        say(format_args!(
                            "LOST {lagged} first seq {seq} of the session, lagged {lagged}"
                        ));
                    }
                }
            }
            last_seq = Some(seq);
            n.received += 1;
            n.dropped += lagged;
            // Now and then a slow spell: DropOldest consumers fall behind,
            // Block ones pace the producer.
            if rng.one_in(500) {
                std::thread::sleep(Duration::from_micros(rng.range(200, 10_000)));
            }
            if hold_prev {
                prev = Some(s); // releases the one before
            } else {
                drop(s);
            }
        }
        drop(prev);
        // How the session ended, for the coordinator's tail check (a
        // session ended by `Disconnected` must have drained the stream).
        if let (Some(inc), Some(last)) = (session_inc, last_seq) {
            say(format_args!("END {inc} {last} {why}"));
        }
        say(format_args!("DETACHING"));
        drop(c);
    }
    report(&n, "FINAL");
    Ok(())
}

// -------------------------------------------------------------- coordinator

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Producer { inc: u64 },
    Consumer { slot: usize },
}

impl Role {
    fn describe(self, key: usize) -> String {
        match self {
            Role::Producer { inc } => format!("producer #{inc}"),
            Role::Consumer { slot } => format!("consumer {slot} (child {key})"),
        }
    }
}

/// A running child process.
struct Kid {
    role: Role,
    child: Child,
    stdin: Option<ChildStdin>,
    reader: Option<JoinHandle<()>>,
}

/// What the coordinator knows of a child (kept after it ends, for the tally).
struct KidState {
    role: Role,
    /// (received, dropped, sessions) of a consumer, (published, 0, 0) of a
    /// producer: as last reported.
    counts: (u64, u64, u64),
    /// Consumer entry of its current session, and when we learnt of it.
    entry: Option<(u32, Instant)>,
    /// When we learnt of its current session's first sample.
    session_at: Option<Instant>,
    ready: bool,
}

/// A consumer session that ended by `Disconnected`.
struct End {
    who: String,
    inc: u64,
    last_seq: u64,
    /// When we learnt of the session's first sample.
    began: Option<Instant>,
}

/// A line from child `key`.
struct Line {
    key: usize,
    text: String,
}

/// Everything one policy's run found.
#[derive(Default)]
struct Tally {
    seconds: f64,
    sent: u64,
    received: u64,
    dropped: u64,
    sessions: u64,
    corrupt: u64,
    lost_block: u64,
    s4: u64,
    stalls: u64,
    consumer_kills: u64,
    producer_kills: u64,
    reclaim_ms: Vec<f64>,
    reclaimed_by_producer: u64,
    reclaimed_by_open: u64,
    reclaim_timeouts: u64,
    /// DropOldest: killed consumers' entries still taken after the deadline.
    reclaim_unreaped: u64,
    reclaim_abandoned: u64,
    recovery_ms: Vec<f64>,
    recovery_timeouts: u64,
    child_failures: Vec<String>,
    open_errors: BTreeMap<String, u64>,
    events: Vec<String>,
    dev_shm_left: u64,
}

impl Tally {
    /// Records a failure event; the first 20 are also shown on stderr.
    fn event(&mut self, msg: String) {
        if self.events.len() < 20 {
            note(&msg);
        } else if self.events.len() == 20 {
            note("(more events: see the report)");
        }
        if self.events.len() < 1000 {
            self.events.push(msg);
        }
    }

    /// Figures that must be 0, by name.
    fn must_be_zero(&self) -> [(&'static str, u64); 7] {
        [
            ("corrupt", self.corrupt),
            ("lost_block", self.lost_block),
            ("s4_violations", self.s4),
            ("producer_stalls", self.stalls),
            ("reclaim_timeouts", self.reclaim_timeouts),
            ("recovery_timeouts", self.recovery_timeouts),
            ("child_failures", self.child_failures.len() as u64),
        ]
    }

    fn add(&mut self, o: &Tally) {
        self.seconds += o.seconds;
        self.sent += o.sent;
        self.received += o.received;
        self.dropped += o.dropped;
        self.sessions += o.sessions;
        self.corrupt += o.corrupt;
        self.lost_block += o.lost_block;
        self.s4 += o.s4;
        self.stalls += o.stalls;
        self.consumer_kills += o.consumer_kills;
        self.producer_kills += o.producer_kills;
        self.reclaim_ms.extend(&o.reclaim_ms);
        self.reclaimed_by_producer += o.reclaimed_by_producer;
        self.reclaimed_by_open += o.reclaimed_by_open;
        self.reclaim_timeouts += o.reclaim_timeouts;
        self.reclaim_unreaped += o.reclaim_unreaped;
        self.reclaim_abandoned += o.reclaim_abandoned;
        self.recovery_ms.extend(&o.recovery_ms);
        self.recovery_timeouts += o.recovery_timeouts;
        self.child_failures.extend(o.child_failures.iter().cloned());
        for (k, v) in &o.open_errors {
            *self.open_errors.entry(k.clone()).or_insert(0) += v;
        }
        self.events.extend(o.events.iter().cloned());
        self.dev_shm_left += o.dev_shm_left;
    }

    fn json(&self) -> Value {
        let zero: serde_json::Map<String, Value> = self
            .must_be_zero()
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        json!({
            "seconds": (self.seconds * 10.0).round() / 10.0,
            "sent": self.sent,
            "received": self.received,
            "dropped_by_policy": self.dropped,
            "consumer_sessions": self.sessions,
            "corrupt": self.corrupt,
            "lost_block": self.lost_block,
            "s4_violations": self.s4,
            "producer_stalls": self.stalls,
            "consumer_kills": self.consumer_kills,
            "producer_kills": self.producer_kills,
            "reclaim_ms": stats(&self.reclaim_ms),
            "reclaimed_by_producer": self.reclaimed_by_producer,
            "reclaimed_by_new_consumer": self.reclaimed_by_open,
            "reclaim_timeouts": self.reclaim_timeouts,
            "reclaim_pending_after_deadline_drop_oldest": self.reclaim_unreaped,
            "reclaim_not_measured": self.reclaim_abandoned,
            "producer_recovery_ms": stats(&self.recovery_ms),
            "recovery_timeouts": self.recovery_timeouts,
            "child_failures": self.child_failures,
            "open_retries": self.open_errors,
            "events": self.events.iter().take(50).collect::<Vec<_>>(),
            "dev_shm_left": self.dev_shm_left,
            "must_be_zero": zero,
        })
    }
}

/// count/min/median/max of `v` (ms), rounded to 0.01 ms.
fn stats(v: &[f64]) -> Value {
    if v.is_empty() {
        return json!({ "count": 0 });
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let r = |x: f64| (x * 100.0).round() / 100.0;
    json!({
        "count": s.len(),
        "min": r(s[0]),
        "median": r(s[s.len() / 2]),
        "max": r(s[s.len() - 1]),
    })
}

fn fmt_stats(v: &[f64]) -> String {
    if v.is_empty() {
        return "none measured".into();
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    format!(
        "min {:.1} / median {:.1} / max {:.1} ms ({} measured)",
        s[0],
        s[s.len() / 2],
        s[s.len() - 1],
        s.len()
    )
}

/// Kills (SIGKILL) and reaps every child still running, and removes this
/// run's channels, whatever happened.
struct Cleanup {
    prefix: String,
    kids: Vec<Kid>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for k in &mut self.kids {
            let _ = k.child.kill();
            let _ = k.child.wait();
        }
        remove_channels(&self.prefix);
    }
}

/// Removes `/dev/shm/bips.<prefix>*`; answers how many there were.
fn remove_channels(prefix: &str) -> u64 {
    let want = format!("bips.{prefix}");
    let mut n = 0;
    if let Ok(dir) = std::fs::read_dir("/dev/shm") {
        for e in dir.flatten() {
            if e.file_name().to_str().is_some_and(|f| f.starts_with(&want)) {
                n += 1;
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    n
}

fn policy_name(p: PolicyArg) -> &'static str {
    match p {
        PolicyArg::Block => "block",
        PolicyArg::DropOldest => "drop-oldest",
    }
}

/// Progress on stderr.
fn note(msg: impl AsRef<str>) {
    eprintln!("soak: {}", msg.as_ref());
}

/// A reclaim being watched: a killed consumer's entry.
struct Watch {
    entry: u32,
    killed_at: Instant,
    epoch: u64,
}

/// One policy's run.
struct Phase {
    policy: PolicyArg,
    channel: String,
    seed: u64,
    consumers: usize,
    kill_every: Option<Duration>,
    producer_restarts: u32,
    rng: Rng,
    tx: mpsc::Sender<Line>,
    rx: mpsc::Receiver<Line>,
    next_key: usize,
    kids: HashMap<usize, Kid>,
    state: HashMap<usize, KidState>,
    tally: Tally,
    /// Consumer slot -> key of its current process (None while it waits
    /// for its respawn).
    slots: Vec<Option<usize>>,
    respawn: Vec<(usize, Instant)>,
    producer: Option<usize>,
    inc: u64,
    last_restart: Option<Instant>,
    /// (incarnation, CLOCK_MONOTONIC ns of the previous one's kill, when).
    recovering: Vec<(u64, u64, Instant)>,
    watch: Option<Watch>,
    /// Per producer incarnation: (published as last reported, when we
    /// learnt it, whether that was its FINAL count).
    streams: HashMap<u64, (u64, Instant, bool)>,
    ends: Vec<End>,
}

impl Phase {
    fn spawn(&mut self, role: Role) -> Result<usize, BoxError> {
        let key = self.next_key;
        self.next_key += 1;
        let (sub, id) = match role {
            Role::Producer { inc } => ("__soak-producer", inc),
            Role::Consumer { slot } => ("__soak-consumer", slot as u64),
        };
        let mut child = Command::new(std::env::current_exe()?)
            .arg(sub)
            .args(["--channel", &self.channel])
            .args(["--policy", policy_name(self.policy)])
            .args(["--id", &id.to_string()])
            .args(["--seed", &self.seed.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let out = child.stdout.take().expect("piped");
        let tx = self.tx.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(text) = line else { break };
                if tx.send(Line { key, text }).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        self.kids.insert(
            key,
            Kid {
                role,
                child,
                stdin,
                reader: Some(reader),
            },
        );
        self.state.insert(
            key,
            KidState {
                role,
                counts: (0, 0, 0),
                entry: None,
                session_at: None,
                ready: false,
            },
        );
        match role {
            Role::Producer { .. } => self.producer = Some(key),
            Role::Consumer { slot } => self.slots[slot] = Some(key),
        }
        Ok(key)
    }

    /// Handles every line received so far.
    fn pump(&mut self) {
        while let Ok(l) = self.rx.try_recv() {
            self.handle(l);
        }
    }

    fn handle(&mut self, l: Line) {
        let Some(st) = self.state.get_mut(&l.key) else {
            return;
        };
        let who = st.role.describe(l.key);
        let (kind, rest) = l.text.split_once(' ').unwrap_or((&l.text, ""));
        let nums: Vec<u64> = rest.split(' ').map_while(|s| s.parse().ok()).collect();
        let num = |i: usize| nums.get(i).copied().unwrap_or(0);
        let t = &mut self.tally;
        match kind {
            "STAT" | "FINAL" => {
                st.counts = (num(0), num(1), num(2));
                if let Role::Producer { inc } = st.role {
                    self.streams
                        .insert(inc, (num(0), Instant::now(), kind == "FINAL"));
                }
            }
            "END" => {
                if rest.ends_with("disconnected") {
                    self.ends.push(End {
                        who,
                        inc: num(0),
                        last_seq: num(1),
                        began: st.session_at,
                    });
                }
                st.session_at = None;
            }
            "READY" => st.ready = true,
            "ATTACH" => st.entry = rest.trim().parse().ok().map(|e| (e, Instant::now())),
            "DETACHING" => st.entry = None,
            "SESSION" => {
                let (inc, at) = (num(0), num(1));
                st.session_at = Some(Instant::now());
                if let Some(i) = self.recovering.iter().position(|r| r.0 == inc) {
                    let (_, killed_ns, _) = self.recovering.remove(i);
                    let ms = at.saturating_sub(killed_ns) as f64 / 1e6;
                    t.recovery_ms.push(ms);
                    note(format!(
                        "{}: a consumer receives from producer #{inc} {ms:.1} ms after #{} was killed",
                        policy_name(self.policy),
                        inc - 1
                    ));
                }
            }
            "CORRUPT" => {
                t.corrupt += 1;
                t.event(format!("{who}: CORRUPT {rest}"));
            }
            "LOST" => {
                t.lost_block += num(0);
                t.event(format!("{who}: LOST {rest}"));
            }
            "S4" => {
                t.s4 += 1;
                t.event(format!("{who}: S4 violation: {rest}"));
            }
            "STALL" => {
                t.stalls += 1;
                t.event(format!("{who}: a loan waited {STALL_AFTER:?}"));
            }
            "OPENERR" => *t.open_errors.entry(rest.to_owned()).or_insert(0) += 1,
            _ => note(format!("{who}: {}", l.text)),
        }
    }

    /// Records the end of child `key` (exited with `status`; `killed`: by us).
    fn finish(&mut self, key: usize, status: ExitStatus, killed: bool) {
        let Some(mut kid) = self.kids.remove(&key) else {
            return;
        };
        drop(kid.stdin.take());
        if let Some(r) = kid.reader.take() {
            let _ = r.join(); // its stdout is closed: every line is in `rx`
        }
        self.pump();
        if let Some(st) = self.state.get_mut(&key) {
            st.entry = None;
        }
        if !killed && !status.success() {
            let msg = format!(
                "{}: {} exited with {status}",
                policy_name(self.policy),
                kid.role.describe(key)
            );
            note(&msg);
            self.tally.child_failures.push(msg);
        }
    }

    /// SIGKILLs child `key` and reaps it.
    fn kill(&mut self, key: usize) -> Result<(), BoxError> {
        let Some(kid) = self.kids.get_mut(&key) else {
            return Ok(());
        };
        kid.child.kill()?; // SIGKILL on Unix
        let status = kid.child.wait()?;
        self.finish(key, status, true);
        Ok(())
    }

    /// Children that exited on their own during the run are failures; they
    /// are restarted so the soak goes on.
    fn reap_exited(&mut self) -> Result<(), BoxError> {
        let mut done = Vec::new();
        for (&key, kid) in &mut self.kids {
            if let Some(status) = kid.child.try_wait()? {
                done.push((key, status));
            }
        }
        for (key, status) in done {
            let role = self.kids[&key].role;
            self.finish(key, status, false);
            match role {
                Role::Producer { .. } if self.producer == Some(key) => {
                    self.inc += 1;
                    self.spawn(Role::Producer { inc: self.inc })?;
                }
                Role::Consumer { slot } if self.slots[slot] == Some(key) => {
                    self.spawn(Role::Consumer { slot })?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn draw_kill_interval(&mut self) -> Duration {
        let m = self.kill_every.map_or(0, |d| d.as_millis() as u64);
        Duration::from_millis(self.rng.range(m / 2, m + m / 2).max(1))
    }

    /// Kills a random consumer; if it was attached to the current segment,
    /// watches its entry until reclaimed.
    fn kill_a_consumer(&mut self) -> Result<(), BoxError> {
        let live: Vec<(usize, usize)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(slot, k)| k.map(|k| (slot, k)))
            .collect();
        if live.is_empty() {
            return Ok(());
        }
        let (slot, key) = live[self.rng.below(live.len() as u64) as usize];
        // Watch its entry only if it attached after the last producer
        // restart (else it may be on the old, replaced segment) and the
        // segment agrees that the entry is taken and alive.
        let entry = self.state[&key].entry.filter(|&(_, at)| {
            self.last_restart
                .is_none_or(|r| at > r + Duration::from_millis(20))
        });
        let epoch = entry.and_then(|(e, _)| {
            let info = bips::monitor::inspect(&self.channel).ok()?;
            info.consumers
                .iter()
                .any(|c| c.index == e && c.active && c.alive)
                .then_some(info.epoch)
        });
        let killed_at = Instant::now();
        self.kill(key)?;
        self.tally.consumer_kills += 1;
        self.slots[slot] = None;
        let delay = Duration::from_millis(self.rng.range(20, 400));
        self.respawn.push((slot, Instant::now() + delay));
        match (entry, epoch) {
            (Some((entry, _)), Some(epoch)) => {
                self.watch = Some(Watch {
                    entry,
                    killed_at,
                    epoch,
                })
            }
            _ => self.tally.reclaim_abandoned += 1,
        }
        Ok(())
    }

    /// Looks whether the watched entry was reclaimed.
    fn poll_watch(&mut self) {
        let Some(w) = &self.watch else { return };
        let elapsed = w.killed_at.elapsed();
        let done = match bips::monitor::inspect(&self.channel) {
            Ok(info) if info.epoch == w.epoch => {
                match info.consumers.iter().find(|c| c.index == w.entry) {
                    // Free and unlocked: reclaimed (by the producer's reaper,
                    // or a reaper that has finished).
                    None => Some(false),
                    // Someone else holds its lock: a new consumer took it over.
                    Some(c) if c.alive => Some(true),
                    Some(c) if !c.active => Some(false),
                    Some(_) => None, // still taken by the dead
                }
            }
            // The producer was restarted meanwhile: no measurement.
            _ => {
                self.tally.reclaim_abandoned += 1;
                self.watch = None;
                return;
            }
        };
        match done {
            Some(by_open) => {
                self.tally.reclaim_ms.push(elapsed.as_secs_f64() * 1e3);
                if by_open {
                    self.tally.reclaimed_by_open += 1;
                } else {
                    self.tally.reclaimed_by_producer += 1;
                }
                self.watch = None;
            }
            None if elapsed > RECLAIM_DEADLINE => {
                let msg = format!(
                    "{}: entry {} of a consumer killed {elapsed:?} ago is still taken",
                    policy_name(self.policy),
                    w.entry
                );
                // Under DropOldest the producer reaps only when it runs out
                // of buffers (it never waits), so a dead entry may stay
                // until a new consumer takes it: not a failure there.
                if self.policy == PolicyArg::Block {
                    self.tally.event(msg);
                    self.tally.reclaim_timeouts += 1;
                } else {
                    note(&msg);
                    self.tally.reclaim_unreaped += 1;
                }
                self.watch = None;
            }
            None => {}
        }
    }

    /// Kills the producer and starts its next incarnation at once.
    fn restart_producer(&mut self) -> Result<(), BoxError> {
        let Some(key) = self.producer.take() else {
            return Ok(());
        };
        let killed_ns = bips::now_ns();
        self.kill(key)?;
        self.tally.producer_kills += 1;
        if self.watch.take().is_some() {
            self.tally.reclaim_abandoned += 1;
        }
        self.inc += 1;
        self.last_restart = Some(Instant::now());
        self.recovering.push((self.inc, killed_ns, Instant::now()));
        self.spawn(Role::Producer { inc: self.inc })?;
        Ok(())
    }

    fn run(&mut self, secs: f64) -> Result<(), BoxError> {
        let t0 = Instant::now();
        let end = t0 + Duration::from_secs_f64(secs);
        let key = self.spawn(Role::Producer { inc: self.inc })?;
        while !self.state[&key].ready {
            self.pump();
            if let Some(st) = self
                .kids
                .get_mut(&key)
                .and_then(|k| k.child.try_wait().ok()?)
            {
                return Err(format!("the first producer exited with {st}").into());
            }
            if t0.elapsed() > Duration::from_secs(10) {
                return Err("the first producer did not start within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        for slot in 0..self.consumers {
            self.spawn(Role::Consumer { slot })?;
        }
        let n = self.producer_restarts;
        let mut restarts: Vec<Instant> = (1..=n)
            .map(|i| {
                let at = secs * 0.85 * f64::from(i) / f64::from(n + 1);
                let jitter = (self.rng.below(1000) as f64 / 1000.0 - 0.5) * secs * 0.85
                    / f64::from(n + 1)
                    / 2.0;
                t0 + Duration::from_secs_f64((at + jitter).max(0.2))
            })
            .collect();
        let mut next_kill = self
            .kill_every
            .map(|_| Instant::now() + self.draw_kill_interval());
        let mut last_poll = Instant::now();
        let mut last_progress = Instant::now();
        loop {
            self.pump();
            self.reap_exited()?;
            let now = Instant::now();
            // Respawn killed consumers whose delay is over.
            let due: Vec<usize> = self
                .respawn
                .iter()
                .filter(|r| r.1 <= now)
                .map(|r| r.0)
                .collect();
            self.respawn.retain(|r| r.1 > now);
            for slot in due {
                self.spawn(Role::Consumer { slot })?;
            }
            if now >= end {
                // Give producer restarts still recovering time to finish.
                if self.recovering.is_empty()
                    || self
                        .recovering
                        .iter()
                        .all(|r| r.2.elapsed() > RECOVERY_DEADLINE)
                {
                    break;
                }
            } else {
                if restarts.first().is_some_and(|&t| now >= t) {
                    restarts.remove(0);
                    self.restart_producer()?;
                }
                if let Some(k) = next_kill {
                    if now >= k && self.watch.is_none() {
                        self.kill_a_consumer()?;
                        next_kill = Some(Instant::now() + self.draw_kill_interval());
                    }
                }
            }
            if self.watch.is_some() && last_poll.elapsed() >= Duration::from_millis(1) {
                self.poll_watch();
                last_poll = Instant::now();
            }
            let before = self.recovering.len();
            self.recovering
                .retain(|r| r.2.elapsed() <= RECOVERY_DEADLINE);
            self.tally.recovery_timeouts += (before - self.recovering.len()) as u64;
            if last_progress.elapsed() >= Duration::from_secs(5) {
                last_progress = Instant::now();
                note(format!(
                    "{}: {:.0}/{secs:.0} s, {} consumer kills, {} producer kills, corrupt {}, lost {}, S4 {}",
                    policy_name(self.policy),
                    t0.elapsed().as_secs_f64(),
                    self.tally.consumer_kills,
                    self.tally.producer_kills,
                    self.tally.corrupt,
                    self.tally.lost_block,
                    self.tally.s4
                ));
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        self.tally.recovery_timeouts += self.recovering.len() as u64;
        self.recovering.clear();
        if self.watch.take().is_some() {
            self.tally.reclaim_abandoned += 1;
        }
        self.respawn.clear();
        self.stop()?;
        self.tally.seconds = t0.elapsed().as_secs_f64();
        for st in self.state.values() {
            match st.role {
                Role::Producer { .. } => self.tally.sent += st.counts.0,
                Role::Consumer { .. } => {
                    self.tally.received += st.counts.0;
                    self.tally.dropped += st.counts.1;
                    self.tally.sessions += st.counts.2;
                }
            }
        }
        self.check_tails();
        let path = format!("/dev/shm/bips.{}", self.channel);
        if std::path::Path::new(&path).exists() {
            note(format!("{path} was left behind"));
            self.tally.dev_shm_left += 1;
            let _ = std::fs::remove_file(&path);
        }
        Ok(())
    }

    /// A session that ended by `Disconnected` must have received its
    /// producer's stream to the end: every sample is retained until each
    /// live consumer received it (Block), and the newest sample always is
    /// (DropOldest). For a producer that stopped cleanly the end is known
    /// exactly (its FINAL count); for one killed, only as of its last report,
    /// which counts for sessions that began at least 100 ms before it.
    fn check_tails(&mut self) {
        for e in std::mem::take(&mut self.ends) {
            let Some(&(published, reported_at, clean)) = self.streams.get(&e.inc) else {
                continue;
            };
            let applies = clean
                || e.began
                    .is_some_and(|b| b + Duration::from_millis(100) < reported_at);
            if !applies || published == 0 || e.last_seq + 1 >= published {
                continue;
            }
            let missing = published - 1 - e.last_seq;
            let msg = format!(
                "{}: TAIL session on producer #{} ended (Disconnected) at seq {}, but {} were published{}",
                e.who,
                e.inc,
                e.last_seq,
                published,
                if clean { "" } else { " (as last reported before its kill)" }
            );
            self.tally.event(msg);
            match self.policy {
                PolicyArg::Block => self.tally.lost_block += missing,
                PolicyArg::DropOldest => self.tally.s4 += 1, // a silent loss
            }
        }
    }

    /// Tells every child to stop (closes its stdin): consumers finish their
    /// session (drain to `Disconnected`), the producer closes the channel.
    fn stop(&mut self) -> Result<(), BoxError> {
        for kid in self.kids.values_mut() {
            if matches!(kid.role, Role::Consumer { .. }) {
                drop(kid.stdin.take());
            }
        }
        for kid in self.kids.values_mut() {
            drop(kid.stdin.take());
        }
        let deadline = Instant::now() + STOP_DEADLINE;
        while !self.kids.is_empty() {
            self.pump();
            let mut done = Vec::new();
            for (&key, kid) in &mut self.kids {
                if let Some(status) = kid.child.try_wait()? {
                    done.push((key, status));
                }
            }
            for (key, status) in done {
                self.finish(key, status, false);
            }
            if Instant::now() > deadline {
                let keys: Vec<usize> = self.kids.keys().copied().collect();
                for key in keys {
                    let msg = format!(
                        "{}: {} did not stop within {STOP_DEADLINE:?}",
                        policy_name(self.policy),
                        self.kids[&key].role.describe(key)
                    );
                    note(&msg);
                    self.tally.child_failures.push(msg);
                    self.kill(key)?;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.pump();
        Ok(())
    }
}

/// `bips soak`.
pub fn run(a: SoakArgs) -> Result<(), BoxError> {
    if a.seconds.is_nan() || a.seconds <= 0.0 {
        return Err("--seconds must be positive".into());
    }
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
