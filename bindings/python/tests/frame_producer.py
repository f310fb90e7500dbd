"""A producer process for the frame tests: waits for one consumer, then
publishes the frames of ``frames()`` (shaped loans and ``send``), then leaves.
Usage: frame_producer.py CHANNEL."""

import sys
import time

import numpy as np

import bips

H, W = 6, 5  # odd width: RGB rows of 15 bytes, padded to 16 + an offset


def rgba() -> np.ndarray:
    y, x, c = np.indices((H, W, 4))
    return ((y * 7 + x * 3 + c) % 256).astype(np.uint8)


def gray16() -> np.ndarray:
    y, x = np.indices((H, W))
    return (y * 1000 + x + 60000 - H * 1000).astype(np.uint16)


def rgb() -> np.ndarray:
    y, x, c = np.indices((H, W, 3))
    return ((x + 2 * y + 5 * c) % 256).astype(np.uint8)


PAD_OFFSET, PAD_ROW = 16, 16  # the padded RGB frame: 16-byte rows, 16 bytes in


def main() -> None:
    with bips.Producer(sys.argv[1], 2, 4096, meta_size=8) as p:
        deadline = time.monotonic() + 20
        while p.consumer_count < 1:
            if time.monotonic() > deadline:
                sys.exit("no consumer attached")
            time.sleep(0.005)
        # 1. RGBA through a shaped loan: the with-target is the frame array.
        with p.loan(timeout=10, shape=(H, W, 4), dtype=np.uint8, format="RGBA") as frame:
            frame[:] = rgba()
        # 2. GRAY16 in one step.
        p.send(gray16(), format="GRAY16_LE", meta=b"gray")
        # 3. Padded rows and an offset, written in place through a ufunc's out=.
        d = bips.Descriptor(np.uint8, (H, W, 3), (PAD_ROW, 3, 1), offset=PAD_OFFSET, format="RGB")
        with p.loan(timeout=10, descriptor=d) as frame:
            np.add(rgb(), 0, out=frame)
        # 4. A non-contiguous source: send() packs it.
        p.send(rgba()[:, ::2, 1:3], meta=b"strided")
    print("done", flush=True)


if __name__ == "__main__":
    main()
