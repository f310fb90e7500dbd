//! A Zenoh bridge for bips channels: carry a local zero-copy channel to other
//! hosts, and make a local channel out of what arrives from them.
//!
//! * [`publish`] reads a local channel as one of its consumers and puts every
//!   sample on Zenoh under a key expression: the sample's bytes are the Zenoh
//!   payload, and a small header travels as the Zenoh attachment (sequence,
//!   timestamp, `lagged`, user metadata, the frame descriptor when the sample
//!   has one, the channel's payload type; see [`wire`]).
//! * [`subscribe`] creates a local channel and publishes into it each sample
//!   that arrives on a key expression, restoring its metadata, descriptor and
//!   timestamp.
//!
//! Policies map onto Zenoh's: a `Block` channel is carried reliably with
//! `CongestionControl::Block` (lossless end to end: a slow far side paces the
//! local producer, and while no subscriber matches the key the publishing
//! bridge takes no sample, so the local producer waits as for a slow
//! consumer); a `DropOldest` channel with `CongestionControl::Drop` (latest
//! wins). Losses are detected on the subscribing side from gaps in the source
//! sequence numbers and counted ([`Stats::dropped`]). A local producer cannot
//! set `lagged` on its own consumers, so these upstream drops are not seen in
//! the consumers' `Sample::lagged()` (which still counts what they skip in the
//! local channel): read them from [`Bridge::stats`] (the `bips bridge` command
//! logs them).
//!
//! Scouting: when endpoints are given ([`Config::listen`], [`Config::connect`])
//! multicast and gossip scouting are turned off, so the bridge talks only to
//! those endpoints. With no endpoints and no config file, Zenoh's defaults
//! apply (a peer that finds others by UDP multicast on the local network).
//!
//! ```no_run
//! use bips_zenoh::{publish, subscribe, Config};
//! // Host A: carry channel "camera" to Zenoh key "robot/camera".
//! let a = publish("camera", "robot/camera", &Config::new().listen("tcp/0.0.0.0:7447"))?;
//! // Host B: make channel "camera" from it.
//! let b = subscribe(
//!     "robot/camera",
//!     "camera",
//!     &bips::Options::new(4, 1920 * 1080 * 3),
//!     &Config::new().connect("tcp/host-a:7447"),
//! )?;
//! println!("{:?}", b.stats());
//! # drop(a);
//! # Ok::<(), bips_zenoh::Error>(())
//! ```

pub mod wire;

/// The zenoh crate this bridge is built on (for its configuration types).
pub use zenoh;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bips::{Backpressure, Consumer, Options, PayloadType, Producer};
use zenoh::bytes::ZBytes;
use zenoh::handlers::{FifoChannel, FifoChannelHandler, RingChannel, RingChannelHandler};
use zenoh::key_expr::KeyExpr;
use zenoh::pubsub::{Publisher, Subscriber};
use zenoh::qos::CongestionControl;
use zenoh::sample::Sample as ZSample;
use zenoh::{Session, Wait};

use wire::{GapCounter, Header};

/// How often a bridge thread looks at its stop flag while it waits.
const POLL: Duration = Duration::from_millis(50);
/// How long the publishing bridge of a `Block` channel trusts its last
/// "a subscriber matches" answer.
const MATCH_RECHECK: Duration = Duration::from_millis(20);
/// Samples the subscribing bridge queues between Zenoh and its local channel
/// (bounded memory: this many payloads at most, besides the channel itself).
const RX_QUEUE: usize = 8;

