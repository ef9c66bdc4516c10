"""Training checkpoints: a typed training state, random-generator state captured when the file is
written, and which run and stage wrote each file.

A checkpoint is written only between two whole steps (a Ctrl-C waits for the step under way,
see :mod:`pconv.training.loop`), so the model, the optimiser, BatchNorm statistics, the step
count and the random generators always agree: resuming continues exactly as if never stopped.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pconv.errors import CheckpointError
from pconv.files import atomic_write, refused_pickle

__all__ = ["CHECKPOINT_VERSION", "TrainState", "load_checkpoint", "restore_rng", "save_checkpoint"]

CHECKPOINT_VERSION = 1


@dataclass
class TrainState:
    """Where a run stands; saved in every checkpoint.

    Attributes:
        run_id: a random id of the run; ``best.pt`` is only released by the run that wrote it.
        stage_index: index of the stage under way in the run's plan (= number of stages done).
        stage_step: steps done in that stage.
        batches: batches consumed since the start (positions the data sampler on resume).
        best: best validation PSNR of the current stage (``-inf`` before its first validation).
        best_stage: stage index of the ``best.pt`` this run wrote, or ``None``.
        bad_evals: validations without improvement in a row (early stopping).
        seconds: training time so far.
        skipped: unreadable files met so far (reported once each).
    """

    run_id: str = ""
    stage_index: int = 0
    stage_step: int = 0
    batches: int = 0
    best: float = -math.inf
    best_stage: int | None = None
    bad_evals: int = 0
    seconds: float = 0.0
    skipped: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainState:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def _rng_state(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def save_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scaler: torch.amp.GradScaler,
    state: TrainState,
    config: dict,
    model_config: dict,
    device: torch.device,
    ema: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write a checkpoint atomically; the random generators are captured now, at save time.

    ``optimizer`` is ``None`` at a stage boundary (the next stage starts a fresh one); ``ema`` is
    the moving average of the weights (``--ema``), or ``None``.
    """
    torch_rng, cuda_rng = _rng_state(device)
    payload = {
        "version": CHECKPOINT_VERSION,
        "config": config,
        "model_config": model_config,
        "model": model.state_dict(),
        "ema": ema,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scaler": scaler.state_dict(),
        "state": dataclasses.asdict(state),
        "torch_rng": torch_rng,
        "cuda_rng": cuda_rng,
    }
    try:
        atomic_write(path, lambda f: torch.save(payload, f))
    except OSError as err:
        raise CheckpointError(f"{err}; the previous {path.name} (if any) is intact") from None


def load_checkpoint(path: str | Path) -> dict:
    """A training checkpoint, loaded with ``weights_only=True``; its ``state`` as a :class:`TrainState`."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(refused_pickle(path, err)) from None
    except (OSError, RuntimeError, EOFError) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {str(err).splitlines()[0]}") from None
    if not isinstance(ckpt, dict) or ckpt.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} is not a pconv training checkpoint")
    ckpt["state"] = TrainState.from_dict(ckpt["state"])
    return ckpt


def restore_rng(ckpt: dict, device: torch.device) -> None:
    """Put the random generators back as they were when ``ckpt`` was written."""
    torch.set_rng_state(ckpt["torch_rng"])
    if device.type == "cuda" and ckpt.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(ckpt["cuda_rng"], device)
