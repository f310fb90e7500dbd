//! The replayer: an MCAP recording read back and published into a channel.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bips::Producer;
use mcap::records::Record;
use mcap::sans_io::{
    LinearReadEvent, LinearReader, LinearReaderOptions, SummaryReadEvent, SummaryReader,
    SummaryReaderOptions,
};

use crate::format::{self, ChannelInfo, RecordedSample};
use crate::{Error, Result};

/// Largest record the reader accepts (a corrupt length cannot make it
/// allocate more): 4 GiB.
const RECORD_LIMIT: usize = 4 << 30;

/// Reads the samples of one bips channel from a recording, in file order.
///
/// ```
/// # use bips::{Consumer, Options, Producer};
/// # use bips_mcap::{Limits, Recorder, SampleReader};
/// # let dir = std::env::temp_dir().join(format!("doc-reader-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// # let path = dir.join("r.mcap");
/// # let name = format!("doc-reader-{}", std::process::id());
/// # let p = Producer::create(&name, &Options::new(2, 8))?;
/// # let c = Consumer::open(&name)?;
/// # let mut rec = Recorder::create(&path, &c)?;
/// # let mut s = p.loan()?; s.write_pod(b"abc")?; s.publish()?;
/// # rec.run(&c, &Limits::count(1), &|| false)?;
/// # rec.finish()?;
/// let mut reader = SampleReader::open(&path, None)?;
/// println!("channel {} of {} x {} B", reader.channel().topic,
///          reader.channel().buffers, reader.channel().buffer_size);
/// while let Some(s) = reader.next_sample()? {
///     println!("#{} at {} ns: {} bytes", s.seq, s.log_time, s.payload.len());
/// }
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), bips_mcap::Error>(())
/// ```
pub struct SampleReader {
    file: File,
    path: PathBuf,
    reader: LinearReader,
    /// Schema id -> name.
    schemas: HashMap<u16, String>,
    /// Every channel seen: id -> (topic, is a bips channel).
    channels: BTreeMap<u16, (String, bool)>,
    /// Bips channels: id -> (topic, channel record metadata).
    metas: HashMap<u16, (String, BTreeMap<String, String>)>,
    /// The channel read, once chosen.
    chosen: Option<(u16, ChannelInfo)>,
    want: Option<String>,
    /// The current message's body and log time.
    body: Vec<u8>,
    log_time: u64,
    /// The first message, read while choosing the channel.
    pending: bool,
    truncated: bool,
}

impl std::fmt::Debug for SampleReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SampleReader")
            .field("path", &self.path)
            .field("channel", &self.chosen.as_ref().map(|c| &c.1.topic))
            .finish_non_exhaustive()
    }
}

enum Item {
    Message { channel: u16 },
    Other,
}

impl SampleReader {
    /// Opens `path` and finds the bips channel `topic` (`None`: the only one
    /// the file has).
    pub fn open(path: impl AsRef<Path>, topic: Option<&str>) -> Result<SampleReader> {
        let path = path.as_ref().to_owned();
        let file = File::open(&path).map_err(|source| Error::Io {
            op: "cannot open",
            path: path.clone(),
            source,
        })?;
        let reader = LinearReader::new_with_options(
            LinearReaderOptions::default()
                .with_validate_chunk_crcs(true)
                .with_record_length_limit(RECORD_LIMIT),
        );
        let mut r = SampleReader {
            file,
            path,
            reader,
            schemas: HashMap::new(),
            channels: BTreeMap::new(),
            metas: HashMap::new(),
            chosen: None,
            want: topic.map(str::to_owned),
            body: Vec::new(),
            log_time: 0,
            pending: false,
            truncated: false,
        };
        r.choose()?;
        Ok(r)
    }

    /// Reads up to the first message of the wanted channel (or the end) and
    /// chooses the channel.
    fn choose(&mut self) -> Result<()> {
        loop {
            match self.next_item()? {
                Some(Item::Message { channel }) => {
                    if self.try_choose(false)? && self.chosen.as_ref().unwrap().0 == channel {
                        self.pending = true;
                        return Ok(());
                    }
                }
                Some(Item::Other) => {}
                None => {
                    self.try_choose(true)?;
                    return Ok(());
                }
            }
        }
    }

