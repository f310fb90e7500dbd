//! The recorder: a consumer of one channel writing an MCAP file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bips::{Consumer, Sample};
use mcap::records::{MessageHeader, Metadata};

use crate::format::{self, ChannelInfo};
use crate::{unix_now_ns, Error, Result};

/// How often [`Recorder::run`] closes the current chunk and writes it out.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// When [`Recorder::run`] stops by itself (it also stops when its `stop`
/// callback says so, and when the channel's producer is gone).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    /// Stop after this many samples.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
}

impl Limits {
    /// No limit: until the producer goes or `stop` says so.
    pub fn none() -> Limits {
        Limits::default()
    }

    /// Stop after `n` samples.
    pub fn count(n: u64) -> Limits {
        Limits {
            count: Some(n),
            duration: None,
        }
    }
}

/// Why a recording stopped (the `stopped` entry of the `bips.record`
/// metadata).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stopped {
    /// [`Limits::count`] samples were recorded.
    Count,
    /// [`Limits::duration`] passed.
    Duration,
    /// The producer went away and every sample was recorded.
    Disconnected,
    /// The caller's `stop` said so (a signal, Ctrl-C).
    Stopped,
}

impl Stopped {
    fn name(self) -> &'static str {
        match self {
            Stopped::Count => "count",
            Stopped::Duration => "duration",
            Stopped::Disconnected => "disconnected",
            Stopped::Stopped => "stopped",
        }
    }
}

/// What a recording holds (also written into the file at close, metadata
/// `bips.record`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordStats {
    /// Samples written.
    pub samples: u64,
    /// Samples lost before the recorder read them (sum of `lagged`: under
    /// `DropOldest`, what the producer overwrote while the recorder was
    /// behind; always 0 under `Block`).
    pub lagged: u64,
    /// Payload bytes written.
    pub payload_bytes: u64,
    /// Longest payload.
    pub max_len: u64,
    /// Longest user metadata (the channel's `meta_size` once a sample came).
    pub max_meta_len: u64,
    /// Samples whose descriptor did not parse or fit (recorded without one).
    pub descriptor_errors: u64,
    /// First and last sequence numbers recorded.
    pub first_seq: Option<u64>,
    /// See `first_seq`.
    pub last_seq: Option<u64>,
    /// Why it stopped (`None` until [`Recorder::run`] returns).
    pub stopped: Option<Stopped>,
}

/// Writes the samples of one channel into an MCAP file (layout: [`crate::format`]).
///
/// Create it with [`Recorder::create`] (a file) or [`Recorder::new`] (any
/// `Write + Seek`), feed it with [`Recorder::run`] (the receive loop) or
/// [`Recorder::write`] (samples you received yourself), then
/// [`Recorder::finish`]: that writes the `bips.record` statistics, the
/// summary and the footer. A recorder dropped without `finish` still tries to
/// close the file (without statistics).
///
/// ```
/// use bips::{Consumer, Options, Producer};
/// use bips_mcap::Recorder;
/// # let name = format!("doc-recorder-{}", std::process::id());
/// let producer = Producer::create(&name, &Options::new(2, 16))?;
/// let consumer = Consumer::open(&name)?;
/// let mut recorder = Recorder::new(std::io::Cursor::new(Vec::new()), &consumer)?;
/// let mut s = producer.loan()?;
/// s.write_pod(b"hello")?;
/// s.publish()?;
/// recorder.write(&consumer.recv()?)?;
/// assert_eq!(recorder.finish()?.samples, 1);
/// # Ok::<(), bips_mcap::Error>(())
/// ```
pub struct Recorder<W: Write + Seek> {
    w: mcap::Writer<W>,
    path: PathBuf,
    channel_id: u16,
    info: ChannelInfo,
    body: Vec<u8>,
    stats: RecordStats,
    /// Unix time minus `CLOCK_MONOTONIC` when the recording started.
    mono_to_unix: i128,
    /// The offset applied to timestamps to make log times (decided at the
    /// first sample).
    log_offset: Option<i128>,
}

