//! Recording throughput: a producer thread publishes as fast as it can on a
//! `Block` channel (so the recorder paces it: nothing is lost) while a
//! [`Recorder`] writes every sample into a file; prints samples/s and MB/s.
//!
//! ```text
//! cargo run --release -p bips-mcap --example record_bench -- [SIZE_BYTES] [COUNT] [FILE]
//! ```
//! Defaults: 65536 bytes, 2000 samples, /tmp/bips-record-bench.mcap (removed
//! afterwards). The payload is written once per buffer (its first 8 bytes per
//! sample), so the figure is the recorder's cost, not the producer's.

use std::time::Instant;

use bips::{Consumer, Options, Producer};
use bips_mcap::{Limits, Recorder};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let size: usize = args.next().map_or(Ok(65536), |s| s.parse())?;
    let count: u64 = args.next().map_or(Ok(2000), |s| s.parse())?;
    let path = args
        .next()
        .unwrap_or_else(|| "/tmp/bips-record-bench.mcap".to_owned());
    let name = format!("record-bench-{}", std::process::id());
    let producer = Producer::create(&name, &Options::new(8, size))?;
    let consumer = Consumer::open(&name)?;
    let mut recorder = Recorder::create(&path, &consumer)?;
    let t0 = Instant::now();
    let publisher = std::thread::spawn(move || {
        for seq in 0..count {
            let mut l = producer.loan().expect("loan");
            l.as_mut_slice()[..8].copy_from_slice(&seq.to_le_bytes());
            l.publish().expect("publish");
        }
        producer // dropped after the recorder has read everything
    });
    recorder.run(&consumer, &Limits::count(count), &|| false)?;
    let producer = publisher.join().expect("publisher");
    let stats = recorder.finish()?;
    let secs = t0.elapsed().as_secs_f64();
    let file = std::fs::metadata(&path)?.len();
    println!(
        "record_bench size={size} samples={} seconds={secs:.3} samples_per_s={:.0} MB_per_s={:.0} file_bytes={file}",
        stats.samples,
        stats.samples as f64 / secs,
        stats.payload_bytes as f64 / secs / 1e6
    );
    drop(consumer);
    drop(producer);
    std::fs::remove_file(&path)?;
    Ok(())
}
