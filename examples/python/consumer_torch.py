#!/usr/bin/env python3
"""Receive camera frames as PyTorch tensors, without copying them.

``torch.from_dlpack(sample)`` (a producer that sets a frame descriptor), or
``torch.frombuffer`` (an older one), wraps the producer's buffer in shared memory as a uint8
tensor (H x W x 3, then permuted to the 3 x H x W layout models expect). Move
it to the GPU (``.to("cuda")``) or convert it (``.float()``) to get a private
copy; until then it is the shared bytes themselves.

Run it against the Rust example producer::

    cargo run --release -p bips --example producer -- camera 300 30 &
    python examples/python/consumer_torch.py camera

Needs ``pip install torch`` and the ``bips`` package; without torch it says so
and exits successfully.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
import warnings

import bips

try:
    import torch
except ImportError:
    torch = None


def open_channel(name: str, wait: float) -> bips.Consumer:
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

    if torch is None:
        print("consumer_torch: PyTorch is not installed (pip install torch); skipping")
        return 0

    try:
        consumer = open_channel(args.channel, args.wait)
    except bips.Error as e:
        print(f"consumer_torch: {e}", file=sys.stderr)
        return 1
    print(f"consumer_torch: attached to {args.channel!r}", flush=True)

    frames = 0
    with consumer, warnings.catch_warnings():
        # A bips.Sample is read-only by design (every consumer sees the same
        # bytes); torch warns that it cannot write into it. Do not write into
        # these tensors.
        warnings.filterwarnings("ignore", message=".*not writable.*")
        for sample in consumer:
            if sample.descriptor is not None:
                # DLPack: the tensor has the descriptor's shape, dtype and
                # strides, and holds the sample until it is deleted.
                hwc = torch.from_dlpack(sample)
            else:  # an older producer: width and height in the metadata
                width, height = struct.unpack_from("<II", sample.meta)
                # Through a memoryview: the tensor then keeps a buffer export
                # of the sample alive, so the sample stays held (and
                # `release()` refuses) for as long as the tensor lives.
                hwc = torch.frombuffer(memoryview(sample), dtype=torch.uint8, count=height * width * 3)
                hwc = hwc.view(height, width, 3)
            chw = hwc.permute(2, 0, 1)  # still no copy
            if frames % args.every == 0:
                mean = chw.float().mean(dim=(1, 2))  # .float() copies; the view does not
                print(
                    f"consumer_torch: #{sample.seq} tensor {tuple(chw.shape)} {chw.dtype} "
                    f"mean RGB ({mean[0]:.1f}, {mean[1]:.1f}, {mean[2]:.1f})",
                    flush=True,
                )
            frames += 1
    print(f"consumer_torch: producer gone after {frames} frames", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
