"""read_bridge.py against the real thing: bips' example producer (640x480 RGB,
typed channel image/rgb8 v1) -> ``bips bridge publish --listen
tcp/127.0.0.1:PORT`` -> this Python process (eclipse-zenoh, connected to
127.0.0.1, scouting off) decodes N samples: header, descriptor, NumPy array,
pixel contents. Run by the ``bridge`` stage of scripts/test.sh:

    cargo build --release -p bips-cli --features bridge
    cargo build --release -p bips --example producer
    .venv/bin/python -m pytest examples/zenoh

BIPS_BIN and BIPS_PRODUCER override the binaries' paths.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import read_bridge  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BIPS = Path(os.environ.get("BIPS_BIN", ROOT / "target/release/bips"))
PRODUCER = Path(os.environ.get("BIPS_PRODUCER", ROOT / "target/release/examples/producer"))
N = 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(p: subprocess.Popen, sig=signal.SIGINT) -> str:
    if p.poll() is None:
        p.send_signal(sig)
    try:
        _, err = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
    return err or ""


def test_wheel_speaks_the_bridges_zenoh_major_version():
    # bips-zenoh builds on zenoh-rs 1.10 (bridge/Cargo.toml); Zenoh 1.x
    # releases share the 1.0 wire protocol. A 2.x wheel would need checking.
    v = metadata.version("eclipse-zenoh")
    assert v.split(".")[0] == "1", f"eclipse-zenoh {v}: the bridge speaks Zenoh 1.x"


def test_header_decoding_refuses_what_it_cannot_read():
    with pytest.raises(read_bridge.WireError, match="no bips header"):
        read_bridge.parse_header(b"hello world")
    h = bytearray(b"bipz" + bytes([2, 0, 0, 0]) + bytes(36))
    with pytest.raises(read_bridge.WireError, match="version 2"):
        read_bridge.parse_header(bytes(h))
    h[4] = 1
    h[40:44] = (1000).to_bytes(4, "little")
    with pytest.raises(read_bridge.WireError, match="metadata past the end"):
        read_bridge.parse_header(bytes(h))


def test_python_reads_what_the_publishing_bridge_sends():
    for exe in (BIPS, PRODUCER):
        assert exe.exists(), f"{exe} missing: build it first (see this file's docstring)"
    ch = f"pyzenoh-{os.getpid()}"
    key = f"bips-test/{os.getpid()}/py"
    ep = f"tcp/127.0.0.1:{free_port()}"
    producer = subprocess.Popen(
        [str(PRODUCER), ch, "100000", "100"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    bridge = subprocess.Popen(
        [str(BIPS), "bridge", "publish", ch, "--key", key, "--listen", ep],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen = []
        with read_bridge.Reader(key, connect=[ep]) as r:
            shift = None
            while len(seen) < N:
                h, payload = r.recv(timeout=30)
                assert h.payload_type == ("image/rgb8", 1)
                d = h.descriptor
                assert d is not None, "no descriptor in the header"
                assert (d.shape, d.strides, d.format) == ((480, 640, 3), (1920, 3, 1), "RGB")
                a = read_bridge.to_array(payload, d)
                frame = read_bridge.check_example_frame(h, a)
                s = (h.seq - frame) % 256
                assert shift in (None, s), f"seq {h.seq} carries frame {frame}"
                shift = s
                assert h.lagged == 0
                now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                # Same host, same clock: stamped by the producer just before.
                assert 0 < now - h.timestamp_ns < 30e9
                seen.append((h.stream, h.seq))
            assert r.dropped_here == 0
        streams = {s for s, _ in seen}
        seqs = [q for _, q in seen]
        assert len(streams) == 1
        # Block channel, lossless: consecutive sequence numbers.
        assert seqs == list(range(seqs[0], seqs[0] + N)), seqs
    finally:
        berr = stop(bridge)
        perr = stop(producer)
    assert bridge.returncode == -signal.SIGINT, berr
    assert "forwarded=" in berr, berr
    assert not Path(f"/dev/shm/{ch}").exists() and not list(Path("/dev/shm").glob(f"*{ch}*")), perr
