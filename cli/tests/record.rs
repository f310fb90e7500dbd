//! `bips record` and `bips replay` as users run them: the built `bips`
//! binary, a producer process, consumer processes, real channels in
//! /dev/shm, MCAP files in a temporary directory.
//!
//! * 200 checked samples (payload pattern by sequence, metadata, a
//!   descriptor on two samples of three) recorded from a producer process;
//!   the file read back in Rust (bips-mcap) and with the `mcap` Python
//!   package plus `protobuf` from the file's own schema (when `.venv`
//!   exists; the python stage runs the same reader on its own recording);
//!   replayed into a new channel and every sample checked in order by a
//!   consumer process.
//! * SIGINT to the recorder mid-stream: it ends by SIGINT and the file is
//!   complete (summary, statistics).
//! * DropOldest with the recorder stopped (SIGSTOP: a stalled disk) while the
//!   producer publishes: the drops are counted in the file's metadata and
//!   every sample is accounted for.
//! * Replay timing: a recorded 100 ms gap is kept by default, not with
//!   --as-fast-as-possible.
//! * Bad input: missing, non-MCAP, non-bips and corrupt files (a file cut
//!   short replays its complete samples), a taken
//!   channel name, a geometry too small (exit 2, no channel left); a missing
//!   channel (exit 3, no file); a full disk (/dev/full: exit 1, the producer
//!   goes on).

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bips::{Backpressure, Consumer, DType, Descriptor, Error, Options, Producer};
use bips_mcap::{Replayer, SampleReader};
use bips_tests::{
    await_consumers, child_entry, env, env_or, expect_order, fill_meta, fill_payload, payload_len,
    say, skip, spawn, verify_meta, verify_payload, Channel, Fields, Proc, TempDir,
};

const BIPS: &str = env!("CARGO_BIN_EXE_bips");
const ENTRY: &str = "child";
const SIZE: usize = 64 * 1024;
const TAG: u64 = 0x4D_4341_5000;

fn descriptor() -> Descriptor {
    Descriptor::image(4, 4, 1, DType::U8)
        .and_then(|d| d.with_format("GRAY8"))
        .expect("descriptor")
}

/// Samples whose sequence is a multiple of 3 carry no descriptor.
fn has_descriptor(seq: u64) -> bool {
    seq % 3 != 0
}

/// Publishes app sequence `seq`: payload [`fill_payload`] of length
/// [`payload_len`] (or its 16-byte header and zeros when `cheap`), metadata
/// [`fill_meta`] + `b"recorded"`, a descriptor on two samples of three.
fn publish_one(p: &Producer, seq: u64, cheap: bool) {
    let mut s = p
        .loan_timeout(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("loan {seq}: {e}"));
    let len = payload_len(seq, SIZE);
    if cheap {
        fill_payload(seq, TAG, &mut s.as_mut_slice()[..16]);
    } else {
        fill_payload(seq, TAG, &mut s.as_mut_slice()[..len]);
    }
    s.set_len(if cheap { 16 } else { len });
    fill_meta(seq, TAG, s.meta_mut());
    s.meta_mut()[16..24].copy_from_slice(b"recorded");
    if has_descriptor(seq) {
        s.set_descriptor(&descriptor()).expect("set_descriptor");
    }
    s.publish().expect("publish");
}

/// Checks one sample of app sequence `seq` (payload, metadata, descriptor).
fn check(
    seq: u64,
    payload: &[u8],
    meta: &[u8],
    d: Option<Descriptor>,
    scratch: &mut Vec<u8>,
) -> Result<(), String> {
    if payload.len() != payload_len(seq, SIZE) {
        return Err(format!("seq {seq}: length {}", payload.len()));
    }
    verify_payload(seq, TAG, payload, scratch)?;
    verify_meta(seq, TAG, meta)?;
    if &meta[16..24] != b"recorded" || meta[24..].iter().any(|&b| b != 0) {
        return Err(format!("seq {seq}: metadata bytes 16.. differ"));
    }
    let want = has_descriptor(seq).then(descriptor);
    if d != want {
        return Err(format!("seq {seq}: descriptor {d:?}, want {want:?}"));
    }
    Ok(())
}

