//! iceoryx2 0.10 publish-subscribe ping-pong, run by the bips benchmark harness
//! (`bips-bench` / `bips bench`) beside its own bips rows.
//!
//! Two processes, each pinned to a CPU:
//!
//! ```text
//! iceoryx2-peer pong --size S --cpu 1 --tag T &
//! iceoryx2-peer ping --size S --cpu 0 --tag T --seconds 1.0
//! ```
//!
//! `ping` publishes a `[u8]` slice of S bytes on service `bips-bench/T/a2b`
//! (loan_slice_uninit -> write the 8-byte sequence header -> send), `pong`
//! receives it (busy-polling `receive()`, as iceoryx2's own benchmark does) and
//! answers on `bips-bench/T/b2a` with a buffer loaned before it waited. The
//! payload is not copied or touched beyond the header: zero copy, exactly like
//! the bips rows. `ping` prints one line:
//!
//! ```text
//! RESULT <samples> <median_ns> <p99_ns> <p999_ns> <max_ns> <mean_ns>
//! ```
//!
//! with one-way latency = half of each round trip.
//!
//! Throughput (the harness's throughput rows, same conditions as bips': a
//! lossless channel holding 8 samples, the consumer checks each sample's
//! sequence in place and drops it):
//!
//! ```text
//! iceoryx2-peer rx --size S --cpu 1 --tag T &
//! iceoryx2-peer tx --size S --cpu 0 --tag T --seconds 1.0
//! ```
//!
//! on service `bips-bench/T/tp` (no safe overflow, subscriber buffer 8, the
//! publisher's backpressure strategy `RetryUntilDelivered`). `tx` prints
//! `RESULT_TP <samples> <seconds>`, `rx` prints `RESULT_TP <samples> <errors>`.
//!
//! Built on its own (it is not a member of the bips workspace, so the main
//! build never pulls iceoryx2):
//! `cargo build --release --manifest-path benches/iceoryx2-peer/Cargo.toml`.

use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

use iceoryx2::port::update_connections::UpdateConnections;
use iceoryx2::prelude::*;

type BoxError = Box<dyn std::error::Error>;

const STOP: u64 = u64::MAX;

struct Args {
    role: String,
    size: usize,
    cpu: Option<usize>,
    tag: String,
    seconds: f64,
    warmup: u64,
    max_samples: usize,
    fifo: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: iceoryx2-peer ping|pong|tx|rx --size BYTES --tag TAG [--cpu N] [--seconds S] \
         [--warmup N] [--max-samples N] [--fifo 1]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut it = std::env::args().skip(1);
    let role = it.next().unwrap_or_else(|| usage());
    if !["ping", "pong", "tx", "rx"].contains(&role.as_str()) {
        usage();
    }
    let mut a = Args {
        role,
        size: 64,
        cpu: None,
        tag: format!("{}", std::process::id()),
        seconds: 1.0,
        warmup: 1000,
        max_samples: 4_000_000,
        fifo: false,
    };
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| usage());
        match k.as_str() {
            "--size" => a.size = v.parse().unwrap_or_else(|_| usage()),
            "--cpu" => a.cpu = Some(v.parse().unwrap_or_else(|_| usage())),
            "--tag" => a.tag = v,
            "--seconds" => a.seconds = v.parse().unwrap_or_else(|_| usage()),
            "--warmup" => a.warmup = v.parse().unwrap_or_else(|_| usage()),
            "--max-samples" => a.max_samples = v.parse().unwrap_or_else(|_| usage()),
            "--fifo" => a.fifo = v == "1",
            _ => usage(),
        }
    }
    if a.size < 8 {
        a.size = 8;
    }
    a
}

fn pin(cpu: usize) -> Result<(), BoxError> {
    // SAFETY: `set` is a plain C struct that is valid when zeroed; CPU_SET
    // writes inside it; sched_setaffinity reads `size_of::<cpu_set_t>()` bytes.
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if r != 0 {
        return Err(format!(
            "sched_setaffinity({cpu}): {}",
            std::io::Error::last_os_error()
        )
        .into());
    }
    Ok(())
}

