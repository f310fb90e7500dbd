//! `bips demo` and `bips soak` as users run them (the built binary, real
//! processes, real /dev/shm): Ctrl-C, SIGTERM and SIGHUP to the process
//! group leave /dev/shm as it was and end the command by that signal (T2);
//! bad options are refused before anything starts; a failing child is
//! reported at once, with its reason.

use std::collections::BTreeSet;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

const BIPS: &str = env!("CARGO_BIN_EXE_bips");

/// The `bips.*` entries of /dev/shm that `pid`'s run may have made: its
/// channel(s) (`bips.demo-PID`, `bips.soak-PID-*`) and staging objects
/// (`bips..new-*`, named after the pid of the child that created them:
/// compared with the set from before the run).
fn entries(pid: u32) -> BTreeSet<String> {
    let mine = [format!("bips.demo-{pid}"), format!("bips.soak-{pid}-")];
    std::fs::read_dir("/dev/shm")
        .expect("/dev/shm")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("bips..new-") || mine.iter().any(|m| n.starts_with(m)))
        .collect()
}

fn staging() -> BTreeSet<String> {
    entries(0)
        .into_iter()
        .filter(|n| n.starts_with("bips..new-"))
        .collect()
}

fn start(args: &[&str]) -> Child {
    Command::new(BIPS)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group, as a shell's job: Ctrl-C goes to the group.
        .process_group(0)
        .spawn()
        .expect("spawn bips")
}

fn wait_exit(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if Instant::now() > deadline {
            // SAFETY: kill(2) of the process group our child leads.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            panic!("bips did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether process group `pgid` still has a member.
fn group_alive(pgid: u32) -> bool {
    // SAFETY: signal 0 only checks that the group exists.
    unsafe { libc::kill(-(pgid as i32), 0) == 0 }
}

/// Starts `bips ARGS` in its own process group, waits until `channel(pid)`
/// exists, sends `sig` to the group; everything must exit within 5 s, bips
/// by that signal, leaving /dev/shm as it was.
fn signal_leaves_nothing(args: &[&str], channel: fn(u32) -> String, sig: i32) {
    let before = staging();
    let mut child = start(args);
    let pid = child.id();
    let path = format!("/dev/shm/bips.{}", channel(pid));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !Path::new(&path).exists() {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("bips {args:?} exited with {st} before creating {path}");
        }
        assert!(Instant::now() < deadline, "{path} never appeared");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Let it run a little: consumers attached, frames flowing.
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) of the process group our child leads.
    assert_eq!(unsafe { libc::kill(-(pid as i32), sig) }, 0);
    let st = wait_exit(&mut child, Duration::from_secs(5));
    let t = Instant::now();
    while group_alive(pid) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let alive = group_alive(pid);
    let left: BTreeSet<String> = entries(pid).difference(&before).cloned().collect();
    // Tidy up before asserting.
    for n in &left {
        let _ = std::fs::remove_file(Path::new("/dev/shm").join(n));
    }
    if alive {
        // SAFETY: as above.
        unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
    }
    assert!(
        left.is_empty(),
        "left in /dev/shm after signal {sig}: {left:?}"
    );
    assert!(
        !alive,
        "processes of the group still running 5 s after signal {sig}"
    );
    assert_eq!(
        st.signal(),
        Some(sig),
        "bips must end by signal {sig} (conventional status), got {st}"
    );
}

const DEMO: &[&str] = &[
    "demo",
    "--seconds",
    "60",
    "--size",
    "65536",
    "--rate",
    "2000",
];
const SOAK: &[&str] = &[
    "soak",
    "--seconds",
    "60",
    "--policy",
    "block",
    "--consumers",
    "2",
    "--kill-every-ms",
    "0",
    "--producer-restarts",
    "0",
];

fn demo_channel(pid: u32) -> String {
    format!("demo-{pid}")
}

fn soak_channel(pid: u32) -> String {
    format!("soak-{pid}-block")
}

#[test]
fn demo_sigint_to_the_group_leaves_dev_shm_as_it_was() {
    signal_leaves_nothing(DEMO, demo_channel, libc::SIGINT);
}

#[test]
fn demo_sigterm_to_the_group_leaves_dev_shm_as_it_was() {
    signal_leaves_nothing(DEMO, demo_channel, libc::SIGTERM);
}

#[test]
fn demo_sighup_to_the_group_leaves_dev_shm_as_it_was() {
    signal_leaves_nothing(DEMO, demo_channel, libc::SIGHUP);
}

#[test]
fn soak_sigint_to_the_group_leaves_dev_shm_as_it_was() {
    signal_leaves_nothing(SOAK, soak_channel, libc::SIGINT);
}

#[test]
fn soak_sigterm_to_the_group_leaves_dev_shm_as_it_was() {
    signal_leaves_nothing(SOAK, soak_channel, libc::SIGTERM);
}

#[test]
fn soak_sighup_to_the_group_leaves_dev_shm_as_it_was() {
    signal_leaves_nothing(SOAK, soak_channel, libc::SIGHUP);
}

/// SIGTERM to the demo alone (`kill PID`, not the group): it stops its
/// children and removes the channel itself.
#[test]
fn demo_sigterm_to_the_parent_alone_stops_children_and_leaves_nothing() {
    let before = staging();
    let mut child = start(DEMO);
    let pid = child.id();
    let path = format!("/dev/shm/bips.demo-{pid}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !Path::new(&path).exists() {
        assert!(Instant::now() < deadline, "{path} never appeared");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let st = wait_exit(&mut child, Duration::from_secs(5));
    let t = Instant::now();
    while group_alive(pid) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let alive = group_alive(pid);
    let left: BTreeSet<String> = entries(pid).difference(&before).cloned().collect();
    for n in &left {
        let _ = std::fs::remove_file(Path::new("/dev/shm").join(n));
    }
    if alive {
        // SAFETY: as above.
        unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
    }
    assert!(left.is_empty(), "left in /dev/shm: {left:?}");
    assert!(!alive, "children still running 5 s after SIGTERM");
    assert_eq!(st.signal(), Some(libc::SIGTERM), "got {st}");
}

/// Runs `bips ARGS` to its end (at most `limit`); answers its output, how
/// long it took and what it left in /dev/shm.
fn run_quick(args: &[&str], limit: Duration) -> (Output, Duration, BTreeSet<String>) {
    let before = staging();
    let t0 = Instant::now();
    let mut child = start(args);
    let pid = child.id();
    let st = wait_exit(&mut child, limit);
    let took = t0.elapsed();
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let left: BTreeSet<String> = entries(pid).difference(&before).cloned().collect();
    for n in &left {
        let _ = std::fs::remove_file(Path::new("/dev/shm").join(n));
    }
    (
        Output {
            status: st,
            stdout: Vec::new(),
            stderr: stderr.into_bytes(),
        },
        took,
        left,
    )
}

#[test]
fn demo_bad_options_are_refused_at_once_with_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["--buffers", "0"], "--buffers"),
        (&["--buffers", "65537"], "--buffers"),
        (&["--seconds", "nan"], "--seconds"),
        (&["--seconds", "inf"], "--seconds"),
        (&["--seconds", "1e300"], "--seconds"),
        (&["--seconds=-1"], "--seconds"),
        (&["--seconds", "0"], "--seconds"),
        (&["--size", "0"], "--size"),
        (&["--size", "15"], "--size"),
        (&["--consumers", "0"], "--consumers"),
        (&["--width", "0"], "--width"),
        (&["--bpp", "0"], "--bpp"),
        (
            &[
                "--width",
                "4294967295",
                "--height",
                "4294967295",
                "--bpp",
                "16",
            ],
            "larger than 1 TiB",
        ),
        (
            &["--width", "1", "--height", "1", "--bpp", "1"],
            "too small",
        ),
    ];
    for (args, says) in cases {
        let mut all = vec!["demo"];
        all.extend_from_slice(args);
        let (out, took, left) = run_quick(&all, Duration::from_secs(10));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{all:?}: {err}");
        assert!(
            err.contains("error:") && err.contains(says),
            "{all:?}: {err}"
        );
        assert!(took < Duration::from_secs(2), "{all:?} took {took:?}");
        assert!(left.is_empty(), "{all:?} left {left:?}");
    }
}

