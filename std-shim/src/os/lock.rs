//! Liveness locks without PIDs: Linux open-file-description (OFD) byte-range locks.
//!
//! A process proves it is alive by holding an exclusive `F_OFD_SETLK` write lock
//! on one byte of the channel's shared-memory object; anyone can ask whether that
//! byte is locked with `F_OFD_GETLK`. The convention of the caller (the API
//! layer) is: byte 0 = the producer, byte `1 + i` = consumer table entry `i`.
//!
//! Why OFD locks:
//!
//! * The lock belongs to the *open file description* (what `open`/`shm_open`
//!   returned, shared by `dup` and inherited by `fork`), not to a PID. The kernel
//!   drops it when the last reference to that description goes away: when the
//!   last fd is closed **and** the last `mmap` of it is unmapped, which happens
//!   when the process exits for any reason, `kill -9` included. No PID is
//!   involved, so it works across PID namespaces (containers sharing
//!   `/dev/shm`), and a recycled PID can never make a dead peer look alive.
//! * Two descriptions conflict even inside one process (unlike classic POSIX
//!   `F_SETLK` locks, which are per process and vanish when *any* fd of the file
//!   is closed). Re-locking through the same description succeeds (it already
//!   owns the lock).
//! * Locking byte offsets beyond the end of the file is allowed; the object need
//!   not be large enough to "contain" the byte.
//!
//! Caveat: a child made by `fork` (without `exec`) shares the parent's open
//! file descriptions, so it keeps the parent's locks alive until it exits or
//! closes/unmaps them. `shm_open` sets `O_CLOEXEC`, so `exec` drops the fd, and
//! `exec` drops the mappings.
//!
//! `fd` must be open for writing (`O_RDWR`) to take a write lock (`EBADF`
//! otherwise).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

// `libc::flock` with a 64-bit `off_t` is what `F_OFD_*` expect; on the 32-bit
// ABIs it is not (they need `flock64`/`fcntl64`). bips targets 64-bit Linux.
const _: () = assert!(
    core::mem::size_of::<libc::off_t>() == 8,
    "bips' OFD locks need a 64-bit off_t (64-bit Linux)"
);

fn flock_for(byte: u64, l_type: libc::c_int) -> io::Result<libc::flock> {
    flock_range(byte, 1, l_type)
}

fn flock_range(byte: u64, len: u64, l_type: libc::c_int) -> io::Result<libc::flock> {
    let start = libc::off_t::try_from(byte)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "lock offset exceeds off_t"))?;
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "lock length exceeds off_t"))?;
    // SAFETY: `libc::flock` is a plain C struct of integers (and, on some
    // ABIs, padding), for which all-zero bytes are a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = l_type as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = len;
    // Must be 0 for OFD locks (EINVAL otherwise); set by `zeroed` already.
    fl.l_pid = 0;
    Ok(fl)
}

