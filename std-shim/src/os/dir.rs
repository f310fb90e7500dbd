//! What is in `/dev/shm`: the channels, and the staging objects of producers
//! being created (or that died creating).

use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::fs::{self as rfs, Mode};
use rustix::shm;

use super::name::{ChannelName, PREFIX, SHM_DIR, STAGING_PREFIX};
use super::shm::{file_id, unlink_if_same};
use crate::error::{from_errno, Result};

/// User names of the bips channels present in `/dev/shm` (entries named
/// `bips.<valid name>`) and of the memfd channels with a socket in
/// [`crate::socket_dir`]`(None)` (live or stale), sorted, each once. No
/// `/dev/shm` (or socket directory) means no channels there.
pub fn list_channels() -> std::io::Result<Vec<String>> {
    let mut names = shm_channels()?;
    names.extend(super::socket::list(&super::socket::socket_dir(None))?);
    names.sort();
    names.dedup();
    Ok(names)
}

/// The `/dev/shm` part of [`list_channels`].
fn shm_channels() -> std::io::Result<Vec<String>> {
    let dir = match std::fs::read_dir(SHM_DIR) {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in dir {
        let entry = entry?;
        let Some(file) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if let Some(user) = file.strip_prefix(PREFIX) {
            if ChannelName::new(user).is_ok() {
                names.push(user.to_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// A staging object (`/dev/shm/bips..new-*`) left in `/dev/shm`, see
/// [`Segment::create_staged`](super::shm::Segment::create_staged).
#[derive(Debug)]
pub(crate) struct Staged {
    /// Its file name in `/dev/shm`.
    pub file: String,
    /// Time since it was last modified (`None`: unknown).
    pub age: Option<std::time::Duration>,
}

/// The staging objects in `/dev/shm`: producers being created right now, or
/// leftovers of producers that died while creating.
pub(crate) fn staged_objects() -> std::io::Result<Vec<Staged>> {
    let dir = match std::fs::read_dir(SHM_DIR) {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in dir {
        let entry = entry?;
        let Some(file) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if file.starts_with(STAGING_PREFIX) {
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| std::time::SystemTime::now().duration_since(t).ok());
            out.push(Staged { file, age });
        }
    }
    Ok(out)
}

impl Staged {
    /// Opens it read-write (no mapping), to take its producer lock.
    pub(crate) fn open(&self) -> Result<OwnedFd> {
        let flags = shm::OFlags::RDWR
            | shm::OFlags::from_bits_retain(
                rfs::OFlags::NOFOLLOW.bits() | rfs::OFlags::NONBLOCK.bits(),
            );
        shm::open(self.file.as_str(), flags, Mode::empty())
            .map_err(|e| from_errno("shm_open", &self.file, 0, e))
    }

    /// Unlinks it if its name still names the object `fd` refers to.
    /// Returns whether it did.
    pub(crate) fn unlink_if_same(&self, fd: BorrowedFd<'_>) -> bool {
        let tmp = ChannelName::from_shm_name_unchecked(self.file.clone());
        unlink_if_same(file_id(fd), &tmp);
        rfs::lstat(tmp.path()).is_err()
    }
}
