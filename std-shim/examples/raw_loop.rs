//! The raw real-time API in a control loop: the buffer table is taken once,
//! then each cycle asks only which buffer to fill (`loan_raw`) or read
//! (`recv_raw`), by index, with no allocation and no system call on the way
//! (the consumer spins). Producer and consumer are two threads here for a
//! self-contained example; across processes the code is the same.
//!
//! ```text
//! cargo run --release -p bips --example raw_loop -- [CYCLES]
//! ```

use std::process::ExitCode;
use std::time::Instant;

use bips::{ConsumerOptions, Options, Producer, Start, WaitStrategy};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raw_loop: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let cycles: u64 = std::env::args()
        .nth(1)
        .map_or(Ok(100_000), |s| s.parse())
        .map_err(|e| format!("CYCLES: {e}"))?;
    bips::cleanup_on_signals()?;
    let name = format!("raw-loop-{}", std::process::id());
    let producer = Producer::create(&name, &Options::new(8, 4096).wait(WaitStrategy::Spin))?;
    let consumer = bips::Consumer::open_with(
        &name,
        &ConsumerOptions::new()
            .start(Start::Oldest)
            .wait(WaitStrategy::Spin),
    )?;
    // Set-up: every buffer's address, once (a DMA engine or
    // cudaHostRegister would register them here).
    let table = producer.buffers();
    let seen = consumer.buffers();
    println!(
        "{} buffers of {} bytes registered, e.g. buffer 0 at {:p}",
        table.len(),
        table[0].capacity,
        table[0].ptr
    );

    let reader = std::thread::spawn(move || -> Result<u64, bips::Error> {
        let mut sum = 0u64;
        for cycle in 0..cycles {
            let s = consumer.recv_raw()?;
            let b = &seen[s.buffer_index() as usize];
            // SAFETY: the sample is held until release_raw; the producer
            // does not write its buffer meanwhile, and 8 <= len <= capacity.
            let v = u64::from_le_bytes(unsafe { *b.ptr.cast::<[u8; 8]>() });
            assert_eq!(v, cycle, "cycle {cycle} read {v}");
            sum = sum.wrapping_add(v);
            consumer.release_raw(s);
        }
        Ok(sum)
    });
    let t = Instant::now();
    for cycle in 0..cycles {
        let mut loan = producer.loan_raw()?;
        let b = &table[loan.buffer_index() as usize];
        // SAFETY: the buffer is loaned to us until publish_raw; nobody else
        // writes or reads it; 8 bytes fit its capacity (4096).
        unsafe { b.ptr.cast::<[u8; 8]>().write(cycle.to_le_bytes()) };
        loan.set_len(8)?;
        producer.publish_raw(loan)?;
    }
    let sum = reader.join().map_err(|_| "the reader panicked")??;
    let took = t.elapsed();
    println!(
        "{cycles} cycles in {took:.2?} ({:.0} ns per cycle, producer and consumer on two threads), checksum {sum}",
        took.as_nanos() as f64 / cycles.max(1) as f64
    );
    Ok(())
}
