"""A run's release file: its weights with the configuration and how they were trained."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from pconv.data import MaskSource
from pconv.io import save_model, sha256_of
from pconv.models import ARCHITECTURES
from pconv.training.checkpoint import TrainState, load_checkpoint
from pconv.training.config import TrainConfig
from pconv.training.distributed import World
from pconv.training.schedule import Stage
from pconv.training.setup import training_hole_depth

__all__ = ["RESIDUAL_CONTEXT", "TrainSummary", "finished_summary", "release_hole_depth", "write_release"]

# A residual model's network only corrects its base fill, and the fill covers a hole of any depth,
# as long as the crop around the hole holds known pixels: a quarter of the training size leaves
# such context on every side. Measured on the validation photos at 512 px (solid holes, 60 cases):
# the masks' own depth (88 px) sent the biggest holes to a coarse scale and blurred their edges
# (edge error 8.90 against push-pull's 8.59); 128 px scored as full resolution did (8.34).
RESIDUAL_CONTEXT = 0.25


def release_hole_depth(mask_depth: float, size: int, base_fill: str) -> float:
    """The hole depth a release file records (what ``pconv.inpaint`` fills at full resolution):
    the training masks' depth, for a residual model at least :data:`RESIDUAL_CONTEXT` of the size."""
    if base_fill != "none":
        mask_depth = max(mask_depth, RESIDUAL_CONTEXT * size)
    return round(mask_depth, 1)


def write_release(
    cfg: TrainConfig,
    model: nn.Module,
    plan: list[Stage],
    state: TrainState,
    world: World,
    out: Path,
    masks: MaskSource,
    seconds: float,
) -> tuple[Path, str, str]:
    """Write ``model.safetensors``: this run's ``best.pt`` when it was written in the last stage,
    else the final weights (``model``: with ``--ema``, the averaged ones); returns its path, sha256
    and which weights it holds."""
    best_path = out / "best.pt"
    release = ARCHITECTURES[cfg.model.arch].build(cfg.model_config())
    source = "last"
    if state.best_stage == len(plan) - 1 and best_path.is_file():
        best = load_checkpoint(best_path)
        if best["state"].run_id == state.run_id:
            release.load_state_dict(best["ema"] if best.get("ema") is not None else best["model"])
            source = "best"
    if source == "last":
        release.load_state_dict(model.state_dict())
    extra = {
        "training": json.dumps(
            {
                "stages": [dataclasses.asdict(s) for s in plan],
                "batch_size": cfg.data.batch_size,
                "size": cfg.data.size,
                "hole_depth": release_hole_depth(training_hole_depth(masks), cfg.data.size, cfg.model.base_fill),
                "mask_kind": cfg.data.mask_kind,
                "mask_ratio": cfg.data.mask_ratio,
                "crop_scale": list(cfg.data.crop_scale),
                "world_size": world.world_size,
                "weights": source,
                "ema": cfg.schedule.ema,
                "seconds": round(seconds, 1),
            }
        )
    }
    path = out / "model.safetensors"
    return path, save_model(release, path, extra=extra), source


@dataclass(frozen=True)
class TrainSummary:
    """What :func:`train` did (rank 0's view).

    Attributes:
        steps: optimisation steps run, over all stages and resumptions.
        seconds: training time, over all resumptions.
        skipped: unreadable training images skipped.
        best_psnr: the last stage's best validation PSNR (``None`` without validation).
        release: the release file written (``None`` on other ranks).
        sha256: its digest.
        weights: ``"best"`` (the last stage's best validation) or ``"last"`` (the final weights).
        finished: the run (resumed) had already run every stage; no file was written.
    """

    steps: int
    seconds: float
    skipped: int
    best_psnr: float | None
    release: Path | None = None
    sha256: str | None = None
    weights: str | None = None
    finished: bool = False  # the run had already finished: nothing was trained or written


def finished_summary(state: TrainState, out: Path, validated: bool) -> TrainSummary:
    """The summary of a run that already ran every stage (``--resume`` of a finished run)."""
    release = out / "model.safetensors"
    return TrainSummary(
        steps=state.batches,
        seconds=state.seconds,
        skipped=len(state.skipped),
        best_psnr=state.best if validated and math.isfinite(state.best) else None,
        release=release,
        sha256=sha256_of(release),
        weights="unchanged",
        finished=True,
    )
