"""How much a model and the push-pull fill gain from each other: fixed blends, no training.

    python benchmarks/bench_blend.py [--weights FILE] [--per-bin 10] [--seed 5] [--images data/photos/val data/photos-more/val]

For each case of the evaluation's protocol (validation photos at 512 px, ``--per-bin`` stroke and
solid-hole cases per hole-ratio bin), the model's result ``m`` and the fill ``p`` are blended
as ``p + w * (m - p)`` with ``w = g * min(1, d / D)``, ``d`` the pixel's distance from the hole
edge: ``g`` how far to trust the model, ``D`` how far inside the hole that trust ramps up. ``g =
0`` is push-pull, ``g = 1, D = 0`` the model. Printed: mean PSNR, SSIM and edge error per blend
and suite, with the differences from the better of the two ends. What a learned per-pixel gate
(``train.py --base-fill pushpull``) can start from. The last row, "oracle", picks for each case the ``g``
of ``ORACLE_GS`` (``D = 16``) with the highest PSNR against the truth: the most a gate that is one
number per image could reach, with the model and the fill as they are.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from pconv.evaluate import _load_images, generated_cases
from pconv.inpaint import inpaint
from pconv.io import load_model
from pconv.methods import FILLS
from pconv.metrics import score

ROOT = Path(__file__).resolve().parents[1]
BLENDS = [(0.0, 0.0), (1.0, 0.0), (0.25, 0.0), (0.5, 0.0), (0.75, 0.0), (0.5, 16.0), (0.75, 16.0), (1.0, 16.0)]
ORACLE_GS = [i / 10 for i in range(11)]


def blend(model_out: np.ndarray, fill: np.ndarray, known: np.ndarray, g: float, depth: float) -> np.ndarray:
    """``fill + w * (model_out - fill)``, ``w = g * min(1, d / depth)`` (``depth`` 0: ``w = g``), uint8."""
    if depth > 0:
        d = cv2.distanceTransform((~known).astype(np.uint8), cv2.DIST_L2, 5)
        w = g * np.minimum(1.0, d / depth)
    else:
        w = np.full(known.shape, g)
    out = fill + w[..., None] * (model_out.astype(np.float64) - fill)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=None, help="release file (default: the released model)")
    p.add_argument("--images", type=Path, nargs="+", default=[ROOT / "data/photos/val", ROOT / "data/photos-more/val"])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--per-bin", type=int, default=10)
    p.add_argument("--seed", type=int, default=5)
    args = p.parse_args(argv)
    model = load_model(args.weights)
    images = _load_images(args.images, args.size)
    print(f"{'suite':8} {'g':>5} {'D':>4} {'PSNR':>7} {'SSIM':>7} {'edge':>6}   vs best end: dPSNR dSSIM")
    for kind in ("strokes", "solid"):
        rows: dict = {b: [] for b in BLENDS}
        rows["oracle"] = []
        for case in generated_cases(images, args.per_bin, args.seed, kind):
            ours = inpaint(model, case.image, case.known).image
            fill = FILLS["pushpull"](case.image, case.known).astype(np.float64)
            truth = case.image / 255.0

            def scored(g: float, depth: float) -> tuple[float, float, float]:
                out = np.where(case.known[..., None], case.image, blend(ours, fill, case.known, g, depth))
                s = score(out / 255.0, truth, case.known)
                return s["psnr"], s["ssim"], s["edge"]

            for g, depth in BLENDS:
                rows[(g, depth)].append(scored(g, depth))
            rows["oracle"].append(max((scored(g, 16.0) for g in ORACLE_GS), key=lambda r: r[0]))
        means = {b: np.mean(r, axis=0) for b, r in rows.items()}
        best_psnr = max(means[(0.0, 0.0)][0], means[(1.0, 0.0)][0])
        best_ssim = max(means[(0.0, 0.0)][1], means[(1.0, 0.0)][1])
        for blend_id, (psnr, ssim, edge) in means.items():
            label = f"{'oracle':>10}" if blend_id == "oracle" else f"{blend_id[0]:5.2f} {blend_id[1]:4.0f}"
            print(
                f"{kind:8} {label} {psnr:7.3f} {ssim:7.4f} {edge:6.2f}   "
                f"{psnr - best_psnr:+.3f} {ssim - best_ssim:+.4f}"
            )


if __name__ == "__main__":
    main()
