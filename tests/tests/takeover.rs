//! T1: a channel's name is removed only by a process that opened its object,
//! holds its byte-0 (producer) lock and so identified it as dead. A second
//! `Producer::create` of a live channel's name that cannot open or map the
//! existing object (out of file descriptors, out of address space) fails with
//! an error saying why; it never removes and replaces the live channel.
//!
//! Before the fix, `replace_stale` unlinked the name on any open error: under
//! `prlimit --nofile` (EMFILE) or `ulimit -v` (mmap ENOMEM) the second
//! producer took the channel over and new consumers went to it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use bips::{Consumer, Error, Options, Producer};
use bips_tests::*;

const ENTRY: &str = "child_entry";

/// Children of this file start here (a no-op in a normal test run).
#[test]
fn child_entry() {
    bips_tests::child_entry(&[("second-producer", second_producer_role)]);
}

/// The variant name of `e` (`Io`, `ChannelBusy`, ...).
fn kind(e: &Error) -> String {
    let d = format!("{e:?}");
    d.split([' ', '{', '(']).next().unwrap_or("").to_owned()
}

fn set_limit(resource: libc::__rlimit_resource_t, value: u64) {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: `lim` is a valid rlimit; setrlimit only reads it.
    let r = unsafe { libc::setrlimit(resource, &lim) };
    assert_eq!(r, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

/// This process's address-space size (`VmSize` of /proc/self/status), bytes.
fn vm_size() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmSize:"))
        .expect("VmSize");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Lowers one resource limit (`BIPS_LIMIT`: `nofile` or `as`) so that opening
/// or mapping the live channel fails, then tries `Producer::create` of its
/// name (with a small segment of its own, which still fits) and reports the
/// error. With `as`, also reports what `Consumer::open` says.
fn second_producer_role() {
    let name: String = env("BIPS_CHANNEL");
    let limit: String = env("BIPS_LIMIT");
    match limit.as_str() {
        "nofile" => {
            // Exactly one more descriptor may be opened: the staging object
            // of our own segment takes it, so opening the live object
            // fails with EMFILE.
            let probe = std::fs::File::open("/dev/null").unwrap();
            let lowest_free = probe.as_raw_fd() as u64;
            drop(probe);
            set_limit(libc::RLIMIT_NOFILE, lowest_free + 1);
        }
        "as" => {
            // Room for our own small segment (and for what the runtime may
            // still reserve: thread stacks, malloc arenas), not for the live
            // one's 512 MiB.
            set_limit(libc::RLIMIT_AS, vm_size() + (200 << 20));
        }
        other => panic!("unknown BIPS_LIMIT {other:?}"),
    }
    let r = Producer::create(&name, &Options::new(2, 64));
    let (k, msg) = match &r {
        Ok(_) => ("Ok".to_owned(), "created".to_owned()),
        Err(e) => (kind(e), e.to_string()),
    };
    // Our own producer (if any) must not remove anything on drop either.
    drop(r);
    say(format!("CREATE {k} {msg}"));
    if limit == "as" {
        let (k, msg) = match Consumer::open(&name) {
            Ok(_) => ("Ok".to_owned(), "opened".to_owned()),
            Err(e) => (kind(&e), e.to_string()),
        };
        say(format!("OPEN {k} {msg}"));
    }
}

/// `(kind, message)` of a `PREFIX kind message...` line.
fn outcome(line: &str) -> (String, String) {
    let mut it = line.splitn(3, ' ');
    let _ = it.next();
    (
        it.next().unwrap_or("").to_owned(),
        it.next().unwrap_or("").to_owned(),
    )
}

/// Runs the second producer with `limit` against a live channel of
/// `buffers x size` bytes, checks that the live channel is untouched, and
/// returns the child's lines.
fn second_create_under(limit: &str, buffers: u32, size: usize) -> Vec<String> {
    let _s = serial();
    let ch = Channel::new(&format!("takeover-{limit}"));
    let tag = 0x7A4E;
    let producer = Producer::create(ch.name(), &Options::new(buffers, size)).expect("create");
    let ino = std::fs::metadata(ch.path()).unwrap().ino();

    let mut kid = spawn(ENTRY, "second-producer")
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_LIMIT", limit)
        .label(&format!("second-producer-{limit}"))
        .start();
    let mut lines = vec![kid.expect_line("CREATE", Duration::from_secs(20))];
    if limit == "as" {
        lines.push(kid.expect_line("OPEN", Duration::from_secs(10)));
    }
    kid.expect_success(Duration::from_secs(10));

    // The live channel is untouched: same object under the name, and a
    // consumer opening it now attaches to the first producer and receives
    // its samples.
    let now = std::fs::metadata(ch.path())
        .unwrap_or_else(|e| panic!("{limit}: the live channel's name is gone: {e}; {lines:?}"));
    assert_eq!(
        now.ino(),
        ino,
        "{limit}: the live channel was replaced: {lines:?}"
    );
    let consumer = open_consumer(ch.name(), "park").expect("consumer after the second create");
    await_consumers(&producer, 1, Duration::from_secs(5));
    let cap = consumer.geometry().buffer_size as usize;
    let mut scratch = Vec::new();
    for seq in 0..3 {
        publish_checked(&producer, seq, tag);
        let s = consumer.recv_timeout(Duration::from_secs(5)).expect("recv");
        check_sample(&s, seq, tag, cap, &mut scratch).unwrap();
    }
    drop(consumer);
    drop(producer);
    ch.assert_removed();
    lines
}

#[test]
fn second_create_out_of_file_descriptors_does_not_take_over_a_live_channel() {
    let lines = second_create_under("nofile", 2, 4096);
    let (k, msg) = outcome(&lines[0]);
    assert_eq!(k, "Io", "{lines:?}");
    assert!(
        msg.contains("RLIMIT_NOFILE") && msg.contains("shm_open"),
        "the error must name the limit: {msg}"
    );
}

#[test]
fn second_create_out_of_address_space_does_not_take_over_a_live_channel() {
    // 4 x 128 MiB = 512 MiB of live segment; the child may map 200 MiB more.
    let lines = second_create_under("as", 4, 128 << 20);
    let (k, msg) = outcome(&lines[0]);
    assert_eq!(
        k, "ChannelBusy",
        "a live producer holds the name: {lines:?} ({msg})"
    );
    // A consumer that cannot map the channel says why.
    let (k, msg) = outcome(&lines[1]);
    assert_eq!(k, "NoSpace", "{lines:?}");
    assert!(msg.contains("ulimit -v"), "{msg}");
}

/// Creates `/dev/shm/bips.<name>` with `bytes` of content, open read-write.
fn plant(ch: &Channel, bytes: &[u8]) -> OwnedFd {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(ch.path())
        .unwrap();
    std::io::Write::write_all(&mut &f, bytes).unwrap();
    f.into()
}

/// An object that cannot be mapped (empty) or read as a channel (garbage)
/// is judged by its lock, not by whether it maps: locked, it is kept
/// (ChannelBusy; before the fix it was removed as "too broken"); unlocked,
/// it is replaced.
#[test]
fn unmappable_object_is_replaced_only_when_its_lock_is_free() {
    // No child may be forked (by another test) while we hold `fd`: a fork
    // shares the open file description, and so our lock, until it execs.
    let _s = serial();
    for (what, content) in [("empty", &[][..]), ("garbage", &[0xA5u8; 100][..])] {
        let ch = Channel::new(&format!("takeover-{what}"));
        let fd = plant(&ch, content);
        let ino = std::fs::metadata(ch.path()).unwrap().ino();
        assert!(ofd_lock(&fd, 0));
        match Producer::create(ch.name(), &Options::new(2, 64)) {
            Err(Error::ChannelBusy { name }) => assert_eq!(name, ch.name()),
            other => panic!("{what}, locked: {other:?}"),
        }
        assert_eq!(
            std::fs::metadata(ch.path()).unwrap().ino(),
            ino,
            "{what}: a locked object was removed"
        );
        // Its holder gone (the lock dies with the fd): replaced.
        drop(fd);
        let p = Producer::create(ch.name(), &Options::new(2, 64))
            .unwrap_or_else(|e| panic!("{what}, unlocked: {e}"));
        assert_ne!(std::fs::metadata(ch.path()).unwrap().ino(), ino);
        drop(p);
        ch.assert_removed();
    }
}
