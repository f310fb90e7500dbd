//! bipssink and bipssrc in real pipelines (in this process, registered with
//! `plugin_register_static`), over real shared memory: the zero-copy pool
//! path, the copy path, caps/timestamps/EOS across the channel, and a plain
//! `bips::Producer` writing the metadata layout by hand.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gst::prelude::*;
use gst_video::prelude::*;
use gstbips::meta;

fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        gst::init().expect("gst::init");
        gstbips::plugin_register_static().expect("register the bips plugin");
    });
}

fn channel(test: &str) -> String {
    format!("gst-test-{}-{test}", std::process::id())
}

fn shm_gone(name: &str) -> bool {
    !Path::new(&format!("/dev/shm/bips.{name}")).exists()
}

/// Plays `pipeline` until EOS (Ok) or an error (Err), at most `limit`.
fn run(pipeline: &gst::Pipeline, limit: Duration) -> Result<(), String> {
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| format!("set_state: {e}"))?;
    let bus = pipeline.bus().expect("pipeline bus");
    let result = loop {
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_nseconds(limit.as_nanos() as u64))
        else {
            break Err(format!("no EOS within {limit:?}"));
        };
        match msg.view() {
            gst::MessageView::Eos(_) => break Ok(()),
            gst::MessageView::Error(e) => {
                break Err(format!("{} ({:?})", e.error(), e.debug()));
            }
            _ => {}
        }
    };
    pipeline
        .set_state(gst::State::Null)
        .map_err(|e| format!("set_state(Null): {e}"))?;
    result
}

fn parse(desc: &str) -> gst::Pipeline {
    gst::parse::launch(desc)
        .unwrap_or_else(|e| panic!("parse {desc:?}: {e}"))
        .downcast::<gst::Pipeline>()
        .expect("a pipeline")
}

fn sink_of(p: &gst::Pipeline) -> gst::Element {
    p.by_name("sink").expect("an element named sink")
}

#[test]
fn upstream_writing_into_the_pool_is_published_without_copy() {
    init();
    let ch = channel("zero-copy");
    let p = parse(&format!(
        "videotestsrc num-buffers=30 ! video/x-raw,format=RGBA,width=320,height=240 \
         ! bipssink name=sink channel={ch} sync=false"
    ));
    run(&p, Duration::from_secs(20)).unwrap();
    let sink = sink_of(&p);
    let stats = sink.property::<gst::Structure>("stats");
    assert_eq!(
        stats.get::<u64>("zero-copy-buffers").unwrap(),
        30,
        "{stats}"
    );
    assert_eq!(stats.get::<u64>("copied-buffers").unwrap(), 0, "{stats}");
    assert_eq!(sink.property::<u64>("zero-copy-buffers"), 30);
    drop(p);
    assert!(shm_gone(&ch), "/dev/shm/bips.{ch} left behind");
}

#[test]
fn buffers_from_elsewhere_are_copied_once() {
    init();
    let ch = channel("copy");
    // audiotestsrc gets no pool from bipssink (not raw video): copy path.
    let p = parse(&format!(
        "audiotestsrc num-buffers=12 ! audio/x-raw,format=S16LE,channels=2 \
         ! bipssink name=sink channel={ch} sync=false"
    ));
    run(&p, Duration::from_secs(20)).unwrap();
    let stats = sink_of(&p).property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("copied-buffers").unwrap(), 12, "{stats}");
    assert_eq!(stats.get::<u64>("zero-copy-buffers").unwrap(), 0, "{stats}");
    drop(p);
    assert!(shm_gone(&ch));
}

/// What a fakesink saw: caps and (pts, duration, size) of every buffer.
#[derive(Default, Debug)]
struct Seen {
    caps: Option<gst::Caps>,
    buffers: Vec<(Option<gst::ClockTime>, Option<gst::ClockTime>, usize)>,
    strides: Vec<Vec<i32>>,
    first_bytes: Vec<Vec<u8>>,
    /// Buffers kept alive (when asked to), as a downstream that holds frames.
    kept: Vec<gst::Buffer>,
}

fn watch(sink: &gst::Element) -> Arc<Mutex<Seen>> {
    watch_keeping(sink, false)
}

fn watch_keeping(sink: &gst::Element, keep: bool) -> Arc<Mutex<Seen>> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = Arc::clone(&seen);
    sink.set_property("signal-handoffs", true);
    sink.connect("handoff", false, move |args| {
        let buffer = args[1].get::<gst::Buffer>().expect("handoff buffer");
        let pad = args[2].get::<gst::Pad>().expect("handoff pad");
        let mut s = s.lock().unwrap();
        s.caps = pad.current_caps();
        s.buffers
            .push((buffer.pts(), buffer.duration(), buffer.size()));
        if let Some(vm) = buffer.meta::<gst_video::VideoMeta>() {
            s.strides.push(vm.stride().to_vec());
        }
        let map = buffer.map_readable().expect("readable");
        s.first_bytes.push(map[..8.min(map.len())].to_vec());
        drop(map);
        if keep {
            s.kept.push(buffer);
        }
        None
    });
    seen
}

