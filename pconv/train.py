"""Two-stage training of an inpainting network on folders of images (``python train.py``, ``pconv-train``).

Outputs in ``--out RUN_DIR``: ``config.json``, ``last.pt`` / ``best.pt`` checkpoints (atomic;
``--resume`` continues exactly), ``model.safetensors`` (the release file), ``log.csv``,
``val.csv``, ``samples/step_*.png`` and TensorBoard scalars when tensorboard is installed.
Multi-GPU or multi-machine: launch the same command with ``torchrun``. The work is done in
:mod:`pconv.training`; this module is the command line.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pconv.cli import run_main
from pconv.training.config import config_from_args

__all__ = ["main"]


def _main(argv: Sequence[str] | None) -> int:
    cfg = config_from_args(argv)
    from pconv.training.loop import train  # PyTorch loads once the command line is parsed

    try:
        summary = train(cfg)
    except KeyboardInterrupt:
        return 130
    if summary.get("release"):
        best = f", best validation PSNR {summary['best_psnr']:.2f} dB" if summary["best_psnr"] is not None else ""
        print(
            f"trained {summary['steps']} steps in {summary['seconds']:.0f} s{best}; "
            f"{summary['skipped']} unreadable image(s) skipped"
        )
        print(f"release file: {summary['release']} (sha256 {summary['sha256']}; {summary['weights']} weights)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python train.py``, ``pconv-train``)."""
    return run_main(_main, argv, "train.py")


if __name__ == "__main__":
    sys.exit(main())