/// Producer child. BIPS_CH, BIPS_POLICY (block|drop), BIPS_BUFFERS,
/// BIPS_MODE: `count` publishes BIPS_COUNT samples once a consumer is
/// attached (with BIPS_GAP_AT=k: a 100 ms pause before sample k) and exits;
/// `stream` publishes one every 2 ms until stdin says `stop`; `burst` waits
/// for `go`, publishes BIPS_COUNT cheap samples at once, says `SENT`, waits
/// for `last`, publishes one more and exits.
fn producer() {
    let ch: String = env("BIPS_CH");
    let policy = match env::<String>("BIPS_POLICY").as_str() {
        "block" => Backpressure::Block,
        _ => Backpressure::DropOldest,
    };
    let opts = Options::new(env("BIPS_BUFFERS"), SIZE)
        .backpressure(policy)
        .meta_size(64);
    let p = Producer::create(&ch, &opts).expect("create");
    say("READY");
    await_consumers(&p, 1, Duration::from_secs(20));
    say("ATTACHED");
    let mut seq = 0;
    match env::<String>("BIPS_MODE").as_str() {
        "count" => {
            let gap_at: u64 = env_or("BIPS_GAP_AT", u64::MAX);
            for _ in 0..env::<u64>("BIPS_COUNT") {
                if seq == gap_at {
                    std::thread::sleep(Duration::from_millis(100));
                }
                publish_one(&p, seq, false);
                seq += 1;
            }
        }
        "stream" => {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(bips_tests::read_order());
            });
            while rx.try_recv().is_err() {
                publish_one(&p, seq, false);
                seq += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        _ => {
            expect_order("go");
            for _ in 0..env::<u64>("BIPS_COUNT") {
                publish_one(&p, seq, true);
                seq += 1;
            }
            say("SENT");
            expect_order("last");
            publish_one(&p, seq, true);
            seq += 1;
        }
    }
    say(format!("RESULT sent={seq}"));
}

