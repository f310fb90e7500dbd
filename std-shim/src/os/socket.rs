//! Where memfd channels live: a socket directory. A memfd producer serves
//! its sealed segment's file descriptor on `<dir>/bips.<name>.sock`
//! (`SCM_RIGHTS`) and holds an OFD lock on `<dir>/bips.<name>.lock` for its
//! whole life; peers need to share only that directory (a container mounts
//! it), not `/dev/shm` or an IPC namespace.
//!
//! The directory is `$BIPS_SOCKET_DIR`, else `$XDG_RUNTIME_DIR/bips`, else
//! `/run/bips` (an option overrides all three).
//!
//! * Who may connect: the socket file's permissions (the channel's mode).
//! * Whom a consumer trusts: the producer's uid from `SO_PEERCRED`, checked
//!   like the owner of a `/dev/shm` object (T2, [`crate::trust`]).
//! * The name: taken by whoever holds the lock file's byte-0 lock. A socket
//!   whose lock is free was left by a dead producer; only a process holding
//!   the lock removes or replaces it (T1).
//! * The handshake is one message from the server, sent as soon as a client
//!   is accepted, without reading anything from it: a client that sends
//!   garbage, or nothing, or never reads, costs the producer one
//!   non-blocking `sendmsg`.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use rustix::event::{eventfd, poll, EventfdFlags, PollFd, PollFlags};
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use super::lock;
use super::name::{ChannelName, PREFIX};
use crate::error::{from_io, Error, Result};

/// Environment variable naming the socket directory.
pub const SOCKET_DIR_ENV: &str = "BIPS_SOCKET_DIR";
/// Suffix of a memfd channel's socket.
pub(crate) const SOCK_SUFFIX: &str = ".sock";
/// Suffix of a memfd channel's lock file.
pub(crate) const LOCK_SUFFIX: &str = ".lock";
/// First bytes of the server's message; the segment's size follows (u64 LE).
const HELLO: [u8; 8] = *b"BIPSMFD1";
/// Longest path `bind`/`connect` take (`sun_path` less its NUL).
const MAX_SUN_PATH: usize = 107;
/// How long a client waits for the server's message.
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);

/// The socket directory: `explicit`, else `$BIPS_SOCKET_DIR`, else
/// `$XDG_RUNTIME_DIR/bips`, else `/run/bips`.
pub fn socket_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(d) = explicit {
        return d.to_owned();
    }
    let env = |k| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = env(SOCKET_DIR_ENV) {
        return PathBuf::from(d);
    }
    if let Some(d) = env("XDG_RUNTIME_DIR") {
        return PathBuf::from(d).join("bips");
    }
    PathBuf::from("/run/bips")
}

/// The files of channel `name` in `dir`.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    pub(crate) sock: PathBuf,
    pub(crate) lock: PathBuf,
}

impl Paths {
    pub(crate) fn new(dir: &Path, name: &ChannelName) -> Paths {
        let base = format!("{PREFIX}{}", name.as_str());
        Paths {
            sock: dir.join(format!("{base}{SOCK_SUFFIX}")),
            lock: dir.join(format!("{base}{LOCK_SUFFIX}")),
        }
    }
}

/// Runs `f` with a path to `path` short enough for `sun_path`: itself, or
/// `/proc/self/fd/<dir fd>/<file>` (the directory opened `O_PATH`).
fn with_sun_path<T>(
    path: &Path,
    name: &ChannelName,
    f: impl FnOnce(&Path) -> std::io::Result<T>,
) -> Result<std::io::Result<T>> {
    if path.as_os_str().len() <= MAX_SUN_PATH {
        return Ok(f(path));
    }
    let (Some(dir), Some(file)) = (path.parent(), path.file_name()) else {
        return Err(too_long(path, name));
    };
    let dirfd = rustix::fs::open(
        dir,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| from_io("open", name.as_str(), 0, e.into()))?;
    let short = PathBuf::from(format!("/proc/self/fd/{}", dirfd.as_raw_fd())).join(file);
    if short.as_os_str().len() > MAX_SUN_PATH {
        return Err(too_long(path, name));
    }
    Ok(f(&short))
}

fn too_long(path: &Path, name: &ChannelName) -> Error {
    Error::InvalidName {
        name: name.as_str().to_owned(),
        reason: if path.as_os_str().is_empty() {
            "its socket path is empty"
        } else {
            "its socket path is too long for a Unix socket (107 bytes, or 80 for the \
             name itself); use a shorter name or socket directory"
        },
    }
}

