"""The BIPS API's spelling (bips/_seed.py): the seed's example run as written,
producer and consumer in two processes, then what its arguments mean."""

from __future__ import annotations

import subprocess
import sys

import pytest

import bips

from conftest import needs_buffer_protocol

# The seed's example, as written for BIPS. Only the channel name is replaced
# by a unique one (still with its leading '/'), so that parallel runs do not
# collide. The lines marked "test:" are the harness, not the example.
SEED_PRODUCER = """
import sys, time
import numpy as np
import bips

producer = bips.Producer(bips.Backends.kShm, '/example', 10, 1024, True)
deadline = time.monotonic() + 30                                      # test:
while producer.consumer_count == 0 and time.monotonic() < deadline:  # test:
    time.sleep(0.005)                                                 # test:
for n in range(FRAMES):
    buffer = producer.Pull()                     # a free buffer to fill
    np.frombuffer(buffer, np.uint8)[:] = n % 256
    producer.Push(buffer)                        # publish it
producer.close()
print("sent", FRAMES)
"""

SEED_CONSUMER = """
import sys, time
import numpy as np
import bips

deadline = time.monotonic() + 30                                      # test:
while True:                                                           # test:
    try:                                                              # test:
        consumer = bips.Consumer(bips.Backends.kShm, '/example', 10, 1024, True)
        break                                                         # test:
    except bips.NotFound:                                             # test:
        if time.monotonic() > deadline:                               # test:
            raise                                                     # test:
        time.sleep(0.005)                                             # test:
print("attached", consumer.name, consumer.buffers, consumer.buffer_size, flush=True)
while True:
    try:
        buffer = consumer.Pull()                 # the next buffer to read
    except bips.Disconnected:                    # the producer left, all read
        break
    data = np.frombuffer(buffer, np.uint8)
    print(buffer.seq, len(data), int(data.min()), int(data.max()))
    del data                                     # no view may outlive Push
    consumer.Push(buffer)                        # give it back
print("done")
"""

FRAMES = 50


def seed_script(text: str, channel: str) -> str:
    assert "'/example'" in text
    return text.replace("'/example'", repr("/" + channel)).replace("FRAMES", str(FRAMES))


def without_buffer_protocol(text: str) -> str:
    """The one change the seed's example needs on the cp38-abi3 wheel (no
    buffer protocol): np.asarray(buffer) for np.frombuffer(buffer, np.uint8)."""
    assert "np.frombuffer(buffer, np.uint8)" in text
    return text.replace("np.frombuffer(buffer, np.uint8)", "np.asarray(buffer)")


@pytest.mark.parametrize(
    "spelling",
    [
        pytest.param("verbatim", marks=needs_buffer_protocol),
        "asarray",  # every wheel
    ],
)
def test_seed_example_across_processes(channel, spelling):
    fix = without_buffer_protocol if spelling == "asarray" else (lambda text: text)
    consumer = subprocess.Popen(
        [sys.executable, "-c", seed_script(fix(SEED_CONSUMER), channel)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    producer = subprocess.Popen(
        [sys.executable, "-c", seed_script(fix(SEED_PRODUCER), channel)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        p_out, p_err = producer.communicate(timeout=60)
        c_out, c_err = consumer.communicate(timeout=60)
    finally:
        for proc in (producer, consumer):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert producer.returncode == 0, p_err
    assert consumer.returncode == 0, c_err
    assert p_out.split() == ["sent", str(FRAMES)]
    lines = c_out.splitlines()
    # The leading '/' was dropped: the channel is /dev/shm/bips.<channel>.
    assert lines[0] == f"attached {channel} 10 1024", c_out
    assert lines[-1] == "done", c_out
    # in_order=True: every buffer, in order, each filled with its number.
    want = [f"{n} 1024 {n % 256} {n % 256}" for n in range(FRAMES)]
    assert lines[1:-1] == want, c_out


def test_leading_slash_only_in_the_seed_spelling(channel):
    with bips.Producer(bips.Backends.kShm, "/" + channel, 2, 64, True) as p:
        assert p.name == channel
        assert isinstance(p, bips.Producer)
        with bips.Consumer(bips.Backends.kShm, "/" + channel, 2, 64, True) as c:
            assert c.name == channel and isinstance(c, bips.Consumer)
        # The real API keeps refusing the slash, with its message.
        with pytest.raises(bips.InvalidName, match="/"):
            bips.Consumer("/" + channel)
    with pytest.raises(bips.InvalidName):
        bips.Producer("/" + channel, 2, 64)


def test_in_order_is_the_channel_policy(channel):
    for in_order, policy in ((True, "block"), (False, "drop_oldest")):
        with bips.Producer(bips.Backends.kShm, channel, 2, 64, in_order) as p:
            with bips.Consumer(channel) as c:
                assert c.backpressure == policy
            # A latest-wins consumer reads either kind of channel.
            with bips.Consumer(bips.Backends.kShm, channel, 2, 64, False) as c:
                assert c.backpressure == policy
            assert p.consumer_count == 0


def test_consumer_checks_the_geometry_and_in_order(channel):
    with bips.Producer(bips.Backends.kShm, channel, 4, 1024, False) as p:
        with pytest.raises(bips.LayoutMismatch, match="4 buffers of 1024 bytes.*written for 10 buffers"):
            bips.Consumer(bips.Backends.kShm, channel, 10, 1024, False)
        with pytest.raises(bips.LayoutMismatch, match="written for 4 buffers of 2048 bytes"):
            bips.Consumer(bips.Backends.kShm, channel, 4, 2048, False)
        with pytest.raises(bips.LayoutMismatch, match="in_order=True"):
            bips.Consumer(bips.Backends.kShm, channel, 4, 1024, True)
        # A refused consumer does not stay attached.
        assert p.consumer_count == 0
        with bips.Consumer(bips.Backends.kShm, channel, 4, 1024, False) as c:
            assert (c.buffers, c.buffer_size) == (4, 1024)
            assert p.consumer_count == 1


@needs_buffer_protocol
def test_pull_push_and_options_pass_through(channel):
    with bips.Producer(bips.Backends.kShm, channel, 2, 16, True, meta_size=8) as p:
        assert p.meta_size == 8
        with bips.Consumer(bips.Backends.kShm, channel, 2, 16, True, start="oldest") as c:
            buf = p.Pull()
            assert isinstance(buf, bips.SampleMut) and len(buf) == 16
            memoryview(buf)[:3] = b"abc"
            assert p.Push(buf) == 0
            s = c.Pull(timeout=5)
            assert isinstance(s, bips.Sample) and bytes(s)[:3] == b"abc"
            c.Push(s)
            assert s.released


def test_only_the_shm_backend(channel):
    assert bips.Backends.kShm in bips.Backends and len(bips.Backends) == 1
    # Anything else is not the seed spelling: the real constructor answers.
    with pytest.raises(TypeError):
        bips.Producer(0, channel, 2, 16, True)
