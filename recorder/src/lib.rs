//! Record bips channels to [MCAP](https://mcap.dev) files and replay them.
//!
//! * A [`Recorder`] is a consumer of a channel that writes every sample it
//!   receives (payload, user metadata, frame descriptor, sequence number,
//!   timestamp, lagged) into an MCAP file, with the channel's geometry and
//!   payload type, so that the file can later make a channel that looks the
//!   same to its consumers. Foxglove and the `mcap` tools (CLI, Python
//!   package) read the file: the schema is a protobuf one (see [`format`](mod@format)).
//! * A [`Replayer`] reads such a file and publishes its samples, as a
//!   producer, into a new channel: with the original timing (gaps between
//!   log times), scaled (`rate`) or as fast as possible, once or in a loop.
//!
//! The recorder is a consumer like any other: on a `Block` channel it paces
//! the producer, so **a disk slower than the stream slows the producer
//! down** (nothing is lost); on a `DropOldest` channel the producer never
//! waits and the samples the recorder could not keep up with are lost,
//! counted (`lagged`) per sample and in the file's `bips.record` metadata.
//!
//! ```
//! use bips::{Consumer, Options, Producer};
//! use bips_mcap::{Recorder, Replayer, ReplayOptions, Limits, Timing};
//! # let dir = std::env::temp_dir().join(format!("doc-bips-mcap-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! # let path = dir.join("cam.mcap");
//! # let name = format!("doc-rec-{}", std::process::id());
//! # let name2 = format!("doc-rep-{}", std::process::id());
//! let producer = Producer::create(&name, &Options::new(4, 64))?;
//! let consumer = Consumer::open(&name)?;
//! let mut recorder = Recorder::create(&path, &consumer)?;
//! for i in 0..3u8 {
//!     let mut s = producer.loan()?;
//!     s.write_pod(&[i, i, i])?;
//!     s.meta_mut()[0] = 10 + i;
//!     s.publish()?;
//! }
//! // Record those three, then close the file (summary and footer).
//! recorder.run(&consumer, &Limits::count(3), &|| false)?;
//! let stats = recorder.finish()?;
//! assert_eq!((stats.samples, stats.payload_bytes), (3, 9));
//!
//! // Replay them into a new channel, as fast as possible.
//! let replayer = Replayer::open(&path, None)?;
//! let copy = Producer::create(&name2, &replayer.channel().options())?;
//! let reader = Consumer::open(&name2)?;
//! let opts = ReplayOptions { timing: Timing::AsFastAsPossible, ..Default::default() };
//! let done = replayer.run(&copy, &opts, &|| false)?;
//! assert_eq!(done.published, 3);
//! for i in 0..3u8 {
//!     let s = reader.recv()?;
//!     assert_eq!((s.as_slice(), s.meta()[0]), (&[i, i, i][..], 10 + i));
//! }
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), bips_mcap::Error>(())
//! ```

pub mod format;
mod record;
mod replay;

use std::path::PathBuf;

pub use format::{ChannelInfo, RecordedSample};
pub use record::{Limits, RecordStats, Recorder, Stopped};
pub use replay::{ReplayOptions, ReplayStats, Replayer, SampleReader, Timing};

/// What can go wrong while recording or replaying. Every message says what
/// to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened, created, read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("cannot open", "cannot create", "writing").
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not an MCAP file at all.
    #[error(
        "{path} is not an MCAP file ({detail}); give a file made by `bips record` \
         (check it with `mcap info FILE`)"
    )]
    NotMcap {
        /// The file.
        path: PathBuf,
        /// What the reader found.
        detail: String,
    },
    /// The file is an MCAP file but damaged (bad CRC, record past the end, a
    /// message that does not decode).
    #[error(
        "{path} is corrupt: {detail} (a damaged or truncated file: `mcap recover` may \
         salvage what is readable)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The MCAP file holds no bips channel (no channel with schema
    /// `bips.Sample`), or not the one asked for.
    #[error(
        "{path} has no bips recording{}: its channels are [{}]; give a file made by \
         `bips record`{}",
        topic.as_ref().map(|t| format!(" of channel {t:?}")).unwrap_or_default(),
        topics.join(", "),
        if topic.is_some() { ", and one of its bips topics" } else { "" }
    )]
    NotBips {
        /// The file.
        path: PathBuf,
        /// The topic asked for, if any.
        topic: Option<String>,
        /// The topics the file has (bips ones marked).
        topics: Vec<String>,
    },
    /// The file has several bips channels and none was chosen.
    #[error(
        "{path} holds several bips channels [{}]; choose one (Replayer::open with a topic, \
         `bips replay --topic NAME`)",
        topics.join(", ")
    )]
    AmbiguousTopic {
        /// The file.
        path: PathBuf,
        /// Its bips topics.
        topics: Vec<String>,
    },
    /// A recorded sample does not fit the channel it is replayed into.
    #[error(
        "a recorded sample needs {need} bytes of {what} but the channel has {have}; \
         replay into a channel with at least {need} (`bips replay --size`/`--meta-size`, \
         or leave the geometry to the file)"
    )]
    TooSmall {
        /// "payload" or "metadata".
        what: &'static str,
        /// Bytes the sample needs.
        need: u64,
        /// Bytes the channel has.
        have: u64,
    },
    /// Writing the MCAP file failed (disk full, I/O error).
    #[error(
        "writing {path}: {}; the recording stops here (free some space or record \
         elsewhere; what was written before can be salvaged with `mcap recover`)",
        mcap_detail(source)
    )]
    Write {
        /// The file.
        path: PathBuf,
        /// The writer's error.
        #[source]
        source: mcap::McapError,
    },
    /// A bips call failed (the channel could not be opened, created, ...).
    #[error(transparent)]
    Bips(#[from] bips::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An MCAP error's message, with the OS's reason for an I/O error (the
/// writer's own message does not include it).
fn mcap_detail(e: &mcap::McapError) -> String {
    match e {
        mcap::McapError::Io(io) => io.to_string(),
        e => e.to_string(),
    }
}

/// Unix time now, ns.
pub(crate) fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
