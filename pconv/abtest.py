"""Blind A/B tests of two fills, judged by eye (``python -m pconv.abtest``).

PSNR and SSIM reward blur; whether a fill looks right is for the eye. Three steps:

    python -m pconv.abtest cases --images val-photos/ --size 512 --kind solid --ratio 0.2-0.6 --count 40 --out cases/
    python -m pconv.abtest make --cases cases/ --methods pushpull,patchmatch --out sheets/ --key key.json
    # the judge opens sheets/pair-*.png and writes A, B or tie per pair into sheets/verdicts.csv
    python -m pconv.abtest score --key key.json --verdicts sheets/verdicts.csv

``cases`` writes photos (centre-cropped to ``--size``) with generated holes: ``images/`` and
``masks/`` under ``--out``. ``make`` fills them with two methods of :mod:`pconv.methods` (or takes
two folders of results, ``--dirs``, named like the photos) and writes one sheet per case: the photo
with its holes | A | B, which method is A drawn at random per pair, the pairs in random order; the
key (which method is A) goes to a file outside the sheets' folder, so whoever judges the sheets
never sees it. ``score`` counts the verdicts by method: preferences, ties, and the share of
decided pairs with its 95 % (Wilson) interval.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pconv.cli import UsageError, prog_name, run_main
from pconv.errors import ConfigError, InputError, MissingFileError, OutputError, PconvError
from pconv.files import atomic_save_image, atomic_write_bytes, atomic_write_csv
from pconv.images import read_image
from pconv.masks import image_files, read_mask, write_mask
from pconv.options import InpaintOptions
from pconv.sheets import labelled_sheet

__all__ = ["Tally", "main", "pair_sheet", "tally", "wilson_interval"]

VERDICTS = ("A", "B", "tie")
INSTRUCTIONS = """Blind A/B: which fill looks better?

Each pair-NNN.png shows the photo with its holes (white), then fill A and fill B. For each pair,
write A, B or tie in the verdict column of verdicts.csv: the fill you would keep as a
photographer (no visible seams, colours that belong, texture that continues the surroundings).
The methods behind A and B are not named here and change from pair to pair.
"""


@dataclass(frozen=True)
class Tally:
    """Verdicts counted by method: ``wins[method]`` pairs preferred, ``ties``, and the first
    method's share of the decided pairs with its 95 % interval."""

    methods: tuple[str, str]
    wins: dict[str, int]
    ties: int

    @property
    def decided(self) -> int:
        return sum(self.wins.values())

    @property
    def share(self) -> float:
        """The first method's share of decided pairs (``nan`` when none was decided)."""
        return self.wins[self.methods[0]] / self.decided if self.decided else float("nan")

    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.wins[self.methods[0]], self.decided)

    def __str__(self) -> str:
        a, b = self.methods
        text = f"{a} preferred {self.wins[a]}, {b} preferred {self.wins[b]}, ties {self.ties}"
        if self.decided:
            lo, hi = self.interval()
            text += f"; {a} in {self.share:.0%} of decided pairs (95% interval {lo:.0%}-{hi:.0%})"
        return text


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion (good at small counts and near 0 or 1)."""
    if trials == 0:
        return (0.0, 1.0)
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return (max(0.0, centre - half), min(1.0, centre + half))


def pair_sheet(image: np.ndarray, known: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The photo with its holes in white | A | B, labelled."""
    holes = image.copy()
    holes[~known] = 255
    return labelled_sheet([holes, a, b], ["holes", "A", "B"], columns=3)


def tally(key: dict, verdicts: dict[str, str]) -> Tally:
    """Count ``verdicts`` (pair -> A, B or tie) by method, with ``key`` from ``make``.

    Raises:
        InputError: a verdict that is not A, B or tie, a pair the key does not hold, or pairs of
            the key without a verdict.
    """
    pairs = key["pairs"]
    methods = tuple(key["methods"])
    unknown = sorted(set(verdicts) - set(pairs))
    if unknown:
        raise InputError(f"the key has no pair {', '.join(unknown[:5])}: is it the key of these sheets?")
    missing = sorted(set(pairs) - set(verdicts))
    if missing:
        raise InputError(f"{len(missing)} pairs have no verdict ({', '.join(missing[:5])}...): judge every sheet")
    wins = dict.fromkeys(methods, 0)
    ties = 0
    for pair, verdict in verdicts.items():
        if verdict == "tie":
            ties += 1
        else:
            wins[pairs[pair][verdict]] += 1
    return Tally(methods, wins, ties)  # type: ignore[arg-type]