/// Everything that can go wrong in the bridge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key expression is not valid Zenoh syntax.
    #[error(
        "invalid key expression {key:?}: {reason} (a key expression is '/'-separated chunks \
         such as robot/camera/front; '*' and '**' match chunks; no empty chunk, no '//')"
    )]
    KeyExpr {
        /// The key expression as given.
        key: String,
        /// What Zenoh said.
        reason: String,
    },
    /// An endpoint is not valid Zenoh syntax or names a transport this build lacks.
    #[error(
        "invalid endpoint {endpoint:?}: {reason} (write PROTOCOL/ADDRESS:PORT, e.g. \
         tcp/127.0.0.1:7447 or tcp/[::1]:7447; this build carries the tcp transport{extra})"
    )]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
        /// Extra transports built in, for the message.
        extra: String,
    },
    /// The Zenoh configuration file could not be read or applied.
    #[error("zenoh configuration {what}: {reason}")]
    Config {
        /// Which file or setting.
        what: String,
        /// What Zenoh said.
        reason: String,
    },
    /// A Zenoh operation failed.
    #[error("zenoh: {op} failed: {reason}")]
    Zenoh {
        /// What the bridge was doing.
        op: String,
        /// What Zenoh said.
        reason: String,
    },
    /// A bips channel operation failed.
    #[error(transparent)]
    Bips(#[from] bips::Error),
    /// The bridge thread panicked (a bug: please report it).
    #[error("the bridge thread panicked: {0}")]
    Panicked(String),
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Zenoh's message without the source location it appends (" at
/// /path/to/file.rs:123.").
fn msg(e: impl std::fmt::Display) -> String {
    let s = e.to_string();
    match s.rfind(" at /") {
        Some(i)
            if s.trim_end_matches('.')
                .ends_with(|c: char| c.is_ascii_digit()) =>
        {
            s[..i].trim_end_matches('.').to_owned()
        }
        _ => s,
    }
}

fn zerr(op: impl Into<String>) -> impl FnOnce(zenoh::Error) -> Error {
    let op = op.into();
    move |e| Error::Zenoh { op, reason: msg(e) }
}

/// Where the bridge's Zenoh session connects and listens.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Endpoints to listen on (`tcp/0.0.0.0:7447`).
    pub listen: Vec<String>,
    /// Endpoints to connect to (`tcp/192.168.1.10:7447`).
    pub connect: Vec<String>,
    /// A Zenoh JSON5 configuration file, applied first; `listen`/`connect`
    /// then replace its endpoints when given.
    pub file: Option<PathBuf>,
}

impl Config {
    /// No endpoints, no file: Zenoh's defaults (multicast scouting on).
    pub fn new() -> Config {
        Config::default()
    }

    /// Adds an endpoint to listen on.
    pub fn listen(mut self, endpoint: impl Into<String>) -> Config {
        self.listen.push(endpoint.into());
        self
    }

    /// Adds an endpoint to connect to.
    pub fn connect(mut self, endpoint: impl Into<String>) -> Config {
        self.connect.push(endpoint.into());
        self
    }

    /// Uses a Zenoh JSON5 configuration file.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Config {
        self.file = Some(path.into());
        self
    }

    /// The Zenoh configuration this stands for.
    pub fn to_zenoh(&self) -> Result<zenoh::Config> {
        let mut c = match &self.file {
            Some(p) => zenoh::Config::from_file(p).map_err(|e| Error::Config {
                what: format!("file {}", p.display()),
                reason: msg(e),
            })?,
            None => zenoh::Config::default(),
        };
        let set = |c: &mut zenoh::Config, key: &str, value: String| {
            c.insert_json5(key, &value).map_err(|e| Error::Config {
                what: key.to_owned(),
                reason: msg(e),
            })
        };
        if !self.listen.is_empty() || !self.connect.is_empty() {
            set(&mut c, "listen/endpoints", endpoints(&self.listen)?)?;
            set(&mut c, "connect/endpoints", endpoints(&self.connect)?)?;
            // Only the endpoints given: no multicast, no gossip.
            set(&mut c, "scouting/multicast/enabled", "false".into())?;
            set(&mut c, "scouting/gossip/enabled", "false".into())?;
        }
        Ok(c)
    }

    fn open(&self) -> Result<Session> {
        let c = self.to_zenoh()?;
        zenoh::open(c).wait().map_err(|e| {
            let reason = msg(e);
            let all = self.listen.iter().chain(&self.connect);
            let endpoints = all.cloned().collect::<Vec<_>>().join(", ");
            Error::Zenoh {
                op: if endpoints.is_empty() {
                    "opening a session".into()
                } else {
                    format!("opening a session on {endpoints}")
                },
                reason,
            }
        })
    }
}

