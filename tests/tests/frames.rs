//! Frame/tensor descriptors and typed channels across processes: a producer
//! in one process says what its bytes are (shape, byte strides with padded
//! rows, pixel format), a consumer in another reads a typed view of them in
//! place; a consumer that requires a payload type is refused a channel of
//! another; a descriptor rewritten by a hostile process never yields a view
//! past the sample.

use std::io::{Seek, SeekFrom, Write};
use std::time::Duration;

use bips::{
    Consumer, ConsumerOptions, DType, Descriptor, DescriptorError, Error, Options, PayloadType,
    Producer,
};
use bips_tests::*;

const ENTRY: &str = "child_entry";
const H: u64 = 5;
const W: u64 = 7; // odd width: 21-byte rows padded to 32
const ROW: i64 = 32;
const FRAMES: u64 = 20;

/// Children of this file start here (a no-op in a normal test run).
#[test]
fn child_entry() {
    bips_tests::child_entry(&[("producer", producer_role)]);
}

fn pixel(seq: u64, y: u64, x: u64, c: u64) -> u8 {
    (seq * 31 + y * 7 + x * 3 + c) as u8
}

/// Publishes FRAMES padded RGB frames, each with its descriptor, on a typed channel.
fn producer_role() {
    let name: String = env("BIPS_CHANNEL");
    let d = Descriptor::image(H, W, 3, DType::U8)
        .unwrap()
        .with_strides(&[ROW, 3, 1])
        .unwrap()
        .with_format("RGB")
        .unwrap()
        .with_colorimetry("sRGB")
        .unwrap();
    let t = PayloadType::new("image/rgb8", 2).unwrap();
    let producer = Producer::create(
        &name,
        &Options::new(3, (H * ROW as u64) as usize).payload_type(t),
    )
    .unwrap();
    say("READY");
    await_consumers(&producer, 1, Duration::from_secs(10));
    for seq in 0..FRAMES {
        let mut s = producer.loan_timeout(Duration::from_secs(10)).unwrap();
        s.as_mut_slice().fill(0xEE); // padding bytes: never part of the view
        s.set_descriptor(&d).unwrap();
        {
            let mut v = s.view_mut::<u8>().unwrap();
            assert_eq!(v.shape(), &[H as usize, W as usize, 3]);
            for y in 0..H {
                for x in 0..W {
                    for c in 0..3 {
                        v[[y as usize, x as usize, c as usize]] = pixel(seq, y, x, c);
                    }
                }
            }
        }
        s.set_len(d.extent().unwrap() as usize);
        s.publish().unwrap();
    }
    drop(producer);
    say("RESULT done=1");
}

#[test]
fn a_padded_rgb_frame_from_another_process_reads_as_a_typed_view() {
    let ch = Channel::new("frames");
    let mut p = spawn(ENTRY, "producer")
        .env("BIPS_CHANNEL", ch.name())
        .start();
    p.expect_line("READY", Duration::from_secs(10));
    let consumer = Consumer::open_with(
        ch.name(),
        &ConsumerOptions::new()
            .start(bips::Start::Oldest)
            .require_type(PayloadType::new("image/rgb8", 2).unwrap()),
    )
    .unwrap();
    assert_eq!(
        consumer.payload_type().map(|t| t.to_string()).as_deref(),
        Some("image/rgb8 v2")
    );
    let mut seq = 0;
    loop {
        let s = match consumer.recv_timeout(Duration::from_secs(10)) {
            Ok(s) => s,
            Err(Error::Disconnected) => break,
            Err(e) => panic!("recv: {e}"),
        };
        let d = s
            .descriptor()
            .unwrap()
            .expect("every frame has a descriptor");
        assert_eq!(d.dtype(), DType::U8);
        assert_eq!(d.shape(), &[H, W, 3]);
        assert_eq!(d.strides(), &[ROW, 3, 1]);
        assert_eq!((d.format(), d.colorimetry()), (Some("RGB"), Some("sRGB")));
        assert!(!d.is_c_contiguous());
        assert_eq!(s.len() as u64, (H - 1) * ROW as u64 + W * 3);
        let v = s.view::<u8>().unwrap();
        assert!(v.as_slice().is_none(), "padded rows are not one slice");
        for y in 0..H {
            for x in 0..W {
                for c in 0..3 {
                    assert_eq!(
                        v[[y as usize, x as usize, c as usize]],
                        pixel(s.seq(), y, x, c)
                    );
                }
            }
        }
        assert!(
            matches!(
                s.view::<u16>(),
                Err(Error::Descriptor(DescriptorError::WrongDType { .. }))
            ),
            "a u16 view of u8 pixels is refused"
        );
        assert_eq!(s.seq(), seq);
        seq += 1;
    }
    assert_eq!(seq, FRAMES);
    p.expect_success(Duration::from_secs(10));
}