fn main() {
    let a = parse_args();
    if let Err(e) = run(&a) {
        eprintln!("iceoryx2-peer {}: {e}", a.role);
        std::process::exit(1);
    }
}

fn run(a: &Args) -> Result<(), BoxError> {
    set_log_level(LogLevel::Error);
    if let Some(cpu) = a.cpu {
        pin(cpu)?;
    }
    if a.fifo {
        // Same scheduling as the harness's own processes under --fifo.
        let p = libc::sched_param { sched_priority: 10 };
        // SAFETY: `p` is valid for the call; pid 0 is this process.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) } != 0 {
            return Err(format!("SCHED_FIFO: {}", std::io::Error::last_os_error()).into());
        }
    }
    let node = NodeBuilder::new().create::<ipc::Service>()?;
    if a.role == "tx" || a.role == "rx" {
        return throughput(a, &node);
    }
    let open = |dir: &str| {
        let name: ServiceName = format!("bips-bench/{}/{dir}", a.tag).as_str().try_into()?;
        let s = node
            .service_builder(&name)
            .publish_subscribe::<[u8]>()
            .max_publishers(1)
            .max_subscribers(1)
            .history_size(0)
            .subscriber_max_buffer_size(1)
            .enable_safe_overflow(true)
            .open_or_create()?;
        Ok::<_, BoxError>(s)
    };
    let (out_dir, in_dir) = if a.role == "ping" {
        ("a2b", "b2a")
    } else {
        ("b2a", "a2b")
    };
    let out = open(out_dir)?;
    let inc = open(in_dir)?;
    let publisher = out
        .publisher_builder()
        .initial_max_slice_len(a.size)
        .create()?;
    let subscriber = inc.subscriber_builder().create()?;

    // Both ends connected before the first sample.
    let t0 = Instant::now();
    while out.dynamic_config().number_of_subscribers() < 1
        || inc.dynamic_config().number_of_publishers() < 1
    {
        if t0.elapsed() > Duration::from_secs(10) {
            return Err("the other peer did not connect within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    publisher.update_connections()?;
    subscriber.update_connections()?;

    let loan = || publisher.loan_slice_uninit(a.size);
    let send = |mut s: iceoryx2::sample_mut_uninit::SampleMutUninit<
        ipc::Service,
        [MaybeUninit<u8>],
        (),
    >,
                seq: u64| {
        for (d, b) in s.payload_mut()[..8].iter_mut().zip(seq.to_le_bytes()) {
            d.write(b);
        }
        // SAFETY: as in iceoryx2's own publish-subscribe benchmark, only the
        // header is written: the payload is shared memory handed over in place
        // and nobody reads past the 8-byte header (zero copy is the point).
        let s = unsafe { s.assume_init() };
        s.send()
    };
    let read_seq = |payload: &[u8]| -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&payload[..8]);
        u64::from_le_bytes(b)
    };

    if a.role == "pong" {
        let mut next = loan()?;
        loop {
            let seq = loop {
                if let Some(s) = subscriber.receive()? {
                    break read_seq(s.payload());
                }
                std::hint::spin_loop();
            };
            send(next, seq)?;
            if seq == STOP {
                return Ok(());
            }
            next = loan()?;
        }
    }

    // ping: first contact (the very first samples may race the connection).
    let mut contact = false;
    for _ in 0..10_000 {
        send(loan()?, 0)?;
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(1) {
            if subscriber.receive()?.is_some() {
                contact = true;
                break;
            }
        }
        if contact {
            break;
        }
    }
    if !contact {
        return Err("no answer from pong".into());
    }
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(5) {
        let _ = subscriber.receive()?;
    }

    let mut rtts: Vec<u64> = Vec::with_capacity(a.max_samples);
    let mut seq = 1u64;
    let mut next = loan()?;
    let wait_for = |want: u64| -> Result<(), BoxError> {
        loop {
            if let Some(s) = subscriber.receive()? {
                if read_seq(s.payload()) == want {
                    return Ok(());
                }
            }
            std::hint::spin_loop();
        }
    };
    for _ in 0..a.warmup {
        send(next, seq)?;
        next = loan()?;
        wait_for(seq)?;
        seq += 1;
    }
    let budget = Duration::from_secs_f64(a.seconds);
    let start = Instant::now();
    while rtts.len() < a.max_samples && (start.elapsed() < budget || rtts.len() < 20) {
        let t = Instant::now();
        send(next, seq)?;
        next = loan()?;
        wait_for(seq)?;
        rtts.push(t.elapsed().as_nanos() as u64);
        seq += 1;
    }
    send(next, STOP)?;
    wait_for(STOP)?;

    let mut one_way: Vec<u64> = rtts.iter().map(|r| r / 2).collect();
    one_way.sort_unstable();
    let q = |p: f64| -> u64 {
        let n = one_way.len();
        let rank = ((n as f64 * p).ceil() as usize).clamp(1, n);
        one_way[rank - 1]
    };
    let mean = one_way.iter().sum::<u64>() / one_way.len() as u64;
    println!(
        "RESULT {} {} {} {} {} {}",
        one_way.len(),
        q(0.5),
        q(0.99),
        q(0.999),
        one_way[one_way.len() - 1],
        mean
    );
    Ok(())
}