#[test]
fn bipssrc_gets_caps_timestamps_and_eos_from_bipssink() {
    init();
    let ch = channel("src");
    let producer = parse(&format!(
        "videotestsrc num-buffers=25 ! video/x-raw,format=RGB,width=322,height=240,framerate=25/1 \
         ! bipssink name=sink channel={ch} wait-for-consumers=1 sync=false"
    ));
    let consumer = parse(&format!(
        "bipssrc channel={ch} timeout=10000000000 ! videoconvert \
         ! video/x-raw,format=GRAY8 ! fakesink name=sink"
    ));
    let seen = watch(&sink_of(&consumer));
    let prod = std::thread::spawn(move || {
        let r = run(&producer, Duration::from_secs(30));
        drop(producer);
        r
    });
    run(&consumer, Duration::from_secs(30)).expect("consumer pipeline ends with EOS");
    prod.join().unwrap().expect("producer pipeline");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.buffers.len(), 25, "{seen:?}");
    let caps = seen.caps.as_ref().expect("caps negotiated");
    let st = caps.structure(0).unwrap();
    assert_eq!(st.name(), "video/x-raw");
    assert_eq!(st.get::<&str>("format").unwrap(), "GRAY8");
    assert_eq!(st.get::<i32>("width").unwrap(), 322);
    assert_eq!(st.get::<i32>("height").unwrap(), 240);
    for (i, (pts, duration, _)) in seen.buffers.iter().enumerate() {
        assert_eq!(*pts, Some(gst::ClockTime::from_mseconds(40 * i as u64)));
        assert_eq!(*duration, Some(gst::ClockTime::from_mseconds(40)));
    }
    assert!(shm_gone(&ch));
}

/// Runs `videotestsrc ! bipssink` (4 buffers) into `bipssrc ! fakesink`;
/// returns bipssrc's (zero-copy, copied) counts and what the fakesink saw.
fn src_counts(test: &str, frames: u32, keep: bool, src_props: &str) -> (u64, u64, usize) {
    let ch = channel(test);
    let producer = parse(&format!(
        "videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,format=GRAY8,width=64,height=48 \
         ! bipssink channel={ch} buffers=4 wait-for-consumers=1 sync=false"
    ));
    let consumer = parse(&format!(
        "bipssrc name=src channel={ch} timeout=10000000000 {src_props} ! fakesink name=sink"
    ));
    let seen = watch_keeping(&sink_of(&consumer), keep);
    let prod = std::thread::spawn(move || run(&producer, Duration::from_secs(30)));
    run(&consumer, Duration::from_secs(30)).expect("consumer pipeline ends with EOS");
    prod.join().unwrap().expect("producer pipeline");
    let src = consumer.by_name("src").unwrap();
    let counts = (
        src.property::<u64>("zero-copy-buffers"),
        src.property::<u64>("copied-buffers"),
        seen.lock().unwrap().buffers.len(),
    );
    seen.lock().unwrap().kept.clear(); // gives the held samples back
    drop(consumer);
    assert!(shm_gone(&ch));
    counts
}

#[test]
fn bipssrc_pushes_views_of_the_shared_buffers() {
    init();
    assert_eq!(src_counts("src-zero-copy", 20, false, ""), (20, 0, 20));
    assert_eq!(
        src_counts("src-copy", 20, false, "zero-copy=false"),
        (0, 20, 20)
    );
}

#[test]
fn bipssrc_copies_once_downstream_holds_too_many_frames() {
    init();
    // Downstream keeps every buffer: 3 (buffers - 1) travel as views, the
    // rest are copied, and the lossless producer never stalls on them.
    assert_eq!(src_counts("src-held", 12, true, ""), (3, 9, 12));
}

/// A plain `bips::Producer` (no GStreamer) feeds bipssrc: the caps in the
/// metadata header, the geometry in the frame descriptor. Padded rows (a
/// stride of 256 for 64 RGB pixels) reach downstream as a GstVideoMeta.
#[test]
fn a_plain_rust_producer_with_a_descriptor_feeds_bipssrc() {
    init();
    let ch = channel("rust-producer");
    let (w, h, stride) = (64usize, 48usize, 256usize);
    let caps = rgb_caps(w, h);
    let producer = bips::Producer::create(&ch, &bips::Options::new(4, stride * h).meta_size(1024))
        .expect("create channel");
    let consumer = parse(&format!(
        "bipssrc channel={ch} timeout=10000000000 ! fakesink name=sink"
    ));
    let seen = watch(&sink_of(&consumer));
    let cons = std::thread::spawn(move || {
        let r = run(&consumer, Duration::from_secs(30));
        drop(consumer);
        r
    });
    wait_attached(&producer);
    let d = bips::Descriptor::image(h as u64, w as u64, 3, bips::DType::U8)
        .unwrap()
        .with_strides(&[stride as i64, 3, 1])
        .unwrap()
        .with_format("RGB")
        .unwrap();
    for i in 0..10u64 {
        let mut s = producer.loan().unwrap();
        s.as_mut_slice()[..8].copy_from_slice(&i.to_le_bytes());
        s.set_len(stride * h);
        s.set_descriptor(&d).unwrap();
        meta::write(s.meta_mut(), &header(i), caps.as_bytes()).unwrap();
        s.publish().unwrap();
    }
    drop(producer); // the producer leaves: bipssrc ends the stream
    cons.join()
        .unwrap()
        .expect("bipssrc pipeline ends with EOS");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.buffers.len(), 10);
    let st = seen.caps.as_ref().unwrap().structure(0).unwrap().to_owned();
    assert_eq!(st.get::<i32>("width").unwrap(), w as i32);
    for (i, (pts, _, size)) in seen.buffers.iter().enumerate() {
        assert_eq!(*pts, Some(gst::ClockTime::from_mseconds(i as u64)));
        assert_eq!(*size, stride * h);
        assert_eq!(seen.first_bytes[i], (i as u64).to_le_bytes());
    }
    assert_eq!(
        seen.strides,
        vec![vec![stride as i32]; 10],
        "padded rows travel as a GstVideoMeta"
    );
    assert!(shm_gone(&ch));
}

