//! bipssink and bipssrc in real pipelines (in this process, registered with
//! `plugin_register_static`), over real shared memory: the zero-copy pool
//! path, the copy path, caps/timestamps/EOS across the channel, and a plain
//! `bips::Producer` writing the metadata layout by hand.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gst::prelude::*;
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

#[test]
fn a_plain_rust_producer_with_the_layout_feeds_bipssrc() {
    init();
    let ch = channel("rust-producer");
    let (w, h, stride) = (64usize, 48usize, 256usize); // padded rows: a VideoMeta travels
    let caps = format!(
        "video/x-raw, format=(string)RGB, width=(int){w}, height=(int){h}, framerate=(fraction)30/1"
    );
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
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while producer.consumer_count() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "bipssrc never attached"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    for i in 0..10u64 {
        let mut s = producer.loan().unwrap();
        s.as_mut_slice()[..8].copy_from_slice(&i.to_le_bytes());
        s.set_len(stride * h);
        let header = meta::Header {
            pts: i * 1_000_000,
            dts: meta::NONE,
            duration: 1_000_000,
            offset: i,
            offset_end: i + 1,
            flags: 0,
            base_time: meta::NONE,
            running_time: meta::NONE,
            planes: meta::Planes {
                n: 1,
                offset: [0; 4],
                stride: [stride as i32, 0, 0, 0],
            },
        };
        meta::write(s.meta_mut(), &header, caps.as_bytes()).unwrap();
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
        seen.strides.len(),
        10,
        "padded rows travel as a GstVideoMeta"
    );
    assert_eq!(seen.strides[0][0], stride as i32);
    assert!(shm_gone(&ch));
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

/// H2: plane offsets and strides come from another process. A layout that
/// does not fit the payload (huge, zero or negative stride, offset past the
/// end, too few planes) must not reach downstream as a GstVideoMeta: the
/// frame is dropped with a warning, the good frames around it go through.
#[test]
fn bipssrc_drops_frames_with_a_hostile_plane_layout() {
    init();
    let ch = channel("hostile");
    let (w, h, stride) = (64usize, 48usize, 256usize);
    let caps = format!(
        "video/x-raw, format=(string)RGB, width=(int){w}, height=(int){h}, framerate=(fraction)30/1"
    );
    let producer = bips::Producer::create(&ch, &bips::Options::new(4, stride * h).meta_size(1024))
        .expect("create channel");
    let consumer = parse(&format!(
        "bipssrc channel={ch} timeout=10000000000 ! fakesink name=sink"
    ));
    let seen = watch(&sink_of(&consumer));
    let warnings = Arc::new(Mutex::new(Vec::<String>::new()));
    let w = Arc::clone(&warnings);
    consumer.bus().unwrap().set_sync_handler(move |_, msg| {
        if let gst::MessageView::Warning(m) = msg.view() {
            w.lock()
                .unwrap()
                .push(format!("{} {:?}", m.error(), m.debug()));
        }
        gst::BusSyncReply::Pass
    });
    let cons = std::thread::spawn(move || {
        let r = run(&consumer, Duration::from_secs(30));
        drop(consumer);
        r
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while producer.consumer_count() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "bipssrc never attached"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // (n_planes, offset, stride); the good ones are padded rows.
    let layouts: [(u32, u32, i32); 7] = [
        (1, 0, stride as i32),
        (1, 0, 0x7fff_ffff),
        (1, 0, -(stride as i32)),
        (1, 0, 0),
        (1, (stride * h) as u32, stride as i32),
        (0x7fff_ffff, 0, stride as i32 + 1),
        (1, 0, stride as i32),
    ];
    for (i, &(n, offset, st)) in layouts.iter().enumerate() {
        let mut s = producer.loan().unwrap();
        s.as_mut_slice()[..8].copy_from_slice(&(i as u64).to_le_bytes());
        s.set_len(stride * h);
        let header = meta::Header {
            pts: i as u64 * 1_000_000,
            dts: meta::NONE,
            duration: 1_000_000,
            offset: meta::NONE,
            offset_end: meta::NONE,
            flags: 0,
            base_time: meta::NONE,
            running_time: meta::NONE,
            planes: meta::Planes {
                n,
                offset: [offset, 0, 0, 0],
                stride: [st, 0, 0, 0],
            },
        };
        meta::write(s.meta_mut(), &header, caps.as_bytes()).unwrap();
        s.publish().unwrap();
    }
    drop(producer);
    cons.join()
        .unwrap()
        .expect("bipssrc pipeline ends with EOS");
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.first_bytes,
        vec![0u64.to_le_bytes().to_vec(), 6u64.to_le_bytes().to_vec()],
        "only the frames with a sane layout go through"
    );
    assert_eq!(seen.strides, vec![vec![stride as i32], vec![stride as i32]]);
    let warnings = warnings.lock().unwrap();
    assert!(
        warnings.iter().any(|w| w.contains("plane layout")),
        "a warning tells about the dropped frames: {warnings:?}"
    );
    assert!(shm_gone(&ch));
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
