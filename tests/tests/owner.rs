//! T2, owner trust: a channel object created by another user (any local user
//! can create `/dev/shm/bips.<name>` while the real producer is down) is
//! refused by consumers, and not replaced by producers, unless that user is
//! trusted explicitly; another user's stale object that the sticky bit of
//! `/dev/shm` keeps us from removing is a clear error at once.
//!
//! The other users are children run through `setpriv` as uid 65534 (nobody)
//! and 65533; this needs root, and skips (saying why) without it.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use bips::{Consumer, ConsumerOptions, Error, Options, OwnerPolicy, Producer};
use bips_tests::*;

const ENTRY: &str = "child_entry";
/// The impostor (or the other user's producer).
const OTHER: u32 = 65534;
/// A third user, who finds `OTHER`'s stale object under the name.
const THIRD: u32 = 65533;

/// Children of this file start here (a no-op in a normal test run).
#[test]
fn child_entry() {
    bips_tests::child_entry(&[
        ("foreign-producer", foreign_producer_role),
        ("create-as", create_as_role),
    ]);
}

/// Creates the channel `BIPS_CHANNEL` (`BIPS_SIZE` bytes per buffer) with
/// mode 0o666, says `READY uid=<euid>`, then obeys: `publish` (one sample of
/// length 3: `[7, 8, 9]`), `leave` (exit without removing the channel: it is
/// left stale, as by a crash) or `quit` (clean exit).
fn foreign_producer_role() {
    let name: String = env("BIPS_CHANNEL");
    let size: usize = env("BIPS_SIZE");
    let p = Producer::create(&name, &Options::new(2, size).mode(0o666)).expect("create");
    // SAFETY: geteuid cannot fail and has no preconditions.
    say(format!("READY uid={}", unsafe { libc::geteuid() }));
    loop {
        match read_order().as_deref() {
            Some("publish") => {
                let mut s = p.loan().expect("loan");
                s.as_mut_slice()[..3].copy_from_slice(&[7, 8, 9]);
                s.set_len(3);
                s.publish().expect("publish");
                say("PUBLISHED");
            }
            Some("leave") => {
                // No Drop: the object stays, its lock dies with us (stale).
                std::mem::forget(p);
                say("LEFT");
                return;
            }
            Some("quit") | None => return,
            Some(o) => panic!("unknown order {o:?}"),
        }
    }
}

/// `Producer::create(BIPS_CHANNEL)` of `BIPS_SIZE`-byte buffers, trusting
/// `BIPS_TRUST` (`default` or `any`); reports `RESULT outcome=<variant>
/// ms=<elapsed> uid=<euid>` and the error's message on a `MSG` line.
fn create_as_role() {
    let name: String = env("BIPS_CHANNEL");
    let size: usize = env("BIPS_SIZE");
    let trust: String = env("BIPS_TRUST");
    let mut opts = Options::new(2, size).mode(0o666);
    if trust == "any" {
        opts = opts.trust_any_owner();
    }
    let t = Instant::now();
    let r = Producer::create(&name, &opts);
    let ms = t.elapsed().as_millis();
    let (outcome, msg) = match &r {
        Ok(_) => ("ok".to_owned(), String::new()),
        Err(e) => {
            let dbg = format!("{e:?}");
            let variant = dbg.split([' ', '(', '{']).next().unwrap_or("").to_owned();
            (variant, e.to_string())
        }
    };
    // SAFETY: geteuid cannot fail and has no preconditions.
    let uid = unsafe { libc::geteuid() };
    say(format!("MSG {msg}"));
    say(format!("RESULT outcome={outcome} ms={ms} uid={uid}"));
}

/// Starts `role` as `uid` (and gid `uid`, no supplementary groups).
fn spawn_as(exe: &Path, role: &str, uid: u32, ch: &Channel, size: usize) -> Spawn {
    spawn(ENTRY, role)
        .exe(exe)
        .wrapper([
            "setpriv".to_owned(),
            format!("--reuid={uid}"),
            format!("--regid={uid}"),
            "--clear-groups".to_owned(),
        ])
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_SIZE", size)
        .label(&format!("{role}-as-{uid}"))
}

/// A producer running as `OTHER` on `ch`, its object owned by `OTHER`.
fn foreign_producer(exe: &Path, ch: &Channel, size: usize) -> Proc {
    let mut kid = spawn_as(exe, "foreign-producer", OTHER, ch, size).start();
    let ready = Fields::parse(&kid.expect_line("READY", Duration::from_secs(10)));
    assert_eq!(ready.u64("uid"), u64::from(OTHER));
    assert_eq!(owner(ch), OTHER, "the object is owned by the child's uid");
    kid
}

fn owner(ch: &Channel) -> u32 {
    std::fs::symlink_metadata(ch.path()).unwrap().uid()
}