fn rgb_caps(w: usize, h: usize) -> String {
    format!(
        "video/x-raw, format=(string)RGB, width=(int){w}, height=(int){h}, framerate=(fraction)30/1"
    )
}

/// The metadata header of frame `i` (1 ms apart; the geometry is in the
/// descriptor).
fn header(i: u64) -> meta::Header {
    meta::Header {
        pts: i * 1_000_000,
        dts: meta::NONE,
        duration: 1_000_000,
        offset: i,
        offset_end: i + 1,
        flags: 0,
        base_time: meta::NONE,
        running_time: meta::NONE,
    }
}

fn wait_attached(producer: &bips::Producer) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while producer.consumer_count() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "bipssrc never attached"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn bipssrc_times_out_without_a_producer() {
    init();
    let p = parse(&format!(
        "bipssrc channel={} timeout=200000000 ! fakesink",
        channel("absent")
    ));
    let err = run(&p, Duration::from_secs(10)).unwrap_err();
    assert!(err.contains("within the timeout"), "{err}");
}

/// H1: a `queue` between upstream and bipssink puts pool acquires (upstream
/// thread) and renders (queue thread) on two threads. A loan waiting with the
/// channel's mutex held starved render() of that mutex, about 1 s per frame.
#[test]
fn a_queue_before_bipssink_does_not_starve_render() {
    init();
    let ch = channel("queue");
    let frames = 60;
    let producer = parse(&format!(
        "videotestsrc num-buffers={frames} ! video/x-raw,format=GRAY8,width=64,height=48,framerate=1000/1 \
         ! queue ! bipssink name=sink channel={ch} buffers=4 wait-for-consumers=1 sync=false"
    ));
    let consumer = parse(&format!(
        "bipssrc channel={ch} timeout=30000000000 ! fakesink name=sink sync=false"
    ));
    let seen = watch(&sink_of(&consumer));
    let start = std::time::Instant::now();
    let prod = std::thread::spawn(move || {
        let r = run(&producer, Duration::from_secs(60));
        let stats = sink_of(&producer).property::<gst::Structure>("stats");
        drop(producer);
        r.map(|()| stats)
    });
    run(&consumer, Duration::from_secs(60)).expect("consumer pipeline ends with EOS");
    let stats = prod.join().unwrap().expect("producer pipeline");
    let elapsed = start.elapsed();
    assert_eq!(seen.lock().unwrap().buffers.len(), frames);
    assert_eq!(
        stats.get::<u64>("zero-copy-buffers").unwrap(),
        frames as u64,
        "{stats}"
    );
    assert!(
        elapsed < Duration::from_secs(20),
        "{frames} frames took {elapsed:?}: render starved of the channel's mutex"
    );
    drop(consumer);
    assert!(shm_gone(&ch));
}

/// H1, the mutex itself: while a pool acquire waits for a free buffer (every
/// one is loaned, upstream of a `queue`, and render waits for a consumer),
/// reading `stats` (which takes the channel's mutex) must not wait for that
/// acquire. It used to wait out the 5 ms loan slice held under the mutex:
/// about 4 ms a read here.
#[test]
fn a_waiting_loan_does_not_hold_the_channel_mutex() {
    init();
    let ch = channel("mutex");
    let p = parse(&format!(
        "videotestsrc num-buffers=20 ! video/x-raw,format=GRAY8,width=64,height=48 \
         ! queue ! bipssink name=sink channel={ch} buffers=2 wait-for-consumers=1 sync=false"
    ));
    let sink = sink_of(&p);
    p.set_state(gst::State::Playing).unwrap();
    // Wait until the channel exists and upstream holds both buffers.
    std::thread::sleep(Duration::from_millis(300));
    let mut reads: Vec<Duration> = (0..60)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(1));
            let start = std::time::Instant::now();
            let stats = sink.property::<gst::Structure>("stats");
            let took = start.elapsed();
            assert_eq!(stats.get::<u32>("consumers").unwrap(), 0);
            took
        })
        .collect();
    reads.sort();
    // Let the stream finish: a consumer attaches and reads everything.
    let consumer = bips::Consumer::open(&ch).expect("channel exists");
    let reader = std::thread::spawn(move || {
        let mut n = 0;
        while consumer.recv_timeout(Duration::from_secs(20)).is_ok() {
            n += 1;
        }
        n
    });
    let bus = p.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(30),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("EOS or error");
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
    p.set_state(gst::State::Null).unwrap();
    drop(sink);
    drop(p);
    assert_eq!(reader.join().unwrap(), 20);
    let median = reads[reads.len() / 2];
    assert!(
        median < Duration::from_millis(1),
        "a stats read took {median:?} (median): it waited for a loan holding the mutex"
    );
    assert!(shm_gone(&ch));
}

