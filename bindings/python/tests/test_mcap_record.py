"""`bips record` read from Python: a Python producer's frames recorded by the
`bips` command into an MCAP file, read back with the `mcap` package and
decoded with `protobuf` from the file's own schema (as Foxglove does).

Needs the `bips` command (`cargo build --release -p bips-cli`, which
scripts/test-python.sh does; or $BIPS_CLI) and the `mcap` and `protobuf`
packages (scripts/setup.sh --python installs them)."""

from __future__ import annotations

import gc
import importlib
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import bips

ROOT = Path(__file__).resolve().parents[3]
READER = ROOT / "recorder" / "tests" / "read_mcap.py"
N = 50


def need(module: str):
    """`module`, or a skip with the reason outside the repository's .venv (the
    wheels stage's fresh venvs have only numpy and pytest); in .venv, where
    scripts/setup.sh --python installs it, its absence fails the test."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if Path(sys.prefix).resolve() == (ROOT / ".venv").resolve():
            pytest.fail(f"{module} is missing from .venv: run `bash scripts/setup.sh --python`")
        pytest.skip(f"{module} is not installed in {sys.prefix}; the python stage (.venv) runs this test")


def bips_cli() -> Path:
    path = Path(os.environ.get("BIPS_CLI", ROOT / "target" / "release" / "bips"))
    if not path.is_file():
        pytest.fail(f"{path} is missing: build it with `cargo build --release -p bips-cli` (scripts/test-python.sh does)")
    return path


def frame(i: int) -> np.ndarray:
    return ((np.arange(32 * 48 * 3, dtype=np.uint32) * (i + 1)) % 251).astype(np.uint8).reshape(32, 48, 3)


def test_bips_record_file_reads_with_mcap_and_protobuf(channel, tmp_path):
    need("mcap")
    need("google.protobuf")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from mcap.reader import make_reader

    out = tmp_path / "frames.mcap"
    p = bips.Producer(channel, 4, 32 * 48 * 3, meta_size=16)
    rec = subprocess.Popen(
        [str(bips_cli()), "record", channel, "-o", str(out), "--count", str(N)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while p.consumer_count < 1:
            assert rec.poll() is None, rec.stderr.read()
            assert time.monotonic() < deadline, "the recorder did not attach"
            time.sleep(0.005)
        for i in range(N):
            p.send(frame(i), format="RGB", meta=struct.pack("<QQ", i, 0xB1B5), timeout=20)
        _, err = rec.communicate(timeout=30)
        assert rec.returncode == 0, err
        assert f"samples={N} lagged=0" in err, err
    finally:
        if rec.poll() is None:
            rec.kill()
        p.close()
        del p
        gc.collect()

    # The structural checks (summary, schema, channel, log times, metadata).
    r = subprocess.run([sys.executable, str(READER), str(out), str(N)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"messages={N} topic={channel} schema=bips.Sample encoding=protobuf ordered=1" in r.stdout, r.stdout

    # Every payload, metadata and descriptor, decoded with the file's schema.
    with open(out, "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        (ch,) = summary.channels.values()
        assert ch.topic == channel
        assert ch.metadata["bips.buffers"] == "4" and ch.metadata["bips.meta_size"] == "16"
        pool = descriptor_pool.DescriptorPool()
        for fd in descriptor_pb2.FileDescriptorSet.FromString(summary.schemas[ch.schema_id].data).file:
            pool.Add(fd)
        cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("bips.Sample"))
        got = [cls.FromString(m.data) for _, _, m in reader.iter_messages()]
    assert [s.seq for s in got] == list(range(N))
    for i, s in enumerate(got):
        assert s.payload == frame(i).tobytes(), f"payload of sample {i}"
        assert s.meta == struct.pack("<QQ", i, 0xB1B5), f"metadata of sample {i}"
        assert len(s.descriptor) == 320
        assert s.descriptor_text.startswith("uint8 [32, 48, 3]") and "RGB" in s.descriptor_text, s.descriptor_text
        assert s.lagged == 0 and s.timestamp_ns > 0
