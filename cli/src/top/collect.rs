//! The collector behind `bips top`, `bips top --json` and `bips metrics`:
//! one snapshot of every channel on the machine (both backends), and the
//! figures derived from two snapshots (rates).
//!
//! Read-only: a snapshot is `bips::monitor::inspect` for each channel, which
//! maps the segment `PROT_READ`, takes no lock and claims no consumer entry,
//! so the producer's pacing and the consumer count are what they would be
//! without us. The one exception is [`LatencyProbes`] (`--latency`), which
//! attaches a real consumer per channel, and says so.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bips::monitor::{self, ChannelInfo};
use bips_bench::hist::Histogram;
use serde_json::{json, Value};

use crate::Failure;

/// One look at every selected channel.
pub struct Snapshot {
    /// When it was taken (for rates).
    pub taken: Instant,
    /// `CLOCK_MONOTONIC` then, nanoseconds (the clock of sample timestamps).
    pub now_ns: u64,
    /// Per channel name: what `monitor::inspect` said.
    pub channels: Vec<(String, Result<ChannelInfo, bips::Error>)>,
}

/// Whether channel `name` is selected by `patterns` (empty: all; else any
/// pattern is a substring of the name).
pub fn selected(name: &str, patterns: &[String]) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| name.contains(p.as_str()))
}

/// Takes a snapshot of the channels whose names match `patterns`.
pub fn snapshot(patterns: &[String]) -> Result<Snapshot, Failure> {
    let names = bips::list_channels()
        .map_err(|e| Failure::new(1, format!("cannot list the channels: {e}")))?;
    let channels = names
        .into_iter()
        .filter(|n| selected(n, patterns))
        .map(|n| {
            let r = monitor::inspect(&n);
            (n, r)
        })
        // Removed between the listing and the look: not a channel any more.
        .filter(|(_, r)| !matches!(r, Err(bips::Error::NotFound { .. })))
        .collect();
    Ok(Snapshot {
        taken: Instant::now(),
        now_ns: bips::now_ns(),
        channels,
    })
}

/// Publish -> receive latency seen by the `--latency` consumer over one
/// refresh interval.
#[derive(Clone, Debug, PartialEq)]
pub struct Latency {
    /// Consumer entry of the probe in the channel (it shows among the consumers).
    pub consumer: Option<u32>,
    /// Samples measured in the interval.
    pub samples: u64,
    /// Median, nanoseconds (`None` without samples).
    pub p50_ns: Option<u64>,
    /// 99th percentile, nanoseconds.
    pub p99_ns: Option<u64>,
    /// Largest, nanoseconds.
    pub max_ns: Option<u64>,
    /// Why the probe could not attach or stopped, if it did.
    pub error: Option<String>,
}

/// One consumer entry, with its receive rate.
#[derive(Clone, Debug)]
pub struct ConsumerStats {
    /// Entry index.
    pub index: u32,
    /// Its process holds its liveness lock.
    pub alive: bool,
    /// The entry is claimed.
    pub active: bool,
    /// Next sequence it will receive.
    pub cursor: u64,
    /// `head - cursor`: published samples it has not received yet.
    pub lag: u64,
    /// Samples it holds now.
    pub held: u32,
    /// Samples it lost to DropOldest (total).
    pub lost: u64,
    /// Samples it received (total).
    pub received: u64,
    /// Samples received per second since the previous snapshot.
    pub rate: Option<f64>,
    /// Asleep in `recv`.
    pub sleeping: bool,
    /// This entry is `bips top --latency`'s own probe.
    pub is_probe: bool,
}

