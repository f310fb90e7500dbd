//! POSIX shared-memory segments: one `/dev/shm/bips.<name>` object per channel,
//! mapped whole, `MAP_SHARED`, read + write.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use rustix::fs::{self as rfs, FileType, Mode};
use rustix::io::Errno;
use rustix::shm;

// Re-exported here so that existing `os::shm::…` paths (and the crate's
// public `bips::list_channels`) stay as they were before the splits.
pub use super::dir::list_channels;
pub(crate) use super::dir::staged_objects;
pub(crate) use super::map::reserve_fallocate;
use super::map::Mapping;
pub use super::map::{Access, MapOptions};
pub(crate) use super::name::ChannelName;
use super::name::{SHM_DIR, STAGING_PREFIX};
use crate::error::{from_errno, from_io, Error, Result};
use crate::options::Backend;
use crate::trust::OwnerPolicy;

/// The segment already exists (`EEXIST` from `shm_open(O_CREAT | O_EXCL)`).
///
/// Returned by [`Segment::create`] as `Ok(Err(Exists))`, so that the caller can
/// decide (is its producer alive? if not, unlink and retry) while real errors
/// still propagate with `?`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exists;

/// A whole shared-memory object, mapped `MAP_SHARED` read + write.
///
/// Opened [`Access::ReadOnly`] (see [`Object`]), the mapping is `PROT_READ`:
/// writing through [`as_ptr`](Self::as_ptr) then faults.
///
/// Unmapped on drop; the fd is closed by its `OwnedFd`. Pointers obtained from
/// [`as_ptr`](Self::as_ptr) must not be used after the `Segment` is dropped.
///
/// Limitation: a process allowed to write the object could `ftruncate` it
/// smaller; touching the lost pages would then raise `SIGBUS` here. POSIX shm
/// objects cannot be sealed against that (only `memfd`s can), so only give
/// write access (the `mode` of [`create`](Self::create)) to trusted users.
pub struct Segment {
    // Declared before `fd` for clarity; unmapping needs no open fd.
    map: Mapping,
    fd: OwnedFd,
    name: ChannelName,
    /// While made by [`Segment::create_staged`] and not yet
    /// [`published`](Segment::publish): the object's staging name (unlinked
    /// on drop).
    staged: Option<String>,
    /// Whether the mapping may be written ([`Access::ReadOnly`]: `PROT_READ`).
    access: Access,
    /// Where the segment lives: a `/dev/shm` object, or a sealed memfd
    /// without a name (served over a socket, see [`super::socket`]).
    backend: Backend,
}

/// What [`Segment::publish`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// The object now has the channel's name.
    Done,
    /// Another object has the channel's name; ours keeps its staging name.
    Exists,
    /// Our staging name was removed by someone else (`bips clean` in the
    /// instant between creating and locking it): start over.
    Vanished,
}

// SAFETY: `Segment` owns its fd and mapping; the mapping is plain shared memory
// with no thread affinity, so it may be unmapped (dropped) on any thread.
unsafe impl Send for Segment {}
// SAFETY: `&Segment` only hands out the raw pointer, the length, the fd and the
// name. Any access through the pointer is raw and already shared with other
// processes; synchronising it is the protocol's job (atomics in bips-core).
unsafe impl Sync for Segment {}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("name", &self.name)
            .field("map", &self.map)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

