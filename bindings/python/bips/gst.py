"""Frames from a GStreamer ``bipssink``, as NumPy arrays, with no copy.

A capture pipeline in one process (or container)::

    gst-launch-1.0 v4l2src ! videoconvert ! video/x-raw,format=RGBA ! bipssink channel=camera

and, in another, plain Python (GStreamer is *not* needed on this side)::

    import bips.gst

    for frame in bips.gst.frames("camera", timeout=5.0):
        print(frame.shape, frame.dtype)          # (1080, 1920, 4) uint8
        model(torch.from_numpy(frame))           # still no copy

Each array is ``np.asarray(sample)``: the shape, element type and strides
come from the frame descriptor ``bipssink`` writes beside every raw-video
sample (``Sample.descriptor``), so a plain ``bips.Consumer`` gets the same
array without this module: RGBA/BGRx/... ``(h, w, 4)`` uint8, RGB/BGR
``(h, w, 3)`` uint8 (padded rows as strides), GRAY8 ``(h, w)`` uint8,
GRAY16_LE ``(h, w)`` uint16; planar formats (I420, NV12, ...) give the luma
plane ``(h, w)`` and list every plane in ``descriptor.planes``. What this
module adds is the metadata header ``bipssink`` writes into each sample's
metadata (version 2, little-endian, see ``bindings/gst/src/meta.rs``,
parsed here with :mod:`struct`): the caps, PTS/DTS/duration, offsets, flags
and the sender's clock time (``with_info=True``); and GRAY16_BE as
big-endian ``(h, w)`` uint16 (the descriptor gives its bytes, ``(h, w, 2)``
uint8, since its element types are little-endian).

Lifetime rule: each array is a view of the shared buffer itself. The
producer never rewrites that buffer while the array (or any view made from
it) is alive; it gets the buffer back once the iteration has moved on *and*
the caller has dropped every reference to the array. Keep at most
``bips.MAX_HELD - 1`` (7) frames alive at once (more raises
``bips.HeldLimit``); ``frame.copy()`` keeps one for longer. Under
``backpressure=block`` a frame kept alive pauses the pipeline once the
channel's other buffers are used up.
"""

from __future__ import annotations

import re
import struct
import time
from dataclasses import dataclass, field
from typing import Iterator, Union

import numpy as np

from . import Consumer, Disconnected, LayoutMismatch, NotFound, Timeout

__all__ = [
    "FrameInfo",
    "MetaError",
    "frames",
    "parse_caps",
    "parse_meta",
]

MAGIC = b"BGST"
VERSION = 2
HEADER_LEN = 72
NONE = 2**64 - 1

# magic, version, header_len, pts, dts, duration, offset, offset_end, flags,
# caps_len, base_time, running_time; the caps string follows.
_HEADER = struct.Struct("<4sHHQQQQQIIQQ")
assert _HEADER.size == HEADER_LEN


class MetaError(ValueError):
    """The sample's metadata was not written by ``bipssink`` (or is damaged),
    or the sample is not a raw-video frame (it carries no frame descriptor)."""


@dataclass(frozen=True)
class FrameInfo:
    """What ``bipssink`` wrote next to a frame. Times are ns; ``None`` = unset."""

    caps: str
    media_type: str
    fields: dict[str, str] = field(repr=False)
    pts: int | None
    dts: int | None
    duration: int | None
    offset: int | None
    offset_end: int | None
    flags: int
    base_time: int | None
    running_time: int | None
    #: The frame descriptor (``bips.Descriptor``: shape, strides, format,
    #: planes); ``None`` from :func:`parse_meta` alone.
    descriptor: object = None
    seq: int = -1
    timestamp_ns: int = 0
    lagged: int = 0

    @property
    def format(self) -> str | None:
        return self.fields.get("format")

    @property
    def width(self) -> int | None:
        w = self.fields.get("width")
        return int(w) if w is not None else None

    @property
    def height(self) -> int | None:
        h = self.fields.get("height")
        return int(h) if h is not None else None

    @property
    def clock_time(self) -> int | None:
        """The sender's pipeline clock time of the frame (``base_time +
        running_time``): ``CLOCK_MONOTONIC`` ns with GStreamer's default
        system clock, comparable with :func:`bips.now_ns` on the same host."""
        if self.base_time is None or self.running_time is None:
            return None
        return self.base_time + self.running_time


_FIELD = re.compile(r'\s*([A-Za-z][\w.-]*)\s*=\s*(?:\([\w-]+\))?\s*("(?:[^"\\]|\\.)*"|[^,;]*)')