/// One channel, as `bips top` shows it.
#[derive(Clone, Debug)]
pub struct ChannelStats {
    /// Channel name.
    pub name: String,
    /// `"shm"` or `"memfd"` (`None`: unreadable).
    pub backend: Option<&'static str>,
    /// `"block"` or `"drop-oldest"`.
    pub policy: Option<&'static str>,
    /// `"open"`, `"closed"` (the producer left), `"stale"` (it died) or
    /// `"unreadable"`.
    pub state: &'static str,
    /// A process holds the producer's liveness lock.
    pub producer_alive: bool,
    /// Samples published so far (the head sequence).
    pub published: u64,
    /// Samples published per second since the previous snapshot.
    pub rate: Option<f64>,
    /// Age of the newest sample: now - its publish timestamp (same clock,
    /// `CLOCK_MONOTONIC`, when the producer keeps the default timestamps).
    pub newest_age_ns: Option<u64>,
    /// Buffers in the pool.
    pub buffers: u32,
    /// Buffers in the producer's free pool.
    pub free: u32,
    /// Buffers the producer can loan now without waiting: the free ones,
    /// plus retained ones it may recycle at once (not held, and under Block
    /// received by every live consumer). An estimate from one racy look.
    pub available: u32,
    /// Buffers loaned to the producer's writer.
    pub loaned: u32,
    /// Buffers carrying a retained sample.
    pub published_buffers: u32,
    /// Buffers past the tail still held by a consumer.
    pub retired: u32,
    /// Samples held by consumers, summed over entries.
    pub held: u32,
    /// Maximum consumers.
    pub max_consumers: u32,
    /// Live consumers (liveness lock held).
    pub consumers_alive: u32,
    /// The largest lag of a live consumer.
    pub max_lag: u64,
    /// Lost samples, summed over entries.
    pub lost: u64,
    /// Consumer entries.
    pub consumers: Vec<ConsumerStats>,
    /// With `--latency`: what the probe measured.
    pub latency: Option<Latency>,
    /// Why the channel could not be read, if it could not.
    pub error: Option<String>,
}

fn rate(cur: u64, prev: u64, dt: f64) -> Option<f64> {
    (cur >= prev && dt > 0.0).then(|| (cur - prev) as f64 / dt)
}

/// The figures of `cur`, with rates against `prev` (same channel, same
/// epoch) when given, and the latency probes' intervals when given.
pub fn derive(
    prev: Option<&Snapshot>,
    cur: &Snapshot,
    mut probes: Option<&mut LatencyProbes>,
) -> Vec<ChannelStats> {
    let dt = prev.map_or(0.0, |p| {
        cur.taken.saturating_duration_since(p.taken).as_secs_f64()
    });
    let before = |name: &str| -> Option<&ChannelInfo> {
        prev?
            .channels
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, r)| r.as_ref().ok())
    };
    cur.channels
        .iter()
        .map(|(name, r)| {
            let latency = probes.as_deref_mut().map(|p| p.take(name));
            let i = match r {
                Ok(i) => i,
                Err(e) => return unreadable(name, e, latency),
            };
            let old = before(name).filter(|o| o.epoch == i.epoch);
            let probe_entry = latency.as_ref().and_then(|l| l.consumer);
            let consumers: Vec<ConsumerStats> = i
                .consumers
                .iter()
                .map(|c| {
                    let was = old.and_then(|o| {
                        o.consumers
                            .iter()
                            .find(|p| p.index == c.index && p.alive && c.alive)
                    });
                    ConsumerStats {
                        index: c.index,
                        alive: c.alive,
                        active: c.active,
                        cursor: c.cursor,
                        lag: c.lag,
                        held: c.held,
                        lost: c.lost,
                        received: c.received,
                        rate: was.and_then(|w| rate(c.received, w.received, dt)),
                        sleeping: c.sleeping,
                        is_probe: probe_entry == Some(c.index),
                    }
                })
                .collect();
            let count = |s: &str| i.buffer_states.iter().filter(|&&b| b == s).count() as u32;
            let live = consumers.iter().filter(|c| c.alive);
            let max_lag = live.clone().map(|c| c.lag).max().unwrap_or(0);
            let held: u32 = consumers.iter().map(|c| c.held).sum();
            let (published, retired) = (count("published"), count("retired"));
            // Retained samples not yet received by the slowest live consumer
            // keep their buffers under Block; held ones under both policies.
            let pending = match i.geometry.policy {
                bips::Backpressure::Block => max_lag.min(u64::from(published)) as u32,
                _ => 0,
            };
            let reusable = published.saturating_sub(pending + held.saturating_sub(retired));
            ChannelStats {
                name: name.clone(),
                backend: Some(match i.backend {
                    bips::Backend::Memfd => "memfd",
                    _ => "shm",
                }),
                policy: Some(match i.geometry.policy {
                    bips::Backpressure::Block => "block",
                    bips::Backpressure::DropOldest => "drop-oldest",
                }),
                state: if !i.producer_alive && !i.closed {
                    "stale"
                } else if i.closed {
                    "closed"
                } else {
                    "open"
                },
                producer_alive: i.producer_alive,
                published: i.head,
                rate: old.and_then(|o| rate(i.head, o.head, dt)),
                newest_age_ns: i
                    .newest_timestamp_ns
                    .and_then(|t| cur.now_ns.checked_sub(t)),
                buffers: i.geometry.buffer_count,
                free: count("free"),
                available: count("free") + reusable,
                loaned: count("loaned"),
                published_buffers: published,
                retired,
                held,
                max_consumers: i.geometry.max_consumers,
                consumers_alive: live.count() as u32,
                max_lag,
                lost: consumers.iter().map(|c| c.lost).sum(),
                consumers,
                latency,
                error: None,
            }
        })
        .collect()
}

