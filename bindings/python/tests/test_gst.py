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
import time
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
            assert info.descriptor.strides == (1920 * 4, 4, 1)
            assert info.descriptor.format == "RGBA"
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


def test_gray8_is_two_dimensional(gst_env, channel):
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
    assert all(f.shape == (16, 64) and (f == 235).all() for f in got)


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
    fields = dict(pts=5, dts=2**64 - 1, duration=7, offset=0, offset_end=1, flags=0, base_time=100, running_time=5)
    fields.update(kw)
    head = struct.pack(
        "<4sHHQQQQQIIQQ",
        b"BGST",
        2,
        72,
        fields["pts"],
        fields["dts"],
        fields["duration"],
        fields["offset"],
        fields["offset_end"],
        fields["flags"],
        len(caps),
        fields["base_time"],
        fields["running_time"],
    )
    return (head + caps).ljust(1024, b"\0")


def test_parse_meta_reads_the_layout():
    caps = b'video/x-raw, format=(string)BGRx, width=(int)640, height=(int)480, colorimetry=(string)"bt601"'
    info = bips.gst.parse_meta(_meta(caps))
    assert (info.media_type, info.format, info.width, info.height) == ("video/x-raw", "BGRx", 640, 480)
    assert info.fields["colorimetry"] == "bt601"
    assert (info.pts, info.dts, info.duration, info.clock_time) == (5, None, 7, 105)
    assert info.descriptor is None  # the header alone: geometry is in the sample's descriptor


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
    bad[4:6] = struct.pack("<H", 1)  # the old layout (plane strides at 72..112, caps at 128)
    with pytest.raises(bips.gst.MetaError, match="version"):
        bips.gst.parse_meta(bytes(bad))
    with pytest.raises(bips.gst.MetaError, match="NUL"):
        bips.gst.parse_meta(_meta(b"video/x-raw\0, width=(int)1"))


# --------------------------------------------------------------- plain NumPy
# Issue 16: a consumer that knows nothing of GStreamer or bips.gst gets the
# shaped array from the frame descriptor bipssink writes (np.asarray).


def first_frame(env: dict[str, str], channel: str, pipeline: str):
    """Runs ``{pipeline} ! bipssink channel=<channel>`` and returns
    ``(np.asarray(sample).copy(), descriptor)`` of its first frame, read by a
    plain ``bips.Consumer`` that requires the ``video/x-raw`` v1 type."""
    proc = launch(env, f"{pipeline} ! bipssink channel={channel} wait-for-consumers=1 sync=false")
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                consumer = bips.Consumer(channel, require_type=("video/x-raw", 1))
                break
            except (bips.NotFound, bips.Disconnected, bips.LayoutMismatch):
                assert time.monotonic() < deadline, f"channel {channel} never appeared"
                time.sleep(0.01)
        with consumer:
            assert consumer.payload_type == ("video/x-raw", 1)
            s = consumer.recv(timeout=20)
            a = np.asarray(s)
            got = (a.copy(), a.shape, a.strides, a.dtype, s.descriptor)
            del a, s
            while True:  # drain: the pipeline ends when it may
                try:
                    consumer.recv(timeout=20)
                except bips.Disconnected:
                    break
    except BaseException:
        # The pipeline may wait for a consumer forever: do not wait for it.
        proc.kill()
        proc.communicate()
        raise
    finish(proc)
    return got


def test_numpy_rgba_is_h_w_4(gst_env, channel):
    a, shape, strides, dtype, d = first_frame(
        gst_env, channel, f"videotestsrc num-buffers=2 {SOLID} ! video/x-raw,format=RGBA,width=33,height=7"
    )
    assert (shape, strides, dtype) == ((7, 33, 4), (132, 4, 1), np.uint8)
    assert (a == np.array([0x10, 0x20, 0x30, 0xFF], np.uint8)).all()
    assert d.format == "RGBA" and d.planes == []


def test_numpy_gray16_le_is_h_w_uint16(gst_env, channel):
    a, shape, strides, dtype, d = first_frame(
        gst_env, channel, "videotestsrc num-buffers=2 pattern=white ! video/x-raw,format=GRAY16_LE,width=63,height=5"
    )
    # 63 pixels = 126 bytes, rows padded to 128.
    assert (shape, strides, dtype) == ((5, 63), (128, 2), np.dtype("<u2"))
    assert (a == 235 * 257).all()  # GRAY8 white (235) widened to 16 bits
    assert d.format == "GRAY16_LE"


def test_numpy_padded_rgb_rows_are_strides(gst_env, channel):
    a, shape, strides, dtype, _ = first_frame(
        gst_env, channel, f"videotestsrc num-buffers=2 {SOLID} ! video/x-raw,format=RGB,width=321,height=10"
    )
    # 321 RGB pixels = 963 bytes, rows padded to 964: strides, not a reshape.
    assert (shape, strides, dtype) == ((10, 321, 3), (964, 3, 1), np.uint8)
    assert (a == np.array([0x10, 0x20, 0x30], np.uint8)).all()


def test_numpy_nv12_is_the_luma_plane_plus_a_plane_table(gst_env, channel):
    a, shape, strides, dtype, d = first_frame(
        gst_env, channel, "videotestsrc num-buffers=2 pattern=white ! video/x-raw,format=NV12,width=66,height=50"
    )
    assert (shape, strides, dtype) == ((50, 66), (68, 1), np.uint8)
    assert (a == 235).all()
    assert d.format == "NV12"
    assert d.planes == [(0, 68, 50, 66), (3400, 68, 25, 66)]


def test_frames_gives_gray16_be_as_big_endian_uint16(gst_env, channel):
    proc = launch(
        gst_env,
        f"videotestsrc num-buffers=2 pattern=white ! video/x-raw,format=GRAY16_BE,width=63,height=5 "
        f"! bipssink channel={channel} wait-for-consumers=1 sync=false",
    )
    try:
        got = [(f.copy(), info.descriptor.shape) for f, info in bips.gst.frames(channel, timeout=20, with_info=True)]
    finally:
        finish(proc)
    assert len(got) == 2
    for f, desc_shape in got:
        assert desc_shape == (5, 63, 2)  # the descriptor: bytes, most significant first
        assert f.shape == (5, 63) and f.dtype == np.dtype(">u2") and (f == 235 * 257).all()