def parse_caps(caps: str) -> tuple[str, dict[str, str]]:
    """Splits a caps string (``gst_caps_to_string``) into its media type and
    ``{field: value}`` (values as strings, quotes and ``(type)`` removed).
    Only the first structure is read."""
    head, _, rest = caps.partition(",")
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        m = _FIELD.match(rest, pos)
        if not m:
            break
        value = m.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        fields[m.group(1)] = value
        pos = m.end()
        if pos < len(rest) and rest[pos] == ";":
            break
        pos += 1  # the comma
    return head.strip().split("(")[0].strip(), fields


def _opt(v: int) -> int | None:
    return None if v == NONE else v


def parse_meta(meta: Union[bytes, bytearray, memoryview]) -> FrameInfo:
    """Parses a sample's metadata area (``Sample.meta``); raises
    :class:`MetaError` when it is not a version-2 ``bipssink`` header. Every
    length read is checked against ``len(meta)``."""
    meta = bytes(meta)
    if len(meta) < HEADER_LEN:
        raise MetaError(f"metadata of {len(meta)} bytes is shorter than the {HEADER_LEN}-byte header")
    (
        magic,
        version,
        header_len,
        pts,
        dts,
        duration,
        offset,
        offset_end,
        flags,
        caps_len,
        base_time,
        running_time,
    ) = _HEADER.unpack_from(meta)
    if magic != MAGIC:
        raise MetaError("no BGST magic: the channel was not written by bipssink")
    if version != VERSION:
        raise MetaError(f"metadata layout version {version}, this module reads {VERSION}")
    start = max(header_len, HEADER_LEN)
    if start + caps_len > len(meta):
        raise MetaError(f"caps string of {caps_len} bytes overruns the {len(meta)}-byte metadata")
    try:
        caps = meta[start : start + caps_len].decode("utf-8")
    except UnicodeDecodeError as e:
        raise MetaError("caps string is not UTF-8") from e
    if "\0" in caps:
        raise MetaError("caps string holds a NUL")
    media_type, fields = parse_caps(caps)
    return FrameInfo(
        caps=caps,
        media_type=media_type,
        fields=fields,
        pts=_opt(pts),
        dts=_opt(dts),
        duration=_opt(duration),
        offset=_opt(offset),
        offset_end=_opt(offset_end),
        flags=flags,
        base_time=_opt(base_time),
        running_time=_opt(running_time),
    )


def _view(sample, info: FrameInfo) -> np.ndarray:
    """The array of a raw-video sample, as its frame descriptor says."""
    if sample.descriptor is None:
        raise MetaError(f"the sample carries no frame descriptor (not raw video?): {info.caps}")
    # np.asarray holds a buffer export of the sample while the array (or a
    # view of it) lives, which keeps the sample held.
    frame = np.asarray(sample)
    if sample.descriptor.format == "GRAY16_BE":
        frame = frame.view(">u2")[..., 0]
    return frame


def _open(channel: str, timeout: float | None, start: str) -> Consumer:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            return Consumer(channel, start=start)
        except (NotFound, Disconnected, LayoutMismatch) as e:
            # Not created yet, a stale segment about to be replaced, or a
            # producer still formatting it.
            if deadline is not None and time.monotonic() > deadline:
                raise Timeout(f"channel {channel!r} did not appear within {timeout} s ({e})") from e
            time.sleep(0.01)


def frames(
    channel: str,
    timeout: float | None = None,
    *,
    with_info: bool = False,
    start: str = "oldest",
) -> Iterator[Union[np.ndarray, tuple[np.ndarray, FrameInfo]]]:
    """Yields the frames of ``bipssink channel=<channel>`` as read-only NumPy
    arrays shaped by their frame descriptor (``(height, width, channels)``
    for packed colour formats, ``(height, width)`` for GRAY8/GRAY16 and for
    the luma plane of planar formats), views of the shared memory (see the
    module's lifetime rule). A sample that is not raw video raises
    :class:`MetaError`.

    ``timeout`` (seconds, ``None`` = forever) bounds the wait for the channel
    to appear and for each frame (``bips.Timeout`` after). The iteration ends
    when the producer leaves (the sending pipeline stopped). ``with_info``
    yields ``(array, FrameInfo)`` pairs (caps, timestamps, descriptor). ``start``:
    ``"oldest"`` (default: frames still in the channel first) or ``"newest"``.
    """
    consumer = _open(channel, timeout, start)
    try:
        while True:
            try:
                sample = consumer.recv(timeout)
            except Disconnected:
                return
            with sample:
                info = parse_meta(sample.meta)
                if with_info:
                    info = FrameInfo(
                        **{
                            **info.__dict__,
                            "descriptor": sample.descriptor,
                            "seq": sample.seq,
                            "timestamp_ns": sample.timestamp_ns,
                            "lagged": sample.lagged,
                        }
                    )
                frame = _view(sample, info)
                yield (frame, info) if with_info else frame
                # Moving on: drop our references; the sample goes back when
                # the caller's last view of it goes too.
                del frame
    finally:
        consumer.close()
