//! Harness for the cross-process tests of bips (`tests/tests/*.rs`).
//!
//! # Real processes: the self-re-exec pattern
//!
//! A test spawns its own test binary ([`std::env::current_exe`]) with
//! `--exact <entry> --nocapture --test-threads=1` and `BIPS_ROLE=<role>` (plus
//! `BIPS_*` variables describing the job). Each test file has one entry test
//! that calls [`child_entry`]: it returns at once in a normal run (no
//! `BIPS_ROLE`), and runs the role's function in a child. Children talk to
//! their parent with lines on stdout (`READY ...`, `RESULT key=value ...`), get
//! orders on stdin, and report a violation by panicking (the child test fails,
//! so the process exits non-zero with the panic message on stderr, which the
//! parent shows).
//!
//! # Nothing left behind
//!
//! * [`Channel`] makes a unique channel name (pid + tag + counter) and removes
//!   `/dev/shm/bips.<name>` when dropped; [`Channel::assert_removed`] checks
//!   that a cleanly exited producer removed it itself.
//! * [`Proc`] runs each child in its own process group and `SIGKILL`s the
//!   whole group when dropped (a failing test leaves no process behind); every
//!   child also has a watchdog that exits it after [`CHILD_WATCHDOG`], and dies
//!   with its parent (`PR_SET_PDEATHSIG`).
//! * Every wait has a timeout, so a bug fails a test instead of hanging it.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A child that is still running after this long exits on its own (code 3).
pub const CHILD_WATCHDOG: Duration = Duration::from_secs(30);

/// Environment variable naming a child's role.
pub const ROLE_VAR: &str = "BIPS_ROLE";

// ------------------------------------------------------------------ channels

/// A unique channel name whose `/dev/shm/bips.<name>` is removed on drop.
#[derive(Debug)]
pub struct Channel {
    name: String,
}

impl Channel {
    /// A fresh name: `bt-<tag>-<pid>-<counter>-<nanos>` (never used before by
    /// this or a concurrent test process).
    pub fn new(tag: &str) -> Channel {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("bt-{tag}-{}-{n}-{nanos}", std::process::id());
        assert!(
            !shm_path(&name).exists(),
            "{name} exists already: names are not unique"
        );
        Channel { name }
    }

    /// Guards a name made elsewhere (e.g. one of a particular length).
    pub fn adopt(name: String) -> Channel {
        Channel { name }
    }

    /// The channel name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/dev/shm/bips.<name>`.
    pub fn path(&self) -> PathBuf {
        shm_path(&self.name)
    }

    /// Whether the channel's name is taken now: its shared-memory object,
    /// or, in a run on the memfd backend ([`memfd_run`]), its socket.
    pub fn exists(&self) -> bool {
        // `symlink_metadata`: a dangling or planted entry counts too.
        std::fs::symlink_metadata(self.path()).is_ok()
            || memfd_run().is_some_and(|dir| {
                std::fs::symlink_metadata(dir.join(format!("bips.{}.sock", self.name))).is_ok()
            })
    }

    /// Asserts that `/dev/shm/bips.<name>` is gone (the producer removed it
    /// when it exited cleanly).
    #[track_caller]
    pub fn assert_removed(&self) {
        assert!(
            !self.exists(),
            "{} still exists after its producer exited cleanly",
            self.path().display()
        );
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path());
        if let Some(dir) = memfd_run() {
            for suffix in ["sock", "lock"] {
                let _ = std::fs::remove_file(dir.join(format!("bips.{}.{suffix}", self.name)));
            }
        }
    }
}

/// In a run of the suite on the memfd backend (`BIPS_BACKEND=memfd`, the
/// `test` stage's second pass): the socket directory its channels live in.
/// Tests about `/dev/shm` objects themselves pin `Backend::Shm`.
pub fn memfd_run() -> Option<PathBuf> {
    if std::env::var("BIPS_BACKEND").as_deref() != Ok("memfd") {
        return None;
    }
    Some(bips::socket_dir(None))
}

/// `/dev/shm/bips.<name>`.
pub fn shm_path(name: &str) -> PathBuf {
    PathBuf::from(format!("/dev/shm/bips.{name}"))
}

// ------------------------------------------------------------------ payloads

