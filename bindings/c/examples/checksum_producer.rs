//! Rust producer of the checksum stream (`tests/c/checksum.h`) for the C
//! consumer test. Usage: `checksum_producer CHANNEL FRAMES CONSUMERS`.

use std::time::{Duration, Instant};

#[path = "common/checksum.rs"]
mod checksum;

fn main() {
    // The Display message and exit status 1, not `Debug` from `main() -> Result`.
    if let Err(e) = run() {
        eprintln!("checksum_producer: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        return Err("usage: checksum_producer CHANNEL FRAMES CONSUMERS".into());
    }
    let frames: u32 = args[2].parse()?;
    let want: usize = args[3].parse()?;
    // SIGINT/SIGTERM/SIGHUP remove the channel before we go.
    bips::cleanup_on_signals()?;
    let producer = bips::Producer::create(
        &args[1],
        &bips::Options::new(4, checksum::BUFFER_SIZE).meta_size(checksum::META_SIZE),
    )?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while producer.consumer_count() < want {
        if Instant::now() > deadline {
            return Err("consumers did not attach within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut total = 0u32;
    for i in 0..frames {
        let mut s = producer.loan()?;
        let n = checksum::frame_len(i);
        checksum::fill(i, &mut s.as_mut_slice()[..n]);
        s.set_len(n);
        let crc = checksum::crc32(&s.as_mut_slice()[..n]);
        let meta = s.meta_mut();
        meta[..4].copy_from_slice(&i.to_le_bytes());
        meta[4..8].copy_from_slice(&(n as u32).to_le_bytes());
        meta[8..12].copy_from_slice(&crc.to_le_bytes());
        total ^= crc;
        s.publish()?;
    }
    println!("TOTAL {total:08x}");
    Ok(())
}
