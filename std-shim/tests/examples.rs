//! The example programs as users run them (real processes, real /dev/shm):
//! Ctrl-C and friends leave nothing behind, and errors are told in words.
//!
//! `cargo test -p bips` builds the examples next to this test binary
//! (`target/<profile>/examples/`); otherwise the test builds them.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/[<triple>/]<profile>/deps/examples-HASH
    let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = profile_dir.join("examples").join(name);
    if path.exists() {
        return path;
    }
    // `cargo test -p bips` builds the examples; `--test examples` or
    // `--tests` alone does not. Build them in a target dir of their own (the
    // cargo that runs us holds the lock of this one), once.
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let dir = built.get_or_insert_with(|| {
        let own = profile_dir.join("examples-for-tests");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-q", "-p", "bips", "--examples", "--target-dir"])
            .arg(&own)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let triple = profile_dir
            .parent()
            .and_then(Path::file_name)
            .and_then(|t| t.to_str())
            .filter(|t| t.contains("-linux-"));
        let mut sub = own.clone();
        if let Some(t) = triple {
            cmd.args(["--target", t]);
            sub = sub.join(t);
        }
        let st = cmd.status().expect("run cargo build --examples");
        assert!(st.success(), "cargo build -p bips --examples failed: {st}");
        sub.join(if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        })
        .join("examples")
    });
    let path = dir.join(name);
    assert!(path.exists(), "{} not built", path.display());
    path
}

/// A unique channel name, removed again on drop.
struct Chan(String);

impl Chan {
    fn new(tag: &str) -> Chan {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        Chan(format!("bt-ex{tag}-{}-0-{nanos}", std::process::id()))
    }
    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/dev/shm/bips.{}", self.0))
    }
    fn exists(&self) -> bool {
        std::fs::symlink_metadata(self.path()).is_ok()
    }
}

impl Drop for Chan {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path());
    }
}

/// The example producer on `ch`, in its own process group, for a long time.
fn producer(ch: &Chan) -> Child {
    Command::new(example("producer"))
        .args([&ch.0, "1000000", "50"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn the example producer")
}

fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

fn wait_exit(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the example did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn signal_to_group_leaves_nothing(sig: i32, tag: &str) {
    let ch = Chan::new(tag);
    let mut p = producer(&ch);
    assert!(
        wait_until(Duration::from_secs(10), || ch.exists()),
        "the producer did not create its channel"
    );
    // SAFETY: kill(2) of the process group our child leads (process_group(0)).
    assert_eq!(unsafe { libc::kill(-(p.id() as i32), sig) }, 0);
    let st = wait_exit(&mut p, Duration::from_secs(5));
    assert_eq!(st.signal(), Some(sig), "dies of the signal, got {st:?}");
    assert!(
        !ch.exists(),
        "{} left in /dev/shm after signal {sig}",
        ch.path().display()
    );
}

#[test]
fn example_producer_sigint_leaves_nothing_in_dev_shm() {
    signal_to_group_leaves_nothing(libc::SIGINT, "int");
}

#[test]
fn example_producer_sigterm_leaves_nothing_in_dev_shm() {
    signal_to_group_leaves_nothing(libc::SIGTERM, "term");
}

#[test]
fn example_producer_sighup_leaves_nothing_in_dev_shm() {
    signal_to_group_leaves_nothing(libc::SIGHUP, "hup");
}

/// A second producer on a live channel: the Display message, exit status 1
/// (not `Error: ChannelBusy { name: .. }`, the Debug form).
#[test]
fn example_producer_busy_channel_prints_the_message_and_exits_1() {
    let ch = Chan::new("busy");
    let mut first = producer(&ch);
    assert!(wait_until(Duration::from_secs(10), || ch.exists()));
    let out = Command::new(example("producer"))
        .args([&ch.0, "1", "50"])
        .output()
        .expect("run the second producer");
    let _ = first.kill();
    let _ = first.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    let want = bips::Error::ChannelBusy { name: ch.0.clone() }.to_string();
    assert!(
        err.contains(&want),
        "stderr must carry the Display message {want:?}, got {err:?}"
    );
    assert!(
        !err.contains("ChannelBusy {"),
        "Debug form printed: {err:?}"
    );
}

/// The same for the consumer: a bad channel name is told in words.
#[test]
fn example_consumer_bad_name_prints_the_message_and_exits_1() {
    let out = Command::new(example("consumer"))
        .arg("bad/name")
        .output()
        .expect("run the consumer");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    let want = bips::Consumer::open("bad/name").unwrap_err().to_string();
    assert!(err.contains(&want), "want {want:?}, got {err:?}");
    assert!(
        !err.contains("InvalidName {"),
        "Debug form printed: {err:?}"
    );
}
