//! What a channel's `max_held` costs on the hot path, robust to a loaded
//! machine: the criterion cycle (loan + publish + try_recv + release, 64 B,
//! one process) on channels of max_held 8 and 64 side by side, timed in
//! interleaved batches so both see the same load, reported as the fastest
//! batch (the unloaded cost) and the median batch, per cycle.
//!
//! `cargo run --release -p bips-bench --example held_cost [-- BATCHES]`

use std::time::Instant;

use bips::{Backpressure, Consumer, ConsumerOptions, Options, Producer, Start, WaitStrategy};

/// Cycles per timed batch.
const BATCH: u64 = 20_000;

struct Setup {
    label: String,
    producer: Producer,
    consumers: Vec<Consumer>,
    seq: u64,
    batches: Vec<f64>,
}

impl Setup {
    fn new(consumers: u32, policy: Backpressure, max_held: u32) -> Setup {
        let name = format!(
            "bench-heldcost-{}-{consumers}-{policy:?}-{max_held}",
            std::process::id()
        );
        let producer = Producer::create(
            &name,
            &Options::new(4, 64)
                .max_consumers(consumers)
                .max_held(max_held)
                .backpressure(policy)
                .wait(WaitStrategy::Spin),
        )
        .expect("create");
        let label = format!("{consumers} {policy:?}");
        let consumers = (0..consumers)
            .map(|_| {
                Consumer::open_with(
                    &name,
                    &ConsumerOptions::new()
                        .start(Start::Oldest)
                        .wait(WaitStrategy::Spin),
                )
                .expect("open")
            })
            .collect();
        Setup {
            label,
            producer,
            consumers,
            seq: 0,
            batches: Vec::new(),
        }
    }

    fn batch(&mut self) {
        let t = Instant::now();
        for _ in 0..BATCH {
            let mut s = self
                .producer
                .try_loan()
                .expect("loan")
                .expect("a free buffer");
            bips_bench::stamp(s.as_mut_slice(), self.seq);
            s.publish().expect("publish");
            for c in &self.consumers {
                let r = c.try_recv().expect("recv").expect("a sample");
                assert_eq!(bips_bench::read_seq(r.as_slice()), self.seq);
            }
            self.seq += 1;
        }
        self.batches
            .push(t.elapsed().as_nanos() as f64 / BATCH as f64);
    }

    fn min_median(&mut self) -> (f64, f64) {
        self.batches.sort_by(f64::total_cmp);
        (self.batches[0], self.batches[self.batches.len() / 2])
    }
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("BATCHES: a number"))
        .unwrap_or(200);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "held_cost: {rounds} interleaved batches of {BATCH} cycles per row; load average at start: {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!("| consumers, policy | max_held 8: fastest / median batch | max_held 64: fastest / median batch |");
    println!("|---|---:|---:|");
    for consumers in [1u32, 4] {
        for policy in [Backpressure::Block, Backpressure::DropOldest] {
            let mut a = Setup::new(consumers, policy, 8);
            let mut b = Setup::new(consumers, policy, 64);
            for _ in 0..rounds {
                a.batch();
                b.batch();
            }
            let (a_min, a_med) = a.min_median();
            let (b_min, b_med) = b.min_median();
            println!(
                "| {} | {a_min:.1} / {a_med:.1} ns | {b_min:.1} / {b_med:.1} ns |",
                a.label
            );
        }
    }
}
