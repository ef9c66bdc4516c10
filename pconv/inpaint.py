"""Inpaint whole images of any size with a trained model: one pass, or overlapping tiles.

Large images are cut into overlapping tiles and only tiles that touch a hole are run; their
predictions are blended with feathered weights (highest at a tile's centre, small but positive
at its edges), so memory is bounded by the tile size and time grows with the number of
hole-touching tiles, not with the image. Known pixels are copied from the input unchanged.

With ``samples > 1`` the model's dropout stays active (Monte Carlo dropout, Gal and Ghahramani
2016): the result is the mean of the samples and each hole pixel gets a standard deviation.

With ``flip=True`` every prediction is the mean of the model's output for the image and for its
mirror image, mirrored back (test-time augmentation): twice the time, less of the model's
pixel-level noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

__all__ = ["InpaintResult", "auto_tile", "inpaint", "tile_origins"]

# Images up to this many pixels run in one pass with tile="auto".
AUTO_SINGLE_PASS_PIXELS = 1024 * 1024
AUTO_TILE = 512


@dataclass
class InpaintResult:
    """The composite and what was computed on the way.

    Attributes:
        image: ``(H, W, C)`` uint8 composite: known pixels are the input's, holes the prediction
            (the mean over Monte Carlo samples).
        std: ``(H, W, C)`` float32 per-pixel standard deviation over the samples, in [0, 1]
            units (0 at known pixels), or ``None`` for a single pass.
        samples: Monte Carlo samples behind ``image`` and ``std`` (1 for a single pass).
        tiles: how many tiles (or 1 for a single pass) went through the model.
    """

    image: np.ndarray
    std: np.ndarray | None
    tiles: int
    samples: int = 1

    @property
    def stderr(self) -> np.ndarray | None:
        """Standard error of the Monte Carlo mean, ``std / sqrt(samples)``."""
        return None if self.std is None else self.std / np.sqrt(self.samples)

    def interval(self, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper uint8 composites of the confidence interval ``mean -/+ z * stderr``."""
        if self.std is None:
            raise ValueError("a confidence interval needs Monte Carlo samples")
        mean = self.image.astype(np.float32) / 255.0
        half = z * self.stderr
        return _to_uint8(mean - half), _to_uint8(mean + half)


def auto_tile(height: int, width: int) -> int | None:
    """Tile side for ``tile="auto"``: ``None`` (one pass) for images up to about one megapixel."""
    return None if height * width <= AUTO_SINGLE_PASS_PIXELS else AUTO_TILE


