"""Writing the result: encoder effort against time and file size, the source of predict.py's defaults.

    python benchmarks/bench_output.py [--images data/photos/test-2mp] [--repeats 2]

For each photo, PNG at compression levels 1, 3, 6 (Pillow's default) and 9, and lossless WebP
at methods 0, 4 (Pillow's default) and 6; time (best of repeats) and size, as ratios to the
format's default. ``pconv.predict.save_options`` picks PNG level 3 and WebP method 0 by default,
level 9 and method 6 with ``--smallest``.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

from PIL import Image

from pconv.data import find_images

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "PNG": ("compress_level", (1, 3, 6, 9), 6),
    "WEBP": ("method", (0, 4, 6), 4),
}


def encode(img: Image.Image, fmt: str, options: dict, repeats: int) -> tuple[float, int]:
    best, size = float("inf"), 0
    for _ in range(repeats):
        buffer = io.BytesIO()
        start = time.perf_counter()
        img.save(buffer, format=fmt, **options)
        best = min(best, time.perf_counter() - start)
        size = buffer.tell()
    return best, size


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, default=ROOT / "data" / "photos" / "test-2mp")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    for path in find_images(args.images):
        with Image.open(path) as opened:
            img = opened.convert("RGB")
        print(f"{path.name} ({img.width}x{img.height}):")
        for fmt, (option, values, default) in SETTINGS.items():
            extra = {"lossless": True} if fmt == "WEBP" else {}
            results = {v: encode(img, fmt, {option: v, **extra}, args.repeats) for v in values}
            base_time, base_size = results[default]
            for value, (seconds, size) in results.items():
                print(
                    f"  {fmt} {option}={value}: {seconds:.2f} s ({seconds / base_time:.2f}x the default's time), "
                    f"{size / 1e6:.2f} MB ({size / base_size:.2f}x its size)"
                )


if __name__ == "__main__":
    main()
