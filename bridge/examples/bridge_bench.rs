//! Bridge benchmark: a bips channel carried across two bridges on loopback
//! TCP, next to Zenoh's own pub/sub on the same payloads, in the same run and
//! with the same session configuration.
//!
//! ```text
//! cargo run --release -p bips-zenoh --example bridge_bench -- [--csv FILE] [--smoke]
//! ```
//!
//! For each payload size (64 KiB, and a 1080p RGB frame of 1920x1080x3
//! bytes) and each path:
//!
//! * `zenoh`: a Zenoh publisher (session A, listening on 127.0.0.1) puts the
//!   payload (a copy of a prepared buffer, with an 8-byte timestamp as
//!   attachment) to a subscriber (session B, connected to A), reliable,
//!   `CongestionControl::Block`, a FIFO handler;
//! * `bridge`: a producer publishes into a local channel (Block, 4 buffers),
//!   `bips_zenoh::publish` carries it (session A), `bips_zenoh::subscribe`
//!   (session B) makes a local channel of it, a consumer reads it: two
//!   shared-memory hops and two bridges around the same Zenoh hop.
//!
//! Everything runs in this one process (threads), the Zenoh hop through the
//! kernel's loopback TCP. Each run first carries 20 samples one at a time,
//! not measured (the route is up, buffers and TCP windows are warm). Two
//! modes: `flat out` (N samples as fast as the path takes them: samples/s,
//! MB/s and the latency under that load) and `one at a time` (the next sample
//! is sent when the previous one arrived: latency without queueing). Latency is the sample's publish timestamp to
//! its receipt, both `CLOCK_MONOTONIC` of this machine.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bips::{Consumer, Options, Producer};
use bips_zenoh::zenoh::handlers::FifoChannel;
use bips_zenoh::zenoh::qos::CongestionControl;
use bips_zenoh::zenoh::Wait;
use bips_zenoh::Config;

/// Samples sent one at a time and not measured before each run: the route
/// is up (a `Block` publishing bridge takes nothing until a subscriber
/// matches), buffers and TCP windows are warm.
const WARMUP: usize = 20;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn free_port() -> Res<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// One measured run.
struct Run {
    path: &'static str,
    size: usize,
    mode: &'static str,
    samples: usize,
    secs: f64,
    lat_ns: Vec<u64>,
}

impl Run {
    fn pct(&self, p: f64) -> f64 {
        let mut v = self.lat_ns.clone();
        v.sort_unstable();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v.get(i).copied().unwrap_or(0) as f64 / 1000.0
    }
    fn rate(&self) -> f64 {
        self.samples as f64 / self.secs
    }
    fn mbps(&self) -> f64 {
        self.rate() * self.size as f64 / 1e6
    }
}

fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i as u8).wrapping_mul(31)).collect()
}

fn configs() -> Res<(Config, Config)> {
    let ep = format!("tcp/127.0.0.1:{}", free_port()?);
    Ok((Config::new().listen(ep.clone()), Config::new().connect(ep)))
}

