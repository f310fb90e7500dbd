//! T2, leaving: a producer process that calls `bips::cleanup_on_signals()`
//! and gets SIGINT, SIGTERM or SIGHUP removes its channel and dies of that
//! signal (the conventional status); its consumers see `Disconnected`.
//! `remove_owned_channels` removes only the very object this process made.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use bips::{Consumer, Error, Options, Producer};
use bips_tests::*;

const ENTRY: &str = "child_entry";

/// Children of this file start here (a no-op in a normal test run).
#[test]
fn child_entry() {
    bips_tests::child_entry(&[("producer", producer_role)]);
}

/// Creates `BIPS_CHANNEL` (after `cleanup_on_signals` unless
/// `BIPS_NO_CLEANUP` is set), says READY, then publishes until killed.
fn producer_role() {
    let name: String = env("BIPS_CHANNEL");
    if std::env::var("BIPS_NO_CLEANUP").is_err() {
        bips::cleanup_on_signals().expect("cleanup_on_signals");
    }
    let p = Producer::create(&name, &Options::new(2, 4096)).expect("create");
    say("READY");
    loop {
        if let Some(s) = p.try_loan().expect("loan") {
            s.publish().expect("publish");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn signal_removes_channel(sig: i32, tag: &str) {
    let ch = Channel::new(tag);
    let mut child = spawn(ENTRY, "producer")
        .env("BIPS_CHANNEL", ch.name())
        .start();
    child.expect_line("READY", Duration::from_secs(10));
    assert!(ch.exists());
    let consumer = Consumer::open(ch.name()).expect("open");
    // SAFETY: kill(2) with the pid of our own child and a valid signal.
    assert_eq!(unsafe { libc::kill(child.pid(), sig) }, 0);
    let st = child.wait_exit(Duration::from_secs(5));
    assert_eq!(
        st.signal(),
        Some(sig),
        "the producer must die of signal {sig} (conventional status), got {st:?}"
    );
    assert!(
        !ch.exists(),
        "{} left behind after signal {sig}",
        ch.path().display()
    );
    // Its consumer drains what was published, then learns it is gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match consumer.recv_timeout(Duration::from_secs(1)) {
            Ok(_) => {}
            Err(Error::Disconnected) => break,
            Err(e) => panic!("consumer: {e}"),
        }
        assert!(std::time::Instant::now() < deadline, "never disconnected");
    }
}

#[test]
fn sigint_removes_the_channel_and_dies_of_sigint() {
    signal_removes_channel(libc::SIGINT, "sigint");
}

#[test]
fn sigterm_removes_the_channel_and_dies_of_sigterm() {
    signal_removes_channel(libc::SIGTERM, "sigterm");
}

#[test]
fn sighup_removes_the_channel_and_dies_of_sighup() {
    signal_removes_channel(libc::SIGHUP, "sighup");
}

/// The control: without `cleanup_on_signals` the segment stays (what the
/// helper exists for; also shows the test above can fail).
#[test]
fn without_cleanup_on_signals_sigterm_leaves_the_channel() {
    let ch = Channel::new("nocleanup");
    let mut child = spawn(ENTRY, "producer")
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_NO_CLEANUP", 1)
        .start();
    child.expect_line("READY", Duration::from_secs(10));
    // SAFETY: kill(2) with the pid of our own child and a valid signal.
    assert_eq!(unsafe { libc::kill(child.pid(), libc::SIGTERM) }, 0);
    let st = child.wait_exit(Duration::from_secs(5));
    assert_eq!(st.signal(), Some(libc::SIGTERM));
    assert!(ch.exists(), "nothing to clean: the control is broken");
    // `Channel`'s drop removes it.
}

/// In process: the registry removes live producers' channels, never an
/// object someone else put under the name since, and forgets dropped ones.
#[test]
fn remove_owned_channels_removes_only_our_objects() {
    let _s = serial();
    let a = Channel::new("owned-a");
    let b = Channel::new("owned-b");
    let gone = Channel::new("owned-gone");
    let pa = Producer::create(a.name(), &Options::new(2, 64)).expect("a");
    let pb = Producer::create(b.name(), &Options::new(2, 64)).expect("b");
    let pg = Producer::create(gone.name(), &Options::new(2, 64)).expect("gone");
    drop(pg); // deregistered: nothing to do for it
    assert!(!gone.exists());
    // Someone removes b's name and puts another object there.
    std::fs::remove_file(b.path()).unwrap();
    std::fs::write(b.path(), b"not ours").unwrap();
    let consumer = Consumer::open(a.name()).expect("open a");

    assert_eq!(bips::remove_owned_channels(), 1);
    assert!(!a.exists(), "our live channel must be removed");
    assert_eq!(
        std::fs::read(b.path()).unwrap(),
        b"not ours",
        "another object under our name must be left alone"
    );
    assert!(
        matches!(
            consumer.recv_timeout(Duration::from_secs(2)),
            Err(Error::Disconnected)
        ),
        "the channel must be marked closed"
    );
    // Already handled: a second call finds nothing; drops stay quiet.
    assert_eq!(bips::remove_owned_channels(), 0);
    drop((pa, pb));
    // A producer created afterwards is listed again.
    let c = Channel::new("owned-c");
    let pc = Producer::create(c.name(), &Options::new(2, 64)).expect("c");
    assert_eq!(bips::remove_owned_channels(), 1);
    assert!(!c.exists());
    drop(pc);
}

#[test]
fn a_producer_that_is_pid_1_exits_cleanly_on_sigterm() {
    // A container without an init runs the producer as PID 1, which has no
    // default action for SIGTERM: it must still remove its channel and exit
    // with the conventional status 128 + 15 (it died of SIGSEGV: the
    // emulated default action ended in abort(), which PID 1 ignores).
    let probe = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "true"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        skip(
            "a_producer_that_is_pid_1_exits_cleanly_on_sigterm",
            "unshare --pid is not available here",
        );
        return;
    }
    let ch = Channel::new("pid1");
    let mut child = spawn(ENTRY, "producer")
        .env("BIPS_CHANNEL", ch.name())
        .wrapper(["unshare", "--pid", "--fork", "--kill-child"])
        .start();
    child.expect_line("READY", Duration::from_secs(10));
    assert!(ch.exists());
    let inner = children_of(child.pid());
    assert_eq!(inner.len(), 1, "unshare should have one child: {inner:?}");
    // SAFETY: kill(2) of our grandchild (PID 1 of its namespace), a valid signal.
    assert_eq!(unsafe { libc::kill(inner[0], libc::SIGTERM) }, 0);
    let st = child.wait_exit(Duration::from_secs(10));
    // unshare exits with its child's status.
    assert_eq!(st.code(), Some(128 + libc::SIGTERM), "got {st:?}");
    assert!(!ch.exists(), "{} left behind", ch.path().display());
}
