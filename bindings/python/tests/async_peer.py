"""A peer process for test_async.py.

``async_peer.py produce NAME N PAUSE_MS``: creates the channel (4 buffers,
``block``), prints READY, waits for a line on stdin, publishes N samples, each a
one-element uint64 array holding its sequence (``producer.send``), pausing PAUSE_MS (random
0..PAUSE_MS when negative) before each, then exits (closing the channel).

``async_peer.py consume NAME N [HOLD_MS]``: opens the channel (oldest first),
prints READY, then receives N samples (holding each HOLD_MS) with ``await consumer.arecv()`` on asyncio
while a coroutine ticks every millisecond; prints one JSON line with the
sequences, the payload check, the ticks seen during each wait and the wait
backend, then expects ``Disconnected``.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time

import numpy as np

import bips


class Ticker:
    """A coroutine that counts the event loop's turns: ``ticks`` grows every
    millisecond while the loop runs. Make it inside a running loop; ``stop()``
    ends it. (test_async.py uses it too.)"""

    def __init__(self) -> None:
        self.ticks = 0
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.001)
            self.ticks += 1

    def stop(self) -> None:
        self._task.cancel()


def produce(name: str, n: int, pause_ms: int) -> None:
    producer = bips.Producer(name, 4, 64, backpressure="block")
    print("READY", flush=True)
    sys.stdin.readline()
    rng = random.Random(n)
    for seq in range(n):
        ms = rng.uniform(0, -pause_ms) if pause_ms < 0 else pause_ms
        time.sleep(ms / 1000)
        producer.send(np.array([seq], dtype=np.uint64), timeout=10)
    producer.close()


async def consume(name: str, n: int, hold_ms: int) -> dict:
    consumer = bips.Consumer(name, start="oldest")
    print("READY", flush=True)
    ticker = Ticker()
    seqs, ok, during = [], True, []
    for _ in range(n):
        before = ticker.ticks
        s = await consumer.arecv(timeout=10)
        during.append(ticker.ticks - before)
        seqs.append(s.seq)
        a = np.asarray(s)
        if a.dtype == np.uint8:  # a plain-bytes sample (no descriptor)
            a = a.view(np.uint64)
        ok = ok and int(a[0]) == s.seq
        del a
        if hold_ms:
            await asyncio.sleep(hold_ms / 1000)  # a slow consumer
        s.release()
    try:
        await consumer.arecv(timeout=10)
        end = "more"
    except bips.Disconnected:
        end = "disconnected"
    ticker.stop()
    return {"seqs": seqs, "payload_ok": ok, "ticks_during": during, "end": end}


if __name__ == "__main__":
    role, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if role == "produce":
        produce(name, n, int(sys.argv[4]))
    else:
        hold = int(sys.argv[4]) if len(sys.argv) > 4 else 0
        print(json.dumps(asyncio.run(consume(name, n, hold))), flush=True)
