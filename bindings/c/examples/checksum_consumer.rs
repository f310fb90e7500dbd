//! Rust consumer of the checksum stream (`tests/c/checksum.h`) for the C++
//! producer test. Usage: `checksum_consumer CHANNEL FRAMES`; exit status 1 on
//! any bad frame.

use std::time::{Duration, Instant};

#[path = "common/checksum.rs"]
mod checksum;

fn main() {
    // The Display message and exit status 1, not `Debug` from `main() -> Result`.
    if let Err(e) = run() {
        eprintln!("checksum_consumer: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        return Err("usage: checksum_consumer CHANNEL FRAMES".into());
    }
    let frames: u32 = args[2].parse()?;
    let opts = bips::ConsumerOptions::new().start(bips::Start::Oldest);
    let deadline = Instant::now() + Duration::from_secs(20);
    let consumer = loop {
        match bips::Consumer::open_with(&args[1], &opts) {
            Ok(c) => break c,
            Err(bips::Error::NotFound { .. } | bips::Error::Disconnected)
                if Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e.into()),
        }
    };
    let (mut n, mut total, mut bad) = (0u32, 0u32, false);
    for sample in consumer.iter() {
        let sample = sample?;
        let meta = sample.meta();
        let word = |k: usize| u32::from_le_bytes(meta[k..k + 4].try_into().unwrap());
        let (idx, len, crc) = (word(0), word(4), word(8));
        let got = checksum::crc32(sample.as_slice());
        let mut expected = vec![0u8; checksum::frame_len(n)];
        checksum::fill(n, &mut expected);
        if idx != n
            || sample.seq() != u64::from(n)
            || len as usize != sample.len()
            || got != crc
            || sample.as_slice() != expected.as_slice()
        {
            eprintln!(
                "checksum_consumer: bad frame #{n}: idx {idx} len {len} crc {got:08x}/{crc:08x}"
            );
            bad = true;
        }
        total ^= got;
        n += 1;
    }
    if n != frames {
        eprintln!("checksum_consumer: received {n} frames, expected {frames}");
        bad = true;
    }
    println!("TOTAL {total:08x}");
    std::process::exit(i32::from(bad));
}
