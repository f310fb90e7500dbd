//! `bips record` and `bips replay`: a channel to an MCAP file and back (the
//! `bips-mcap` crate).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bips_mcap::{Error, Limits, ReplayOptions, Replayer, Stopped, Timing};
use clap::Args;

use crate::{parse_seconds, signals, Failure};

#[derive(Args, Debug)]
pub struct RecordArgs {
    /// The channel to record (it must exist: start its producer first).
    channel: String,
    /// The MCAP file to write (created, or truncated if it exists).
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Stop after this many samples.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "S", value_parser = parse_seconds)]
    duration: Option<f64>,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The MCAP file to replay (made by `bips record`).
    file: PathBuf,
    /// The channel to create and publish into (its name must be free).
    #[arg(long, value_name = "NAME")]
    channel: String,
    /// Which bips channel of the file (its topic), when it has several.
    #[arg(long, value_name = "TOPIC")]
    topic: Option<String>,
    /// Play this many times faster than recorded (0.5: half speed).
    #[arg(long, value_name = "X", value_parser = parse_rate, conflicts_with = "as_fast_as_possible")]
    rate: Option<f64>,
    /// Do not wait between samples (Block still waits for slow consumers).
    #[arg(long)]
    as_fast_as_possible: bool,
    /// Start over at the end of the file, until Ctrl-C.
    #[arg(long = "loop")]
    repeat: bool,
    /// Buffers in the new channel's pool (default: as recorded).
    #[arg(long, value_name = "N")]
    buffers: Option<u32>,
    /// Bytes per buffer (default: as recorded).
    #[arg(long, value_name = "BYTES")]
    size: Option<usize>,
    /// Bytes of user metadata per sample (default: as recorded).
    #[arg(long, value_name = "BYTES")]
    meta_size: Option<u32>,
    /// Wait until N consumers are attached before the first sample.
    #[arg(long, value_name = "N", default_value_t = 0)]
    wait_for_consumers: usize,
    /// Publish each sample with its recorded timestamp (default: the time
    /// it is published again, so that latency measured from timestamps is
    /// the replay's own).
    #[arg(long)]
    original_timestamps: bool,
}

/// Parses `--rate`: a finite number above 0.
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1e6 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a rate: give a number above 0 (2 = twice as fast, 0.5 = half speed)"
        )),
    }
}

/// Exit status of an error: 2 for bad input (the file, the name, the
/// geometry), 3 for a channel that does not exist, 1 otherwise.
fn fail(e: Error) -> Failure {
    let code = match &e {
        Error::NotMcap { .. }
        | Error::Corrupt { .. }
        | Error::NotBips { .. }
        | Error::AmbiguousTopic { .. }
        | Error::TooSmall { .. }
        | Error::Io {
            op: "cannot open", ..
        }
        | Error::Bips(
            bips::Error::InvalidName { .. }
            | bips::Error::ChannelBusy { .. }
            | bips::Error::InvalidOptions(_),
        ) => 2,
        Error::Bips(bips::Error::NotFound { .. }) => 3,
        _ => 1,
    };
    Failure::new(code, e.to_string())
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

pub fn record(a: RecordArgs) -> Result<(), Failure> {
    signals::install().map_err(|e| Failure::new(1, format!("installing signal handlers: {e}")))?;
    // The channel first: a missing channel leaves no file behind.
    let consumer = bips::Consumer::open(&a.channel).map_err(|e| fail(e.into()))?;
    let mut rec = bips_mcap::Recorder::create(&a.output, &consumer).map_err(fail)?;
    let g = consumer.geometry();
    eprintln!(
        "bips record {} -> {}: {} buffers x {} B, {:?}; recording (Ctrl-C to stop)",
        a.channel,
        a.output.display(),
        g.buffer_count,
        g.buffer_size,
        g.policy
    );
    let limits = Limits {
        count: a.count,
        duration: a.duration.map(Duration::from_secs_f64),
    };
    let t0 = Instant::now();
    let stopped = rec.run(&consumer, &limits, &|| signals::pending().is_some());
    drop(consumer);
    let stopped = match stopped {
        Ok(s) => s,
        Err(e) => {
            // Try to close what was written (useless on a full disk, where
            // the summary cannot be written either).
            let _ = rec.finish();
            return Err(fail(e));
        }
    };
    let st = rec.finish().map_err(fail)?;
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "bips record: samples={} lagged={} payload={} ({}) seconds={:.1} stopped={} file={}",
        st.samples,
        st.lagged,
        st.payload_bytes,
        mib(st.payload_bytes),
        secs,
        match stopped {
            Stopped::Count => "count",
            Stopped::Duration => "duration",
            Stopped::Disconnected => "disconnected",
            _ => "signal",
        },
        a.output.display()
    );
    if let Some(sig) = signals::pending() {
        signals::die_of(sig);
    }
    Ok(())
}

pub fn replay(a: ReplayArgs) -> Result<(), Failure> {
    signals::install().map_err(|e| Failure::new(1, format!("installing signal handlers: {e}")))?;
    let replayer = Replayer::open(&a.file, a.topic.as_deref()).map_err(fail)?;
    let mut info = replayer.channel().clone();
    if let Some(n) = a.buffers {
        info.buffers = n;
        info.ring_capacity = info
            .ring_capacity
            .max(n.checked_next_power_of_two().unwrap_or(0));
    }
    if let Some(s) = a.size {
        info.buffer_size = s as u64;
    }
    if let Some(m) = a.meta_size {
        info.meta_size = m;
    }
    // Before the channel exists: a geometry too small leaves nothing behind.
    replayer
        .check_fits(
            usize::try_from(info.buffer_size).unwrap_or(usize::MAX),
            info.meta_size as usize,
        )
        .map_err(fail)?;
    let producer =
        bips::Producer::create(&a.channel, &info.options()).map_err(|e| fail(e.into()))?;
    eprintln!(
        "bips replay {} -> {}: {} buffers x {} B, {:?}{}; replaying (Ctrl-C to stop)",
        a.file.display(),
        a.channel,
        info.buffers,
        info.buffer_size,
        info.policy,
        info.payload_type
            .map(|t| format!(", type {t}"))
            .unwrap_or_default()
    );
    let opts = ReplayOptions {
        timing: match (a.as_fast_as_possible, a.rate) {
            (true, _) => Timing::AsFastAsPossible,
            (false, Some(r)) => Timing::Rate(r),
            (false, None) => Timing::Original,
        },
        repeat: a.repeat,
        original_timestamps: a.original_timestamps,
        wait_for_consumers: a.wait_for_consumers,
    };
    let t0 = Instant::now();
    let r = replayer.run(&producer, &opts, &|| signals::pending().is_some());
    // Consumers drain what is left, then see the channel closed; the name
    // goes with the producer.
    drop(producer);
    let st = r.map_err(fail)?;
    eprintln!(
        "bips replay: published={} passes={} seconds={:.1}{}",
        st.published,
        st.passes,
        t0.elapsed().as_secs_f64(),
        if st.truncated {
            " (the file was cut short: its last, incomplete part was skipped)"
        } else {
            ""
        }
    );
    if let Some(sig) = signals::pending() {
        signals::die_of(sig);
    }
    Ok(())
}
