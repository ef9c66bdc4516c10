"""Command line: ``python -m pconv.masks export ...`` writes mask sets and a contact sheet."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from pconv.cli import prog_name, run_main
from pconv.errors import OutputError
from pconv.files import atomic_write_bytes
from pconv.masks.files import CONTACT_SHEET, write_mask
from pconv.masks.generators import KINDS, MIXES, RATIO_BINS, generate, parse_kind, parse_ratio

PROG = "python -m pconv.masks"


def contact_sheet(masks: list[np.ndarray], path: Path, columns: int = 8, thumb: int = 96) -> None:
    """A grid of up to ``columns * columns`` masks (white = hole) labelled with their hole ratio."""
    masks = masks[: columns * columns]
    rows = -(-len(masks) // columns)
    gap = 2
    sheet = np.full((rows * (thumb + gap) + gap, columns * (thumb + gap) + gap, 3), 128, np.uint8)
    for i, known in enumerate(masks):
        tile = cv2.resize(np.where(known, 0, 255).astype(np.uint8), (thumb, thumb), interpolation=cv2.INTER_AREA)
        tile = cv2.cvtColor(tile, cv2.COLOR_GRAY2BGR)
        label = f"{1 - known.mean():.2f}"
        cv2.putText(tile, label, (3, thumb - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(tile, label, (3, thumb - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (60, 200, 255), 1, cv2.LINE_AA)
        r, c = divmod(i, columns)
        y, x = gap + r * (thumb + gap), gap + c * (thumb + gap)
        sheet[y : y + thumb, x : x + thumb] = tile
    ok, encoded = cv2.imencode(Path(path).suffix or ".png", sheet)
    if not ok:
        raise ValueError(f"cannot encode {path}")
    atomic_write_bytes(path, encoded.tobytes())


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x")) if "x" in text.lower() else (int(text),) * 2
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be N or HxW, got {text!r}") from None
    if h < 16 or w < 16:
        raise argparse.ArgumentTypeError(f"size must be at least 16 pixels, got {text!r}")
    return h, w


def _ratio(text: str) -> tuple[float, float]:
    try:
        return parse_ratio(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _kind(text: str) -> str:
    try:
        parse_kind(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def export(
    count: int,
    size: tuple[int, int],
    kind: str,
    seed: int,
    out: Path,
    ratio: tuple[float, float] | None,
    stream: int = 0,
    desc: str = "masks",
) -> list[np.ndarray]:
    """Write ``count`` masks as ``out/NNNN.png`` plus ``out/contact_sheet.png``.

    Mask ``i`` comes from ``np.random.default_rng([seed, stream, i])``: sets are reproducible
    and any single mask can be regenerated alone.
    """
    out.mkdir(parents=True, exist_ok=True)
    masks = []
    for i in tqdm(range(count), desc=desc, unit="mask"):
        known = generate(*size, np.random.default_rng([seed, stream, i]), kind=kind, ratio=ratio)
        write_mask(out / f"{i:04d}.png", known)
        masks.append(known)
    contact_sheet(masks, out / CONTACT_SHEET)
    return masks


def main(argv: Sequence[str] | None = None) -> int:
    """``pconv-masks``: errors as one line and exit code 2 (:func:`pconv.cli.run_main`)."""
    return run_main(_main, argv, PROG)


def _main(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(prog=prog_name(PROG), description="Hole masks for inpainting.")
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="write a mask set (PNG, white = hole) and a contact sheet")
    ex.add_argument("--count", type=int, default=100, help="masks per set (per bin with --bins)")
    ex.add_argument("--size", type=_size, default=(512, 512), help="N or HxW (default 512)")
    ex.add_argument(
        "--kind",
        type=_kind,
        default="strokes",
        help=f"one of {', '.join(KINDS)}, a mixture ({', '.join(MIXES)}) or KIND=WEIGHT,... (default strokes)",
    )
    ratio = ex.add_mutually_exclusive_group()
    ratio.add_argument(
        "--ratio", type=_ratio, help=f"hole ratio range, e.g. 0.1-0.2, or a bin: {', '.join(RATIO_BINS)}"
    )
    ratio.add_argument("--bins", action="store_true", help="one subfolder per ratio bin of the paper's evaluation")
    ex.add_argument("--seed", type=int, default=0)
    ex.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} exists and is not a folder")
    try:
        if args.bins:
            for stream, (name, bounds) in enumerate(RATIO_BINS.items(), start=1):
                export(args.count, args.size, args.kind, args.seed, args.out / name, bounds, stream, desc=f"bin {name}")
        else:
            export(args.count, args.size, args.kind, args.seed, args.out, args.ratio)
    except OSError as err:
        raise OutputError(f"could not write the masks to {args.out}: {err.strerror or err}") from None
    print(f"wrote masks to {args.out} (white = hole)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