#[track_caller]
fn assert_untrusted(r: bips::Result<impl std::fmt::Debug>, owner_uid: u32) -> String {
    match r {
        Err(e @ Error::UntrustedOwner { .. }) => {
            let Error::UntrustedOwner {
                owner_uid: got,
                euid,
                ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!((*got, *euid), (owner_uid, 0));
            e.to_string()
        }
        other => panic!("expected UntrustedOwner (owner uid {owner_uid}), got {other:?}"),
    }
}

#[test]
fn foreign_owned_channel_is_refused_by_default_and_accepted_when_trusted() {
    if let Some(why) = other_users_unavailable() {
        skip("foreign_owned_channel_is_refused", why);
        return;
    }
    let (exe, _tmp) = exe_for_other_users("owner");
    let ch = Channel::new("owner-consume");
    let mut kid = foreign_producer(&exe, &ch, 64);

    // Root's consumer, default policy: refused, with the owner and the remedy.
    let msg = assert_untrusted(Consumer::open(ch.name()), OTHER);
    for want in [
        "owned by uid 65534",
        "effective uid 0",
        "ConsumerOptions::trust_owner(65534)",
        "trust_owner=65534",
        "bips_consumer_options_trust_owner(opts, 65534)",
        "trust_any_owner",
    ] {
        assert!(msg.contains(want), "message lacks {want:?}: {msg}");
    }
    // Trusting someone else does not help.
    assert_untrusted(
        Consumer::open_with(ch.name(), &ConsumerOptions::new().trust_owner(1234)),
        OTHER,
    );

    // Trusted explicitly: attaches and receives the other user's samples.
    let by_uid = Consumer::open_with(
        ch.name(),
        &ConsumerOptions::new().trust_owner(1234).trust_owner(OTHER),
    )
    .expect("trust_owner(65534) attaches");
    let any = Consumer::open_with(ch.name(), &ConsumerOptions::new().trust_any_owner())
        .expect("trust_any_owner attaches");
    let policy = Consumer::open_with(ch.name(), &ConsumerOptions::new().trust(OwnerPolicy::Any))
        .expect("OwnerPolicy::Any attaches");
    kid.send("publish");
    kid.expect_line("PUBLISHED", Duration::from_secs(5));
    for c in [&by_uid, &any, &policy] {
        let s = c.recv_timeout(Duration::from_secs(5)).expect("recv");
        assert_eq!(s.as_slice(), &[7, 8, 9]);
    }
    drop((by_uid, any, policy));
    kid.send("quit");
    kid.expect_success(Duration::from_secs(5));
    ch.assert_removed();
}

#[test]
fn foreign_stale_object_is_not_replaced_unless_trusted() {
    if let Some(why) = other_users_unavailable() {
        skip("foreign_stale_object_is_not_replaced", why);
        return;
    }
    let (exe, _tmp) = exe_for_other_users("owner");
    let ch = Channel::new("owner-replace");
    let mut kid = foreign_producer(&exe, &ch, 64);
    kid.send("leave");
    kid.expect_line("LEFT", Duration::from_secs(5));
    kid.expect_success(Duration::from_secs(5));
    assert!(ch.exists(), "the stale object stays");

    // Root's producer, default policy: the other user's object is left alone.
    let msg = assert_untrusted(Producer::create(ch.name(), &Options::new(2, 64)), OTHER);
    assert!(msg.contains("Options::trust_owner(65534)"), "{msg}");
    assert!(ch.exists(), "not removed");
    assert_eq!(owner(&ch), OTHER, "not replaced");

    // Trusted: root replaces the stale object (root may remove it).
    let p = Producer::create(ch.name(), &Options::new(2, 64).trust_owner(OTHER))
        .expect("trust_owner(65534) replaces the stale object");
    assert_eq!(owner(&ch), 0, "replaced by ours");
    drop(p);
    ch.assert_removed();
}

#[test]
fn sticky_bit_eperm_on_another_users_stale_object_is_a_clear_error_at_once() {
    if let Some(why) = other_users_unavailable() {
        skip("sticky_bit_eperm", why);
        return;
    }
    let sticky = std::fs::metadata("/dev/shm").unwrap().permissions().mode() & 0o1000 != 0;
    if !sticky {
        skip("sticky_bit_eperm", "/dev/shm has no sticky bit here");
        return;
    }
    let (exe, _tmp) = exe_for_other_users("owner");
    let ch = Channel::new("owner-sticky");
    // Large enough that retrying creation (reserving the whole segment each
    // round) would take a while.
    let size = 32 << 20;
    let mut kid = foreign_producer(&exe, &ch, size);
    kid.send("leave");
    kid.expect_line("LEFT", Duration::from_secs(5));
    kid.expect_success(Duration::from_secs(5));

    let create_as_third = |trust: &str| {
        let mut k = spawn_as(&exe, "create-as", THIRD, &ch, size)
            .env("BIPS_TRUST", trust)
            .start();
        let msg = k.expect_line("MSG", Duration::from_secs(20));
        let r = k.expect_result(Duration::from_secs(20));
        k.expect_success(Duration::from_secs(5));
        assert_eq!(r.u64("uid"), u64::from(THIRD));
        (r, msg)
    };

    // Default policy: refused as untrusted, before anything else.
    let (r, msg) = create_as_third("default");
    assert_eq!(r.str("outcome"), "UntrustedOwner", "{msg}");
    assert!(msg.contains("owned by uid 65534"), "{msg}");

    // Trusting any owner: the object is stale and may be trusted, but the
    // sticky bit keeps uid 65533 from removing uid 65534's object: a clear
    // error, at once (no retry loop re-creating the segment).
    let (r, msg) = create_as_third("any");
    assert_eq!(r.str("outcome"), "StaleNotRemovable", "{msg}");
    for want in ["sticky bit", "uid 65534", "uid 65533", "bips clean"] {
        assert!(msg.contains(want), "message lacks {want:?}: {msg}");
    }
    let ms = r.u64("ms");
    assert!(ms < 1000, "took {ms} ms");
    println!("sticky-bit EPERM reported after {ms} ms");
    assert_eq!(owner(&ch), OTHER, "the stale object is untouched");
    // Channel's drop (root) removes it.
}
