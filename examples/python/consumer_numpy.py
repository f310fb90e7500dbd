#!/usr/bin/env python3
"""Receive camera frames as H x W x 3 NumPy arrays, without copying them.

Each frame is the producer's buffer in shared memory: ``np.frombuffer`` makes
an array *view* of it, so reading a 1080p frame costs nothing until you touch
the pixels. The producer writes ``width`` and ``height`` (little-endian u32)
into the first 8 bytes of each sample's metadata, and a producer that sets a
frame descriptor makes ``np.asarray(sample)`` the shaped, typed, strided array
directly (see bindings/python/README.md, "Frames and tensors").

Run it against the Rust example producer::

    cargo run --release -p bips --example producer -- camera 300 30 &
    python examples/python/consumer_numpy.py camera

Needs ``pip install numpy`` and the ``bips`` package
(``maturin develop --release -m bindings/python/Cargo.toml`` in a venv).
"""

from __future__ import annotations

import argparse
import struct
import sys
import time

import numpy as np

import bips


def open_channel(name: str, wait: float) -> bips.Consumer:
    """Opens ``name``, waiting up to ``wait`` seconds for its producer to start."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return bips.Consumer(name, start="oldest")
        except (bips.NotFound, bips.Disconnected):
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("channel", nargs="?", default="example")
    parser.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the producer")
    parser.add_argument("--every", type=int, default=30, help="print one line every N frames")
    args = parser.parse_args()

    try:
        consumer = open_channel(args.channel, args.wait)
    except bips.Error as e:
        print(f"consumer_numpy: {e}", file=sys.stderr)
        return 1
    print(f"consumer_numpy: attached to {args.channel!r}", flush=True)

    frames = lost = 0
    with consumer:
        for sample in consumer:  # ends when the producer leaves
            # A view of the shared memory: no copy. Read-only (other consumers
            # see the same bytes); use frame.copy() to get a private one.
            if sample.descriptor is not None:
                # The producer described the frame: shape, dtype, row strides.
                frame = np.asarray(sample)
                height, width = frame.shape[:2]
            else:  # an older producer: width and height in the metadata
                width, height = struct.unpack_from("<II", sample.meta)
                frame = np.frombuffer(sample, np.uint8, count=height * width * 3).reshape(height, width, 3)
            if frames % args.every == 0:
                latency_us = (bips.now_ns() - sample.timestamp_ns) / 1e3
                mean = frame.reshape(-1, 3).mean(axis=0)
                print(
                    f"consumer_numpy: #{sample.seq} {height}x{width}x3 "
                    f"mean RGB ({mean[0]:.1f}, {mean[1]:.1f}, {mean[2]:.1f}) "
                    f"{latency_us:.0f} us after publish",
                    flush=True,
                )
            frames += 1
            lost += sample.lagged
            # Dropping the last reference to `frame` and `sample` (here: the
            # next iteration rebinds both) hands the buffer back.
    print(f"consumer_numpy: producer gone after {frames} frames ({lost} lost)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
