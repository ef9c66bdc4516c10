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

__all__ = ["DEFAULT_LEVELS", "DEFAULT_SMOOTH", "SEAM_BAND", "SEAM_LIMIT", "SEAM_SIGMA", "match_seams", "push_pull"]

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
        for _ in range(smooth):
            filled = torch.where(hole, _box3(filled), filled)
        filled = torch.where(hole, filled, image)
    return filled


# match_seams: the width (px) of the band inside the hole edge where the fill's local mean is
# compared with the surroundings', and the Gaussian sigma (px) of those local means.
SEAM_BAND = 4
SEAM_SIGMA = 3.0
# The largest shift (in image units) match_seams applies: a colour cast or a step in brightness, not
# the difference between two objects that meet at the hole edge.
SEAM_LIMIT = 0.08


def _gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur (radius 3 sigma), zero outside the image: divide by the blurred
    weight for a mean over the pixels that count."""
    radius = max(1, int(3 * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma * sigma))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, radius), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(radius, 0), groups=c)


def match_seams(
    image: Tensor,
    mask: Tensor,
    fill: Tensor,
    *,
    band: int = SEAM_BAND,
    sigma: float = SEAM_SIGMA,
    limit: float = SEAM_LIMIT,
) -> Tensor:
    """Shift a fill's colours so that it meets the known pixels without a visible outline.

    A fill copied from elsewhere in the photo (PatchMatch) often differs a little in brightness or
    colour from what surrounds the hole, which shows as an outline in the hole's shape. Inside the
    hole edge (``band`` px), the fill's local mean (Gaussian, ``sigma``, over hole pixels) is
    compared with the known pixels' local mean there; the difference is spread smoothly over the
    whole hole (:func:`push_pull` from that band) and added: the fill's texture stays, its low
    frequencies meet the surroundings at the edge (a membrane correction, as in Poisson image
    editing). Differences are clipped to ``limit`` first: where the hole edge crosses an object's
    outline, the local means differ by the objects, not by a cast, and must not bleed.

    Args:
        image: ``(N, C, H, W)``, the known pixels used; values in the holes are ignored.
        mask: ``(N|1, 1, H, W)``, 1 = known.
        fill: ``(N, C, H, W)``, the fill to correct (its known pixels are ignored).

    Returns:
        ``(N, C, H, W)``: ``image`` at known pixels, the corrected fill in the holes.
    """
    known = (mask > 0.5).to(image.dtype).expand(image.shape[0], 1, -1, -1)
    hole = 1 - known
    image = image.masked_fill(known == 0, 0)
    fill = fill.masked_fill(hole == 0, 0)
    eps = 1e-6
    known_mean = _gaussian_blur(image, sigma) / _gaussian_blur(known, sigma).clamp_min(eps)
    fill_mean = _gaussian_blur(fill, sigma) / _gaussian_blur(hole, sigma).clamp_min(eps)
    # hole pixels within `band` px of a known pixel (a dilation of the known region)
    near = F.max_pool2d(known, 2 * band + 1, stride=1, padding=band) * hole
    seen = _gaussian_blur(known, sigma) > 1e-3  # a known pixel within reach of the local mean
    ring = near * seen.to(near.dtype)
    if not ring.any():
        return image + fill
    difference = (known_mean - fill_mean).clamp(-limit, limit).masked_fill(ring == 0, 0)
    correction = push_pull(difference, ring, smooth=2 * DEFAULT_SMOOTH)
    return torch.where(hole > 0, fill + correction, image)
