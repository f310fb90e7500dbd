//! The sealed memfd backend, the way its users meet it: a producer process
//! serves its channel from a socket directory (no `/dev/shm` object), a
//! consumer in another process finds it by name; nobody can truncate the
//! segment; a consumer refuses an unsealed one; a dead producer's socket is
//! detected and replaced; garbage on the socket harms nobody.

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bips::{Backend, Consumer, ConsumerOptions, Error, Options, Producer};
use bips_tests::*;

const ENTRY: &str = "child_entry";
const N: u64 = 200;
const TAG: u64 = 0x3FD;

/// Children of this file start here (a no-op in a normal test run).
#[test]
fn child_entry() {
    bips_tests::child_entry(&[
        ("producer", producer_role),
        ("sweeper", sweeper_role),
        ("boxed-consumer", boxed_consumer_role),
        ("rt-producer", rt_producer_role),
    ]);
}

/// A socket directory of its own, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let ch = Channel::new(tag);
        let d = PathBuf::from(format!("/tmp/{}", ch.name()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn memfd_options(dir: &Path) -> Options {
    Options::new(4, 4096)
        .meta_size(16)
        .backend(Backend::Memfd)
        .socket_dir(dir)
}

fn consumer_options(dir: &Path) -> ConsumerOptions {
    ConsumerOptions::new()
        .start(bips::Start::Oldest)
        .socket_dir(dir)
}

/// Serves a memfd channel, publishes N checked samples once a consumer is
/// there (or waits for stdin to close when BIPS_N is 0), then leaves.
fn producer_role() {
    let name: String = env("BIPS_CHANNEL");
    let dir: String = env("BIPS_DIR");
    let n: u64 = env("BIPS_N");
    bips::cleanup_on_signals().unwrap();
    let producer = Producer::create(&name, &memfd_options(Path::new(&dir))).unwrap();
    assert_eq!(producer.backend(), Backend::Memfd);
    say("READY");
    if n == 0 {
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    await_consumers(&producer, 1, Duration::from_secs(10));
    for seq in 0..n {
        publish_checked(&producer, seq, TAG);
    }
    drop(producer);
    say("RESULT done=1");
}

/// Starts a memfd producer process of `n` samples (0: it waits to be killed)
/// and waits until it serves.
fn start_producer(dir: &Dir, ch: &Channel, n: u64) -> Proc {
    let mut p = spawn(ENTRY, "producer")
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_DIR", dir.0.display())
        .env("BIPS_N", n)
        .start();
    p.expect_line("READY", Duration::from_secs(10));
    p
}

/// Receives and checks samples `first..` until the producer leaves; returns
/// how many came.
fn drain_checked(consumer: &Consumer, first: u64) -> u64 {
    let mut scratch = Vec::new();
    let mut next = first;
    loop {
        match consumer.recv_timeout(Duration::from_secs(10)) {
            Ok(s) => {
                check_sample(&s, next, TAG, 4096, &mut scratch).unwrap();
                next += 1;
            }
            Err(Error::Disconnected) => return next - first,
            Err(e) => panic!("recv: {e}"),
        }
    }
}

fn sock_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("bips.{name}.sock"))
}

#[test]
fn a_memfd_channel_crosses_processes_through_the_socket_directory() {
    let dir = Dir::new("mfdx");
    let ch = Channel::new("mfd");
    let mut p = start_producer(&dir, &ch, N);
    assert!(!ch.exists(), "a memfd channel has no /dev/shm object");
    assert!(sock_path(&dir.0, ch.name()).exists());
    let consumer = Consumer::open_with(ch.name(), &consumer_options(&dir.0)).unwrap();
    // Every sample, in order (check_sample checks each sequence), checked.
    assert_eq!(drain_checked(&consumer, 0), N);
    p.expect_success(Duration::from_secs(10));
    assert!(
        !sock_path(&dir.0, ch.name()).exists(),
        "the producer removes its socket when it leaves"
    );
    assert!(!dir.0.join(format!("bips.{}.lock", ch.name())).exists());
}

/// The memfd behind `pid`'s fds named `bips.<name>`, opened through /proc.
fn producer_memfd(pid: i32, name: &str) -> std::fs::File {
    let want = format!("/memfd:bips.{name} (deleted)");
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let e = e.unwrap();
        if std::fs::read_link(e.path())
            .ok()
            .and_then(|l| l.to_str().map(str::to_owned))
            == Some(want.clone())
        {
            return std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(e.path())
                .unwrap();
        }
    }
    panic!("no {want} among the fds of {pid}");
}

