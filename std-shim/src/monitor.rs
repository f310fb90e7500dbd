//! Read-only views of channels for monitoring tools (`bips list`, `bips
//! inspect`, `bips clean`): geometry, cursors, lag, buffer states, liveness.
//!
//! Opening a channel here takes no liveness lock and claims no consumer
//! entry: it only reads the region and asks the kernel who holds which lock.

use bips_core::layout::{BUF_FREE, BUF_LOANED, BUF_PUBLISHED, BUF_RETIRED};
use bips_core::{Geometry, Region};

use crate::error::{Error, Result};
use crate::os::lock;
use crate::os::shm::{staged_objects, ChannelName, MapOptions, Segment};
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
/// # Ok::<(), bips::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct ChannelInfo {
    /// Channel name.
    pub name: String,
    /// Geometry from the (validated) header.
    pub geometry: Geometry,
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

/// Maps channel `name` for reading and takes a snapshot.
pub fn inspect(name: &str) -> Result<ChannelInfo> {
    let name = ChannelName::new(name)?;
    let seg = Segment::open(&name, &MapOptions::default())?;
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
    let (head, tail) = region.head_tail();
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
        size_bytes: seg.len() as u64,
        owner_uid: crate::trust::owner_of(seg.fd(), &name)?,
        epoch: region.epoch(),
        head,
        tail,
        closed: region.is_closed(),
        producer_alive: locked(PRODUCER_LOCK_BYTE),
        consumers,
        buffer_states,
    })
}

/// Whether any process (producer or consumer) holds a liveness lock on
/// channel `name`'s segment. A segment that cannot be read as a bips
/// channel answers by its locks all the same.
pub fn has_live_participants(name: &str) -> Result<bool> {
    let name = ChannelName::new(name)?;
    let seg = Segment::open(&name, &MapOptions::default())?;
    Ok(any_locked(&seg))
}

fn any_locked(seg: &Segment) -> bool {
    let fd = seg.fd();
    // Consumer bytes are 1..=max_consumers; bound the scan by the limit.
    let max = bips_core::layout::limits::MAX_CONSUMERS;
    lock::is_locked_by_other(fd, PRODUCER_LOCK_BYTE).unwrap_or(true)
        || (0..max).any(|i| lock::is_locked_by_other(fd, consumer_lock_byte(i)).unwrap_or(true))
}

/// Removes channel `name` if no process uses it any more (producer and all
/// consumers dead). Returns whether it was removed. With `dry_run`, only
/// answers whether it would be.
///
/// Safe against races with a producer re-creating the name: only the very
/// object that was checked is unlinked.
pub fn remove_if_dead(name: &str, dry_run: bool) -> Result<bool> {
    let name = ChannelName::new(name)?;
    let seg = match Segment::open(&name, &MapOptions::default()) {
        Ok(seg) => seg,
        Err(Error::NotFound { .. }) => return Ok(false),
        // An object too broken to map (e.g. size 0 left by a crash during
        // creation) has no participants that could be using it... unless
        // its creator is still sizing it: leave those to a second pass.
        Err(e) => return Err(e),
    };
    if any_locked(&seg) {
        return Ok(false);
    }
    if dry_run {
        return Ok(true);
    }
    Ok(seg.unlink_if_same())
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
            Err(Error::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        if lock::is_locked_by_other(std::os::fd::AsFd::as_fd(&fd), PRODUCER_LOCK_BYTE)
            .unwrap_or(true)
        {
            continue;
        }
        if dry_run || st.unlink_if_same(std::os::fd::AsFd::as_fd(&fd)) {
            removed.push(st.file);
        }
    }
    Ok(removed)
}
