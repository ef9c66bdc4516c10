"""Where a gated model trusts its network: ``g`` by distance from the hole edge.

    python benchmarks/bench_gate.py [--weights FILE] [--per-bin 2] [--seed 5] [--images data/photos/val data/photos-more/val]

A gated model (``base_fill`` ``pushpull``) returns ``fill + g * (prediction - fill)``: ``g = 0`` is the push-pull fill,
``g = 1`` the network's own prediction. For the evaluation's cases (validation photos at 512 px,
``--per-bin`` stroke and solid-hole cases per hole-ratio bin), printed per suite: the mean and
the 10th-90th percentiles of ``g`` over the hole pixels in bands of distance from the hole edge.
A model without a gate says so.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from pconv.evaluate import _load_images, generated_cases
from pconv.io import load_model

ROOT = Path(__file__).resolve().parents[1]
BANDS = [(0, 2), (2, 8), (8, 16), (16, 32), (32, 64), (64, 10_000)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=None, help="release file (default: the released model)")
    p.add_argument("--images", type=Path, nargs="+", default=[ROOT / "data/photos/val", ROOT / "data/photos-more/val"])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--per-bin", type=int, default=2)
    p.add_argument("--seed", type=int, default=5)
    args = p.parse_args(argv)
    model = load_model(args.weights).eval()
    if getattr(model.config, "base_fill", "none") == "none":
        print("this model has no gate: its output is its network's prediction (g = 1)")
        return
    images = _load_images(args.images, args.size)
    print("g by distance from the hole edge (px): mean (10th-90th percentile); 0 = push-pull, 1 = the network")
    for kind in ("strokes", "solid"):
        values: dict[tuple[int, int], list[np.ndarray]] = {band: [] for band in BANDS}
        for case in generated_cases(images, args.per_bin, args.seed, kind):
            image = torch.from_numpy(case.image.copy()).permute(2, 0, 1)[None].float() / 255
            known = torch.from_numpy(case.known.copy())[None, None].float()
            with torch.no_grad():
                g = model.gate(image, known)[0, 0].numpy()
            hole = ~case.known
            distance = cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 5)
            for lo, hi in BANDS:
                band = hole & (distance > lo) & (distance <= hi)
                values[(lo, hi)].append(g[band])
        cells = []
        for (lo, hi), parts in values.items():
            band = np.concatenate(parts)
            if band.size:
                p10, p90 = np.percentile(band, [10, 90])
                cells.append(f"{lo}-{hi if hi < 10_000 else ''}: {band.mean():.2f} ({p10:.2f}-{p90:.2f})")
        print(f"{kind:8} " + ", ".join(cells))


if __name__ == "__main__":
    main()