def tile_origins(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``length``, sharing at least ``overlap``.

    Offsets are multiples of ``align`` (the network's downsampling factor, so a tile sees the
    same pixel grid as the whole image would), except the last, which ends at the edge.
    """
    if tile >= length:
        return [0]
    stride = max(align, (tile - overlap) // align * align)
    return [*range(0, length - tile, stride), length - tile]


def _feather(height: int, width: int, overlap: int) -> np.ndarray:
    """Blend weights of a tile: a linear ramp over ``overlap`` pixels at each edge, never 0."""
    def ramp(n: int) -> np.ndarray:
        d = np.minimum(np.arange(n), np.arange(n)[::-1]) + 1.0  # distance to the nearer edge
        return np.clip(d / max(overlap, 1), 1e-3, 1.0)

    return (ramp(height)[:, None] * ramp(width)[None, :]).astype(np.float32)


def _forward(model: nn.Module, x: torch.Tensor, m: torch.Tensor, flip: bool) -> torch.Tensor:
    """The model's prediction, averaged with that of the mirror image when ``flip``; clamped to [0, 1]."""
    pred = model(x, m)
    if flip:
        pred = (pred + model(x.flip(-1), m.flip(-1)).flip(-1)) / 2
    return pred.clamp_(0, 1)


@torch.no_grad()
def _predict(model: nn.Module, image: np.ndarray, known: np.ndarray, samples: int, batch: int,
             device: torch.device, flip: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Prediction ``(h, w, C)`` in [0, 1] (the mean over samples) and its variance ``(h, w, C)`` (or ``None``)."""
    x = torch.from_numpy(np.array(image)).to(device).permute(2, 0, 1)[None].float().div_(255)
    m = torch.from_numpy(np.array(known)).to(device)[None, None].float()
    if samples == 1:
        return _forward(model, x, m, flip)[0].permute(1, 2, 0).cpu().numpy(), None
    total = torch.zeros_like(x[0], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    done = 0
    while done < samples:
        n = min(batch, samples - done)
        pred = _forward(model, x.expand(n, -1, -1, -1), m, flip).double()  # (n, C, h, w)
        total += pred.sum(0)
        total_sq += pred.square().sum(0)
        done += n
    mean = total / samples
    var = (total_sq / samples - mean.square()).clamp_(min=0) * samples / (samples - 1)
    return mean.float().permute(1, 2, 0).cpu().numpy(), var.float().permute(1, 2, 0).cpu().numpy()


def inpaint(model: nn.Module, image: np.ndarray, known: np.ndarray, *, tile: int | str | None = "auto",
            overlap: int | None = None, samples: int = 1, batch: int = 8, flip: bool = False,
            device: torch.device | str = "cpu", progress: bool = False) -> InpaintResult:
    """Fill the holes of ``image``.

    Args:
        model: a model taking ``(image (N, C, H, W) in [0, 1], mask (N, 1, H, W))``, e.g. a
            :class:`~pconv.PConvUNet` (put in eval mode here).
        image: ``(H, W, C)`` uint8.
        known: ``(H, W)`` bool, True = known pixel.
        tile: ``"auto"``, ``None`` (one pass) or a tile side in pixels.
        overlap: pixels shared by neighbouring tiles (default a quarter of the tile).
        samples: Monte Carlo dropout samples; more than 1 needs a model with dropout.
        batch: samples per forward pass.
        flip: average each prediction with that of the mirror image (twice the time).
        device: where the model runs (the model is moved there).
        progress: show a progress bar over tiles.
    """
    if image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, C) uint8 image, got {image.dtype} {image.shape}")
    if known.shape != image.shape[:2]:
        raise ValueError(f"mask {known.shape[1]}x{known.shape[0]} does not match image {image.shape[1]}x{image.shape[0]}")
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    height, width = known.shape
    if tile == "auto":
        tile = auto_tile(height, width)
    if tile is not None and tile < 32:
        raise ValueError(f"tiles must be at least 32 pixels, got {tile}")
    device = torch.device(device)
    model = model.to(device).eval()
    mc = getattr(model, "mc_dropout", None)
    if samples > 1:
        if mc is None or not getattr(getattr(model, "config", None), "dropout", 0):
            raise ValueError("Monte Carlo sampling needs a model trained with dropout (this one has none)")
        model.mc_dropout = True
    try:
        return _inpaint(model, image, known, tile, overlap, samples, batch, flip, device, progress)
    finally:
        if samples > 1:
            model.mc_dropout = mc


def _inpaint(model: nn.Module, image: np.ndarray, known: np.ndarray, tile: int | None, overlap: int | None,
             samples: int, batch: int, flip: bool, device: torch.device, progress: bool) -> InpaintResult:
    height, width = known.shape
    holes = ~known
    out = image.copy()
    std = np.zeros(image.shape, np.float32) if samples > 1 else None
    if not holes.any():
        return InpaintResult(out, std, 0, samples)
    if tile is None or (tile >= height and tile >= width):
        pred, var = _predict(model, image, known, samples, batch, device, flip)
        out[holes] = _to_uint8(pred[holes])
        if std is not None:
            std[holes] = np.sqrt(var[holes])
        return InpaintResult(out, std, 1, samples)

    overlap = tile // 4 if overlap is None else overlap
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got {overlap} for tile {tile}")
    align = min(getattr(model, "multiple", 1), tile)
    boxes = [(y, x) for y in tile_origins(height, tile, overlap, align) for x in tile_origins(width, tile, overlap, align)
             if holes[y : y + tile, x : x + tile].any()]
    # Accumulators cover only the bounding box of the holes, so memory follows the holes.
    top = min(y for y, _ in boxes)
    left = min(x for _, x in boxes)
    bottom = max(min(y + tile, height) for y, _ in boxes)
    right = max(min(x + tile, width) for _, x in boxes)
    acc = np.zeros((bottom - top, right - left, image.shape[2]), np.float32)
    acc_var = np.zeros(acc.shape, np.float32) if samples > 1 else None
    weight = np.zeros((bottom - top, right - left), np.float32)
    for y, x in tqdm(boxes, desc="tiles", unit="tile", disable=not progress, leave=False):
        y1, x1 = min(y + tile, height), min(x + tile, width)
        pred, var = _predict(model, image[y:y1, x:x1], known[y:y1, x:x1], samples, batch, device, flip)
        w = _feather(y1 - y, x1 - x, overlap)
        region = (slice(y - top, y1 - top), slice(x - left, x1 - left))
        acc[region] += pred * w[..., None]
        weight[region] += w
        if acc_var is not None:
            acc_var[region] += var * w[..., None]
    sub = holes[top:bottom, left:right]
    out_sub = out[top:bottom, left:right]
    out_sub[sub] = _to_uint8(acc[sub] / weight[sub][:, None])
    if std is not None:
        std[top:bottom, left:right][sub] = np.sqrt(acc_var[sub] / weight[sub][:, None])
    return InpaintResult(out, std, len(boxes), samples)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)
