//! `bips inspect` shows a channel's held-sample limit (`max_held`) and how
//! many samples each consumer holds, in text and JSON, as a user runs it
//! (the built binary, a real channel in /dev/shm).

use std::process::Command;

use bips::{Consumer, Options, Producer};

const BIPS: &str = env!("CARGO_BIN_EXE_bips");

fn inspect(name: &str, json: bool) -> String {
    let mut c = Command::new(BIPS);
    c.args(["inspect", name]);
    if json {
        c.arg("--json");
    }
    let out = c.output().expect("run bips inspect");
    assert!(out.status.success(), "bips inspect: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn inspect_shows_max_held_and_holds() {
    let name = format!("cli-held-{}", std::process::id());
    let producer = Producer::create(&name, &Options::new(40, 64).max_held(33)).expect("create");
    let consumer = Consumer::open_with(
        &name,
        &bips::ConsumerOptions::new().start(bips::Start::Oldest),
    )
    .expect("open");
    for _ in 0..33 {
        producer.loan().unwrap().publish().unwrap();
    }
    let held: Vec<_> = (0..33)
        .map_while(|_| consumer.try_recv().unwrap())
        .collect();
    // 33 held: past the entry line, in the consumer's run of the hold table.
    let n = held.len();
    assert_eq!(n, 33);

    let text = inspect(&name, false);
    assert!(text.contains("max 33 held per consumer"), "{text}");
    let v: serde_json::Value = serde_json::from_str(&inspect(&name, true)).expect("json");
    assert_eq!(v["geometry"]["max_held"], 33, "{v}");
    assert_eq!(v["consumers"][0]["held"], n as u64, "{v}");
    drop(held);
    drop(consumer);
    drop(producer);
    assert!(!std::path::Path::new(&format!("/dev/shm/bips.{name}")).exists());
}