fn fcntl_lock(fd: BorrowedFd<'_>, cmd: libc::c_int, fl: &mut libc::flock) -> io::Result<()> {
    loop {
        // SAFETY: `fd` is a valid open descriptor for the duration of the call
        // (it is borrowed), `cmd` is one of the F_OFD_* commands, which take a
        // pointer to a `struct flock`, and `fl` is a valid, exclusive
        // `&mut libc::flock` the kernel may read and write.
        let r = unsafe { libc::fcntl(fd.as_raw_fd(), cmd, fl as *mut libc::flock) };
        if r != -1 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Tries to take the exclusive (write) OFD lock on the single byte at offset
/// `byte` of `fd`'s file, without blocking.
///
/// `Ok(true)`: this open file description holds the lock now (also when it
/// already did). `Ok(false)`: another open file description holds a
/// conflicting lock (`EAGAIN`/`EACCES`), in this process or another.
pub fn try_lock(fd: BorrowedFd<'_>, byte: u64) -> io::Result<bool> {
    let mut fl = flock_for(byte, libc::F_WRLCK)?;
    match fcntl_lock(fd, libc::F_OFD_SETLK, &mut fl) {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Releases this open file description's lock on byte `byte` (no error if it
/// held none).
pub fn unlock(fd: BorrowedFd<'_>, byte: u64) -> io::Result<()> {
    let mut fl = flock_for(byte, libc::F_UNLCK)?;
    fcntl_lock(fd, libc::F_OFD_SETLK, &mut fl)
}

/// Whether *another* open file description (of any process) holds a lock on
/// byte `byte` that conflicts with a write lock.
///
/// Locks held through `fd`'s own open file description do not count. The answer
/// may be stale as soon as it is returned: a holder may die, or a new one lock,
/// right after; use it for liveness checks, not for mutual exclusion.
pub fn is_locked_by_other(fd: BorrowedFd<'_>, byte: u64) -> io::Result<bool> {
    let mut fl = flock_for(byte, libc::F_WRLCK)?;
    fcntl_lock(fd, libc::F_OFD_GETLK, &mut fl)?;
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

/// Whether another open file description holds a lock on any byte of
/// `start..start + len` (one `F_OFD_GETLK` for the whole range). Like
/// [`is_locked_by_other`], a liveness answer, not mutual exclusion. Works on
/// a read-only fd.
pub fn is_range_locked_by_other(fd: BorrowedFd<'_>, start: u64, len: u64) -> io::Result<bool> {
    let mut fl = flock_range(start, len, libc::F_WRLCK)?;
    fcntl_lock(fd, libc::F_OFD_GETLK, &mut fl)?;
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os::shm::test_util::{unique_name, Cleanup};
    use crate::os::shm::{MapOptions, Segment};
    use std::os::fd::AsFd;

    #[test]
    #[cfg_attr(miri, ignore)]
    fn two_descriptions_exclude_each_other() {
        let name = unique_name("lock");
        let _cleanup = Cleanup(name.clone());
        let a = Segment::create(&name, 4096, 0o600, &MapOptions::default())
            .unwrap()
            .unwrap();
        let b = Segment::open(&name, &MapOptions::default()).unwrap();

        // Nobody holds anything yet.
        assert!(!is_locked_by_other(a.fd(), 0).unwrap());
        assert!(!is_locked_by_other(b.fd(), 0).unwrap());

        assert!(try_lock(a.fd(), 0).unwrap());
        assert!(
            try_lock(a.fd(), 0).unwrap(),
            "re-lock by the owner succeeds"
        );
        assert!(!try_lock(b.fd(), 0).unwrap());
        assert!(is_locked_by_other(b.fd(), 0).unwrap());
        assert!(
            !is_locked_by_other(a.fd(), 0).unwrap(),
            "own lock is not 'other'"
        );

        // Bytes are independent, and bytes beyond EOF (4096) can be locked.
        assert!(try_lock(b.fd(), 1).unwrap());
        assert!(try_lock(b.fd(), 1 << 40).unwrap());
        assert!(is_locked_by_other(a.fd(), 1 << 40).unwrap());
        assert!(!is_locked_by_other(a.fd(), 2).unwrap());
        // A range query sees any lock inside it, and only inside it.
        assert!(is_range_locked_by_other(a.fd(), 1, 1024).unwrap());
        assert!(!is_range_locked_by_other(a.fd(), 2, 1024).unwrap());
        assert!(is_range_locked_by_other(a.fd(), 2, 1 << 41).unwrap());

        // Explicit unlock.
        unlock(b.fd(), 1 << 40).unwrap();
        assert!(!is_locked_by_other(a.fd(), 1 << 40).unwrap());
        unlock(b.fd(), 12345).unwrap(); // not held: fine

        // Closing the last reference (fd + mapping) of `a`'s description
        // releases its lock: this is how a dead process is detected.
        drop(a);
        assert!(!is_locked_by_other(b.fd(), 0).unwrap());
        assert!(try_lock(b.fd(), 0).unwrap());
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn dup_shares_the_description() {
        let name = unique_name("lockdup");
        let _cleanup = Cleanup(name.clone());
        let a = Segment::create(&name, 4096, 0o600, &MapOptions::default())
            .unwrap()
            .unwrap();
        let b = Segment::open(&name, &MapOptions::default()).unwrap();
        assert!(try_lock(a.fd(), 0).unwrap());
        // A dup'ed fd is the same description: it owns the lock too, and
        // closing it does not release the lock (unlike classic POSIX locks).
        let dup = a.fd().try_clone_to_owned().unwrap();
        assert!(try_lock(dup.as_fd(), 0).unwrap());
        drop(dup);
        assert!(is_locked_by_other(b.fd(), 0).unwrap());
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn a_mapping_keeps_the_description_and_its_lock_alive() {
        use rustix::mm::{self, MapFlags, ProtFlags};
        let name = unique_name("lockmap");
        let _cleanup = Cleanup(name.clone());
        let owner = Segment::create(&name, 4096, 0o600, &MapOptions::default())
            .unwrap()
            .unwrap();
        // A second description, locked, then mapped, then its fd closed.
        let fd = rustix::shm::open(name.shm_name(), rustix::shm::OFlags::RDWR, 0.into()).unwrap();
        assert!(try_lock(fd.as_fd(), 3).unwrap());
        // SAFETY: null hint, valid fd of a 4096-byte object, non-zero length.
        let p = unsafe {
            mm::mmap(
                std::ptr::null_mut(),
                4096,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )
        }
        .unwrap();
        drop(fd);
        // The mapping still references the open file description: locked.
        assert!(is_locked_by_other(owner.fd(), 3).unwrap());
        // SAFETY: `p` is the 4096-byte mapping made above, used by nobody else.
        unsafe { mm::munmap(p, 4096) }.unwrap();
        // Last reference gone: the lock is released.
        assert!(!is_locked_by_other(owner.fd(), 3).unwrap());
    }
}