/// H2: a frame's geometry comes from another process. A descriptor that
/// does not match the caps (format, shape, a row shorter than the pixels, a
/// negative stride) or does not parse or fit the payload (bytes written into
/// the descriptor slot behind the library's back) is an element error
/// naming the descriptor; no frame reaches downstream with it.
#[test]
fn bipssrc_refuses_a_hostile_or_mismatched_descriptor() {
    init();
    let (w, h, stride) = (64usize, 48usize, 256usize);
    let good = bips::Descriptor::image(h as u64, w as u64, 3, bips::DType::U8)
        .unwrap()
        .with_strides(&[stride as i64, 3, 1])
        .unwrap()
        .with_format("RGB")
        .unwrap();
    let mismatched = [
        good.with_format("BGR").unwrap(),
        good.with_strides(&[100, 3, 1]).unwrap(),
        good.with_strides(&[-(stride as i64), 3, 1])
            .unwrap()
            .with_offset(((h - 1) * stride) as u64),
        bips::Descriptor::image(h as u64, w as u64, 4, bips::DType::U8)
            .unwrap()
            .with_format("RGB")
            .unwrap(),
    ];
    // Raw slot bytes: an unknown element type; an offset past the payload.
    let mut unknown_dtype = good.encode();
    unknown_dtype[1] = 200;
    let past_end = good.with_offset((stride * h) as u64).encode();
    let cases: Vec<(String, [u8; bips_core::descriptor::DESCRIPTOR_SIZE], &str)> = mismatched
        .iter()
        .map(|d| (d.to_string(), d.encode(), "does not match the caps"))
        .chain([
            (
                "unknown dtype".to_owned(),
                unknown_dtype,
                "malformed sample descriptor",
            ),
            (
                "offset past the end".to_owned(),
                past_end,
                "malformed sample descriptor",
            ),
        ])
        .collect();
    for (i, (what, wire, expect)) in cases.iter().enumerate() {
        let ch = channel(&format!("hostile-{i}"));
        // One buffer: the loan below is buffer 0, whose slot we overwrite.
        let producer =
            bips::Producer::create(&ch, &bips::Options::new(1, stride * h).meta_size(1024))
                .expect("create channel");
        let layout = bips_core::Layout::new(*producer.geometry()).unwrap();
        let consumer = parse(&format!(
            "bipssrc channel={ch} timeout=10000000000 ! fakesink name=sink"
        ));
        let seen = watch(&sink_of(&consumer));
        let cons = std::thread::spawn(move || {
            let r = run(&consumer, Duration::from_secs(30));
            drop(consumer);
            r
        });
        wait_attached(&producer);
        let mut s = producer.loan().unwrap();
        s.set_len(stride * h);
        s.set_descriptor(&good).unwrap();
        meta::write(s.meta_mut(), &header(0), rgb_caps(w, h).as_bytes()).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/dev/shm/bips.{ch}"))
            .unwrap();
        f.seek(SeekFrom::Start(layout.desc_offset as u64)).unwrap();
        f.write_all(wire).unwrap();
        s.publish().unwrap();
        let err = cons
            .join()
            .unwrap()
            .expect_err(&format!("bipssrc accepted the descriptor {what}"));
        assert!(err.contains(expect), "{what}: {err}");
        assert_eq!(seen.lock().unwrap().buffers.len(), 0, "{what}");
        drop(producer);
        assert!(shm_gone(&ch));
    }
}

/// M3: the pool holds at most `buffers - 1` buffers in upstream's hands (one
/// is left for the copy path) and says so; a config asking for more (or for
/// an unbounded pool) is refused, so upstream falls back to its own pool.
#[test]
fn the_pool_is_bounded_by_the_channel() {
    init();
    let ch = channel("bounded");
    let sink = gst::ElementFactory::make("bipssink")
        .property("channel", &ch)
        .property("buffers", 4u32)
        .build()
        .unwrap();
    sink.set_state(gst::State::Paused).unwrap();
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "GRAY8")
        .field("width", 64i32)
        .field("height", 48i32)
        .field("framerate", gst::Fraction::new(30, 1))
        .build();
    let mut q = gst::query::Allocation::new(Some(&caps), true);
    assert!(sink.static_pad("sink").unwrap().query(&mut q));
    let (pool, size, min, max) = q.allocation_pools().next().expect("a pool proposed");
    assert_eq!((size, min, max), (64 * 48, 0, 3));
    let pool = pool.expect("a pool");
    for (min, max, ok) in [
        (0, 3, true),
        (2, 3, true),
        (0, 0, false),
        (4, 4, false),
        (0, 8, false),
    ] {
        let mut config = pool.config();
        config.set_params(Some(&caps), size, min, max);
        assert_eq!(pool.set_config(config).is_ok(), ok, "min {min} max {max}");
        if !ok {
            let (_, _, min2, max2) = pool.config().params().unwrap();
            assert!(min2 <= 3 && max2 == 3, "written back: {min2}..{max2}");
        }
    }
    drop(pool);
    drop(q);
    sink.set_state(gst::State::Null).unwrap();
    drop(sink);
    assert!(shm_gone(&ch));
}