#[test]
fn nobody_can_truncate_a_memfd_channel_and_everyone_survives_the_attempt() {
    let dir = Dir::new("mfdt");
    let ch = Channel::new("mfdt");
    let mut p = start_producer(&dir, &ch, N);
    let consumer = Consumer::open_with(ch.name(), &consumer_options(&dir.0)).unwrap();
    let first = consumer.recv_timeout(Duration::from_secs(10)).unwrap();
    // A peer with write access (here: through /proc/PID/fd, as any process
    // of the same user could) tries to shrink and to grow the segment.
    let f = producer_memfd(p.pid(), ch.name());
    let len = f.metadata().unwrap().len();
    for to in [0, len / 2, len + 4096] {
        let e = f.set_len(to).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "truncate to {to}");
    }
    assert_eq!(f.metadata().unwrap().len(), len);
    // Everyone carries on: every sample arrives intact.
    check_sample(&first, 0, TAG, 4096, &mut Vec::new()).unwrap();
    drop(first);
    assert_eq!(drain_checked(&consumer, 1), N - 1);
    p.expect_success(Duration::from_secs(10));
}

/// Serves one client like a producer would, but with an fd of our choice.
fn fake_server(
    path: &Path,
    fd: std::os::fd::BorrowedFd<'_>,
    size: u64,
) -> std::thread::JoinHandle<()> {
    let listener = UnixListener::bind(path).unwrap();
    let fd = fd.try_clone_to_owned().unwrap();
    std::thread::spawn(move || {
        let (client, _) = listener.accept().unwrap();
        let mut hello = [0u8; 16];
        hello[..8].copy_from_slice(b"BIPSMFD1");
        hello[8..].copy_from_slice(&size.to_le_bytes());
        assert!(send_with_fd(&client, &hello, &fd) > 0);
    })
}

/// `sendmsg` of `data` with `fd` attached (`SCM_RIGHTS`), through libc.
fn send_with_fd(client: &UnixStream, data: &[u8], fd: &std::os::fd::OwnedFd) -> isize {
    use std::os::fd::AsRawFd;
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: CMSG_SPACE of one int is a constant computed by libc.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    let mut buf = vec![0u8; space];
    // SAFETY: a zeroed msghdr is valid; every pointer set below points to
    // live locals for the duration of sendmsg.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = buf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` has a control buffer of CMSG_SPACE(int) bytes, so
    // CMSG_FIRSTHDR is non-null and CMSG_DATA has room for one int.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>(), fd.as_raw_fd());
        libc::sendmsg(client.as_raw_fd(), &msg, 0)
    }
}

/// An anonymous memfd of `len` bytes, sealed or not.
fn memfd(len: u64, sealed: bool) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create with a valid C string; the returned fd (checked)
    // is owned by us from here on.
    let fd = unsafe {
        let fd = libc::memfd_create(
            c"bips-test".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        );
        assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
        std::os::fd::OwnedFd::from_raw_fd(fd)
    };
    let f = std::fs::File::from(fd);
    f.set_len(len).unwrap();
    if sealed {
        use std::os::fd::AsRawFd;
        // SAFETY: fcntl on an fd we own, with an int argument.
        let r = unsafe {
            libc::fcntl(
                f.as_raw_fd(),
                libc::F_ADD_SEALS,
                libc::F_SEAL_SHRINK | libc::F_SEAL_GROW,
            )
        };
        assert_eq!(r, 0);
    }
    f.into()
}

