"""Push-pull fill: a fast classical inpainting that is the starting point of the residual model.

Pull: average the known pixels down an image pyramid, each level a 2x2 mean weighted by how
much of the block is known. Push: from the coarsest level back up, each pixel keeps its own
level's average where any of its block is known and takes the (bilinearly) upsampled coarser
fill where none is (at full resolution: known pixels keep their values, holes get the fill).
Optional smoothing passes then replace each hole pixel by the mean of its 3x3 neighbourhood (a
few Jacobi steps of Laplace's equation), which takes the pyramid's blockiness out of the fill
near the hole edges. (This variant scored best on the validation photos, against blending each
level with the coarser one in proportion to its known fraction and against nearest-neighbour
upsampling; against OpenCV's Telea see ``benchmarks/bench_fill.py``.)

Everything is tensor operations (pooling, bilinear upsampling, ``where``): batched, on any
device, differentiable and exportable to ONNX. The number of levels is fixed (``levels``), so a
traced graph holds for any input size; pixels still unknown after the coarsest level (a hole
that covers whole coarse blocks) take the mean of all known pixels of their image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pconv.tracing import tracing

__all__ = ["DEFAULT_LEVELS", "DEFAULT_SMOOTH", "push_pull"]

# Enough halvings to reach a single pixel from 1024 px (a tile of pconv.inpaint is at most that).
DEFAULT_LEVELS = 10
# 3x3 smoothing passes inside the holes after the pyramid fill.
DEFAULT_SMOOTH = 20


def _pull(value: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """One level down: 2x2 sums of ``value * weight`` and ``weight`` (ceil mode: odd sizes keep their last row)."""
    total = F.avg_pool2d(value * weight, 2, ceil_mode=True)
    known = F.avg_pool2d(weight, 2, ceil_mode=True)
    mean = torch.where(known > 0, total / known.clamp_min(1e-12), torch.zeros_like(total))
    return mean, known


def _box3(x: Tensor) -> Tensor:
    """3x3 mean with replicated edges, as two passes of shifted sums (several times faster on a
    CPU than a 3x3 average pooling of stride 1)."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    rows = p[..., :, :-2] + p[..., :, 1:-1] + p[..., :, 2:]
    return (rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]) / 9


def push_pull(image: Tensor, mask: Tensor, *, levels: int = DEFAULT_LEVELS, smooth: int = DEFAULT_SMOOTH) -> Tensor:
    """Fill the holes of ``image`` from its known pixels.

    Args:
        image: ``(N, C, H, W)``; values in the holes are ignored (NaN and Inf included).
        mask: ``(N|1, 1, H, W)`` float or bool, 1 = known, 0 = hole. Fractional values weigh
            pixels as partly known.
        levels: pyramid levels below full resolution.
        smooth: 3x3 mean passes inside the holes after the pyramid fill.

    Returns:
        ``(N, C, H, W)``: ``image`` at known pixels, the fill in the holes. An image with no
        known pixel at all is filled with zeros.

    Example:
        >>> import torch
        >>> image = torch.tensor([[[[0.0, 0.0, 9.0, 1.0]]]])
        >>> mask = torch.tensor([[[[1.0, 1.0, 0.0, 1.0]]]])
        >>> push_pull(image, mask, smooth=0)
        tensor([[[[0.0000, 0.0000, 0.7500, 1.0000]]]])
    """
    if image.dim() != 4 or mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2:] != image.shape[2:]:
        raise ValueError(
            f"expected image (N, C, H, W) and mask (N, 1, H, W), got {tuple(image.shape)} and {tuple(mask.shape)}"
        )
    if levels < 0 or smooth < 0:
        raise ValueError(f"levels and smooth must be at least 0, got {levels} and {smooth}")
    weight = mask.to(image.dtype).expand(image.shape[0], -1, -1, -1).clamp(0, 1)
    value = image.masked_fill(weight == 0, 0)  # select, so NaN or Inf in a hole stays out
    pyramid = [(value, weight)]
    for _ in range(levels):
        pyramid.append(_pull(*pyramid[-1]))
    # Whatever the coarsest level does not cover takes the image's mean of known pixels.
    coarse, known = pyramid[-1]
    total = known.sum(dim=(2, 3), keepdim=True)
    mean = (coarse * known).sum(dim=(2, 3), keepdim=True) / total.clamp_min(1e-12)
    filled = torch.where(known > 0, coarse, mean.expand_as(coarse))
    for value, weight in reversed(pyramid[:-1]):
        up = F.interpolate(filled, size=value.shape[-2:], mode="bilinear", align_corners=False)
        filled = torch.where(weight > 0, value, up)
    if smooth:
        hole = weight < 1  # the full-resolution weight, after the loop
        filled = _smooth(filled, hole, smooth)
        filled = torch.where(hole, filled, image)
    return filled


def _smooth(filled: Tensor, hole: Tensor, passes: int) -> Tensor:
    """``passes`` 3x3 mean passes over the hole pixels of ``filled``.

    Run eagerly on a CPU, the passes cover only the holes' bounding box and a pixel around it (what
    they read; known pixels do not change): a crop around a small hole is mostly known, and the
    passes were a sixth of the model's time on many small holes (``benchmarks/bench_cli.py``,
    blobs). Traced, or on a GPU (where finding the box would wait for the device), they cover the
    whole image, so a graph holds for any mask.
    """
    if filled.device.type != "cpu" or tracing():
        return _passes(filled, hole, passes)
    rows, cols = hole.any(dim=(0, 1, 3)).nonzero(), hole.any(dim=(0, 1, 2)).nonzero()
    if not len(rows):
        return filled
    y0, y1, x0, x1 = int(rows[0]) - 1, int(rows[-1]) + 2, int(cols[0]) - 1, int(cols[-1]) + 2
    height, width = hole.shape[-2:]
    if (y1 - y0) * (x1 - x0) > 0.75 * height * width:  # most of the image: cropping saves little
        return _passes(filled, hole, passes)
    ys, xs = slice(max(y0, 0), y1), slice(max(x0, 0), x1)
    out = filled.clone()
    out[..., ys, xs] = _passes(filled[..., ys, xs], hole[..., ys, xs], passes)
    return out


def _passes(x: Tensor, hole: Tensor, passes: int) -> Tensor:
    for _ in range(passes):
        x = torch.where(hole, _box3(x), x)
    return x
