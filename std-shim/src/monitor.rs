//! Read-only views of channels for monitoring tools (`bips list`, `bips
//! inspect`, `bips clean`): geometry, cursors, lag, buffer states, liveness.
//!
//! Looking ([`inspect`], [`has_live_participants`]) opens the object
//! read-only and maps it `PROT_READ`: it takes no liveness lock, claims no
//! consumer entry and needs only read permission (a `0o644` channel can be
//! monitored by any user). It reads the region's atomics and asks the kernel
//! who holds which lock (`F_OFD_GETLK`, which works on a read-only fd).
//!
//! Cleaning ([`sweep`], [`remove_if_dead`], [`remove_stale_staging`]) follows
//! T1: a name is removed only while this process holds the object's byte-0
//! (producer) lock and has seen that no consumer holds a lock either. Holding
//! the lock across the check and the unlink is what keeps a producer from
//! taking the object over in between (it would need that very lock).

use std::fmt;
use std::os::fd::AsFd;

use bips_core::descriptor::PayloadType;
use bips_core::layout::{BUF_FREE, BUF_LOANED, BUF_PUBLISHED, BUF_RETIRED};
use bips_core::{Geometry, LayoutError, Region};
use rustix::fs::{self as rfs, FileType};

use crate::error::{Error, Result};
use crate::options::Backend;
use crate::os::lock;
use crate::os::shm::{file_type_words, staged_objects, Access, ChannelName, MapOptions, Object};
use crate::os::{memfd, socket};
use crate::{consumer_lock_byte, PRODUCER_LOCK_BYTE};

/// A snapshot of one channel (racy by nature: the channel keeps running).
///
/// ```
/// use bips::{monitor, Consumer, Options, Producer};
/// # let name = format!("doc-monitor-{}", std::process::id());
/// let producer = Producer::create(&name, &Options::new(4, 64))?;
/// let _consumer = Consumer::open(&name)?;
/// let info = monitor::inspect(&name)?;
/// assert!(info.producer_alive);
/// assert_eq!(info.consumers.iter().filter(|c| c.alive).count(), 1);
/// assert_eq!(info.newest_timestamp_ns, None); // nothing published yet
///
/// let mut s = producer.loan()?;
/// s.set_timestamp_ns(1234);
/// s.publish()?;
/// assert_eq!(monitor::inspect(&name)?.newest_timestamp_ns, Some(1234));
/// # Ok::<(), bips::Error>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ChannelInfo {
    /// Channel name.
    pub name: String,
    /// Geometry from the (validated) header.
    pub geometry: Geometry,
    /// The payload type the producer declared, if any.
    pub payload_type: Option<PayloadType>,
    /// Where the segment lives.
    pub backend: Backend,
    /// Bytes of the shared-memory object.
    pub size_bytes: u64,
    /// Owner (uid) of the shared-memory object. Consumers refuse a channel
    /// whose owner is not their effective uid unless told to trust it
    /// ([`crate::OwnerPolicy`]); monitoring only shows it.
    pub owner_uid: u32,
    /// Identity of this incarnation of the channel.
    pub epoch: u64,
    /// Next sequence the producer will publish.
    pub head: u64,
    /// Oldest sequence still retained.
    pub tail: u64,
    /// The producer's timestamp of the newest published sample (`head - 1`),
    /// in nanoseconds, when its ring slot still holds it: by default
    /// `CLOCK_MONOTONIC` at publish ([`crate::now_ns`]), unless the producer
    /// set its own ([`crate::SampleMut::set_timestamp_ns`]). `None` before
    /// the first publish.
    pub newest_timestamp_ns: Option<u64>,
    /// Whether the channel was closed (producer left or declared dead).
    pub closed: bool,
    /// Whether the producer's liveness lock is held (its process lives).
    pub producer_alive: bool,
    /// Every non-free consumer entry, and every entry whose lock is held.
    pub consumers: Vec<ConsumerStatus>,
    /// Per buffer: `"free"`, `"loaned"`, `"published"`, `"retired"` (held
    /// by a consumer after the producer moved on) or `"invalid"`.
    pub buffer_states: Vec<&'static str>,
}

