"""Weight surgery for training: starting one architecture from another's weights, training a part
alone. Functions of a model, never methods of it (a model class is what ships).

- :func:`grow_weights`: a direct model's weights made to fit a residual one (``--init``): the fill's
  input channels, the gate's channel and the gate head start at zero.
- :func:`start_at_fill`: zero what a residual model adds to its fill, so a run starts at the fill.
- :func:`rescale_gate`: the same ``g`` at another gate gain.
- :func:`train_gate_only`: freeze everything but the gate (BatchNorm statistics included).
"""

from __future__ import annotations

import torch
from torch import Tensor

from pconv.unet import PConvUNet, zero_fill_correction

__all__ = ["grow_weights", "rescale_gate", "start_at_fill", "train_gate_only"]


def grow_weights(model: PConvUNet, weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """Weights of the same net without ``fill_input``, ``fill_gate`` or ``gate_head``, made to fit
    ``model``: the layers that read the input (the first encoder layer and, through its skip, the
    last decoder layer) get zero weights for the fill's channels, which come after the image's; the
    last layer gets a zero gate channel after the image's; a gate head comes as ``model`` has it
    (its output zero). Others pass unchanged."""
    own = model.state_dict()
    out = dict(weights)
    for name, value in own.items():  # a gate head the file lacks: as built (output zero)
        if name.startswith("gate_head.") and name not in weights:
            out[name] = value
    for name, value in weights.items():
        want = own.get(name)
        if want is None or want.shape == value.shape or want.ndim != value.ndim:
            continue
        grown = value
        for dim in range(min(2, value.ndim)):  # output channels, then input channels
            extra = want.shape[dim] - grown.shape[dim]
            if extra > 0:
                pad_shape = list(grown.shape)
                pad_shape[dim] = extra
                grown = torch.cat([grown, grown.new_zeros(pad_shape)], dim=dim)
        out[name] = grown
    return out


def start_at_fill(model: PConvUNet) -> PConvUNet:
    """Zero what ``model`` adds to its base fill (see :func:`pconv.unet.zero_fill_correction`): the
    run starts exactly at the fill, also from the weights of a model that predicted the image."""
    return zero_fill_correction(model)


@torch.no_grad()
def rescale_gate(model: PConvUNet, gain: float) -> PConvUNet:
    """Scale the gate's channel (and head) so weights trained at gate gain ``gain`` give the same
    ``g`` at ``model``'s gain (``--init`` from a gated model saved with another gain)."""
    if model.config.fill_gate and gain != model.config.gate_gain:
        last = model.decoder[-1].conv
        scale = gain / model.config.gate_gain
        last.weight[-1:].mul_(scale)
        last.bias[-1:].mul_(scale)
        if model.gate_head is not None:
            model.gate_head[-1].weight.mul_(scale)
            model.gate_head[-1].bias.mul_(scale)
    return model


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
    if not model.config.fill_gate:
        raise ValueError("training the gate alone needs a model with fill_gate")
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
