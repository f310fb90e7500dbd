//! Untrusted memory (S3): while a producer process and a consumer process
//! run, this test writes random bytes into the live segment's control area
//! (header, producer block, consumer table, descriptor ring, buffer
//! descriptors, metadata). Neither process may crash (die by a signal or
//! panic) or hang: every operation returns `Ok` or an `Error`.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use bips::{Backpressure, Consumer, Error, Geometry, Options, Producer};
use bips_tests::*;

const ENTRY: &str = "child_entry";
const BUFFERS: u32 = 4;
const BUF_SIZE: usize = 4096;
const RUN: Duration = Duration::from_millis(2000);

/// Children of this file start here (a no-op in a normal test run).
#[test]
fn child_entry() {
    bips_tests::child_entry(&[
        ("producer", hostile_producer_role),
        ("consumer", hostile_consumer_role),
    ]);
}

fn policy(name: &str) -> Backpressure {
    match name {
        "block" => Backpressure::Block,
        "drop" => Backpressure::DropOldest,
        other => panic!("policy {other:?}"),
    }
}

fn kind(e: &Error) -> String {
    match e {
        Error::Corrupt { what } => format!("Corrupt({})", what.replace(' ', "_")),
        e => {
            let s = format!("{e:?}");
            s.split(|c: char| !c.is_alphanumeric())
                .next()
                .unwrap_or("?")
                .to_owned()
        }
    }
}

