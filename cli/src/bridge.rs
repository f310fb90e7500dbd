//! `bips bridge publish` and `bips bridge subscribe`: a channel carried over
//! Zenoh to other hosts (the `bips-zenoh` crate). Built with the `bridge`
//! feature (`cargo install bips-cli --features bridge`); without it the
//! commands say how to get it.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::{Failure, PolicyArg};

#[derive(Args, Debug)]
pub struct BridgeArgs {
    #[command(subcommand)]
    cmd: BridgeCmd,
}

#[derive(Subcommand, Debug)]
enum BridgeCmd {
    /// Read local channel CHANNEL as a consumer and put every sample on Zenoh
    /// under key expression --key (payload as is; seq, timestamp, lagged,
    /// metadata, descriptor and payload type in the attachment).
    ///
    /// Waits for the channel to exist and opens it again whenever its
    /// producer restarts. A Block channel is carried losslessly (congestion
    /// control Block; while no subscriber matches, no sample is taken and the
    /// producer waits); a DropOldest channel with congestion control Drop.
    Publish(PublishArgs),
    /// Create local channel --channel and publish into it every sample that
    /// arrives on Zenoh key expression KEYEXPR, restoring metadata,
    /// descriptor and timestamp.
    ///
    /// Samples lost upstream (gaps in the source's sequence numbers) are
    /// counted and logged on stderr; local consumers' lagged() only counts
    /// what they skip in the local channel.
    Subscribe(SubscribeArgs),
}

/// Where the Zenoh session listens and connects.
#[derive(Args, Debug)]
struct NetArgs {
    /// Listen on this Zenoh endpoint (repeatable), e.g. tcp/0.0.0.0:7447.
    /// With any --listen/--connect, multicast and gossip scouting are off.
    #[arg(long = "listen", value_name = "ENDPOINT")]
    listen: Vec<String>,
    /// Connect to this Zenoh endpoint (repeatable), e.g. tcp/192.168.1.10:7447.
    #[arg(long = "connect", value_name = "ENDPOINT")]
    connect: Vec<String>,
    /// A Zenoh JSON5 configuration file (anything else: mode, routers,
    /// scouting interface, TLS...). --listen/--connect replace its endpoints.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct PublishArgs {
    /// The local channel to carry.
    channel: String,
    /// The Zenoh key expression to publish on, e.g. robot/camera/front.
    #[arg(long, value_name = "KEYEXPR")]
    key: String,
    #[command(flatten)]
    net: NetArgs,
}

#[derive(Args, Debug)]
struct SubscribeArgs {
    /// The Zenoh key expression to subscribe to.
    key: String,
    /// The local channel to create.
    #[arg(long, value_name = "NAME")]
    channel: String,
    /// Buffers in the local channel's pool.
    #[arg(long, default_value_t = 4)]
    buffers: u32,
    /// Bytes per buffer: at least the largest sample that will arrive.
    #[arg(long, value_name = "BYTES")]
    size: usize,
    /// Backpressure of the local channel (and the Zenoh handling: block waits
    /// for local consumers, drop-oldest never waits).
    #[arg(long, value_enum, default_value_t = PolicyArg::Block)]
    policy: PolicyArg,
    /// Bytes of user metadata per sample (longer metadata is cut, and counted).
    #[arg(long, default_value_t = 64)]
    meta_size: u32,
    #[command(flatten)]
    net: NetArgs,
}

#[cfg(not(feature = "bridge"))]
pub fn run(_: BridgeArgs) -> Result<(), Failure> {
    Err(Failure::new(
        1,
        "this bips was built without the Zenoh bridge; build it with \
         `cargo install bips-cli --features bridge` (or `cargo build -p bips-cli --features bridge`)",
    ))
}

#[cfg(feature = "bridge")]
pub fn run(a: BridgeArgs) -> Result<(), Failure> {
    imp::run(a)
}

#[cfg(feature = "bridge")]
mod imp {
    use std::time::{Duration, Instant};

    use bips_zenoh::{Bridge, Config, Stats};

    use super::*;
    use crate::signals;