impl<W: Write + Seek> std::fmt::Debug for Recorder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("path", &self.path)
            .field("channel", &self.info.topic)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Recorder<BufWriter<File>> {
    /// Creates (or truncates) `path` and starts recording `consumer`'s
    /// channel into it.
    pub fn create(path: impl AsRef<Path>, consumer: &Consumer) -> Result<Self> {
        let path = path.as_ref();
        let file = File::create(path).map_err(|source| Error::Io {
            op: "cannot create",
            path: path.to_owned(),
            source,
        })?;
        Recorder::with_path(BufWriter::with_capacity(1 << 20, file), consumer, path)
    }
}

impl<W: Write + Seek> Recorder<W> {
    /// Starts recording `consumer`'s channel into `w`: writes the header,
    /// the schema, the channel (with its geometry and type) and the
    /// `bips.recording` metadata.
    pub fn new(w: W, consumer: &Consumer) -> Result<Self> {
        Recorder::with_path(w, consumer, Path::new("<writer>"))
    }

    fn with_path(w: W, consumer: &Consumer, path: &Path) -> Result<Self> {
        let path = path.to_owned();
        let fail = |source| Error::Write {
            path: path.clone(),
            source,
        };
        let opts = mcap::WriteOptions::new()
            .compression(None)
            .profile("")
            .library(format!("bips-mcap {}", env!("CARGO_PKG_VERSION")));
        let mut w = opts.create(w).map_err(fail)?;
        let info = ChannelInfo::of(consumer);
        let schema = w
            .add_schema(
                format::SCHEMA_NAME,
                format::ENCODING,
                &format::schema_data(),
            )
            .map_err(fail)?;
        let channel_id = w
            .add_channel(schema, &info.topic, format::ENCODING, &info.to_metadata())
            .map_err(fail)?;
        let unix = unix_now_ns();
        let mono = bips::now_ns();
        let mono_to_unix = i128::from(unix) - i128::from(mono);
        let mut m = BTreeMap::new();
        m.insert("format".into(), format::FORMAT_VERSION.to_string());
        m.insert("bips_mcap_version".into(), env!("CARGO_PKG_VERSION").into());
        m.insert("channel".into(), info.topic.clone());
        m.insert("clock".into(), "CLOCK_MONOTONIC".into());
        m.insert(
            "monotonic_to_unix_offset_ns".into(),
            mono_to_unix.to_string(),
        );
        m.insert("started_unix_ns".into(), unix.to_string());
        w.write_metadata(&Metadata {
            name: format::META_START.into(),
            metadata: m,
        })
        .map_err(fail)?;
        Ok(Recorder {
            w,
            path,
            channel_id,
            info,
            body: Vec::new(),
            stats: RecordStats::default(),
            mono_to_unix,
            log_offset: None,
        })
    }

    /// The recorded channel's geometry and type, as written in the file.
    pub fn channel(&self) -> &ChannelInfo {
        &self.info
    }

    /// What was recorded so far.
    pub fn stats(&self) -> &RecordStats {
        &self.stats
    }

    /// Writes one sample (received from the consumer given at creation).
    pub fn write(&mut self, s: &Sample<'_>) -> Result<()> {
        let ts = s.timestamp_ns();
        let offset = *self
            .log_offset
            .get_or_insert(if ts >= format::UNIX_THRESHOLD_NS {
                0
            } else {
                self.mono_to_unix
            });
        let log_time = u64::try_from((i128::from(ts) + offset).max(0)).unwrap_or(u64::MAX);
        let descriptor = match s.descriptor() {
            Ok(d) => d,
            Err(_) => {
                self.stats.descriptor_errors += 1;
                None
            }
        };
        let payload = s.as_slice();
        format::encode_sample(
            &mut self.body,
            s.seq(),
            ts,
            s.lagged(),
            s.meta(),
            descriptor.as_ref(),
            payload,
        );
        let header = MessageHeader {
            channel_id: self.channel_id,
            sequence: s.seq() as u32,
            log_time,
            publish_time: log_time,
        };
        self.w
            .write_to_known_channel(&header, &self.body)
            .map_err(|source| Error::Write {
                path: self.path.clone(),
                source,
            })?;
        let st = &mut self.stats;
        st.samples += 1;
        st.lagged += s.lagged();
        st.payload_bytes += payload.len() as u64;
        st.max_len = st.max_len.max(payload.len() as u64);
        st.max_meta_len = st.max_meta_len.max(s.meta().len() as u64);
        st.first_seq.get_or_insert(s.seq());
        st.last_seq = Some(s.seq());
        Ok(())
    }

