"""One training step, one evaluation pass, and the numeric settings they run under."""

from __future__ import annotations

import sys

import torch
from torch import nn
from torch.utils.data import DataLoader

from pconv.losses import InpaintingLoss, composite, hole_valid_losses
from pconv.metrics import score

__all__ = [
    "amp_dtype_for",
    "cpu_has_native_bf16",
    "eval_forward",
    "forward_loss",
    "to_device",
    "train_step",
    "validate",
]


def forward_loss(
    model: nn.Module,
    loss_fn: InpaintingLoss,
    image: torch.Tensor,
    mask: torch.Tensor,
    amp_dtype: torch.dtype | None,
    deep_weight: float | None,
) -> dict[str, torch.Tensor]:
    """The loss terms of one batch. With ``deep_weight`` (deep supervision), the coarser outputs
    add ``deep_weight`` times the mean of their weighted valid + hole L1 terms as ``"deep"``."""
    with torch.autocast(image.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        outputs = model(image, mask, deep=True) if deep_weight is not None else [model(image, mask)]
        terms = loss_fn(outputs[0].float(), image, mask)
        if len(outputs) > 1:
            w = loss_fn.weights
            aux = [hole_valid_losses(o.float(), image, mask) for o in outputs[1:]]
            terms["deep"] = torch.stack([w.hole * h + w.valid * v for h, v in aux]).mean()
            terms["total"] = terms["total"] + deep_weight * terms["deep"]
        return terms


def train_step(
    model: nn.Module,
    loss_fn: InpaintingLoss,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    image: torch.Tensor,
    mask: torch.Tensor,
    amp_dtype: torch.dtype | None,
    deep_weight: float | None = None,
) -> dict[str, float]:
    """One optimisation step; returns every loss term as a float."""
    terms = forward_loss(model, loss_fn, image, mask, amp_dtype, deep_weight)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(terms["total"]).backward()
    scaler.step(optimizer)
    scaler.update()
    return {k: float(v.detach()) for k, v in terms.items()}


@torch.no_grad()
def eval_forward(
    model: nn.Module, image: torch.Tensor, mask: torch.Tensor, amp_dtype: torch.dtype | None
) -> torch.Tensor:
    """The prediction in eval mode (float32), leaving the model in the mode it was in."""
    was_training = model.training
    model.eval()
    with torch.autocast(image.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        pred = model(image, mask).float()
    model.train(was_training)
    return pred


@torch.no_grad()
def validate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    channels_last: bool = False,
) -> dict[str, float]:
    """Mean L1 (%), PSNR, SSIM and hole PSNR of the composited results over the validation set."""
    totals: dict[str, float] = {}
    count = 0
    for batch in loader:
        image, mask = to_device(batch, device, channels_last)
        pred = eval_forward(model, image, mask, amp_dtype)
        comp = composite(pred.clamp(0, 1), image, mask).permute(0, 2, 3, 1).cpu().numpy()
        truth = image.permute(0, 2, 3, 1).cpu().numpy()
        known = mask[:, 0].bool().cpu().numpy()
        for c, t, k in zip(comp, truth, known):
            for name, value in score(c, t, k).items():
                totals[name] = totals.get(name, 0.0) + value
            count += 1
    return {name: value / count for name, value in totals.items()}


def to_device(batch: dict, device: torch.device, channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    image = batch["image"].to(device, non_blocking=True)
    mask = batch["mask"].to(device, non_blocking=True)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    return image, mask


def amp_dtype_for(amp: str, device: torch.device, warn: bool = True) -> torch.dtype | None:
    """The autocast dtype for ``--amp``: CUDA bf16 (else fp16); on a CPU bf16 only where it is
    native (AVX512-BF16 or AMX), since elsewhere bf16 convolutions are many times slower."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if not cpu_has_native_bf16():
        if warn:
            print(
                "warning: --amp on: this CPU has no native bfloat16 (no AVX512-BF16 or AMX), where bf16 "
                "autocast is many times slower than float32; training in float32",
                file=sys.stderr,
            )
        return None
    return torch.bfloat16


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX tiles)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)
