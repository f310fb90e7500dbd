#!/usr/bin/env python3
"""What a Python consumer pays per frame: ``recv`` + a NumPy view of the frame
in shared memory, against copying the same frame into ``bytes``.

    python bindings/python/bench_view.py [--width 3840 --height 2160 --bpp 4 --frames 50]

The producer runs in a child process; the consumer polls with ``try_recv``
and times each successful receive + ``np.frombuffer(...).reshape(h, w, c)``
(no waiting is timed), then the same plus ``bytes(sample)`` (one copy of the
frame). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time

import numpy as np

import bips


def produce(name: str, frames: int, size: int, ready) -> None:
    with bips.Producer(name, 4, size) as p:
        ready.set()
        while p.consumer_count == 0:  # frames published before it attaches would be lost
            time.sleep(0.001)
        for n in range(frames):
            with p.loan(timeout=30) as buf:
                memoryview(buf)[0] = n % 256  # a frame's pixels are written in place
        # the context manager closes the channel: the consumer drains, then Disconnected


def run(name: str, frames: int, w: int, h: int, c: int, copy: bool) -> list[float]:
    ready = mp.Event()
    child = mp.Process(target=produce, args=(name, frames, w * h * c, ready))
    child.start()
    ready.wait(10)
    consumer = bips.Consumer(name, start="oldest")
    times = []
    try:
        while True:
            t0 = time.perf_counter_ns()
            s = consumer.try_recv()  # only successful receives are kept
            if s is None:
                continue
            frame = np.frombuffer(s, np.uint8).reshape(h, w, c)
            if copy:
                data = bytes(s)
            t1 = time.perf_counter_ns()
            times.append((t1 - t0) / 1e3)
            del frame
            if copy:
                del data
            s.release()
    except bips.Disconnected:
        pass
    finally:
        consumer.close()
        child.join(30)
    return times[1:]  # the first frame faults the pages of the mapping in


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=3840)
    ap.add_argument("--height", type=int, default=2160)
    ap.add_argument("--bpp", type=int, default=4)
    ap.add_argument("--frames", type=int, default=60)
    a = ap.parse_args()
    size = a.width * a.height * a.bpp
    rows = []
    for copy in (False, True):
        name = f"bench-view-{os.getpid()}-{int(copy)}"
        t = run(name, a.frames, a.width, a.height, a.bpp, copy)
        what = "recv + NumPy view + bytes copy" if copy else "recv + NumPy view (zero copy)"
        rows.append((what, statistics.median(t), max(t), len(t)))
    print(f"\nframe {a.width}x{a.height}x{a.bpp} = {size / 1e6:.1f} MB\n")
    print("| per frame | median | max | frames |")
    print("|---|---:|---:|---:|")
    for what, med, mx, n in rows:
        print(f"| {what} | {med:.1f} us | {mx:.1f} us | {n} |")


if __name__ == "__main__":
    main()
