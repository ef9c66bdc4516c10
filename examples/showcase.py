"""Five held-out photos, each with an object-sized hole and a text overlay, filled by OpenCV Telea,
the push-pull fill, PatchMatch and the model, beside the original, labelled: the picture a new
user judges by (and chooses a ``--method`` from).

    python examples/showcase.py [--weights FILE] [--out examples/showcase.jpg]   # needs pconv[patchmatch]

The photos are the first five of the project's test photos (never trained on or chosen by); the
holes are drawn here, the same every run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from pconv.data import center_crop, find_images
from pconv.images import load_rgb
from pconv.inpaint import inpaint
from pconv.io import DEFAULT_WEIGHTS, load_model
from pconv.methods import FILLS, METHODS
from pconv.sheets import example_grid, example_row

ROOT = Path(__file__).resolve().parents[1]
SIDE = 384
WORDS = ["SAMPLE", "pconv 2026", "DRAFT", "(c) photo", "TEXT"]


def holes(index: int, side: int = SIDE) -> np.ndarray:
    """Known mask: an object-sized blob (an ellipse, a box or a disc) and a line of large text."""
    hole = np.zeros((side, side), np.uint8)
    rng = np.random.default_rng(index)
    cx, cy = (int(v) for v in rng.integers(side // 3, 2 * side // 3, 2))
    shape = index % 3
    if shape == 0:
        cv2.ellipse(hole, (cx, cy), (side // 7, side // 10), int(rng.integers(0, 180)), 0, 360, 255, -1)
    elif shape == 1:
        cv2.rectangle(hole, (cx - side // 9, cy - side // 9), (cx + side // 9, cy + side // 9), 255, -1)
    else:
        cv2.circle(hole, (cx, cy), side // 9, 255, -1)
    cv2.putText(
        hole,
        WORDS[index % len(WORDS)],
        (side // 12, side - side // 8),
        cv2.FONT_HERSHEY_DUPLEX,
        side / 280,
        255,
        max(2, side // 90),
        cv2.LINE_AA,
    )
    return hole == 0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--out", type=Path, default=ROOT / "examples" / "showcase.jpg")
    args = p.parse_args(argv)
    METHODS["patchmatch"].require()
    model = load_model(args.weights)
    photos = find_images(ROOT / "data" / "photos" / "test")[:5]
    names = ["telea", "pushpull", "patchmatch", "model"]
    examples = {}
    for i, path in enumerate(photos):
        image = np.asarray(center_crop(load_rgb(path, min_side=SIDE), SIDE))
        known = holes(i)
        results = {name: FILLS[name](image, known) for name in names[:-1]}
        results["model"] = inpaint(model, image, known).image
        examples[path.stem] = example_row(image, known, results, side=SIDE)
    sheet = example_grid(examples, ["OpenCV Telea", "push-pull", "PatchMatch", args.weights.stem])
    Image.fromarray(sheet).save(args.out, quality=85, optimize=True)
    print(f"wrote {args.out}: holes | OpenCV Telea | push-pull | PatchMatch | {args.weights.name} | original")


if __name__ == "__main__":
    main()
