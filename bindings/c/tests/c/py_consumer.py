"""Python consumer of the checksum stream (bindings/c/tests/c/checksum.h).

Usage: py_consumer.py CHANNEL FRAMES. Opens the channel (retrying up to 20 s),
reads from the oldest sample until the producer leaves, views every frame as a
NumPy array without copying (the array's memory is the shared buffer itself),
checks it, prints "TOTAL <hex>". Exit 1 on any bad frame.
"""

import struct
import sys
import time
import zlib

import numpy as np

import bips

channel, frames = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 20
while True:
    try:
        consumer = bips.Consumer(channel, start="oldest")
        break
    except (bips.NotFound, bips.Disconnected):
        if time.monotonic() > deadline:
            raise
        time.sleep(0.01)

n = total = bad = 0
for sample in consumer:
    with sample:
        arr = np.asarray(sample)  # zero copy: a view of the shared buffer
        addr = arr.__array_interface__["data"][0]
        idx, length, crc = struct.unpack_from("<III", sample.meta)
        got = zlib.crc32(arr)
        if arr.flags.owndata or addr % 64 != 0 or arr.dtype != np.uint8:
            print(f"py_consumer: frame {n} is not a zero-copy view", file=sys.stderr)
            bad = 1
        if idx != n or sample.seq != n or length != len(arr) or got != crc:
            print(f"py_consumer: bad frame #{n}: idx {idx} len {len(arr)}/{length} "
                  f"crc {got:08x}/{crc:08x}", file=sys.stderr)
            bad = 1
        del arr  # the export must end before the sample is released
        total ^= got
        n += 1
if n != frames:
    print(f"py_consumer: received {n} frames, expected {frames}", file=sys.stderr)
    bad = 1
print(f"TOTAL {total:08x}")
sys.exit(bad)