/// The transports built in besides tcp, for error messages.
fn extra_transports() -> String {
    [
        (cfg!(feature = "transport_udp"), ", udp"),
        (cfg!(feature = "transport_tls"), ", tls"),
        (cfg!(feature = "transport_quic"), ", quic"),
        (
            cfg!(feature = "transport_unixsock-stream"),
            ", unixsock-stream",
        ),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, name)| *name)
    .collect()
}

/// Checks `list` and renders it as a JSON5 array.
fn endpoints(list: &[String]) -> Result<String> {
    let mut out = Vec::new();
    for e in list {
        let bad = |reason: String| Error::Endpoint {
            endpoint: e.clone(),
            reason,
            extra: extra_transports(),
        };
        let ep = zenoh::config::EndPoint::try_from(e.clone()).map_err(|x| bad(msg(x)))?;
        let proto = ep.protocol();
        let known = match proto.as_str() {
            "tcp" => true,
            "udp" => cfg!(feature = "transport_udp"),
            "tls" => cfg!(feature = "transport_tls"),
            "quic" => cfg!(feature = "transport_quic"),
            "unixsock-stream" => cfg!(feature = "transport_unixsock-stream"),
            _ => false,
        };
        if !known {
            return Err(bad(format!(
                "transport {:?} is not built in",
                proto.as_str()
            )));
        }
        if ep.address().as_str().rsplit_once(':').is_none() && proto.as_str() != "unixsock-stream" {
            return Err(bad("no port".into()));
        }
        out.push(format!("{:?}", ep.to_string()));
    }
    Ok(format!("[{}]", out.join(",")))
}

fn parse_key(key: &str) -> Result<KeyExpr<'static>> {
    KeyExpr::try_from(key.to_owned()).map_err(|e| Error::KeyExpr {
        key: key.to_owned(),
        reason: msg(e),
    })
}

/// Counters of a running bridge (a snapshot: [`Bridge::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Samples carried: put on Zenoh (publish) or published into the local
    /// channel (subscribe).
    pub forwarded: u64,
    /// Subscribe: samples of the source channel that never arrived, from gaps
    /// in its sequence numbers (includes `dropped_at_source`): skipped at the
    /// source, published while no publishing bridge was attached (it
    /// restarted), or in flight when the link dropped (Zenoh's reliability
    /// is per link: what is queued when a link closes is lost, even with
    /// `CongestionControl::Block`). Publish: samples the bridge's own
    /// consumer skipped (its `lagged()`).
    pub dropped: u64,
    /// Subscribe: of `dropped`, those the publishing bridge skipped in its
    /// source channel (DropOldest); the rest were lost in transit.
    pub dropped_at_source: u64,
    /// Arrivals that were not a valid bips sample, or did not fit the local
    /// channel (payload too large, wrong payload type, bad descriptor):
    /// counted and skipped.
    pub refused: u64,
    /// Source sessions seen: (re)attachments to the source channel (publish)
    /// or streams received (subscribe: one per incarnation of the source
    /// channel). Above 1 means the source producer restarted and the stream
    /// resumed; a restarted publishing bridge continues its stream.
    pub sessions: u64,
    /// Subscribe: samples whose metadata was longer than the local channel's
    /// metadata area (cut to fit).
    pub meta_truncated: u64,
    /// Subscribe: arrivals at or before the last sequence number of their
    /// stream, skipped (a restarted publishing bridge sends its channel's
    /// newest sample, which the previous one may have sent already).
    pub duplicates: u64,
}

#[derive(Default)]
struct Counters {
    forwarded: AtomicU64,
    dropped: AtomicU64,
    dropped_at_source: AtomicU64,
    refused: AtomicU64,
    sessions: AtomicU64,
    meta_truncated: AtomicU64,
    duplicates: AtomicU64,
}

impl Counters {
    fn add(c: &AtomicU64, n: u64) {
        if n > 0 {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> Stats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            forwarded: r(&self.forwarded),
            dropped: r(&self.dropped),
            dropped_at_source: r(&self.dropped_at_source),
            refused: r(&self.refused),
            sessions: r(&self.sessions),
            meta_truncated: r(&self.meta_truncated),
            duplicates: r(&self.duplicates),
        }
    }
}

