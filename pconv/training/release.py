"""A run's release file: its weights with the configuration and how they were trained."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from torch import nn

from pconv.data import MaskSource
from pconv.io import save_model
from pconv.models import ARCHITECTURES
from pconv.training.checkpoint import TrainState, load_checkpoint
from pconv.training.config import TrainConfig
from pconv.training.distributed import World
from pconv.training.schedule import Stage
from pconv.training.setup import training_hole_depth

__all__ = ["write_release"]


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
                "hole_depth": round(training_hole_depth(masks), 1),
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