/// SplitMix64 finaliser: a good 64-bit mix of `x`.
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A small, fast PRNG (xorshift64*), good enough for test data.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (any seed, 0 included).
    pub fn new(seed: u64) -> Rng {
        Rng(mix64(seed) | 1)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Length of the payload of sample `seq` in a buffer of `cap` bytes: between
/// 16 and `cap`, varying with `seq`.
pub fn payload_len(seq: u64, cap: usize) -> usize {
    assert!(cap >= 16);
    16 + (mix64(seq ^ 0x5EED) % (cap as u64 - 15)) as usize
}

/// Fills `buf` with the payload of sample `seq` of a stream tagged `tag`:
/// `seq` (LE), `tag` (LE), then pseudo-random bytes derived from both.
pub fn fill_payload(seq: u64, tag: u64, buf: &mut [u8]) {
    let mut rng = Rng::new(seq ^ tag.rotate_left(29));
    let mut chunks = buf.chunks_exact_mut(8);
    for (i, c) in (&mut chunks).enumerate() {
        let v = match i {
            0 => seq,
            1 => tag,
            _ => rng.next_u64(),
        };
        c.copy_from_slice(&v.to_le_bytes());
    }
    let rest = chunks.into_remainder();
    let last = rng.next_u64().to_le_bytes();
    let n = rest.len();
    rest.copy_from_slice(&last[..n]);
}

/// Checks `data` byte for byte against the payload of `seq` in stream `tag`
/// (`scratch` is reused to avoid allocating per sample).
pub fn verify_payload(
    seq: u64,
    tag: u64,
    data: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<(), String> {
    scratch.clear();
    scratch.resize(data.len(), 0);
    fill_payload(seq, tag, scratch);
    if data == &scratch[..] {
        return Ok(());
    }
    let at = data
        .iter()
        .zip(scratch.iter())
        .position(|(a, b)| a != b)
        .unwrap_or(0);
    Err(format!(
        "payload of seq {seq} (tag {tag:#x}, {} bytes) differs at byte {at}: got {:#04x}, want {:#04x}{}",
        data.len(),
        data[at],
        scratch[at],
        if at < 16 {
            format!(
                " (header says seq {} tag {:#x})",
                u64_at(data, 0),
                u64_at(data, 8)
            )
        } else {
            String::new()
        }
    ))
}

fn u64_at(data: &[u8], off: usize) -> u64 {
    data.get(off..off + 8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
        .unwrap_or(u64::MAX)
}

/// Writes the metadata of sample `seq` (`seq`, `tag`, LE) into `meta` (>= 16 B).
pub fn fill_meta(seq: u64, tag: u64, meta: &mut [u8]) {
    meta[..8].copy_from_slice(&seq.to_le_bytes());
    meta[8..16].copy_from_slice(&tag.to_le_bytes());
}

/// Checks the metadata written by [`fill_meta`].
pub fn verify_meta(seq: u64, tag: u64, meta: &[u8]) -> Result<(), String> {
    let (s, t) = (u64_at(meta, 0), u64_at(meta, 8));
    if (s, t) == (seq, tag) {
        Ok(())
    } else {
        Err(format!(
            "metadata of seq {seq} says seq {s} tag {t:#x} (want tag {tag:#x})"
        ))
    }
}

/// FNV-1a 64 of `data`.
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// Folds one payload's checksum into a stream checksum (order-sensitive).
pub fn fold_checksum(acc: u64, payload: &[u8]) -> u64 {
    mix64(acc ^ fnv1a(payload))
}

/// The stream checksum a consumer must report after receiving sequences
/// `0..n` of stream `tag` from buffers of `cap` bytes (see
/// [`fold_checksum`], [`payload_len`], [`fill_payload`]).
pub fn expected_checksum(n: u64, tag: u64, cap: usize) -> u64 {
    let mut buf = vec![0u8; cap];
    let mut acc = 0;
    for seq in 0..n {
        let len = payload_len(seq, cap);
        fill_payload(seq, tag, &mut buf[..len]);
        acc = fold_checksum(acc, &buf[..len]);
    }
    acc
}

// ------------------------------------------------------------------ children

/// The role of this process: `None` in a normal test run (the parent).
pub fn role() -> Option<String> {
    std::env::var(ROLE_VAR).ok()
}

/// Runs the child role named by `BIPS_ROLE` among `roles`; returns at once
/// when `BIPS_ROLE` is unset (a normal test run). Call it from one `#[test]`
/// per test file (the "entry" test children are started with).
pub fn child_entry(roles: &[(&str, fn())]) {
    let Some(role) = role() else { return };
    start_watchdog(CHILD_WATCHDOG);
    match roles.iter().find(|(r, _)| *r == role) {
        Some((_, f)) => f(),
        None => panic!("unknown {ROLE_VAR} {role:?}"),
    }
}

fn start_watchdog(after: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(after);
        eprintln!("WATCHDOG: child still running after {after:?}; exiting");
        std::process::exit(3);
    });
}

/// A `BIPS_*` variable of this child, parsed; panics when missing or invalid.
#[track_caller]
pub fn env<T: std::str::FromStr>(var: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    let v = std::env::var(var).unwrap_or_else(|_| panic!("child needs {var}"));
    v.parse()
        .unwrap_or_else(|e| panic!("{var}={v:?} does not parse: {e:?}"))
}

/// Like [`env()`], with a default when the variable is unset.
#[track_caller]
pub fn env_or<T: std::str::FromStr>(var: &str, default: T) -> T
where
    T::Err: std::fmt::Debug,
{
    match std::env::var(var) {
        Ok(_) => env(var),
        Err(_) => default,
    }
}

/// Prints one line for the parent and flushes it (so it survives a kill -9).
pub fn say(line: impl AsRef<str>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.as_ref());
    let _ = out.flush();
}

