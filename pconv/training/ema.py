"""An exponential moving average of a model's weights (``--ema``), for validation and release."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["WeightAverage"]


class WeightAverage:
    """``average = decay * average + (1 - decay) * weights`` after every step, the decay warmed
    up as ``min(decay, (1 + n) / (10 + n))`` over the first steps ``n`` (so a short run is not
    stuck at its start); integer buffers (BatchNorm's step count) are copied.

    Args:
        model: the model trained; the average starts at its weights, or at ``state`` (a resumed run).
        decay: in [0, 1).
        twin: a second model of the same architecture, to hold the average when it is scored.
    """

    def __init__(
        self, model: nn.Module, decay: float, twin: nn.Module, state: dict[str, torch.Tensor] | None = None
    ) -> None:
        self.decay, self.twin = decay, twin
        self.state = state if state is not None else {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                self.state[key].lerp_(value.detach(), 1 - decay)
            else:
                self.state[key].copy_(value)

    def model(self) -> nn.Module:
        """The twin holding the average now (in the mode the caller sets)."""
        self.twin.load_state_dict(self.state)
        return self.twin