def per_case(key: dict, verdicts: dict[str, str]) -> list[tuple[str, str, str]]:
    """``(case, pair, preferred method or "tie")`` for every judged pair, by case name: which photos
    each method won (read with the judge's notes on them)."""
    pairs = key["pairs"]
    rows = [(pairs[p].get("case", "?"), p, v if v == "tie" else pairs[p][v]) for p, v in verdicts.items() if p in pairs]
    return sorted(rows)


def read_verdicts(path: Path) -> dict[str, str]:
    """``pair -> verdict`` from a verdicts CSV (columns ``pair`` and ``verdict``; case and spaces ignored)."""
    if not path.is_file():
        raise MissingFileError(f"no verdicts file at {path}")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"pair", "verdict"} <= set(rows[0]):
        raise InputError(f"{path} needs the columns pair and verdict")
    out = {}
    for line, row in enumerate(rows, start=2):
        verdict = (row["verdict"] or "").strip()
        verdict = {"a": "A", "b": "B", "tie": "tie"}.get(verdict.lower(), verdict)
        if verdict not in VERDICTS:
            raise InputError(f"{path}, line {line}: verdict {row['verdict']!r} for {row['pair']}; write A, B or tie")
        out[row["pair"].strip()] = verdict
    return out


def _cases(args: argparse.Namespace) -> int:
    from pconv.evaluate import _load_images
    from pconv.masks import generate, parse_kind

    try:
        parse_kind(args.kind)
        low, high = (float(v) for v in args.ratio.split("-"))
    except ValueError as err:
        raise UsageError(f"--kind or --ratio: {err}") from None
    if not 0 <= low < high <= 1 or args.count < 1:
        raise UsageError("--ratio must be LOW-HIGH within 0-1 and --count at least 1")
    images = _load_images(args.images, args.size)
    if not images:
        raise InputError(f"no images in {', '.join(map(str, args.images))}")
    for i in range(args.count):
        stem, image = images[i % len(images)]
        known = generate(image.shape[0], image.shape[1], np.random.default_rng([args.seed, i]), args.kind, (low, high))
        name = f"{i:03d}-{stem}"
        atomic_save_image(args.out / "images" / f"{name}.png", Image.fromarray(image))
        write_mask(args.out / "masks" / f"{name}.png", known)
    print(f"wrote {args.count} cases (holes: {args.kind}, {low:.0%}-{high:.0%} of each photo) to {args.out}")
    return 0


def _results(args: argparse.Namespace, names: list[str], stems: list[str], cases: Path) -> dict[str, dict[str, Path]]:
    """Each method's result file per case: run it (``--methods``) or found in its folder (``--dirs``)."""
    if args.dirs:
        found = {}
        for name, folder in zip(names, args.dirs):
            files = {p.stem: p for p in image_files(folder)}
            lacking = [s for s in stems if s not in files]
            if lacking:
                raise InputError(f"{folder} has no result for {', '.join(lacking[:3])}")
            found[name] = files
        return found
    from pconv.methods import MODEL, load_method
    from pconv.pipeline import Outputs, inpaint_file

    models = {name: load_method(name, args.weights if name == MODEL else None) for name in names}
    out = args.key.parent / (args.key.stem + "-results")  # beside the key, not beside the sheets
    for stem in stems:
        image = cases / "images" / f"{stem}.png"
        for name, model in models.items():
            outputs = Outputs(out / name / f"{stem}.png", methods=(name,))
            inpaint_file({name: model}, image, cases / "masks" / f"{stem}.png", outputs, InpaintOptions())
    return {name: {s: out / name / f"{s}.png" for s in stems} for name in names}


