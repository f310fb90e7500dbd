//! `bips clean` / `bips list` / `bips inspect` (the `bips::monitor` API) on
//! what users really find in /dev/shm:
//!
//! * T1 (issue 13 item 4): a sweep holds the object's producer lock across
//!   its liveness check and its unlink, so a producer that takes a stale
//!   object over meanwhile never loses its fresh channel;
//! * item 7: an empty, truncated or smashed object that nobody locks is
//!   removed (before: every sweep failed on it); a locked one is kept; a
//!   symlink, FIFO or directory is kept and named for what it is;
//! * item 8: monitoring opens read-only: another user can list and inspect a
//!   `0o644` channel; cleaning it needs write access and says so.

use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bips::monitor::{self, Sweep};
use bips::{Consumer, Options, Producer};
use bips_tests::*;

const ENTRY: &str = "child_entry";

/// Children of this file start here (a no-op in a normal test run).
#[test]
fn child_entry() {
    bips_tests::child_entry(&[
        ("monitor-as", monitor_as_role),
        ("sweep-once", sweep_once_role),
    ]);
}

/// The bytes of a complete, formatted channel (of a producer that has gone).
fn channel_image() -> Vec<u8> {
    let ch = Channel::new("clean-image");
    let p = Producer::create(ch.name(), &Options::new(2, 64)).unwrap();
    let bytes = std::fs::read(ch.path()).unwrap();
    drop(p);
    bytes
}

/// Creates `path` with `bytes` (fails if it exists), open read-write.
fn plant(path: &Path, bytes: &[u8]) -> std::io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    std::io::Write::write_all(&mut &f, bytes)?;
    Ok(f.into())
}

// ------------------------------------------------------------------ item 4

/// Says `SWEEPING`, sweeps `BIPS_CHANNEL` once, reports what it found.
fn sweep_once_role() {
    let name: String = env("BIPS_CHANNEL");
    say("SWEEPING");
    let r = monitor::sweep(&name, false);
    say(format!(
        "RESULT sweep={}",
        format!("{r:?}").replace(' ', "_")
    ));
}

/// A sweep racing a producer's takeover of a stale channel, made
/// deterministic: the sweeper runs under `strace`, which holds each of its
/// `unlink` calls for 500 ms. A stale channel is under the
/// name; while the sweep sits in its unlink, this process creates a producer
/// of the name. Before the fix the producer took the stale object over at
/// once and the sweep's delayed unlink then removed the producer's new
/// channel (its inode check had passed before the takeover). Now the sweep
/// holds the stale object's lock until its unlink is done: the producer waits
/// (retrying on `ChannelBusy`) and its channel stays.
#[test]
fn sweep_paused_before_its_unlink_never_removes_a_takeover() {
    let _s = serial();
    if Command::new("strace").arg("-V").output().is_err() {
        skip(
            "sweep_paused_before_its_unlink",
            "`strace` is not installed",
        );
        return;
    }
    let image = channel_image();
    let ch = Channel::new("clean-paused");
    drop(plant(&ch.path(), &image).unwrap());
    let mut kid = spawn(ENTRY, "sweep-once")
        .wrapper([
            "strace",
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "trace=unlink,unlinkat",
            "-e",
            "inject=unlink,unlinkat:delay_enter=500000",
        ])
        .env("BIPS_CHANNEL", ch.name())
        .start();
    kid.expect_line("SWEEPING", Duration::from_secs(10));
    // The sweep reaches its (delayed) unlink within microseconds.
    std::thread::sleep(Duration::from_millis(150));
    assert!(ch.exists(), "the sweep's unlink was not delayed");
    let t = std::time::Instant::now();
    let producer = loop {
        match Producer::create(ch.name(), &Options::new(2, 64)) {
            Ok(p) => break p,
            Err(bips::Error::ChannelBusy { .. }) if t.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("create: {e}"),
        }
    };
    let waited = t.elapsed();
    let r = kid.expect_result(Duration::from_secs(10));
    kid.expect_success(Duration::from_secs(5));
    println!(
        "sweep: {}; producer created after {waited:?}",
        r.str("sweep")
    );
    assert!(
        Consumer::open(ch.name()).is_ok(),
        "the sweep removed the live producer's channel (sweep said {})",
        r.str("sweep")
    );
    drop(producer);
    ch.assert_removed();
}

// ------------------------------------------------------------------ item 7

/// Dead objects that cannot be read as channels are removed: before, every
/// sweep answered their open/map error and exited 1.
#[test]
fn unreadable_dead_objects_are_removed_and_say_what_they_were() {
    let image = channel_image();
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("empty", Vec::new(), "empty object"),
        (
            "truncated",
            image[..image.len() / 2].to_vec(),
            "truncated object",
        ),
        ("smashed", vec![0xA5; 8192], "unreadable header"),
        ("stale", image.clone(), "stale channel"),
    ];
    for (tag, bytes, what) in cases {
        let ch = Channel::new(&format!("clean-{tag}"));
        drop(plant(&ch.path(), &bytes).unwrap());
        // dry run: says so, removes nothing.
        match monitor::sweep(ch.name(), true) {
            Ok(Sweep::Removed { what: w }) => assert!(w.contains(what), "{tag}: {w}"),
            other => panic!("{tag}: dry run: {other:?}"),
        }
        assert!(ch.exists(), "{tag}: dry run removed it");
        // The old API too (it used to answer the open error).
        assert!(
            monitor::remove_if_dead(ch.name(), false)
                .unwrap_or_else(|e| panic!("{tag}: remove_if_dead: {e}")),
            "{tag}: not removed"
        );
        assert!(!ch.exists(), "{tag}: still there");
    }
}

