"""Replay a release's recipe: ``python -m pconv.training.recipe RECIPE --out DIR`` (``pconv-recipe``).

Runs every stage of the recipe (training runs, averaging, casting; see
:mod:`pconv.training.recipes`) into ``DIR/stages/`` and writes the release file into ``DIR``.
Interrupted, the same command continues where it stopped; run again after it finished, it changes
no file. The shipped release's recipe is ``recipes/pconv_unet_photos_512.toml``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pconv.cli import prog_name, run_main

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog_name("python -m pconv.training.recipe"),
        description="Replay a release's recipe: every training stage and the manual steps after them.",
    )
    p.add_argument("recipe", metavar="RECIPE", help="the recipe file (TOML), e.g. recipes/pconv_unet_photos_512.toml")
    p.add_argument("--out", required=True, metavar="DIR", help="the replay's folder (one recipe per folder)")
    p.add_argument(
        "--root",
        default=".",
        metavar="DIR",
        help="where the recipe's input paths start (default: the current folder, the repository for shipped recipes)",
    )
    return p


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from pconv.training.recipes import load_recipe, replay  # PyTorch loads once the command line is parsed

    recipe = load_recipe(args.recipe)
    release = replay(recipe, args.out, args.root)
    from pconv.io import sha256_of

    print(f"{recipe.name}: {release} (sha256 {sha256_of(release)})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m pconv.training.recipe``, ``pconv-recipe``)."""
    return run_main(_main, argv, "python -m pconv.training.recipe")


if __name__ == "__main__":
    sys.exit(main())
