//! A consumer reading typed frames through their descriptors: for each of N
//! frames prints its shape, dtype, format and a checksum computed through
//! `Sample::view::<T>()` (the sum of every element, in index order).
//!
//! ```text
//! cargo run --release -p bips --example frame_consumer -- CHANNEL [N]
//! ```
//!
//! The Python tests run it against a Python producer (`producer.send(array)`,
//! shaped loans) to check that what Python describes is what Rust reads.

use std::process::ExitCode;
use std::time::Duration;

use bips::{Consumer, DType, Element, Error, Sample};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("frame_consumer: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Sum of every element of the sample's typed view, visited in C order
/// through `View::get` (so strides and offsets are honoured).
fn checksum<T: Element + Copy>(s: &Sample<'_>, as_f64: fn(T) -> f64) -> Result<f64, Error> {
    let view = s.view::<T>()?;
    let shape = view.shape().to_vec();
    let mut idx = vec![0usize; shape.len()];
    let mut sum = 0f64;
    if shape.contains(&0) {
        return Ok(0.0);
    }
    loop {
        sum += as_f64(*view.get(&idx).expect("index inside the shape"));
        let mut d = idx.len();
        loop {
            if d == 0 {
                return Ok(sum);
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let channel = args.next().ok_or("usage: frame_consumer CHANNEL [N]")?;
    let n: u64 = args.next().map_or(Ok(1), |s| s.parse())?;
    let consumer = {
        let mut tries = 0;
        loop {
            match Consumer::open(&channel) {
                Ok(c) => break c,
                Err(Error::NotFound { .. } | Error::Disconnected) if tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    println!("ready");
    for _ in 0..n {
        let s = consumer.recv_timeout(Duration::from_secs(20))?;
        let d = s.descriptor()?.ok_or("a sample without descriptor")?;
        let sum = match d.dtype() {
            DType::U8 => checksum::<u8>(&s, f64::from)?,
            DType::U16 => checksum::<u16>(&s, f64::from)?,
            DType::F32 => checksum::<f32>(&s, f64::from)?,
            other => return Err(format!("no checksum for {other}").into()),
        };
        println!(
            "frame seq={} dtype={} shape={:?} strides={:?} format={} checksum={sum}",
            s.seq(),
            d.dtype(),
            d.shape(),
            d.strides(),
            d.format().unwrap_or("-"),
        );
    }
    Ok(())
}
