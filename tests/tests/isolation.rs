//! Containers and users: a consumer in its own PID namespace (liveness needs
//! no PIDs), and a consumer running as another user on a `0o600` channel.
//! Both need root; they skip (saying why) only when that is impossible.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bips::{Error, Options, Producer, WaitStrategy};
use bips_tests::*;

const ENTRY: &str = "child_entry";

/// Children of this file start here (a no-op in a normal test run).
#[test]
fn child_entry() {
    bips_tests::child_entry(&[("ns-consumer", ns_consumer_role), ("open-as", open_as_role)]);
}

/// Reports its own PID (1 in a fresh PID namespace), receives `BIPS_N`
/// samples (checked byte for byte), then receives `BIPS_HOLD` more and holds
/// them until killed.
fn ns_consumer_role() {
    let name: String = env("BIPS_CHANNEL");
    let tag: u64 = env("BIPS_TAG");
    let n: u64 = env("BIPS_N");
    let hold: u64 = env("BIPS_HOLD");
    let consumer = open_consumer(&name, "park").expect("open from the PID namespace");
    let cap = consumer.geometry().buffer_size as usize;
    say(format!("READY nspid={}", std::process::id()));
    let mut scratch = Vec::new();
    for seq in 0..n {
        let s = consumer.recv_timeout(Duration::from_secs(5)).expect("recv");
        check_sample(&s, seq, tag, cap, &mut scratch).unwrap();
    }
    say(format!("GOT {n}"));
    let mut held = Vec::new();
    for seq in n..n + hold {
        let s = consumer.recv_timeout(Duration::from_secs(5)).expect("recv");
        check_sample(&s, seq, tag, cap, &mut scratch).unwrap();
        held.push(s);
    }
    say(format!("HOLDING {}", held.len()));
    let _ = read_order(); // killed before any order comes
}

/// Why `unshare --pid --fork` cannot run here, if it cannot.
fn unshare_unavailable() -> Option<String> {
    match Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "true"])
        .output()
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Some("`unshare` (util-linux) is not installed".to_owned())
        }
        Err(e) => panic!("running unshare: {e}"),
        Ok(o) if o.status.success() => None,
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr).into_owned();
            if err.contains("Operation not permitted") || err.contains("EPERM") {
                Some(format!(
                    "unshare --pid is not permitted here: {}",
                    err.trim()
                ))
            } else {
                panic!("`unshare --pid --fork true` failed: {err}");
            }
        }
    }
}

#[test]
fn consumer_in_own_pid_namespace_receives_and_its_death_is_detected() {
    let _s = serial();
    if let Some(why) = unshare_unavailable() {
        skip("consumer_in_own_pid_namespace", &why);
        return;
    }
    let ch = Channel::new("pidns");
    let tag = 0x9_1D;
    let (n, hold) = (200u64, 4u32);
    let producer = Producer::create(
        ch.name(),
        &Options::new(hold, 4096).wait(WaitStrategy::Park),
    )
    .expect("create");
    // Same mount namespace (so the same /dev/shm), new PID namespace.
    let mut wrapper = spawn(ENTRY, "ns-consumer")
        .wrapper(["unshare", "--pid", "--fork", "--kill-child"])
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_TAG", tag)
        .env("BIPS_N", n)
        .env("BIPS_HOLD", hold)
        .start();
    let ready = Fields::parse(&wrapper.expect_line("READY", Duration::from_secs(10)));
    assert_eq!(
        ready.u64("nspid"),
        1,
        "the consumer must be PID 1 of a new PID namespace"
    );
    await_consumers(&producer, 1, Duration::from_secs(5));
    for seq in 0..n + u64::from(hold) {
        publish_checked(&producer, seq, tag);
    }
    wrapper.expect_line(&format!("GOT {n}"), Duration::from_secs(10));
    wrapper.expect_line("HOLDING", Duration::from_secs(5));
    // The namespaced consumer holds the whole pool: the producer blocks.
    assert!(matches!(
        producer.loan_timeout(Duration::from_millis(100)),
        Err(Error::Timeout)
    ));

    // kill -9 the consumer itself (unshare's child), by its PID out here.
    let inner = children_of(wrapper.pid());
    assert_eq!(inner.len(), 1, "unshare should have one child: {inner:?}");
    let inner = inner[0];
    assert_ne!(inner, 1);
    // Killed while the producer is blocked in loan().
    let killer = kill_later(inner, Duration::from_millis(225));
    let t = Instant::now();
    let s = producer.loan_timeout(Duration::from_secs(5)).expect("loan");
    let resumed = Instant::now();
    let killed = killer.join().unwrap();
    let (blocked, after_kill) = (resumed - t, resumed.saturating_duration_since(killed));
    println!(
        "PID-namespaced consumer: producer blocked {blocked:?}, resumed {after_kill:?} after kill -9"
    );
    assert!(
        blocked >= Duration::from_millis(200),
        "loan was not blocked ({blocked:?})"
    );
    assert!(
        after_kill < Duration::from_secs(1),
        "resumed {after_kill:?} after the kill"
    );
    drop(s);
    assert_eq!(producer.consumer_count(), 0);
    // unshare reports its child's death by SIGKILL.
    let status = wrapper.wait_exit(Duration::from_secs(5));
    assert!(!status.success(), "{}", describe(status));
    drop(producer);
    ch.assert_removed();
}

