"""A replayed release against another release file (the shipped one): which tensors differ and by
how much, the outputs on the bundled examples, and PSNR / SSIM per case on validation cases.

    python benchmarks/bench_replay.py weights/pconv-unet-photos-512.safetensors runs/replay/pconv-unet-photos-512.safetensors

(``python -m pconv.training.recipe recipes/pconv_unet_photos_512.toml --out runs/replay`` writes the
second file.) Cases: ``--per-bin`` stroke and solid-hole masks per hole-ratio bin on the
validation photos at ``--size`` px (``pconv.evaluate.generated_cases``, ``--seed``); the
difference is the second file minus the first, per case, with its standard error.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from pconv.evaluate import _load_images, generated_cases
from pconv.inpaint import inpaint
from pconv.io import load_model
from pconv.metrics import score

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ("building", "canyon", "chelsea")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("first", type=Path, help="a release file (the reference)")
    p.add_argument("second", type=Path, help="another release file (the replay)")
    p.add_argument("--images", type=Path, nargs="+", default=[ROOT / "data/photos/val", ROOT / "data/photos-more/val"])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--per-bin", type=int, default=5)
    p.add_argument("--seed", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    a, b = load_file(args.first), load_file(args.second)
    apart = {k: float((a[k].float() - b[k].float()).abs().max()) for k in a if k in b}
    differ = {k: v for k, v in apart.items() if v > 0}
    print(
        f"tensors differing: {len(differ)} of {len(a)}" + "".join(f"\n  {k}: up to {v:.4g}" for k, v in differ.items())
    )
    models = load_model(args.first), load_model(args.second)
    for name in EXAMPLES:
        image = np.asarray(Image.open(ROOT / "examples" / f"{name}.jpg").convert("RGB"))
        known = np.asarray(Image.open(ROOT / "examples" / f"{name}_mask.png").convert("L")) < 128
        first, second = (inpaint(m, image, known).image.astype(int) for m in models)
        diff = np.abs(first - second)
        print(
            f"{name}: outputs differ by {diff[~known].mean():.3f} levels on average in the holes, at most {diff.max()}"
        )
    images = _load_images(args.images, args.size)
    for kind in ("strokes", "solid"):
        scores = np.array(
            [
                [
                    [
                        score(inpaint(m, c.image, c.known).image / 255.0, c.image / 255.0, c.known)[k]
                        for k in ("psnr", "ssim")
                    ]
                    for m in models
                ]
                for c in generated_cases(images, args.per_bin, args.seed, kind)
            ]
        )  # case, model, (PSNR, SSIM)
        d = scores[:, 1, 0] - scores[:, 0, 0]
        se = d.std(ddof=1) / np.sqrt(d.size) if d.size > 1 else float("nan")
        (p1, s1), (p2, s2) = scores[:, 0].mean(0), scores[:, 1].mean(0)
        print(
            f"{kind} ({len(d)} cases): first {p1:.3f} dB / {s1:.4f}, second {p2:.3f} dB / {s2:.4f}; "
            f"second minus first {d.mean():+.3f} dB (SE {se:.3f}, better in {(d > 0).sum()}, worse in {(d < 0).sum()})"
        )


if __name__ == "__main__":
    main()