/// Zenoh's own pub/sub, the same session configuration as the bridges'.
fn zenoh_run(size: usize, n: usize, one_at_a_time: bool) -> Res<Run> {
    let (ca, cb) = configs()?;
    let a = bips_zenoh::zenoh::open(ca.to_zenoh()?).wait()?;
    let b = bips_zenoh::zenoh::open(cb.to_zenoh()?).wait()?;
    let key = format!("bips-bench/{}/zenoh", std::process::id());
    let sub = b
        .declare_subscriber(key.clone())
        .with(FifoChannel::new(8))
        .wait()?;
    let publ = a
        .declare_publisher(key)
        .congestion_control(CongestionControl::Block)
        .wait()?;
    let t = Instant::now();
    while !publ.matching_status().wait()?.matching() {
        if t.elapsed() > Duration::from_secs(20) {
            return Err("zenoh: no matching subscriber within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let data = Arc::new(payload(size));
    let mut lat = Vec::with_capacity(n + WARMUP);
    let recv_one = |lat: &mut Vec<u64>| -> Res<()> {
        let s = sub
            .recv_timeout(Duration::from_secs(20))?
            .ok_or("zenoh: nothing received within 20 s")?;
        let now = bips::now_ns();
        let ts = s.attachment().ok_or("no attachment")?.to_bytes();
        let ts = u64::from_le_bytes(ts[..8].try_into()?);
        if s.payload().len() != size {
            return Err("zenoh: wrong payload size".into());
        }
        lat.push(now.saturating_sub(ts));
        Ok(())
    };
    for _ in 0..WARMUP {
        publ.put(data.to_vec())
            .attachment(bips::now_ns().to_le_bytes().to_vec())
            .wait()?;
        recv_one(&mut lat)?;
    }
    lat.clear();
    let t0 = Instant::now();
    if one_at_a_time {
        for _ in 0..n {
            publ.put(data.to_vec())
                .attachment(bips::now_ns().to_le_bytes().to_vec())
                .wait()?;
            recv_one(&mut lat)?;
        }
    } else {
        std::thread::scope(|sc| -> Res<()> {
            let h = sc.spawn(|| -> Res<()> {
                for _ in 0..n {
                    publ.put(data.to_vec())
                        .attachment(bips::now_ns().to_le_bytes().to_vec())
                        .wait()?;
                }
                Ok(())
            });
            for _ in 0..n {
                recv_one(&mut lat)?;
            }
            h.join().map_err(|_| "publisher thread panicked")?
        })?;
    }
    let secs = t0.elapsed().as_secs_f64();
    drop(publ);
    drop(sub);
    a.close().wait()?;
    b.close().wait()?;
    Ok(Run {
        path: "zenoh",
        size,
        mode: if one_at_a_time {
            "one at a time"
        } else {
            "flat out"
        },
        samples: n,
        secs,
        lat_ns: lat,
    })
}

/// Publishes `data` into the source channel, stamped now.
fn send(producer: &Producer, data: &[u8]) -> Res<()> {
    let mut s = producer.loan_timeout(Duration::from_secs(20))?;
    s.as_mut_slice()[..data.len()].copy_from_slice(data);
    s.set_len(data.len());
    s.set_timestamp_ns(bips::now_ns());
    s.publish()?;
    Ok(())
}

/// Producer -> publish bridge -> Zenoh -> subscribe bridge -> consumer.
fn bridge_run(size: usize, n: usize, one_at_a_time: bool) -> Res<Run> {
    let (ca, cb) = configs()?;
    let tag = format!("{}-{size}-{}", std::process::id(), u8::from(one_at_a_time));
    let (src, dst) = (format!("bench-br-src-{tag}"), format!("bench-br-dst-{tag}"));
    let key = format!("bips-bench/{tag}/bridge");
    let producer = Producer::create(&src, &Options::new(4, size))?;
    let publish = bips_zenoh::publish(&src, &key, &ca)?;
    let subscribe = bips_zenoh::subscribe(&key, &dst, &Options::new(4, size), &cb)?;
    let consumer = Consumer::open(&dst)?;
    // The publishing bridge attaches to the source (it polls for it).
    let t = Instant::now();
    while producer.consumer_count() == 0 {
        if t.elapsed() > Duration::from_secs(20) {
            return Err("bridge: the publishing bridge did not attach within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let data = payload(size);
    let mut lat = Vec::with_capacity(n + WARMUP);
    let recv_one = |lat: &mut Vec<u64>| -> Res<()> {
        let s = consumer.recv_timeout(Duration::from_secs(20))?;
        let now = bips::now_ns();
        if s.len() != size {
            return Err("bridge: wrong payload size".into());
        }
        lat.push(now.saturating_sub(s.timestamp_ns()));
        Ok(())
    };
    for _ in 0..WARMUP {
        send(&producer, &data)?;
        recv_one(&mut lat)?;
    }
    lat.clear();
    let t0 = Instant::now();
    if one_at_a_time {
        for _ in 0..n {
            send(&producer, &data)?;
            recv_one(&mut lat)?;
        }
    } else {
        // A producer is used by one thread at a time (`!Sync`): it moves to
        // the sending thread and comes back.
        let (producer_back, data) = (&mut Some(producer), &data);
        std::thread::scope(|sc| -> Res<()> {
            let p = producer_back.take().ok_or("no producer")?;
            let h = sc.spawn(move || -> Res<Producer> {
                for _ in 0..n {
                    send(&p, data)?;
                }
                Ok(p)
            });
            for _ in 0..n {
                recv_one(&mut lat)?;
            }
            *producer_back = Some(h.join().map_err(|_| "producer thread panicked")??);
            Ok(())
        })?;
    }
    let secs = t0.elapsed().as_secs_f64();
    drop(consumer);
    let sub_stats = subscribe.stop()?;
    publish.stop()?;
    if sub_stats.dropped != 0 {
        return Err(format!("bridge: {} samples dropped (Block)", sub_stats.dropped).into());
    }
    Ok(Run {
        path: "bridge",
        size,
        mode: if one_at_a_time {
            "one at a time"
        } else {
            "flat out"
        },
        samples: n,
        secs,
        lat_ns: lat,
    })
}

fn size_name(size: usize) -> String {
    match size {
        6_220_800 => "1080p RGB (6.2 MB)".into(),
        65_536 => "64 KiB".into(),
        s => format!("{s} B"),
    }
}

fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let (mut csv, mut smoke) = (None, false);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--csv" => csv = Some(args.next().ok_or("--csv FILE")?),
            "--smoke" => smoke = true,
            "-h" | "--help" => {
                println!("bridge_bench [--csv FILE] [--smoke]");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    // (payload, samples flat out, samples one at a time)
    let cases: &[(usize, usize, usize)] = if smoke {
        &[(65_536, 300, 100), (1920 * 1080 * 3, 20, 10)]
    } else {
        &[(65_536, 5000, 1000), (1920 * 1080 * 3, 300, 100)]
    };
    let mut runs = Vec::new();
    for &(size, flat, single) in cases {
        for one in [false, true] {
            let n = if one { single } else { flat };
            // Alternate the paths so that a load change on the machine hits both.
            runs.push(zenoh_run(size, n, one)?);
            runs.push(bridge_run(size, n, one)?);
        }
    }
    println!(
        "| payload | path | mode | samples | samples/s | MB/s | latency p50 (us) | p90 | p99 | max |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &runs {
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            size_name(r.size),
            r.path,
            r.mode,
            r.samples,
            r.rate(),
            r.mbps(),
            r.pct(0.5),
            r.pct(0.9),
            r.pct(0.99),
            r.pct(1.0)
        );
    }
    if let Some(path) = csv {
        let mut f = std::fs::File::create(&path)?;
        writeln!(
            f,
            "path,payload_bytes,mode,samples,seconds,samples_per_s,mb_per_s,p50_us,p90_us,p99_us,max_us"
        )?;
        for r in &runs {
            writeln!(
                f,
                "{},{},{},{},{:.4},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1}",
                r.path,
                r.size,
                r.mode.replace(' ', "_"),
                r.samples,
                r.secs,
                r.rate(),
                r.mbps(),
                r.pct(0.5),
                r.pct(0.9),
                r.pct(0.99),
                r.pct(1.0)
            )?;
        }
        eprintln!("bridge_bench: wrote {path}");
    }
    Ok(())
}
