"""A consumer process for the tests: prints `SEQ LEN CRC32` per sample, then
`done N` when the producer leaves. Usage: checksum_consumer.py CHANNEL."""

import sys
import zlib

import bips

consumer = bips.Consumer(sys.argv[1], start="oldest")
print("attached", flush=True)
n = 0
for sample in consumer:
    print(sample.seq, len(sample), zlib.crc32(sample), flush=False)
    n += 1
print("done", n, flush=True)