impl Segment {
    /// Creates `/dev/shm/bips.<name>` with exactly `mode` (the umask does not
    /// apply), sized `len` bytes, memory reserved, and maps it.
    ///
    /// * `Ok(Ok(segment))`: created and mapped; its bytes are all zero.
    /// * `Ok(Err(Exists))`: an object of that name exists; nothing changed.
    /// * `Err(_)`: anything else. [`Error::NoSpace`] when tmpfs cannot hold
    ///   `len` bytes. On error the half-made object is removed again.
    ///
    /// The memory is reserved up front (`fallocate`, or `MADV_POPULATE_WRITE`
    /// with [`MapOptions::huge_pages`]): `ftruncate` alone succeeds on a tmpfs
    /// far too small (the file is sparse) and the first touch of a missing page
    /// would then kill the process with `SIGBUS`. A full `/dev/shm` is thus an
    /// error here, not a crash later.
    ///
    /// `mode` holds permission bits only (`0o777` at most) and must grant the
    /// owner read and write (`0o600`). Consumers open the object read + write,
    /// so e.g. `0o660` lets the owner's group consume.
    pub fn create(
        name: &ChannelName,
        len: usize,
        mode: u32,
        map: &MapOptions,
    ) -> Result<std::result::Result<Segment, Exists>> {
        if len == 0 {
            return Err(Error::InvalidOptions(format!(
                "channel {name}: a segment cannot be empty (0 bytes)"
            )));
        }
        if len > isize::MAX as usize {
            return Err(Error::InvalidOptions(format!(
                "channel {name}: segment size {len} bytes exceeds isize::MAX"
            )));
        }
        if mode & !0o777 != 0 {
            return Err(Error::InvalidOptions(format!(
                "mode {mode:#o}: only permission bits (0o777 at most) are allowed"
            )));
        }
        if mode & 0o600 != 0o600 {
            return Err(Error::InvalidOptions(format!(
                "mode {mode:#o} must grant the owner read and write (0o600)"
            )));
        }
        let bytes = len as u64;
        let flags = shm::OFlags::CREATE
            | shm::OFlags::EXCL
            | shm::OFlags::RDWR
            // Never follow a symlink planted in the world-writable /dev/shm
            // (glibc's shm_open adds this too; rustix's raw backend does not).
            | shm::OFlags::from_bits_retain(rfs::OFlags::NOFOLLOW.bits());
        let fd = match shm::open(name.shm_name(), flags, Mode::from_bits_retain(mode)) {
            Ok(fd) => fd,
            Err(Errno::EXIST) => return Ok(Err(Exists)),
            Err(e) => return Err(from_errno("shm_open", name.as_str(), bytes, e)),
        };
        // Identity of our object, so a failed create never removes someone
        // else's newer object of the same name.
        let id = file_id(fd.as_fd());
        let r = Self::init_created(fd.as_fd(), name, len, mode, map)
            .and_then(|()| Self::map(fd, len, name.clone(), map, true));
        match r {
            Ok(seg) => Ok(Ok(seg)),
            Err(e) => {
                unlink_if_same(id, name);
                Err(e)
            }
        }
    }

