"""Every failure a user can act on raises its own exception class."""

from __future__ import annotations

import os
import struct

import pytest

import bips

from conftest import shm_path

ERRORS = [
    "Timeout",
    "Disconnected",
    "ChannelBusy",
    "NotFound",
    "PermissionDenied",
    "LayoutMismatch",
    "Corrupt",
    "TooManyConsumers",
    "HeldLimit",
    "InvalidName",
    "InvalidOptions",
    "NoSpace",
]


def test_hierarchy():
    assert issubclass(bips.Error, Exception)
    for name in ERRORS:
        cls = getattr(bips, name)
        assert issubclass(cls, bips.Error), name
        assert cls.__module__ == "bips" and cls.__doc__, name
    assert issubclass(bips.Timeout, TimeoutError)
    assert issubclass(bips.NotFound, FileNotFoundError)
    assert issubclass(bips.PermissionDenied, PermissionError)
    assert issubclass(bips.InvalidName, ValueError)
    assert issubclass(bips.InvalidOptions, ValueError)


def test_not_found(channel):
    with pytest.raises(bips.NotFound, match="does not exist") as e:
        bips.Consumer(channel)
    assert isinstance(e.value, FileNotFoundError)


@pytest.mark.parametrize("name", ["", "a/b", ".hidden", "x" * 201, "spa ce"])
def test_invalid_name(name):
    with pytest.raises(bips.InvalidName):
        bips.Producer(name, 2, 64)
    with pytest.raises(bips.InvalidName):
        bips.Consumer(name)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(buffers=0, size=64),
        dict(buffers=2, size=64, max_consumers=0),
        dict(buffers=2, size=64, meta_size=5000),
        dict(buffers=2, size=64, ring_capacity=3),
        dict(buffers=2, size=64, alignment=100),
        dict(buffers=2, size=64, backpressure="sometimes"),
        dict(buffers=2, size=64, wait="nap"),
    ],
)
def test_invalid_options(channel, kwargs):
    with pytest.raises(bips.InvalidOptions):
        bips.Producer(channel, **kwargs)


def test_invalid_arguments_of_calls(channel):
    with bips.Producer(channel, 2, 64, meta_size=8) as p, bips.Consumer(channel) as c:
        with pytest.raises(bips.InvalidOptions):
            bips.Consumer(channel, start="middle")
        buf = p.loan()
        with pytest.raises(bips.InvalidOptions, match="exceeds the buffer size"):
            buf.publish(length=65)
        with pytest.raises(bips.InvalidOptions, match="meta_size"):
            buf.publish(meta=bytes(9))
        with pytest.raises(TypeError, match="bytes-like"):
            buf.publish(meta="text")
        buf.publish(meta=bytearray(b"12345678"))  # any bytes-like works
        for bad in (-1.0, float("nan")):
            with pytest.raises(ValueError):
                c.recv(timeout=bad)
        assert c.recv(timeout=float("inf")).meta == b"12345678"


def test_channel_busy(channel):
    with bips.Producer(channel, 2, 64):
        with pytest.raises(bips.ChannelBusy, match="live producer"):
            bips.Producer(channel, 2, 64)


def test_timeout(channel):
    with bips.Producer(channel, 1, 64) as p, bips.Consumer(channel) as c:
        with pytest.raises(bips.Timeout) as e:
            c.recv(timeout=0.05)
        assert isinstance(e.value, TimeoutError)
        with pytest.raises(bips.Timeout):
            c.recv(timeout=0)
        p.loan().publish()
        with pytest.raises(bips.Timeout):
            p.loan(timeout=0.05)  # the consumer has not received the only buffer


def test_disconnected(channel):
    p = bips.Producer(channel, 2, 64)
    c = bips.Consumer(channel)
    p.loan().publish()
    p.close()
    assert c.recv(timeout=1).seq == 0  # what was published is still delivered
    with pytest.raises(bips.Disconnected, match="producer has gone"):
        c.recv(timeout=1)
    with pytest.raises(bips.Disconnected):
        c.try_recv()
    c.close()


def test_too_many_consumers(channel):
    with bips.Producer(channel, 2, 64, max_consumers=1), bips.Consumer(channel):
        with pytest.raises(bips.TooManyConsumers, match="maximum of 1"):
            bips.Consumer(channel)


def test_held_limit(channel):
    n = bips.MAX_HELD
    with bips.Producer(channel, n + 2, 64) as p, bips.Consumer(channel, start="oldest") as c:
        for _ in range(n + 1):
            p.loan().publish()
        held = [c.recv(timeout=1) for _ in range(n)]
        with pytest.raises(bips.HeldLimit, match="release"):
            c.recv(timeout=1)
        held.pop().release()
        assert c.recv(timeout=1).seq == n
        del held


def test_permission_denied(channel):
    with bips.Producer(channel, 2, 64, mode=0o600 if os.geteuid() == 0 else 0o000):
        pid = os.fork()
        if pid == 0:  # child: become an unprivileged user when we are root
            code = 3
            try:
                if os.geteuid() == 0:
                    os.setgid(65534)
                    os.setuid(65534)
                try:
                    bips.Consumer(channel)
                    code = 1
                except bips.PermissionDenied as e:
                    code = 0 if isinstance(e, PermissionError) else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0


def test_layout_mismatch(channel):
    path = shm_path(channel)
    path.write_bytes(b"\xab" * 8192)  # not a bips segment
    try:
        with pytest.raises(bips.LayoutMismatch, match="unusable layout"):
            bips.Consumer(channel)
    finally:
        path.unlink()


def test_corrupt(channel):
    """A hostile process writes a published ring slot naming buffer 9999."""
    with bips.Producer(channel, 2, 64, max_consumers=1) as p, bips.Consumer(channel) as c:
        # docs/ARCHITECTURE.md: 128 B header, 640 B producer block (layout
        # v2), 128 B per consumer entry, then the ring: slot 0 = {stamp: u64,
        # buf: u32}.
        ring = 128 + 640 + 128 * p.max_consumers
        fd = os.open(shm_path(channel), os.O_RDWR)
        try:
            os.pwrite(fd, struct.pack("<QI", 1, 9999), ring)
        finally:
            os.close(fd)
        with pytest.raises(bips.Corrupt, match="corrupt"):
            c.recv(timeout=1)


def test_no_space(channel):
    # 1 TiB (the largest buffer a channel may have) does not fit in /dev/shm.
    with pytest.raises(bips.NoSpace, match="not enough shared memory"):
        bips.Producer(channel, 1, 1 << 40)
