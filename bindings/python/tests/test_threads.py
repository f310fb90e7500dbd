"""Blocking calls release the GIL; one object may be used from several threads."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

import bips

from conftest import needs_buffer_protocol


class Counter(threading.Thread):
    """Counts in pure Python: it advances only while it can get the GIL."""

    def __init__(self):
        super().__init__(daemon=True)
        self.count = 0
        self.stop = False

    def run(self):
        while not self.stop:
            self.count += 1


def counted_while(call) -> int:
    counter = Counter()
    counter.start()
    time.sleep(0.05)
    before = counter.count
    call()
    during = counter.count - before
    counter.stop = True
    counter.join()
    return during


def test_recv_lets_other_threads_run(channel):
    with bips.Producer(channel, 2, 64), bips.Consumer(channel, wait="park") as c:

        def blocked_recv():
            with pytest.raises(bips.Timeout):
                c.recv(timeout=0.5)

        # Holding the GIL for 0.5 s would leave the counter where it was.
        assert counted_while(blocked_recv) > 10_000


def test_loan_lets_other_threads_run(channel):
    with bips.Producer(channel, 1, 64, wait="park") as p, bips.Consumer(channel):
        p.loan().publish()  # the only buffer, never received: `loan` must wait

        def blocked_loan():
            with pytest.raises(bips.Timeout):
                p.loan(timeout=0.5)

        assert counted_while(blocked_loan) > 10_000


@needs_buffer_protocol
def test_blocked_recv_is_woken_by_a_publish_from_another_thread(channel):
    with bips.Producer(channel, 2, 64) as p, bips.Consumer(channel) as c:
        got = []
        t = threading.Thread(target=lambda: got.append(c.recv(timeout=5)))
        t.start()
        time.sleep(0.1)  # the thread is blocked in recv now
        t0 = time.monotonic()
        with p.loan() as buf:
            np.frombuffer(buf, np.uint8)[:] = 1
        t.join(5)
        assert not t.is_alive()
        assert time.monotonic() - t0 < 1
        assert got[0].seq == 0 and bytes(got[0])[0] == 1


def test_releases_from_other_threads_while_recv_blocks(channel):
    """Block policy, every buffer held: a thread waits in recv on the same
    consumer while the main thread drops one sample and releases another; the
    producer must get its buffers back without waiting for that recv."""
    with bips.Producer(channel, 2, 64) as p, bips.Consumer(channel) as c:
        p.loan().publish()
        p.loan().publish()
        s0, s1 = c.recv(timeout=1), c.recv(timeout=1)
        got = []
        t = threading.Thread(target=lambda: got.append(c.recv(timeout=10)))
        t.start()
        time.sleep(0.05)  # t holds the consumer, waiting
        del s0  # freed by the GC while t holds the consumer: deferred, not lost
        t0 = time.monotonic()
        buf = p.loan(timeout=2)
        assert time.monotonic() - t0 < 1
        s1.release()  # explicit: waits for t's current wait slice at most
        buf.publish()
        t.join(5)
        assert not t.is_alive() and got[0].seq == 2
        assert p.loan(timeout=1) is not None


@needs_buffer_protocol
def test_many_threads_share_one_consumer(channel):
    n = 200
    with bips.Producer(channel, 8, 64) as p, bips.Consumer(channel, start="oldest") as c:
        seen: list[int] = []
        lock = threading.Lock()

        def reader():
            while True:
                try:
                    s = c.recv(timeout=5)
                except bips.Disconnected:
                    return
                with lock:
                    seen.append(s.seq)
                s.release()

        readers = [threading.Thread(target=reader) for _ in range(4)]
        for r in readers:
            r.start()
        for i in range(n):
            with p.loan(timeout=5) as buf:
                np.frombuffer(buf, np.uint8)[:8] = i % 256
        p.close()
        for r in readers:
            r.join(10)
            assert not r.is_alive()
        assert sorted(seen) == list(range(n))  # each sample exactly once


def test_ctrl_c_interrupts_a_blocked_recv(channel):
    with bips.Producer(channel, 2, 64), bips.Consumer(channel, wait="park") as c:
        timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            c.recv()  # no timeout: only the signal ends it
        assert time.monotonic() - t0 < 2
        timer.join()


def test_close_ends_a_recv_blocked_in_another_thread(channel):
    with bips.Producer(channel, 2, 64) as p:
        c = bips.Consumer(channel)
        errors = []

        def blocked():
            try:
                c.recv(timeout=10)
            except Exception as e:  # noqa: BLE001 - recorded for the assertion
                errors.append(e)

        t = threading.Thread(target=blocked)
        t.start()
        time.sleep(0.1)
        t0 = time.monotonic()
        c.close()
        t.join(5)
        assert not t.is_alive() and time.monotonic() - t0 < 2
        assert isinstance(errors[0], ValueError) and "closed" in str(errors[0])
        wait_until_detached = time.monotonic() + 2
        while p.consumer_count and time.monotonic() < wait_until_detached:
            time.sleep(0.01)
        assert p.consumer_count == 0
