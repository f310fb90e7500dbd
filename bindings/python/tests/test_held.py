"""A channel's ``max_held``: a batching consumer (inference over a batch of
frames) holds 32 samples at once as NumPy arrays, in place, while the
producer (another process) keeps publishing under ``drop_oldest``; every held
frame stays intact until it is released, and the 33rd hold raises
``HeldLimit`` naming the limit."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import bips

from conftest import array_address, file_offset, open_consumer

BATCH = 32
SHAPE = (24, 32, 3)

PRODUCER = textwrap.dedent(
    """
    import sys
    import numpy as np
    import bips

    name, batch = sys.argv[1], int(sys.argv[2])
    shape = (24, 32, 3)

    def frame(n):
        return ((np.arange(np.prod(shape), dtype=np.uint64) * 7 + n * 131) % 251).astype(np.uint8).reshape(shape)

    with bips.Producer(name, batch + 8, int(np.prod(shape)), backpressure="drop_oldest",
                       max_held=batch) as p:
        assert p.max_held == batch
        print("CREATED", flush=True)
        assert sys.stdin.readline().strip() == "go"
        for n in range(batch):
            assert p.send(frame(n), timeout=10) == n
        print("BATCH", flush=True)
        assert sys.stdin.readline().strip() == "more"
        # The consumer holds `batch` buffers: 8 are left, and drop_oldest never waits.
        for n in range(batch, batch + 1000):
            assert p.send(frame(n), timeout=0) == n
        print("MORE", flush=True)
        assert sys.stdin.readline().strip() == "quit"
    """
)


def frame(n: int) -> np.ndarray:
    return ((np.arange(np.prod(SHAPE), dtype=np.uint64) * 7 + n * 131) % 251).astype(np.uint8).reshape(SHAPE)


def test_batching_consumer_holds_32_frames_as_arrays(channel):
    proc = subprocess.Popen(
        [sys.executable, "-c", PRODUCER, channel, str(BATCH)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def order(word: str, answer: str | None) -> None:
        proc.stdin.write(word + "\n")
        proc.stdin.flush()
        if answer is not None:
            assert proc.stdout.readline().strip() == answer, proc.stderr.read()

    try:
        assert proc.stdout.readline().strip() == "CREATED", proc.stderr.read()
        c = open_consumer(channel, start="oldest")
        assert c.max_held == BATCH
        order("go", "BATCH")
        samples = [c.recv(timeout=5) for _ in range(BATCH)]
        batch = [np.asarray(s) for s in samples]  # zero-copy views of the held buffers
        assert [s.seq for s in samples] == list(range(BATCH))
        for n, a in enumerate(batch):
            assert a.shape == SHAPE and a.dtype == np.uint8
            assert file_offset(channel, array_address(a)) is not None, "not a view of the segment"
            assert np.array_equal(a, frame(n))
        with pytest.raises(bips.HeldLimit, match=f"holds {BATCH} samples.*max_held = {BATCH}"):
            c.recv(timeout=1)
        # The producer publishes 1000 more on the 8 buffers left while we hold the batch.
        order("more", "MORE")
        stacked = np.stack(batch)  # what an inference step would consume
        for n in range(BATCH):
            assert np.array_equal(stacked[n], frame(n)), f"held frame {n} was rewritten"
        del batch, stacked, a  # no array may outlive its sample
        for s in samples:
            s.release()
        del samples
        # Released: the consumer receives again, the newest frames, intact.
        s = c.recv(timeout=5)
        assert s.seq > BATCH and s.lagged > 0
        assert np.array_equal(np.asarray(s), frame(s.seq))
        s.release()
        c.close()
        order("quit", None)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_max_held_out_of_range_is_invalid_options(channel):
    assert (bips.MAX_HELD, bips.MAX_HELD_LIMIT) == (8, 64)
    for bad in (0, 65):
        with pytest.raises(bips.InvalidOptions, match="max_held"):
            bips.Producer(channel, 2, 64, max_held=bad)
    with bips.Producer(channel, 2, 64) as p, bips.Consumer(channel) as c:
        assert p.max_held == c.max_held == bips.MAX_HELD