/// `(st_dev, st_ino)` of `path` itself (not followed).
#[allow(clippy::unnecessary_cast)] // `c_ulong` on some ABIs
fn path_id(path: &Path) -> Option<(u64, u64)> {
    rustix::fs::lstat(path)
        .ok()
        .map(|st| (st.st_dev as u64, st.st_ino as u64))
}

/// The claim on a channel name in a socket directory: the lock file, its
/// byte-0 lock held for as long as this value lives.
#[derive(Debug)]
pub(crate) struct Claim {
    name: ChannelName,
    paths: Paths,
    /// The lock file, kept open for its byte-0 lock (the claim itself).
    _lock: OwnedFd,
}

impl Claim {
    /// Takes channel `name` in `dir` (created, mode 0700, if missing):
    /// [`Error::ChannelBusy`] while another live process holds it.
    pub(crate) fn take(dir: &Path, name: &ChannelName, mode: u32) -> Result<Claim> {
        let io = |op, e| from_io(op, name.as_str(), 0, e);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::PermissionDenied => Error::InvalidOptions(format!(
                    "cannot create the socket directory {}: permission denied; set \
                     {SOCKET_DIR_ENV} (or the socket_dir option) to a directory this user \
                     may write, the same for the producer and its consumers",
                    dir.display()
                )),
                _ => io("mkdir", e),
            })?;
        let paths = Paths::new(dir, name);
        // A name whose socket path cannot be bound is refused before any
        // file is made.
        with_sun_path(&paths.sock, name, |_| Ok(()))?.map_err(|e| io("open", e))?;
        for _ in 0..32 {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(mode)
                .custom_flags(libc_o_nofollow())
                .open(&paths.lock)
                .map_err(|e| io("open", e))?;
            let fd = OwnedFd::from(file);
            if !lock::try_lock(fd.as_fd(), 0).map_err(|e| io("lock", e))? {
                return Err(Error::ChannelBusy {
                    name: name.as_str().to_owned(),
                });
            }
            // Still the file under that name? A dying producer removes its
            // lock file after unlocking it; we may have locked that one.
            if super::shm::file_id(fd.as_fd()) == path_id(&paths.lock) {
                return Ok(Claim {
                    name: name.clone(),
                    paths,
                    _lock: fd,
                });
            }
        }
        Err(Error::ChannelBusy {
            name: name.as_str().to_owned(),
        })
    }

    /// Serves `memfd` (`size` bytes) on the channel's socket, replacing a
    /// stale one (ours to remove: we hold the name's lock).
    pub(crate) fn serve(self, memfd: OwnedFd, size: u64, mode: u32) -> Result<Server> {
        let name = self.name.as_str().to_owned();
        let io = |op, e| from_io(op, &name, 0, e);
        match std::fs::remove_file(&self.paths.sock) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("unlink", e)),
        }
        let listener = with_sun_path(&self.paths.sock, &self.name, |p| UnixListener::bind(p))?
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::InvalidInput {
                    too_long(&self.paths.sock, &self.name)
                } else {
                    io("bind", e)
                }
            })?;
        let sock_id = path_id(&self.paths.sock);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.paths.sock, std::fs::Permissions::from_mode(mode))
            .map_err(|e| io("chmod", e))?;
        listener.set_nonblocking(true).map_err(|e| io("fcntl", e))?;
        let stop = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| io("eventfd", e.into()))?;
        let stop_rx = stop.try_clone().map_err(|e| io("dup", e))?;
        let thread = std::thread::Builder::new()
            .name(format!("bips-serve-{}", self.name.as_str()))
            .spawn(move || serve_loop(listener, stop_rx, memfd, size))
            .map_err(|e| io("spawn", e))?;
        above_creator(&thread);
        Ok(Server {
            claim: self,
            sock_id,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Claim {
    /// A claim that never served (its creation failed midway) removes its
    /// lock file, if the name still names that very file.
    fn drop(&mut self) {
        if super::shm::file_id(self._lock.as_fd()) == path_id(&self.paths.lock) {
            let _ = std::fs::remove_file(&self.paths.lock);
        }
    }
}

fn libc_o_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// A producer's memfd served on its channel's socket by a thread; stopped,
/// and its files removed, on drop.
#[derive(Debug)]
pub(crate) struct Server {
    claim: Claim,
    sock_id: Option<(u64, u64)>,
    stop: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

/// A served channel's files: what its producer removes when it leaves.
#[derive(Debug, Clone)]
pub(crate) struct Files {
    sock: PathBuf,
    /// `(st_dev, st_ino)` of the socket we bound.
    sock_id: Option<(u64, u64)>,
    lock: PathBuf,
}

impl Files {
    /// Removes the socket if it is still ours, and the lock file. Whether
    /// the socket went.
    pub(crate) fn remove(&self) -> bool {
        let gone = self.sock_id.is_some()
            && path_id(&self.sock) == self.sock_id
            && std::fs::remove_file(&self.sock).is_ok();
        let _ = std::fs::remove_file(&self.lock);
        gone
    }
}

impl Server {
    /// The channel's files (for the signal cleanup, which removes them as
    /// `Drop` would).
    pub(crate) fn files(&self) -> Files {
        Files {
            sock: self.claim.paths.sock.clone(),
            sock_id: self.sock_id,
            lock: self.claim.paths.lock.clone(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = rustix::io::write(&self.stop, &1u64.to_ne_bytes());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Still holding the lock: the files are ours to remove.
        self.files().remove();
    }
}

/// A real-time producer (SCHED_FIFO/RR, which its threads inherit) that
/// spins on its CPU would starve its own server thread at the same
/// priority: consumers could never open the channel. The server sleeps in
/// `poll` and works a few microseconds per client, so it runs one step above
/// its creator (set by the creator, since a starved thread could not set it
/// itself; when the limits refuse, it stays where it is).
fn above_creator(thread: &JoinHandle<()>) {
    use std::os::unix::thread::JoinHandleExt;
    // SAFETY: reads the calling thread's scheduling (pid 0) into locals, and
    // sets that of `thread`, a live thread we just spawned (its handle is
    // borrowed, so it is not joined or detached meanwhile).
    unsafe {
        let policy = libc::sched_getscheduler(0);
        if policy != libc::SCHED_FIFO && policy != libc::SCHED_RR {
            return;
        }
        let mut param = libc::sched_param { sched_priority: 0 };
        if libc::sched_getparam(0, &mut param) != 0 {
            return;
        }
        if param.sched_priority < libc::sched_get_priority_max(policy) {
            param.sched_priority += 1;
            let _ = libc::pthread_setschedparam(thread.as_pthread_t(), policy, &param);
        }
    }
}

/// Accepts clients until `stop` is readable; hands each the memfd.
fn serve_loop(listener: UnixListener, stop: OwnedFd, memfd: OwnedFd, size: u64) {
    let mut hello = [0u8; 16];
    hello[..8].copy_from_slice(&HELLO);
    hello[8..].copy_from_slice(&size.to_le_bytes());
    loop {
        let mut fds = [
            PollFd::new(&listener, PollFlags::IN),
            PollFd::new(&stop, PollFlags::IN),
        ];
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return,
        }
        if !fds[1].revents().is_empty() {
            return;
        }
        loop {
            match listener.accept() {
                Ok((client, _)) => send_hello(client.as_fd(), &hello, memfd.as_fd()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // EMFILE and the like: back off a little, then poll again.
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(10));
                    break;
                }
            }
        }
    }
}

/// One non-blocking `sendmsg`: the hello and the fd. Errors only cost the
/// client its answer.
fn send_hello(client: BorrowedFd<'_>, hello: &[u8; 16], memfd: BorrowedFd<'_>) {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [memfd];
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return;
    }
    let _ = sendmsg(
        client,
        &[IoSlice::new(hello)],
        &mut control,
        SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
    );
}

/// What a client got from a channel's server.
#[derive(Debug)]
pub(crate) struct Fetched {
    /// The memfd (sharing the producer's open file description).
    pub(crate) fd: OwnedFd,
    /// The size the producer announced.
    pub(crate) size: u64,
    /// The producer's uid (`SO_PEERCRED`).
    pub(crate) uid: u32,
}

/// Connects to channel `name`'s socket in `dir` and receives its memfd.
///
/// [`Error::NotFound`] without a socket; [`Error::Disconnected`] when the
/// socket is stale (its producer died: nobody accepts);
/// [`Error::PermissionDenied`] when its mode does not let us connect; an
/// [`Error::Io`] of kind `InvalidData` for a server that does not speak the
/// protocol.
pub(crate) fn fetch(dir: &Path, name: &ChannelName) -> Result<Fetched> {
    let paths = Paths::new(dir, name);
    let stream = with_sun_path(&paths.sock, name, |p| UnixStream::connect(p))?.map_err(|e| {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::NotFound => Error::NotFound {
                name: name.as_str().to_owned(),
            },
            K::ConnectionRefused => Error::Disconnected,
            K::PermissionDenied => Error::PermissionDenied {
                name: name.as_str().to_owned(),
            },
            K::InvalidInput => too_long(&paths.sock, name),
            _ => from_io("connect", name.as_str(), 0, e),
        }
    })?;
    let io = |op, e| from_io(op, name.as_str(), 0, e);
    let uid = peer_uid(stream.as_fd()).map_err(|e| io("SO_PEERCRED", e))?;
    stream
        .set_read_timeout(Some(FETCH_TIMEOUT))
        .map_err(|e| io("setsockopt", e))?;
    let mut hello = [0u8; 16];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = loop {
        match recvmsg(
            &stream,
            &mut [IoSliceMut::new(&mut hello)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC | RecvFlags::WAITALL,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            r => break r,
        }
    };
    let got = got.map_err(|e| match e {
        rustix::io::Errno::AGAIN => handshake(name, "no answer within 2 s"),
        e => io("recvmsg", e.into()),
    })?;
    // Every fd received is ours to close (OwnedFd), whatever else happens.
    let mut fds: Vec<OwnedFd> = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(it) = msg {
            fds.extend(it);
        }
    }
    if got.bytes != hello.len() || hello[..8] != HELLO {
        return Err(handshake(name, "it does not speak the bips memfd protocol"));
    }
    if fds.len() != 1 {
        return Err(handshake(
            name,
            &format!("it sent {} file descriptors, not 1", fds.len()),
        ));
    }
    let mut size = [0u8; 8];
    size.copy_from_slice(&hello[8..]);
    Ok(Fetched {
        fd: fds.remove(0),
        size: u64::from_le_bytes(size),
        uid,
    })
}

/// The uid of the process at the other end of a Unix stream socket
/// (`SO_PEERCRED`). Through libc: a peer outside our PID namespace (a
/// container's consumer, a producer on the host) has pid 0 there, which
/// rustix's `UCred` cannot represent.
fn peer_uid(sock: BorrowedFd<'_>) -> std::io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are live locals of the right types; the
    // kernel writes at most `len` bytes into `cred`.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cred.uid)
}

fn handshake(name: &ChannelName, why: &str) -> Error {
    Error::Io {
        op: "connect",
        name: name.as_str().to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the channel's socket server is not a bips producer: {why}"),
        ),
    }
}

