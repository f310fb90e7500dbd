//! `SampleMut::into_raw` / `Producer::publish_raw` / `Producer::unloan_raw`:
//! the owned loan the C ABI, GStreamer pool and Python bindings keep in
//! places a lifetime cannot describe.

use std::time::Duration;

use bips::{Consumer, Error, Options, Producer};
use bips_tests::*;

#[test]
fn raw_loan_publishes_payload_meta_and_timestamp() {
    let ch = Channel::new("rawloan-pub");
    let producer = Producer::create(ch.name(), &Options::new(2, 256).meta_size(16)).unwrap();
    let consumer = Consumer::open(ch.name()).unwrap();

    let mut raw = producer.loan().unwrap().into_raw();
    assert_eq!((raw.capacity(), raw.meta_len()), (256, 16));
    // SAFETY: `producer` lives and `raw` is outstanding; no other view exists.
    unsafe {
        fill_payload(7, 1, &mut raw.as_mut_slice()[..100]);
        fill_meta(7, 1, raw.meta_mut());
    }
    raw.set_len(100).unwrap();
    raw.set_timestamp_ns(12_345);
    let seq = producer.publish_raw(raw).unwrap();

    let s = consumer.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((s.seq(), s.len(), s.timestamp_ns()), (seq, 100, 12_345));
    verify_payload(7, 1, s.as_slice(), &mut Vec::new()).unwrap();
    verify_meta(7, 1, s.meta()).unwrap();
}

#[test]
fn raw_loan_set_len_beyond_capacity_is_refused_and_keeps_the_length() {
    let ch = Channel::new("rawloan-len");
    let producer = Producer::create(ch.name(), &Options::new(1, 64)).unwrap();
    let mut raw = producer.loan().unwrap().into_raw();
    raw.set_len(10).unwrap();
    assert!(matches!(raw.set_len(65), Err(Error::InvalidOptions(_))));
    assert_eq!(raw.len(), 10);
    producer.unloan_raw(raw);
}

#[test]
fn unloan_raw_gives_the_buffer_back_unpublished() {
    let ch = Channel::new("rawloan-unloan");
    let producer = Producer::create(ch.name(), &Options::new(1, 64)).unwrap();
    let consumer = Consumer::open(ch.name()).unwrap();
    let raw = producer.loan().unwrap().into_raw();
    assert!(
        producer.try_loan().unwrap().is_none(),
        "the only buffer is loaned"
    );
    producer.unloan_raw(raw);
    assert!(
        consumer.try_recv().unwrap().is_none(),
        "nothing was published"
    );
    let again = producer.try_loan().unwrap().expect("the buffer came back");
    drop(again);
}

#[test]
fn a_foreign_raw_loan_is_refused() {
    let a = Channel::new("rawloan-a");
    let b = Channel::new("rawloan-b");
    let pa = Producer::create(a.name(), &Options::new(1, 64)).unwrap();
    let pb = Producer::create(b.name(), &Options::new(1, 64)).unwrap();
    let raw = pa.loan().unwrap().into_raw();
    assert!(pa.owns(&raw) && !pb.owns(&raw));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pb.publish_raw(raw)));
    assert!(r.is_err(), "publishing A's loan through B must panic");
    // B's only buffer is untouched and still free.
    assert!(pb.try_loan().unwrap().is_some());
}
