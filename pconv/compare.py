"""Paired comparison of two methods on the same cases (``python -m pconv.compare``).

    python -m pconv.compare report/ --model candidate
    python -m pconv.compare new/ old/ --model candidate --against release,pushpull --metrics psnr,ssim,edge

Reads the ``cases.csv`` of one or more :mod:`pconv.evaluate` reports scored on the same images and
masks (same ``--images``, ``--size``, ``--seed``, ``--mask-kind`` and ``--per-bin``), pairs every
case of ``--model`` with the same case of each other method, and prints the mean difference per
hole-ratio bin with its standard error and how many cases the model won. A mean difference of one
standard error is noise; two-three is a result. Paired differences are far steadier than the two
means they come from, since most of the variance is the photo and the hole, shared by both.

Reports are checked against each other: a method found in two of them (the baselines usually
are) must have the same scores there, else they scored different cases and the command stops.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pconv.cli import prog_name, run_main
from pconv.errors import InputError, MissingFileError
from pconv.metrics import METRICS, goodness_difference, higher_is_better

__all__ = ["Difference", "beats", "main", "paired", "read_cases"]

Scores = dict[str, dict[str, dict[str, float | str]]]  # method -> case -> {"bin": ..., metric: value}
_TOLERANCE = 1e-3  # relative: float32 fills differ in the last digits between thread counts; other masks differ more


@dataclass(frozen=True)
class Difference:
    """``model - against`` in ``metric`` over the cases of one bin (``"all"``: every case)."""

    bin: str
    metric: str
    mean: float
    se: float  # standard error of the mean difference (0 for one case)
    wins: int  # cases where the model is strictly better
    cases: int

    @property
    def better(self) -> bool:
        """Whether the model is better on average, in the metric's own direction."""
        return self.mean > 0 if higher_is_better(self.metric) else self.mean < 0


def _csv_path(path: Path) -> Path:
    path = path / "cases.csv" if path.is_dir() else path
    if not path.is_file():
        raise MissingFileError(f"no cases.csv at {path} (pass a python -m pconv.evaluate report folder)")
    return path


def read_cases(paths: Iterable[str | Path]) -> Scores:
    """Every method's scores per case from the ``cases.csv`` of one or more reports (folders or files).

    Raises :class:`~pconv.errors.InputError` when the reports disagree about a case (a method scored
    in two of them differently, or a case in different bins): they scored different masks."""
    scores: Scores = {}
    bins: dict[str, str] = {}
    for path in map(_csv_path, map(Path, paths)):
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        columns = set(rows[0] if rows else ())
        metrics = [m for m in METRICS if m in columns]  # older reports lack the later metrics
        missing = {"case", "bin", "method"} - columns
        if missing or not metrics:
            raise InputError(
                f"{path} is not a cases.csv of python -m pconv.evaluate (no {', '.join(sorted(missing) or METRICS)})"
            )
        for row in rows:
            case, method = row["case"], row["method"]
            if bins.setdefault(case, row["bin"]) != row["bin"]:
                raise InputError(
                    f"{path}: case {case} is in bin {row['bin']} here and {bins[case]} elsewhere: "
                    "the reports scored different masks"
                )
            try:
                values = {m: float(row[m]) for m in metrics if row[m] != ""}
            except ValueError as err:
                raise InputError(f"{path}: case {case}, {method}: {err}") from None
            seen = scores.setdefault(method, {}).get(case)
            if seen is not None:
                for m, v in values.items():
                    if m in seen and not math.isclose(v, float(seen[m]), rel_tol=_TOLERANCE, abs_tol=1e-9):
                        raise InputError(
                            f"{path}: {method}'s {m} on {case} is {v:.6g} here and {seen[m]:.6g} in an earlier "
                            "report: they scored different cases (use the same --images, --size, --seed, "
                            "--mask-kind and --per-bin)"
                        )
                continue
            scores[method][case] = {"bin": row["bin"], **values}
    return scores


