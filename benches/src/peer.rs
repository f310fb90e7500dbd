//! The peer process: the other end of every ping-pong and the consumers of
//! the throughput rows. The harness starts it once per role (pinned to the
//! other CPU) and drives it over stdin/stdout, one command per row, so every
//! 1->1 row — bips and baselines alike — runs between the same two processes.
//!
//! Protocol (one line each way): the harness sends a command, the peer sets up
//! and answers `READY`, both run, the harness ends the row with a stop
//! sentinel, the peer answers `DONE ...` (or `ERR message` at any point).

use std::io::{BufRead, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::sync::atomic::Ordering;
use std::time::Instant;

use bips::{Backend, Consumer, ConsumerOptions, Options, Producer, Start};
use clap::Args;

use crate::hist::Histogram;
use crate::sys::{futex_wait, futex_wake, pin_to_cpu, RawPage};
use crate::{read_seq, stamp, wait_strategy, STOP};

type BoxError = Box<dyn std::error::Error>;

/// Arguments of the (internal) peer process.
#[derive(Args, Debug, Clone)]
pub struct PeerArgs {
    /// CPU to pin this process to.
    #[arg(long)]
    pub cpu: Option<usize>,
    /// This peer's index (names its reply channel).
    #[arg(long, default_value_t = 0)]
    pub index: u32,
    /// Run as SCHED_FIFO (the harness's --fifo).
    #[arg(long)]
    pub fifo: bool,
    /// `max_held` of the channels this peer creates (the harness's --max-held).
    #[arg(long, default_value_t = bips::MAX_HELD as u32)]
    pub max_held: u32,
}

/// Runs the peer: reads commands from stdin until `quit` or end of input.
pub fn peer_main(a: &PeerArgs) -> Result<(), BoxError> {
    if let Some(cpu) = a.cpu {
        pin_to_cpu(cpu).map_err(|e| format!("pinning to CPU {cpu}: {e}"))?;
    }
    if a.fifo {
        crate::sys::set_fifo().map_err(|e| format!("SCHED_FIFO: {e}"))?;
    }
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = line?;
        let f: Vec<&str> = line.split_whitespace().collect();
        let r = match f.as_slice() {
            ["quit"] | [] => return Ok(()),
            ["raw-spin", path] => raw_spin(path, &mut out),
            ["raw-futex", path] => raw_futex(path, &mut out),
            ["raw-chain", path] => raw_chain(path, &mut out),
            ["uds", name, size] => uds(name, size.parse()?, &mut out),
            ["bips-pp", size, wait, ping, pong] => bips_pingpong(
                size.parse()?,
                wait,
                ping,
                pong,
                Backend::Shm,
                a.max_held,
                &mut out,
            ),
            ["bips-pp", size, wait, ping, pong, "memfd"] => {
                let b = Backend::Memfd;
                bips_pingpong(size.parse()?, wait, ping, pong, b, a.max_held, &mut out)
            }
            ["bips-tp", wait, chan] => bips_throughput(wait, chan, &mut out),
            _ => Err(format!("unknown command {line:?}").into()),
        };
        if let Err(e) = r {
            writeln!(out, "ERR {e}")?;
            out.flush()?;
        }
    }
    Ok(())
}

fn say(out: &mut impl Write, s: &str) -> std::io::Result<()> {
    writeln!(out, "{s}")?;
    out.flush()
}

/// The physical floor: answer each value stored in `ping` by storing it in
/// `pong`, busy-polling.
fn raw_spin(path: &str, out: &mut impl Write) -> Result<(), BoxError> {
    let page = RawPage::open(path)?;
    let (ping, pong) = page.spin_words();
    let mut last = ping.load(Ordering::Acquire);
    say(out, "READY")?;
    loop {
        let v = loop {
            let v = ping.load(Ordering::Acquire);
            if v != last {
                break v;
            }
            std::hint::spin_loop();
        };
        pong.store(v, Ordering::Release);
        last = v;
        if v == STOP {
            break;
        }
    }
    say(out, "DONE")?;
    Ok(())
}

/// The floor plus a pointer chase: the ping word carries the offset of a first
/// line, which carries the offset of the next, and so on (low 16 bits: the
/// offset, 0 ends the chain; high bits: the sequence). Each line is a
/// dependent cache miss, as a ring slot -> descriptor -> payload header is.
fn raw_chain(path: &str, out: &mut impl Write) -> Result<(), BoxError> {
    let page = RawPage::open(path)?;
    let (ping, pong) = page.spin_words();
    let mut last = ping.load(Ordering::Acquire);
    say(out, "READY")?;
    loop {
        let v = loop {
            let v = ping.load(Ordering::Acquire);
            if v != last {
                break v;
            }
            std::hint::spin_loop();
        };
        last = v;
        if v == STOP {
            pong.store(v, Ordering::Release);
            break;
        }
        let seq = v >> 16;
        let mut link = v & 0xffff;
        while link != 0 {
            let w = page
                .word_at(link as usize)
                .ok_or("raw-chain: bad link")?
                .load(Ordering::Acquire);
            if w >> 16 != seq {
                return Err("raw-chain: a line carried another sequence".into());
            }
            link = w & 0xffff;
        }
        pong.store(v, Ordering::Release);
    }
    say(out, "DONE")?;
    Ok(())
}