    /// Receives from `consumer` and writes every sample until a limit is
    /// reached, `stop()` returns true (checked at least every 50 ms), or the
    /// producer is gone and drained. Returns why it stopped; then call
    /// [`Recorder::finish`].
    pub fn run(
        &mut self,
        consumer: &Consumer,
        limits: &Limits,
        stop: &dyn Fn() -> bool,
    ) -> Result<Stopped> {
        let start = Instant::now();
        let slice = Duration::from_millis(50);
        let mut flushed = Instant::now();
        let stopped = loop {
            // Close the current chunk and hand it to the OS now and then, so
            // that a recorder killed outright (kill -9, power loss aside)
            // leaves at most about a second unreadable.
            if flushed.elapsed() >= FLUSH_EVERY {
                self.w.flush().map_err(|source| Error::Write {
                    path: self.path.clone(),
                    source,
                })?;
                flushed = Instant::now();
            }
            if limits.count.is_some_and(|n| self.stats.samples >= n) {
                break Stopped::Count;
            }
            if stop() {
                break Stopped::Stopped;
            }
            let mut wait = slice;
            if let Some(d) = limits.duration {
                let left = d.saturating_sub(start.elapsed());
                if left.is_zero() {
                    break Stopped::Duration;
                }
                wait = wait.min(left);
            }
            match consumer.recv_timeout(wait) {
                Ok(s) => self.write(&s)?,
                Err(bips::Error::Timeout) => {}
                Err(bips::Error::Disconnected) => break Stopped::Disconnected,
                Err(e) => return Err(e.into()),
            }
        };
        self.stats.stopped = Some(stopped);
        Ok(stopped)
    }

    /// Writes the `bips.record` statistics, the summary and the footer, and
    /// flushes: the file is complete. Returns the statistics.
    pub fn finish(mut self) -> Result<RecordStats> {
        let st = self.stats.clone();
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: String| m.insert(k.to_owned(), v);
        put("samples", st.samples.to_string());
        put("lagged", st.lagged.to_string());
        put("payload_bytes", st.payload_bytes.to_string());
        put("max_len", st.max_len.to_string());
        put("max_meta_len", st.max_meta_len.to_string());
        put("descriptor_errors", st.descriptor_errors.to_string());
        if let (Some(a), Some(b)) = (st.first_seq, st.last_seq) {
            put("first_seq", a.to_string());
            put("last_seq", b.to_string());
        }
        put(
            "stopped",
            st.stopped.map_or("finished", Stopped::name).to_owned(),
        );
        put(
            "log_time_offset_ns",
            self.log_offset.unwrap_or(self.mono_to_unix).to_string(),
        );
        put("ended_unix_ns", unix_now_ns().to_string());
        let path = self.path.clone();
        let fail = |source| Error::Write {
            path: path.clone(),
            source,
        };
        self.w
            .write_metadata(&Metadata {
                name: format::META_STATS.into(),
                metadata: m,
            })
            .map_err(fail)?;
        self.w.finish().map_err(fail)?;
        let mut inner = self.w.into_inner();
        inner.flush().map_err(|source| Error::Io {
            op: "writing",
            path,
            source,
        })?;
        Ok(st)
    }
}