/// One consumer entry.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConsumerStatus {
    /// Entry index.
    pub index: u32,
    /// Whether the entry is claimed (as far as the region says).
    pub active: bool,
    /// Whether its liveness lock is held (its process lives). An active but
    /// dead entry is reclaimed by the producer when it needs its buffers.
    pub alive: bool,
    /// Next sequence it will receive.
    pub cursor: u64,
    /// Published samples it has not received yet (`head - cursor`).
    pub lag: u64,
    /// Samples it lost to `DropOldest`.
    pub lost: u64,
    /// Samples received.
    pub received: u64,
    /// Samples held right now.
    pub held: u32,
    /// Whether it sleeps in `recv`.
    pub sleeping: bool,
}

/// Maps channel `name` read-only and takes a snapshot. Needs read
/// permission only.
///
/// A [`Backend::Memfd`] channel is fetched from its producer's socket (in
/// [`crate::socket_dir`]`(None)`); a socket whose producer died gives
/// [`Error::Disconnected`] (`bips clean` removes it).
pub fn inspect(name: &str) -> Result<ChannelInfo> {
    let name = ChannelName::new(name)?;
    let (seg, owner) = match Object::open(&name, Access::ReadOnly) {
        Ok(obj) => {
            let seg = obj.into_segment(&MapOptions::default())?;
            let owner = crate::trust::owner_of(seg.fd(), &name)?;
            (seg, owner)
        }
        Err(Error::NotFound { .. }) => {
            let dir = socket::socket_dir(None);
            let map = MapOptions::default();
            memfd::open_served(&dir, &name, None, &map, Access::ReadOnly)?
        }
        Err(e) => return Err(e),
    };
    // SAFETY: `seg` maps the whole object, page-aligned, and outlives
    // `region` (both local); only atomics are read through it.
    let region =
        unsafe { Region::attach(seg.as_ptr(), seg.len()) }.map_err(|source| Error::Layout {
            name: name.as_str().to_owned(),
            source,
        })?;
    let fd = seg.fd();
    let locked = |byte| lock::is_locked_by_other(fd, byte).unwrap_or(false);
    let g = *region.geometry();
    let payload_type = region.payload_type().map_err(|source| Error::Layout {
        name: name.as_str().to_owned(),
        source,
    })?;
    let (head, tail) = region.head_tail();
    let newest_timestamp_ns = newest_timestamp(&region);
    let consumers = (0..g.max_consumers)
        .filter_map(|i| {
            let c = region.consumer_info(i)?;
            let alive = locked(consumer_lock_byte(i));
            (c.active || alive).then(|| ConsumerStatus {
                index: i,
                active: c.active,
                alive,
                cursor: c.cursor,
                lag: head.saturating_sub(c.cursor),
                lost: c.lost,
                received: c.received,
                held: c.held,
                sleeping: c.sleeping,
            })
        })
        .collect();
    let buffer_states = (0..g.buffer_count)
        .map(|b| match region.buffer_state(b) {
            Some(BUF_FREE) => "free",
            Some(BUF_LOANED) => "loaned",
            Some(BUF_PUBLISHED) => "published",
            Some(BUF_RETIRED) => "retired",
            _ => "invalid",
        })
        .collect();
    Ok(ChannelInfo {
        name: name.as_str().to_owned(),
        geometry: g,
        payload_type,
        backend: seg.backend(),
        size_bytes: seg.len() as u64,
        owner_uid: owner,
        epoch: region.epoch(),
        head,
        tail,
        newest_timestamp_ns,
        closed: region.is_closed(),
        producer_alive: locked(PRODUCER_LOCK_BYTE),
        consumers,
        buffer_states,
    })
}

/// The publish timestamp of the newest sample: read from its ring slot
/// right after reading the head; a slot the producer rewrote in between
/// (it went a whole ring further) is read again from the new head, a few
/// times at most.
fn newest_timestamp(region: &Region<'_>) -> Option<u64> {
    (0..4).find_map(|_| {
        let head = region.head_tail().0;
        region.sample_timestamp(head.checked_sub(1)?)
    })
}

