"""The first thing a user tries: a square hole in a flat image. How far off is the worst pixel?

    python benchmarks/bench_flat.py [--weights FILE] [--levels 40,150,235] [--size 256] [--hole 96]

A ``--hole`` px square in the middle of a ``--size`` px image of one grey level, for each of
``--levels``, and of one colour whose channels are the first three levels (so a model that mixes
channels shows it), and of a smooth three-colour gradient (the bar does not apply there: push-pull
is close but not exact on it; the mean error shows what a model adds to the fill).
Every method should return the level itself: printed are the largest, 99th-percentile and
mean absolute error over the hole's pixels (grey levels), for the model and for push-pull and
Telea. The bar: every pixel within 10 levels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pconv.inpaint import inpaint
from pconv.io import load_model
from pconv.methods import FILLS


def flat_cases(levels: list[int], size: int, hole: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, image, known)``: one grey image per level, one colour made of the levels, a gradient."""
    known = np.ones((size, size), bool)
    start = (size - hole) // 2
    known[start : start + hole, start : start + hole] = False
    cases = [(f"grey {v}", np.full((size, size, 3), v, np.uint8), known) for v in levels]
    colour = [levels[i % len(levels)] for i in range(3)]
    cases.append(
        (f"colour {tuple(colour)}", np.broadcast_to(np.array(colour, np.uint8), (size, size, 3)).copy(), known)
    )
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    gradient = np.stack([60 + 140 * x, 80 + 100 * y, 160 - 60 * x * y], -1).round().astype(np.uint8)
    cases.append(("gradient", gradient, known))
    return cases


def errors(out: np.ndarray, image: np.ndarray, known: np.ndarray) -> tuple[int, float, float]:
    """Largest, 99th-percentile and mean absolute error over the hole's pixels and channels."""
    diff = np.abs(out[~known].astype(int) - image[~known].astype(int))
    return int(diff.max()), float(np.percentile(diff, 99)), float(diff.mean())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=None, help="release file (default: the released model)")
    p.add_argument("--levels", default="40,150,235", help="comma-separated grey levels")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--hole", type=int, default=96)
    args = p.parse_args(argv)
    model = load_model(args.weights)
    name = args.weights.name if args.weights else "release"
    methods = {
        name: lambda image, known: inpaint(model, image, known).image,
        "pushpull": FILLS["pushpull"],
        "telea": FILLS["telea"],
    }
    levels = [int(v) for v in args.levels.split(",")]
    print(f"{args.hole}-px square hole in a flat {args.size}-px image: |error| in grey levels, max / p99 / mean")
    print(f"{'image':>22} " + " ".join(f"{m:>24}" for m in methods))
    for case, image, known in flat_cases(levels, args.size, args.hole):
        cells = [errors(fn(image, known), image, known) for fn in methods.values()]
        print(f"{case:>22} " + " ".join(f"{mx:>10d} / {p99:5.1f} / {mean:4.1f}" for mx, p99, mean in cells))
    print("bar: max <= 10 for every flat image")


if __name__ == "__main__":
    main()