#[test]
fn a_consumer_refuses_an_unsealed_or_misannounced_memfd() {
    use std::os::fd::AsFd;
    let dir = Dir::new("mfdu");
    for (what, fd, announced, needle) in [
        ("unsealed", memfd(65536, false), 65536, "not sealed"),
        ("wrong size", memfd(65536, true), 131072, "announced"),
    ] {
        let ch = Channel::new("mfdu");
        let server = fake_server(&sock_path(&dir.0, ch.name()), fd.as_fd(), announced);
        match Consumer::open_with(ch.name(), &consumer_options(&dir.0)) {
            Err(Error::Io { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::InvalidData, "{what}");
                assert!(source.to_string().contains(needle), "{what}: {source}");
            }
            other => panic!("{what}: {other:?}"),
        }
        server.join().unwrap();
        let _ = std::fs::remove_file(sock_path(&dir.0, ch.name()));
    }
    // A server that speaks something else.
    let ch = Channel::new("mfdg");
    let listener = UnixListener::bind(sock_path(&dir.0, ch.name())).unwrap();
    let t = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let _ = c.write_all(b"HTTP/1.1 200 OK\r\n\r\n");
    });
    match Consumer::open_with(ch.name(), &consumer_options(&dir.0)) {
        Err(Error::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::InvalidData, "{source}")
        }
        other => panic!("{other:?}"),
    }
    t.join().unwrap();
}

#[test]
fn a_dead_producers_socket_is_detected_and_replaced_and_garbage_harms_nobody() {
    let dir = Dir::new("mfdd");
    let ch = Channel::new("mfdd");
    let mut p = start_producer(&dir, &ch, 0);

    // Garbage: a client that sends junk, one that never reads, one that
    // connects and closes at once. The producer keeps serving.
    let mut junk = UnixStream::connect(sock_path(&dir.0, ch.name())).unwrap();
    let _ = junk.write_all(&[0xFF; 4096]);
    let _mute = UnixStream::connect(sock_path(&dir.0, ch.name())).unwrap();
    drop(UnixStream::connect(sock_path(&dir.0, ch.name())).unwrap());
    let c = Consumer::open_with(ch.name(), &consumer_options(&dir.0)).unwrap();
    drop(c);

    // Two producers cannot have one name, whatever their backends.
    let busy = Producer::create(ch.name(), &memfd_options(&dir.0));
    assert!(matches!(busy, Err(Error::ChannelBusy { .. })), "{busy:?}");
    let busy = Producer::create(ch.name(), &Options::new(2, 64).socket_dir(&dir.0));
    assert!(matches!(busy, Err(Error::ChannelBusy { .. })), "{busy:?}");

    // kill -9: the socket stays, but nobody answers on it.
    p.kill9();
    let _ = p.wait_exit(Duration::from_secs(10));
    assert!(sock_path(&dir.0, ch.name()).exists());
    match Consumer::open_with(ch.name(), &consumer_options(&dir.0)) {
        Err(Error::Disconnected) => {}
        other => panic!("a dead producer's channel: {other:?}"),
    }
    // A new producer takes the name over (the lock file's lock is free).
    let producer = Producer::create(ch.name(), &memfd_options(&dir.0)).unwrap();
    let consumer = Consumer::open_with(ch.name(), &consumer_options(&dir.0)).unwrap();
    publish_checked(&producer, 0, TAG);
    let mut scratch = Vec::new();
    check_sample(&consumer.recv().unwrap(), 0, TAG, 4096, &mut scratch).unwrap();
    drop(consumer);
    drop(producer);
    assert!(!sock_path(&dir.0, ch.name()).exists());
}