/// An unreadable object whose producer lock is held (someone is alive with
/// it open) is kept: judged by its lock, not by its bytes.
#[test]
fn locked_unreadable_object_is_kept() {
    // No child may be forked (by another test) while we hold the lock's fd.
    let _s = serial();
    let ch = Channel::new("clean-locked-empty");
    let fd = plant(&ch.path(), &[]).unwrap();
    assert!(ofd_lock(&fd, 0));
    assert_eq!(monitor::sweep(ch.name(), false).unwrap(), Sweep::InUse);
    assert!(ch.exists());
    // A consumer byte held (producer gone) keeps it too.
    drop(fd);
    let fd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(ch.path())
        .unwrap();
    let fd: OwnedFd = fd.into();
    assert!(ofd_lock(&fd, 1 + 5));
    assert_eq!(monitor::sweep(ch.name(), false).unwrap(), Sweep::InUse);
    assert!(ch.exists());
    drop(fd);
    assert!(matches!(
        monitor::sweep(ch.name(), false).unwrap(),
        Sweep::Removed { .. }
    ));
    assert!(!ch.exists());
}

/// Things under a channel's name that are not shared-memory objects are
/// kept and named; bips never follows or opens them.
#[test]
fn symlink_fifo_and_directory_are_kept_and_named() {
    let target = Channel::new("clean-target");
    drop(plant(&target.path(), &[0u8; 16]).unwrap());
    let link = Channel::new("clean-symlink");
    std::os::unix::fs::symlink(target.path(), link.path()).unwrap();
    let fifo = Channel::new("clean-fifo");
    let c = std::ffi::CString::new(fifo.path().as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let dir = Channel::new("clean-dir");
    std::fs::create_dir(dir.path()).unwrap();
    let _rmdir = RemoveDir(dir.path());

    for (ch, what) in [
        (&link, "a symbolic link"),
        (&fifo, "a FIFO"),
        (&dir, "a directory"),
    ] {
        match monitor::sweep(ch.name(), false) {
            Ok(Sweep::NotAnObject { what: w }) => assert!(w.starts_with(what), "{w}"),
            other => panic!("{what}: {other:?}"),
        }
        assert!(ch.exists(), "{what} was removed");
        // `bips list` / `inspect` say what it is instead of a raw errno.
        let e = monitor::inspect(ch.name()).unwrap_err().to_string();
        assert!(e.contains(what) && e.contains("not a bips channel"), "{e}");
    }
    // The symlink's target was not touched either.
    assert!(target.exists());
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

// ------------------------------------------------------------------ item 8

/// Runs `monitor::inspect`, `has_live_participants` and `sweep` on
/// `BIPS_CHANNEL` and reports each outcome.
fn monitor_as_role() {
    let name: String = env("BIPS_CHANNEL");
    // SAFETY: geteuid cannot fail and has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let inspect = match monitor::inspect(&name) {
        Ok(i) => format!(
            "ok:alive={}:consumers={}:head={}",
            i.producer_alive,
            i.consumers.iter().filter(|c| c.alive).count(),
            i.head
        ),
        Err(e) => format!("err:{}", format!("{e:?}").replace(' ', "_")),
    };
    let live = match monitor::has_live_participants(&name) {
        Ok(b) => b.to_string(),
        Err(e) => format!("err:{}", format!("{e:?}").replace(' ', "_")),
    };
    let sweep = match monitor::sweep(&name, false) {
        Ok(Sweep::NoAccess { uid }) => format!("NoAccess:{uid}"),
        Ok(s) => format!("{s:?}").replace(' ', "_"),
        Err(e) => format!("err:{}", format!("{e:?}").replace(' ', "_")),
    };
    say(format!(
        "RESULT uid={uid} inspect={inspect} live={live} sweep={sweep}"
    ));
}

#[test]
fn other_user_monitors_a_0644_channel_read_only_and_may_not_clean_it() {
    let _s = serial();
    if let Some(why) = other_users_unavailable() {
        skip("other_user_monitors_a_0644_channel", why);
        return;
    }
    let (exe, _tmp) = exe_for_other_users("clean");
    let ch = Channel::new("clean-0644");
    let producer = Producer::create(ch.name(), &Options::new(4, 64).mode(0o644)).unwrap();
    let ino = std::fs::metadata(ch.path()).unwrap().ino();
    let consumer = Consumer::open(ch.name()).unwrap();
    for seq in 0..3 {
        publish_checked(&producer, seq, 0x0644);
    }
    let mut kid = spawn(ENTRY, "monitor-as")
        .exe(&exe)
        .wrapper([
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
        ])
        .env("BIPS_CHANNEL", ch.name())
        .label("monitor-as-nobody")
        .start();
    let r = kid.expect_result(Duration::from_secs(10));
    kid.expect_success(Duration::from_secs(5));
    assert_eq!(r.u64("uid"), 65534, "the child must run as nobody");
    assert_eq!(
        r.str("inspect"),
        "ok:alive=true:consumers=1:head=3",
        "read permission is enough to inspect"
    );
    assert_eq!(r.str("live"), "true");
    assert_eq!(r.str("sweep"), "NoAccess:0", "cleaning needs write access");
    assert_eq!(std::fs::metadata(ch.path()).unwrap().ino(), ino);
    drop(consumer);
    drop(producer);
    ch.assert_removed();
}