#[test]
fn soak_bad_seconds_are_refused_with_exit_2() {
    for s in ["nan", "inf", "1e300", "0"] {
        let (out, took, left) = run_quick(&["soak", "--seconds", s], Duration::from_secs(10));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--seconds {s}: {err}");
        assert!(err.contains("--seconds"), "{err}");
        assert!(took < Duration::from_secs(2) && left.is_empty());
    }
}

/// A producer that cannot create the channel (64 buffers of 1 TiB: more
/// than any /dev/shm): the demo says why at once and exits 1, without a
/// misleading timeout, and leaves nothing.
#[test]
fn demo_child_failure_is_reported_at_once_with_its_reason() {
    let (out, took, left) = run_quick(
        &[
            "demo",
            "--size",
            "1099511627776",
            "--buffers",
            "64",
            "--seconds",
            "30",
        ],
        Duration::from_secs(15),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the producer failed") && err.contains("not enough shared memory"),
        "the child's reason must be told: {err}"
    );
    assert!(!err.contains("timed out"), "misleading timeout: {err}");
    assert!(took < Duration::from_secs(2), "took {took:?}: {err}");
    assert!(left.is_empty(), "left {left:?}");
}

/// The demo reports what a user can check: frames/s, publish -> receive
/// latency, and, for scale, one memcpy of a frame measured in the same run;
/// no byte rate that no memory could move ("2389 GB/s handed over").
#[test]
fn demo_reports_frames_latency_and_the_cost_of_a_copy() {
    let out = std::process::Command::new(BIPS)
        .args([
            "demo",
            "--seconds",
            "0.5",
            "--width",
            "640",
            "--height",
            "480",
        ])
        .output()
        .expect("run bips demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("frames/s"), "{text}");
    assert!(text.contains("latency p50"), "{text}");
    let copy_line = text
        .lines()
        .find(|l| l.contains("one memcpy of this frame costs"))
        .unwrap_or_else(|| panic!("no memcpy figure:\n{text}"));
    assert!(
        copy_line.contains(" us") || copy_line.contains(" ns"),
        "{copy_line}"
    );
    assert!(
        text.contains("reached their consumers without a copy"),
        "{text}"
    );
    assert!(!text.contains("GB/s") && !text.contains("TB/s"), "{text}");
    assert!(
        !text.contains("producer published 0 frames"),
        "the producer's count must be waited for:\n{text}"
    );
}