/// Whether any process (producer or consumer) holds a liveness lock on
/// channel `name`'s object. Opens it read-only and maps nothing, so an
/// object that cannot be read as a bips channel answers by its locks all the
/// same.
pub fn has_live_participants(name: &str) -> Result<bool> {
    let name = ChannelName::new(name)?;
    let obj = Object::open(&name, Access::ReadOnly)?;
    Ok(
        lock::is_locked_by_other(obj.fd(), PRODUCER_LOCK_BYTE).unwrap_or(true)
            || consumers_locked(&obj),
    )
}

/// Whether another process holds any consumer byte (`1..=MAX_CONSUMERS`)
/// of `obj` (one range query; an error counts as "yes").
fn consumers_locked(obj: &Object) -> bool {
    let max = bips_core::layout::limits::MAX_CONSUMERS;
    lock::is_range_locked_by_other(obj.fd(), consumer_lock_byte(0), u64::from(max)).unwrap_or(true)
}

/// What [`sweep`] found under a channel's name, and did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sweep {
    /// Removed (with `dry_run`: would be): no process held any of its locks.
    /// `what` says what it was, e.g. `"stale channel"` or `"empty object"`.
    Removed {
        /// What the object was.
        what: &'static str,
    },
    /// Kept: a live producer or consumer holds one of its locks.
    InUse,
    /// Kept: not a regular file (a symlink, a FIFO, a directory, ...). bips
    /// never opens, follows or removes those.
    NotAnObject {
        /// What it is, e.g. `"a symbolic link"`.
        what: &'static str,
    },
    /// Kept: this user may not open it read-write, so cannot take its lock
    /// (and the sticky `/dev/shm` would refuse the unlink anyway).
    NoAccess {
        /// The owner's uid.
        uid: u32,
    },
    /// Nothing under the name (any more).
    Gone,
}

impl fmt::Display for Sweep {
    /// The label `bips clean` prints: `removed (stale channel)`, `in use`, ...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sweep::Removed { what } => write!(f, "{what}, no process holds its locks"),
            Sweep::InUse => f.write_str("in use"),
            Sweep::NotAnObject { what } => {
                write!(
                    f,
                    "{what}, not a bips channel: remove it by hand if unwanted"
                )
            }
            Sweep::NoAccess { uid } => write!(
                f,
                "owned by uid {uid}, not writable by this user: only its owner or root \
                 may check and remove it"
            ),
            Sweep::Gone => f.write_str("gone"),
        }
    }
}

/// Removes the object `/dev/shm/bips.<name>` if no process uses it any more
/// (its producer and every consumer dead, or it never was a complete
/// channel: empty, truncated, an unreadable header), and says what it found.
/// With `dry_run`, only says what it would do.
///
/// T1: the object is opened read-write and its byte-0 lock taken; only
/// while holding it are the consumer locks checked and the name unlinked,
/// and only if the name still names that very object. A producer replacing
/// the object needs that lock, so it cannot slip in between. Needs no
/// mapping: an object that cannot be mapped is judged by its locks.
///
/// A [`Backend::Memfd`] channel (no `/dev/shm` object) is judged by its lock
/// file in [`crate::socket_dir`]`(None)`: while holding its lock, the stale
/// socket and the lock file are removed. Its memory went with its last
/// process.
pub fn sweep(name: &str, dry_run: bool) -> Result<Sweep> {
    let name = ChannelName::new(name)?;
    let st = match rfs::lstat(name.path()) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => {
            return socket::sweep(&socket::socket_dir(None), &name, dry_run).map(|r| match r {
                None => Sweep::Gone,
                Some(true) => Sweep::Removed {
                    what: "stale memfd channel socket",
                },
                Some(false) => Sweep::InUse,
            })
        }
        Err(e) => return Err(crate::error::from_errno("lstat", name.as_str(), 0, e)),
    };
    let kind = FileType::from_raw_mode(st.st_mode);
    if !kind.is_file() {
        return Ok(Sweep::NotAnObject {
            what: file_type_words(kind),
        });
    }
    let obj = match Object::open(&name, Access::ReadWrite) {
        Ok(obj) => obj,
        Err(Error::NotFound { .. }) => return Ok(Sweep::Gone),
        Err(Error::PermissionDenied { .. }) => return Ok(Sweep::NoAccess { uid: st.st_uid }),
        Err(e) => return Err(e),
    };
    let io = |e: std::io::Error| Error::Io {
        op: "lock",
        name: name.as_str().to_owned(),
        source: e,
    };
    if !lock::try_lock(obj.fd(), PRODUCER_LOCK_BYTE).map_err(io)? {
        return Ok(Sweep::InUse);
    }
    // We hold byte 0 (released when `obj` is dropped): no producer lives,
    // and none can take this object over until we let go.
    if consumers_locked(&obj) {
        return Ok(Sweep::InUse);
    }
    let what = describe_dead(&obj);
    if dry_run {
        return Ok(Sweep::Removed { what });
    }
    Ok(if obj.unlink_if_same() {
        Sweep::Removed { what }
    } else {
        Sweep::Gone
    })
}

