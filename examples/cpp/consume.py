"""consume.py — the Python end of examples/cpp/capture_producer.cpp.

    python examples/cpp/consume.py CHANNEL [--frames N]

Opens the channel requiring its payload type ("image/rgb8" v1); each sample
carries its descriptor, so ``np.asarray(sample)`` is the (height, width, 3)
uint8 image itself, padded rows as strides, straight over the shared buffer
(no copy), and ``np.from_dlpack(sample)`` (``torch.from_dlpack`` alike) the same
memory. Checks every pixel of each frame against the producer's moving
gradient (frame t = the sample's sequence number); stops after N frames or
when the producer leaves.
"""

import argparse
import sys
import time

import numpy as np

import bips

ap = argparse.ArgumentParser()
ap.add_argument("channel")
ap.add_argument("--frames", type=int, default=0, help="stop after N frames (0: until the producer leaves)")
args = ap.parse_args()

deadline = time.monotonic() + 20
while True:  # the producer may start after us
    try:
        consumer = bips.Consumer(args.channel, start="oldest", require_type=("image/rgb8", 1))
        break
    except (bips.NotFound, bips.Disconnected):
        if time.monotonic() > deadline:
            raise
        time.sleep(0.01)


def expected(t, height, width):
    """The producer's gradient: R follows x, G follows y, B the diagonal; all shift with t."""
    y, x = np.mgrid[0:height, 0:width].astype(np.uint32)
    return np.stack([x + t, y + 2 * t, x + y + 3 * t], axis=-1).astype(np.uint8)


seen = lost = bad = 0
for sample in consumer:
    with sample:
        d = sample.descriptor  # what the producer said the bytes are
        image = np.asarray(sample)  # (height, width, 3) uint8, the shared buffer itself
        height, width, _ = image.shape
        t = sample.seq
        if d is None or d.format != "RGB" or image.dtype != np.uint8 or image.ndim != 3:
            print(f"frame {t}: unexpected descriptor {d}", file=sys.stderr)
            bad += 1
        elif not np.array_equal(image, expected(t, height, width)):
            print(f"frame {t}: pixels differ from the gradient", file=sys.stderr)
            bad += 1
        if image.flags.owndata or image.strides[1:] != (3, 1):
            print("not a zero-copy view of the padded rows", file=sys.stderr)
            bad += 1
        # DLPack (what torch.from_dlpack and CuPy use): the same shared bytes.
        tensor = np.from_dlpack(sample)
        if not (np.shares_memory(tensor, image) and tensor.strides == image.strides):
            print(f"frame {t}: from_dlpack is not the same memory", file=sys.stderr)
            bad += 1
        del tensor
        if seen % 30 == 0:
            # timestamps are CLOCK_MONOTONIC ns, which time.monotonic_ns() reads on Linux
            age_us = (time.monotonic_ns() - sample.timestamp_ns) / 1000
            print(f"frame {t}: {width}x{height} stride {image.strides[0]}, mean {image.mean():.1f}, "
                  f"{age_us:.0f} us after publish")
        lost += sample.lagged
        seen += 1
        del image  # end the view before the sample is released
    if args.frames and seen + lost >= args.frames:
        break

status = "all checked" if bad == 0 else f"{bad} BAD"
print(f"{seen} frames, {status} (lost {lost})")
sys.exit(1 if bad else 0)
