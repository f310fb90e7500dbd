"""Real processes: Rust producer -> Python consumer, Python producer -> Rust
consumer, Python -> Python, and the example programs."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

import bips

from conftest import (
    needs_buffer_protocol,
    HEIGHT,
    ROOT,
    WIDTH,
    example_binary,
    expected_frame,
    open_consumer,
    shm_path,
    wait_until,
)

HERE = Path(__file__).resolve().parent


def test_rust_producer_to_python_consumer(channel):
    frames = 60
    proc = subprocess.Popen(
        [example_binary("producer"), channel, str(frames), "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        c = open_consumer(channel, start="oldest")
        seqs = []
        assert c.payload_type == ("image/rgb8", 1)
        for s in c:  # until the producer exits
            # The channel's fixed descriptor shapes every sample: no metadata convention.
            frame = np.asarray(s)
            assert (frame.shape, frame.dtype, len(s)) == ((HEIGHT, WIDTH, 3), np.uint8, WIDTH * HEIGHT * 3)
            assert s.descriptor.format == "RGB"
            assert np.array_equal(frame, expected_frame(s.seq)), f"frame #{s.seq} differs"
            seqs.append(s.seq)
        c.close()
    finally:
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    # Every frame from the first one we saw, in order, none missing (Block).
    assert seqs == list(range(seqs[0], frames)), seqs
    assert len(seqs) >= 10


def test_python_producer_to_rust_consumer(channel):
    frames = 90
    with bips.Producer(channel, 4, WIDTH * HEIGHT * 3) as p:
        proc = subprocess.Popen(
            [example_binary("consumer"), channel],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_until(lambda: p.consumer_count == 1, what="the Rust consumer to attach")
            for n in range(frames):
                # One step: the frame is copied in and published with its descriptor.
                assert p.send(expected_frame(n), format="RGB", timeout=10) == n
        finally:
            p.close()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    # "#N uint8 [480, 640, 3] RGB, 921600 bytes, first pixel [N, 0, N]": the
    # Rust consumer reads what the Python producer's descriptor says.
    lines = re.findall(
        r"#(\d+) uint8 \[(\d+), (\d+), 3\] RGB, (\d+) bytes, first pixel \[(\d+), (\d+), (\d+)\]", out
    )
    assert [int(line[0]) for line in lines] == [0, 30, 60], out
    for seq, h, w, size, r, g, b in lines:
        n = int(seq)
        assert (int(w), int(h), int(size)) == (WIDTH, HEIGHT, WIDTH * HEIGHT * 3)
        assert (int(r), int(g), int(b)) == (n % 256, 0, n % 256)
    assert f"producer gone after {frames} frames" in out, out


@needs_buffer_protocol
def test_python_producer_to_python_consumer_checksums(channel):
    frames, size = 200, 64 * 1024
    rng = np.random.default_rng(7)
    with bips.Producer(channel, 4, size) as p:
        proc = subprocess.Popen(
            [sys.executable, HERE / "checksum_consumer.py", channel],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_until(lambda: p.consumer_count == 1, what="the consumer process to attach")
            sent = []
            for n in range(frames):
                length = int(rng.integers(1, size + 1))
                with p.loan(timeout=10) as buf:
                    view = np.frombuffer(buf, np.uint8)
                    view[:length] = rng.integers(0, 256, length, dtype=np.uint8)
                    sent.append((n, length, zlib.crc32(view[:length])))
                    del view
                    buf.publish(length=length)
        finally:
            p.close()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[0] == "attached" and lines[-1] == f"done {frames}", out[-500:]
    got = [tuple(int(x) for x in line.split()) for line in lines[1:-1]]
    assert got == sent  # every sample, in order, byte for byte


def test_killed_rust_producer_disconnects_python_consumer(channel):
    proc = subprocess.Popen(
        [example_binary("producer"), channel, "100000", "100"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        c = open_consumer(channel)
        c.recv(timeout=5).release()
        proc.kill()  # SIGKILL: no chance to close the channel
        proc.wait(timeout=10)
        t0 = time.monotonic()
        with pytest.raises(bips.Disconnected):
            while True:  # drain what is left, then Disconnected
                c.recv(timeout=5).release()
        assert time.monotonic() - t0 < 2
        c.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shm_path(channel).unlink(missing_ok=True)  # the dead producer could not


def run_example(script: str, channel: str, frames: int = 30) -> subprocess.CompletedProcess:
    """Runs an example consumer against a Python producer of the Rust
    example's frames, publishing once the example has attached."""
    with bips.Producer(channel, 4, WIDTH * HEIGHT * 3) as p:
        example = subprocess.Popen(
            [sys.executable, ROOT / "examples" / "python" / script, channel, "--every", "10"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_until(
                lambda: p.consumer_count == 1 or example.poll() is not None,
                timeout=60,
                what=f"{script} to attach",
            )
            if example.poll() is None:
                for n in range(frames):
                    p.send(expected_frame(n), format="RGB", timeout=30)
        finally:
            p.close()
            out, err = example.communicate(timeout=60)
    assert example.returncode == 0, f"stdout: {out}\nstderr: {err}"
    return subprocess.CompletedProcess(example.args, example.returncode, out, err)


def test_example_consumer_numpy(channel):
    r = run_example("consumer_numpy.py", channel)
    assert "attached" in r.stdout
    for n in (0, 10, 20):  # it prints every 10th frame's mean colour
        mean = expected_frame(n).reshape(-1, 3).mean(axis=0)
        line = f"#{n} 480x640x3 mean RGB ({mean[0]:.1f}, {mean[1]:.1f}, {mean[2]:.1f})"
        assert line in r.stdout, r.stdout
    assert "producer gone after 30 frames (0 lost)" in r.stdout, r.stdout


def test_example_consumer_torch(channel):
    r = run_example("consumer_torch.py", channel)
    try:
        import torch  # noqa: F401
    except ImportError:
        assert "PyTorch is not installed" in r.stdout, r.stdout
    else:
        assert re.search(r"#0 tensor \(3, 480, 640\) torch.uint8", r.stdout), r.stdout
        assert "producer gone after 30 frames" in r.stdout, r.stdout


def test_memfd_channel_from_python_to_a_python_consumer_process(channel, tmp_path):
    """backend="memfd": a sealed memfd served from a socket directory; the
    consumer finds it by name (no /dev/shm object) and gets shaped frames."""
    frames = 20
    with bips.Producer(channel, 4, WIDTH * HEIGHT * 3, backend="memfd", socket_dir=tmp_path) as p:
        assert not shm_path(channel).exists()
        assert (tmp_path / f"bips.{channel}.sock").exists()
        code = (
            "import sys, numpy as np, bips\n"
            "c = bips.Consumer(sys.argv[1], start='oldest', socket_dir=sys.argv[2])\n"
            "print('READY', flush=True)\n"
            "n = 0\n"
            "for s in c:\n"
            "    a = np.asarray(s)\n"
            "    assert a.shape == (480, 640, 3) and int(a[0, 0, 2]) == s.seq % 256, (a.shape, s.seq)\n"
            "    n += 1\n"
            "print('GOT', n, flush=True)\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code, channel, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_until(lambda: p.consumer_count == 1 or proc.poll() is not None, what="the consumer to attach")
            for n in range(frames):
                p.send(expected_frame(n), format="RGB", timeout=10)
        finally:
            p.close()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"GOT {frames}" in out, out
    assert not (tmp_path / f"bips.{channel}.sock").exists()