/// Consumer child of a replayed channel: BIPS_CH, BIPS_COUNT samples, each
/// checked, app sequences 0, 1, 2, ... in order and channel sequences
/// strictly increasing; reports the arrival time of each (ms since the
/// first) as `at=a,b,c`.
fn consumer() {
    let ch: String = env("BIPS_CH");
    let deadline = Instant::now() + Duration::from_secs(20);
    let c = loop {
        match Consumer::open(&ch) {
            Ok(c) => break c,
            Err(Error::NotFound { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("open {ch}: {e}"),
        }
    };
    say("READY");
    let n: u64 = env("BIPS_COUNT");
    let mut scratch = Vec::new();
    let mut at = Vec::new();
    let mut t0 = None;
    let mut last_seq = None;
    for want in 0..n {
        let s = c
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("recv of sample {want}: {e}"));
        let now = Instant::now();
        let t0 = *t0.get_or_insert(now);
        at.push(now.duration_since(t0).as_millis().to_string());
        let app = u64::from_le_bytes(s.as_slice()[..8].try_into().unwrap());
        assert_eq!(app, want, "replayed out of order or lost");
        assert!(last_seq.is_none_or(|l| s.seq() > l), "seq not increasing");
        last_seq = Some(s.seq());
        let d = s.descriptor().expect("descriptor");
        check(want, s.as_slice(), s.meta(), d, &mut scratch).unwrap_or_else(|e| panic!("{e}"));
    }
    say(format!("RESULT received={n} at={}", at.join(",")));
}

#[test]
fn child() {
    child_entry(&[("producer", producer), ("consumer", consumer)]);
}

// ---------------------------------------------------------------- the parent

fn temp_dir(tag: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("bips-record-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

fn start_producer(ch: &Channel, policy: &str, buffers: u32, mode: &str, count: u64) -> Proc {
    let mut p = spawn(ENTRY, "producer")
        .env("BIPS_CH", ch.name())
        .env("BIPS_POLICY", policy)
        .env("BIPS_BUFFERS", buffers)
        .env("BIPS_MODE", mode)
        .env("BIPS_COUNT", count)
        .start();
    p.expect_line("READY", Duration::from_secs(20));
    p
}

fn bips(args: &[&str]) -> Command {
    let mut c = Command::new(BIPS);
    c.args(args).stdin(Stdio::null());
    c
}

/// Runs `bips ARGS` to its end (at most 60 s).
fn run(args: &[&str]) -> Output {
    let mut child = bips(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bips");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("bips {args:?} did not end within 60 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn expect_ok(o: &Output, what: &str) {
    assert!(o.status.success(), "{what}: {:?}\n{}", o.status, stderr(o));
}

#[track_caller]
fn expect_fail(o: &Output, code: i32, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "exit status; stderr:\n{err}");
    assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Reads `file` with the `mcap` Python package and `protobuf`
/// (recorder/tests/read_mcap.py); `None` (with a SKIPPED notice) only when
/// the repository has no `.venv` (`bash scripts/setup.sh --python` makes it).
fn python_read(test: &str, file: &Path, count: Option<u64>) -> Option<Fields> {
    let py = root().join(".venv/bin/python");
    if !py.exists() {
        skip(
            test,
            "the Python half (mcap package) needs .venv: run `bash scripts/setup.sh --python`; \
             the python stage runs it (bindings/python/tests/test_mcap_record.py)",
        );
        return None;
    }
    let mut cmd = Command::new(py);
    cmd.arg(root().join("recorder/tests/read_mcap.py"))
        .arg(file);
    if let Some(n) = count {
        cmd.arg(n.to_string());
    }
    let o = cmd.output().expect("run .venv/bin/python");
    assert!(
        o.status.success(),
        "read_mcap.py failed ({:?}):\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out
        .lines()
        .find(|l| l.starts_with("MCAP "))
        .expect("no MCAP line");
    Some(Fields::parse(line))
}

/// Reads every sample of `file` in Rust, checking each; returns the
/// channel sequences and the sum of lagged.
fn rust_read(file: &Path, check_all: bool) -> (Vec<u64>, u64) {
    let mut r = SampleReader::open(file, None).expect("open recording");
    let mut scratch = Vec::new();
    let (mut seqs, mut lagged) = (Vec::new(), 0);
    let mut last_log = 0;
    while let Some(s) = r.next_sample().expect("read sample") {
        if check_all {
            let d = s.descriptor().expect("descriptor");
            check(s.seq, s.payload, s.meta, d, &mut scratch).unwrap_or_else(|e| panic!("{e}"));
        } else {
            verify_payload(s.seq, TAG, &s.payload[..16], &mut scratch).unwrap();
        }
        assert!(s.log_time >= last_log, "log time went back");
        last_log = s.log_time;
        seqs.push(s.seq);
        lagged += s.lagged;
    }
    assert!(!r.truncated(), "the file was cut short");
    (seqs, lagged)
}

fn stats(file: &Path) -> BTreeMap<String, String> {
    Replayer::open(file, None)
        .expect("open")
        .record_stats()
        .cloned()
        .expect("no bips.record statistics: the file was not closed")
}

/// Records `count` samples from a producer process into `file`.
fn record_count(ch: &Channel, file: &Path, count: u64, gap_at: Option<u64>) {
    let mut p = spawn(ENTRY, "producer")
        .env("BIPS_CH", ch.name())
        .env("BIPS_POLICY", "block")
        .env("BIPS_BUFFERS", 4)
        .env("BIPS_MODE", "count")
        .env("BIPS_COUNT", count);
    if let Some(k) = gap_at {
        p = p.env("BIPS_GAP_AT", k);
    }
    let mut p = p.start();
    p.expect_line("READY", Duration::from_secs(20));
    let o = run(&[
        "record",
        ch.name(),
        "-o",
        file.to_str().unwrap(),
        "--count",
        &count.to_string(),
    ]);
    expect_ok(&o, "bips record");
    assert!(
        stderr(&o).contains(&format!("samples={count} lagged=0")),
        "{}",
        stderr(&o)
    );
    assert_eq!(p.expect_result(Duration::from_secs(20)).u64("sent"), count);
    p.expect_success(Duration::from_secs(10));
    ch.assert_removed();
}

/// Replays `file` into a new channel for a consumer process expecting
/// `count` samples; returns the consumer's arrival times (ms).
fn replay_checked(file: &Path, count: u64, extra: &[&str]) -> Vec<u64> {
    let out = Channel::new("replay");
    let mut c = spawn(ENTRY, "consumer")
        .env("BIPS_CH", out.name())
        .env("BIPS_COUNT", count)
        .start();
    let mut args = vec![
        "replay",
        file.to_str().unwrap(),
        "--channel",
        out.name(),
        "--wait-for-consumers",
        "1",
    ];
    args.extend_from_slice(extra);
    let o = run(&args);
    expect_ok(&o, "bips replay");
    assert!(
        stderr(&o).contains(&format!("published={count}")),
        "{}",
        stderr(&o)
    );
    let r = c.expect_result(Duration::from_secs(20));
    assert_eq!(r.u64("received"), count);
    c.expect_success(Duration::from_secs(10));
    out.assert_removed();
    r.str("at").split(',').map(|t| t.parse().unwrap()).collect()
}

#[test]
fn record_200_then_replay_every_sample() {
    let dir = temp_dir("200");
    let file = dir.0.join("cam.mcap");
    let ch = Channel::new("rec200");
    record_count(&ch, &file, 200, None);

    let (seqs, lagged) = rust_read(&file, true);
    assert_eq!(seqs, (0..200).collect::<Vec<_>>());
    assert_eq!(lagged, 0);
    let st = stats(&file);
    assert_eq!(
        (st["samples"].as_str(), st["stopped"].as_str()),
        ("200", "count")
    );
    let info = Replayer::open(&file, None).unwrap().channel().clone();
    assert_eq!(
        (info.topic.as_str(), info.buffers, info.buffer_size),
        (ch.name(), 4, SIZE as u64)
    );

    if let Some(f) = python_read("record_200_then_replay_every_sample", &file, Some(200)) {
        assert_eq!(f.u64("messages"), 200);
        assert_eq!(f.str("topic"), ch.name());
        assert_eq!(
            (f.str("schema"), f.str("encoding")),
            ("bips.Sample", "protobuf")
        );
        assert_eq!(f.u64("ordered"), 1);
        assert_eq!(
            f.u64("with_descriptor"),
            (0..200).filter(|&s| has_descriptor(s)).count() as u64
        );
        // Log times are on the Unix clock: after 2020.
        assert!(f.u64("first_log") > 1_577_836_800_000_000_000);
    }

    replay_checked(&file, 200, &["--as-fast-as-possible"]);
}

#[test]
fn replay_keeps_the_recorded_timing() {
    let dir = temp_dir("timing");
    let file = dir.0.join("gap.mcap");
    let ch = Channel::new("recgap");
    // 10 samples, a 100 ms pause before sample 5.
    record_count(&ch, &file, 10, Some(5));
    let at = replay_checked(&file, 10, &[]);
    assert!(
        at[5] >= 90 && at[5] < 2000,
        "default timing: sample 5 arrived {} ms after sample 0 (recorded: ~100 ms); all: {at:?}",
        at[5]
    );
    assert!(at.windows(2).all(|w| w[1] >= w[0]));
    let fast = replay_checked(&file, 10, &["--as-fast-as-possible"]);
    assert!(
        fast[9] < 60,
        "--as-fast-as-possible waited: sample 9 came {} ms after sample 0; all: {fast:?}",
        fast[9]
    );
}

#[test]
fn sigint_mid_stream_closes_a_valid_file() {
    let dir = temp_dir("sigint");
    let file = dir.0.join("int.mcap");
    let ch = Channel::new("recint");
    let mut p = start_producer(&ch, "block", 4, "stream", 0);
    let mut rec = bips(&["record", ch.name(), "-o", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) of our own child, not yet reaped.
    unsafe { libc::kill(rec.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while rec.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the recorder did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let o = rec.wait_with_output().unwrap();
    assert_eq!(
        o.status.signal(),
        Some(libc::SIGINT),
        "{:?}\n{}",
        o.status,
        stderr(&o)
    );
    assert!(stderr(&o).contains("stopped=signal"), "{}", stderr(&o));
    p.send("stop");
    let sent = p.expect_result(Duration::from_secs(20)).u64("sent");
    p.expect_success(Duration::from_secs(10));
    ch.assert_removed();

    let st = stats(&file);
    let n: u64 = st["samples"].parse().unwrap();
    assert!(n > 0 && n <= sent, "recorded {n} of {sent}");
    assert_eq!(st["stopped"], "stopped");
    let (seqs, lagged) = rust_read(&file, true);
    assert_eq!(seqs.len() as u64, n);
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "Block: a gap");
    assert_eq!(lagged, 0);
    if let Some(f) = python_read("sigint_mid_stream_closes_a_valid_file", &file, Some(n)) {
        assert_eq!(f.str("stopped"), "stopped");
    }
}

#[test]
fn drop_oldest_with_a_stalled_recorder_counts_drops() {
    let dir = temp_dir("drop");
    let file = dir.0.join("drop.mcap");
    let ch = Channel::new("recdrop");
    let mut p = start_producer(&ch, "drop", 4, "burst", 500);
    let mut rec = bips(&["record", ch.name(), "-o", file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    p.expect_line("ATTACHED", Duration::from_secs(20));
    let pid = rec.id() as i32;
    // A stalled disk: the recorder cannot run while the producer publishes.
    // SAFETY: kill(2) of our own child, not yet reaped.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    p.send("go");
    p.expect_line("SENT", Duration::from_secs(20));
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    std::thread::sleep(Duration::from_millis(300));
    p.send("last");
    let sent = p.expect_result(Duration::from_secs(20)).u64("sent");
    p.expect_success(Duration::from_secs(10));
    // The producer is gone: the recorder drains and closes by itself.
    let deadline = Instant::now() + Duration::from_secs(20);
    while rec.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the recorder did not end");
        std::thread::sleep(Duration::from_millis(5));
    }
    let o = rec.wait_with_output().unwrap();
    assert!(o.status.success(), "{:?}\n{}", o.status, stderr(&o));
    ch.assert_removed();

    let st = stats(&file);
    let (n, lagged): (u64, u64) = (
        st["samples"].parse().unwrap(),
        st["lagged"].parse().unwrap(),
    );
    assert!(lagged > 0, "no drop counted: {st:?}");
    assert_eq!(
        n + lagged,
        sent,
        "every sample recorded or counted as dropped: {st:?}"
    );
    assert_eq!(st["stopped"], "disconnected");
    let (seqs, sum) = rust_read(&file, false);
    assert_eq!((seqs.len() as u64, sum), (n, lagged));
    assert_eq!(
        *seqs.last().unwrap(),
        sent - 1,
        "the last sample is recorded"
    );
    if let Some(f) = python_read(
        "drop_oldest_with_a_stalled_recorder_counts_drops",
        &file,
        Some(n),
    ) {
        assert_eq!(f.u64("lagged"), lagged);
        assert_eq!(f.str("policy"), "drop-oldest");
    }
}

#[test]
fn bad_input_gives_clear_errors_and_leaves_nothing() {
    let dir = temp_dir("bad");
    let d = &dir.0;
    let out = Channel::new("badout");
    let replay = |file: &Path, extra: &[&str]| {
        let mut args = vec!["replay", file.to_str().unwrap(), "--channel", out.name()];
        args.extend_from_slice(extra);
        let o = run(&args);
        assert!(!out.exists(), "a failed replay left its channel");
        o
    };

    // A missing file, a file that is not MCAP.
    expect_fail(&replay(&d.join("missing.mcap"), &[]), 2, "cannot open");
    let junk = d.join("junk.mcap");
    std::fs::write(&junk, b"this is not an MCAP file at all, just text\n").unwrap();
    expect_fail(&replay(&junk, &[]), 2, "is not an MCAP file");

    // An MCAP file without a bips channel.
    let other = d.join("other.mcap");
    {
        let mut w = mcap::WriteOptions::new()
            .compression(None)
            .create(std::io::BufWriter::new(
                std::fs::File::create(&other).unwrap(),
            ))
            .unwrap();
        let s = w.add_schema("Point", "jsonschema", b"{}").unwrap();
        let c = w
            .add_channel(s, "points", "json", &BTreeMap::new())
            .unwrap();
        let h = mcap::records::MessageHeader {
            channel_id: c,
            sequence: 0,
            log_time: 1,
            publish_time: 1,
        };
        w.write_to_known_channel(&h, b"{}").unwrap();
        w.finish().unwrap();
    }
    expect_fail(&replay(&other, &[]), 2, "has no bips recording");

    // A real recording (20 samples of this process's producer).
    let ch = Channel::new("badsrc");
    let p = Producer::create(ch.name(), &Options::new(4, SIZE)).unwrap();
    let good = d.join("good.mcap");
    let rec = bips(&[
        "record",
        ch.name(),
        "-o",
        good.to_str().unwrap(),
        "--count",
        "20",
    ])
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    await_consumers(&p, 1, Duration::from_secs(20));
    for seq in 0..20 {
        publish_one(&p, seq, false);
    }
    let o = rec.wait_with_output().unwrap();
    expect_ok(&o, "bips record");

    // The name is taken (a live producer has it): exit 2, and the live
    // channel is untouched.
    let o = run(&["replay", good.to_str().unwrap(), "--channel", ch.name()]);
    expect_fail(&o, 2, "already has a live producer");
    assert!(ch.exists());
    // Buffers smaller than the recorded samples.
    expect_fail(
        &replay(&good, &["--size", "100"]),
        2,
        "bytes of payload but the channel has 100",
    );
    // Corrupt: flip bytes in the middle of the data (a chunk's CRC fails).
    let bytes = std::fs::read(&good).unwrap();
    let mut bad = bytes.clone();
    let mid = bad.len() / 2;
    for b in &mut bad[mid..mid + 64] {
        *b ^= 0x5a;
    }
    let corrupt = d.join("corrupt.mcap");
    std::fs::write(&corrupt, &bad).unwrap();
    expect_fail(
        &replay(&corrupt, &["--as-fast-as-possible"]),
        2,
        "is corrupt",
    );

    // Cut short (a recorder killed -9): the complete samples are replayed,
    // and the replay says the file ended early.
    let cut = d.join("cut.mcap");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let o = replay(&cut, &["--as-fast-as-possible"]);
    expect_ok(&o, "replay of a cut-short file");
    let err = stderr(&o);
    let published: u64 = err
        .split("published=")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no published= in {err}"));
    assert!((1..20).contains(&published), "{err}");
    assert!(err.contains("cut short"), "{err}");

    // Recording a channel that does not exist: exit 3, no file made.
    let none = d.join("none.mcap");
    let o = run(&[
        "record",
        "bt-no-such-channel-rec",
        "-o",
        none.to_str().unwrap(),
    ]);
    expect_fail(&o, 3, "does not exist");
    assert!(!none.exists(), "a failed record left a file");

    // A full disk (/dev/full: every write fails with ENOSPC): exit 1 with the
    // OS's reason, and the producer goes on without the recorder.
    let o = run(&["record", ch.name(), "-o", "/dev/full"]);
    expect_fail(&o, 1, "No space left on device");
    assert_eq!(
        p.consumer_count(),
        0,
        "the failed recorder is still attached"
    );
    for seq in 0..8 {
        publish_one(&p, seq, true); // 4 buffers: would block on a stuck consumer
    }
    drop(p);
    ch.assert_removed();
}