/// Reads the next line the parent sends on stdin (`None` at EOF).
pub fn read_order() -> Option<String> {
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim().to_owned()),
    }
}

/// Waits for order `want` on stdin; panics on EOF or another order.
#[track_caller]
pub fn expect_order(want: &str) {
    match read_order() {
        Some(o) if o == want => {}
        other => panic!("expected order {want:?} on stdin, got {other:?}"),
    }
}

/// Polls `cond` every millisecond until it holds (`true`) or `timeout`
/// passes (`false`).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// How to start a child: see [`spawn`].
#[derive(Debug)]
pub struct Spawn {
    entry: String,
    role: String,
    envs: Vec<(String, String)>,
    wrapper: Vec<OsString>,
    exe: Option<PathBuf>,
    label: Option<String>,
}

/// Prepares a child running `role` through the entry test `entry` (the name
/// of the `#[test]` that calls [`child_entry`] in the same test file).
pub fn spawn(entry: &str, role: &str) -> Spawn {
    Spawn {
        entry: entry.to_owned(),
        role: role.to_owned(),
        envs: Vec::new(),
        wrapper: Vec::new(),
        exe: None,
        label: None,
    }
}

impl Spawn {
    /// Sets `BIPS_<var>`-style variable `key` (pass the full name).
    pub fn env(mut self, key: &str, value: impl ToString) -> Spawn {
        self.envs.push((key.to_owned(), value.to_string()));
        self
    }

