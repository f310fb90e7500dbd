//! Mapping a shared-memory object: `mmap` of its fd, whole and `MAP_SHARED`,
//! with the [`MapOptions`] (prefault, `mlock`, huge pages), unmapped on drop.
//! Every segment backend maps through here.

use std::os::fd::BorrowedFd;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU8, Ordering};

use rustix::fs::{self as rfs, FallocateFlags};
use rustix::io::Errno;
use rustix::mm::{self, Advice, MapFlags, ProtFlags};

use super::name::ChannelName;
use super::shm::page_size;
use crate::error::{from_errno, Error, Result};

/// How a segment is mapped. `Default`: all off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapOptions {
    /// Fault every page in at map time (`MAP_POPULATE`), so the first touch of
    /// a buffer on the hot path does not page-fault.
    pub prefault: bool,
    /// `mlock` the whole mapping, so it is never paged out (to swap) or faulted
    /// lazily. Needs `RLIMIT_MEMLOCK` (`ulimit -l`) at least the segment size, or
    /// `CAP_IPC_LOCK`; otherwise opening fails with [`Error::InvalidOptions`]
    /// saying so. Implies faulting every page in.
    pub mlock: bool,
    /// Ask for transparent huge pages (2 MiB on x86-64 and on 4 KiB-page aarch64).
    ///
    /// `shm_open` objects live on the tmpfs mounted at `/dev/shm`, where
    /// `MAP_HUGETLB` does not apply (it is for hugetlbfs and anonymous memory).
    /// Instead the mapping gets `madvise(MADV_HUGEPAGE)`, and tmpfs backs it
    /// with huge pages when the **`/dev/shm` mount** allows it: mount option
    /// `huge=advise` (e.g. `mount -o remount,huge=advise /dev/shm`; `always` and
    /// `within_size` use huge pages even without this flag). The default
    /// `/dev/shm` mount has no `huge=` option, i.e. `never`. Note that
    /// `/sys/kernel/mm/transparent_hugepage/shmem_enabled` governs only the
    /// kernel's internal shmem mount (SysV shm, `memfd`, shared anonymous
    /// memory); for `/dev/shm` it matters only as the overrides `force` (huge
    /// pages on every tmpfs) and `deny` (off everywhere). Whenever huge pages
    /// are not allowed, or the kernel lacks transparent huge pages (`madvise`
    /// answers `EINVAL`, which is ignored), the segment silently uses normal
    /// pages. Only the huge-page-aligned, fully covered parts of the segment can
    /// use huge pages. Check with `grep PmdMapped /proc/<pid>/smaps`.
    ///
    /// When bips creates the segment with this flag, it allocates the memory
    /// through the advised mapping (`MADV_POPULATE_WRITE`, Linux 5.14+) rather
    /// than with `fallocate`: under `huge=advise`, pages allocated by
    /// `fallocate` (which knows no mapping) would be small ones.
    pub huge_pages: bool,
}

/// How an existing object is opened (and, once mapped, protected).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Access {
    /// `O_RDWR`, mapped `PROT_READ | PROT_WRITE`: producers and consumers.
    /// Needed to take a liveness lock (a write lock needs a writable fd).
    #[default]
    ReadWrite,
    /// `O_RDONLY`, mapped `PROT_READ`: monitoring (`bips list`/`inspect`).
    /// Enough to read the region's atomics and to ask who holds which lock
    /// (`F_OFD_GETLK`), not to take a lock.
    ReadOnly,
}