fn unreadable(name: &str, e: &bips::Error, latency: Option<Latency>) -> ChannelStats {
    let stale = matches!(e, bips::Error::Disconnected);
    ChannelStats {
        name: name.to_owned(),
        backend: stale.then_some("memfd"),
        policy: None,
        state: if stale { "stale" } else { "unreadable" },
        producer_alive: false,
        published: 0,
        rate: None,
        newest_age_ns: None,
        buffers: 0,
        free: 0,
        available: 0,
        loaned: 0,
        published_buffers: 0,
        retired: 0,
        held: 0,
        max_consumers: 0,
        consumers_alive: 0,
        max_lag: 0,
        lost: 0,
        consumers: Vec::new(),
        latency,
        error: Some(if stale {
            "memfd channel whose producer died (`bips clean` removes its socket)".to_owned()
        } else {
            e.to_string()
        }),
    }
}

fn secs(ns: Option<u64>) -> Value {
    ns.map_or(Value::Null, |n| json!(n as f64 / 1e9))
}

/// The `--json` document (field names are documented in README.md,
/// "Watching channels: bips top"; keep them stable).
pub fn to_json(stats: &[ChannelStats], interval: f64, latency: bool) -> Value {
    json!({
        "version": 1,
        "interval_s": interval,
        "latency_probe": latency,
        "channels": stats.iter().map(|c| json!({
            "name": c.name,
            "backend": c.backend,
            "policy": c.policy,
            "state": c.state,
            "producer_alive": c.producer_alive,
            "published_total": c.published,
            "samples_per_s": c.rate,
            "newest_sample_age_s": secs(c.newest_age_ns),
            "buffers": {
                "total": c.buffers,
                "free": c.free,
                "available": c.available,
                "loaned": c.loaned,
                "published": c.published_buffers,
                "retired": c.retired,
                "held": c.held,
            },
            "max_consumers": c.max_consumers,
            "consumers_alive": c.consumers_alive,
            "max_lag": c.max_lag,
            "lost_total": c.lost,
            "consumers": c.consumers.iter().map(|k| json!({
                "index": k.index,
                "alive": k.alive,
                "active": k.active,
                "cursor": k.cursor,
                "lag": k.lag,
                "held": k.held,
                "lost_total": k.lost,
                "received_total": k.received,
                "received_per_s": k.rate,
                "sleeping": k.sleeping,
                "is_latency_probe": k.is_probe,
            })).collect::<Vec<_>>(),
            "latency": c.latency.as_ref().map(|l| json!({
                "consumer": l.consumer,
                "samples": l.samples,
                "p50_s": secs(l.p50_ns),
                "p99_s": secs(l.p99_ns),
                "max_s": secs(l.max_ns),
                "error": l.error,
            })),
            "error": c.error,
        })).collect::<Vec<_>>(),
    })
}

// ------------------------------------------------------------ latency probes

