#!/usr/bin/env python3
"""Read a bips channel carried by ``bips bridge publish``, from Python, on any host.

``bips bridge publish CHANNEL --key KEY`` puts every sample of a local bips
channel on Zenoh: the sample's bytes are the Zenoh payload, untouched, and a
small header travels as the Zenoh *attachment* (the bips-zenoh crate,
``bridge/src/wire.rs``; version 1, little-endian)::

    offset size  field
      0     4    magic b"bipz"
      4     1    version (1)
      5     1    flags: 1 = a descriptor follows, 2 = a payload type follows
      6     2    reserved
      8     8    stream: names the source channel's incarnation (its name and
                 producer epoch); a new value means the producer restarted
     16     8    seq: the sample's sequence number in the source channel
     24     8    timestamp_ns (CLOCK_MONOTONIC of the source host)
     32     8    lagged: samples the publishing bridge skipped just before
     40     4    meta_len, then meta_len bytes of user metadata (trailing
                 zeros trimmed)
          320    the frame/tensor descriptor, when flag 1 (layout below)
        1+n+4    payload type, when flag 2: name length, name, version (u32)

The descriptor (bips' ``Descriptor::encode``, 320 bytes) says what the bytes
are: element type, shape, byte strides, the byte offset of element 0, pixel
format, colorimetry, planes. :func:`to_array` turns payload + descriptor into
a NumPy array (a view of the received bytes, bounds-checked by NumPy).

This needs only ``pip install eclipse-zenoh numpy`` (prebuilt wheels; no
bips installation): the Zenoh 1.x protocol of the ``eclipse-zenoh`` wheel
speaks to the bridge's zenoh-rs 1.10.

    # host A (the robot): carry channel "camera"
    bips bridge publish camera --key robot/camera --listen tcp/0.0.0.0:7447
    # host B: read it
    python read_bridge.py --connect tcp/HOST-A:7447 --key robot/camera --count 10

With ``--connect`` the session talks only to that endpoint: multicast and
gossip scouting are off (as in the bridge when endpoints are given).
"""

from __future__ import annotations

import argparse
import json
import queue
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

MAGIC = b"bipz"
VERSION = 1
FLAG_DESCRIPTOR = 1
FLAG_TYPE = 2
FIXED = 44
DESCRIPTOR_SIZE = 320
MAX_DIMS = 8
MAX_PLANES = 4

# bips DType codes (core/src/descriptor.rs) -> NumPy dtypes (little-endian).
# 12 is bfloat16, which NumPy lacks: to_array refuses it (read the bytes raw).
DTYPES = {
    1: "u1",
    2: "i1",
    3: "<u2",
    4: "<i2",
    5: "<u4",
    6: "<i4",
    7: "<u8",
    8: "<i8",
    9: "<f2",
    10: "<f4",
    11: "<f8",
    13: "?",
    14: "<c8",
    15: "<c16",
}


class WireError(ValueError):
    """The attachment is not a bips header this script can read."""


@dataclass
class Plane:
    offset: int
    stride: int
    rows: int
    row_bytes: int


@dataclass
class Descriptor:
    """A bips frame/tensor descriptor (what the payload bytes are)."""

    dtype: int
    shape: tuple
    strides: tuple
    offset: int
    format: str
    colorimetry: str
    planes: list = field(default_factory=list)


@dataclass
class Header:
    """The bridge's header of one sample."""

    stream: int
    seq: int
    timestamp_ns: int
    lagged: int
    meta: bytes
    descriptor: Optional[Descriptor]
    payload_type: Optional[tuple]  # (name, version)


