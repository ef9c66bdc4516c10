"""The stages of a run and the learning rate along them."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pconv.errors import ConfigError
from pconv.training.checkpoint import TrainState
from pconv.training.config import TrainConfig

__all__ = ["Stage", "global_step", "lr_at", "plan_stages"]


@dataclass(frozen=True)
class Stage:
    name: str
    steps: int
    lr: float


def plan_stages(cfg: TrainConfig, batches_per_epoch: int) -> list[Stage]:
    """The stages to run and their lengths in steps."""
    s = cfg.schedule

    def length(steps: int | None, epochs: float | None, default: int, what: str) -> int:
        if steps is not None and epochs is not None:
            raise ConfigError(f"give the {what} length in steps or in epochs, not both")
        n = math.ceil(epochs * batches_per_epoch) if epochs is not None else steps if steps is not None else default
        if n < 1:
            raise ConfigError(f"the {what} stage needs at least one step")
        return n

    plan = []
    if s.stage in ("pretrain", "both"):
        plan.append(Stage("pretrain", length(s.steps, s.epochs, 10_000, "pretrain"), s.lr))
    if s.stage in ("finetune", "both"):
        plan.append(Stage("finetune", length(s.finetune_steps, s.finetune_epochs, 5_000, "finetune"), s.finetune_lr))
    return plan


def lr_at(
    base: float,
    step: int,
    total: int,
    milestones: tuple[float, ...] | list[float],
    gamma: float,
    schedule: str = "step",
) -> float:
    """The learning rate at ``step`` of a stage of ``total`` steps.

    ``"step"``: ``base * gamma**k`` after the k-th milestone (fractions of ``total`` if all <= 1).
    ``"linear"``: from ``base`` down to zero at the end of the stage (then milestones also apply).
    Both follow from the step and the stage length alone, so a resumed run continues the schedule.
    """
    points = [m * total if all(v <= 1 for v in milestones) else m for m in milestones]
    decay = max(0.0, 1.0 - step / total) if schedule == "linear" else 1.0
    return base * decay * gamma ** sum(step >= p for p in points)


def global_step(plan: list[Stage], state: TrainState) -> int:
    return sum(s.steps for s in plan[: state.stage_index]) + state.stage_step
