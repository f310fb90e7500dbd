"""Shared helpers of the bips Python tests.

Every test gets a unique channel name (``channel`` fixture) and fails if it
leaves ``/dev/shm/bips.<name>`` behind. Rust example binaries are looked up
in ``target/release/examples`` (``cargo build --release -p bips --examples``),
or in ``$BIPS_EXAMPLES_DIR``.
"""

from __future__ import annotations

import gc
import os
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

import bips

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES_DIR = Path(os.environ.get("BIPS_EXAMPLES_DIR", ROOT / "target" / "release" / "examples"))
SHM = Path("/dev/shm")

# The frames of std-shim/examples/producer.rs.
WIDTH, HEIGHT = 640, 480


def shm_path(name: str) -> Path:
    return SHM / f"bips.{name}"


def example_binary(name: str) -> Path:
    path = EXAMPLES_DIR / name
    if not path.is_file():
        pytest.fail(
            f"{path} is missing: build it with `cargo build --release -p bips --examples` "
            "(scripts/test-python.sh does)"
        )
    return path


@pytest.fixture
def channel(request) -> str:
    """A channel name no other test uses; the test must leave no segment behind."""
    name = f"pytest-{os.getpid()}-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"
    name = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in name)
    yield name
    gc.collect()
    path = shm_path(name)
    if path.exists():
        path.unlink()
        pytest.fail(f"{path} was left behind")


def shm_ranges(name: str) -> list[tuple[int, int, int]]:
    """(start, end, file offset) of this process's mappings of the channel's segment."""
    path = str(shm_path(name))
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].strip() in (path, f"{path} (deleted)"):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                ranges.append((start, end, int(fields[2], 16)))
    return ranges


def file_offset(name: str, address: int) -> int | None:
    """Offset in /dev/shm/bips.<name> of the byte at ``address``, or None if unmapped."""
    for start, end, offset in shm_ranges(name):
        if start <= address < end:
            return address - start + offset
    return None


def array_address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def expected_frame(n: int) -> np.ndarray:
    """Frame ``n`` of the Rust example producer: pixel (x, y) = [x + n, y, n] (mod 256)."""
    x = np.arange(WIDTH, dtype=np.uint32)
    y = np.arange(HEIGHT, dtype=np.uint32)
    frame = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    frame[:, :, 0] = ((x + n) % 256).astype(np.uint8)[None, :]
    frame[:, :, 1] = (y % 256).astype(np.uint8)[:, None]
    frame[:, :, 2] = n % 256
    return frame


def open_consumer(name: str, timeout: float = 10.0, **kwargs) -> bips.Consumer:
    """Opens ``name``, retrying while its producer (another process) starts."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return bips.Consumer(name, **kwargs)
        except (bips.NotFound, bips.Disconnected, bips.LayoutMismatch):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def wait_until(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


# The cp38-abi3 wheel has no buffer protocol (the stable ABI before 3.11 has
# none): memoryview(sample), bytes(sample), np.frombuffer(buf) raise TypeError
# there. Tests of those spellings run on the cp311-abi3 wheel (and maturin
# develop builds); test_no_buffer_protocol.py covers the other wheel's routes.
needs_buffer_protocol = pytest.mark.skipif(
    not bips.HAS_BUFFER_PROTOCOL,
    reason="this wheel (cp38-abi3) has no buffer protocol: memoryview/bytes/np.frombuffer of bips objects",
)