def _make(args: argparse.Namespace) -> int:
    if (args.methods is None) == (args.dirs is None):
        raise UsageError("give --methods A,B or --dirs A_DIR B_DIR")
    if args.dirs is not None:
        names = list(args.names.split(",")) if args.names else [d.name for d in args.dirs]
    else:
        from pconv.methods import parse_methods

        names = parse_methods(args.methods)
    if len(names) != 2 or names[0] == names[1]:
        raise UsageError(f"an A/B test compares two different methods, got {', '.join(names)}")
    out, key_path = args.out.resolve(), args.key.resolve()
    if key_path.is_relative_to(out):
        raise UsageError(f"--key {args.key} is inside --out {args.out}: the judge would see it; put it elsewhere")
    images_dir, masks_dir = args.cases / "images", args.cases / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise MissingFileError(f"{args.cases} needs images/ and masks/ (python -m pconv.abtest cases writes them)")
    stems = sorted(p.stem for p in image_files(images_dir))
    if not stems:
        raise InputError(f"no images in {images_dir}")
    results = _results(args, names, stems, args.cases)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(stems))
    pairs: dict[str, dict[str, str]] = {}
    for number, index in enumerate(order, start=1):
        stem = stems[index]
        photo = read_image(images_dir / f"{stem}.png", 3).pixels
        known, _ = read_mask(masks_dir / f"{stem}.png")
        fills = {name: read_image(results[name][stem], 3).pixels for name in names}
        if any(f.shape != photo.shape for f in fills.values()) or known.shape != photo.shape[:2]:
            raise InputError(f"case {stem}: the photo, its mask and the results differ in size")
        a, b = (names[0], names[1]) if rng.random() < 0.5 else (names[1], names[0])
        pair = f"pair-{number:03d}"
        atomic_save_image(out / f"{pair}.png", Image.fromarray(pair_sheet(photo, known, fills[a], fills[b])))
        pairs[pair] = {"A": a, "B": b, "case": stem}
    atomic_write_csv(out / "verdicts.csv", [[p, ""] for p in pairs], ["pair", "verdict"])
    atomic_write_bytes(out / "README.txt", INSTRUCTIONS)
    key = {"methods": names, "cases": str(args.cases), "seed": args.seed, "pairs": pairs}
    atomic_write_bytes(key_path, json.dumps(key, indent=1))
    print(f"wrote {len(pairs)} sheets and verdicts.csv to {args.out}; the key to {args.key} (keep it from the judge)")
    return 0


def _score(args: argparse.Namespace) -> int:
    if not args.key.is_file():
        raise MissingFileError(f"no key at {args.key}")
    try:
        key = json.loads(args.key.read_text(encoding="utf-8"))
        if not isinstance(key.get("pairs"), dict) or len(key.get("methods", ())) != 2:
            raise ValueError("no pairs or methods")
    except (ValueError, AttributeError) as err:
        raise InputError(f"{args.key} is not a key of python -m pconv.abtest make ({err})") from None
    verdicts = read_verdicts(args.verdicts)
    print(tally(key, verdicts))
    if args.per_case:
        for case, pair, winner in per_case(key, verdicts):
            print(f"  {case} ({pair}): {winner}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog_name("python -m pconv.abtest"),
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cases", help="photos with generated holes to judge on")
    c.add_argument("--images", type=Path, nargs="+", required=True, help="folders of photos (searched recursively)")
    c.add_argument("--size", type=int, default=512, help="centre-crop and resize to this square (default 512)")
    c.add_argument("--kind", default="solid", help="hole shapes, as python -m pconv.masks (default solid)")
    c.add_argument("--ratio", default="0.2-0.6", help="hole-ratio range LOW-HIGH (default 0.2-0.6)")
    c.add_argument("--count", type=int, default=40, help="cases, cycling through the photos (default 40)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", type=Path, required=True, help="folder for images/ and masks/")
    m = sub.add_parser("make", help="pair sheets and a key apart")
    m.add_argument("--cases", type=Path, required=True, help="a folder with images/ and masks/ (from cases)")
    m.add_argument("--methods", help="two methods of predict.py --method to run, e.g. model,pushpull")
    m.add_argument("--dirs", type=Path, nargs=2, metavar=("A_DIR", "B_DIR"), help="or two folders of results")
    m.add_argument("--names", help="with --dirs: the two methods' names (default: the folder names)")
    m.add_argument("--weights", type=Path, help="release file for the model method (default: the released model)")
    m.add_argument("--seed", type=int, default=0, help="sides and order of the pairs (default 0)")
    m.add_argument("--out", type=Path, required=True, help="folder for the sheets, verdicts.csv and README.txt")
    m.add_argument("--key", type=Path, required=True, help="the key file, outside --out")
    s = sub.add_parser("score", help="count the verdicts with the key")
    s.add_argument("--key", type=Path, required=True)
    s.add_argument("--verdicts", type=Path, required=True, help="verdicts.csv with A, B or tie per pair")
    s.add_argument("--per-case", action="store_true", help="also the preferred method of every case")
    return p


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"cases": _cases, "make": _make, "score": _score}[args.command](args)
    except ConfigError as err:
        raise UsageError(str(err)) from None
    except PconvError:
        raise
    except BrokenPipeError:
        raise  # the reader of stdout left: run_main stops quietly
    except OSError as err:
        raise OutputError(str(err)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m pconv.abtest``, ``pconv-abtest``)."""
    return run_main(_main, argv, "python -m pconv.abtest")


if __name__ == "__main__":
    sys.exit(main())