def _ascii(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("ascii", "replace")


def parse_descriptor(b: bytes) -> Optional[Descriptor]:
    """Decodes bips' 320-byte descriptor; None for version 0 (no descriptor)."""
    if len(b) != DESCRIPTOR_SIZE:
        raise WireError(f"descriptor of {len(b)} bytes, want {DESCRIPTOR_SIZE}")
    version, dtype, ndim, nplanes = b[0], b[1], b[2], b[3]
    if version == 0:
        return None
    if version != 1:
        raise WireError(f"descriptor version {version}, this script reads 1")
    if ndim > MAX_DIMS or nplanes > MAX_PLANES:
        raise WireError(f"descriptor with {ndim} dimensions, {nplanes} planes")
    (offset,) = struct.unpack_from("<Q", b, 8)
    shape = struct.unpack_from("<8Q", b, 16)[:ndim]
    strides = struct.unpack_from("<8q", b, 80)[:ndim]
    planes = [
        Plane(*struct.unpack_from("<QIII", b, 176 + 24 * i)) for i in range(nplanes)
    ]
    return Descriptor(
        dtype=dtype,
        shape=tuple(shape),
        strides=tuple(strides),
        offset=offset,
        format=_ascii(b[144:160]),
        colorimetry=_ascii(b[160:176]),
        planes=planes,
    )


def parse_header(b: bytes) -> Header:
    """Decodes the bridge's header (the Zenoh attachment of a sample)."""
    if len(b) < 6 or b[:4] != MAGIC:
        raise WireError("no bips header (not sent by a bips bridge)")
    if b[4] != VERSION:
        raise WireError(
            f"bips header version {b[4]}, this script reads {VERSION}: "
            "use the read_bridge.py of the bips version the bridge runs"
        )
    if len(b) < FIXED:
        raise WireError("bips header shorter than its fixed fields")
    flags = b[5]
    stream, seq, ts, lagged, meta_len = struct.unpack_from("<QQQQI", b, 8)
    at = FIXED
    if at + meta_len > len(b):
        raise WireError("metadata past the end")
    meta = bytes(b[at : at + meta_len])
    at += meta_len
    descriptor = None
    if flags & FLAG_DESCRIPTOR:
        if at + DESCRIPTOR_SIZE > len(b):
            raise WireError("descriptor past the end")
        descriptor = parse_descriptor(bytes(b[at : at + DESCRIPTOR_SIZE]))
        at += DESCRIPTOR_SIZE
    payload_type = None
    if flags & FLAG_TYPE:
        if at >= len(b):
            raise WireError("payload type past the end")
        n = b[at]
        if at + 5 + n > len(b):
            raise WireError("payload type past the end")
        name = bytes(b[at + 1 : at + 1 + n]).decode("utf-8")
        (version,) = struct.unpack_from("<I", b, at + 1 + n)
        payload_type = (name, version)
    return Header(stream, seq, ts, lagged, meta, descriptor, payload_type)


def to_array(payload, d: Descriptor) -> np.ndarray:
    """The payload as the NumPy array the descriptor describes (a read-only
    view of ``payload``: bytes, bytearray or memoryview). NumPy checks that
    every element lies inside the payload (ValueError otherwise). For planar
    video the array is plane 0; ``d.planes`` lists every plane."""
    if d.dtype not in DTYPES:
        raise WireError(f"element type code {d.dtype} has no NumPy dtype (bfloat16?)")
    return np.ndarray(
        shape=d.shape,
        dtype=np.dtype(DTYPES[d.dtype]),
        buffer=payload,
        offset=d.offset,
        strides=d.strides,
    )


def zenoh_config(connect: list, listen: list):
    """A Zenoh peer that uses only the endpoints given (no multicast or gossip
    scouting when any is given), as the bridge does."""
    import zenoh

    conf = zenoh.Config()
    if connect or listen:
        conf.insert_json5("connect/endpoints", json.dumps(connect))
        conf.insert_json5("listen/endpoints", json.dumps(listen))
        conf.insert_json5("scouting/multicast/enabled", "false")
        conf.insert_json5("scouting/gossip/enabled", "false")
    return conf


class Reader:
    """Subscribes to ``key`` and yields (Header, payload bytes) pairs.

    ``with Reader(key, connect=["tcp/127.0.0.1:7447"]) as r:
    header, payload = r.recv(timeout=5)``
    """

    def __init__(self, key: str, connect=(), listen=(), queue_size: int = 64):
        import zenoh

        self._q: queue.Queue = queue.Queue(maxsize=queue_size)
        self.dropped_here = 0  # samples this reader could not queue (too slow)
        self._session = zenoh.open(zenoh_config(list(connect), list(listen)))

        def on_sample(s):
            att = s.attachment
            item = (att.to_bytes() if att is not None else b"", s.payload.to_bytes())
            try:
                self._q.put_nowait(item)
            except queue.Full:
                self.dropped_here += 1

        self._sub = self._session.declare_subscriber(key, on_sample)

    def recv(self, timeout: float = 10.0):
        """The next sample: (Header, payload bytes). Raises queue.Empty on
        timeout and WireError for an attachment that is not a bips header."""
        att, payload = self._q.get(timeout=timeout)
        return parse_header(att), payload

    def close(self):
        self._sub.undeclare()
        self._session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def check_example_frame(h: Header, a: np.ndarray) -> int:
    """Checks a frame of bips' example producer (std-shim/examples/producer.rs:
    640x480 RGB, R = x + n, G = y, B = n, n the frame number mod 256);
    returns n."""
    if a.shape != (480, 640, 3) or a.dtype != np.uint8:
        raise AssertionError(f"seq {h.seq}: shape {a.shape} {a.dtype}")
    n = int(a[0, 0, 2])
    x = (np.arange(640) + n).astype(np.uint8)
    y = np.arange(480).astype(np.uint8)
    if not (a[:, :, 0] == x[None, :]).all():
        raise AssertionError(f"seq {h.seq}: red channel is not x + {n}")
    if not (a[:, :, 1] == y[:, None]).all():
        raise AssertionError(f"seq {h.seq}: green channel is not y")
    if not (a[:, :, 2] == n).all():
        raise AssertionError(f"seq {h.seq}: blue channel is not {n}")
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--key", required=True, help="Zenoh key expression (the bridge's --key)")
    ap.add_argument("--connect", action="append", default=[], metavar="ENDPOINT")
    ap.add_argument("--listen", action="append", default=[], metavar="ENDPOINT")
    ap.add_argument("--count", type=int, default=0, help="stop after N samples (0: never)")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a sample")
    ap.add_argument(
        "--same-host",
        action="store_true",
        help="print each sample's age (the timestamps are the source host's CLOCK_MONOTONIC)",
    )
    ap.add_argument(
        "--check-example",
        action="store_true",
        help="check each frame is bips' example producer's gradient (for tests)",
    )
    args = ap.parse_args(argv)
    n, last, shift = 0, None, None
    with Reader(args.key, connect=args.connect, listen=args.listen) as r:
        while args.count == 0 or n < args.count:
            try:
                h, payload = r.recv(timeout=args.timeout)
            except queue.Empty:
                print(f"read_bridge: nothing within {args.timeout} s", file=sys.stderr)
                return 1
            if last is not None and h.stream == last[0] and h.seq <= last[1]:
                print(f"read_bridge: seq {h.seq} after {last[1]}", file=sys.stderr)
                return 1
            gap = h.seq - last[1] - 1 if last is not None and h.stream == last[0] else h.lagged
            last = (h.stream, h.seq)
            latency = ""
            if h.descriptor is not None:
                a = to_array(payload, h.descriptor)
                what = f"{a.shape} {a.dtype} {h.descriptor.format or '-'}"
                if args.check_example:
                    frame = check_example_frame(h, a)
                    # The frame number follows the source sequence (mod 256).
                    s = (h.seq - frame) % 256
                    if shift is not None and s != shift:
                        print(f"read_bridge: seq {h.seq} carries frame {frame}", file=sys.stderr)
                        return 1
                    shift = s
            else:
                if args.check_example:
                    print(f"read_bridge: seq {h.seq} has no descriptor", file=sys.stderr)
                    return 1
                what = f"{len(payload)} bytes"
            if h.payload_type:
                what += f" type {h.payload_type[0]} v{h.payload_type[1]}"
            if args.same_host:
                # Timestamps are the source host's CLOCK_MONOTONIC.
                age = time.clock_gettime_ns(time.CLOCK_MONOTONIC) - h.timestamp_ns
                latency = f" age_ms={age / 1e6:.1f}"
            print(
                f"seq={h.seq} stream={h.stream:016x} lagged={h.lagged} gap={gap} "
                f"meta={len(h.meta)}B {what}{latency}",
                flush=True,
            )
            n += 1
        if r.dropped_here:
            print(f"read_bridge: {r.dropped_here} samples not queued (reader too slow)", file=sys.stderr)
    print(f"read_bridge: {n} samples OK", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