    /// Runs the test binary through a wrapper command (`unshare ...`,
    /// `setpriv ...`, `strace ...`): `wrapper[0]` is the program.
    pub fn wrapper<I, S>(mut self, wrapper: I) -> Spawn
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.wrapper = wrapper.into_iter().map(Into::into).collect();
        self
    }

    /// Runs this executable instead of [`std::env::current_exe`] (a copy of it).
    pub fn exe(mut self, exe: &Path) -> Spawn {
        self.exe = Some(exe.to_owned());
        self
    }

    /// Names the child in failure messages (default: its role).
    pub fn label(mut self, label: &str) -> Spawn {
        self.label = Some(label.to_owned());
        self
    }

    /// The command line, for wrappers such as `strace` that a test runs itself.
    pub fn command(&self) -> Command {
        let exe = self
            .exe
            .clone()
            .unwrap_or_else(|| std::env::current_exe().expect("current_exe"));
        let mut cmd = match self.wrapper.split_first() {
            Some((prog, args)) => {
                let mut c = Command::new(prog);
                c.args(args).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        cmd.args(["--exact", &self.entry, "--nocapture", "--test-threads=1"])
            .env(ROLE_VAR, &self.role)
            .env("RUST_BACKTRACE", "1")
            .current_dir("/");
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts the child: its own process group, stdin/stdout/stderr piped,
    /// killed with its parent.
    pub fn start(self) -> Proc {
        let label = self.label.clone().unwrap_or_else(|| self.role.clone());
        let mut cmd = self.command();
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: the closure runs in the forked child before exec and only
        // makes one async-signal-safe system call (prctl), touching no locks
        // or allocations of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning child {label}: {e}"));
        let pid = child.id() as i32;
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(mut line) = line else { break };
                // libtest prints `test <name> ... ` without a newline before
                // the test's own output: strip it.
                if line.starts_with("test ") {
                    if let Some(i) = line.find(" ... ") {
                        line = line[i + 5..].to_owned();
                    }
                }
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let err_buf = Arc::new(Mutex::new(String::new()));
        let err_buf2 = Arc::clone(&err_buf);
        let err_thread = std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut chunk = [0u8; 4096];
            loop {
                match r.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => lock(&err_buf2).push_str(&String::from_utf8_lossy(&chunk[..n])),
                }
            }
        });
        Proc {
            stdin: child.stdin.take(),
            child,
            pid,
            label,
            lines,
            seen: Vec::new(),
            stderr: err_buf,
            err_thread: Some(err_thread),
            status: None,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running child process (see the crate docs). Killed, with its whole
/// process group, when dropped.
#[derive(Debug)]
pub struct Proc {
    child: std::process::Child,
    pid: i32,
    label: String,
    stdin: Option<ChildStdin>,
    lines: Receiver<(Instant, String)>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
    err_thread: Option<std::thread::JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// The child's PID (also its process group id).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits for the next stdout line starting with `prefix` (earlier lines
    /// are kept for diagnostics); returns it with the instant it arrived.
    /// Panics after `timeout`, or when the child exits first, showing what the
    /// child printed.
    #[track_caller]
    pub fn expect_line_at(&mut self, prefix: &str, timeout: Duration) -> (Instant, String) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return (at, line);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.kill();
                    panic!(
                        "child {} printed no {prefix:?} line within {timeout:?}\n{}",
                        self.label,
                        self.diagnostics()
                    );
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait_exit(Duration::from_secs(5));
                    panic!(
                        "child {} exited ({}) without printing a {prefix:?} line\n{}",
                        self.label,
                        describe(status),
                        self.diagnostics()
                    );
                }
            }
        }
    }

    /// [`Proc::expect_line_at`] without the instant.
    #[track_caller]
    pub fn expect_line(&mut self, prefix: &str, timeout: Duration) -> String {
        self.expect_line_at(prefix, timeout).1
    }

    /// Waits for a `RESULT ...` line and parses its `key=value` fields.
    #[track_caller]
    pub fn expect_result(&mut self, timeout: Duration) -> Fields {
        Fields::parse(&self.expect_line("RESULT", timeout))
    }

    /// Sends one order line to the child's stdin.
    #[track_caller]
    pub fn send(&mut self, order: &str) {
        let stdin = self.stdin.as_mut().expect("stdin was taken");
        if let Err(e) = writeln!(stdin, "{order}").and_then(|()| stdin.flush()) {
            panic!("sending {order:?} to child {}: {e}", self.label);
        }
    }

    /// Takes the child's stdin (to send orders from another thread).
    pub fn take_stdin(&mut self) -> ChildStdin {
        self.stdin.take().expect("stdin was taken")
    }

    /// Waits at most `timeout` for the child to exit; panics (after killing
    /// it) if it does not.
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => {
                    self.status = Some(s);
                    // The child's stderr is complete once it has exited.
                    if let Some(t) = self.err_thread.take() {
                        let _ = t.join();
                    }
                    return s;
                }
                Ok(None) => {}
                Err(e) => panic!("waiting for child {}: {e}", self.label),
            }
            if Instant::now() >= deadline {
                let _ = self.kill();
                panic!(
                    "child {} did not exit within {timeout:?} (hung?); killed it\n{}",
                    self.label,
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits for the child to exit with status 0 (not a signal, not a
    /// panic); panics with its output otherwise.
    #[track_caller]
    pub fn expect_success(&mut self, timeout: Duration) {
        let s = self.wait_exit(timeout);
        if !s.success() {
            panic!(
                "child {} failed: {}\n{}",
                self.label,
                describe(s),
                self.diagnostics()
            );
        }
    }

    /// Sends `SIGKILL` to the child (only the child, not its group).
    pub fn kill9(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; `pid` is our
        // child, not yet reaped (we reap only in `wait_exit`/drop).
        let r = unsafe { libc::kill(self.pid, libc::SIGKILL) };
        assert_eq!(
            r,
            0,
            "kill -9 {}: {}",
            self.pid,
            std::io::Error::last_os_error()
        );
    }

    fn kill(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            // SAFETY: as in `kill9`; the negative pid names the child's own
            // process group (it is the leader), i.e. it and its descendants.
            unsafe {
                libc::kill(-self.pid, libc::SIGKILL);
                libc::kill(self.pid, libc::SIGKILL);
            }
            if let Ok(s) = self.child.wait() {
                self.status = Some(s);
            }
        }
        self.status
    }

    /// What the child printed so far (stdout lines seen and stderr).
    pub fn diagnostics(&self) -> String {
        let mut out = self.seen.clone();
        while let Ok((_, line)) = self.lines.try_recv() {
            out.push(line);
        }
        format!(
            "--- stdout of {} ---\n{}\n--- stderr of {} ---\n{}",
            self.label,
            out.join("\n"),
            self.label,
            lock(&self.stderr)
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Kills the child's whole process group (wrappers' children too)
        // unless the child was already reaped: once reaped, its PID may be
        // reused, so its number no longer safely names our group.
        let _ = self.kill();
    }
}

/// Describes an exit status: `exit code N` or `killed by signal N`.
pub fn describe(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (_, Some(sig)) => format!("killed by signal {sig}"),
        _ => format!("{s:?}"),
    }
}

