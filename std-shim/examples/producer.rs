//! A producer publishing synthetic 640x480 RGB frames with width/height in
//! the sample metadata.
//!
//! ```text
//! cargo run --release -p bips --example producer -- [CHANNEL] [FRAMES] [FPS]
//! ```
//! Run `consumer` in another terminal with the same channel name. Ctrl-C
//! (or SIGTERM, SIGHUP) removes the channel before the producer ends.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bips::{Options, Producer};

const WIDTH: u32 = 640;
const HEIGHT: u32 = 480;

fn main() -> ExitCode {
    // Errors are shown with their Display message (what to do about them),
    // not `Debug` as `main() -> Result` would.
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("producer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let channel = args.next().unwrap_or_else(|| "example".into());
    let frames: u64 = args
        .next()
        .map_or(Ok(300), |s| s.parse())
        .map_err(|e| format!("FRAMES: {e}"))?;
    let fps: u32 = args
        .next()
        .map_or(Ok(30), |s| s.parse())
        .map_err(|e| format!("FPS: {e}"))?;

    // Ctrl-C, SIGTERM and SIGHUP remove our channel before we go.
    bips::cleanup_on_signals()?;
    let opts = Options::new(4, (WIDTH * HEIGHT * 3) as usize).meta_size(16);
    let producer = Producer::create(&channel, &opts)?;
    println!("producer: channel {channel:?}, {frames} frames at {fps} fps; start a consumer now");

    let period = Duration::from_secs_f64(1.0 / f64::from(fps.max(1)));
    let mut next = Instant::now();
    for n in 0..frames {
        let mut frame = producer.loan()?; // waits while every buffer is in use
                                          // Fill the frame in place: a moving gradient.
        for (i, px) in frame.as_mut_slice().chunks_exact_mut(3).enumerate() {
            let x = (i as u32 % WIDTH) as u8;
            px.copy_from_slice(&[x.wrapping_add(n as u8), (i / WIDTH as usize) as u8, n as u8]);
        }
        let meta = frame.meta_mut();
        meta[..4].copy_from_slice(&WIDTH.to_le_bytes());
        meta[4..8].copy_from_slice(&HEIGHT.to_le_bytes());
        let seq = frame.publish()?;
        if seq % 30 == 0 {
            println!(
                "producer: published #{seq} to {} consumer(s)",
                producer.consumer_count()
            );
        }
        next += period;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    println!("producer: done; dropping the producer closes the channel");
    Ok(())
}
