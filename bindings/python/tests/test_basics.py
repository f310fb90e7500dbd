"""The API in one process: publish/receive, metadata, context managers,
iteration, aliases, policies."""

from __future__ import annotations

import struct
import time

import numpy as np
import pytest

import bips

from conftest import needs_buffer_protocol


def test_module_exports_everything_it_declares():
    for name in bips.__all__:
        assert hasattr(bips, name), name
    assert bips.MAX_HELD == 8
    assert isinstance(bips.__version__, str)
    for cls in (bips.Producer, bips.Consumer, bips.Sample, bips.SampleMut):
        assert cls.__module__ == "bips"
        assert cls.__doc__


@needs_buffer_protocol
def test_roundtrip_bytes_meta_seq_timestamp(channel):
    p = bips.Producer(channel, 4, 1024, meta_size=16)
    c = bips.Consumer(channel)
    assert (p.buffers, p.buffer_size, p.meta_size, p.max_consumers) == (4, 1024, 16, 8)
    assert (c.buffers, c.buffer_size, c.meta_size, c.name) == (4, 1024, 16, channel)
    assert p.consumer_count == 1

    t0 = time.monotonic_ns()
    buf = p.loan()
    assert len(buf) == buf.capacity == 1024 and buf.meta_size == 16
    np.frombuffer(buf, np.uint8)[:5] = [1, 2, 3, 4, 5]
    seq = buf.publish(length=5, meta=struct.pack("<II", 640, 480))
    assert seq == 0 and buf.seq == 0 and buf.done

    s = c.recv(timeout=1)
    assert (s.seq, len(s), bytes(s), s.lagged) == (0, 5, b"\x01\x02\x03\x04\x05", 0)
    assert struct.unpack_from("<II", s.meta) == (640, 480)
    assert len(s.meta) == 16 and s.meta[8:] == bytes(8)  # the rest of the area is zeroed
    assert t0 <= s.timestamp_ns <= time.monotonic_ns()
    assert abs(bips.now_ns() - time.monotonic_ns()) < 10_000_000
    assert "seq=0" in repr(s)
    s.release()
    assert s.released and "released" in repr(s)
    s.release()  # idempotent
    c.close()
    p.close()
    assert c.closed and p.closed


@needs_buffer_protocol
def test_own_timestamp_and_explicit_length_zero(channel):
    with bips.Producer(channel, 2, 64) as p, bips.Consumer(channel) as c:
        p.loan().publish(length=0, timestamp_ns=42)
        s = c.recv(timeout=1)
        assert (len(s), s.timestamp_ns, bytes(s)) == (0, 42, b"")


@needs_buffer_protocol
def test_loan_context_manager_publishes_on_clean_exit(channel):
    with bips.Producer(channel, 2, 16) as p, bips.Consumer(channel) as c:
        with p.loan() as buf:
            memoryview(buf)[:3] = b"abc"
        assert buf.done and buf.seq == 0
        assert bytes(c.recv(timeout=1))[:3] == b"abc"


@needs_buffer_protocol
def test_loan_context_manager_gives_back_on_exception(channel):
    with bips.Producer(channel, 2, 16) as p, bips.Consumer(channel) as c:
        with pytest.raises(RuntimeError):
            with p.loan() as buf:
                memoryview(buf)[:3] = b"bad"
                raise RuntimeError("camera failed")
        assert buf.done and buf.seq is None
        assert c.try_recv() is None  # nothing published
        # Both buffers are free again: two loans at once succeed without waiting.
        a, b = p.try_loan(), p.try_loan()
        assert a is not None and b is not None
        a.discard()
        b.discard()


def test_sample_context_manager_releases(channel):
    with bips.Producer(channel, 1, 16) as p, bips.Consumer(channel) as c:
        p.loan().publish()
        with c.recv(timeout=1) as s:
            assert s.seq == 0
        assert s.released
        # The only buffer is free again (Block policy, one buffer).
        assert p.loan(timeout=1).publish() == 1


def test_try_loan_and_try_recv(channel):
    with bips.Producer(channel, 1, 16) as p, bips.Consumer(channel) as c:
        assert c.try_recv() is None
        buf = p.try_loan()
        assert buf is not None
        assert p.try_loan() is None  # the only buffer is loaned
        buf.publish()
        s = c.try_recv()
        assert s is not None and s.seq == 0