#[test]
fn sigterm_removes_a_memfd_producers_socket_and_lock_file() {
    let dir = Dir::new("mfds");
    let ch = Channel::new("mfds");
    let mut p = start_producer(&dir, &ch, 0);
    let lock = dir.0.join(format!("bips.{}.lock", ch.name()));
    assert!(sock_path(&dir.0, ch.name()).exists() && lock.exists());
    // SAFETY: kill has no memory-safety preconditions; `pid` is our child.
    assert_eq!(unsafe { libc::kill(p.pid(), libc::SIGTERM) }, 0);
    let status = p.wait_exit(Duration::from_secs(10));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGTERM),
        "{}",
        describe(status)
    );
    assert!(!sock_path(&dir.0, ch.name()).exists(), "socket left behind");
    assert!(!lock.exists(), "lock file left behind");
}

/// `bips clean` and `bips list` of one channel, as the CLI calls them
/// (the socket directory comes from BIPS_SOCKET_DIR).
fn sweeper_role() {
    let name: String = env("BIPS_CHANNEL");
    let listed = bips::list_channels().unwrap().contains(&name);
    let info = match bips::monitor::inspect(&name) {
        Ok(i) => format!("{:?}", i.backend),
        Err(Error::Disconnected) => "stale".to_owned(),
        Err(e) => panic!("inspect: {e}"),
    };
    let sweep = bips::monitor::sweep(&name, false).unwrap();
    say(format!(
        "RESULT listed={listed} info={info} removed={}",
        matches!(sweep, bips::monitor::Sweep::Removed { .. })
    ));
}

fn sweep_in_child(dir: &Path, name: &str) -> Fields {
    let mut c = spawn(ENTRY, "sweeper")
        .env("BIPS_CHANNEL", name)
        .env("BIPS_SOCKET_DIR", dir.display())
        .start();
    let r = c.expect_result(Duration::from_secs(10));
    c.expect_success(Duration::from_secs(10));
    r
}

#[test]
fn bips_clean_removes_a_stale_memfd_socket_and_keeps_a_live_one() {
    let dir = Dir::new("mfdc");
    let ch = Channel::new("mfdc");
    let mut p = start_producer(&dir, &ch, 0);
    let r = sweep_in_child(&dir.0, ch.name());
    assert_eq!(
        (r.str("listed"), r.str("info"), r.str("removed")),
        ("true", "Memfd", "false"),
        "a live memfd channel is listed, inspected and kept"
    );
    assert!(sock_path(&dir.0, ch.name()).exists());
    p.kill9();
    let _ = p.wait_exit(Duration::from_secs(10));
    let r = sweep_in_child(&dir.0, ch.name());
    assert_eq!(
        (r.str("listed"), r.str("info"), r.str("removed")),
        ("true", "stale", "true"),
        "a dead producer's socket is listed as stale and removed"
    );
    assert!(!sock_path(&dir.0, ch.name()).exists());
    assert!(!dir.0.join(format!("bips.{}.lock", ch.name())).exists());
}

/// A consumer in a "container": its own mount (a fresh, empty /dev/shm),
/// IPC and PID namespaces; it shares only the socket directory.
fn boxed_consumer_role() {
    let name: String = env("BIPS_CHANNEL");
    let dir: String = env("BIPS_DIR");
    let shm_entries = std::fs::read_dir("/dev/shm").unwrap().count();
    let consumer = Consumer::open_with(&name, &consumer_options(Path::new(&dir))).unwrap();
    say(format!(
        "READY pid={} shm_entries={shm_entries}",
        std::process::id()
    ));
    say(format!("RESULT received={}", drain_checked(&consumer, 0)));
}

/// Why the namespaces of a "container" cannot be made here, if they cannot.
fn namespaces_unavailable() -> Option<String> {
    let out = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount", "--ipc", "--kill-child"])
        .args(["sh", "-c", "mount -t tmpfs tmpfs /dev/shm"])
        .output();
    match out {
        Err(e) => Some(format!("cannot run unshare: {e}")),
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "unshare --pid --mount --ipc with a tmpfs on /dev/shm is not permitted here: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
    }
}

