"""consume.py — the Python end of examples/cpp/capture_producer.cpp.

    python examples/cpp/consume.py CHANNEL [--frames N]

Each sample is viewed as a (height, width, 3) uint8 NumPy array straight over
the shared buffer (no copy), using the width/height/stride of its metadata
(examples/cpp/frame_meta.h: eight little-endian u32). Checks each frame's
CRC-32 and first pixel; stops after N frames or when the producer leaves.
"""

import argparse
import struct
import sys
import time
import zlib

import numpy as np

import bips

RGB24 = int.from_bytes(b"RGB3", "little")

ap = argparse.ArgumentParser()
ap.add_argument("channel")
ap.add_argument("--frames", type=int, default=0, help="stop after N frames (0: until the producer leaves)")
args = ap.parse_args()

deadline = time.monotonic() + 20
while True:  # the producer may start after us
    try:
        consumer = bips.Consumer(args.channel, start="oldest")
        break
    except (bips.NotFound, bips.Disconnected):
        if time.monotonic() > deadline:
            raise
        time.sleep(0.01)

seen = lost = bad = 0
for sample in consumer:
    with sample:
        version, width, height, stride, fmt, frame, crc, _ = struct.unpack_from("<8I", sample.meta)
        assert version == 1 and fmt == RGB24, "unexpected frame format"
        flat = np.asarray(sample)  # the shared buffer itself (no copy)
        rows = flat[: height * stride].reshape(height, stride)
        image = rows[:, : width * 3].reshape(height, width, 3)  # still a view
        if crc and zlib.crc32(flat) != crc:
            print(f"frame {frame}: CRC mismatch", file=sys.stderr)
            bad += 1
        t = frame
        if tuple(image[0, 0]) != (t & 255, (2 * t) & 255, (3 * t) & 255):
            print(f"frame {frame}: unexpected first pixel {tuple(image[0, 0])}", file=sys.stderr)
            bad += 1
        if image.base is None or flat.flags.owndata:
            print("not a zero-copy view", file=sys.stderr)
            bad += 1
        if seen % 30 == 0:
            # timestamps are CLOCK_MONOTONIC ns, which time.monotonic_ns() reads on Linux
            age_us = (time.monotonic_ns() - sample.timestamp_ns) / 1000
            print(f"frame {frame}: {width}x{height} stride {stride}, mean {image.mean():.1f}, "
                  f"{age_us:.0f} us after publish")
        lost += sample.lagged
        seen += 1
        del rows, image, flat  # end the views before the sample is released
    if args.frames and seen + lost >= args.frames:
        break

status = "all checked" if bad == 0 else f"{bad} BAD"
print(f"{seen} frames, {status} (lost {lost})")
sys.exit(1 if bad else 0)