/// A running bridge: a thread and a Zenoh session. Dropping it stops it (and,
/// for [`subscribe`], removes the local channel).
pub struct Bridge {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<Result<()>>>,
    session: Session,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Bridge {
    /// Its counters now.
    pub fn stats(&self) -> Stats {
        self.counters.snapshot()
    }

    /// Whether its thread has ended (on an error: [`Bridge::stop`] returns it).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops it, closes its Zenoh session and returns its final counters, or
    /// the error that ended it.
    pub fn stop(mut self) -> Result<Stats> {
        self.shutdown()?;
        Ok(self.stats())
    }

    fn shutdown(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        let r = match self.thread.take() {
            Some(t) => match t.join() {
                Ok(r) => r,
                Err(p) => Err(Error::Panicked(
                    p.downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_default(),
                )),
            },
            None => Ok(()),
        };
        let _ = self.session.close().wait();
        r
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// A value that differs between runs and processes: names a source session
/// when the channel's identity cannot be read.
fn random_stream_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    h.write_u64(bips::now_ns());
    h.finish()
}

/// The stream id of one incarnation of a channel: FNV-1a of its name and its
/// producer's epoch. The same in every process that reads that incarnation,
/// so a publishing bridge that restarts continues the same stream (the far
/// side skips what the previous bridge already sent, and counts what nobody
/// sent as dropped), and a new producer starts a new one.
///
/// ```
/// use bips_zenoh::stream_id;
/// // Every process computes the same id for one incarnation of a channel...
/// assert_eq!(stream_id("camera", 42), stream_id("camera", 42));
/// // ...and another one for its next producer (another epoch).
/// assert_ne!(stream_id("camera", 42), stream_id("camera", 43));
/// ```
pub fn stream_id(channel: &str, epoch: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in channel.bytes().chain(epoch.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The epoch of the channel incarnation `consumer` is attached to: read
/// before and after opening, so that a producer replaced in between is not
/// mistaken for the one opened (then `None`: open again).
fn attach(channel: &str, options: &bips::ConsumerOptions) -> bips::Result<(Consumer, Option<u64>)> {
    let epoch = || bips::monitor::inspect(channel).map(|i| i.epoch);
    let before = epoch();
    let c = Consumer::open_with(channel, options)?;
    match (before, epoch()) {
        (Ok(a), Ok(b)) if a == b => Ok((c, Some(a))),
        // Another incarnation between the two looks: drop this one.
        (Ok(_), Ok(_)) => Err(bips::Error::Disconnected),
        // Not readable (e.g. inspect refused where open is allowed): no
        // stable id, a random one.
        _ => Ok((c, None)),
    }
}

/// Carries local channel `channel` to Zenoh key `key_expr`.
///
/// The bridge opens the channel as a consumer (waiting for it to exist, and
/// opening it again whenever its producer leaves and another one starts:
/// the first time at its newest sample, later at the next one published)
/// and puts each sample on Zenoh. The Zenoh policy follows the channel's: `Block`
/// -> congestion control `Block`, and no sample is taken while no subscriber
/// matches the key (the local producer waits, as for a slow consumer);
/// `DropOldest` -> congestion control `Drop`, samples are taken and put
/// whether anyone listens or not.
///
/// Errors at once for a bad channel name, key expression, endpoint or
/// configuration, or when the Zenoh session cannot open (e.g. a listen port
/// in use).
pub fn publish(channel: &str, key_expr: &str, config: &Config) -> Result<Bridge> {
    let key = parse_key(key_expr)?;
    // The channel name is checked now (its channel may not exist yet).
    if let Err(e @ bips::Error::InvalidName { .. }) = Consumer::open(channel) {
        return Err(e.into());
    }
    let session = config.open()?;
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let thread = {
        let (session, stop, counters) = (session.clone(), stop.clone(), counters.clone());
        let channel = channel.to_owned();
        std::thread::Builder::new()
            .name("bips-zenoh-pub".into())
            .spawn(move || publish_loop(&channel, key, &session, &stop, &counters))
            .map_err(|e| Error::Bips(bips::Error::InvalidOptions(format!("spawn: {e}"))))?
    };
    Ok(Bridge {
        stop,
        counters,
        thread: Some(thread),
        session,
    })
}

fn publish_loop(
    channel: &str,
    key: KeyExpr<'static>,
    session: &Session,
    stop: &AtomicBool,
    counters: &Counters,
) -> Result<()> {
    // (consumer, its policy's publisher, stream id)
    let mut attached: Option<(Consumer, Publisher<'static>, u64)> = None;
    let mut matched_at: Option<Instant> = None;
    let mut last_epoch = None;
    while !stop.load(Ordering::Relaxed) {
        let Some((consumer, publisher, stream)) = &attached else {
            // The first time at the newest retained sample, as any consumer
            // (a late joiner gets the current frame). After that, a new
            // incarnation of the channel (its producer restarted) from its
            // oldest retained sample, so that what it published before this
            // bridge noticed is carried too; the incarnation just left (a
            // producer that is leaving can still be opened) is not read again.
            let start = if counters.sessions.load(Ordering::Relaxed) == 0 {
                bips::Start::Newest
            } else {
                bips::Start::Oldest
            };
            match attach(channel, &bips::ConsumerOptions::new().start(start)) {
                Ok((_, Some(e))) if last_epoch == Some(e) => {
                    std::thread::sleep(POLL);
                }
                Ok((c, epoch)) => {
                    last_epoch = epoch;
                    let cc = match c.geometry().policy {
                        Backpressure::Block => CongestionControl::Block,
                        _ => CongestionControl::Drop,
                    };
                    let p = session
                        .declare_publisher(key.clone())
                        .congestion_control(cc)
                        .wait()
                        .map_err(zerr(format!("declaring a publisher on {key}")))?;
                    Counters::add(&counters.sessions, 1);
                    let stream = epoch.map_or_else(random_stream_id, |e| stream_id(channel, e));
                    attached = Some((c, p, stream));
                }
                Err(bips::Error::NotFound { .. } | bips::Error::Disconnected) => {
                    std::thread::sleep(POLL);
                }
                Err(e) => return Err(e.into()),
            }
            continue;
        };
        let block = consumer.geometry().policy == Backpressure::Block;
        if block && matched_at.is_none_or(|t| t.elapsed() > MATCH_RECHECK) {
            let m = publisher
                .matching_status()
                .wait()
                .map_err(zerr("asking for matching subscribers"))?;
            if !m.matching() {
                matched_at = None;
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            matched_at = Some(Instant::now());
        }
        let got = match consumer.recv_timeout(POLL) {
            Ok(s) => {
                let h = Header::new(
                    *stream,
                    s.seq(),
                    s.timestamp_ns(),
                    s.lagged(),
                    s.meta(),
                    s.descriptor()?,
                    consumer.payload_type(),
                );
                Counters::add(&counters.dropped, s.lagged());
                Ok((s.as_slice().to_vec(), h))
            }
            Err(e) => Err(e),
        };
        let (payload, header) = match got {
            Ok(x) => x,
            Err(bips::Error::Timeout) => continue,
            Err(bips::Error::Disconnected) => {
                attached = None;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        publisher
            .put(payload)
            .attachment(ZBytes::from(header.encode()))
            .wait()
            .map_err(zerr(format!("put on {key}")))?;
        Counters::add(&counters.forwarded, 1);
    }
    Ok(())
}

/// Makes local channel `channel` (created now with `options`: geometry,
/// policy, metadata size, payload type) out of the samples that arrive on
/// Zenoh key `key_expr`, restoring their metadata, descriptor and timestamp.
///
/// With `Block` the bridge waits for the local consumers (and so, through
/// Zenoh's congestion control, paces the far producer); with `DropOldest` it
/// never waits, and a small ring drops the oldest arrivals when the bridge
/// falls behind. Losses upstream (seen as gaps in the source sequence
/// numbers) are counted in [`Stats::dropped`], not in the local consumers'
/// `lagged()`.
///
/// A sample that does not fit (payload larger than the buffers, a descriptor
/// that does not fit it, another payload type than the channel declares) is
/// skipped and counted in [`Stats::refused`]. Metadata longer than the local
/// area is cut ([`Stats::meta_truncated`]).
pub fn subscribe(
    key_expr: &str,
    channel: &str,
    options: &Options,
    config: &Config,
) -> Result<Bridge> {
    let key = parse_key(key_expr)?;
    let session = config.open()?;
    let producer = Producer::create(channel, options)?;
    let rx = match producer.geometry().policy {
        Backpressure::Block => Rx::Fifo(
            session
                .declare_subscriber(key.clone())
                .with(FifoChannel::new(RX_QUEUE))
                .wait()
                .map_err(zerr(format!("declaring a subscriber on {key}")))?,
        ),
        _ => Rx::Ring(
            session
                .declare_subscriber(key.clone())
                .with(RingChannel::new(RX_QUEUE))
                .wait()
                .map_err(zerr(format!("declaring a subscriber on {key}")))?,
        ),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let thread = {
        let (stop, counters) = (stop.clone(), counters.clone());
        std::thread::Builder::new()
            .name("bips-zenoh-sub".into())
            .spawn(move || subscribe_loop(&producer, &rx, &stop, &counters))
            .map_err(|e| Error::Bips(bips::Error::InvalidOptions(format!("spawn: {e}"))))?
    };
    Ok(Bridge {
        stop,
        counters,
        thread: Some(thread),
        session,
    })
}

enum Rx {
    Fifo(Subscriber<FifoChannelHandler<ZSample>>),
    Ring(Subscriber<RingChannelHandler<ZSample>>),
}

impl Rx {
    fn recv_timeout(&self, d: Duration) -> Result<Option<ZSample>> {
        match self {
            Rx::Fifo(s) => s.recv_timeout(d),
            Rx::Ring(s) => s.recv_timeout(d),
        }
        .map_err(zerr("receiving"))
    }
}

fn same_type(local: Option<&PayloadType>, remote: &Option<(String, u32)>) -> bool {
    match (local, remote) {
        (None, _) => true,
        (Some(l), Some((name, version))) => l.name() == name && l.version() == *version,
        (Some(_), None) => false,
    }
}

fn subscribe_loop(producer: &Producer, rx: &Rx, stop: &AtomicBool, c: &Counters) -> Result<()> {
    let mut gaps = GapCounter::default();
    while !stop.load(Ordering::Relaxed) {
        let Some(zs) = rx.recv_timeout(POLL)? else {
            continue;
        };
        let Some(h) = zs
            .attachment()
            .and_then(|a| Header::decode(&a.to_bytes()).ok())
        else {
            Counters::add(&c.refused, 1);
            continue;
        };
        let gap = gaps.see(&h);
        if gap.stale {
            Counters::add(&c.duplicates, 1);
            continue;
        }
        if gap.new_stream {
            Counters::add(&c.sessions, 1);
        }
        Counters::add(&c.dropped, gap.missing);
        Counters::add(&c.dropped_at_source, gap.at_source);
        let payload = zs.payload();
        if payload.len() > producer.buffer_size()
            || !same_type(producer.payload_type(), &h.payload_type)
        {
            Counters::add(&c.refused, 1);
            continue;
        }
        // Block: wait for a free buffer (local consumers pace us, and through
        // Zenoh the far producer), but keep an eye on the stop flag.
        let mut s = loop {
            match producer.loan_timeout(POLL) {
                Ok(s) => break s,
                Err(bips::Error::Timeout) if !stop.load(Ordering::Relaxed) => continue,
                Err(bips::Error::Timeout) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        };
        let mut at = 0;
        let buf = s.as_mut_slice();
        for chunk in payload.slices() {
            buf[at..at + chunk.len()].copy_from_slice(chunk);
            at += chunk.len();
        }
        s.set_len(at);
        let meta = s.meta_mut();
        let n = h.meta.len().min(meta.len());
        meta[..n].copy_from_slice(&h.meta[..n]);
        meta[n..].fill(0);
        if n < h.meta.len() {
            Counters::add(&c.meta_truncated, 1);
        }
        if let Some(d) = &h.descriptor {
            if s.set_descriptor(d).is_err() {
                // Dropping the loan returns the buffer.
                Counters::add(&c.refused, 1);
                continue;
            }
        }
        s.set_timestamp_ns(h.timestamp_ns);
        s.publish()?;
        Counters::add(&c.forwarded, 1);
    }
    Ok(())
}