/// Reports its effective uid and what `Consumer::open` gave; on success
/// receives one sample.
fn open_as_role() {
    let name: String = env("BIPS_CHANNEL");
    // SAFETY: geteuid cannot fail and has no preconditions.
    let uid = unsafe { libc::geteuid() };
    // The channel is root's, which the default trusts (T2); said explicitly
    // all the same, as a cross-user set-up would (see tests/tests/owner.rs).
    let opts = bips::ConsumerOptions::new()
        .start(bips::Start::Oldest)
        .wait(wait_strategy("park"))
        .trust_owner(0);
    let outcome = match bips::Consumer::open_with(&name, &opts) {
        Ok(c) => {
            say(format!("READY uid={uid}"));
            let s = c.recv_timeout(Duration::from_secs(5)).expect("recv");
            format!("ok seq={}", s.seq())
        }
        Err(Error::PermissionDenied { name: n }) => {
            assert_eq!(n, name);
            "PermissionDenied".to_owned()
        }
        Err(e) => format!("other:{}", format!("{e:?}").replace(' ', "_")),
    };
    say(format!("RESULT uid={uid} open={outcome}"));
}

/// Runs `open-as` as `nobody` on a channel created with `mode`.
fn open_as_nobody(exe: &Path, mode: u32) -> (Fields, Channel) {
    let ch = Channel::new("perm");
    // Shm: this is about the /dev/shm object's mode.
    let producer = Producer::create(
        ch.name(),
        &Options::new(2, 64).mode(mode).backend(bips::Backend::Shm),
    )
    .expect("create");
    let got = std::fs::metadata(ch.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(got, mode, "segment mode");
    let mut kid = spawn(ENTRY, "open-as")
        .exe(exe)
        .wrapper([
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
        ])
        .env("BIPS_CHANNEL", ch.name())
        .label(&format!("nobody-{mode:o}"))
        .start();
    let r = if mode & 0o006 == 0o006 {
        kid.expect_line("READY", Duration::from_secs(10));
        await_consumers(&producer, 1, Duration::from_secs(5));
        let mut s = producer.loan().unwrap();
        s.set_len(1);
        s.publish().unwrap();
        kid.expect_result(Duration::from_secs(5))
    } else {
        kid.expect_result(Duration::from_secs(10))
    };
    kid.expect_success(Duration::from_secs(5));
    drop(producer);
    ch.assert_removed();
    (r, ch)
}

#[test]
fn consumer_as_other_user_on_0600_channel_is_permission_denied() {
    let _s = serial();
    if let Some(why) = other_users_unavailable() {
        skip("consumer_as_other_user", why);
        return;
    }
    let (exe, _tmp) = exe_for_other_users("isolation");
    // The harness works as nobody: a world-readable-writable channel opens
    // and delivers (so the denial below is bips', not the harness').
    let (ok, _) = open_as_nobody(&exe, 0o666);
    assert_eq!(ok.u64("uid"), 65534, "the child must run as nobody");
    assert_eq!(ok.str("open"), "ok", "nobody opens a 0o666 channel");
    // The default mode, 0o600 (owner root): PermissionDenied.
    let (denied, _) = open_as_nobody(&exe, 0o600);
    assert_eq!(denied.u64("uid"), 65534);
    assert_eq!(denied.str("open"), "PermissionDenied");
    // Group access without membership: still denied.
    let (denied, _) = open_as_nobody(&exe, 0o660);
    assert_eq!(denied.str("open"), "PermissionDenied");
}
