//! Clear errors for bad situations: a second live producer (in another
//! process) gets `ChannelBusy`, a missing channel `NotFound`, a bad name
//! `InvalidName`.

use std::time::Duration;

use bips::{Consumer, Error, Options, Producer};
use bips_tests::*;

const ENTRY: &str = "child_entry";

/// Children of this file start here (a no-op in a normal test run).
#[test]
fn child_entry() {
    bips_tests::child_entry(&[("producer", producer_role)]);
}

/// Creates the channel, says `CREATED`, and drops the producer (cleanly) on
/// the order `quit`.
fn producer_role() {
    let name: String = env("BIPS_CHANNEL");
    let producer = Producer::create(&name, &Options::new(2, 64)).expect("create");
    say("CREATED");
    expect_order("quit");
    drop(producer);
    say("DROPPED");
}

#[test]
fn second_live_producer_is_channel_busy() {
    let _s = serial();
    let ch = Channel::new("busy");
    let mut first = spawn(ENTRY, "producer")
        .env("BIPS_CHANNEL", ch.name())
        .start();
    first.expect_line("CREATED", Duration::from_secs(10));
    for _ in 0..3 {
        match Producer::create(ch.name(), &Options::new(2, 64)) {
            Err(Error::ChannelBusy { name }) => assert_eq!(name, ch.name()),
            other => panic!("second producer while the first lives: {other:?}"),
        }
    }
    // The failed attempts changed nothing: consumers still attach.
    let c = Consumer::open(ch.name()).expect("open the first producer's channel");
    drop(c);

    first.send("quit");
    first.expect_line("DROPPED", Duration::from_secs(5));
    first.expect_success(Duration::from_secs(5));
    ch.assert_removed();
    // Once the first producer has gone, the name is free again.
    let again = Producer::create(ch.name(), &Options::new(2, 64)).expect("create after exit");
    drop(again);
    ch.assert_removed();
}

#[test]
fn missing_channel_is_not_found() {
    let ch = Channel::new("missing");
    match Consumer::open(ch.name()) {
        Err(Error::NotFound { name }) => assert_eq!(name, ch.name()),
        other => panic!("open of a missing channel: {other:?}"),
    }
    let msg = Consumer::open(ch.name()).unwrap_err().to_string();
    assert!(
        msg.contains(&format!("/dev/shm/bips.{}", ch.name())),
        "{msg}"
    );
    assert!(!ch.exists(), "opening must not create anything");
}

#[test]
fn invalid_names_are_refused_by_producer_and_consumer() {
    let long = "n".repeat(201);
    let bad = [
        "",
        ".",
        "..",
        ".hidden",
        "a/b",
        "/abs",
        "../escape",
        "sp ace",
        "tab\there",
        "nul\0x",
        "caméra",
        "a:b",
        "a\\b",
        long.as_str(),
    ];
    for name in bad {
        match Producer::create(name, &Options::new(2, 64)) {
            Err(Error::InvalidName { name: n, reason }) => {
                assert_eq!(n, name);
                assert!(!reason.is_empty());
            }
            other => panic!("Producer::create({name:?}): {other:?}"),
        }
        match Consumer::open(name) {
            Err(Error::InvalidName { name: n, .. }) => assert_eq!(n, name),
            other => panic!("Consumer::open({name:?}): {other:?}"),
        }
    }
    // The limits themselves are fine: 200 bytes in /dev/shm; on the memfd
    // backend, what a Unix socket path allows (80 bytes, with a short socket
    // directory), and a longer name is refused saying so.
    let ch = Channel::new("x");
    let max = if memfd_run().is_some() { 80 } else { 200 };
    if max < 200 {
        let too_long = format!("{}{}", ch.name(), "z".repeat(200 - ch.name().len()));
        match Producer::create(&too_long, &Options::new(1, 64)) {
            Err(Error::InvalidName { reason, .. }) => {
                assert!(reason.contains("socket"), "{reason}")
            }
            other => panic!("a 200-byte memfd channel name: {other:?}"),
        }
    }
    let longest = Channel::adopt(format!(
        "{}{}",
        ch.name(),
        "y".repeat(max - ch.name().len())
    ));
    let p =
        Producer::create(longest.name(), &Options::new(1, 64)).expect("the longest name is valid");
    assert!(longest.exists());
    drop(p);
    longest.assert_removed();
}