/// The blocking floor: the same exchange, each side sleeping on a shared futex
/// and always waking the other (one FUTEX_WAKE per message, no spinning).
fn raw_futex(path: &str, out: &mut impl Write) -> Result<(), BoxError> {
    let page = RawPage::open(path)?;
    let (ping, pong) = page.futex_words();
    let mut last = ping.load(Ordering::Acquire);
    say(out, "READY")?;
    loop {
        let v = loop {
            let v = ping.load(Ordering::Acquire);
            if v != last {
                break v;
            }
            futex_wait(ping, last);
        };
        pong.store(v, Ordering::Release);
        futex_wake(pong);
        last = v;
        if v == u32::MAX {
            break;
        }
    }
    say(out, "DONE")?;
    Ok(())
}

/// The copy baseline: read `size` bytes from a Unix stream socket, send them
/// back (the kernel copies each direction twice: user -> kernel -> user).
fn uds(name: &str, size: usize, out: &mut impl Write) -> Result<(), BoxError> {
    let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
    let mut s = UnixStream::connect_addr(&addr)?;
    let mut buf = vec![0u8; size.max(8)];
    say(out, "READY")?;
    loop {
        s.read_exact(&mut buf)?;
        let seq = read_seq(&buf);
        s.write_all(&buf)?;
        if seq == STOP {
            break;
        }
    }
    say(out, "DONE")?;
    Ok(())
}

/// bips ping-pong: receive on `ping`, answer on our own channel `pong` with a
/// buffer loaned before waiting. Also records publish -> receive latency from
/// the sample's timestamp (one clock, CLOCK_MONOTONIC, across processes).
fn bips_pingpong(
    size: usize,
    wait: &str,
    ping: &str,
    pong: &str,
    backend: Backend,
    max_held: u32,
    out: &mut impl Write,
) -> Result<(), BoxError> {
    let wait = wait_strategy(wait)?;
    let producer = Producer::create(
        pong,
        &Options::new(4, size)
            .max_consumers(1)
            .max_held(max_held)
            .wait(wait)
            .backend(backend),
    )?;
    let consumer = Consumer::open_with(
        ping,
        &ConsumerOptions::new().start(Start::Oldest).wait(wait),
    )?;
    let mut hist = Histogram::default();
    say(out, "READY")?;
    let mut next = producer.loan()?;
    loop {
        let (seq, ts) = {
            let s = consumer.recv()?;
            (read_seq(s.as_slice()), s.timestamp_ns())
        }; // released here, before the answer, as a real consumer would
        hist.record(bips::now_ns().saturating_sub(ts));
        stamp(next.as_mut_slice(), seq);
        next.publish()?; // length: the whole buffer, handed over in place
        if seq == STOP {
            break;
        }
        next = producer.loan()?;
    }
    // Wait for the harness to drop its consumer of our channel, so dropping the
    // producer (which closes the channel) cannot race its last receive.
    let t = Instant::now();
    while producer.consumer_count() > 0 && t.elapsed().as_secs() < 5 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    say(out, &format!("DONE {}", hist.encode()))?;
    Ok(())
}

/// Throughput consumer: receive everything (Block policy), check each header's
/// sequence in place, release; report the count and the time from first to
/// last sample.
fn bips_throughput(wait: &str, chan: &str, out: &mut impl Write) -> Result<(), BoxError> {
    let wait = wait_strategy(wait)?;
    let consumer = Consumer::open_with(
        chan,
        &ConsumerOptions::new().start(Start::Oldest).wait(wait),
    )?;
    say(out, "READY")?;
    let (mut n, mut errors, mut expect) = (0u64, 0u64, 0u64);
    let mut first: Option<Instant> = None;
    loop {
        let s = consumer.recv()?;
        let seq = read_seq(s.as_slice());
        drop(s);
        if seq == STOP {
            break;
        }
        first.get_or_insert_with(Instant::now);
        if seq != expect {
            errors += 1;
        }
        expect = seq + 1;
        n += 1;
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    say(out, &format!("DONE {n} {errors} {secs:.6}"))?;
    Ok(())
}