/// The `key=value` fields of a `RESULT` line.
#[derive(Clone, Debug)]
pub struct Fields {
    line: String,
    map: HashMap<String, String>,
}

impl Fields {
    /// Parses the whitespace-separated `key=value` tokens of `line`.
    pub fn parse(line: &str) -> Fields {
        let map = line
            .split_whitespace()
            .filter_map(|t| t.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Fields {
            line: line.to_owned(),
            map,
        }
    }

    /// Field `key` as text; panics when missing.
    #[track_caller]
    pub fn str(&self, key: &str) -> &str {
        self.map
            .get(key)
            .unwrap_or_else(|| panic!("no {key}= in {:?}", self.line))
    }

    /// Field `key` as a number; panics when missing or not a number.
    #[track_caller]
    pub fn u64(&self, key: &str) -> u64 {
        let v = self.str(key);
        v.parse()
            .unwrap_or_else(|_| panic!("{key}={v:?} is not a number in {:?}", self.line))
    }
}

// --------------------------------------------------------- processes, misc

/// PIDs whose parent is `pid` (scanning `/proc/*/stat`).
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut f = after.split_whitespace();
        let _state = f.next();
        if f.next().and_then(|s| s.parse::<i32>().ok()) == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Prints a clear skip notice (visible with `--nocapture` and in the test's
/// captured output).
pub fn skip(test: &str, why: &str) {
    println!("SKIPPED: {test}: {why}");
    eprintln!("SKIPPED: {test}: {why}");
}

/// Serialises the timing-sensitive tests of one test binary (libtest runs
/// tests on several threads): hold the guard for the whole test.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    lock(&LOCK)
}

/// The median of `v` (sorted in place).
pub fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// A [`bips::WaitStrategy`] by name: `park`, `spin`, `spinpark` (1 ms of
/// spinning) or `default`.
pub fn wait_strategy(name: &str) -> bips::WaitStrategy {
    match name {
        "park" => bips::WaitStrategy::Park,
        "spin" => bips::WaitStrategy::Spin,
        "spinpark" => bips::WaitStrategy::SpinThenPark {
            spin: Duration::from_millis(1),
        },
        "default" => bips::WaitStrategy::default(),
        other => panic!("unknown wait strategy {other:?}"),
    }
}

/// Opens `name` as a consumer starting at the oldest retained sample, with
/// wait strategy `wait` (see [`wait_strategy`]).
pub fn open_consumer(name: &str, wait: &str) -> bips::Result<bips::Consumer> {
    bips::Consumer::open_with(
        name,
        &bips::ConsumerOptions::new()
            .start(bips::Start::Oldest)
            .wait(wait_strategy(wait)),
    )
}

/// Loans a buffer from `producer`, writes the payload and metadata of `seq`
/// of stream `tag` (length [`payload_len`]) and publishes it; checks that the
/// producer assigned sequence `seq`.
#[track_caller]
pub fn publish_checked(producer: &bips::Producer, seq: u64, tag: u64) {
    let mut s = producer
        .loan_timeout(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("loan for seq {seq}: {e}"));
    write_sample(&mut s, seq, tag);
    let got = s
        .publish()
        .unwrap_or_else(|e| panic!("publish seq {seq}: {e}"));
    assert_eq!(got, seq, "the producer assigned another sequence");
}

/// Writes payload + metadata of `seq` of stream `tag` into a loaned sample.
pub fn write_sample(s: &mut bips::SampleMut<'_>, seq: u64, tag: u64) {
    let len = payload_len(seq, s.capacity());
    fill_payload(seq, tag, &mut s.as_mut_slice()[..len]);
    s.set_len(len);
    fill_meta(seq, tag, s.meta_mut());
}

/// Checks a received sample (payload byte for byte, length, metadata)
/// against sequence `seq` of stream `tag`.
pub fn check_sample(
    s: &bips::Sample<'_>,
    seq: u64,
    tag: u64,
    cap: usize,
    scratch: &mut Vec<u8>,
) -> Result<(), String> {
    if s.seq() != seq {
        return Err(format!("got seq {}, want {seq}", s.seq()));
    }
    if s.len() != payload_len(seq, cap) {
        return Err(format!(
            "seq {seq}: length {} but {} was published",
            s.len(),
            payload_len(seq, cap)
        ));
    }
    verify_meta(seq, tag, s.meta())?;
    verify_payload(seq, tag, s.as_slice(), scratch)
}

/// Waits until `producer` has `n` consumers attached; panics after `timeout`.
#[track_caller]
pub fn await_consumers(producer: &bips::Producer, n: usize, timeout: Duration) {
    if !wait_until(timeout, || producer.consumer_count() >= n) {
        panic!(
            "only {} of {n} consumers attached within {timeout:?}",
            producer.consumer_count()
        );
    }
}

/// Sends `SIGKILL` to `pid` (a process this test started) after `after`, from
/// another thread; the handle yields the instant of the kill.
pub fn kill_later(pid: i32, after: Duration) -> std::thread::JoinHandle<Instant> {
    std::thread::spawn(move || {
        std::thread::sleep(after);
        // SAFETY: kill has no memory-safety preconditions; the caller
        // guarantees `pid` is its own live (unreaped) child or grandchild.
        let r = unsafe { libc::kill(pid, libc::SIGKILL) };
        assert_eq!(r, 0, "kill -9 {pid}: {}", std::io::Error::last_os_error());
        Instant::now()
    })
}

// ---------------------------------------------------------------------------
// Other users (tests that run children as `nobody` or another uid through
// `setpriv`) and raw OFD locks (a stand-in for a live peer).

/// Why tests that run children as other users cannot run here, if they
/// cannot: they need root (to switch uid) and `setpriv` (util-linux).
pub fn other_users_unavailable() -> Option<&'static str> {
    if !is_root() {
        return Some("needs root (to run children as other uids)");
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        return Some("`setpriv` (util-linux) is not installed");
    }
    None
}