fn tally(map: &BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Publishes as fast as it can for `RUN`, through every producer call.
fn hostile_producer_role() {
    let name: String = env("BIPS_CHANNEL");
    let opts = Options::new(BUFFERS, BUF_SIZE).backpressure(policy(&env::<String>("BIPS_POLICY")));
    let producer = Producer::create(&name, &opts).expect("create");
    say("CREATED");
    await_consumers(&producer, 1, Duration::from_secs(10));
    say("RUNNING");
    let deadline = Instant::now() + RUN;
    let (mut published, mut errors) = (0u64, BTreeMap::new());
    let mut i = 0u64;
    while Instant::now() < deadline {
        i += 1;
        let loaned = if i % 3 == 0 {
            producer.try_loan().map(|o| o.ok_or(Error::Timeout))
        } else {
            Ok(producer.loan_timeout(Duration::from_millis(20)))
        };
        let r = loaned.and_then(|r| r).and_then(|mut s| {
            let len = payload_len(i, s.capacity());
            fill_payload(i, 1, &mut s.as_mut_slice()[..len]);
            s.set_len(len);
            fill_meta(i, 1, s.meta_mut());
            if i % 17 == 0 {
                drop(s); // unloan
                Ok(0)
            } else {
                s.publish()
            }
        });
        match r {
            Ok(_) => published += 1,
            Err(e) => {
                *errors.entry(kind(&e)).or_insert(0) += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        if i % 50 == 0 {
            let _ = producer.consumer_count();
            let _ = producer.reap_dead_consumers();
        }
    }
    say(format!(
        "RESULT published={published} errors={}",
        tally(&errors)
    ));
}

/// Opens, receives for a while (reading every byte of each sample), drops the
/// consumer and opens again, until `RUN` is over.
fn hostile_consumer_role() {
    let name: String = env("BIPS_CHANNEL");
    let deadline = Instant::now() + RUN;
    let (mut received, mut opens, mut errors) = (0u64, 0u64, BTreeMap::new());
    let mut sum = 0u64;
    let mut said_ready = false;
    while Instant::now() < deadline {
        let consumer = match open_consumer(&name, "default") {
            Ok(c) => c,
            Err(e) => {
                *errors.entry(format!("open-{}", kind(&e))).or_insert(0) += 1;
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        opens += 1;
        if !said_ready {
            say("READY");
            said_ready = true;
        }
        let cycle_end = Instant::now() + Duration::from_millis(150);
        let mut held = std::collections::VecDeque::new();
        while Instant::now() < cycle_end.min(deadline) {
            let r = if received % 2 == 0 {
                consumer.recv_timeout(Duration::from_millis(20))
            } else {
                consumer.try_recv().and_then(|o| o.ok_or(Error::Timeout))
            };
            match r {
                Ok(s) => {
                    received += 1;
                    // Touch every byte the sample claims (bounds are bips').
                    sum = s
                        .as_slice()
                        .iter()
                        .chain(s.meta())
                        .fold(sum, |a, &b| a.wrapping_add(u64::from(b)));
                    sum = sum.wrapping_add(s.seq() ^ s.lagged() ^ s.timestamp_ns());
                    // Hold a few across later receives, released oldest
                    // first (see `block_out_of_order_release_...` in
                    // order.rs for why not in any order).
                    held.push_back(s);
                    if held.len() > 2 {
                        held.pop_front();
                    }
                }
                Err(Error::Disconnected) => {
                    *errors.entry("Disconnected".to_owned()).or_insert(0) += 1;
                    break;
                }
                Err(e) => {
                    *errors.entry(kind(&e)).or_insert(0) += 1;
                    if !matches!(e, Error::Timeout) {
                        std::thread::sleep(Duration::from_micros(500));
                    }
                }
            }
        }
        drop(held);
        drop(consumer);
    }
    if !said_ready {
        say("READY");
    }
    say(format!(
        "RESULT received={received} opens={opens} sum={sum} errors={}",
        tally(&errors)
    ));
}

/// The live segment, mapped into this process for vandalism.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    fn open(path: &std::path::Path) -> Mapping {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let len = f.metadata().unwrap().len() as usize;
        // SAFETY: a fresh shared mapping of the whole file, at an address the
        // kernel chooses; the fd may be closed afterwards.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        Mapping { ptr: p.cast(), len }
    }

    fn word(&self, off: usize) -> &AtomicU64 {
        assert!(off % 8 == 0 && off + 8 <= self.len);
        // SAFETY: in bounds and 8-aligned (page-aligned base); atomics make
        // the racy access with the other processes defined.
        unsafe { &*(self.ptr.add(off) as *const AtomicU64) }
    }

    fn byte(&self, off: usize) -> &AtomicU8 {
        assert!(off < self.len);
        // SAFETY: in bounds; any address is aligned for a byte.
        unsafe { &*(self.ptr.add(off) as *const AtomicU8) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `open`, no longer used.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

fn vandalise(policy_name: &str) {
    let _s = serial();
    let ch = Channel::new(&format!("hostile-{policy_name}"));
    let mut producer = spawn(ENTRY, "producer")
        .env("BIPS_CHANNEL", ch.name())
        .env("BIPS_POLICY", policy_name)
        .start();
    producer.expect_line("CREATED", Duration::from_secs(10));
    let mut consumer = spawn(ENTRY, "consumer")
        .env("BIPS_CHANNEL", ch.name())
        .start();
    consumer.expect_line("READY", Duration::from_secs(10));
    producer.expect_line("RUNNING", Duration::from_secs(10));

    // Where the control structures are (the geometry the producer used).
    let page = bips::page_size();
    let layout = bips_core::Layout::new(Geometry {
        buffer_count: BUFFERS,
        buffer_size: BUF_SIZE as u64,
        alignment: page as u32,
        ring_capacity: BUFFERS.next_power_of_two(),
        max_consumers: 8,
        meta_size: 64,
        policy: policy(policy_name),
        max_held: bips::MAX_HELD as u32,
    })
    .unwrap();
    let map = Mapping::open(&ch.path());
    assert_eq!(map.len, layout.total_size.div_ceil(page) * page);
    let areas = [
        ("header", 0, layout.producer_offset),
        ("producer", layout.producer_offset, layout.consumers_offset),
        ("consumers", layout.consumers_offset, layout.ring_offset),
        ("ring", layout.ring_offset, layout.buffers_offset),
        ("descriptors", layout.buffers_offset, layout.meta_offset),
        ("meta", layout.meta_offset, layout.data_offset),
    ];
    let mut rng = Rng::new(u64::from(std::process::id()) ^ mix64(policy_name.len() as u64));
    let mut writes = 0u64;
    // First let them run undisturbed for a moment.
    std::thread::sleep(Duration::from_millis(200));
    let until = Instant::now() + RUN - Duration::from_millis(500);
    while Instant::now() < until {
        // The producer block and the consumer table matter most; the header
        // is read only by `open` (so rarely hit, to let consumers reopen).
        let (_, lo, hi) = areas[match rng.below(20) {
            0 => 0,
            1..=5 => 1,
            6..=10 => 2,
            11..=13 => 3,
            14..=16 => 4,
            _ => 5,
        }];
        let off = lo + (rng.below((hi - lo) as u64) as usize & !7);
        let w = map.word(off);
        let old = w.load(Ordering::Relaxed);
        match rng.below(6) {
            0 => w.store(rng.next_u64(), Ordering::Relaxed),
            1 => w.store(rng.below(5), Ordering::Relaxed),
            2 => w.store(u64::MAX - rng.below(3), Ordering::Relaxed),
            3 => w.store(
                old.wrapping_add(rng.below(9)).wrapping_sub(4),
                Ordering::Relaxed,
            ),
            4 => w.store(old ^ (1 << rng.below(64)), Ordering::Relaxed),
            _ => map
                .byte(off + rng.below(8) as usize)
                .store(rng.next_u64() as u8, Ordering::Relaxed),
        }
        writes += 1;
        // Slow enough that the two processes run in many partly corrupt
        // states, not only in a wrecked one.
        std::thread::sleep(Duration::from_micros(700));
    }
    // A smashed header is refused by anyone who opens the channel now.
    map.word(0).store(0x0BAD_0BAD_0BAD_0BAD, Ordering::Relaxed);
    match Consumer::open(ch.name()) {
        Err(Error::Layout { .. }) => {}
        other => panic!("open of a segment with a bad magic: {other:?}"),
    }
    drop(map);

    // Both must finish on their own, normally, in time.
    let p = producer.expect_result(Duration::from_secs(5));
    let c = consumer.expect_result(Duration::from_secs(5));
    producer.expect_success(Duration::from_secs(5));
    consumer.expect_success(Duration::from_secs(5));
    println!(
        "{policy_name}: {writes} hostile writes; producer published={} errors=[{}]; \
         consumer received={} opens={} errors=[{}]",
        p.u64("published"),
        p.str("errors"),
        c.u64("received"),
        c.u64("opens"),
        c.str("errors"),
    );
    assert!(writes > 500, "too few hostile writes ({writes})");
    assert!(p.u64("published") > 0, "the producer never published");
    ch.assert_removed();
}

#[test]
fn hostile_bytes_in_block_channel_never_crash_or_hang() {
    vandalise("block");
}

#[test]
fn hostile_bytes_in_drop_oldest_channel_never_crash_or_hang() {
    vandalise("drop");
}