/// L4: waiting for more consumers than may attach would wait forever.
#[test]
fn wait_for_consumers_beyond_max_consumers_is_refused() {
    init();
    let p = parse(&format!(
        "videotestsrc num-buffers=1 ! bipssink channel={} max-consumers=2 wait-for-consumers=3",
        channel("wait-max")
    ));
    assert!(p.set_state(gst::State::Playing).is_err());
    let msg = p
        .bus()
        .unwrap()
        .timed_pop_filtered(gst::ClockTime::from_seconds(10), &[gst::MessageType::Error])
        .expect("an error message");
    let gst::MessageView::Error(e) = msg.view() else {
        unreachable!()
    };
    let text = format!("{} {:?}", e.error(), e.debug());
    assert!(text.contains("exceeds max-consumers"), "{text}");
    p.set_state(gst::State::Null).unwrap();
}

/// T2: bipssrc attaches only to a channel whose object its own uid (or
/// root) owns; `trust-owner=UID` / `trust-any-owner=true` let it attach to
/// a producer running as another user. The other user is simulated by
/// giving the object to uid 65534 (`chown`: root only; skipped otherwise).
#[test]
fn bipssrc_refuses_a_foreign_owner_unless_trusted() {
    init();
    // SAFETY: geteuid cannot fail and has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root (to chown the channel's object)");
        return;
    }
    let ch = channel("foreign-owner");
    let producer = bips::Producer::create(&ch, &bips::Options::new(2, 64).meta_size(1024))
        .expect("create channel");
    let path = format!("/dev/shm/bips.{ch}");
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).expect("chown");

    let refused = parse(&format!(
        "bipssrc channel={ch} timeout=2000000000 ! fakesink"
    ));
    assert!(
        refused.set_state(gst::State::Playing).is_err(),
        "start must fail on a foreign owner"
    );
    let bus = refused.bus().expect("pipeline bus");
    let err = loop {
        let msg = bus
            .timed_pop(gst::ClockTime::from_seconds(5))
            .expect("an error message on the bus");
        if let gst::MessageView::Error(e) = msg.view() {
            break format!("{} ({:?})", e.error(), e.debug());
        }
    };
    assert!(err.contains("65534") && err.contains("trust"), "{err}");
    assert_eq!(producer.consumer_count(), 0);
    refused.set_state(gst::State::Null).expect("null");
    drop(refused);

    for props in ["trust-owner=65534", "trust-any-owner=true"] {
        let p = parse(&format!(
            "bipssrc channel={ch} timeout=2000000000 {props} ! fakesink"
        ));
        p.set_state(gst::State::Playing).expect("playing");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while producer.consumer_count() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "bipssrc with {props} never attached"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        p.set_state(gst::State::Null).expect("null");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while producer.consumer_count() != 0 {
            assert!(std::time::Instant::now() < deadline, "bipssrc never left");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    drop(producer);
    assert!(shm_gone(&ch));
}

/// What a plain `bips::Consumer` got from a pipeline ending in bipssink:
/// the channel's payload type and the first sample's descriptor and bytes.
struct Got {
    desc: bips::Descriptor,
    bytes: Vec<u8>,
}

/// Plays `pipeline` (which ends in `bipssink channel={ch}
/// wait-for-consumers=1`) while a `bips::Consumer` reads its first frame;
/// the channel must have the `video/x-raw` v1 payload type. `before_play` runs
/// once the pipeline is paused (to push buffers into an appsrc).
fn through_bipssink(ch: &str, pipeline: &str, before_play: impl FnOnce(&gst::Pipeline)) -> Got {
    let producer = parse(pipeline);
    let _ = producer.set_state(gst::State::Paused);
    before_play(&producer);
    let prod = std::thread::spawn(move || {
        let r = run(&producer, Duration::from_secs(30));
        drop(producer);
        r
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let consumer = loop {
        match bips::Consumer::open(ch) {
            Ok(c) => break c,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "{ch}: {e}");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    };
    let video = bips::PayloadType::new("video/x-raw", 1).unwrap();
    // No panic before the producer pipeline is joined (it would leave the
    // channel behind in /dev/shm).
    let got = match consumer.recv_timeout(Duration::from_secs(10)) {
        _ if consumer.payload_type() != Some(&video) => Err(format!(
            "payload type {:?}, not video/x-raw v1",
            consumer.payload_type()
        )),
        Ok(sample) => match sample.descriptor() {
            Ok(Some(desc)) => Ok(Got {
                desc,
                bytes: sample.as_slice().to_vec(),
            }),
            Ok(None) => Err("a raw-video sample without a descriptor".to_owned()),
            Err(e) => Err(format!("an invalid descriptor: {e}")),
        },
        Err(e) => Err(format!("no frame: {e}")),
    };
    drop(consumer);
    let produced = prod.join().unwrap();
    let got = got.unwrap_or_else(|e| panic!("{ch}: {e} (producer: {produced:?})"));
    produced.expect("producer pipeline");
    assert!(shm_gone(ch));
    got
}

/// A deterministic test pattern (smpte has a noise area) whose pixels all
/// differ along a row.
const PATTERN: &str = "pattern=colors";

/// The first frame `videotestsrc ! {caps} ! fakesink` produces, and its
/// video info: the reference the frames through bips are compared with.
fn reference(caps: &str) -> (gst_video::VideoInfo, gst::Buffer) {
    let p = parse(&format!(
        "videotestsrc num-buffers=1 {PATTERN} ! {caps} ! fakesink name=sink"
    ));
    let seen = watch_keeping(&sink_of(&p), true);
    run(&p, Duration::from_secs(20)).unwrap();
    let mut s = seen.lock().unwrap();
    let info = gst_video::VideoInfo::from_caps(s.caps.as_ref().unwrap()).unwrap();
    (info, s.kept.remove(0))
}

/// Compares every row of every plane the descriptor announces with the
/// reference frame (`row_bytes` bytes per row).
fn same_pixels(what: &str, got: &Got, info: &gst_video::VideoInfo, reference: &gst::Buffer) {
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(reference.as_ref(), info)
        .expect("map the reference frame");
    let d = &got.desc;
    // (offset, stride, rows, row bytes) of each plane: packed formats have
    // one, described by the array fields.
    let planes: Vec<(usize, usize, usize, usize)> = if d.planes().is_empty() {
        let row = d.shape()[1..].iter().product::<u64>() as usize * d.dtype().size();
        vec![(
            d.offset() as usize,
            d.strides()[0] as usize,
            d.shape()[0] as usize,
            row,
        )]
    } else {
        d.planes()
            .iter()
            .map(|p| {
                (
                    p.offset as usize,
                    p.stride as usize,
                    p.rows as usize,
                    p.row_bytes as usize,
                )
            })
            .collect()
    };
    assert_eq!(planes.len(), frame.info().n_planes() as usize, "{what}");
    for (p, &(offset, stride, rows, row)) in planes.iter().enumerate() {
        let data = frame.plane_data(p as u32).unwrap();
        let rstride = frame.info().stride()[p] as usize;
        for y in 0..rows {
            let mine = &got.bytes[offset + y * stride..][..row];
            assert_eq!(
                mine,
                &data[y * rstride..][..row],
                "{what}: plane {p} row {y}"
            );
        }
    }
}

/// Raw video formats, their caps and the descriptor bipssink must write:
/// (dtype, shape, strides, planes as (offset, stride, rows, row bytes)).
#[allow(clippy::type_complexity)]
fn formats() -> Vec<(
    &'static str,
    bips::DType,
    Vec<u64>,
    Vec<i64>,
    Vec<(u64, u32, u32, u32)>,
)> {
    use bips::DType::{U16, U8};
    vec![
        (
            "RGBA,width=320,height=240,colorimetry=sRGB",
            U8,
            vec![240, 320, 4],
            vec![1280, 4, 1],
            vec![],
        ),
        // 321 pixels = 963 bytes, rows padded to 964.
        (
            "RGB,width=321,height=10",
            U8,
            vec![10, 321, 3],
            vec![964, 3, 1],
            vec![],
        ),
        (
            "GRAY16_LE,width=63,height=5",
            U16,
            vec![5, 63],
            vec![128, 2],
            vec![],
        ),
        (
            "GRAY16_BE,width=63,height=5",
            U8,
            vec![5, 63, 2],
            vec![128, 2, 1],
            vec![],
        ),
        (
            "GRAY8,width=65,height=5",
            U8,
            vec![5, 65],
            vec![68, 1],
            vec![],
        ),
        (
            "I420,width=64,height=48,colorimetry=bt709",
            U8,
            vec![48, 64],
            vec![64, 1],
            vec![(0, 64, 48, 64), (3072, 32, 24, 32), (3840, 32, 24, 32)],
        ),
        (
            "NV12,width=66,height=50",
            U8,
            vec![50, 66],
            vec![68, 1],
            vec![(0, 68, 50, 66), (3400, 68, 25, 66)],
        ),
    ]
}

/// Issue 16: bipssink writes a frame descriptor beside every raw-video
/// sample (packed formats: the whole frame, padded rows as the row stride;
/// planar ones: plane 0 plus the plane table), on a channel typed
/// `video/x-raw` v1; a plain `bips::Consumer` reads the same pixels
/// videotestsrc produced through it.
#[test]
fn bipssink_describes_every_raw_video_format() {
    init();
    for (i, (caps, dtype, shape, strides, planes)) in formats().into_iter().enumerate() {
        let caps = format!("video/x-raw,format={caps}");
        let ch = channel(&format!("describe-{i}"));
        let got = through_bipssink(
            &ch,
            &format!(
                "videotestsrc num-buffers=1 {PATTERN} ! {caps} \
                 ! bipssink channel={ch} wait-for-consumers=1 sync=false"
            ),
            |_| {},
        );
        let (info, reference) = reference(&caps);
        let st = gst::Caps::from_str(&caps).unwrap();
        let colorimetry = st.structure(0).unwrap().get::<String>("colorimetry").ok();
        let d = &got.desc;
        eprintln!("{caps}: {d:?}");
        assert_eq!(d.dtype(), dtype, "{caps}");
        assert_eq!(d.shape(), &shape[..], "{caps}");
        assert_eq!(d.strides(), &strides[..], "{caps}");
        assert_eq!(d.offset(), 0, "{caps}");
        assert_eq!(d.format(), Some(info.format().to_str().as_str()), "{caps}");
        assert_eq!(d.colorimetry(), colorimetry.as_deref(), "{caps}");
        let table: Vec<_> = d
            .planes()
            .iter()
            .map(|p| (p.offset, p.stride, p.rows, p.row_bytes))
            .collect();
        assert_eq!(table, planes, "{caps}");
        same_pixels(&caps, &got, &info, &reference);
    }
}

/// Typed views of what bipssink described: known colours of a solid RGBA
/// frame at `[y, x, c]`, and GRAY16_LE as `u16` values.
#[test]
fn bipssink_descriptors_give_typed_views() {
    init();
    let ch = channel("view-rgba");
    // foreground-color is ARGB: A=ff R=10 G=20 B=30.
    let got = through_bipssink(
        &ch,
        &format!(
            "videotestsrc num-buffers=1 pattern=solid-color foreground-color=0xff102030 \
             ! video/x-raw,format=RGBA,width=33,height=7 \
             ! bipssink channel={ch} wait-for-consumers=1 sync=false"
        ),
        |_| {},
    );
    let view = bips::View::<u8>::new(&got.bytes, &got.desc).unwrap();
    assert_eq!(view.shape(), &[7, 33, 4]);
    for (y, x) in [(0, 0), (3, 17), (6, 32)] {
        let px: Vec<u8> = (0..4).map(|c| view[[y, x, c]]).collect();
        assert_eq!(px, [0x10, 0x20, 0x30, 0xff], "pixel ({y}, {x})");
    }

    let ch = channel("view-gray16");
    let caps = "video/x-raw,format=GRAY16_LE,width=63,height=5";
    let got = through_bipssink(
        &ch,
        &format!(
            "videotestsrc num-buffers=1 {PATTERN} ! {caps} \
             ! bipssink channel={ch} wait-for-consumers=1 sync=false"
        ),
        |_| {},
    );
    let (info, reference) = reference(caps);
    let frame =
        gst_video::VideoFrameRef::from_buffer_ref_readable(reference.as_ref(), &info).unwrap();
    let data = frame.plane_data(0).unwrap();
    let stride = frame.info().stride()[0] as usize;
    let view = bips::View::<u16>::new(&got.bytes, &got.desc).unwrap();
    for (y, x) in [(0, 0), (2, 31), (4, 62)] {
        let at = y * stride + 2 * x;
        assert_eq!(
            view[[y, x]],
            u16::from_le_bytes([data[at], data[at + 1]]),
            "({y}, {x})"
        );
    }
}

/// The descriptor takes the plane layout from the buffer's GstVideoMeta
/// (here: rows of 1024 bytes for 321 RGB pixels, 16 bytes into the buffer),
/// not from the caps' default one.
#[test]
fn bipssink_takes_strides_from_the_video_meta() {
    init();
    let ch = channel("video-meta");
    let (w, h, stride, offset) = (321usize, 10usize, 1024usize, 16usize);
    let pipeline = format!(
        "appsrc name=src format=time caps=video/x-raw,format=RGB,width={w},height={h},framerate=30/1 \
         ! bipssink channel={ch} wait-for-consumers=1 buffer-size=16384 sync=false"
    );
    let got = through_bipssink(&ch, &pipeline, |p| {
        let mut bytes = vec![0u8; offset + stride * h];
        for y in 0..h {
            for x in 0..w * 3 {
                bytes[offset + y * stride + x] = (y * 7 + x) as u8;
            }
        }
        let mut buffer = gst::Buffer::from_mut_slice(bytes);
        {
            let b = buffer.get_mut().unwrap();
            b.set_pts(gst::ClockTime::ZERO);
            gst_video::VideoMeta::add_full(
                b,
                gst_video::VideoFrameFlags::empty(),
                gst_video::VideoFormat::Rgb,
                w as u32,
                h as u32,
                &[offset],
                &[stride as i32],
            )
            .unwrap();
        }
        let src = p.by_name("src").unwrap();
        let r = src.emit_by_name::<gst::FlowReturn>("push-buffer", &[&buffer]);
        assert_eq!(r, gst::FlowReturn::Ok);
        let r = src.emit_by_name::<gst::FlowReturn>("end-of-stream", &[]);
        assert_eq!(r, gst::FlowReturn::Ok);
    });
    let d = got.desc;
    assert_eq!(d.shape(), &[h as u64, w as u64, 3]);
    assert_eq!(d.strides(), &[stride as i64, 3, 1]);
    assert_eq!(d.offset(), offset as u64);
    let view = bips::View::<u8>::new(&got.bytes, &d).unwrap();
    for (y, x, c) in [(0, 0, 0), (5, 100, 2), (9, 320, 2)] {
        assert_eq!(
            view[[y, x, c]],
            (y * 7 + x * 3 + c) as u8,
            "({y}, {x}, {c})"
        );
    }
}

/// bipssink -> bipssrc with every format: the caps arrive, and the frame
/// downstream of bipssrc is byte for byte the one videotestsrc made.
#[test]
fn every_raw_video_format_round_trips_through_bipssrc() {
    init();
    for (i, (caps, ..)) in formats().into_iter().enumerate() {
        let caps = format!("video/x-raw,format={caps}");
        let ch = channel(&format!("round-trip-{i}"));
        let producer = parse(&format!(
            "videotestsrc num-buffers=3 {PATTERN} ! {caps} \
             ! bipssink channel={ch} wait-for-consumers=1 sync=false"
        ));
        let consumer = parse(&format!(
            "bipssrc channel={ch} timeout=10000000000 ! fakesink name=sink"
        ));
        let seen = watch_keeping(&sink_of(&consumer), true);
        let prod = std::thread::spawn(move || run(&producer, Duration::from_secs(30)));
        run(&consumer, Duration::from_secs(30)).expect("consumer pipeline ends with EOS");
        prod.join().unwrap().expect("producer pipeline");
        let (info, reference) = reference(&caps);
        let mut seen = seen.lock().unwrap();
        assert_eq!(seen.buffers.len(), 3, "{caps}");
        let out = gst_video::VideoInfo::from_caps(seen.caps.as_ref().unwrap()).unwrap();
        assert_eq!(out, info, "{caps}");
        assert!(
            seen.strides.is_empty(),
            "{caps}: default layout, no GstVideoMeta"
        );
        // Compared row by row: padding bytes are whatever the pools held.
        let first = seen.kept.remove(0);
        let layout = gstbips::video::Layout::of_info(&info);
        let out = Got {
            desc: gstbips::video::describe(&info, None, &layout)
                .unwrap()
                .unwrap(),
            bytes: first.map_readable().unwrap().to_vec(),
        };
        same_pixels(&caps, &out, &info, &reference);
        seen.kept.clear();
        drop(seen);
        drop(consumer);
        assert!(shm_gone(&ch), "{caps}");
    }
}

/// A consumer that requires raw video (`video/x-raw` v1) opens bipssink's
/// video channel and gets a typed error on an audio one (which declares no
/// type: it carries no descriptor).
#[test]
fn a_consumer_may_require_raw_video() {
    init();
    let video = bips::PayloadType::new("video/x-raw", 1).unwrap();
    let require = bips::ConsumerOptions::new().require_type(video);
    for (test, src, typed) in [
        (
            "typed-video",
            "videotestsrc num-buffers=2 ! video/x-raw,format=GRAY8,width=16,height=8",
            true,
        ),
        (
            "untyped-audio",
            "audiotestsrc num-buffers=2 ! audio/x-raw,format=S16LE,channels=1",
            false,
        ),
    ] {
        let ch = channel(test);
        let p = parse(&format!(
            "{src} ! bipssink channel={ch} wait-for-consumers=1 sync=false"
        ));
        let prod = std::thread::spawn(move || run(&p, Duration::from_secs(30)));
        // The channel exists once render() waits for a consumer.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while shm_gone(&ch) {
            assert!(std::time::Instant::now() < deadline, "{ch} never appeared");
            std::thread::sleep(Duration::from_millis(5));
        }
        // (Retried while the producer may still be formatting the channel.)
        let opened = loop {
            match bips::Consumer::open_with(&ch, &require) {
                Err(e)
                    if !matches!(e, bips::Error::TypeMismatch { .. })
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(5))
                }
                r => break r,
            }
        };
        let consumer = bips::Consumer::open(&ch).expect("an untyped open");
        let mut n = 0;
        while consumer.recv_timeout(Duration::from_secs(10)).is_ok() {
            n += 1;
        }
        prod.join().unwrap().expect("producer pipeline");
        drop(consumer);
        assert_eq!(n, 2, "{test}");
        match (typed, opened) {
            (true, Ok(c)) => assert_eq!(c.payload_type().unwrap().name(), "video/x-raw"),
            (
                false,
                Err(bips::Error::TypeMismatch {
                    required, found, ..
                }),
            ) => {
                assert!(required.contains("video/x-raw"), "{required}");
                assert!(found.contains("no declared type"), "{found}");
            }
            (_, other) => panic!("{test}: {other:?}"),
        }
        assert!(shm_gone(&ch), "{ch}");
    }
}
