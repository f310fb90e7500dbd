//! Criterion micro-benchmarks of the hot path, in one process:
//! loan -> stamp header -> publish -> try_recv -> read header -> release.
//!
//! `cargo bench -p bips-bench --bench hotpath`
//!
//! The cost must not depend on the payload size (P1): the same cycle is run
//! for 64 B .. 32 MiB buffers, and only the 8-byte header is touched. One
//! process and one core, so this is the instruction cost of the protocol
//! without cross-core cache-line transfers (the harness measures those).

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use bips::{Backpressure, Consumer, ConsumerOptions, Options, Producer, Start, WaitStrategy};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn name(tag: &str) -> String {
    format!("bench-hotpath-{}-{tag}", std::process::id())
}

fn cycle(c: &mut Criterion) {
    let mut g = c.benchmark_group("loan_publish_recv_release");
    for &size in &[64usize, 4096, 1 << 20, 1920 * 1080 * 3, 32 << 20] {
        for policy in [Backpressure::Block, Backpressure::DropOldest] {
            let tag = format!("{size}-{policy:?}");
            let producer = Producer::create(
                &name(&tag),
                &Options::new(4, size)
                    .max_consumers(1)
                    .backpressure(policy)
                    .wait(WaitStrategy::Spin),
            )
            .expect("create");
            let consumer = Consumer::open_with(
                &name(&tag),
                &ConsumerOptions::new()
                    .start(Start::Oldest)
                    .wait(WaitStrategy::Spin),
            )
            .expect("open");
            g.throughput(Throughput::Elements(1));
            g.bench_function(BenchmarkId::new(format!("{policy:?}"), size), |b| {
                let mut seq = 0u64;
                b.iter(|| {
                    let mut s = producer.try_loan().expect("loan").expect("a free buffer");
                    bips_bench::stamp(s.as_mut_slice(), seq);
                    s.publish().expect("publish");
                    let r = consumer.try_recv().expect("recv").expect("a sample");
                    assert_eq!(bips_bench::read_seq(r.as_slice()), seq);
                    drop(r); // release
                    seq += 1;
                });
            });
            drop(consumer);
            drop(producer); // unlinks /dev/shm/bips.<name>
        }
    }
    g.finish();
}

fn parts(c: &mut Criterion) {
    // The two halves separately, at 64 B: what the producer pays per sample
    // (loan + publish) with a consumer draining in the same loop, and what the
    // consumer pays (try_recv + release) for a sample already published.
    let mut g = c.benchmark_group("halves");
    let producer = Producer::create(
        &name("halves"),
        &Options::new(8, 64)
            .max_consumers(1)
            .wait(WaitStrategy::Spin),
    )
    .expect("create");
    let consumer = Consumer::open_with(
        &name("halves"),
        &ConsumerOptions::new().start(Start::Oldest),
    )
    .expect("open");
    g.bench_function("empty_try_recv", |b| {
        b.iter(|| assert!(consumer.try_recv().expect("recv").is_none()))
    });
    g.bench_function("loan_and_drop_unpublished", |b| {
        b.iter(|| drop(producer.try_loan().expect("loan").expect("free")))
    });
    g.finish();

    // Reference points for reading the figures above: the two fixed costs the
    // hot path pays per sample besides its atomics.
    let mut g = c.benchmark_group("reference");
    g.bench_function("now_ns_clock_monotonic", |b| b.iter(bips::now_ns));
    g.bench_function("fence_seqcst", |b| {
        b.iter(|| std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst))
    });
    g.finish();
}

/// The cost of a channel's `max_held` (issue 14), in the same run: the 64-B
/// cycle at max_held 8 (holds in the consumer's entry line, the default) and
/// 64 (a run of 512 B per consumer in the hold table, which each retire scans:
/// 64 words instead of 8 per consumer), with 1 and 4 consumers attached (the
/// producer scans every live entry). The consumer that receives holds one
/// sample at a time, as the cycle above.
fn held(c: &mut Criterion) {
    let mut g = c.benchmark_group("max_held");
    for consumers in [1u32, 4] {
        for policy in [Backpressure::Block, Backpressure::DropOldest] {
            for max_held in [8u32, 64] {
                let tag = format!("held-{consumers}-{policy:?}-{max_held}");
                let producer = Producer::create(
                    &name(&tag),
                    &Options::new(4, 64)
                        .max_consumers(consumers)
                        .max_held(max_held)
                        .backpressure(policy)
                        .wait(WaitStrategy::Spin),
                )
                .expect("create");
                let open = || {
                    Consumer::open_with(
                        &name(&tag),
                        &ConsumerOptions::new()
                            .start(Start::Oldest)
                            .wait(WaitStrategy::Spin),
                    )
                    .expect("open")
                };
                let consumer = open();
                // The others stay attached and up to date (Block needs their
                // cursors past each sample): they receive in the same loop.
                let others: Vec<Consumer> = (1..consumers).map(|_| open()).collect();
                g.throughput(Throughput::Elements(1));
                let id = format!("{consumers}c-{policy:?}");
                g.bench_function(BenchmarkId::new(id, max_held), |b| {
                    let mut seq = 0u64;
                    b.iter(|| {
                        let mut s = producer.try_loan().expect("loan").expect("a free buffer");
                        bips_bench::stamp(s.as_mut_slice(), seq);
                        s.publish().expect("publish");
                        let r = consumer.try_recv().expect("recv").expect("a sample");
                        assert_eq!(bips_bench::read_seq(r.as_slice()), seq);
                        drop(r);
                        for o in &others {
                            drop(o.try_recv().expect("recv").expect("a sample"));
                        }
                        seq += 1;
                    });
                });
                drop(others);
                drop(consumer);
                drop(producer);
            }
        }
    }
    g.finish();
}

criterion_group!(benches, cycle, parts, held);
criterion_main!(benches);
