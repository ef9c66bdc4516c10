"""Two-stage training of an inpainting network on folders of images (``python train.py``, ``pconv-train``).

Outputs in ``--out RUN_DIR``: ``config.json``, ``last.pt`` / ``best.pt`` checkpoints (atomic;
``--resume`` continues exactly), ``model.safetensors`` (the release file), ``log.csv``,
``val.csv``, ``samples/step_*.png`` and TensorBoard scalars when tensorboard is installed.
Multi-GPU or multi-machine: launch the same command with ``torchrun``. The work is done in
:mod:`pconv.training`; this module is the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pconv.cli import UsageError, prog_name, run_main
from pconv.configs import LossWeights
from pconv.training.config import _SECTIONS, RESUMABLE, STAGES, RunConfig, TrainConfig, check

__all__ = ["build_parser", "config_from_args", "main"]


def build_parser() -> argparse.ArgumentParser:
    """``train.py``'s flags, derived from the dataclasses; defaults are suppressed so given flags are known."""
    p = argparse.ArgumentParser(
        prog=prog_name("train.py"),
        description="Two-stage training of an inpainting network on folders of images.",
        argument_default=argparse.SUPPRESS,
    )
    for name, section in _SECTIONS.items():
        group = p.add_argument_group(name, section.__doc__)
        defaults = section()
        for f in dataclasses.fields(section):
            if f.name == "weights":
                for w in dataclasses.fields(LossWeights):
                    group.add_argument(
                        f"--loss-{w.name}",
                        type=float,
                        dest=f"loss_{w.name}",
                        help=f"weight of the {w.name} term (default {w.default})",
                    )
                continue
            options = {k: v for k, v in f.metadata.items() if k != "help"}
            default = getattr(defaults, f.name)
            shown = (
                ""
                if default in (None, "", ())
                else f" (default {' '.join(map(str, default)) if isinstance(default, tuple) else default})"
            )
            flag = "--" + f.name.replace("_", "-")
            if isinstance(default, bool):
                group.add_argument(flag, action="store_true", help=f.metadata["help"])
            else:
                options.setdefault("type", _field_type(f))
                group.add_argument(flag, help=f.metadata["help"] + shown, **options)
            if f.name == "stage":
                group.add_argument("--stages", dest="stage", choices=STAGES, help="same as --stage")
    return p


def _field_type(f: dataclasses.Field) -> type:
    text = str(f.type)
    return int if text.startswith("int") else float if text.startswith("float") else str


def config_from_args(argv: Sequence[str] | None) -> TrainConfig:
    """Parse the command line; with ``--resume`` the saved run's configuration is the base."""
    given = vars(build_parser().parse_args(argv))
    for key in ("crop_scale", "lr_milestones"):
        if key in given:
            given[key] = tuple(given[key])
    if given.get("resume"):
        if given.get("overwrite"):
            raise UsageError("--resume continues a run and --overwrite replaces it: give one of them")
        out = Path(given.get("out", RunConfig.out))
        saved = out / "config.json"
        if not (out / "last.pt").is_file() or not saved.is_file():
            raise UsageError(f"nothing to resume in {out} (no last.pt and config.json)")
        try:
            raw = json.loads(saved.read_text(encoding="utf-8"))
            if not isinstance(raw, dict):
                raise ValueError("not a mapping of options")
            base = TrainConfig.from_flat(raw).to_flat()
        except (ValueError, TypeError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
            raise UsageError(f"{saved} is not a configuration this project wrote ({err}); cannot resume") from None
        changed = sorted(k for k, v in given.items() if k not in RESUMABLE | {"out"} and _norm(base.get(k)) != _norm(v))
        if changed:
            raise UsageError(f"--resume continues the saved run; these options differ from it: {', '.join(changed)}")
        cfg = TrainConfig.from_flat({**base, **given})
        check(cfg)
        return cfg
    if "train" not in given:
        raise UsageError("--train DIR is required")
    if given.get("init"):
        from pconv.training.setup import inherit_init_architecture  # reads the file (PyTorch loads)

        given = inherit_init_architecture(given)
    cfg = TrainConfig.from_flat(given)
    check(cfg)
    return cfg


def _norm(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def _main(argv: Sequence[str] | None) -> int:
    cfg = config_from_args(argv)
    from pconv.training.loop import train  # PyTorch loads once the command line is parsed

    try:
        summary = train(cfg)
    except KeyboardInterrupt:
        return 130
    if summary.finished:
        print(
            f"the run in {cfg.run.out} had already finished ({summary.steps} steps); nothing was trained and "
            f"no file changed. Release file: {summary.release} (sha256 {summary.sha256})"
        )
        return 0
    if summary.release is not None:
        best = f", best validation PSNR {summary.best_psnr:.2f} dB" if summary.best_psnr is not None else ""
        print(
            f"trained {summary.steps} steps in {summary.seconds:.0f} s{best}; "
            f"{summary.skipped} unreadable image(s) skipped"
        )
        print(f"release file: {summary.release} (sha256 {summary.sha256}; {summary.weights} weights)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python train.py``, ``pconv-train``)."""
    return run_main(_main, argv, "train.py")


if __name__ == "__main__":
    sys.exit(main())