struct Probe {
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<ProbeState>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct ProbeState {
    entry: Option<u32>,
    hist: Option<Histogram>,
    error: Option<String>,
}

/// `--latency`: one consumer per channel, each in its own thread, that
/// receives every sample, records `now - publish timestamp` (both
/// `CLOCK_MONOTONIC`) and releases the sample at once.
///
/// It *is* a consumer: it counts in the channel's consumers and, on a
/// `Block` channel, the producer waits for it like for any other (it keeps
/// up unless starved of CPU); on a `DropOldest` channel it never slows the
/// producer. A channel with every consumer entry taken cannot be probed.
#[derive(Default)]
pub struct LatencyProbes {
    probes: HashMap<String, Probe>,
}

impl LatencyProbes {
    /// Starts a probe for every channel of `snap` that has none yet (and
    /// whose producer lives); stops those whose channel is gone.
    pub fn update(&mut self, snap: &Snapshot) {
        self.probes.retain(|name, p| {
            let keep = snap.channels.iter().any(|(n, _)| n == name);
            if !keep {
                p.stop.store(true, Ordering::Relaxed);
            }
            keep
        });
        for (name, r) in &snap.channels {
            let live = matches!(r, Ok(i) if i.producer_alive && !i.closed);
            if live && !self.probes.contains_key(name) {
                self.probes.insert(name.clone(), Probe::start(name));
            }
        }
    }

    /// What the probe of `name` measured since the last call.
    fn take(&mut self, name: &str) -> Latency {
        let Some(p) = self.probes.get(name) else {
            return Latency {
                consumer: None,
                samples: 0,
                p50_ns: None,
                p99_ns: None,
                max_ns: None,
                error: Some("not probed (producer not running)".to_owned()),
            };
        };
        let mut st = p.shared.lock().unwrap_or_else(|e| e.into_inner());
        let h = st.hist.replace(Histogram::default());
        let n = h.as_ref().map_or(0, Histogram::count);
        let q = |f: fn(&Histogram) -> u64| h.as_ref().filter(|_| n > 0).map(f);
        Latency {
            consumer: st.entry,
            samples: n,
            p50_ns: q(|h| h.quantile(0.5)),
            p99_ns: q(|h| h.quantile(0.99)),
            max_ns: q(Histogram::max),
            error: st.error.clone(),
        }
    }

    /// Stops every probe and waits for their threads (their consumers detach).
    pub fn stop(&mut self) {
        for p in self.probes.values() {
            p.stop.store(true, Ordering::Relaxed);
        }
        for (_, mut p) in self.probes.drain() {
            if let Some(t) = p.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for LatencyProbes {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Probe {
    fn start(name: &str) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Mutex::new(ProbeState::default()));
        let (n, s, sh) = (name.to_owned(), stop.clone(), shared.clone());
        let thread = std::thread::Builder::new()
            .name("bips-top-probe".into())
            .spawn(move || probe_loop(&n, &s, &sh))
            .ok();
        Probe {
            stop,
            shared,
            thread,
        }
    }
}

fn probe_loop(name: &str, stop: &AtomicBool, shared: &Mutex<ProbeState>) {
    let set_error = |e: String| {
        shared.lock().unwrap_or_else(|e| e.into_inner()).error = Some(e);
    };
    let consumer = match bips::Consumer::open_with(name, &bips::ConsumerOptions::new()) {
        Ok(c) => c,
        Err(e) => return set_error(format!("cannot attach: {e}")),
    };
    shared.lock().unwrap_or_else(|e| e.into_inner()).entry = Some(consumer.entry_index());
    let mut local = Histogram::default();
    let mut last_flush = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        match consumer.recv_timeout(Duration::from_millis(50)) {
            Ok(s) => {
                let d = bips::now_ns().saturating_sub(s.timestamp_ns());
                drop(s);
                local.record(d);
            }
            Err(bips::Error::Timeout) => {}
            Err(bips::Error::Disconnected) => {
                set_error("the producer left".to_owned());
                break;
            }
            Err(e) => {
                set_error(e.to_string());
                break;
            }
        }
        if last_flush.elapsed() >= Duration::from_millis(20) {
            let mut st = shared.lock().unwrap_or_else(|e| e.into_inner());
            st.hist.get_or_insert_with(Histogram::default).merge(&local);
            local = Histogram::default();
            last_flush = Instant::now();
        }
    }
    let mut st = shared.lock().unwrap_or_else(|e| e.into_inner());
    st.hist.get_or_insert_with(Histogram::default).merge(&local);
}
