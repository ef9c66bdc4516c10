"""Score a model by hole size against classical inpainting (``python -m pconv.evaluate``).

    python -m pconv.evaluate --weights model.safetensors --images photos/ --bins --per-bin 20 --out report/
    python -m pconv.evaluate --weights model.safetensors --images photos/ --masks masks/eval-512 --out report/

The protocol of Liu et al. 2018, Table 1: metrics on the composited result (known pixels from
the ground truth) over the whole image (L1 in % of the full range, PSNR, SSIM), plus PSNR inside
the hole alone, grouped by hole-to-image ratio bins (0.01, 0.1], (0.1, 0.2], ... (0.5, 0.6].
Baselines run on exactly the same images and masks: OpenCV Telea and Navier-Stokes
(radius 3), scikit-image biharmonic, the push-pull fill (:mod:`pconv.fill`, the residual
model's starting point) and, when its extra is installed, PatchMatch (the paper's comparison;
``pip install 'pconv[patchmatch]'``, seconds per image). They are the classical methods of
:mod:`pconv.methods`, the registry ``predict.py --method`` also reads.

Writes ``report.md`` (a table per metric), ``results.csv`` (method x bin x metric),
``cases.csv`` (every image, mask and method), ``metrics.png`` (each metric against hole ratio,
one line per method) and ``examples.png`` (holes | each method | ground truth).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from pconv.cli import (
    WEIGHTS_HELP,
    UsageError,
    add_inpaint_options,
    inpaint_options,
    prog_name,
    resolve_device,
    run_main,
)
from pconv.errors import InputError, MissingFileError, OutputError, require
from pconv.files import atomic_save_image, atomic_write_bytes, atomic_write_csv, check_writable
from pconv.images import load_rgb
from pconv.masks import RATIO_BINS, generate, mask_files, parse_kind, read_mask
from pconv.methods import FILLS, METHODS, Fill
from pconv.metrics import METRICS, goodness, score
from pconv.sheets import example_grid, example_row

__all__ = ["DEFAULT_BASELINES", "Case", "bin_of", "evaluate", "main", "write_report"]

# Run unless --baselines says otherwise (patchmatch joins them when it is installed: seconds per image).
DEFAULT_BASELINES = ("telea", "ns", "biharmonic", "pushpull")


@dataclass
class Case:
    """One image with one mask: ``image`` (H, W, 3) uint8, ``known`` (H, W) bool."""

    name: str
    bin: str
    image: np.ndarray
    known: np.ndarray


def bin_of(known: np.ndarray) -> str:
    """The hole-ratio bin of a mask, or ``"other"`` outside (0.01, 0.6]."""
    ratio = float(np.count_nonzero(~known)) / known.size
    for name, (low, high) in RATIO_BINS.items():
        if low < ratio <= high:
            return name
    return "other"


def _load_images(folders: list[Path], size: int | None) -> list[tuple[str, np.ndarray]]:
    """Every image under ``folders`` (centre-cropped to ``size`` unless ``None``), named by stem."""
    from pconv.data import center_crop, find_images  # PyTorch loads after --help

    images = []
    for folder in folders:
        for path in find_images(folder):
            img = load_rgb(path, min_side=size)
            images.append((path.stem, np.asarray(img if size is None else center_crop(img, size))))
    return images


def generated_cases(images: list[tuple[str, np.ndarray]], per_bin: int, seed: int, kind: str = "strokes") -> list[Case]:
    """``per_bin`` cases per ratio bin, cycling through the images; masks of ``kind`` (a generator
    kind or mixture, e.g. ``"strokes"`` or ``"solid"``) from ``(seed, bin, case)``."""
    cases = []
    for b, (name, ratio) in enumerate(RATIO_BINS.items()):
        for j in range(per_bin):
            stem, image = images[j % len(images)]
            known = generate(image.shape[0], image.shape[1], np.random.default_rng([seed, b, j]), kind, ratio)
            cases.append(Case(f"{stem}/{name}-{j:03d}", name, image, known))
    return cases


def folder_cases(images: list[tuple[str, np.ndarray]], folder: Path, invert: bool) -> list[Case]:
    """Masks from a folder: paired with images by name when every image has one, else both cycled.

    Each mask's bin is its hole ratio after resizing (nearest) to its image.
    """
    if not folder.is_dir():
        raise MissingFileError(f"mask folder not found: {folder}")
    files = mask_files(folder)  # contact sheets are previews, not masks
    if not files:
        raise InputError(f"no masks in {folder}")
    by_stem = {p.stem: p for p in files}
    paired = all(stem in by_stem for stem, _ in images)
    count = max(len(images), len(files))  # cycling uses every image and every mask at least once
    pairs = (
        [(stem, image, by_stem[stem]) for stem, image in images]
        if paired
        else [(*images[i % len(images)], files[i % len(files)]) for i in range(count)]
    )
    cases = []
    for stem, image, path in pairs:
        known, _ = read_mask(path, invert)
        if known.shape != image.shape[:2]:
            known = cv2.resize(known.astype(np.uint8), image.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0
        if known.all() or not known.any():
            continue  # nothing to score
        cases.append(Case(f"{stem}/{path.relative_to(folder).with_suffix('')}", bin_of(known), image, known))
    if not cases:
        raise InputError(f"no usable masks in {folder} (each is empty or covers the whole image)")
    return cases


def evaluate(
    cases: list[Case],
    methods: dict[str, Fill],
    progress: bool = True,
    keep: dict[str, dict[str, np.ndarray]] | None = None,
) -> list[dict]:
    """Score every method on every case; one record per (case, method) with metrics and seconds.

    For each case name already in ``keep``, the composited result of every method is stored
    there (``keep[case][method]``), so the example grid needs no second run. Each method first runs
    once untimed, so one-time costs (imports, first allocations) do not count as the first case's time.
    """
    if cases:
        for run in methods.values():
            run(cases[0].image, cases[0].known)
    records = []
    for case in tqdm(cases, desc="evaluating", unit="case", disable=not progress):
        truth = case.image.astype(np.float64) / 255.0
        for method, run in methods.items():
            start = time.perf_counter()
            result = run(case.image, case.known)
            seconds = time.perf_counter() - start
            comp = np.where(case.known[..., None], case.image, result)
            if keep is not None and case.name in keep:
                keep[case.name][method] = comp
            records.append(
                {
                    "case": case.name,
                    "bin": case.bin,
                    "method": method,
                    "seconds": seconds,
                    **score(comp.astype(np.float64) / 255.0, truth, case.known),
                }
            )
    return records


def summarise(records: list[dict]) -> dict[tuple[str, str], dict[str, float]]:
    """Mean of each metric and seconds per ``(method, bin)``, with bin ``"all"`` over every case."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["method"], r["bin"]), []).append(r)
        groups.setdefault((r["method"], "all"), []).append(r)
    out = {}
    for key, rows in groups.items():
        stats = {m: float(np.mean([r[m] for r in rows])) for m in (*METRICS, "seconds")}
        stats["cases"] = len(rows)
        out[key] = stats
    return out