    fn config(n: &NetArgs) -> Config {
        Config {
            listen: n.listen.clone(),
            connect: n.connect.clone(),
            file: n.config.clone(),
        }
    }

    fn fail(e: bips_zenoh::Error) -> Failure {
        let code = match e {
            bips_zenoh::Error::KeyExpr { .. }
            | bips_zenoh::Error::Endpoint { .. }
            | bips_zenoh::Error::Bips(bips::Error::InvalidName { .. }) => 2,
            _ => 1,
        };
        Failure::new(code, e.to_string())
    }

    pub fn run(a: BridgeArgs) -> Result<(), Failure> {
        // Zenoh's own log, on request: RUST_LOG=zenoh=info (stderr).
        bips_zenoh::zenoh::try_init_log_from_env();
        signals::install()
            .map_err(|e| Failure::new(1, format!("installing signal handlers: {e}")))?;
        let (what, bridge) = match a.cmd {
            BridgeCmd::Publish(p) => {
                let b = bips_zenoh::publish(&p.channel, &p.key, &config(&p.net)).map_err(fail)?;
                (format!("publish {} -> {}", p.channel, p.key), b)
            }
            BridgeCmd::Subscribe(s) => {
                let opts = bips::Options::new(s.buffers, s.size)
                    .backpressure(s.policy.into())
                    .meta_size(s.meta_size);
                let b = bips_zenoh::subscribe(&s.key, &s.channel, &opts, &config(&s.net))
                    .map_err(fail)?;
                (format!("subscribe {} -> {}", s.key, s.channel), b)
            }
        };
        eprintln!("bips bridge {what}: running (Ctrl-C to stop)");
        supervise(&what, bridge)
    }

    fn line(what: &str, s: &Stats) -> String {
        format!(
            "bips bridge {what}: forwarded={} dropped={} dropped_at_source={} refused={} \
             sessions={} meta_truncated={} duplicates={}",
            s.forwarded,
            s.dropped,
            s.dropped_at_source,
            s.refused,
            s.sessions,
            s.meta_truncated,
            s.duplicates
        )
    }

    /// Runs until a signal or an error; logs the counters when drops or
    /// sessions change (at most once a second) and at the end.
    fn supervise(what: &str, bridge: Bridge) -> Result<(), Failure> {
        let mut logged = bridge.stats();
        let mut last_log = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(50));
            if let Some(sig) = signals::pending() {
                stop(what, bridge);
                signals::die_of(sig);
            }
            if bridge.is_finished() {
                return match bridge.stop() {
                    Ok(s) => {
                        eprintln!("{}", line(what, &s));
                        Ok(())
                    }
                    Err(e) => Err(Failure::new(1, format!("bridge {what}: {e}"))),
                };
            }
            let s = bridge.stats();
            let changed = (
                s.dropped,
                s.refused,
                s.sessions,
                s.meta_truncated,
                s.duplicates,
            ) != (
                logged.dropped,
                logged.refused,
                logged.sessions,
                logged.meta_truncated,
                logged.duplicates,
            );
            if changed && last_log.elapsed() >= Duration::from_secs(1) {
                eprintln!("{}", line(what, &s));
                logged = s;
                last_log = Instant::now();
            }
        }
    }

    /// Stops the bridge (which removes a subscribe bridge's channel); if it
    /// does not stop within 3 s (a Zenoh call stuck on a dead link), removes
    /// this process's channels anyway so that nothing stays in /dev/shm.
    fn stop(what: &str, bridge: Bridge) {
        let (tx, rx) = std::sync::mpsc::channel();
        let w = what.to_owned();
        std::thread::spawn(move || {
            let r = bridge.stop();
            let _ = tx.send(match r {
                Ok(s) => line(&w, &s),
                Err(e) => format!("bips bridge {w}: {e}"),
            });
        });
        match rx.recv_timeout(Duration::from_secs(3)) {
            Ok(msg) => eprintln!("{msg}"),
            Err(_) => {
                bips::remove_owned_channels();
                eprintln!("bips bridge {what}: did not stop within 3 s; channels removed");
            }
        }
    }
}