/// Removes a temporary directory when dropped.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether a user other than the owner may execute `path` (the file and
/// every directory above it).
pub fn executable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode())
            .unwrap_or(0)
    };
    mode(path) & 0o001 != 0 && path.ancestors().skip(1).all(|d| mode(d) & 0o001 != 0)
}

/// A copy of the running test binary that other users can execute (the
/// binary itself when they can), and the directory to remove afterwards.
pub fn exe_for_other_users(tag: &str) -> (PathBuf, Option<TempDir>) {
    use std::os::unix::fs::PermissionsExt;
    let exe = std::env::current_exe().unwrap();
    if executable_by_others(&exe) {
        return (exe, None);
    }
    let dir = TempDir(std::env::temp_dir().join(format!("bips-{tag}-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.0.join(format!("{tag}-test"));
    std::fs::copy(&exe, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(
        executable_by_others(&copy),
        "{} is not world-executable",
        copy.display()
    );
    (copy, Some(dir))
}

/// Takes the exclusive OFD lock on byte `byte` of `fd`, as a live producer
/// (byte 0) or consumer holds its liveness byte; `false` if another open
/// file description holds it.
pub fn ofd_lock(fd: &impl std::os::fd::AsRawFd, byte: i64) -> bool {
    // SAFETY: all-zero is a valid `flock`.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = byte;
    fl.l_len = 1;
    // SAFETY: `fd` is open; F_OFD_SETLK reads the valid `fl`.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) == 0 }
}
