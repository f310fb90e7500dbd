"""asyncio: ``await consumer.arecv()``, ``async for``, ``await producer.aloan()``.

Peers run in other processes (``async_peer.py``). Each test checks that the
event loop kept running while bips waited (a ticking coroutine), and that a
cancelled wait (``asyncio.wait_for``, ``task.cancel()``) loses no sample.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import bips

HERE = Path(__file__).resolve().parent
PEER = HERE / "async_peer.py"
sys.path.insert(0, str(HERE))
from async_peer import Ticker  # noqa: E402


def start(*args: object, env: dict | None = None) -> subprocess.Popen:
    p = subprocess.Popen(
        [sys.executable, str(PEER), *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    line = p.stdout.readline()
    if line.strip() != "READY":
        p.kill()
        pytest.fail(f"peer {args} did not start: {line!r}")
    return p


def go(p: subprocess.Popen) -> None:
    p.stdin.write("go\n")
    p.stdin.flush()


def finish(p: subprocess.Popen) -> None:
    assert p.wait(timeout=20) == 0, f"peer exited with {p.returncode}"


def seq_of(sample: bips.Sample) -> int:
    a = np.asarray(sample)
    v = int(a[0])
    del a
    return v


@pytest.mark.parametrize("backend", ["futex_waitv", "threads"])
def test_arecv_keeps_the_loop_ticking(channel: str, backend: str) -> None:
    """A consumer process awaits ``arecv`` while a coroutine ticks; a producer
    in another process publishes with pauses. Both wait backends."""
    n = 25
    producer = start("produce", channel, n, 20)
    env = {"BIPS_ASYNC_NO_WAITV": "1" if backend == "threads" else "0"}
    consumer = start("consume", channel, n, env=env)
    go(producer)
    out = json.loads(consumer.stdout.readline())
    finish(producer)
    finish(consumer)
    assert out["seqs"] == list(range(n))
    assert out["payload_ok"]
    assert out["end"] == "disconnected"
    # Each wait lasts ~20 ms: the loop ticked during every one of them.
    assert min(out["ticks_during"][1:]) >= 3, out["ticks_during"]


def test_async_for_receives_everything_in_order(channel: str) -> None:
    n = 30
    producer = start("produce", channel, n, 2)

    async def main() -> list[int]:
        consumer = bips.Consumer(channel, start="oldest")
        go(producer)
        seen = []
        async for s in consumer:
            assert seq_of(s) == s.seq
            seen.append(s.seq)
            s.release()
        consumer.close()
        return seen

    assert asyncio.run(main()) == list(range(n))
    finish(producer)


def test_cancelled_arecv_loses_nothing(channel: str) -> None:
    """``asyncio.wait_for`` timeouts and ``task.cancel()`` land mid-wait many
    times; every sample still arrives, in order, none twice."""
    n = 80
    producer = start("produce", channel, n, -6)

    async def main() -> tuple[list[int], int]:
        consumer = bips.Consumer(channel, start="oldest")
        go(producer)
        rng = np.random.default_rng(3)
        seen: list[int] = []
        cancels = 0
        while True:
            try:
                if rng.random() < 0.5:
                    s = await asyncio.wait_for(consumer.arecv(), timeout=rng.uniform(0, 0.003))
                else:
                    task = asyncio.ensure_future(consumer.arecv())
                    await asyncio.sleep(rng.uniform(0, 0.003))
                    task.cancel()
                    try:
                        s = await task
                    except asyncio.CancelledError:
                        cancels += 1
                        continue
            except asyncio.TimeoutError:
                cancels += 1
                continue
            except bips.Disconnected:
                break
            assert seq_of(s) == s.seq
            seen.append(s.seq)
            s.release()
        consumer.close()
        return seen, cancels

    seen, cancels = asyncio.run(main())
    finish(producer)
    assert seen == list(range(n))
    assert cancels >= 20, f"only {cancels} cancels: cancellation was not exercised"


def test_arecv_timeout_on_an_idle_channel(channel: str) -> None:
    producer = bips.Producer(channel, 2, 64)
    consumer = bips.Consumer(channel)

    async def main() -> tuple[float, int]:
        ticker = Ticker()
        start_t = time.monotonic()
        with pytest.raises(bips.Timeout):
            await consumer.arecv(timeout=0.1)
        took = time.monotonic() - start_t
        ticker.stop()
        return took, ticker.ticks

    took, ticks = asyncio.run(main())
    assert 0.1 <= took < 1.0
    assert ticks >= 20, f"the loop ticked {ticks} times in {took:.3f} s"
    consumer.close()
    producer.close()


def test_aloan_waits_for_a_slow_consumer(channel: str) -> None:
    """``aloan`` on a full ``block`` channel waits for a consumer in another
    process while the loop ticks; cancelled ``aloan``s leave no buffer loaned."""
    n = 25
    producer = bips.Producer(channel, 2, 64, backpressure="block")
    consumer = start("consume", channel, n, 10)

    async def main() -> tuple[int, int, int]:
        ticker = Ticker()
        cancels = waited_ticks = 0
        for seq in range(n):
            if seq % 3 == 0:
                try:
                    buf = await asyncio.wait_for(producer.aloan(), timeout=0.0005)
                    buf.discard()
                except asyncio.TimeoutError:
                    cancels += 1
            before = ticker.ticks
            buf = await producer.aloan(timeout=10)
            waited_ticks += ticker.ticks - before
            np.asarray(buf).view(np.uint64)[0] = seq
            buf.publish(8)
            await asyncio.sleep(0.005 if seq < 2 else 0)
        ticker.stop()
        return cancels, waited_ticks, ticker.ticks

    cancels, waited_ticks, ticks = asyncio.run(main())
    producer.close()
    out = json.loads(consumer.stdout.readline())
    finish(consumer)
    assert out["seqs"] == list(range(n))
    assert out["payload_ok"], "payloads differ"
    assert cancels >= 1, "no aloan was cancelled"
    assert waited_ticks > 0, "the loop never ran while aloan waited"
