"""The resolution policy of ``pconv.inpaint``: ``--scale auto`` against full resolution (``--scale 1``).

Quality (``quality``): the held-out test photos, centre-cropped to 512x512 and at their native
size (``data/photos/test-2mp``, 2-2.8 MP), with stroke and solid-hole masks in the six hole-ratio
bins; PSNR/SSIM per bin for ``auto``, ``1`` and OpenCV Telea, in one run.

Speed (``speed``): a test photo upscaled to 2, 12 and 24 MP with four holes (two 48-px squares,
a 300-px blob, a 900-px box), each size in a fresh process for its own peak memory: seconds for
``auto`` and ``1`` against Telea on the same input (each the best of ``--repeats`` runs), and the
peak resident memory.

    python benchmarks/bench_scale.py quality [--per-bin 4] [--weights FILE]
    python benchmarks/bench_scale.py speed [--sizes 2 12 24] [--weights FILE]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from pconv import load_model
from pconv.data import center_crop
from pconv.evaluate import evaluate, generated_cases, summarise
from pconv.images import load_rgb
from pconv.inpaint import inpaint
from pconv.io import DEFAULT_WEIGHTS
from pconv.masks import RATIO_BINS
from pconv.methods import FILLS

REPO = Path(__file__).resolve().parents[1]
TEST_512 = [REPO / "data" / "photos" / "test", REPO / "data" / "photos-more" / "test"]
TEST_NATIVE = REPO / "data" / "photos" / "test-2mp"


def _images(folders: list[Path], size: int | None) -> list[tuple[str, np.ndarray]]:
    files = sorted(p for f in folders for p in f.rglob("*.jpg"))
    return [(p.stem, np.asarray(center_crop(load_rgb(p), size) if size else load_rgb(p))) for p in files]


def quality(args: argparse.Namespace) -> None:
    model = load_model(args.weights)
    methods = {
        "auto": lambda image, known: inpaint(model, image, known, scale="auto").image,
        "scale 1": lambda image, known: inpaint(model, image, known, scale=1).image,
        "telea": FILLS["telea"],
    }
    print(f"weights {Path(args.weights).name} (hole depth {model.hole_depth:.0f} px at its own scale)")
    for label, images, per_bin in (
        ("512x512", _images(TEST_512, 512), args.per_bin),
        ("native 2-2.8 MP", _images([TEST_NATIVE], None), args.native_per_bin),
    ):
        for kind in ("strokes", "solid"):
            cases = generated_cases(images, per_bin, args.seed, kind)
            summary = summarise(evaluate(cases, methods, progress=False))
            print(f"\n{label}, {kind} holes, {len(cases)} cases (PSNR dB / SSIM)")
            print(f"{'bin':>6} " + " ".join(f"{m:>16}" for m in methods) + f" {'auto - scale 1':>16}")
            for b in (*RATIO_BINS, "all"):
                s = {m: summary[(m, b)] for m in methods}
                row = " ".join(f"{s[m]['psnr']:>7.2f} / {s[m]['ssim']:.3f}" for m in methods)
                gain = s["auto"]["psnr"] - s["scale 1"]["psnr"]
                print(f"{b:>6} {row} {gain:>+9.2f} / {s['auto']['ssim'] - s['scale 1']['ssim']:+.3f}")


def _speed_case(megapixels: float) -> tuple[np.ndarray, np.ndarray]:
    photo = np.asarray(load_rgb(REPO / "data" / "photos" / "test-2mp" / "lomiri-Bridge_by_Sander_Klootwijk.jpg"))
    width = int(round(np.sqrt(megapixels * 1e6 * 16 / 9)))
    height = int(round(megapixels * 1e6 / width))
    image = cv2.resize(photo, (width, height), interpolation=cv2.INTER_CUBIC)
    holes = np.zeros((height, width), np.uint8)
    holes[height // 5 : height // 5 + 48, width // 7 : width // 7 + 48] = 1
    holes[height // 2 : height // 2 + 48, width * 5 // 7 : width * 5 // 7 + 48] = 1
    cv2.ellipse(holes, (width // 3, height * 2 // 3), (150, 110), 30, 0, 360, 1, -1)
    side = min(900, height // 3)
    holes[height // 6 : height // 6 + side, width // 2 : width // 2 + side] = 1
    return image, holes == 0


def _best_of(repeats: int, run: Callable[[], object]) -> tuple[float, object]:
    """The shortest of ``repeats`` timed runs (the least disturbed by other work) and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return min(times), result


def child(megapixels: float, weights: str, scale: str, repeats: int) -> None:
    image, known = _speed_case(megapixels)
    model = load_model(weights)
    factor = "auto" if scale == "auto" else float(scale)
    seconds, result = _best_of(repeats, lambda: inpaint(model, image, known, scale=factor))
    holes = (~known).astype(np.uint8) * 255
    telea, _ = _best_of(repeats, lambda: cv2.inpaint(image, holes, 3, cv2.INPAINT_TELEA))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "w": image.shape[1],
                "h": image.shape[0],
                "seconds": seconds,
                "tiles": result.tiles,
                "telea": telea,
                "peak": peak,
            }
        )
    )


def speed(args: argparse.Namespace) -> None:
    print(
        f"weights {Path(args.weights).name}; four holes: two 48-px squares, a 300x220 ellipse, a box of "
        "min(900, height/3) px"
    )
    print(
        f"{'size':>6} {'pixels':>11} {'scale':>6} {'tiles':>5} {'seconds':>8} {'Telea s':>8} {'vs Telea':>8} {'peak RSS':>9}"
    )
    for mp in args.sizes:
        for scale in ("auto", "1"):
            cmd = [
                sys.executable,
                __file__,
                "child",
                "--mp",
                str(mp),
                "--scale",
                scale,
                "--weights",
                args.weights,
                "--repeats",
                str(args.repeats),
            ]
            r = json.loads(
                subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            )
            print(
                f"{mp:>4.0f}MP {r['w']:>5}x{r['h']:<5} {scale:>6} {r['tiles']:>5} {r['seconds']:>8.2f} "
                f"{r['telea']:>8.2f} {r['seconds'] / r['telea']:>7.1f}x {r['peak'] / 2**30:>7.2f}GiB",
                flush=True,
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("quality", "speed", "child"))
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="release file (default: the released model)")
    p.add_argument("--per-bin", type=int, default=4, help="512-px cases per bin and hole kind (default 4)")
    p.add_argument("--native-per-bin", type=int, default=2, help="native-size cases per bin and hole kind (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sizes", type=float, nargs="+", default=[2, 12, 24], help="megapixels for speed")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per case; the shortest counts (default 3)")
    p.add_argument("--mp", type=float, help=argparse.SUPPRESS)
    p.add_argument("--scale", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.mode == "child":
        child(args.mp, args.weights, args.scale, args.repeats)
    else:
        (quality if args.mode == "quality" else speed)(args)


if __name__ == "__main__":
    main()