#[test]
fn a_consumer_in_its_own_namespaces_sharing_only_the_socket_directory_receives() {
    if let Some(why) = namespaces_unavailable() {
        skip(
            "a_consumer_in_its_own_namespaces_sharing_only_the_socket_directory_receives",
            &why,
        );
        return;
    }
    let dir = Dir::new("mfdn");
    let ch = Channel::new("mfdn");
    let producer = Producer::create(ch.name(), &memfd_options(&dir.0)).unwrap();
    let mut c = spawn(ENTRY, "boxed-consumer")
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_DIR", dir.0.display())
        .wrapper([
            "unshare",
            "--pid",
            "--fork",
            "--mount",
            "--ipc",
            "--kill-child",
            "sh",
            "-c",
            "mount -t tmpfs tmpfs /dev/shm && exec \"$@\"",
            "sh",
        ])
        .start();
    let ready = c.expect_line("READY", Duration::from_secs(10));
    assert!(
        ready.contains("pid=1 ") && ready.contains("shm_entries=0"),
        "a PID namespace and an empty /dev/shm of its own: {ready}"
    );
    await_consumers(&producer, 1, Duration::from_secs(10));
    for seq in 0..N {
        publish_checked(&producer, seq, TAG);
    }
    drop(producer);
    let r = c.expect_result(Duration::from_secs(20));
    c.expect_success(Duration::from_secs(10));
    assert_eq!(r.u64("received"), N);
}

/// A real-time producer as a robotics loop runs it: SCHED_FIFO, pinned to
/// one CPU, spinning (never sleeping) until its consumer comes.
fn rt_producer_role() {
    let name: String = env("BIPS_CHANNEL");
    let dir: String = env("BIPS_DIR");
    // SAFETY: sched_* calls on this thread (pid 0) with local arguments.
    let rt = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        let pinned = libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) == 0;
        let param = libc::sched_param { sched_priority: 10 };
        pinned && libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0
    };
    if !rt {
        say(format!(
            "RESULT rt=0 why={}",
            std::io::Error::last_os_error()
        ));
        return;
    }
    let producer = Producer::create(
        &name,
        &memfd_options(Path::new(&dir)).wait(bips::WaitStrategy::Spin),
    )
    .unwrap();
    say("READY");
    let t = std::time::Instant::now();
    while producer.consumer_count() == 0 {
        std::hint::spin_loop(); // never yields the CPU
        assert!(t.elapsed() < Duration::from_secs(20), "no consumer came");
    }
    publish_checked(&producer, 0, TAG);
    drop(producer);
    say("RESULT rt=1");
}

#[test]
fn a_spinning_real_time_producer_still_serves_its_memfd_channel() {
    let dir = Dir::new("mfdrt");
    let ch = Channel::new("mfdrt");
    let mut p = spawn(ENTRY, "rt-producer")
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_DIR", dir.0.display())
        .start();
    let line = p.expect_line_at("RE", Duration::from_secs(10)).1; // READY or RESULT
    if line.starts_with("RESULT rt=0") {
        p.expect_success(Duration::from_secs(10));
        skip(
            "a_spinning_real_time_producer_still_serves_its_memfd_channel",
            &format!("SCHED_FIFO is not permitted here: {line}"),
        );
        return;
    }
    assert_eq!(line, "READY");
    // The producer's thread spins at SCHED_FIFO on CPU 0; its socket server
    // inherited that priority: it must still answer (within the 2 s a
    // client waits).
    let consumer = Consumer::open_with(ch.name(), &consumer_options(&dir.0))
        .expect("open a channel whose producer spins at real-time priority");
    let mut scratch = Vec::new();
    check_sample(
        &consumer.recv_timeout(Duration::from_secs(10)).unwrap(),
        0,
        TAG,
        4096,
        &mut scratch,
    )
    .unwrap();
    let r = p.expect_result(Duration::from_secs(20));
    assert_eq!(r.u64("rt"), 1);
    p.expect_success(Duration::from_secs(10));
}
