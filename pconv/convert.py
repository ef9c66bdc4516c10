"""Partial convolutions in any model: replace its ``nn.Conv2d``/``nn.Conv3d`` layers, keeping their weights.

Mask-free (the default) gives *partial-convolution padding* (Liu et al. 2018, "Partial
Convolution based Padding", arXiv 1811.11718): the zero padding at the border counts as
unknown and each window is re-weighted by how much of it lies inside the image. NVIDIA used it
in classification and segmentation networks; away from the border the outputs are unchanged.

Mask-aware (``mask_aware=True``): inside ``with holes(model, mask):`` every converted layer
treats the holes as unknown, the mask being brought to each layer's input size (a pixel there is
known only when every input pixel it covers is). Use it to run a network trained on complete
images on images with missing parts.

    >>> import torch
    >>> from torch import nn
    >>> from pconv.convert import convert
    >>> net = convert(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1)))
    >>> net(torch.rand(1, 3, 16, 16)).shape
    torch.Size([1, 4, 16, 16])
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pconv.partialconv import PartialConv2d, PartialConv3d

__all__ = ["convert", "holes"]

_PARTIAL = {nn.Conv2d: PartialConv2d, nn.Conv3d: PartialConv3d}


class _MaskAware:
    """Mixed into a partial layer: reads the current hole mask of its model (see :func:`holes`)."""

    image_mask: Tensor | None = None

    def forward(self, input: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None and self.image_mask is not None:
            mask = _fit(self.image_mask, input.shape[2:])
        return super().forward(input, mask)  # type: ignore[misc]


class _MaskAware2d(_MaskAware, PartialConv2d):
    pass


class _MaskAware3d(_MaskAware, PartialConv3d):
    pass


_MASK_AWARE = {nn.Conv2d: _MaskAware2d, nn.Conv3d: _MaskAware3d}


def _fit(mask: Tensor, size: torch.Size) -> Tensor:
    """The one-channel mask at ``size``: known only where every covered input pixel is known."""
    if mask.shape[2:] == size:
        return mask
    holes = 1 - mask.float()
    pool = F.adaptive_max_pool2d if mask.dim() == 4 else F.adaptive_max_pool3d
    return 1 - pool(holes, tuple(size))


def convert(
    model: nn.Module, *, mask_aware: bool = False, include: Callable[[str, nn.Module], bool] | None = None
) -> nn.Module:
    """Replace the model's ``nn.Conv2d``/``nn.Conv3d`` layers by partial ones, in place.

    Weights, biases, ``state_dict`` keys, devices and dtypes are kept; layers that are already
    partial are left alone.

    Args:
        model: any module.
        mask_aware: make the layers follow :func:`holes` (else: partial-convolution padding only).
        include: ``include(name, conv)`` chooses which layers to convert (default: all).

    Returns:
        ``model`` itself.
    """
    table = _MASK_AWARE if mask_aware else _PARTIAL
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            kind = type(child)
            if kind not in table or (include is not None and not include(full, child)):
                continue
            new = table[kind](
                child.in_channels,
                child.out_channels,
                child.kernel_size,
                stride=child.stride,
                padding=child.padding,
                dilation=child.dilation,
                groups=child.groups,
                bias=child.bias is not None,
                padding_mode=child.padding_mode,
                device=child.weight.device,
                dtype=child.weight.dtype,
            )
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(module, child_name, new)
    return model


@contextlib.contextmanager
def holes(model: nn.Module, mask: Tensor) -> Iterator[nn.Module]:
    """Inside this block, the mask-aware layers of ``model`` (``convert(model, mask_aware=True)``)
    treat ``mask == 0`` as unknown.

    Args:
        model: a converted model.
        mask: ``(N|1, 1, *S)`` with 1 = known, at the input's size.
    """
    layers = [m for m in model.modules() if isinstance(m, _MaskAware)]
    if not layers:
        raise ValueError("the model has no mask-aware layers: convert it with convert(model, mask_aware=True)")
    for layer in layers:
        layer.image_mask = mask.detach()
    try:
        yield model
    finally:
        for layer in layers:
            layer.image_mask = None
