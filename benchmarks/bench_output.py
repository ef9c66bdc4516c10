"""Writing the result: encoder effort against time and file size, the source of predict.py's defaults.

    python benchmarks/bench_output.py [--images data/photos/test-2mp] [--repeats 2]

For each photo, PNG at compression levels 1, 3, 6 (Pillow's default) and 9, and at levels 1 and 3
with zlib's run-length strategy (``compress_type=zlib.Z_RLE``, what OpenCV's PNG writer uses), and
lossless WebP at methods 0, 4 (Pillow's default) and 6; and OpenCV's PNG writer at level 1 with
run-length coding, its adaptive row filters against one fixed filter (Up, Paeth); time (best of
repeats, conversion to OpenCV's channel order included) and size, as ratios to the format's
default. predict.py writes 8-bit PNG with OpenCV's Paeth filter (``pconv.images.encoder``), other
PNG with Pillow at level 1 with run-length coding, WebP at method 0; PNG level 9 and WebP method 6
with ``--smallest``.
"""

from __future__ import annotations

import argparse
import io
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from pconv.data import find_images

ROOT = Path(__file__).resolve().parents[1]
# Per format: the option sets to time, and the index of Pillow's default among them.
SETTINGS = {
    "PNG": (
        [{"compress_level": level} for level in (1, 3, 6, 9)]
        + [{"compress_level": level, "compress_type": zlib.Z_RLE} for level in (1, 3)],
        2,
    ),
    "WEBP": ([{"lossless": True, "method": method} for method in (0, 4, 6)], 1),
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


# OpenCV's PNG writer: row filters (the adaptive choice of all five, or one for every row)
CV_FILTERS = {
    "all": cv2.IMWRITE_PNG_ALL_FILTERS,
    "up": cv2.IMWRITE_PNG_FILTER_UP,
    "paeth": cv2.IMWRITE_PNG_FILTER_PAETH,
}


def encode_cv(img: Image.Image, row_filter: int, repeats: int) -> tuple[float, int]:
    rgb = np.asarray(img)
    params = [
        cv2.IMWRITE_PNG_COMPRESSION,
        1,
        cv2.IMWRITE_PNG_STRATEGY,
        cv2.IMWRITE_PNG_STRATEGY_RLE,
        cv2.IMWRITE_PNG_FILTER,
        row_filter,
    ]
    best, size = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        ok, buffer = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]), params)
        best = min(best, time.perf_counter() - start)
        size = buffer.size
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
        for fmt, (settings, default) in SETTINGS.items():
            results = [encode(img, fmt, options, args.repeats) for options in settings]
            base_time, base_size = results[default]
            for options, (seconds, size) in zip(settings, results):
                label = " ".join(
                    f"{k}={'Z_RLE' if v == zlib.Z_RLE and k == 'compress_type' else v}" for k, v in options.items()
                )
                print(
                    f"  {fmt} {label}: {seconds:.2f} s ({seconds / base_time:.2f}x the default's time), "
                    f"{size / 1e6:.2f} MB ({size / base_size:.2f}x its size)"
                )
            if fmt == "PNG":
                for name, row_filter in CV_FILTERS.items():
                    seconds, size = encode_cv(img, row_filter, args.repeats)
                    print(
                        f"  PNG OpenCV level 1 Z_RLE filter {name}: {seconds:.2f} s "
                        f"({seconds / base_time:.2f}x the default's time), {size / 1e6:.2f} MB ({size / base_size:.2f}x its size)"
                    )


if __name__ == "__main__":
    main()
