"""The default cropping (crops sized to the holes, ``pconv.tiling.crop_plan``, where they send fewer
pixels through the model than tiles do) against 512-px tiles sharing 128 px (``--overlap 128``)
and one pass over the whole image: quality and model work, at full resolution (``scale=1``, so
only the cropping differs).

    python benchmarks/bench_crops.py [--per-bin 2] [--images data/photos/val data/photos-more/val]
    python benchmarks/bench_crops.py --sparse [--upscale 3]

The validation photos at their own size (up to 1024 px wide) with stroke and solid-hole masks in
the six hole-ratio bins, as the evaluation makes them; ``tile=512`` makes every photo run in crops
(``tile="auto"`` would run photos this small in one pass). Prints PSNR / SSIM per bin, the
megapixels sent through the model and the seconds, each against one pass.

``--sparse``: the case hole-sized crops are for. Each photo upscaled ``--upscale`` times (a large
photo) with four holes, two long thin strokes across it and two blobs (``bench_fill.four_holes``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch
from bench_fill import four_holes

from pconv import load_model
from pconv.evaluate import Case, _load_images, bin_of, evaluate, generated_cases, summarise
from pconv.inpaint import InpaintOptions, inpaint
from pconv.masks import RATIO_BINS
from pconv.tiling import model_pixels

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "one pass": InpaintOptions(tile=None, scale=1),
    "512 tiles": InpaintOptions(tile=512, overlap=128, scale=1),
    "default": InpaintOptions(tile=512, scale=1),
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--per-bin", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", help="release file (default: the released model)")
    p.add_argument(
        "--images",
        type=Path,
        nargs="+",
        default=[ROOT / "data" / "photos" / "val", ROOT / "data" / "photos-more" / "val"],
    )
    p.add_argument("--sparse", action="store_true", help="large photos with four holes (see above)")
    p.add_argument("--upscale", type=float, default=3.0, help="--sparse: the photos' upscaling (default 3)")
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    model = load_model(args.weights)
    images = _load_images(args.images, None)
    methods = {name: (lambda image, known, o=o: inpaint(model, image, known, o).image) for name, o in VARIANTS.items()}
    suites = {"sparse": _sparse(images, args.upscale)} if args.sparse else {}
    for kind in suites or ("strokes", "solid"):
        cases = suites[kind] if suites else generated_cases(images, args.per_bin, args.seed, kind)
        records = evaluate(cases, methods, progress=False)
        summary = summarise(records)
        work = {
            name: sum(model_pixels(c.known, o, model.hole_depth, model.multiple) for c in cases) / 1e6
            for name, o in VARIANTS.items()
        }
        print(f"\n{kind} holes, {len(cases)} cases at native size (PSNR dB / SSIM)")
        print(f"{'bin':>6} " + " ".join(f"{m:>16}" for m in VARIANTS))
        for b in (*RATIO_BINS, "all"):
            if (next(iter(VARIANTS)), b) not in summary:
                continue
            print(
                f"{b:>6} "
                + " ".join(f"{summary[(m, b)]['psnr']:>7.2f} / {summary[(m, b)]['ssim']:.4f}" for m in VARIANTS)
            )
        base = "one pass"
        for m in VARIANTS:
            seconds = summary[(m, "all")]["seconds"]
            print(
                f"{m:>12}: {work[m]:.1f} MP through the model ({work[m] / work[base]:.2f}x one pass), "
                f"{seconds:.2f} s/image ({seconds / summary[(base, 'all')]['seconds']:.2f}x)"
            )
        per_case = {m: np.array([r["psnr"] for r in records if r["method"] == m]) for m in VARIANTS}
        diff = per_case["default"] - per_case["512 tiles"]
        print(
            f"default minus 512 tiles, per case: PSNR {diff.mean():+.3f} dB (SE {diff.std(ddof=1) / np.sqrt(diff.size):.3f}), "
            f"better in {(diff > 0).sum()} of {diff.size}, worse in {(diff < 0).sum()}"
        )


def _sparse(images: list[tuple[str, np.ndarray]], upscale: float) -> list[Case]:
    cases = []
    for name, image in images:
        big = cv2.resize(image, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
        known = four_holes(*big.shape[:2])
        cases.append(Case(name, bin_of(known), big, known))
    return cases


if __name__ == "__main__":
    main()