#[test]
fn a_consumer_that_requires_another_type_is_refused_at_open() {
    let ch = Channel::new("ftype");
    let fixed = Descriptor::image(4, 4, 1, DType::U16)
        .unwrap()
        .with_format("GRAY16_LE")
        .unwrap();
    let t = PayloadType::new("image/gray16", 1)
        .unwrap()
        .with_descriptor(fixed);
    let producer = Producer::create(ch.name(), &Options::new(2, 32).payload_type(t)).unwrap();
    let require = |name: &str, version: u32| {
        Consumer::open_with(
            ch.name(),
            &ConsumerOptions::new().require_type(PayloadType::new(name, version).unwrap()),
        )
    };
    for (name, version) in [("image/gray16", 2), ("image/rgb8", 1)] {
        match require(name, version) {
            Err(Error::TypeMismatch {
                required, found, ..
            }) => {
                assert_eq!(required, format!("{name} v{version}"));
                assert_eq!(found, "image/gray16 v1 (uint16 [4, 4] GRAY16_LE)");
            }
            other => panic!("{name} v{version}: {other:?}"),
        }
    }
    // A required fixed descriptor must match too.
    let other = PayloadType::new("image/gray16", 1)
        .unwrap()
        .with_descriptor(Descriptor::image(4, 4, 1, DType::U8).unwrap());
    let e = Consumer::open_with(ch.name(), &ConsumerOptions::new().require_type(other));
    assert!(matches!(e, Err(Error::TypeMismatch { .. })), "{e:?}");
    let e = require("image/gray16", 2).unwrap_err().to_string();
    assert!(e.contains("requires image/gray16 v2"), "{e}");

    // The right type opens; samples without their own descriptor report the
    // channel's fixed one; a different per-sample descriptor is refused.
    let consumer = require("image/gray16", 1).unwrap();
    let mut s = producer.loan().unwrap();
    assert!(matches!(
        s.set_descriptor(&Descriptor::image(2, 4, 1, DType::U16).unwrap()),
        Err(Error::InvalidOptions(_))
    ));
    s.set_descriptor(&fixed).unwrap();
    s.view_mut::<u16>().unwrap()[[3, 3]] = 4095;
    s.publish().unwrap();
    let got = consumer.recv().unwrap();
    assert_eq!(got.descriptor().unwrap(), Some(fixed));
    assert_eq!(got.view::<u16>().unwrap()[[3, 3]], 4095);
    drop(got);

    // An untyped channel does not satisfy a requirement either.
    let ch2 = Channel::new("funtyped");
    let _p2 = Producer::create(ch2.name(), &Options::new(2, 32)).unwrap();
    match Consumer::open_with(
        ch2.name(),
        &ConsumerOptions::new().require_type(PayloadType::new("image/gray16", 1).unwrap()),
    ) {
        Err(Error::TypeMismatch { found, .. }) => assert_eq!(found, "no declared type"),
        other => panic!("{other:?}"),
    }
    assert!(Consumer::open(ch2.name()).unwrap().payload_type().is_none());
}

#[test]
fn a_descriptor_left_by_an_earlier_sample_of_the_buffer_is_not_reported() {
    let ch = Channel::new("fstale");
    let producer = Producer::create(ch.name(), &Options::new(1, 64)).unwrap();
    let consumer = Consumer::open(ch.name()).unwrap();
    let d = Descriptor::new(DType::F32, &[4, 4]).unwrap();
    let mut s = producer.loan().unwrap();
    s.set_descriptor(&d).unwrap();
    s.publish().unwrap();
    assert_eq!(consumer.recv().unwrap().descriptor().unwrap(), Some(d));
    // One buffer: the next sample reuses it, without a descriptor.
    producer.loan().unwrap().publish().unwrap();
    let s = consumer.recv().unwrap();
    assert_eq!(s.buffer_index(), 0);
    assert_eq!(s.descriptor().unwrap(), None);
    assert!(matches!(
        s.view::<f32>(),
        Err(Error::Descriptor(DescriptorError::Missing))
    ));
}

