//! Sealed `memfd` segments: anonymous shared memory whose size nobody can
//! change once the producer has sealed it (`F_SEAL_SHRINK | F_SEAL_GROW |
//! F_SEAL_SEAL`), so no peer can `ftruncate` it and kill the others with
//! `SIGBUS` — not even through `/proc/PID/fd/N`. It has no name in any
//! filesystem: it reaches consumers as a file descriptor over a Unix socket
//! ([`super::socket`]), and its memory is freed when the last process holding
//! it closes it (nothing is left behind by a crash).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{self as rfs, MemfdFlags, Mode, OFlags, SealFlags};
use rustix::io::Errno;

use super::map::{reserve_fallocate, Access, MapOptions};
use super::name::ChannelName;
use crate::error::{from_errno, Error, Result};

/// The seals every bips memfd carries: its size is fixed for good.
pub(crate) const SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::SEAL);

/// Creates a memfd of `len` bytes, memory reserved (a full tmpfs is
/// [`Error::NoSpace`] now, not `SIGBUS` later), and seals its size.
pub(crate) fn create(name: &ChannelName, len: usize, map: &MapOptions) -> Result<OwnedFd> {
    let bytes = len as u64;
    let label = format!("bips.{}", name.as_str());
    let base = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    // Never executable (and so allowed under `vm.memfd_noexec = 2`); the
    // flag exists since Linux 6.3: older kernels answer EINVAL.
    let fd = match rfs::memfd_create(&label, base | MemfdFlags::NOEXEC_SEAL) {
        Err(Errno::INVAL) => rfs::memfd_create(&label, base),
        r => r,
    }
    .map_err(|e| from_errno("memfd_create", name.as_str(), bytes, e))?;
    rfs::ftruncate(&fd, bytes).map_err(|e| from_errno("ftruncate", name.as_str(), bytes, e))?;
    if !map.huge_pages {
        reserve_fallocate(fd.as_fd(), name, bytes)?;
    }
    rfs::fcntl_add_seals(&fd, SEALS)
        .map_err(|e| from_errno("fcntl(F_ADD_SEALS)", name.as_str(), bytes, e))?;
    Ok(fd)
}

/// Checks a memfd received from a peer before it is mapped: its size must be
/// sealed (else any holder could shrink it under us) and equal to what the
/// peer announced. Returns the size.
pub(crate) fn check(fd: BorrowedFd<'_>, name: &ChannelName, announced: u64) -> Result<usize> {
    let seals = rfs::fcntl_get_seals(fd).map_err(|e| match e {
        // Not a memfd (or a file system without seals).
        Errno::INVAL => refused(name, "the file descriptor it sent is not a memfd"),
        e => from_errno("fcntl(F_GET_SEALS)", name.as_str(), 0, e),
    })?;
    if !seals.contains(SealFlags::SHRINK | SealFlags::GROW) {
        return Err(refused(
            name,
            "its memfd is not sealed against resizing (F_SEAL_SHRINK | F_SEAL_GROW): any peer \
             could truncate it",
        ));
    }
    let st = rfs::fstat(fd).map_err(|e| from_errno("fstat", name.as_str(), 0, e))?;
    let size = u64::try_from(st.st_size).unwrap_or(0);
    if size != announced || size == 0 {
        return Err(refused(
            name,
            &format!("its memfd is {size} bytes, the producer announced {announced}"),
        ));
    }
    usize::try_from(size)
        .ok()
        .filter(|&n| n <= isize::MAX as usize)
        .ok_or_else(|| refused(name, "its memfd is larger than this address space"))
}

/// Opens the memfd behind `fd` anew (`/proc/self/fd/N`): a new open file
/// description, so the liveness locks this process takes are its own. A
/// descriptor received over a socket shares the sender's open file
/// description, and OFD locks belong to the description: through it, our
/// locks would be the producer's.
pub(crate) fn reopen(fd: BorrowedFd<'_>, name: &ChannelName, access: Access) -> Result<OwnedFd> {
    let mode = match access {
        Access::ReadWrite => OFlags::RDWR,
        Access::ReadOnly => OFlags::RDONLY,
    };
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    rfs::open(&path, mode | OFlags::CLOEXEC, Mode::empty()).map_err(|e| match e {
        Errno::NOENT => Error::Io {
            op: "open",
            name: name.as_str().to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "/proc is not mounted: memfd channels need it to open the segment anew",
            ),
        },
        e => from_errno("open(/proc/self/fd)", name.as_str(), 0, e),
    })
}

/// Opens memfd channel `name` served in socket directory `dir`: fetches the
/// fd, lets `trust` judge the server's uid (T2; monitoring passes `None`),
/// checks the seals and the size, opens it anew (our own open file
/// description, for our own locks) and maps it with `access`. Returns the
/// segment and the producer's uid.
pub(crate) fn open_served(
    dir: &std::path::Path,
    name: &ChannelName,
    trust: Option<&crate::trust::OwnerPolicy>,
    map: &MapOptions,
    access: Access,
) -> Result<(super::shm::Segment, u32)> {
    let got = super::socket::fetch(dir, name)?;
    if let Some(policy) = trust {
        policy.check(name, got.uid)?;
    }
    let len = check(got.fd.as_fd(), name, got.size)?;
    let fd = reopen(got.fd.as_fd(), name, access)?;
    drop(got.fd);
    let seg = super::shm::Segment::from_memfd(fd, len, name, map, false, access)?;
    Ok((seg, got.uid))
}

/// A peer's memfd that this process refuses to map.
fn refused(name: &ChannelName, why: &str) -> Error {
    Error::Io {
        op: "check memfd",
        name: name.as_str().to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("refused the channel's segment: {why}"),
        ),
    }
}
