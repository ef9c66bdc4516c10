"""Masks per second per core at 512x512, for each generator and each ratio bin.

    python benchmarks/bench_masks.py [--size 512] [--count 200]

Runs on one thread (one DataLoader worker's share); targets: >= 1000/s for random strokes,
>= 200/s for ratio-controlled masks.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from pconv.masks import RATIO_BINS, generate


def rate(fn, count: int) -> float:
    start = time.perf_counter()
    for i in range(count):
        fn(np.random.default_rng(i))
    return count / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    s = args.size
    print(f"masks per second on one core at {s}x{s} ({args.count} masks each)")
    for kind in ("strokes", "free-form", "thick", "boxes"):
        print(f"  {kind:<24} {rate(lambda r: generate(s, s, r, kind), args.count):8.0f}/s")
    for name, bounds in RATIO_BINS.items():
        for kind in ("strokes", "free-form"):
            r = rate(lambda g: generate(s, s, g, kind, bounds), args.count)
            print(f"  {kind + ' ratio ' + name:<24} {r:8.0f}/s")


if __name__ == "__main__":
    main()