def paired(scores: Scores, model: str, against: str, metric: str) -> list[Difference]:
    """``model - against`` in ``metric`` per bin (sorted by name) and over all
    cases both methods scored (last, bin ``"all"``). For a metric with a target (``detail``: 1),
    the difference is how much closer to the target the model is."""
    for name in (model, against):
        if name not in scores:
            raise InputError(f"no method {name!r} in the reports; they hold {', '.join(sorted(scores))}")
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)}")
    shared = [c for c in scores[model] if c in scores[against]]
    if not shared:
        raise InputError(f"{model} and {against} share no cases")
    for name in (model, against):
        if any(metric not in scores[name][c] for c in shared):
            raise InputError(
                f"the reports have no {metric} for {name} (written before python -m pconv.evaluate scored it)"
            )
    groups: dict[str, list[float]] = {}
    for case in shared:
        diff = goodness_difference(metric, float(scores[model][case][metric]), float(scores[against][case][metric]))
        groups.setdefault(str(scores[model][case]["bin"]), []).append(diff)
        groups.setdefault("all", []).append(diff)
    out = []
    for name in [*sorted(b for b in groups if b != "all"), "all"]:  # bins are named "01-10", "10-20", ...
        diffs = groups[name]
        n = len(diffs)
        mean = sum(diffs) / n
        se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n) if n > 1 else 0.0
        wins = sum(d > 0 if higher_is_better(metric) else d < 0 for d in diffs)
        out.append(Difference(name, metric, mean, se, wins, n))
    return out


def beats(differences: Iterable[Difference]) -> bool:
    """Whether the model is better on average in every one of ``differences``."""
    return all(d.better for d in differences)


def _table(scores: Scores, model: str, against: str, metrics: list[str]) -> tuple[list[str], list[str]]:
    """A markdown table of ``model - against``, and the metrics and bins where the model is behind."""
    columns = {m: paired(scores, model, against, m) for m in metrics}
    lines = [
        f"## {model} - {against}",
        "",
        "| bin | cases | " + " | ".join(f"{m} (+/- SE, wins)" for m in metrics) + " |",
        "| --- | ---: |" + " ---: |" * len(metrics),
    ]
    behind = []
    for i, first in enumerate(columns[metrics[0]]):
        cells = []
        for m in metrics:
            d = columns[m][i]
            digits = 4 if m == "ssim" else 3
            mark = "" if d.better else " (behind)"
            cells.append(f"{d.mean:+.{digits}f} +/- {d.se:.{digits}f}, {d.wins}/{d.cases}{mark}")
            if not d.better:
                behind.append(f"{m} in {d.bin}")
        lines.append(f"| {first.bin} | {first.cases} | " + " | ".join(cells) + " |")
    return lines, behind


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog_name("python -m pconv.compare"),
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "reports", nargs="+", type=Path, help="report folders (or their cases.csv) of python -m pconv.evaluate"
    )
    p.add_argument("--model", required=True, help="the method to judge (its name in the reports)")
    p.add_argument("--against", help="comma-separated methods to compare with (default: every other method)")
    p.add_argument(
        "--metrics",
        default="psnr,ssim,edge",
        help=f"comma-separated, from {', '.join(METRICS)} (default psnr,ssim,edge)",
    )
    return p


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    scores = read_cases(args.reports)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    against = [a.strip() for a in args.against.split(",")] if args.against else [m for m in scores if m != args.model]
    lines, summary = [], []
    for other in against:
        table, behind = _table(scores, args.model, other, metrics)
        lines += [*table, ""]
        summary.append(
            f"{args.model} is ahead of {other} in {', '.join(metrics)} in every bin"
            if not behind
            else f"{args.model} is behind {other} in {', '.join(behind)}"
        )
    print("\n".join(lines + summary))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m pconv.compare``, ``pconv-compare``)."""
    return run_main(_main, argv, "python -m pconv.compare")


if __name__ == "__main__":
    sys.exit(main())
