//! The raw real-time API across processes: the buffer table
//! (`Producer::buffers`, `Consumer::buffers`) and index-carrying loans and
//! samples (`loan_raw`/`publish_raw`, `recv_raw`/`release_raw`). A producer
//! writes each frame through its table's pointer for the loaned index; a
//! consumer in another process reads it through its own table's pointer for
//! the received index, keeping a few samples at once.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use bips::{Error, Options, Producer};
use bips_tests::*;

const ENTRY: &str = "child_entry";
const N: u64 = 500;
const TAG: u64 = 0xAB1;

/// Children of this file start here (a no-op in a normal test run).
#[test]
fn child_entry() {
    bips_tests::child_entry(&[("consumer", consumer_role), ("scribbler", scribbler_role)]);
}

/// Reads every sample through its buffer table, holding up to 3 at once.
fn consumer_role() {
    let name: String = env("BIPS_CHANNEL");
    let consumer = open_consumer(&name, "park").expect("open");
    let table = consumer.buffers();
    assert_eq!(table.len(), 4);
    say("READY");
    let mut held = VecDeque::new();
    let mut next = 0u64;
    let mut indices = BTreeSet::new();
    let mut scratch = Vec::new();
    loop {
        match consumer.recv_raw_timeout(Duration::from_secs(10)) {
            Ok(s) => {
                let b = &table[s.buffer_index() as usize];
                assert_eq!(b.index, s.buffer_index());
                assert_eq!(s.as_ptr(), b.ptr.cast_const(), "the table's address");
                assert_eq!(s.seq(), next);
                // SAFETY: the sample is held (not yet released) and the
                // consumer lives: the producer does not write this buffer,
                // and `len <= capacity` was checked by the protocol.
                let (payload, meta) = unsafe {
                    (
                        std::slice::from_raw_parts(b.ptr.cast_const(), s.len()),
                        std::slice::from_raw_parts(b.meta.cast_const(), b.meta_len),
                    )
                };
                verify_payload(next, TAG, payload, &mut scratch).unwrap();
                verify_meta(next, TAG, meta).unwrap();
                indices.insert(s.buffer_index());
                next += 1;
                held.push_back(s);
                if held.len() > 2 {
                    consumer.release_raw(held.pop_front().unwrap());
                }
            }
            Err(Error::Disconnected) => break,
            Err(e) => panic!("recv_raw: {e}"),
        }
    }
    for s in held {
        consumer.release_raw(s);
    }
    say(format!("RESULT received={next} indices={}", indices.len()));
}

/// Receives one sample, then writes into its payload through the raw
/// pointer (a consumer bug): the write must fault, not reach the frame.
fn scribbler_role() {
    let name: String = env("BIPS_CHANNEL");
    let consumer = open_consumer(&name, "park").expect("open");
    let table = consumer.buffers();
    say("READY");
    let s = consumer
        .recv_raw_timeout(Duration::from_secs(10))
        .expect("recv");
    let b = &table[s.buffer_index() as usize];
    // The metadata area is part of the control region (still writable);
    // the payload is not.
    // SAFETY: deliberately wrong (a consumer must never write a payload):
    // this write is what the test expects to fault. Volatile, so the
    // compiler keeps it.
    unsafe { b.ptr.write_volatile(0xAA) };
    say("RESULT wrote=1");
}

#[test]
fn a_consumer_that_writes_a_payload_faults_and_the_frame_is_intact() {
    let ch = Channel::new("rawro");
    let producer = Producer::create(ch.name(), &Options::new(2, 4096)).unwrap();
    let reader = open_consumer(ch.name(), "park").unwrap();
    let mut c = spawn(ENTRY, "scribbler")
        .env("BIPS_CHANNEL", ch.name())
        .start();
    c.expect_line("READY", Duration::from_secs(10));
    await_consumers(&producer, 2, Duration::from_secs(5));
    let mut s = producer.loan().unwrap();
    s.as_mut_slice()[0] = 0x55;
    s.set_len(1);
    s.publish().unwrap();
    let status = c.wait_exit(Duration::from_secs(10));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGSEGV),
        "the write must fault: {}",
        describe(status)
    );
    let got = reader.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(got.as_slice(), [0x55], "the frame is intact");
}

#[test]
fn frames_written_and_read_through_the_buffer_tables() {
    let ch = Channel::new("rawapi");
    let producer = Producer::create(ch.name(), &Options::new(4, 4096).meta_size(16)).unwrap();
    let table = producer.buffers();
    assert_eq!(table.len(), 4);
    let page = bips::page_size();
    for (i, b) in table.iter().enumerate() {
        assert_eq!(b.index as usize, i);
        assert_eq!((b.capacity, b.meta_len), (4096, 16));
        assert_eq!(b.ptr as usize % page, 0, "page-aligned by default");
    }
    let distinct: BTreeSet<usize> = table.iter().map(|b| b.ptr as usize).collect();
    assert_eq!(distinct.len(), 4);
    assert_eq!(producer.buffers(), table, "stable for the producer's life");

    let mut c = spawn(ENTRY, "consumer")
        .env("BIPS_CHANNEL", ch.name())
        .start();
    c.expect_line("READY", Duration::from_secs(10));
    await_consumers(&producer, 1, Duration::from_secs(5));
    for seq in 0..N {
        let mut loan = producer.loan_raw_timeout(Duration::from_secs(10)).unwrap();
        let b = &table[loan.buffer_index() as usize];
        assert_eq!(loan.as_mut_ptr(), b.ptr);
        let len = payload_len(seq, b.capacity);
        // SAFETY: the buffer and its metadata are loaned to us until
        // publish_raw; nobody else writes or reads them meanwhile.
        unsafe {
            fill_payload(seq, TAG, std::slice::from_raw_parts_mut(b.ptr, len));
            fill_meta(seq, TAG, std::slice::from_raw_parts_mut(b.meta, b.meta_len));
        }
        loan.set_len(len).unwrap();
        assert_eq!(producer.publish_raw(loan).unwrap(), seq);
    }
    drop(producer);
    let r = c.expect_result(Duration::from_secs(20));
    c.expect_success(Duration::from_secs(10));
    assert_eq!(r.u64("received"), N);
    assert_eq!(r.u64("indices"), 4, "every buffer was used");
    ch.assert_removed();
}
