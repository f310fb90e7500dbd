//! A producer creates, locks and formats its segment under a staging name
//! (`/dev/shm/bips..new-<pid>-<n>`) and renames it into place only then, so
//! `bips clean` (monitor::remove_if_dead / remove_stale_staging) running at
//! the same time can never remove a live producer's channel, and a consumer
//! never finds a half-made one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bips::{monitor, Consumer, Options, Producer};
use bips_tests::*;

/// Before staging, a sweep landing between a producer's `shm_open` and its
/// lock unlinked the fresh channel: `create` succeeded, yet no consumer
/// could ever find it. Hammer that window.
#[test]
fn clean_racing_create_never_removes_a_live_channel() {
    // The sweeper removes every unlocked staging object: keep the other
    // staging test (which plants one) out of its way.
    let _s = serial();
    let ch = Channel::new("staging-race");
    let stop = Arc::new(AtomicBool::new(false));
    let sweeper = {
        let (stop, name) = (stop.clone(), ch.name().to_owned());
        std::thread::spawn(move || {
            let mut sweeps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = monitor::remove_if_dead(&name, false);
                // Zero grace: also removes staging objects not yet locked,
                // which sends their creator round its retry loop.
                let _ = monitor::remove_stale_staging(Duration::ZERO, false);
                sweeps += 1;
                // Now and then, not always: a sweep landing in every single
                // create-to-lock window (as under qemu) would send a create
                // round its bounded retry loop until it gives up.
                std::thread::sleep(Duration::from_micros(50));
            }
            sweeps
        })
    };
    for i in 0..300u64 {
        let producer = Producer::create(ch.name(), &Options::new(2, 64)).expect("create");
        let consumer = Consumer::open(ch.name())
            .unwrap_or_else(|e| panic!("iteration {i}: channel of a live producer gone: {e}"));
        let mut s = producer.loan().unwrap();
        s.write_pod(&[i]).unwrap();
        s.publish().unwrap();
        assert_eq!(consumer.recv().unwrap().as_pod::<u64>().unwrap(), &[i]);
        drop(consumer);
        drop(producer);
        assert!(
            !ch.exists(),
            "iteration {i}: producer drop left the channel"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let sweeps = sweeper.join().unwrap();
    assert!(sweeps > 0, "the sweeper never ran");
}

/// A staging object left by a producer that died while creating (simulated:
/// a file nobody locks) is removed once older than the grace period, and
/// only then.
#[test]
fn stale_staging_object_is_removed_after_grace() {
    let _s = serial();
    let file = format!("bips..new-{}-{}", std::process::id(), u64::MAX - 7);
    let path = format!("/dev/shm/{file}");
    std::fs::write(&path, [0u8; 64]).unwrap();
    let kept = monitor::remove_stale_staging(Duration::from_secs(3600), false).unwrap();
    assert!(!kept.contains(&file) && std::path::Path::new(&path).exists());
    let dry = monitor::remove_stale_staging(Duration::ZERO, true).unwrap();
    assert!(dry.contains(&file) && std::path::Path::new(&path).exists());
    let removed = monitor::remove_stale_staging(Duration::ZERO, false).unwrap();
    assert!(removed.contains(&file), "removed {removed:?}");
    assert!(!std::path::Path::new(&path).exists());
}