    /// Chooses among the channels seen so far; at the end of the file, a
    /// missing channel is an error.
    fn try_choose(&mut self, at_end: bool) -> Result<bool> {
        if self.chosen.is_some() {
            return Ok(true);
        }
        let bips: Vec<(u16, &String)> = self
            .channels
            .iter()
            .filter(|(_, (_, b))| *b)
            .map(|(id, (t, _))| (*id, t))
            .collect();
        let found = match &self.want {
            Some(t) => bips
                .iter()
                .find(|(_, topic)| *topic == t)
                .map(|(id, _)| *id),
            None if bips.len() > 1 => {
                return Err(Error::AmbiguousTopic {
                    path: self.path.clone(),
                    topics: bips.iter().map(|(_, t)| (*t).clone()).collect(),
                })
            }
            None => bips.first().map(|(id, _)| *id),
        };
        match found {
            Some(id) => {
                let info = self.info_of(id)?;
                self.chosen = Some((id, info));
                Ok(true)
            }
            None if at_end => Err(Error::NotBips {
                path: self.path.clone(),
                topic: self.want.clone(),
                topics: self
                    .channels
                    .values()
                    .map(|(t, b)| if *b { format!("{t} (bips)") } else { t.clone() })
                    .collect(),
            }),
            None => Ok(false),
        }
    }

    fn info_of(&self, id: u16) -> Result<ChannelInfo> {
        self.metas
            .get(&id)
            .ok_or_else(|| self.corrupt("bips channel without metadata".into()))
            .and_then(|(topic, m)| {
                ChannelInfo::from_metadata(topic, m).map_err(|e| self.corrupt(e))
            })
    }

    fn corrupt(&self, detail: String) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            detail,
        }
    }

    /// The next record, with a message's body in `self.body`.
    fn next_item(&mut self) -> Result<Option<Item>> {
        loop {
            let ev = match self.reader.next_event() {
                None => return Ok(None),
                Some(Ok(ev)) => ev,
                Some(Err(e)) => {
                    return Err(match e {
                        mcap::McapError::BadMagic => Error::NotMcap {
                            path: self.path.clone(),
                            detail: "no MCAP magic at its start".into(),
                        },
                        mcap::McapError::UnexpectedEof if self.chosen.is_some() => {
                            // Cut short (a recorder killed outright): what
                            // is complete was read.
                            self.truncated = true;
                            return Ok(None);
                        }
                        mcap::McapError::UnexpectedEof => Error::Corrupt {
                            path: self.path.clone(),
                            detail: "it ends before any bips channel".into(),
                        },
                        e => Error::Corrupt {
                            path: self.path.clone(),
                            detail: e.to_string(),
                        },
                    });
                }
            };
            let (opcode, data) = match ev {
                LinearReadEvent::ReadRequest(n) => {
                    let buf = self.reader.insert(n);
                    let got = self.file.read(buf).map_err(|source| Error::Io {
                        op: "reading",
                        path: self.path.clone(),
                        source,
                    })?;
                    self.reader.notify_read(got);
                    continue;
                }
                LinearReadEvent::Record { opcode, data } => (opcode, data),
            };
            let rec = mcap::parse_record(opcode, data).map_err(|e| Error::Corrupt {
                path: self.path.clone(),
                detail: e.to_string(),
            })?;
            match rec {
                Record::Schema { header, .. } => {
                    self.schemas.insert(header.id, header.name);
                }
                Record::Channel(c) => {
                    let bips = c.message_encoding == format::ENCODING
                        && self
                            .schemas
                            .get(&c.schema_id)
                            .is_some_and(|n| n == format::SCHEMA_NAME);
                    self.channels.insert(c.id, (c.topic.clone(), bips));
                    if bips {
                        self.metas.insert(c.id, (c.topic, c.metadata));
                    }
                }
                Record::Message { header, data } => {
                    self.body.clear();
                    self.body.extend_from_slice(&data);
                    self.log_time = header.log_time;
                    return Ok(Some(Item::Message {
                        channel: header.channel_id,
                    }));
                }
                _ => {}
            }
            return Ok(Some(Item::Other));
        }
    }

    /// The channel read: its topic, geometry and type.
    pub fn channel(&self) -> &ChannelInfo {
        &self.chosen.as_ref().expect("chosen at open").1
    }

    /// Whether the file ended early, inside a record (a recorder killed
    /// outright): every complete sample before that point was read.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The next sample of the channel, `None` at the end of the file.
    pub fn next_sample(&mut self) -> Result<Option<RecordedSample<'_>>> {
        let id = self.chosen.as_ref().expect("chosen at open").0;
        if !std::mem::take(&mut self.pending) {
            loop {
                match self.next_item()? {
                    Some(Item::Message { channel }) if channel == id => break,
                    Some(_) => {}
                    None => return Ok(None),
                }
            }
        }
        format::decode_sample(&self.body, self.log_time)
            .map(Some)
            .map_err(|detail| Error::Corrupt {
                path: self.path.clone(),
                detail: format!("a message of channel {}: {detail}", self.channel().topic),
            })
    }
}