@needs_buffer_protocol
def test_iteration_ends_on_disconnect(channel):
    p = bips.Producer(channel, 4, 8)
    c = bips.Consumer(channel)
    for i in range(3):
        with p.loan() as buf:
            memoryview(buf)[0] = i
    p.close()  # consumers drain what is retained, then Disconnected
    assert [(s.seq, bytes(s)[0]) for s in c] == [(0, 0), (1, 1), (2, 2)]
    with pytest.raises(bips.Disconnected):
        c.recv(timeout=1)
    c.close()


@needs_buffer_protocol
def test_pull_push_aliases(channel):
    with bips.Producer(channel, 2, 8) as p, bips.Consumer(channel) as c:
        buf = p.Pull()
        memoryview(buf)[:2] = b"hi"
        assert p.Push(buf, 2) == 0
        buf = p.pull(timeout=1)
        memoryview(buf)[:2] = b"yo"
        assert p.push(buf, length=2, meta=b"m") == 1

        s = c.Pull()
        assert bytes(s) == b"hi"
        c.Push(s)
        assert s.released
        s = c.pull(timeout=1)
        assert (bytes(s), s.meta[:1]) == (b"yo", b"m")
        c.push(s)
        assert s.released


@needs_buffer_protocol
def test_publish_twice_and_after_discard_raise(channel):
    with bips.Producer(channel, 2, 8) as p:
        buf = p.loan()
        buf.publish()
        with pytest.raises(ValueError, match="already published"):
            buf.publish()
        buf = p.loan()
        buf.discard()
        buf.discard()  # idempotent
        with pytest.raises(ValueError, match="given back"):
            buf.publish()
        with pytest.raises(BufferError):
            memoryview(buf)


def test_drop_oldest_reports_lag(channel):
    with bips.Producer(channel, 2, 8, backpressure="drop_oldest") as p, bips.Consumer(channel) as c:
        for _ in range(6):  # never waits, though nobody receives
            p.loan(timeout=1).publish()
        s = c.recv(timeout=1)
        assert s.seq > 0 and s.lagged == s.seq  # the gap is reported, never silent
        s.release()


def test_block_paces_the_producer(channel):
    with bips.Producer(channel, 2, 8) as p, bips.Consumer(channel) as c:
        p.loan().publish()
        p.loan().publish()
        with pytest.raises(bips.Timeout):
            p.loan(timeout=0.05)  # the consumer has not taken either sample
        c.recv(timeout=1).release()
        assert p.loan(timeout=1).publish() == 2


def test_start_oldest_and_next(channel):
    with bips.Producer(channel, 4, 8) as p:
        for _ in range(3):
            p.loan().publish()
        with bips.Consumer(channel, start="oldest") as oldest, bips.Consumer(
            channel, start="next"
        ) as nxt, bips.Consumer(channel) as newest:
            assert oldest.recv(timeout=1).seq == 0
            assert newest.recv(timeout=1).seq == 2
            assert nxt.try_recv() is None
            p.loan().publish()
            assert nxt.recv(timeout=1).seq == 3


def test_wait_strategies(channel):
    for wait in ("spin", "park", "spin_then_park", "spin-then-park"):
        with bips.Producer(channel, 2, 8, wait=wait) as p, bips.Consumer(channel, wait=wait) as c:
            p.loan().publish()
            assert c.recv(timeout=1).seq == 0


def test_closed_objects_refuse_calls(channel):
    p = bips.Producer(channel, 2, 8)
    c = bips.Consumer(channel)
    c.close()
    p.close()
    for call in (c.recv, c.try_recv, p.loan, p.try_loan):
        with pytest.raises(ValueError, match="closed"):
            call()


def test_list_channels(channel):
    with bips.Producer(channel, 1, 8):
        assert channel in bips.list_channels()
    assert channel not in bips.list_channels()


def test_push_refuses_objects_of_another_channel(channel):
    other = channel + "-2"
    with bips.Producer(channel, 2, 8) as p1, bips.Producer(other, 2, 8) as p2:
        with bips.Consumer(channel) as c1, bips.Consumer(other) as c2:
            buf = p2.loan()
            with pytest.raises(ValueError, match="another bips.Producer"):
                p1.Push(buf)
            assert p2.Push(buf) == 0
            s = c2.recv(timeout=1)
            with pytest.raises(ValueError, match="another bips.Consumer"):
                c1.Push(s)
            c2.Push(s)
            assert s.released