    /// Like [`Segment::create`], but under a fresh staging name
    /// (`/dev/shm/bips..new-<pid>-<n>`) that no channel can have; the object
    /// takes the channel's name only at [`Segment::publish`]. Until then it
    /// is invisible to consumers and to `bips clean`'s channel scan, and
    /// dropping the segment removes it.
    pub fn create_staged(
        name: &ChannelName,
        len: usize,
        mode: u32,
        map: &MapOptions,
    ) -> Result<Segment> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        for _ in 0..1000 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let staged = format!("{STAGING_PREFIX}{}-{n}", std::process::id());
            // Validated as a channel name minus its leading '.', so it is a
            // single path component of the allowed characters.
            let tmp = ChannelName::from_shm_name_unchecked(staged.clone());
            match Self::create(&tmp, len, mode, map).map_err(|e| e.renamed(name.as_str()))? {
                Ok(mut seg) => {
                    seg.name = name.clone();
                    seg.staged = Some(staged);
                    return Ok(seg);
                }
                // A leftover of a dead process that had our pid: next number.
                Err(Exists) => continue,
            }
        }
        Err(Error::Io {
            op: "shm_open",
            name: name.as_str().to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "1000 staging names /dev/shm/{STAGING_PREFIX}{}-* in a row exist; \
                     remove the leftovers with `bips clean`",
                    std::process::id()
                ),
            ),
        })
    }

    /// Gives a staged object (from [`Segment::create_staged`]) the channel's
    /// name, atomically and never over an existing object
    /// (`renameat2(RENAME_NOREPLACE)`; on a kernel or filesystem without it,
    /// `link` + `unlink`, which never replace either). A no-op answering
    /// [`Publish::Done`] once published.
    pub fn publish(&mut self) -> Result<Publish> {
        let Some(staged) = self.staged.as_deref() else {
            return Ok(Publish::Done);
        };
        let from = PathBuf::from(SHM_DIR).join(staged);
        let to = self.name.path();
        let r =
            match rfs::renameat_with(rfs::CWD, &from, rfs::CWD, &to, rfs::RenameFlags::NOREPLACE) {
                Err(Errno::INVAL) | Err(Errno::NOSYS) => rfs::link(&from, &to).map(|()| {
                    let _ = rfs::unlink(&from);
                }),
                r => r,
            };
        match r {
            Ok(()) => {
                self.staged = None;
                Ok(Publish::Done)
            }
            Err(Errno::EXIST) => Ok(Publish::Exists),
            Err(Errno::NOENT) => Ok(Publish::Vanished),
            Err(e) => Err(from_errno(
                "rename",
                self.name.as_str(),
                self.len() as u64,
                e,
            )),
        }
    }

    /// Sets the exact mode and the size, and reserves the memory unless the
    /// mapping will (huge pages).
    fn init_created(
        fd: BorrowedFd<'_>,
        name: &ChannelName,
        len: usize,
        mode: u32,
        map: &MapOptions,
    ) -> Result<()> {
        let bytes = len as u64;
        // The umask applied at creation; make the mode exactly what was asked.
        rfs::fchmod(fd, Mode::from_bits_retain(mode))
            .map_err(|e| from_errno("fchmod", name.as_str(), bytes, e))?;
        rfs::ftruncate(fd, bytes).map_err(|e| from_errno("ftruncate", name.as_str(), bytes, e))?;
        if !map.huge_pages {
            reserve_fallocate(fd, name, bytes)?;
        }
        Ok(())
    }

    /// Opens the existing `/dev/shm/bips.<name>` read + write and maps all of it.
    ///
    /// [`Error::NotFound`] when it does not exist, [`Error::PermissionDenied`]
    /// when its mode does not let this user read and write it. An object of
    /// size 0 (its creator has not sized it yet, or died doing so), one larger
    /// than the address space, or one that is not a regular file gives
    /// [`Error::Io`] with [`std::io::ErrorKind::InvalidData`].
    ///
    /// The same as [`Object::open`] with [`Access::ReadWrite`], then
    /// [`Object::map`].
    ///
    /// Whoever owns the object: for tests. Consumers and producers use
    /// [`Segment::open_trusted`], monitoring [`Object::open`].
    #[cfg(test)]
    pub fn open(name: &ChannelName, map: &MapOptions) -> Result<Segment> {
        Object::open(name, Access::ReadWrite)?.into_segment(map)
    }

    /// Like [`Segment::open`], but first [`Error::UntrustedOwner`] unless
    /// `owner` trusts the object's owner (T2, see [`crate::trust`]); checked
    /// before anything is mapped.
    pub fn open_trusted(
        name: &ChannelName,
        map: &MapOptions,
        owner: &OwnerPolicy,
    ) -> Result<Segment> {
        let obj = Object::open(name, Access::ReadWrite)?;
        owner.check(name, obj.owner_uid())?;
        obj.into_segment(map)
    }

    /// Maps `fd` whole and applies `opts`. `created`: the object is new and its
    /// memory still has to be reserved if [`MapOptions::huge_pages`] is set.
    fn map(
        fd: OwnedFd,
        len: usize,
        name: ChannelName,
        opts: &MapOptions,
        created: bool,
    ) -> Result<Segment> {
        Self::map_with(fd, len, name, opts, created, Access::ReadWrite)
    }

    /// [`Segment::map`] with the mapping's protection given by `access`.
    fn map_with(
        fd: OwnedFd,
        len: usize,
        name: ChannelName,
        opts: &MapOptions,
        created: bool,
        access: Access,
    ) -> Result<Segment> {
        let map = Mapping::new(fd.as_fd(), len, &name, opts, created, access)?;
        Ok(Segment {
            map,
            fd,
            name,
            staged: None,
            access,
            backend: Backend::Shm,
        })
    }

    /// Maps a sealed memfd (see [`super::memfd`]) of `len` bytes as channel
    /// `name`'s segment. `created`: made by this process just now.
    pub fn from_memfd(
        fd: OwnedFd,
        len: usize,
        name: &ChannelName,
        opts: &MapOptions,
        created: bool,
        access: Access,
    ) -> Result<Segment> {
        let mut seg = Self::map_with(fd, len, name.clone(), opts, created, access)?;
        seg.backend = Backend::Memfd;
        Ok(seg)
    }

    /// Where the segment lives.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Removes `/dev/shm/bips.<name>`. A missing object is not an error.
    ///
    /// Processes that have it open or mapped keep using it; the name is free
    /// for a new object at once.
    ///
    /// Not for replacing or cleaning a channel: that is T1's job (lock, then
    /// [`Object::unlink_if_same`]). Tests use this to clean up.
    #[allow(dead_code)]
    pub fn unlink(name: &ChannelName) -> Result<()> {
        match shm::unlink(name.shm_name()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(from_errno("shm_unlink", name.as_str(), 0, e)),
        }
    }

    /// Start of the mapping (page-aligned). Valid while `self` lives.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }

    /// Length of the mapping in bytes (the object's size); never 0.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Unlinks the name only if it still names this very object (not one
    /// created anew under the same name since we opened it). Returns whether
    /// it did.
    pub fn unlink_if_same(&self) -> bool {
        // A memfd has no name to remove (its socket is its server's).
        self.backend == Backend::Shm && unlink_if_same_reporting(self.fd.as_fd(), &self.name)
    }

    /// Makes the mapping read-only from byte `from` on (a consumer's view
    /// of the payload), when `from` is page-aligned; returns whether it did.
    pub fn protect_read_only_from(&self, from: usize) -> Result<bool> {
        self.map
            .protect_read_only_from(from)
            .map_err(|e| from_io("mprotect", self.name.as_str(), self.len() as u64, e))
    }

    /// The object's fd (for [`lock`](super::lock) and `fstat`).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The channel name.
    pub fn name(&self) -> &ChannelName {
        &self.name
    }
}

