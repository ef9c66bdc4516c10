"""Time and peak memory of inpainting against image size, with OpenCV Telea as the baseline.

Each size runs in a fresh process (so its peak resident memory is its own): a photo-sized
random image with the same few small holes scaled to stay the same number of pixels, inpainted
with ``tile="auto"``. Time should follow the number of hole-touching tiles, not the megapixels.
Also times Monte Carlo dropout (``--samples 50`` at 512x512 by default).

    python benchmarks/bench_predict.py [--sizes 1 4 12 24] [--weights FILE]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import cv2
import numpy as np
import torch

from pconv import PConvUNet, load_model
from pconv.inpaint import inpaint

HOLES = 8  # 48x48-pixel holes, spread over the image


def _model(weights: str | None, dropout: float = 0.0) -> torch.nn.Module:
    if weights:
        return load_model(weights)
    torch.manual_seed(0)  # speed does not depend on the weights; the released model's shape
    return PConvUNet(depth=7, base_width=32, dropout=dropout).eval()


def _case(megapixels: float) -> tuple[np.ndarray, np.ndarray]:
    width = int(round(np.sqrt(megapixels * 1e6 * 1.5)))
    height = int(round(megapixels * 1e6 / width))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    known = np.ones((height, width), bool)
    for y, x in zip(rng.integers(0, height - 48, HOLES), rng.integers(0, width - 48, HOLES)):
        known[y : y + 48, x : x + 48] = False
    return image, known


def child(megapixels: float, weights: str | None) -> None:
    """Run one size and print a JSON line: seconds, tiles, peak RSS, Telea seconds."""
    image, known = _case(megapixels)
    model = _model(weights)
    start = time.perf_counter()
    result = inpaint(model, image, known, tile="auto")
    seconds = time.perf_counter() - start
    holes = (~known).astype(np.uint8) * 255
    start = time.perf_counter()
    cv2.inpaint(image, holes, 3, cv2.INPAINT_TELEA)
    telea = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "mp": megapixels,
                "h": image.shape[0],
                "w": image.shape[1],
                "seconds": seconds,
                "tiles": result.tiles,
                "peak": peak,
                "telea": telea,
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=float, nargs="+", default=[1, 4, 12, 24], help="megapixels")
    p.add_argument("--weights", help="release file (default: random weights of the released model's shape)")
    p.add_argument("--mc-samples", type=int, default=50, help="Monte Carlo samples at 512x512 (0 skips)")
    p.add_argument("--child", type=float, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        child(args.child, args.weights)
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {HOLES} holes of 48x48 px; tile=auto")
    print(
        f"{'size':>10} {'pixels':>11} {'tiles':>5} {'seconds':>8} {'s/tile':>7} {'peak RSS':>9} {'Telea s':>8} {'vs Telea':>8}"
    )
    for mp in args.sizes:
        cmd = [sys.executable, __file__, "--child", str(mp)] + (["--weights", args.weights] if args.weights else [])
        r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
        print(
            f"{mp:>8.0f}MP {r['w']:>5}x{r['h']:<5} {r['tiles']:>5} {r['seconds']:>8.2f} {r['seconds'] / r['tiles']:>7.2f} "
            f"{r['peak'] / 2**30:>7.2f}GiB {r['telea']:>8.2f} {r['seconds'] / r['telea']:>7.1f}x"
        )

    if args.mc_samples:
        model = _model(args.weights, dropout=0.1)
        if not getattr(model.config, "dropout", 0):
            model = _model(None, dropout=0.1)
        image = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
        known = np.ones((512, 512), bool)
        known[200:300, 150:350] = False
        start = time.perf_counter()
        single = inpaint(model, image, known, tile=None)
        one = time.perf_counter() - start
        start = time.perf_counter()
        inpaint(model, image, known, tile=None, samples=args.mc_samples, batch=10)
        many = time.perf_counter() - start
        assert single.tiles == 1
        print(
            f"Monte Carlo dropout at 512x512: {args.mc_samples} samples {many:.1f} s "
            f"({many / one:.1f}x one pass of {one:.2f} s; target under 120 s)"
        )


if __name__ == "__main__":
    main()
