"""The push-pull fill (pconv.fill) against OpenCV Telea: time at 512 px and 24 MP, quality at 512 px.

    python benchmarks/bench_fill.py [--repeats 3] [--per-bin 2] [--images data/photos/val data/photos-more/val]

Time: the same photo (resized) and four holes (two strokes, two blobs), each method on uint8 in,
uint8 out, best of ``--repeats``, interleaved; printed with the ratio to Telea. Quality: PSNR and
SSIM of the composite on the validation photos at 512 px, ``--per-bin`` stroke and solid-hole
cases per hole-ratio bin (the evaluation's protocol), for push-pull, Telea and Navier-Stokes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch
from common import time_interleaved

from pconv.evaluate import _load_images, evaluate, generated_cases, summarise
from pconv.methods import FILLS

ROOT = Path(__file__).resolve().parents[1]


def four_holes(height: int, width: int) -> np.ndarray:
    """Known mask with two strokes (0.3% and 0.5% of the width) and two blobs (a tenth of the height)."""
    holes = np.zeros((height, width), np.uint8)
    s = min(height, width)
    cv2.line(holes, (width // 10, height // 5), (width * 9 // 10, height // 3), 255, max(1, int(s * 0.0045)))
    cv2.line(holes, (width // 5, height * 4 // 5), (width * 4 // 5, height // 2), 255, max(1, int(s * 0.0075)))
    cv2.circle(holes, (width // 3, height // 2), s // 10, 255, -1)
    cv2.ellipse(holes, (width * 2 // 3, height * 3 // 4), (s // 8, s // 12), 30, 0, 360, 255, -1)
    return holes == 0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--per-bin", type=int, default=2)
    p.add_argument(
        "--images",
        type=Path,
        nargs="+",
        default=[ROOT / "data" / "photos" / "val", ROOT / "data" / "photos-more" / "val"],
    )
    p.add_argument("--sizes", nargs="+", default=["512x512", "6000x4000"], help="WIDTHxHEIGHT of the timed images")
    p.add_argument("--size", type=int, default=512, help="side of the quality cases (default 512)")
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)

    photo = cv2.cvtColor(cv2.imread(str(ROOT / "examples" / "canyon.jpg")), cv2.COLOR_BGR2RGB)
    print("time per image (best of repeats), uint8 in and out:")
    for size in args.sizes:
        width, height = map(int, size.split("x"))
        image = cv2.resize(photo, (width, height), interpolation=cv2.INTER_CUBIC)
        known = four_holes(height, width)
        times = time_interleaved(
            {name: (lambda n=name: FILLS[n](image, known)) for name in ("pushpull", "telea")},
            args.repeats,
            warmup=1,
        )
        print(
            f"  {width}x{height} ({width * height / 1e6:.1f} MP, {np.mean(~known):.1%} holes): push-pull "
            f"{times['pushpull']:.3f} s, Telea {times['telea']:.3f} s, ratio {times['pushpull'] / times['telea']:.2f}x"
        )

    images = _load_images(args.images, args.size)
    methods = {name: FILLS[name] for name in ("pushpull", "telea", "ns")}
    for kind in ("strokes", "solid"):
        cases = generated_cases(images, args.per_bin, seed=5, kind=kind)
        summary = summarise(evaluate(cases, methods, progress=False))
        bins = sorted({b for _, b in summary if b != "all"})
        print(f"{kind}, {len(cases)} cases at {args.size} px: PSNR / SSIM per bin, then all")
        for name in methods:
            cells = [f"{summary[(name, b)]['psnr']:.2f}/{summary[(name, b)]['ssim']:.4f}" for b in [*bins, "all"]]
            print(f"  {name:>8}: " + "  ".join(cells))
        gain = summary[("pushpull", "all")]["psnr"] - summary[("telea", "all")]["psnr"]
        print(f"  push-pull minus Telea: {gain:+.2f} dB")


if __name__ == "__main__":
    main()