/// An existing `/dev/shm/bips.<name>` opened but not mapped: enough to take
/// or query its locks (locks need no mapping), read its size, and unlink
/// exactly this object. Unlike a [`Segment`] it may be empty or garbage, so
/// it is what a process uses to find out whether a broken object is dead.
pub struct Object {
    fd: OwnedFd,
    name: ChannelName,
    size: u64,
    access: Access,
    /// `st_uid` when opened.
    owner: u32,
}

impl fmt::Debug for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Object")
            .field("name", &self.name)
            .field("size", &self.size)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

impl Object {
    /// Opens the existing `/dev/shm/bips.<name>` (never through a symlink)
    /// and checks that it is a regular file.
    ///
    /// [`Error::NotFound`] when it does not exist, [`Error::PermissionDenied`]
    /// when its mode does not grant `access`; a symlink (`ELOOP`), a
    /// directory (`EISDIR`) or any other non-regular file gives
    /// [`Error::Io`]. Its size may be anything, 0 included.
    pub fn open(name: &ChannelName, access: Access) -> Result<Object> {
        let mode = match access {
            Access::ReadWrite => shm::OFlags::RDWR,
            Access::ReadOnly => shm::OFlags::RDONLY,
        };
        // Never follow a symlink planted in the world-writable /dev/shm;
        // O_NONBLOCK: opening a FIFO planted there must not block (it is
        // refused below; it has no effect on a regular file).
        let flags = mode
            | shm::OFlags::from_bits_retain(
                rfs::OFlags::NOFOLLOW.bits() | rfs::OFlags::NONBLOCK.bits(),
            );
        let fd = match shm::open(name.shm_name(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::LOOP) => return Err(not_regular(name, FileType::Symlink)),
            Err(Errno::ISDIR) => return Err(not_regular(name, FileType::Directory)),
            Err(e) => return Err(from_errno("shm_open", name.as_str(), 0, e)),
        };
        let st = rfs::fstat(&fd).map_err(|e| from_errno("fstat", name.as_str(), 0, e))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if !kind.is_file() {
            return Err(not_regular(name, kind));
        }
        Ok(Object {
            fd,
            name: name.clone(),
            size: u64::try_from(st.st_size).unwrap_or(0),
            access,
            owner: st.st_uid,
        })
    }

    /// The object's fd (for [`lock`](super::lock)).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Maps all of it, with the protection of its [`Access`].
    ///
    /// An object of size 0 (its creator has not sized it yet, or died doing
    /// so) or one larger than the address space gives [`Error::Io`] with
    /// [`std::io::ErrorKind::InvalidData`].
    pub fn into_segment(self, map: &MapOptions) -> Result<Segment> {
        let len = self.mappable_len()?;
        Segment::map_with(self.fd, len, self.name, map, false, self.access)
    }

