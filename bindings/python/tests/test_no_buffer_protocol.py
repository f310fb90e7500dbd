"""The routes that work on every wheel, the cp38-abi3 one included (no buffer
protocol before CPython 3.11): np.asarray of loans and samples, Sample.raw,
send() and meta, with the same lifetime rules as buffer-protocol views.

On the cp311-abi3 wheel np.asarray goes through the buffer protocol; on the
cp38-abi3 wheel through ``__array__`` (a counted export with
``__array_interface__``), and ``Sample.raw`` is a memoryview of a ctypes array
holding such an export. scripts/test-wheels.sh runs this file against both.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

import bips

from conftest import array_address, file_offset


def test_the_flag_says_whether_memoryview_works(channel):
    with bips.Producer(channel, 1, 64) as p, bips.Consumer(channel) as c:
        buf = p.loan()
        if bips.HAS_BUFFER_PROTOCOL:
            memoryview(buf).release()
        else:
            for spelling in (memoryview, lambda b: np.frombuffer(b, np.uint8), bytes):
                with pytest.raises(TypeError):
                    spelling(buf)
        buf.publish()
        s = c.recv(timeout=1)
        # (on the class: reading it on the sample would pin the sample)
        assert bips.HAS_BUFFER_PROTOCOL == hasattr(bips.Sample, "__array_interface__")
        s.release()


def test_np_asarray_writes_a_loan_in_place_and_publish_waits_for_it(channel):
    with bips.Producer(channel, 1, 64) as p, bips.Consumer(channel) as c:
        buf = p.loan()
        a = np.asarray(buf)
        assert a.shape == (64,) and a.dtype == np.uint8 and a.flags.writeable
        assert file_offset(channel, array_address(a)) is not None  # the segment, no copy
        a[:4] = [1, 2, 3, 4]
        v = a[2:]  # a view keeps the export too
        del a
        with pytest.raises(BufferError, match="buffer export"):
            buf.publish()
        assert not buf.done  # still ours
        del v
        gc.collect()
        assert buf.publish(meta=memoryview(b"hi")) == 0
        with pytest.raises(BufferError, match="published"):
            np.asarray(buf)
        s = c.recv(timeout=1)
        assert s.meta[:2] == b"hi"
        assert np.asarray(s)[:4].tolist() == [1, 2, 3, 4]


def test_np_asarray_of_a_sample_holds_it_while_any_view_lives(channel):
    with bips.Producer(channel, 1, 64) as p, bips.Consumer(channel) as c:
        np.asarray(p.loan())  # a temporary: its export ends at once
        p.send(np.arange(8, dtype=np.int16).reshape(2, 4))
        s = c.recv(timeout=1)
        a = np.asarray(s)
        assert a.shape == (2, 4) and a.dtype == np.int16 and not a.flags.writeable
        with pytest.raises(ValueError):
            a[0, 0] = 1
        v = a[:, 1:]
        del a
        with pytest.raises(BufferError):
            s.release()
        assert p.try_loan() is None  # held: the producer cannot rewrite it
        assert v.tolist() == [[1, 2, 3], [5, 6, 7]]
        del v
        s.release()
        assert p.loan(timeout=1) is not None


def test_with_block_releases_when_the_last_array_goes(channel):
    with bips.Producer(channel, 1, 64) as p, bips.Consumer(channel) as c:
        p.send(np.full(16, 7, np.uint8))
        with c.recv(timeout=1) as s:
            a = np.asarray(s)
        assert not s.released  # the array still uses it
        del a
        gc.collect()
        assert s.released


def test_loan_given_back_when_the_array_of_a_failed_block_goes(channel):
    with bips.Producer(channel, 1, 64) as p, bips.Consumer(channel) as c:
        with pytest.raises(RuntimeError):
            with p.loan() as buf:
                a = np.asarray(buf)
                raise RuntimeError
        assert p.try_loan() is None
        del a
        gc.collect()
        assert c.try_recv() is None  # nothing was published
        assert p.loan(timeout=1) is not None


def test_sample_raw_is_a_read_only_counted_memoryview(channel):
    with bips.Producer(channel, 1, 64) as p, bips.Consumer(channel) as c:
        p.send(np.arange(4, dtype="<f4"))
        s = c.recv(timeout=1)
        raw = s.raw
        assert isinstance(raw, memoryview) and raw.readonly and raw.nbytes == 16
        assert bytes(raw[4:8]) == np.float32(1).tobytes()
        with pytest.raises(TypeError):
            raw[0] = 1
        with pytest.raises(BufferError):
            s.release()
        del raw
        gc.collect()
        s.release()
        with pytest.raises(BufferError, match="released"):
            s.raw  # noqa: B018


def test_send_reads_any_array_and_refuses_what_it_cannot_describe(channel):
    with bips.Producer(channel, 2, 64) as p, bips.Consumer(channel) as c:
        src = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]  # strided
        p.send(src)
        s = c.recv(timeout=1)
        assert np.array_equal(np.asarray(s), src)
        s.release()
        p.send(b"abc")
        s = c.recv(timeout=1)
        assert s.descriptor.dtype == "uint8" and np.asarray(s).tolist() == [97, 98, 99]
        s.release()
        with pytest.raises(bips.DescriptorError, match="big-endian"):
            p.send(np.zeros(2, ">u4"))
        with pytest.raises(BufferError, match="buffer-protocol object"):
            p.send(12)


def test_sealed_frame_cannot_be_made_writable_again(channel):
    with bips.Producer(channel, 1, 64) as p, bips.Consumer(channel) as c:
        with p.loan(shape=(4, 4), dtype=np.uint8) as frame:
            frame[:] = 3
        assert not frame.flags.writeable
        with pytest.raises(ValueError):
            frame.flags.writeable = True
        with pytest.raises(ValueError):
            frame.base.flags.writeable = True
        s = c.recv(timeout=1)
        assert int(np.asarray(s).sum()) == 48
        del frame, s