/// A live mapping of a whole object; unmapped on drop. Pointers from
/// [`Mapping::as_ptr`] must not be used after it is dropped.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// Maps `fd` (an object of at least `len` bytes, `len > 0`) whole,
    /// `MAP_SHARED`, with the protection of `access`, and applies `opts`.
    /// `created`: the object is new and its memory still has to be reserved
    /// if [`MapOptions::huge_pages`] is set.
    pub(crate) fn new(
        fd: BorrowedFd<'_>,
        len: usize,
        name: &ChannelName,
        opts: &MapOptions,
        created: bool,
        access: Access,
    ) -> Result<Mapping> {
        let bytes = len as u64;
        let prot = match access {
            Access::ReadWrite => ProtFlags::READ | ProtFlags::WRITE,
            Access::ReadOnly => ProtFlags::READ,
        };
        let mut flags = MapFlags::SHARED;
        // With huge pages, populate only after MADV_HUGEPAGE, or the pages
        // faulted in now would be small ones.
        if opts.prefault && !opts.huge_pages {
            flags |= MapFlags::POPULATE;
        }
        // SAFETY: a null address lets the kernel choose a fresh range, so no
        // existing memory of this process is replaced; `fd` is a valid open
        // descriptor of an object at least `len` bytes long (we sized it, or
        // fstat said so), and `len` is non-zero.
        let p = unsafe { mm::mmap(ptr::null_mut(), len, prot, flags, fd, 0) };
        let p = p.map_err(|e| from_errno("mmap", name.as_str(), bytes, e))?;
        let Some(ptr) = NonNull::new(p.cast::<u8>()) else {
            // mmap never returns null for a non-MAP_FIXED success; be safe anyway.
            return Err(Error::Io {
                op: "mmap",
                name: name.as_str().to_owned(),
                source: std::io::Error::other("mmap returned a null address"),
            });
        };
        // From here on, dropping `m` (on error) unmaps.
        let m = Mapping { ptr, len };
        m.apply(fd, name, opts, created, access)?;
        Ok(m)
    }

    /// The `madvise`/populate/`mlock` steps after `mmap`.
    fn apply(
        &self,
        fd: BorrowedFd<'_>,
        name: &ChannelName,
        opts: &MapOptions,
        created: bool,
        access: Access,
    ) -> Result<()> {
        let channel = name;
        let name = channel.as_str();
        let bytes = self.len as u64;
        if opts.huge_pages {
            // SAFETY: the range is exactly our live mapping; MADV_HUGEPAGE only
            // changes how the kernel backs it, never its contents.
            match unsafe { mm::madvise(self.ptr.as_ptr().cast(), self.len, Advice::LinuxHugepage) }
            {
                // EINVAL: kernel built without transparent huge pages.
                Ok(()) | Err(Errno::INVAL) => {}
                Err(e) => return Err(from_errno("madvise(MADV_HUGEPAGE)", name, bytes, e)),
            }
            if access == Access::ReadOnly {
                // MADV_POPULATE_WRITE needs a writable mapping; a reader
                // faults the pages in by reading them.
                if opts.prefault {
                    self.touch_pages();
                }
            } else if created || opts.prefault {
                // SAFETY: the range is exactly our live mapping;
                // MADV_POPULATE_WRITE faults pages in as a write would, without
                // changing any byte.
                let r = unsafe {
                    mm::madvise(
                        self.ptr.as_ptr().cast(),
                        self.len,
                        Advice::LinuxPopulateWrite,
                    )
                };
                match r {
                    Ok(()) => {}
                    // Linux < 5.14: no MADV_POPULATE_WRITE.
                    Err(Errno::INVAL) => {
                        if created {
                            reserve_fallocate(fd, channel, bytes)?;
                        }
                        if opts.prefault {
                            self.touch_pages();
                        }
                    }
                    // EFAULT: a page could not be allocated (it would SIGBUS),
                    // i.e. the tmpfs is full.
                    Err(Errno::FAULT) | Err(Errno::NOMEM) | Err(Errno::NOSPC) => {
                        return Err(Error::NoSpace {
                            name: name.to_owned(),
                            bytes,
                        })
                    }
                    Err(e) => {
                        return Err(from_errno("madvise(MADV_POPULATE_WRITE)", name, bytes, e))
                    }
                }
            }
        }
        if opts.mlock {
            // SAFETY: the range is exactly our live mapping; mlock changes
            // residency only.
            match unsafe { mm::mlock(self.ptr.as_ptr().cast(), self.len) } {
                Ok(()) => {}
                Err(Errno::NOMEM) | Err(Errno::PERM) => {
                    return Err(Error::InvalidOptions(format!(
                        "mlock of channel {name:?} ({bytes} bytes) refused: it exceeds \
                         RLIMIT_MEMLOCK (`ulimit -l`; in Docker `--ulimit memlock=-1`) \
                         and the process lacks CAP_IPC_LOCK; raise the limit or turn \
                         mlock off"
                    )))
                }
                Err(e) => return Err(from_errno("mlock", name, bytes, e)),
            }
        }
        Ok(())
    }

    /// Reads one byte of every page, faulting each in (fallback prefault).
    fn touch_pages(&self) {
        let page = page_size();
        let mut off = 0;
        while off < self.len {
            // SAFETY: `off < len`, so the byte is inside our live mapping, which
            // is readable; `AtomicU8` has alignment 1, and an atomic load is
            // sound even while other processes write that byte.
            let b = unsafe { &*self.ptr.as_ptr().add(off).cast::<AtomicU8>() };
            b.load(Ordering::Relaxed);
            off += page;
        }
    }

    /// Makes bytes `from..len` of the mapping read-only (`PROT_READ`), so
    /// that this process cannot write them (a write faults). Only when `from`
    /// is page-aligned (protection is per page); returns whether it did.
    pub(crate) fn protect_read_only_from(&self, from: usize) -> std::io::Result<bool> {
        if from >= self.len || from % page_size() != 0 {
            return Ok(false);
        }
        // SAFETY: the range lies inside our live mapping (checked above) and
        // starts on a page boundary; removing write permission changes no
        // byte. Nothing of this process writes that range afterwards: the
        // caller maps it for reading only (a consumer's payload).
        unsafe {
            mm::mprotect(
                self.ptr.as_ptr().add(from).cast(),
                self.len - from,
                mm::MprotectFlags::READ,
            )
        }?;
        Ok(true)
    }

    /// Start of the mapping (page-aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes; never 0.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping `new` made, which nothing
        // else unmaps; pointers from `as_ptr` must not outlive `self`
        // (documented on the owning segment).
        let _ = unsafe { mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Allocates the object's pages now, so a full tmpfs is `NoSpace` here rather
/// than `SIGBUS` on first touch. Filesystems without `fallocate` are skipped.
pub(crate) fn reserve_fallocate(fd: BorrowedFd<'_>, name: &ChannelName, bytes: u64) -> Result<()> {
    loop {
        match rfs::fallocate(fd, FallocateFlags::empty(), 0, bytes) {
            Ok(()) | Err(Errno::OPNOTSUPP) | Err(Errno::NOSYS) => return Ok(()),
            // tmpfs gives up a large allocation when a signal arrives.
            Err(Errno::INTR) => continue,
            Err(e) => return Err(from_errno("fallocate", name.as_str(), bytes, e)),
        }
    }
}
