//! A producer publishing synthetic 640x480 RGB frames on a typed channel:
//! `image/rgb8` v1, whose fixed descriptor says what every sample is
//! (`(480, 640, 3)` `uint8`, `RGB`), so consumers in any language get a
//! shaped frame (`Sample::view`, `np.asarray(sample)`) with no metadata
//! convention of their own.
//!
//! ```text
//! cargo run --release -p bips --example producer -- [CHANNEL] [FRAMES] [FPS] [--mode OCTAL]
//! ```
//! Run `consumer` in another terminal with the same channel name. Ctrl-C
//! (or SIGTERM, SIGHUP) removes the channel before the producer ends.
//! `--mode 0660` lets the producer's group open the channel (default `0600`:
//! its user only); examples/containers runs it so, for a consumer of another uid.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bips::{DType, Descriptor, Options, PayloadType, Producer};

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
    let mut mode = None;
    let mut positional = Vec::new();
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        if arg == "--mode" {
            let m = argv.next().ok_or("--mode needs an octal mode, e.g. 0660")?;
            mode = Some(u32::from_str_radix(&m, 8).map_err(|e| format!("--mode {m}: {e}"))?);
        } else {
            positional.push(arg);
        }
    }
    let mut args = positional.into_iter();
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
    let frame = Descriptor::image(HEIGHT.into(), WIDTH.into(), 3, DType::U8)?.with_format("RGB")?;
    let mut opts = Options::new(4, (WIDTH * HEIGHT * 3) as usize)
        .payload_type(PayloadType::new("image/rgb8", 1)?.with_descriptor(frame));
    if let Some(mode) = mode {
        opts = opts.mode(mode);
    }
    let producer = Producer::create(&channel, &opts)?;
    println!("producer: channel {channel:?}, {frames} frames at {fps} fps; start a consumer now");

    let period = Duration::from_secs_f64(1.0 / f64::from(fps.max(1)));
    let mut next = Instant::now();
    for n in 0..frames {
        let mut frame = producer.loan()?; // waits while every buffer is in use
        {
            // Fill the frame in place, through its (h, w, c) view: a moving gradient.
            let mut px = frame.view_mut::<u8>()?;
            for y in 0..HEIGHT as usize {
                for x in 0..WIDTH as usize {
                    px[[y, x, 0]] = (x as u8).wrapping_add(n as u8);
                    px[[y, x, 1]] = y as u8;
                    px[[y, x, 2]] = n as u8;
                }
            }
        }
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
