"""Proof of zero copy: NumPy views are the shared-memory segment itself."""

from __future__ import annotations

import os

import numpy as np
import pytest

import bips

from conftest import array_address, file_offset, shm_path, shm_ranges, needs_buffer_protocol


@needs_buffer_protocol
def test_views_lie_in_the_mapped_segment_at_the_same_file_offset(channel):
    size = 1 << 20
    with bips.Producer(channel, 4, size) as p, bips.Consumer(channel) as c:
        assert len(shm_ranges(channel)) >= 2  # the producer's and the consumer's mappings

        buf = p.loan()
        w = np.frombuffer(buf, np.uint8)
        w_addr = array_address(w)
        w_off = file_offset(channel, w_addr)
        assert w_off is not None, "the producer's array is not inside /dev/shm/bips.<name>"
        assert w_addr % os.sysconf("SC_PAGESIZE") == 0  # default alignment: the page
        pattern = (np.arange(size, dtype=np.uint32) * 2654435761 >> 13).astype(np.uint8)
        w[:] = pattern  # written in place, into shared memory
        del w
        buf.publish()

        s = c.recv(timeout=1)
        r = np.asarray(s)
        r_addr = array_address(r)
        # Another mapping of the same file in this process, so another address,
        # but the very same bytes of the segment:
        assert r_addr != w_addr
        assert file_offset(channel, r_addr) == w_off
        assert not r.flags.writeable
        assert np.array_equal(r, pattern)
        # ... and they are the bytes of the shm file at that offset.
        fd = os.open(shm_path(channel), os.O_RDONLY)
        try:
            assert os.pread(fd, 4096, w_off) == pattern[:4096].tobytes()
        finally:
            os.close(fd)

        # Every kind of view points at the same place.
        assert array_address(np.frombuffer(s, np.uint8)) == r_addr
        assert array_address(np.frombuffer(memoryview(s), np.uint8)) == r_addr
        assert array_address(np.asarray(memoryview(s))) == r_addr
        del r
        s.release()


@needs_buffer_protocol
def test_writes_through_the_producer_view_are_what_the_consumer_reads(channel):
    with bips.Producer(channel, 2, 4096) as p, bips.Consumer(channel) as c:
        for value in (7, 200):
            with p.loan() as buf:
                np.frombuffer(buf, np.uint8)[:] = value
            s = c.recv(timeout=1)
            view = np.frombuffer(s, np.uint8)
            assert view.min() == view.max() == value
            del view
            s.release()


@needs_buffer_protocol
def test_typed_and_shaped_views(channel):
    h, w = 48, 64
    with bips.Producer(channel, 2, h * w * 3 * 4) as p, bips.Consumer(channel) as c:
        with p.loan() as buf:
            np.frombuffer(buf, np.float32).reshape(h, w, 3)[:] = 0.5
        s = c.recv(timeout=1)
        img = np.frombuffer(s, np.float32).reshape(h, w, 3)
        assert img.shape == (h, w, 3) and float(img.mean()) == 0.5
        m = memoryview(s)
        assert (m.readonly, m.format, m.itemsize, m.nbytes) == (True, "B", 1, h * w * 3 * 4)
        m.release()
        del img
        s.release()


def test_torch_frombuffer_shares_the_memory(channel):
    torch = pytest.importorskip("torch")
    with bips.Producer(channel, 2, 4096) as p, bips.Consumer(channel) as c:
        with p.loan() as buf:
            np.frombuffer(buf, np.uint8)[:] = 3
        s = c.recv(timeout=1)
        # Through a memoryview, so the export (and the hold) lives as long as the tensor.
        t = torch.frombuffer(memoryview(s), dtype=torch.uint8)
        assert int(t.sum()) == 3 * 4096
        assert t.data_ptr() == array_address(np.asarray(s))
        with pytest.raises(BufferError):
            s.release()
        del t
        s.release()
