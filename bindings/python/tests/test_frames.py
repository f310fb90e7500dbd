"""Frames and tensors: descriptors through the buffer protocol, DLPack and
__array_interface__, typed channels, hostile descriptors, and producing shaped
frames without the live-export trap."""

from __future__ import annotations

import gc
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bips

from conftest import array_address, example_binary, file_offset, open_consumer, shm_path, needs_buffer_protocol

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import frame_producer as fp  # noqa: E402


def data_address(sample: bips.Sample) -> int:
    """Address of the sample's first byte (its buffer slot), from the raw bytes."""
    return array_address(np.frombuffer(sample.raw, np.uint8))


def test_error_classes():
    assert issubclass(bips.DescriptorError, bips.Error)
    assert issubclass(bips.DescriptorError, ValueError)
    assert issubclass(bips.TypeMismatch, bips.Error)


def test_python_producer_process_to_python_consumer(channel):
    """Shaped loans and send() in another process; np.asarray here is the
    shaped, typed, strided array, in place."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "frame_producer.py"), channel],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        c = open_consumer(channel, start="oldest")
        got = []
        for s in c:
            a = np.asarray(s)
            d = s.descriptor
            # Zero copy: the array is the slot's bytes, at the descriptor's offset.
            assert array_address(a) == data_address(s) + d.offset
            assert file_offset(channel, array_address(a)) is not None
            assert not a.flags.writeable
            got.append((d, a.copy(), a.strides, s.meta))
            del a
            s.release()
        c.close()
    finally:
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert len(got) == 4, got
    (d1, a1, st1, _), (d2, a2, st2, m2), (d3, a3, st3, _), (d4, a4, st4, m4) = got
    # RGBA (h, w, 4) u8
    assert (d1.dtype, d1.shape, d1.format) == ("uint8", (fp.H, fp.W, 4), "RGBA")
    assert a1.dtype == np.uint8 and a1.shape == (fp.H, fp.W, 4) and st1 == (fp.W * 4, 4, 1)
    assert np.array_equal(a1, fp.rgba())
    # GRAY16 (h, w) uint16
    assert (d2.dtype, d2.shape, d2.format, m2[:4]) == ("uint16", (fp.H, fp.W), "GRAY16_LE", b"gray")
    assert a2.dtype == np.uint16 and st2 == (fp.W * 2, 2)
    assert np.array_equal(a2, fp.gray16())
    # Padded rows (odd width RGB, 16-byte rows) and an offset show as strides.
    assert d3.strides == (fp.PAD_ROW, 3, 1) and d3.offset == fp.PAD_OFFSET
    assert st3 == (fp.PAD_ROW, 3, 1) and fp.PAD_ROW > fp.W * 3
    assert np.array_equal(a3, fp.rgb())
    # A non-contiguous source, packed by send().
    assert d4.is_c_contiguous and a4.shape == (fp.H, (fp.W + 1) // 2, 2)
    assert np.array_equal(a4, fp.rgba()[:, ::2, 1:3]) and m4[:7] == b"strided"


def test_natural_shaped_loan_publishes_and_seals_the_frame(channel):
    h, w = 4, 6
    pixels = np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3)
    with bips.Producer(channel, 2, 4096) as producer, bips.Consumer(channel) as c:
        # The natural code: bind the shaped array, write in place, end the block.
        with producer.loan(shape=(h, w, 3), dtype=np.uint8, format="BGR") as frame:
            frame[:] = pixels
        s = c.recv(timeout=1)
        assert s.descriptor.format == "BGR" and len(s) == h * w * 3
        assert np.array_equal(np.asarray(s), pixels)
        # No writable view of the published buffer survives in the producer.
        assert not frame.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            frame[0, 0, 0] = 1
        with pytest.raises(ValueError):
            frame.flags.writeable = True
        del s

        # In-place writes through out=/copyto (the cv2.resize(..., dst=frame) style).
        with producer.loan(shape=(h, w, 3), dtype=np.uint8) as frame:
            np.copyto(frame, pixels)
            np.add(frame, 1, out=frame)
        assert np.array_equal(np.asarray(c.recv(timeout=1)), pixels + 1)
        # publish() inside the block (for meta) works the same way.
        buf = producer.loan(shape=(h, w, 3), dtype=np.uint8)
        with buf as frame:
            frame.fill(9)
            assert buf.publish(meta=b"m") == 2
        assert not frame.flags.writeable
        s = c.recv(timeout=1)
        assert s.meta[:1] == b"m" and int(np.asarray(s).max()) == 9
        del s, frame


@pytest.mark.parametrize(
    "make_view",
    [
        lambda f: f[1:],  # a slice
        lambda f: f.reshape(-1),  # a reshape
        lambda f: f.T,  # a transpose
        lambda f: memoryview(f),  # a buffer export of the frame
        lambda f: [f],  # another reference (an alias in a list)
    ],
)
def test_shaped_loan_refuses_to_publish_while_a_view_lives(channel, make_view):
    with bips.Producer(channel, 1, 4096) as producer, bips.Consumer(channel) as c:
        with pytest.raises(BufferError, match="cannot publish this frame"):
            with producer.loan(shape=(4, 4), dtype=np.uint16) as frame:
                frame[:] = 5
                v = make_view(frame)
        assert c.try_recv() is None  # not published
        assert producer.try_loan() is None  # still loaned: v may write
        del v, frame
        gc.collect()
        buf = producer.loan(timeout=1)  # given back once the views went
        buf.discard()


@needs_buffer_protocol
def test_plain_export_of_a_shaped_loan_is_still_refused(channel):
    with bips.Producer(channel, 1, 4096) as producer:
        with pytest.raises(BufferError, match="buffer export"):
            with producer.loan(shape=(8,), dtype=np.float32) as frame:
                a = np.asarray(producer_buf := frame.base.base.obj)  # noqa: F841
        del a, frame, producer_buf
        gc.collect()


def test_close_ends_the_channel_while_a_sealed_frame_stays_readable(channel):
    producer = bips.Producer(channel, 1, 4096)
    consumer = bips.Consumer(channel, start="oldest")
    with producer.loan(shape=(16,), dtype=np.uint8) as frame:
        frame[:] = 3
    producer.close()  # the natural end: `frame` is still bound
    assert not shm_path(channel).exists()  # the name is gone at once
    assert int(frame.sum()) == 48  # still mapped: reading is safe
    assert not frame.flags.writeable
    got = consumer.recv(timeout=1)  # what was published is still delivered
    assert np.asarray(got).sum() == 48
    del got
    with pytest.raises(bips.Disconnected):
        consumer.recv(timeout=1)  # then the channel is over, not hanging
    again = bips.Producer(channel, 1, 4096)  # and the name is free again
    again.close()
    consumer.close()
    del frame
    gc.collect()


def test_send_any_strides_and_meta(channel):
    src = np.arange(10 * 12, dtype=np.float32).reshape(10, 12)[::-2, 1::3]
    with bips.Producer(channel, 2, 4096) as p, bips.Consumer(channel) as c:
        assert p.send(src, format="F32", meta=b"abc", timestamp_ns=123) == 0
        s = c.recv(timeout=1)
        a = np.asarray(s)
        assert a.dtype == np.float32 and a.shape == src.shape and a.flags.c_contiguous
        assert np.array_equal(a, src) and s.timestamp_ns == 123 and s.meta[:3] == b"abc"
        del a, s
        with pytest.raises(bips.InvalidOptions, match="does not fit"):
            p.send(np.zeros(5000, np.uint8))
        with pytest.raises(bips.DescriptorError, match="big-endian"):
            p.send(np.zeros(4, ">u2"))
        p.send(memoryview(b"xyz"))  # any buffer-protocol object
        assert bytes(c.recv(timeout=1).raw) == b"xyz"


def test_dlpack_shares_memory_and_holds_the_sample(channel):
    with bips.Producer(channel, 1, 4096) as p, bips.Consumer(channel) as c:
        img = np.arange(3 * 5 * 4, dtype=np.uint16).reshape(3, 5, 4)
        p.send(img)
        s = c.recv(timeout=1)
        assert s.__dlpack_device__() == (1, 0)
        t = np.from_dlpack(s)
        a = np.asarray(s)
        assert np.shares_memory(t, a) and array_address(t) == array_address(a)
        assert t.dtype == np.uint16 and t.shape == img.shape and np.array_equal(t, img)
        assert not t.flags.writeable  # DLPack >= 1.0: the read-only flag
        with pytest.raises(BufferError):
            s.release()  # the tensor is an export
        del a, s
        gc.collect()
        assert p.try_loan() is None  # the tensor alone holds the sample
        del t
        gc.collect()
        buf = p.try_loan()  # released when the tensor died
        assert buf is not None
        buf.discard()

        # An unconsumed capsule gives the hold back when it is freed.
        p.send(img)
        s = c.recv(timeout=1)
        cap = s.__dlpack__()
        assert "dltensor" in repr(cap)
        with pytest.raises(BufferError):
            s.release()
        del cap
        s.release()
        with pytest.raises(BufferError, match="stream=None"):
            s.__dlpack__(stream=1)


def test_dlpack_refuses_strides_that_are_not_whole_elements(channel):
    d = bips.Descriptor("uint16", (2, 3), (7, 2))  # odd row stride in bytes
    with bips.Producer(channel, 1, 4096) as p, bips.Consumer(channel) as c:
        with p.loan(descriptor=d) as frame:
            frame[:] = 1
        del frame
        s = c.recv(timeout=1)
        assert np.asarray(s).strides == (7, 2)  # the buffer protocol takes bytes
        with pytest.raises(BufferError, match="not a multiple"):
            np.from_dlpack(s)


@needs_buffer_protocol
def test_bfloat16_points_to_dlpack(channel):
    with bips.Producer(channel, 1, 4096) as p, bips.Consumer(channel) as c:
        p.loan(shape=(4,), dtype="bfloat16").publish()
        s = c.recv(timeout=1)
        assert s.descriptor.dtype == "bfloat16" and s.descriptor.buffer_format is None
        for export in (memoryview, np.asarray):
            with pytest.raises(BufferError, match="DLPack"):
                export(s)
        cap = s.__dlpack__(max_version=(1, 0))  # a capsule numpy cannot read, torch can
        assert "dltensor_versioned" in repr(cap)
        del cap
        assert len(s.raw) == 8


@needs_buffer_protocol
def test_array_interface_pins_the_sample(channel):
    class Wrapper:
        def __init__(self, s):
            self.__array_interface__ = s.__array_interface__
            self.sample = s  # as the cp38-abi3 route's array base would

    with bips.Producer(channel, 1, 4096) as p, bips.Consumer(channel) as c:
        p.send(np.arange(12, dtype=np.int32).reshape(3, 4)[:, ::2])
        s = c.recv(timeout=1)
        ai = s.__array_interface__
        assert ai["version"] == 3 and ai["typestr"] == "<i4" and ai["data"][1] is True
        a = np.asarray(Wrapper(s))
        assert a.shape == (3, 2) and not a.flags.writeable
        assert array_address(a) == data_address(s)
        with pytest.raises(BufferError, match="__array_interface__"):
            s.release()
        with s:
            pass  # the with block does not release a pinned sample either
        assert not s.released
        del a, s
        gc.collect()
        assert p.try_loan() is not None  # freed with the sample


def test_np_asarray_does_not_pin(channel):
    with bips.Producer(channel, 1, 4096) as p, bips.Consumer(channel) as c:
        p.send(np.ones((2, 2), np.uint8))
        s = c.recv(timeout=1)
        a = np.asarray(s)
        del a
        s.release()  # the buffer protocol came first: no pin


@needs_buffer_protocol
def test_sample_without_descriptor_exports_bytes(channel):
    with bips.Producer(channel, 1, 64) as p, bips.Consumer(channel) as c:
        with p.loan() as buf:
            np.frombuffer(buf, np.uint8)[:] = 4
        s = c.recv(timeout=1)
        assert s.descriptor is None
        a = np.asarray(s)
        assert a.shape == (64,) and a.dtype == np.uint8
        assert array_address(a) == data_address(s)


def test_typed_channels(channel):
    d = bips.Descriptor(np.uint8, (4, 4, 3), format="BGR")
    with bips.Producer(channel, 2, 64, payload_type=("image/bgr8", 1), descriptor=d) as p:
        assert p.payload_type == ("image/bgr8", 1) and p.fixed_descriptor == d
        with pytest.raises(bips.TypeMismatch, match="requires image/bgr8 v2") as e:
            bips.Consumer(channel, require_type=("image/bgr8", 2))
        assert "carries image/bgr8 v1" in str(e.value)
        with bips.Consumer(channel, require_type=("image/bgr8", 1)) as c:
            assert c.payload_type == ("image/bgr8", 1) and c.fixed_descriptor == d
            with p.loan() as buf:  # a plain loan: the channel fixes the descriptor
                assert isinstance(buf, bips.SampleMut)
                buf.array[:] = 1
                assert buf.publish(meta=b"x") == 0
            s = c.recv(timeout=1)
            assert s.descriptor == d and np.asarray(s).shape == (4, 4, 3)
            del s
            with pytest.raises(bips.InvalidOptions, match="fixes every sample"):
                p.loan(shape=(2, 2), dtype=np.uint8)
    with bips.Producer(channel, 2, 64):
        with pytest.raises(bips.TypeMismatch, match="no declared type"):
            bips.Consumer(channel, require_type=("image/bgr8", 1))
        assert bips.Consumer(channel).payload_type is None


def desc_offset(p: bips.Producer, ring_capacity: int) -> int:
    """Layout::new (core/src/layout.rs): 128 B header, 640 B producer block,
    128 B per consumer, 32 B ring slots, 64 B per buffer (each part aligned
    to the 128-B LINE), the 512 B type block, then one 320 B descriptor slot
    per buffer."""
    up = lambda v: (v + 127) & ~127  # noqa: E731
    ring = 128 + 640 + 128 * p.max_consumers
    buffers = up(ring + 32 * ring_capacity)
    types = up(buffers + 64 * p.buffers)
    return types + 512


@needs_buffer_protocol
def test_hostile_descriptor_raises_never_a_view(channel):
    with bips.Producer(channel, 2, 256, ring_capacity=2) as p, bips.Consumer(channel) as c:
        base = desc_offset(p, 2)
        fd = os.open(shm_path(channel), os.O_RDWR)
        try:
            p.send(np.zeros((4, 4), np.uint8))
            slots = [os.pread(fd, 320, base + 320 * i) for i in range(p.buffers)]
            # The computed offset is right: one slot holds version 1, uint8, 2 dims.
            assert any(s[:3] == b"\x01\x01\x02" for s in slots), slots
            # A hostile process rewrites it: 1000 x 1000 uint8 in a 256-byte buffer.
            hostile = bytearray(320)
            hostile[:3] = b"\x01\x01\x02"
            struct.pack_into("<QQ", hostile, 16, 1000, 1000)
            struct.pack_into("<qq", hostile, 80, 1000, 1)
            for i in range(p.buffers):
                os.pwrite(fd, bytes(hostile), base + 320 * i)
            s = c.recv(timeout=1)
            with pytest.raises(bips.DescriptorError, match="needs 1000000 bytes, the sample has 16"):
                s.descriptor
            for export in (memoryview, np.asarray, np.from_dlpack, lambda s: s.__array_interface__):
                with pytest.raises(bips.DescriptorError):
                    export(s)
            assert len(s.raw) == 16  # the plain bytes stay readable
            del s

            # Rewritten while held: exports use the copy validated on receipt.
            p.send(np.ones((2, 8), np.uint8))
            s = c.recv(timeout=1)
            for i in range(p.buffers):
                os.pwrite(fd, bytes(hostile), base + 320 * i)
            assert np.asarray(s).shape == (2, 8) and s.descriptor.shape == (2, 8)
            del s
        finally:
            os.close(fd)


def test_python_producer_to_rust_typed_view(channel):
    h, w = 5, 7
    rgb = (np.indices((h, w, 3)).sum(axis=0) * 11 % 256).astype(np.uint8)
    gray = (np.arange(h * w, dtype=np.uint16) * 1999).reshape(h, w)
    tensor = np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4)
    pad = bips.Descriptor("uint8", (h, w, 3), (24, 3, 1), offset=8, format="RGB")
    with bips.Producer(channel, 3, 4096) as p:
        proc = subprocess.Popen(
            [example_binary("frame_consumer"), channel, "3"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout.readline().strip() == "ready"
            with p.loan(timeout=10, descriptor=pad) as frame:
                frame[:] = rgb
            p.send(gray, format="GRAY16_LE")
            p.send(tensor)
        finally:
            out, err = proc.communicate(timeout=30)
            del frame
    assert proc.returncode == 0, err
    rows = re.findall(
        r"frame seq=(\d+) dtype=(\w+) shape=\[([\d, ]+)\] strides=\[([\d, ]+)\] format=(\S+) checksum=(\S+)",
        out,
    )
    assert len(rows) == 3, out
    want = [
        ("uint8", (h, w, 3), (24, 3, 1), "RGB", float(rgb.sum())),
        ("uint16", (h, w), (2 * w, 2), "GRAY16_LE", float(gray.astype(np.float64).sum())),
        ("float32", (2, 3, 4), (48, 16, 4), "-", float(tensor.astype(np.float64).sum())),
    ]
    for (seq, dtype, shape, strides, fmt, checksum), (wd, ws, wst, wf, wc) in zip(rows, want):
        assert dtype == wd and fmt == wf
        assert tuple(int(x) for x in shape.split(",")) == ws
        assert tuple(int(x) for x in strides.split(",")) == wst
        assert float(checksum) == pytest.approx(wc, abs=1e-3)