    /// Maps all of it like [`Object::into_segment`], keeping `self`: the
    /// segment gets a duplicate of the fd, i.e. the same open file
    /// description, so locks taken through either are shared.
    pub fn map(&self, map: &MapOptions) -> Result<Segment> {
        let len = self.mappable_len()?;
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| from_io("dup", self.name.as_str(), 0, e))?;
        Segment::map_with(fd, len, self.name.clone(), map, false, self.access)
    }

    fn mappable_len(&self) -> Result<usize> {
        let size = self.size;
        if size == 0 {
            return Err(invalid(
                &self.name,
                format!(
                    "{} is empty (0 bytes), not a channel: a producer makes its object \
                     complete before giving it the channel's name, so this one was left by a \
                     process that died while creating it, or made by something else; remove \
                     it with `bips clean`",
                    self.name.path().display()
                ),
            ));
        }
        match usize::try_from(size) {
            Ok(len) if len <= isize::MAX as usize => Ok(len),
            _ => Err(invalid(
                &self.name,
                format!(
                    "{} is {size} bytes, more than this address space can map",
                    self.name.path().display()
                ),
            )),
        }
    }

    /// Its size in bytes when opened (0: its creator never sized it).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Its owner's uid (`st_uid`) when opened.
    pub fn owner_uid(&self) -> u32 {
        self.owner
    }

    /// The channel name it was opened by.
    pub fn name(&self) -> &ChannelName {
        &self.name
    }

    /// Unlinks the name only if it still names this very object. Returns
    /// whether it did.
    pub fn unlink_if_same(&self) -> bool {
        unlink_if_same_reporting(self.fd.as_fd(), &self.name)
    }

    /// Whether the name still names this very object.
    pub fn still_named(&self) -> bool {
        let id = file_id(self.fd.as_fd());
        #[allow(clippy::unnecessary_cast)] // the fields are `c_ulong` on some ABIs
        let now = rfs::lstat(self.name.path())
            .ok()
            .map(|st| (st.st_dev as u64, st.st_ino as u64));
        id.is_some() && now == id
    }
}

/// What a non-regular file is, in words (`"a symbolic link"`, ...).
pub(crate) fn file_type_words(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "a regular file",
        FileType::Symlink => "a symbolic link",
        FileType::Directory => "a directory",
        FileType::Fifo => "a FIFO (named pipe)",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        _ => "not a regular file",
    }
}

/// The error for a name that holds no shared-memory object.
fn not_regular(name: &ChannelName, kind: FileType) -> Error {
    invalid(
        name,
        format!(
            "{} is {}, not a bips channel (bips never follows or opens one); \
             remove it by hand if it is not wanted",
            name.path().display(),
            file_type_words(kind)
        ),
    )
}

/// [`Error::Io`] of kind `InvalidData` from `open`.
fn invalid(name: &ChannelName, msg: String) -> Error {
    Error::Io {
        op: "open",
        name: name.as_str().to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, msg),
    }
}

/// [`unlink_if_same`] for the object `fd` refers to; whether the name is gone.
fn unlink_if_same_reporting(fd: BorrowedFd<'_>, name: &ChannelName) -> bool {
    let id = file_id(fd);
    let before = rfs::lstat(name.path()).ok();
    unlink_if_same(id, name);
    before.is_some() && rfs::lstat(name.path()).is_err()
}

impl Drop for Segment {
    fn drop(&mut self) {
        if let Some(staged) = self.staged.take() {
            // Never published: remove our staging object (only if that name
            // still is ours).
            let tmp = ChannelName::from_shm_name_unchecked(staged);
            unlink_if_same(file_id(self.fd.as_fd()), &tmp);
        }
        // `map` unmaps itself.
    }
}

/// `(st_dev, st_ino)` of an open file, if `fstat` works.
#[allow(clippy::unnecessary_cast)] // the fields are `c_ulong` on some ABIs
pub(crate) fn file_id(fd: BorrowedFd<'_>) -> Option<(u64, u64)> {
    rfs::fstat(fd)
        .ok()
        .map(|st| (st.st_dev as u64, st.st_ino as u64))
}

/// Unlinks `name` if it still names the object identified by `id`.
#[allow(clippy::unnecessary_cast)] // the fields are `c_ulong` on some ABIs
pub(crate) fn unlink_if_same(id: Option<(u64, u64)>, name: &ChannelName) {
    let Some(id) = id else { return };
    if let Ok(now) = rfs::lstat(name.path()) {
        if (now.st_dev as u64, now.st_ino as u64) == id {
            let _ = shm::unlink(name.shm_name());
        }
    }
}