#[test]
fn a_descriptor_that_does_not_fit_is_refused_on_both_sides() {
    let ch = Channel::new("fbounds");
    // Shm: the hostile process below writes through the /dev/shm object.
    let producer =
        Producer::create(ch.name(), &Options::new(1, 64).backend(bips::Backend::Shm)).unwrap();
    let consumer = Consumer::open(ch.name()).unwrap();

    // Producer side: past the buffer at set, past the length at publish (the
    // buffer then goes back unpublished).
    let mut s = producer.loan().unwrap();
    assert!(matches!(
        s.set_descriptor(&Descriptor::new(DType::U8, &[65]).unwrap()),
        Err(Error::Descriptor(DescriptorError::OutOfBounds {
            end: 65,
            ..
        }))
    ));
    s.set_descriptor(&Descriptor::new(DType::U8, &[64]).unwrap())
        .unwrap();
    s.set_len(10);
    assert!(matches!(
        s.publish(),
        Err(Error::Descriptor(DescriptorError::OutOfBounds {
            end: 64,
            len: 10,
            ..
        }))
    ));
    assert!(consumer.try_recv().unwrap().is_none(), "nothing published");

    // Consumer side: a process with write access rewrites the slot while the
    // sample is held, to reach past the buffer: the consumer gets a typed
    // error, never a view.
    let mut s = producer.loan().unwrap();
    s.set_descriptor(&Descriptor::new(DType::U8, &[8, 8]).unwrap())
        .unwrap();
    s.publish().unwrap();
    let got = consumer.recv().unwrap();
    let layout = bips_core::Layout::new(*consumer.geometry()).unwrap();
    let hostile = [
        Descriptor::new(DType::U8, &[8, 8])
            .unwrap()
            .with_offset(1)
            .encode(),
        Descriptor::new(DType::U8, &[8, 8])
            .unwrap()
            .with_strides(&[-8, 1])
            .unwrap()
            .encode(),
        {
            let mut w = Descriptor::new(DType::U8, &[8, 8]).unwrap().encode();
            w[16..24].copy_from_slice(&(1u64 << 62).to_le_bytes()); // extent past 2^64
            w
        },
        {
            let mut w = Descriptor::new(DType::U8, &[8, 8]).unwrap().encode();
            w[1] = 200; // unknown dtype
            w
        },
        {
            let mut w = Descriptor::new(DType::U8, &[8, 8]).unwrap().encode();
            w[2] = 9; // ndim > 8
            w
        },
        {
            let mut w = Descriptor::new(DType::U8, &[8, 8]).unwrap().encode();
            w[16..24].copy_from_slice(&u64::MAX.to_le_bytes()); // shape[0] = 2^64 - 1
            w
        },
    ];
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(ch.path())
        .unwrap();
    for (i, wire) in hostile.iter().enumerate() {
        f.seek(SeekFrom::Start(layout.desc_offset as u64)).unwrap();
        f.write_all(wire).unwrap();
        match got.descriptor() {
            Err(Error::Descriptor(_)) => {}
            other => panic!("hostile descriptor {i}: {other:?}"),
        }
        assert!(got.view::<u8>().is_err(), "hostile descriptor {i}");
    }
}

#[test]
fn raw_loans_and_raw_samples_carry_descriptors() {
    let ch = Channel::new("fraw");
    let producer = Producer::create(ch.name(), &Options::new(2, 64)).unwrap();
    let consumer = Consumer::open(ch.name()).unwrap();
    let d = Descriptor::new(DType::I16, &[2, 16]).unwrap();
    let mut raw = producer.loan_raw().unwrap();
    assert_eq!(producer.raw_descriptor(&raw), None);
    assert!(producer
        .set_raw_descriptor(&mut raw, &Descriptor::new(DType::I16, &[2, 17]).unwrap())
        .is_err());
    producer.set_raw_descriptor(&mut raw, &d).unwrap();
    assert_eq!(producer.raw_descriptor(&raw), Some(d));
    producer.publish_raw(raw).unwrap();
    let got = consumer.recv_raw().unwrap();
    assert_eq!(consumer.raw_descriptor(&got).unwrap(), Some(d));
    consumer.release_raw(got);
}
