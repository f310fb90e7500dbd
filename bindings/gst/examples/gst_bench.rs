//! One side of the bipssink/bipssrc vs shmsink/shmsrc benchmark
//! (`bindings/gst/bench.sh` runs both sides as two processes).
//!
//! ```text
//! gst_bench send bips|shm|none NAME WIDTH HEIGHT FPS FRAMES
//! gst_bench recv bips|shm NAME WIDTH HEIGHT FPS FRAMES
//! ```
//!
//! `send`: `videotestsrc is-live=true` (RGBA, solid colour) into `bipssink`
//! or `shmsink` (`none`: `fakesink`, the cost of making the frames); a pad probe just before the sink writes `CLOCK_MONOTONIC`
//! (ns) into the first 8 bytes of each frame. `recv`: `bipssrc` or `shmsrc`
//! (shmsrc needs the caps written by hand) into `fakesink`; a probe reads the
//! stamp on arrival. Each side prints one `RESULT` line: frames, CPU time
//! (user+system, `getrusage` of the whole process) per frame between its
//! first and last frame, and (recv) the latency percentiles; the first
//! `WARMUP` frames are left out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gst::prelude::*;

fn cpu_ns() -> u64 {
    // SAFETY: getrusage writes a `rusage` we own; RUSAGE_SELF is valid.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let t = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1000;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// Frames left out of the figures: the first frame waits for the other
/// side to attach, and the first few fault the pages of the buffers in.
const WARMUP: u64 = 10;

/// CPU time and count between the first and the last frame seen (after the
/// warm-up).
#[derive(Default)]
struct Meter {
    seen: u64,
    frames: u64,
    cpu_first: u64,
    cpu_last: u64,
    latencies: Vec<u64>,
}

impl Meter {
    /// Counts a frame; false while warming up.
    fn tick(&mut self) -> bool {
        self.seen += 1;
        if self.seen <= WARMUP {
            return false;
        }
        let now = cpu_ns();
        if self.frames == 0 {
            self.cpu_first = now;
        }
        self.cpu_last = now;
        self.frames += 1;
        true
    }

    fn cpu_per_frame_us(&self) -> f64 {
        if self.frames < 2 {
            return f64::NAN;
        }
        (self.cpu_last - self.cpu_first) as f64 / (self.frames - 1) as f64 / 1000.0
    }
}

fn caps(w: u32, h: u32, fps: u32) -> String {
    format!("video/x-raw,format=RGBA,width={w},height={h},framerate={fps}/1")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 8 {
        eprintln!("usage: gst_bench send|recv bips|shm|none NAME WIDTH HEIGHT FPS FRAMES");
        std::process::exit(2);
    }
    let (role, transport, name) = (args[1].as_str(), args[2].as_str(), args[3].as_str());
    let num = |i: usize| -> u32 { args[i].parse().expect("a number") };
    let (w, h, fps, frames) = (num(4), num(5), num(6), num(7));
    gst::init().expect("gst::init");

    let frame_size = u64::from(w) * u64::from(h) * 4;
    let desc = match (role, transport) {
        ("send", "bips") => format!(
            "videotestsrc is-live=true num-buffers={frames} pattern=solid-color ! {} \
             ! bipssink name=sink channel={name} buffers=4 wait-for-consumers=1 sync=false",
            caps(w, h, fps)
        ),
        ("send", "shm") => format!(
            "videotestsrc is-live=true num-buffers={frames} pattern=solid-color ! {} \
             ! shmsink name=sink socket-path=/tmp/{name} shm-size={} wait-for-connection=true sync=false",
            caps(w, h, fps),
            frame_size * 4 + 4096
        ),
        ("send", "none") => format!(
            "videotestsrc is-live=true num-buffers={frames} pattern=solid-color ! {} \
             ! fakesink name=sink sync=false",
            caps(w, h, fps)
        ),
        ("recv", "bips") => format!("bipssrc channel={name} ! fakesink name=sink sync=false"),
        ("recv", "shm") => format!(
            "shmsrc socket-path=/tmp/{name} is-live=true ! {} ! fakesink name=sink sync=false",
            caps(w, h, fps)
        ),
        _ => {
            eprintln!("role must be send|recv, transport bips|shm");
            std::process::exit(2);
        }
    };
    let pipeline = gst::parse::launch(&desc)
        .expect("pipeline")
        .downcast::<gst::Pipeline>()
        .expect("a pipeline");
    let sink = pipeline.by_name("sink").expect("sink");
    let pad = sink.static_pad("sink").expect("sink pad");
    let meter = Arc::new(Mutex::new(Meter::default()));
    let seen = Arc::new(AtomicU64::new(0));
    let m = Arc::clone(&meter);
    let s = Arc::clone(&seen);
    let sender = role == "send";
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let Some(buffer) = info.buffer_mut() else {
            return gst::PadProbeReturn::Ok;
        };
        let mut m = m.lock().unwrap();
        if sender {
            // Unique owner here: make_mut does not copy (the zero-copy
            // count of bipssink proves it).
            let b = buffer.make_mut();
            if let Ok(mut map) = b.map_writable() {
                map[..8].copy_from_slice(&bips::now_ns().to_le_bytes());
            }
        } else if let Ok(map) = buffer.map_readable() {
            let mut stamp = [0u8; 8];
            stamp.copy_from_slice(&map[..8]);
            let latency = bips::now_ns().saturating_sub(u64::from_le_bytes(stamp));
            drop(map);
            if m.tick() {
                m.latencies.push(latency);
            }
            s.fetch_add(1, Ordering::Relaxed);
            return gst::PadProbeReturn::Ok;
        }
        m.tick();
        s.fetch_add(1, Ordering::Relaxed);
        gst::PadProbeReturn::Ok
    });

    pipeline.set_state(gst::State::Playing).expect("play");
    let bus = pipeline.bus().expect("bus");
    let deadline = std::time::Instant::now()
        + Duration::from_secs(30 + u64::from(frames) / u64::from(fps.max(1)) * 3);
    let mut outcome = "ok".to_owned();
    loop {
        if !sender && seen.load(Ordering::Relaxed) >= u64::from(frames) {
            break;
        }
        if std::time::Instant::now() > deadline {
            outcome = "timeout".into();
            break;
        }
        if let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(20)) {
            match msg.view() {
                gst::MessageView::Eos(_) => break,
                gst::MessageView::Error(e) => {
                    outcome = format!("error: {}", e.error());
                    break;
                }
                _ => {}
            }
        }
    }
    let zero_copy = if sender && transport == "bips" {
        sink.property::<u64>("zero-copy-buffers").to_string()
    } else {
        "-".into()
    };
    pipeline.set_state(gst::State::Null).expect("stop");
    let m = meter.lock().unwrap();
    let mut lat = m.latencies.clone();
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            f64::NAN
        } else {
            lat[((lat.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
        }
    };
    println!(
        "RESULT role={role} transport={transport} size={w}x{h} frames={} cpu_us_per_frame={:.1} \
         lat_p50_us={:.1} lat_p99_us={:.1} lat_max_us={:.1} zero_copy={zero_copy} outcome={outcome}",
        m.frames,
        m.cpu_per_frame_us(),
        pct(0.5),
        pct(0.99),
        pct(1.0),
    );
}