/// The system page size, read at run time (4 KiB on x86-64; aarch64 kernels
/// may use 16 or 64 KiB).
pub fn page_size() -> usize {
    rustix::param::page_size()
}

/// Helpers for tests that touch `/dev/shm` (unique names, cleanup guards).
#[cfg(test)]
pub(crate) mod test_util {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// A channel name no other test (in this or a concurrent process) uses.
    pub(crate) fn unique_name(tag: &str) -> ChannelName {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        ChannelName::new(&format!("test-{tag}-{}-{n}-{nanos}", std::process::id())).unwrap()
    }

    /// Unlinks the channel when dropped, even if the test panicked.
    pub(crate) struct Cleanup(pub(crate) ChannelName);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Segment::unlink(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::{unique_name, Cleanup};
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    #[cfg_attr(miri, ignore)]
    fn create_exists_open_share_bytes_unlink() {
        let name = unique_name("seg");
        let _cleanup = Cleanup(name.clone());
        let len = 3 * page_size() + 100;
        let a = Segment::create(&name, len, 0o600, &MapOptions::default())
            .unwrap()
            .expect("fresh name");
        assert_eq!(a.len(), len);
        assert_eq!(a.name(), &name);
        assert_eq!(a.as_ptr() as usize % page_size(), 0);
        // A second create of the same name reports Exists and changes nothing.
        assert_eq!(
            Segment::create(&name, 4096, 0o600, &MapOptions::default())
                .unwrap()
                .unwrap_err(),
            Exists
        );
        let b = Segment::open(&name, &MapOptions::default()).unwrap();
        assert_eq!(b.len(), len, "open sizes the mapping from fstat");
        assert_ne!(a.as_ptr(), b.as_ptr());
        // SAFETY: both mappings are live, `len` bytes long, and only this thread
        // touches them.
        unsafe {
            // A fresh segment reads as zeros.
            assert!((0..len).all(|i| *b.as_ptr().add(i) == 0));
            *a.as_ptr() = 0xAB;
            *a.as_ptr().add(len - 1) = 0xCD;
            assert_eq!(*b.as_ptr(), 0xAB);
            assert_eq!(*b.as_ptr().add(len - 1), 0xCD);
            *b.as_ptr().add(page_size()) = 0x11;
            assert_eq!(*a.as_ptr().add(page_size()), 0x11);
        }
        assert!(list_channels().unwrap().contains(&name.as_str().to_owned()));

        Segment::unlink(&name).unwrap();
        assert!(!name.path().exists());
        assert!(!list_channels().unwrap().contains(&name.as_str().to_owned()));
        // Existing mappings survive the unlink.
        // SAFETY: `b` is still mapped and `len` > 0.
        assert_eq!(unsafe { *b.as_ptr() }, 0xAB);
        // Unlinking again is fine; opening now is NotFound.
        Segment::unlink(&name).unwrap();
        assert!(matches!(
            Segment::open(&name, &MapOptions::default()),
            Err(Error::NotFound { name: n }) if n == name.as_str()
        ));
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn open_missing_is_not_found() {
        let name = unique_name("missing");
        let e = Segment::open(&name, &MapOptions::default()).unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn mode_is_exact_whatever_the_umask() {
        // umask is process-wide; `create` fchmods, so concurrent creates in
        // other tests are unaffected by this brief change.
        for (umask, mode) in [
            (0o000, 0o600),
            (0o077, 0o600),
            (0o077, 0o660),
            (0o022, 0o666),
        ] {
            let name = unique_name("mode");
            let _cleanup = Cleanup(name.clone());
            // SAFETY: umask cannot fail and has no memory-safety preconditions.
            let old = unsafe { libc::umask(umask) };
            let r = Segment::create(&name, 4096, mode, &MapOptions::default());
            // SAFETY: as above.
            unsafe { libc::umask(old) };
            let _seg = r.unwrap().unwrap();
            let got = std::fs::metadata(name.path()).unwrap().permissions().mode() & 0o7777;
            assert_eq!(got, mode, "umask {umask:#o}");
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn bad_create_arguments() {
        let name = unique_name("badargs");
        let _cleanup = Cleanup(name.clone());
        let o = MapOptions::default();
        for (len, mode) in [(0, 0o600), (4096, 0o4600), (4096, 0o400), (4096, 0o066)] {
            let e = Segment::create(&name, len, mode, &o).unwrap_err();
            assert!(
                matches!(e, Error::InvalidOptions(_)),
                "{len} {mode:#o}: {e:?}"
            );
        }
        assert!(!name.path().exists(), "nothing was created");
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn too_big_for_tmpfs_is_no_space_and_leaves_nothing() {
        // fallocate on tmpfs rejects a size above the filesystem's total size
        // up front (without allocating), so this is cheap. An unlimited tmpfs
        // (0 blocks) would really allocate: skip then.
        let vfs = rfs::statvfs(SHM_DIR).unwrap();
        let total = vfs.f_blocks.saturating_mul(vfs.f_frsize);
        if total == 0 || total > (isize::MAX as u64) / 2 {
            eprintln!("skipped: /dev/shm has no size limit");
            return;
        }
        let name = unique_name("nospace");
        let _cleanup = Cleanup(name.clone());
        let len = (total + page_size() as u64) as usize;
        let e = Segment::create(&name, len, 0o600, &MapOptions::default()).unwrap_err();
        match &e {
            Error::NoSpace { name: n, bytes } => {
                assert_eq!(n, name.as_str());
                assert_eq!(*bytes, len as u64);
            }
            other => panic!("expected NoSpace, got {other:?}"),
        }
        assert!(e.to_string().contains("--shm-size"));
        assert!(
            !name.path().exists(),
            "the failed create removed its object"
        );
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn full_small_shm_is_no_space_not_sigbus() {
        // The Docker case: /dev/shm is small and partly used. This allocates up
        // to the whole tmpfs, so it runs only where that is small (<= 1 GiB);
        // try it with `unshare -m` + `mount -t tmpfs -o size=16m tmpfs /dev/shm`.
        let vfs = rfs::statvfs(SHM_DIR).unwrap();
        let total = vfs.f_blocks.saturating_mul(vfs.f_frsize);
        if total == 0 || total > 1 << 30 {
            eprintln!("skipped: /dev/shm is not a small tmpfs");
            return;
        }
        let free_before = vfs.f_bavail.saturating_mul(vfs.f_frsize);
        let part = (total as usize / 10 * 6) & !(page_size() - 1);
        for opts in [
            MapOptions::default(),
            MapOptions {
                huge_pages: true,
                ..Default::default()
            },
            MapOptions {
                prefault: true,
                ..Default::default()
            },
        ] {
            let first = unique_name("full1");
            let second = unique_name("full2");
            let _c1 = Cleanup(first.clone());
            let _c2 = Cleanup(second.clone());
            let seg = Segment::create(&first, part, 0o600, &opts)
                .unwrap()
                .unwrap();
            let e = Segment::create(&second, part, 0o600, &opts).unwrap_err();
            assert!(matches!(e, Error::NoSpace { .. }), "{opts:?}: {e:?}");
            assert!(!second.path().exists(), "{opts:?}: leftover object");
            drop(seg);
            Segment::unlink(&first).unwrap();
            let vfs = rfs::statvfs(SHM_DIR).unwrap();
            let free_after = vfs.f_bavail.saturating_mul(vfs.f_frsize);
            assert!(
                free_after + (1 << 20) >= free_before,
                "{opts:?}: space not given back"
            );
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn map_options_work() {
        for opts in [
            MapOptions {
                prefault: true,
                ..Default::default()
            },
            MapOptions {
                huge_pages: true,
                ..Default::default()
            },
            MapOptions {
                huge_pages: true,
                prefault: true,
                ..Default::default()
            },
            MapOptions {
                mlock: true,
                ..Default::default()
            },
        ] {
            let name = unique_name("opts");
            let _cleanup = Cleanup(name.clone());
            let len = 4 << 20;
            let a = match Segment::create(&name, len, 0o600, &opts).unwrap() {
                Ok(a) => a,
                Err(Exists) => unreachable!(),
            };
            // mlock may be refused without CAP_IPC_LOCK and a big RLIMIT_MEMLOCK;
            // then it must say so.
            let b = match Segment::open(&name, &opts) {
                Ok(b) => b,
                Err(Error::InvalidOptions(msg)) if opts.mlock => {
                    assert!(msg.contains("RLIMIT_MEMLOCK"), "{msg}");
                    continue;
                }
                Err(e) => panic!("{opts:?}: {e}"),
            };
            // SAFETY: both mappings are live and `len` bytes long; only this
            // thread touches them.
            unsafe {
                *a.as_ptr().add(len / 2) = 42;
                assert_eq!(*b.as_ptr().add(len / 2), 42, "{opts:?}");
            }
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn open_rejects_empty_and_non_regular() {
        let name = unique_name("empty");
        let _cleanup = Cleanup(name.clone());
        // An object created but not sized yet (as between a creator's shm_open
        // and ftruncate).
        let fd = shm::open(
            name.shm_name(),
            shm::OFlags::CREATE | shm::OFlags::EXCL | shm::OFlags::RDWR,
            Mode::RUSR | Mode::WUSR,
        )
        .unwrap();
        let e = Segment::open(&name, &MapOptions::default()).unwrap_err();
        match &e {
            Error::Io { source, .. } => {
                assert_eq!(source.kind(), std::io::ErrorKind::InvalidData);
                assert!(source.to_string().contains("is empty"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        drop(fd);
        Segment::unlink(&name).unwrap();

        // A symlink planted under the name is not followed.
        let target = unique_name("target");
        let _cleanup2 = Cleanup(target.clone());
        let _t = Segment::create(&target, 4096, 0o600, &MapOptions::default())
            .unwrap()
            .unwrap();
        std::os::unix::fs::symlink(target.path(), name.path()).unwrap();
        let e = Segment::open(&name, &MapOptions::default()).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e:?}"); // ELOOP
                                                         // ... and create reports it as existing.
        assert_eq!(
            Segment::create(&name, 4096, 0o600, &MapOptions::default())
                .unwrap()
                .unwrap_err(),
            Exists
        );
    }

    /// Bytes of the mapping at `addr` that the kernel maps with huge pages
    /// (PMD-mapped), from `/proc/self/smaps`.
    fn pmd_mapped_bytes(addr: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut in_ours = false;
        let mut total = 0;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((start, _)) = first.split_once('-') {
                if let Ok(start) = usize::from_str_radix(start, 16) {
                    in_ours = start == addr;
                    continue;
                }
            }
            if in_ours
                && (line.starts_with("ShmemPmdMapped:") || line.starts_with("FilePmdMapped:"))
            {
                let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
                total += kb * 1024;
            }
        }
        total
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    #[ignore = "needs /dev/shm mounted with huge=advise (or always/within_size) and free huge pages"]
    fn huge_pages_are_used_when_the_kernel_allows() {
        // tmpfs mounts follow their `huge=` mount option; shmem_enabled only
        // overrides it with `force` (or `deny`).
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mount_ok = mounts
            .lines()
            .rfind(|l| l.split_whitespace().nth(1) == Some(SHM_DIR))
            .is_some_and(|l| {
                ["huge=advise", "huge=always", "huge=within_size"]
                    .iter()
                    .any(|o| l.contains(o))
            });
        let setting = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
            .unwrap_or_default();
        if setting.contains("[deny]") || !(mount_ok || setting.contains("[force]")) {
            eprintln!("skipped: /dev/shm is not mounted with huge=advise/always/within_size");
            return;
        }
        let name = unique_name("huge");
        let _cleanup = Cleanup(name.clone());
        let opts = MapOptions {
            huge_pages: true,
            ..Default::default()
        };
        let len = 8 << 20;
        let a = Segment::create(&name, len, 0o600, &opts).unwrap().unwrap();
        let b = Segment::open(
            &name,
            &MapOptions {
                prefault: true,
                ..opts
            },
        )
        .unwrap();
        assert!(
            pmd_mapped_bytes(a.as_ptr() as usize) > 0,
            "creator not huge-mapped"
        );
        assert!(
            pmd_mapped_bytes(b.as_ptr() as usize) > 0,
            "opener not huge-mapped"
        );
    }

    #[test]
    fn page_size_is_sane() {
        let p = page_size();
        assert!(p.is_power_of_two() && p >= 4096, "{p}");
    }

    #[test]
    fn segment_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Segment>();
        check::<ChannelName>();
    }
}