def write_report(
    records: list[dict],
    cases: list[Case],
    methods: dict[str, Fill],
    out: Path,
    title: str,
    examples: dict[str, list[np.ndarray]],
) -> None:
    """``report.md``, ``results.csv``, ``cases.csv``, ``metrics.png`` and ``examples.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(records)
    bins = [b for b in (*RATIO_BINS, "other") if any(k[1] == b for k in summary)] + ["all"]
    names = list(methods)
    atomic_write_csv(out / "cases.csv", records)
    rows = [
        [method, b, metric, f"{summary[(method, b)][metric]:.6g}", summary[(method, b)]["cases"]]
        for method in names
        for b in bins
        for metric in (*METRICS, "seconds")
    ]
    atomic_write_csv(out / "results.csv", rows, ["method", "bin", "metric", "value", "cases"])

    labels = {
        "l1": "L1 (%) lower is better",
        "psnr": "PSNR (dB)",
        "ssim": "SSIM",
        "hole_psnr": "PSNR inside the hole (dB)",
        "edge": "Error in the 2-px band inside hole edges (grey levels) lower is better",
        "detail": "Fine detail in the hole relative to the photo's (1 = as much; smooth fills near 0)",
        "seconds": "seconds per image",
    }
    lines = [
        f"# {title}",
        "",
        f"{len({c.name.split('/')[0] for c in cases})} images, {len(cases)} cases; "
        "metrics on the composited result; best per column in bold.",
        "",
    ]
    for metric in (*METRICS, "seconds"):
        good = (lambda v, m=metric: goodness(m, v)) if metric in METRICS else (lambda v: -v)
        lines += [
            f"## {labels[metric]}",
            "",
            "| method | " + " | ".join(b if b != "all" else "all" for b in bins) + " |",
            "| --- |" + " ---: |" * len(bins),
        ]
        best = {b: max(good(summary[(m, b)][metric]) for m in names) for b in bins}
        for method in names:
            cells = []
            for b in bins:
                v = summary[(method, b)][metric]
                text = f"{v:.4f}" if metric == "ssim" else f"{v:.3f}" if metric == "seconds" else f"{v:.2f}"
                cells.append(f"**{text}**" if metric != "seconds" and good(v) == best[b] and len(names) > 1 else text)
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    counts = ", ".join(f"{b}: {summary[(names[0], b)]['cases']}" for b in bins if b != "all")
    lines += [
        f"Cases per bin: {counts}.",
        "",
        "![metrics against hole ratio](metrics.png)",
        "",
        "![examples: holes, each method, ground truth](examples.png)",
        "",
    ]
    atomic_write_bytes(out / "report.md", "\n".join(lines))
    _plot(summary, names, [b for b in bins if b in RATIO_BINS], out / "metrics.png", labels)
    if examples:
        atomic_save_image(out / "examples.png", Image.fromarray(example_grid(examples, names)))


def _plot(summary: dict, names: list[str], bins: list[str], path: Path, labels: dict[str, str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.6), constrained_layout=True)
    centres = [100 * sum(RATIO_BINS[b]) / 2 for b in bins]
    for ax, metric in zip(axes, METRICS):
        for method in names:
            ax.plot(centres, [summary[(method, b)][metric] for b in bins], marker="o", label=method)
        ax.set_xlabel("hole ratio (%)")
        ax.set_title(labels[metric])
        ax.grid(alpha=0.3)
    axes[0].legend()
    atomic_save_image(path, fig, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog_name("python -m pconv.evaluate"),
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument(
        "--weights",
        type=Path,
        help=WEIGHTS_HELP,
    )
    p.add_argument(
        "--images", type=Path, nargs="+", required=True, help="folders of ground-truth images (searched recursively)"
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--masks", type=Path, help="folder of masks (white = hole), paired by name or cycled")
    src.add_argument("--bins", action="store_true", help="generate masks for each hole-ratio bin (the default)")
    p.add_argument("--per-bin", type=int, default=20, help="generated cases per bin (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated masks (default 0)")
    p.add_argument(
        "--mask-kind",
        default="strokes",
        help="generated hole shapes: strokes (default), solid (boxes, ellipses, blobs), any kind of "
        "python -m pconv.masks, or a mixture such as strokes=1,solid=1",
    )
    p.add_argument("--invert-masks", action="store_true", help="mask files use white = known")
    p.add_argument("--size", type=int, default=512, help="centre-crop and resize images to this square (default 512)")
    p.add_argument("--native", action="store_true", help="evaluate at each image's own size instead of --size")
    p.add_argument(
        "--baselines",
        help=f"comma-separated, from {', '.join(FILLS)}; 'none' for the model alone (default: "
        f"{', '.join(DEFAULT_BASELINES)}, and patchmatch when PyPatchMatch is installed)",
    )
    p.add_argument("--examples", type=int, default=6, help="cases shown in examples.png (default 6, one per bin)")
    p.add_argument(
        "--flip",
        action="store_true",
        help="also score the model with mirror-image averaging (predict.py --flip), as a second row",
    )
    add_inpaint_options(p, ("scale", "precision"))
    p.add_argument("--name", help="the model's name in the report (default: the weights file name)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--out", type=Path, required=True, help="report folder")
    return p


def _baselines(text: str | None) -> list[str]:
    """``--baselines``: the classical methods to run (the defaults, with patchmatch when it is installed)."""
    if text is None:
        return [*DEFAULT_BASELINES, *(["patchmatch"] if METHODS["patchmatch"].available() else [])]
    chosen = [] if text.strip() == "none" else [b.strip() for b in text.split(",") if b.strip()]
    unknown = [b for b in chosen if b not in FILLS]
    if unknown:
        raise UsageError(f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(FILLS)}")
    for b in chosen:
        METHODS[b].require()
    return chosen


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    require("evaluate", "the evaluation", "skimage", "matplotlib")
    from pconv.inpaint import inpaint  # PyTorch loads once the command line is parsed
    from pconv.io import DEFAULT_WEIGHTS, load_model

    chosen = _baselines(args.baselines)
    if args.per_bin < 1 or args.size < 16:
        raise UsageError("--per-bin must be at least 1 and --size at least 16")
    try:
        parse_kind(args.mask_kind)
    except ValueError as err:
        raise UsageError(str(err)) from None
    device = resolve_device(args.device)
    model = load_model(args.weights, device=device)
    weights = args.weights or DEFAULT_WEIGHTS
    images = _load_images(args.images, None if args.native else args.size)
    cases = (
        folder_cases(images, args.masks, args.invert_masks)
        if args.masks
        else generated_cases(images, args.per_bin, args.seed, args.mask_kind)
    )
    name = args.name or weights.stem
    plain = inpaint_options(args, ("scale", "precision"))
    flipped = inpaint_options(args, ("scale", "precision"), flip=True)
    methods: dict[str, Fill] = {name: lambda image, known: inpaint(model, image, known, plain, device=device).image}
    if args.flip:
        methods[f"{name} + flip"] = lambda image, known: inpaint(model, image, known, flipped, device=device).image
    methods.update({b: FILLS[b] for b in chosen})
    by_bin: dict[str, list[Case]] = {}
    for case in cases:
        by_bin.setdefault(case.bin, []).append(case)
    # the i-th bin shows its i-th case, so the examples vary in image too
    examples = [group[i % len(group)] for i, group in enumerate(list(by_bin.values())[: args.examples])]
    kept: dict[str, dict[str, np.ndarray]] = {case.name: {} for case in examples}
    try:
        check_writable(args.out)  # before the evaluation, not after it
    except OSError as err:
        raise OutputError(str(err)) from None
    records = evaluate(cases, methods, keep=kept)
    shown = {case.name: example_row(case.image, case.known, kept[case.name]) for case in examples}
    write_report(records, cases, methods, args.out, f"Evaluation of {name}", shown)
    summary = summarise(records)
    for method in methods:
        s = summary[(method, "all")]
        print(
            f"{method:>20}: PSNR {s['psnr']:.2f} dB, SSIM {s['ssim']:.4f}, L1 {s['l1']:.2f}%, "
            f"hole PSNR {s['hole_psnr']:.2f} dB, edge error {s['edge']:.2f}, detail {s['detail']:.2f}, "
            f"{s['seconds']:.3f} s/image"
        )
    print(f"report: {args.out / 'report.md'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m pconv.evaluate``, ``pconv-evaluate``)."""
    return run_main(_main, argv, "python -m pconv.evaluate")


if __name__ == "__main__":
    sys.exit(main())