/// Names of the memfd channels with a socket in `dir` (live or stale).
pub(crate) fn list(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        if let Some(n) = file
            .strip_prefix(PREFIX)
            .and_then(|f| f.strip_suffix(SOCK_SUFFIX))
        {
            if ChannelName::new(n).is_ok() {
                names.push(n.to_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Whether a live producer holds channel `name` in `dir` (its lock file's
/// byte-0 lock is held). Any doubt (no file, no permission) answers `false`.
pub(crate) fn is_live(dir: &Path, name: &ChannelName) -> bool {
    let lock_path = Paths::new(dir, name).lock;
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_o_nofollow())
        .open(lock_path)
    else {
        return false;
    };
    lock::is_locked_by_other(file.as_fd(), 0).unwrap_or(false)
}

/// `bips clean` of a memfd channel: `None` when it has no socket or lock
/// file; `Some(true)` when they were stale and are removed (with `dry_run`:
/// would be), holding the lock file's lock throughout (T1); `Some(false)`
/// while a live producer holds it.
pub(crate) fn sweep(dir: &Path, name: &ChannelName, dry_run: bool) -> Result<Option<bool>> {
    let paths = Paths::new(dir, name);
    if path_id(&paths.sock).is_none() && path_id(&paths.lock).is_none() {
        return Ok(None);
    }
    if dry_run && path_id(&paths.lock).is_none() {
        // Nobody holds a lock file that does not exist.
        return Ok(Some(true));
    }
    // The claim a producer would take (creating the lock file if a dead
    // producer's went missing): held, nobody can claim the name meanwhile.
    let claim = match Claim::take(dir, name, 0o600) {
        Ok(c) => c,
        Err(Error::ChannelBusy { .. }) => return Ok(Some(false)),
        Err(e) => return Err(e),
    };
    if !dry_run {
        let _ = std::fs::remove_file(&claim.paths.sock);
        if super::shm::file_id(claim._lock.as_fd()) == path_id(&claim.paths.lock) {
            let _ = std::fs::remove_file(&claim.paths.lock);
        }
    }
    Ok(Some(true))
}
