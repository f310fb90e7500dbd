//! Closing a channel while its producer lives: `Producer::close` ends it at
//! once (consumers drain, then `Disconnected`; the name is free again; the
//! mapping stays valid), `Producer::close_after_loans` lets the loans out be
//! published first.

use std::time::Duration;

use bips::{Consumer, ConsumerOptions, Error, Options, Producer, Start};
use bips_tests::*;

fn oldest(name: &str) -> Consumer {
    Consumer::open_with(name, &ConsumerOptions::new().start(Start::Oldest)).unwrap()
}

#[test]
fn close_ends_the_channel_at_once_and_frees_the_name() {
    let ch = Channel::new("close");
    let producer = Producer::create(ch.name(), &Options::new(2, 64)).unwrap();
    let consumer = oldest(ch.name());
    let mut s = producer.loan().unwrap();
    s.as_mut_slice()[0] = 7;
    s.set_len(1);
    s.publish().unwrap();
    let out = producer.loan().unwrap(); // a loan still out when closing
    producer.close();
    assert!(producer.is_closed());
    assert!(!ch.exists(), "the name is removed at close, not at drop");
    assert!(matches!(out.publish(), Err(Error::Closed)));
    assert!(matches!(producer.loan(), Err(Error::Closed)));
    assert!(matches!(producer.try_loan(), Err(Error::Closed)));
    // What was published still arrives, then the end.
    assert_eq!(
        consumer
            .recv_timeout(Duration::from_secs(1))
            .unwrap()
            .as_slice(),
        [7]
    );
    assert!(matches!(
        consumer.recv_timeout(Duration::from_secs(1)),
        Err(Error::Disconnected)
    ));
    // The name is free while the closed producer (and its mapping) lives.
    let again = Producer::create(ch.name(), &Options::new(2, 64)).unwrap();
    drop(again);
    producer.close(); // idempotent
    drop(producer);
}

#[test]
fn close_after_loans_lets_the_loans_out_be_published_first() {
    let ch = Channel::new("closel");
    let producer = Producer::create(ch.name(), &Options::new(4, 64)).unwrap();
    let consumer = oldest(ch.name());
    let mut s = producer.loan().unwrap();
    let raw = producer.loan_raw().unwrap();
    producer.close_after_loans();
    assert!(!producer.is_closed(), "two loans are out");
    assert!(ch.exists());
    assert!(
        matches!(producer.try_loan(), Err(Error::Closed)),
        "no new loans"
    );
    s.as_mut_slice()[0] = 1;
    s.set_len(1);
    s.publish().unwrap();
    assert!(!producer.is_closed(), "a raw loan is still out");
    producer.publish_raw(raw).unwrap();
    assert!(producer.is_closed(), "closed when the last loan ended");
    assert!(!ch.exists());
    let got: Vec<u64> = std::iter::from_fn(|| consumer.recv_timeout(Duration::from_secs(1)).ok())
        .map(|s| s.seq())
        .collect();
    assert_eq!(got, [0, 1]);
    // Without loans out it closes at once.
    let ch2 = Channel::new("closel2");
    let p2 = Producer::create(ch2.name(), &Options::new(2, 64)).unwrap();
    p2.close_after_loans();
    assert!(p2.is_closed() && !ch2.exists());
}