/// What a dead object is, for the label.
fn describe_dead(obj: &Object) -> &'static str {
    if obj.size() == 0 {
        return "empty object (its creator died before sizing it)";
    }
    let Ok(seg) = obj.map(&MapOptions::default()) else {
        return "object that cannot be mapped";
    };
    // SAFETY: `seg` maps the whole object, page-aligned, and outlives
    // `region` (both local); only atomics are read through it.
    match unsafe { Region::attach(seg.as_ptr(), seg.len()) } {
        Ok(_) => "stale channel",
        Err(LayoutError::RegionTooSmall { .. }) => {
            "truncated object (smaller than its header says)"
        }
        Err(LayoutError::NotReady) => "unformatted object (its creator died before formatting it)",
        Err(_) => "object with an unreadable header (smashed, or another bips version)",
    }
}

/// Removes channel `name` if no process uses it any more (producer and all
/// consumers dead). Returns whether it was removed (with `dry_run`: whether
/// it would be). See [`sweep`], which also says what it found.
///
/// Safe against races with a producer re-creating the name: the check and
/// the removal happen while holding the object's producer lock, and only the
/// very object that was checked is unlinked.
pub fn remove_if_dead(name: &str, dry_run: bool) -> Result<bool> {
    Ok(matches!(sweep(name, dry_run)?, Sweep::Removed { .. }))
}

/// Removes the staging objects (`/dev/shm/bips..new-*`) of producers that
/// died while creating their channel: those older than `grace` whose creator
/// no longer holds their lock. Returns their file names. With `dry_run`,
/// only lists what would be removed.
///
/// A producer creates, locks and formats its segment under such a name and
/// renames it to `bips.<name>` at once, so a live one is seldom seen here,
/// and never unlocked after its first instant (hence `grace`).
pub fn remove_stale_staging(grace: std::time::Duration, dry_run: bool) -> Result<Vec<String>> {
    let found = staged_objects().map_err(|e| Error::Io {
        op: "readdir",
        name: "/dev/shm".to_owned(),
        source: e,
    })?;
    let mut removed = Vec::new();
    for st in found {
        if st.age.is_none_or(|age| age < grace) {
            continue;
        }
        let fd = match st.open() {
            Ok(fd) => fd,
            // Another user's: only its owner (or root) may remove it.
            Err(Error::NotFound { .. }) | Err(Error::PermissionDenied { .. }) => continue,
            Err(e) => return Err(e),
        };
        // Its creator locks it right after creating it: hold that lock
        // across the check and the unlink (T1), so a creator that locks it
        // meanwhile is told (and starts over), never loses a locked object.
        if !lock::try_lock(fd.as_fd(), PRODUCER_LOCK_BYTE).unwrap_or(false) {
            continue;
        }
        if dry_run || st.unlink_if_same(fd.as_fd()) {
            removed.push(st.file);
        }
    }
    Ok(removed)
}