/// Samples in flight in the throughput rows: bips' throughput channel has 8
/// buffers.
const TP_BUFFER: usize = 8;

/// The throughput roles: `tx` publishes as fast as `rx` takes samples.
fn throughput(a: &Args, node: &Node<ipc::Service>) -> Result<(), BoxError> {
    let name: ServiceName = format!("bips-bench/{}/tp", a.tag).as_str().try_into()?;
    let service = node
        .service_builder(&name)
        .publish_subscribe::<[u8]>()
        .max_publishers(1)
        .max_subscribers(1)
        .history_size(0)
        .subscriber_max_buffer_size(TP_BUFFER)
        .enable_safe_overflow(false)
        .open_or_create()?;
    let read_seq = |payload: &[u8]| -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&payload[..8]);
        u64::from_le_bytes(b)
    };
    let connected = |ok: &dyn Fn() -> bool| -> Result<(), BoxError> {
        let t0 = Instant::now();
        while !ok() {
            if t0.elapsed() > Duration::from_secs(10) {
                return Err("the other peer did not connect within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    };
    if a.role == "rx" {
        let subscriber = service
            .subscriber_builder()
            .buffer_size(TP_BUFFER)
            .create()?;
        connected(&|| service.dynamic_config().number_of_publishers() >= 1)?;
        subscriber.update_connections()?;
        let (mut n, mut errors, mut expect) = (0u64, 0u64, 0u64);
        loop {
            let Some(s) = subscriber.receive()? else {
                std::hint::spin_loop();
                continue;
            };
            let seq = read_seq(s.payload());
            drop(s);
            if seq == STOP {
                break;
            }
            if seq != expect {
                errors += 1;
            }
            expect = seq + 1;
            n += 1;
        }
        println!("RESULT_TP {n} {errors}");
        return Ok(());
    }
    let publisher = service
        .publisher_builder()
        .initial_max_slice_len(a.size)
        .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
        .create()?;
    connected(&|| service.dynamic_config().number_of_subscribers() >= 1)?;
    publisher.update_connections()?;
    // Samples sent in the first instants after the subscriber appears can be
    // lost before its side of the connection is up (seen here: a gap of a few
    // thousand at the start, never later); give it time before counting.
    std::thread::sleep(Duration::from_millis(50));
    let send = |seq: u64| -> Result<(), BoxError> {
        let mut s = publisher.loan_slice_uninit(a.size)?;
        for (d, b) in s.payload_mut()[..8].iter_mut().zip(seq.to_le_bytes()) {
            d.write(b);
        }
        // SAFETY: as in the latency roles: only the 8-byte header is written
        // and read; the rest of the payload is handed over untouched.
        let s = unsafe { s.assume_init() };
        s.send()?;
        Ok(())
    };
    let budget = Duration::from_secs_f64(a.seconds);
    let start = Instant::now();
    let mut n = 0u64;
    loop {
        send(n)?;
        n += 1;
        if n.is_multiple_of(64) && start.elapsed() >= budget {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    send(STOP)?;
    println!("RESULT_TP {n} {secs:.6}");
    Ok(())
}
