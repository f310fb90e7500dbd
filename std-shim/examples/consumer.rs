//! A consumer reading frames in place until the producer leaves.
//!
//! ```text
//! cargo run --release -p bips --example consumer -- [CHANNEL] [--trust-owner UID]...
//! ```
//! A consumer opens only channels of its own user (or root's); `--trust-owner
//! UID` also trusts the producer's user when it runs as another one
//! (examples/containers does).

use std::process::ExitCode;
use std::time::Duration;

use bips::{Consumer, ConsumerOptions, Error};

fn main() -> ExitCode {
    // Errors are shown with their Display message (what to do about them),
    // not `Debug` as `main() -> Result` would.
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("consumer: {e}");
            ExitCode::FAILURE
        }
    }
}

// A consumer creates nothing in /dev/shm (its entry lives in the producer's
// segment and is reclaimed when it dies): signals need no cleanup here.
fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut opts = ConsumerOptions::new();
    let mut channel = None;
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        if arg == "--trust-owner" {
            let uid = argv.next().ok_or("--trust-owner needs a uid")?;
            opts = opts.trust_owner(
                uid.parse()
                    .map_err(|e| format!("--trust-owner {uid}: {e}"))?,
            );
        } else {
            channel = Some(arg);
        }
    }
    let channel = channel.unwrap_or_else(|| "example".into());
    // The producer may start after us: retry for a few seconds.
    let consumer = {
        let mut tries = 0;
        loop {
            match Consumer::open_with(&channel, &opts) {
                Ok(c) => break c,
                Err(Error::NotFound { .. } | Error::Disconnected) if tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    println!(
        "consumer: attached to {channel:?}, {:?}",
        consumer.geometry()
    );
    let mut frames = 0u64;
    for sample in consumer.iter() {
        let sample = sample?; // the frame, in shared memory: no copy
        let latency_us = bips::now_ns().saturating_sub(sample.timestamp_ns()) / 1000;
        if sample.seq() % 30 == 0 {
            // What the bytes are: the producer's descriptor (or "raw bytes").
            let what = match sample.descriptor()? {
                Some(d) => d.to_string(),
                None => "raw bytes".to_owned(),
            };
            println!(
                "consumer: #{} {what}, {} bytes, first pixel {:?}, {latency_us} us after publish{}",
                sample.seq(),
                sample.len(),
                &sample.as_slice()[..3.min(sample.len())],
                if sample.lagged() > 0 {
                    format!(", {} lost", sample.lagged())
                } else {
                    String::new()
                }
            );
        }
        frames += 1;
    }
    println!("consumer: producer gone after {frames} frames");
    Ok(())
}