/// How a replay paces its samples.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Timing {
    /// The recorded gaps between log times.
    #[default]
    Original,
    /// The recorded gaps divided by this factor (2.0 = twice as fast).
    Rate(f64),
    /// No waiting: each sample as soon as a buffer is free.
    AsFastAsPossible,
}

/// Options of [`Replayer::run`].
#[derive(Clone, Debug, Default)]
pub struct ReplayOptions {
    /// Pacing.
    pub timing: Timing,
    /// Start over at the end of the file, until `stop` says so.
    pub repeat: bool,
    /// Publish each sample with its recorded timestamp instead of the
    /// time of its publication (the default, so that consumers measuring
    /// latency from timestamps see the replay's own).
    pub original_timestamps: bool,
    /// Wait until this many consumers are attached before the first sample.
    pub wait_for_consumers: usize,
}

/// What a replay did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Samples published.
    pub published: u64,
    /// Passes over the file started (more than 1 with `repeat`).
    pub passes: u64,
    /// Whether the file was cut short (see [`SampleReader::truncated`]).
    pub truncated: bool,
    /// Whether `stop` ended it.
    pub stopped: bool,
}

/// A recording opened for replay: the recorded channel's geometry and type
/// are known ([`Replayer::channel`]) before any channel is created.
///
/// ```no_run
/// use bips::Producer;
/// use bips_mcap::{Replayer, ReplayOptions, Timing};
/// let replayer = Replayer::open("camera.mcap", None)?;
/// // The recorded geometry and type, with 8 buffers:
/// let mut info = replayer.channel().clone();
/// info.buffers = 8;
/// info.ring_capacity = 8;
/// let opts = info.options();
/// let producer = Producer::create("camera-replay", &opts)?;
/// let options = ReplayOptions { timing: Timing::Rate(2.0), repeat: true, ..Default::default() };
/// replayer.run(&producer, &options, &|| false)?;
/// # Ok::<(), bips_mcap::Error>(())
/// ```
#[derive(Debug)]
pub struct Replayer {
    path: PathBuf,
    topic: String,
    info: ChannelInfo,
    stats: Option<BTreeMap<String, String>>,
}

impl Replayer {
    /// Opens a recording and reads the channel `topic` (`None`: the only bips
    /// channel of the file) and its `bips.record` statistics when the file
    /// is complete. Fails with a typed error when the file is missing, not
    /// MCAP, corrupt, or has no such bips channel.
    pub fn open(path: impl AsRef<Path>, topic: Option<&str>) -> Result<Replayer> {
        let path = path.as_ref();
        let reader = SampleReader::open(path, topic)?;
        let info = reader.channel().clone();
        let stats = read_stats(path);
        Ok(Replayer {
            path: path.to_owned(),
            topic: info.topic.clone(),
            info,
            stats,
        })
    }

    /// The recorded channel: geometry, policy, payload type.
    pub fn channel(&self) -> &ChannelInfo {
        &self.info
    }

    /// The `bips.record` statistics written when the recording closed
    /// (`None` for a recording that was not closed: killed outright).
    pub fn record_stats(&self) -> Option<&BTreeMap<String, String>> {
        self.stats.as_ref()
    }

    /// Checks that the samples the statistics announce fit a channel of
    /// `buffer_size` bytes per buffer and `meta_size` bytes of metadata
    /// ([`Error::TooSmall`] otherwise); call it before creating the channel.
    /// A recording without statistics (not closed) is checked per sample.
    pub fn check_fits(&self, buffer_size: usize, meta_size: usize) -> Result<()> {
        let stat = |k: &str| self.stats.as_ref()?.get(k)?.parse::<u64>().ok();
        if let Some(need) = stat("max_len") {
            fits("payload", need, buffer_size)?;
        }
        if let Some(need) = stat("max_meta_len") {
            fits("metadata", need, meta_size)?;
        }
        Ok(())
    }

