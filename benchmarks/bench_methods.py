"""Every method of ``predict.py --method`` against OpenCV Telea: time per image through the same
planner (crops around the holes, working scales), at 512 px and 24 MP.

    python benchmarks/bench_methods.py [--repeats 2] [--sizes 512x512 6000x4000] [--methods all]

The canyon example photo resized, four holes (two strokes, two blobs: ``bench_fill.four_holes``),
``pconv.inpaint.inpaint`` with each method (the model: the released one, or ``--weights``), uint8
in and out, best of ``--repeats``, calls interleaved; printed with the ratio to Telea's time in
the same run. Which method looks best is a question for the eye (see the README), not for this
script.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import torch
from bench_fill import four_holes
from common import time_interleaved

from pconv.inpaint import inpaint
from pconv.methods import MODEL, load_method, parse_methods

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--sizes", nargs="+", default=["512x512", "6000x4000"], help="WIDTHxHEIGHT of the timed images")
    p.add_argument("--methods", default="all", help="comma-separated, or all (every installed method)")
    p.add_argument("--weights", type=Path, help="the model's release file (default: the released model)")
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    names = parse_methods(args.methods)
    if "telea" not in names:
        names.append("telea")
    models = {n: load_method(n, args.weights if n == MODEL else None) for n in names}
    photo = cv2.cvtColor(cv2.imread(str(ROOT / "examples" / "canyon.jpg")), cv2.COLOR_BGR2RGB)
    print(f"{'size':>10} {'method':>11} {'seconds':>8} {'x telea':>8}")
    for size in args.sizes:
        width, height = map(int, size.split("x"))
        image = cv2.resize(photo, (width, height), interpolation=cv2.INTER_CUBIC)
        known = four_holes(height, width)
        times = time_interleaved(
            {n: (lambda m=m: inpaint(m, image, known)) for n, m in models.items()}, args.repeats, warmup=1
        )
        for n, seconds in times.items():
            print(f"{size:>10} {n:>11} {seconds:8.3f} {seconds / times['telea']:8.2f}")


if __name__ == "__main__":
    main()
