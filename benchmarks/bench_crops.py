"""The default cropping (crops sized to the holes, ``pconv.crops.crop_plan``, where they send fewer
pixels through the model than tiles do) against 512-px tiles sharing 128 px (``--overlap 128``)
and one pass over the whole image: quality and model work, at full resolution (``scale=1``, so
only the cropping differs).

    python benchmarks/bench_crops.py [--per-bin 2] [--images data/photos/val data/photos-more/val]
    python benchmarks/bench_crops.py --sparse [--upscale 3]
    python benchmarks/bench_crops.py --blobs [--upscale 2] [--margin 1] [--pad-levels 7]

The validation photos at their own size (up to 1024 px wide) with stroke and solid-hole masks in
the six hole-ratio bins, as the evaluation makes them; ``tile=512`` makes every photo run in crops
(``tile="auto"`` would run photos this small in one pass). Prints PSNR / SSIM per bin, the
megapixels sent through the model and the seconds, each against one pass.

``--sparse``: the case hole-sized crops are for. Each photo upscaled ``--upscale`` times (a large
photo) with four holes, two long thin strokes across it and two blobs (``bench_fill.four_holes``).

``--blobs``: each photo upscaled with 30 small round holes (radius 1-4 % of the short side, as
dust spots or blemishes), the case where the model's work is many small crops. ``--margin F`` adds
the default cropping with ``pconv.crops.COMPACT_MARGIN = F`` (the context around a hole that
fits in one crop, as a fraction of its extent; default 0.5) and compares it per case with the default.
``--pad-levels L`` does the same for ``pconv.configs.PAD_LEVELS = L`` (the U-Net pads its input to
``2**min(depth, L)``; default 5; 7 pads the release to 128, as before the smaller padding).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch
from bench_fill import four_holes

import pconv.configs
import pconv.crops
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
    p.add_argument("--blobs", action="store_true", help="upscaled photos with 30 small round holes (see above)")
    p.add_argument("--upscale", type=float, default=3.0, help="--sparse, --blobs: the photos' upscaling (default 3)")
    p.add_argument("--margin", type=float, help="also the default cropping with this COMPACT_MARGIN (see above)")
    p.add_argument("--pad-levels", type=int, help="also the default cropping with this PAD_LEVELS (see above)")
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    model = load_model(args.weights)
    images = _load_images(args.images, None)
    variants = dict(VARIANTS)
    if args.margin is not None:
        variants[f"margin {args.margin:g}"] = VARIANTS["default"]
    if args.pad_levels is not None:
        variants[f"pad levels {args.pad_levels}"] = VARIANTS["default"]
    methods = {
        name: (lambda image, known, o=o, n=name: _with_setting(n, lambda: inpaint(model, image, known, o).image))
        for name, o in variants.items()
    }
    suites = {"sparse": _sparse(images, args.upscale)} if args.sparse else {}
    if args.blobs:
        suites["blobs"] = _blobs(images, args.upscale)
    for kind in suites or ("strokes", "solid"):
        cases = suites[kind] if suites else generated_cases(images, args.per_bin, args.seed, kind)
        records = evaluate(cases, methods, progress=False)
        summary = summarise(records)
        work = {
            name: _with_setting(
                name, lambda o=o: sum(model_pixels(c.known, o, model.hole_depth, model.multiple) for c in cases) / 1e6
            )
            for name, o in variants.items()
        }
        print(f"\n{kind} holes, {len(cases)} cases at native size (PSNR dB / SSIM)")
        print(f"{'bin':>6} " + " ".join(f"{m:>16}" for m in variants))
        for b in (*RATIO_BINS, "all"):
            if (next(iter(variants)), b) not in summary:
                continue
            print(
                f"{b:>6} "
                + " ".join(f"{summary[(m, b)]['psnr']:>7.2f} / {summary[(m, b)]['ssim']:.4f}" for m in variants)
            )
        base = "one pass"
        for m in variants:
            seconds = summary[(m, "all")]["seconds"]
            print(
                f"{m:>12}: {work[m]:.1f} MP through the model ({work[m] / work[base]:.2f}x one pass), "
                f"{seconds:.2f} s/image ({seconds / summary[(base, 'all')]['seconds']:.2f}x)"
            )
        pairs = [("default", "512 tiles")] + [(m, "default") for m in variants if m.startswith(("margin", "pad"))]
        for metric, label in (("psnr", "PSNR"), ("hole_psnr", "hole PSNR")):
            per_case = {m: np.array([r[metric] for r in records if r["method"] == m]) for m in variants}
            for a, b in pairs:
                diff = per_case[a] - per_case[b]
                print(
                    f"{a} minus {b}, per case: {label} {diff.mean():+.3f} dB "
                    f"(SE {diff.std(ddof=1) / np.sqrt(diff.size):.3f}), "
                    f"better in {(diff > 0).sum()} of {diff.size}, worse in {(diff < 0).sum()}"
                )


def _with_setting(name: str, run):
    """``run()`` with the setting a variant's name changes (``margin 1``: ``COMPACT_MARGIN``,
    ``pad levels 7``: ``PAD_LEVELS``), restored afterwards."""
    module, attr = (pconv.crops, "COMPACT_MARGIN") if name.startswith("margin ") else (pconv.configs, "PAD_LEVELS")
    saved = getattr(module, attr)
    if name.startswith(("margin ", "pad levels ")):
        value = name.split()[-1]
        setattr(module, attr, float(value) if module is pconv.crops else int(value))
    try:
        return run()
    finally:
        setattr(module, attr, saved)


def _blobs(images: list[tuple[str, np.ndarray]], upscale: float) -> list[Case]:
    cases = []
    rng = np.random.default_rng(0)
    for name, image in images:
        big = cv2.resize(image, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
        h, w = big.shape[:2]
        short = min(h, w)
        holes = np.zeros((h, w), np.uint8)
        for _ in range(30):
            radius = int(rng.integers(short // 100, short // 25 + 1))
            centre = (int(rng.integers(radius, w - radius)), int(rng.integers(radius, h - radius)))
            cv2.circle(holes, centre, radius, 255, -1)
        known = holes == 0
        cases.append(Case(name, bin_of(known), big, known))
    return cases


def _sparse(images: list[tuple[str, np.ndarray]], upscale: float) -> list[Case]:
    cases = []
    for name, image in images:
        big = cv2.resize(image, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
        known = four_holes(*big.shape[:2])
        cases.append(Case(name, bin_of(known), big, known))
    return cases


if __name__ == "__main__":
    main()
