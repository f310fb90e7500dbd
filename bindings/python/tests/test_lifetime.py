"""Buffer exports keep the memory (and the hold) alive; nothing ever dangles."""

from __future__ import annotations

import ctypes
import gc
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import bips

from conftest import shm_path, needs_buffer_protocol


class Py_buffer(ctypes.Structure):
    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.py_object),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


PyBUF_WRITABLE = 0x0001
_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(Py_buffer), ctypes.c_int]
_get_buffer.restype = ctypes.c_int


@needs_buffer_protocol
def test_release_with_live_exports_raises_buffer_error(channel):
    with bips.Producer(channel, 2, 64) as p, bips.Consumer(channel) as c:
        p.loan().publish()
        s = c.recv(timeout=1)
        a = np.asarray(s)
        m = memoryview(s)
        with pytest.raises(BufferError, match="2 buffer export"):
            s.release()
        del a
        with pytest.raises(BufferError, match="1 buffer export"):
            c.push(s)
        m.release()
        s.release()
        assert s.released
        with pytest.raises(BufferError, match="released"):
            memoryview(s)


@needs_buffer_protocol
def test_sample_refuses_writable_export(channel):
    with bips.Producer(channel, 2, 64) as p, bips.Consumer(channel) as c:
        p.loan().publish()
        s = c.recv(timeout=1)
        view = Py_buffer()
        with pytest.raises(BufferError, match="read-only"):
            _get_buffer(s, ctypes.byref(view), PyBUF_WRITABLE)
        with pytest.raises(TypeError):
            memoryview(s)[0] = 1
        a = np.frombuffer(s, np.uint8)
        with pytest.raises(ValueError):
            a[0] = 1
        del a
        s.release()  # the failed export was not counted


@needs_buffer_protocol
def test_sample_mut_exports_are_writable(channel):
    with bips.Producer(channel, 2, 64) as p:
        buf = p.loan()
        view = Py_buffer()
        assert _get_buffer(buf, ctypes.byref(view), PyBUF_WRITABLE) == 0
        assert view.readonly == 0 and view.len == 64 and view.obj is buf
        with pytest.raises(BufferError, match="1 buffer export"):
            buf.publish()
        ctypes.pythonapi.PyBuffer_Release(ctypes.byref(view))
        buf.discard()


@needs_buffer_protocol
def test_publish_with_live_view_raises_and_keeps_the_loan(channel):
    with bips.Producer(channel, 2, 64) as p, bips.Consumer(channel) as c:
        buf = p.loan()
        a = np.frombuffer(buf, np.uint8)
        a[:] = 5
        with pytest.raises(BufferError, match="del arr"):
            buf.publish()
        assert not buf.done
        with pytest.raises(BufferError):
            buf.discard()
        del a
        assert buf.publish() == 0
        assert bytes(c.recv(timeout=1))[:2] == b"\x05\x05"


def test_sample_exit_with_live_view_releases_when_the_view_goes(channel):
    with bips.Producer(channel, 1, 64) as p, bips.Consumer(channel) as c:
        p.loan().publish()
        with c.recv(timeout=1) as s:
            a = np.asarray(s)
        assert not s.released  # `a` still reads the buffer
        with pytest.raises(bips.Timeout):
            p.loan(timeout=0.05)  # so the producer may not reuse it
        del a
        assert s.released
        p.loan(timeout=1).publish()


@needs_buffer_protocol
def test_loan_exit_on_exception_with_live_view_gives_back_when_the_view_goes(channel):
    with bips.Producer(channel, 1, 64) as p:
        with pytest.raises(KeyError):
            with p.loan() as buf:
                a = np.frombuffer(buf, np.uint8)
                raise KeyError("boom")
        assert not buf.done
        assert p.try_loan() is None  # still loaned: `a` may write into it
        del a
        assert buf.done and buf.seq is None
        p.loan(timeout=1).discard()


@needs_buffer_protocol
def test_samples_keep_the_consumer_alive_after_close(channel):
    with bips.Producer(channel, 2, 64) as p:
        c = bips.Consumer(channel)
        with p.loan() as buf:
            np.frombuffer(buf, np.uint8)[:] = 9
        s = c.recv(timeout=1)
        a = np.asarray(s)
        c.close()
        del c, s
        gc.collect()
        assert int(a.sum()) == 9 * 64  # the mapping lives as long as the array
        assert p.consumer_count == 1  # and so does the hold
        del a
        gc.collect()
        assert p.consumer_count == 0  # the consumer detached with its last sample


def test_closing_the_producer_waits_for_live_loans(channel):
    p = bips.Producer(channel, 2, 64)
    c = bips.Consumer(channel)
    buf = p.loan()
    p.close()
    assert shm_path(channel).exists()  # the loan keeps the channel open
    with pytest.raises(bips.Timeout):
        c.recv(timeout=0.05)
    buf.publish(length=1)  # may still be published
    assert c.recv(timeout=1).seq == 0
    del buf  # the last reference to the producer
    gc.collect()
    assert not shm_path(channel).exists()
    with pytest.raises(bips.Disconnected):
        c.recv(timeout=1)
    c.close()


@needs_buffer_protocol
def test_dropping_everything_with_live_arrays_is_safe(channel):
    """In a child process: producer, consumer, samples and loans all dropped
    while NumPy arrays still point into the segment; the arrays stay readable
    and writable, and the channel is removed once the last one goes."""
    script = textwrap.dedent(
        """
        import gc, os, sys
        import numpy as np
        import bips

        name = sys.argv[1]
        path = "/dev/shm/bips." + name
        p = bips.Producer(name, 2, 4096)
        c = bips.Consumer(name)
        with p.loan() as b:
            np.frombuffer(b, np.uint8)[:] = 7
        s = c.recv(timeout=1)
        read = np.asarray(s)
        loan = p.loan()
        write = np.frombuffer(loan, np.uint8)
        for obj in (c, p):
            obj.close()
        del s, loan, c, p, b
        gc.collect()
        assert int(read.sum()) == 7 * 4096, "the consumer's mapping is gone"
        write[:] = 9
        assert int(write.sum()) == 9 * 4096, "the producer's mapping is gone"
        assert os.path.exists(path), "closed while arrays live"
        del read
        gc.collect()
        write[:] = 1
        del write
        gc.collect()
        assert not os.path.exists(path), "the channel was not removed"
        print("ok")
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", script, channel], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert r.stdout.strip() == "ok"


@needs_buffer_protocol
def test_many_samples_and_views_are_freed_by_gc(channel):
    with bips.Producer(channel, 4, 256) as p, bips.Consumer(channel) as c:
        views = []
        for i in range(200):
            with p.loan(timeout=2) as buf:
                np.frombuffer(buf, np.uint8)[:] = i % 256
            s = c.recv(timeout=2)
            views.append(np.asarray(s))
            assert views[-1][0] == i % 256
            if len(views) > 3:
                views.pop(0)  # frees that sample: its buffer goes back to the pool
        del views, s
        gc.collect()
