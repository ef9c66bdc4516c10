"""Weight surgery for training: starting one architecture from another's weights, training a part
alone. Functions of a model, never methods of it (a model class is what ships).

- :func:`grow_weights`: a direct model's weights made to fit a gated one (``--init``): the gate's
  channel and the gate head start at zero.
- :func:`start_at_fill`: zero the gate of a gated model, so a run starts at the fill.
- :func:`train_gate_only`: freeze everything but the gate (BatchNorm statistics included).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pconv.unet import PConvUNet, zero_fill_correction

__all__ = ["grow_weights", "start_at_fill", "train_gate_only"]


def grow_weights(model: PConvUNet, weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """Weights of the same net without a gate or a gate head, made to fit ``model``: the last layer
    gets a zero gate channel after the image's; a gate head comes as ``model`` has it (its output
    zero). Others pass unchanged."""
    own = model.state_dict()
    out = dict(weights)
    for name, value in own.items():  # a gate head the file lacks: as built (output zero)
        if name.startswith("gate_head.") and name not in weights:
            out[name] = value
    last = f"decoder.{len(model.decoder) - 1}.conv."
    for name in (last + "weight", last + "bias"):
        value = weights.get(name)
        if value is not None and value.shape[0] + 1 == own[name].shape[0]:  # add the gate's channel
            out[name] = torch.cat([value, value.new_zeros((1, *value.shape[1:]))])
    return out


def start_at_fill(model: PConvUNet) -> PConvUNet:
    """Zero the gate of ``model`` (see :func:`pconv.unet.zero_fill_correction`): the run starts
    exactly at the fill, also from the weights of a model that predicted the image."""
    return zero_fill_correction(model)


def _gate_rows_only(grad: Tensor) -> Tensor:
    """A gradient of the last layer with every output channel but the gate's (the last) zeroed."""
    keep = torch.zeros_like(grad)
    keep[-1:] = 1
    return grad * keep


def train_gate_only(model: PConvUNet) -> PConvUNet:
    """Leave every weight but the gate's channel (and head) as it is, BatchNorm statistics included:
    the network's prediction stays that of the model it started from, and training learns only
    ``g``, where to trust it. (Trained together, the image channels drifted into a scaled-up
    correction behind a small ``g``.) Stays in force across ``train()``/``eval()``."""
    if model.config.base_fill == "none":
        raise ValueError("training the gate alone needs a gated model (a base fill)")
    last = model.decoder[-1].conv
    for p in model.parameters():
        p.requires_grad_(False)
    for p in (last.weight, last.bias):
        p.requires_grad_(True)
        p.register_hook(_gate_rows_only)
    if model.gate_head is not None:
        model.gate_head.requires_grad_(True)
    model.freeze_bn("all")
    return model