    /// Publishes the recording into `producer`'s channel, paced as
    /// `options` say, until the end of the file (or forever with `repeat`)
    /// or until `stop()` returns true (checked at least every 50 ms, also
    /// while waiting for a buffer or for a sample's time).
    ///
    /// Each sample is published with its payload, user metadata and (unless
    /// the channel fixes one) descriptor; its sequence number is the new
    /// channel's own, and consumers' `lagged()` counts only what they skip in
    /// the new channel (the recorded `lagged` stays in the file).
    pub fn run(
        &self,
        producer: &Producer,
        options: &ReplayOptions,
        stop: &dyn Fn() -> bool,
    ) -> Result<ReplayStats> {
        self.check_fits(producer.buffer_size(), producer.meta_size())?;
        let slice = Duration::from_millis(50);
        let mut st = ReplayStats::default();
        while producer.consumer_count() < options.wait_for_consumers {
            if stop() {
                st.stopped = true;
                return Ok(st);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let fixed = producer
            .payload_type()
            .and_then(|t| t.descriptor())
            .is_some();
        loop {
            let mut reader = SampleReader::open(&self.path, Some(&self.topic))?;
            st.passes += 1;
            let mut clock: Option<(Instant, u64)> = None;
            while let Some(s) = reader.next_sample()? {
                // Wait for the sample's time, in slices.
                let due = match (options.timing, clock) {
                    (Timing::AsFastAsPossible, _) | (_, None) => None,
                    (t, Some((t0, l0))) => {
                        let gap = s.log_time.saturating_sub(l0) as f64;
                        let rate = match t {
                            Timing::Rate(r) if r > 0.0 => r,
                            _ => 1.0,
                        };
                        Some(t0 + Duration::from_secs_f64(gap / rate / 1e9))
                    }
                };
                if let Some(due) = due {
                    loop {
                        if stop() {
                            st.stopped = true;
                            return Ok(st);
                        }
                        let left = due.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        std::thread::sleep(left.min(slice));
                    }
                }
                if clock.is_none() {
                    clock = Some((Instant::now(), s.log_time));
                }
                fits("payload", s.payload.len() as u64, producer.buffer_size())?;
                fits("metadata", s.meta.len() as u64, producer.meta_size())?;
                let descriptor = s
                    .descriptor()
                    .map_err(|detail| Error::Corrupt {
                        path: self.path.clone(),
                        detail: format!("sample #{}: {detail}", s.seq),
                    })?
                    .filter(|_| !fixed);
                let mut loan = loop {
                    if stop() {
                        st.stopped = true;
                        return Ok(st);
                    }
                    match producer.loan_timeout(slice) {
                        Ok(l) => break l,
                        Err(bips::Error::Timeout) => {}
                        Err(e) => return Err(e.into()),
                    }
                };
                loan.as_mut_slice()[..s.payload.len()].copy_from_slice(s.payload);
                loan.set_len(s.payload.len());
                let meta = loan.meta_mut();
                meta[..s.meta.len()].copy_from_slice(s.meta);
                meta[s.meta.len()..].fill(0);
                if let Some(d) = &descriptor {
                    loan.set_descriptor(d)?;
                }
                if options.original_timestamps {
                    loan.set_timestamp_ns(s.timestamp_ns);
                }
                loan.publish()?;
                st.published += 1;
            }
            st.truncated |= reader.truncated();
            if !options.repeat || stop() {
                st.stopped = options.repeat;
                return Ok(st);
            }
        }
    }
}

fn fits(what: &'static str, need: u64, have: usize) -> Result<()> {
    if need > have as u64 {
        return Err(Error::TooSmall {
            what,
            need,
            have: have as u64,
        });
    }
    Ok(())
}

/// The `bips.record` metadata of a complete file (through its summary's
/// metadata index), `None` when the file has no summary or no such record.
fn read_stats(path: &Path) -> Option<BTreeMap<String, String>> {
    let mut f = File::open(path).ok()?;
    let size = f.metadata().ok()?.len();
    let mut r = SummaryReader::new_with_options(
        SummaryReaderOptions::default()
            .with_file_size(size)
            .with_record_length_limit(RECORD_LIMIT),
    );
    while let Some(ev) = r.next_event() {
        match ev.ok()? {
            SummaryReadEvent::ReadRequest(n) => {
                let buf = r.insert(n);
                let got = f.read(buf).ok()?;
                r.notify_read(got);
            }
            SummaryReadEvent::SeekRequest(to) => {
                let pos = f.seek(to).ok()?;
                r.notify_seeked(pos);
            }
        }
    }
    let summary = r.finish()?;
    let idx = summary
        .metadata_indexes
        .iter()
        .rfind(|i| i.name == format::META_STATS)?;
    if idx.length < 9 || idx.length > 1 << 20 {
        return None;
    }
    f.seek(SeekFrom::Start(idx.offset)).ok()?;
    let mut rec = vec![0u8; idx.length as usize];
    f.read_exact(&mut rec).ok()?;
    match mcap::parse_record(rec[0], &rec[9..]).ok()? {
        Record::Metadata(m) => Some(m.metadata),
        _ => None,
    }
}
