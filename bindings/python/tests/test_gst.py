"""bips.gst: frames of a real GStreamer pipeline (gst-launch-1.0 ... ! bipssink)
read as NumPy arrays in this process.

Skipped when GStreamer's command-line tools or the built plugin
(libgstbips.so) are missing, unless BIPS_GST_REQUIRE=1 (scripts/test-gst.sh
sets it), which turns those skips into failures. The metadata parser tests
need neither.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

import bips
import bips.gst

from conftest import ROOT

REQUIRE = os.environ.get("BIPS_GST_REQUIRE") == "1"


def _plugin_dir() -> Path | None:
    candidates = [os.environ.get("BIPS_GST_PLUGIN_DIR"), ROOT / "target" / "release", ROOT / "target" / "debug"]
    for c in candidates:
        if c and (Path(c) / "libgstbips.so").is_file():
            return Path(c)
    return None


def _gst_missing() -> str | None:
    if shutil.which("gst-launch-1.0") is None:
        return "GStreamer is not installed (no gst-launch-1.0)"
    if _plugin_dir() is None:
        return "libgstbips.so is not built (cargo build --release -p bips-gst)"
    return None


@pytest.fixture
def gst_env() -> dict[str, str]:
    why = _gst_missing()
    if why:
        if REQUIRE:
            pytest.fail(why)
        pytest.skip(why)
    env = dict(os.environ)
    env["GST_PLUGIN_PATH"] = str(_plugin_dir())
    return env


def launch(env: dict[str, str], pipeline: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["gst-launch-1.0", "-q", *pipeline.split()],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen) -> None:
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"gst-launch-1.0 did not finish:\n{out}")
    assert proc.returncode == 0, f"gst-launch-1.0 exit {proc.returncode}:\n{out}"


# foreground-color is ARGB: A=ff R=10 G=20 B=30.
SOLID = "pattern=solid-color foreground-color=0xff102030"


def test_rgba_1080p_frames_from_videotestsrc(gst_env, channel):
    n = 12
    proc = launch(
        gst_env,
        f"videotestsrc num-buffers={n} {SOLID} ! video/x-raw,format=RGBA,width=1920,height=1080,framerate=25/1 "
        f"! bipssink channel={channel} wait-for-consumers=1 sync=false",
    )
    count = 0
    try:
        for frame, info in bips.gst.frames(channel, timeout=20, with_info=True):
            assert frame.shape == (1080, 1920, 4)
            assert frame.dtype == np.uint8
            assert not frame.flags.writeable
            assert (frame == np.array([0x10, 0x20, 0x30, 0xFF], np.uint8)).all()
            assert (info.format, info.width, info.height) == ("RGBA", 1920, 1080)
            assert info.pts == count * 40_000_000
            assert info.duration == 40_000_000
            assert info.plane_strides == (1920 * 4,)
            assert info.seq == count
            count += 1
    finally:
        finish(proc)
    assert count == n


def test_padded_rgb_rows_are_stride_aware(gst_env, channel):
    # 322 RGB pixels = 966 bytes, rows padded to 968: a view, not a reshape.
    proc = launch(
        gst_env,
        f"videotestsrc num-buffers=5 {SOLID} ! video/x-raw,format=RGB,width=322,height=10 "
        f"! bipssink channel={channel} wait-for-consumers=1 sync=false",
    )
    count = 0
    try:
        for frame in bips.gst.frames(channel, timeout=20):
            assert frame.shape == (10, 322, 3)
            assert frame.strides == (968, 3, 1)
            assert (frame == np.array([0x10, 0x20, 0x30], np.uint8)).all()
            count += 1
    finally:
        finish(proc)
    assert count == 5


def test_gray8_has_one_channel(gst_env, channel):
    proc = launch(
        gst_env,
        f"videotestsrc num-buffers=3 pattern=white ! video/x-raw,format=GRAY8,width=64,height=16 "
        f"! bipssink channel={channel} wait-for-consumers=1 sync=false",
    )
    try:
        got = [f.copy() for f in bips.gst.frames(channel, timeout=20)]
    finally:
        finish(proc)
    assert len(got) == 3
    assert all(f.shape == (16, 64, 1) and (f == 235).all() for f in got)


def test_kept_frames_stay_intact_while_the_stream_moves_on(gst_env, channel):
    # The ball moves: frames differ. Keeping a view holds its sample, so the
    # producer never rewrites it; the copy taken at once must still match.
    # 8 buffers: keeping 4 leaves the (lossless) producer room to go on.
    proc = launch(
        gst_env,
        f"videotestsrc num-buffers=20 pattern=ball ! video/x-raw,format=RGBA,width=64,height=48 "
        f"! bipssink channel={channel} buffers=8 wait-for-consumers=1 sync=false",
    )
    kept = []
    try:
        for i, frame in enumerate(bips.gst.frames(channel, timeout=20)):
            if i % 5 == 0 and len(kept) < bips.MAX_HELD - 2:
                kept.append((frame, frame.copy()))
    finally:
        finish(proc)
    assert len(kept) == 4
    for view, snapshot in kept:
        assert np.array_equal(view, snapshot)
    del kept


def test_timeout_when_no_channel_appears(channel):
    with pytest.raises(bips.Timeout):
        next(bips.gst.frames(channel, timeout=0.2))


def _meta(caps: bytes, **kw) -> bytes:
    fields = dict(
        pts=5, dts=2**64 - 1, duration=7, offset=0, offset_end=1, flags=0, base_time=100, running_time=5, n_planes=1
    )
    fields.update(kw)
    head = struct.pack(
        "<4sHHQQQQQIIQQII4I4i16x",
        b"BGST",
        1,
        128,
        fields["pts"],
        fields["dts"],
        fields["duration"],
        fields["offset"],
        fields["offset_end"],
        fields["flags"],
        len(caps),
        fields["base_time"],
        fields["running_time"],
        fields["n_planes"],
        0,
        0,
        0,
        0,
        0,
        256,
        0,
        0,
        0,
    )
    return (head + caps).ljust(1024, b"\0")


def test_parse_meta_reads_the_layout():
    caps = b'video/x-raw, format=(string)BGRx, width=(int)640, height=(int)480, colorimetry=(string)"bt601"'
    info = bips.gst.parse_meta(_meta(caps))
    assert (info.media_type, info.format, info.width, info.height) == ("video/x-raw", "BGRx", 640, 480)
    assert info.fields["colorimetry"] == "bt601"
    assert (info.pts, info.dts, info.duration, info.clock_time) == (5, None, 7, 105)
    assert info.plane_offsets == (0,) and info.plane_strides == (256,)


def test_parse_meta_refuses_foreign_or_damaged_metadata():
    with pytest.raises(bips.gst.MetaError, match="magic"):
        bips.gst.parse_meta(bytes(1024))
    with pytest.raises(bips.gst.MetaError, match="shorter"):
        bips.gst.parse_meta(b"BGST")
    bad = bytearray(_meta(b"video/x-raw"))
    bad[52:56] = struct.pack("<I", 10_000)  # caps_len past the end
    with pytest.raises(bips.gst.MetaError, match="overruns"):
        bips.gst.parse_meta(bytes(bad))
    bad = bytearray(_meta(b"video/x-raw"))
    bad[4:6] = struct.pack("<H", 2)
    with pytest.raises(bips.gst.MetaError, match="version"):
        bips.gst.parse_meta(bytes(bad))
    with pytest.raises(bips.gst.MetaError, match="NUL"):
        bips.gst.parse_meta(_meta(b"video/x-raw\0, width=(int)1"))
