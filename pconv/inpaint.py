"""Inpaint whole images of any size with a trained model: one pass, or overlapping tiles.

Large images run in crops around the holes (:func:`crop_boxes`): nearby holes form a group; a
group gets one crop centred on it with about its own size of known context on every side, and a
group bigger than a tile is covered by the hole-touching tiles of a grid. Overlapping predictions
are blended with feathered weights (highest at a crop's centre, small but positive at its edges),
so memory is bounded by the tile size and time grows with the holes, not with the image. Known
pixels are copied from the input unchanged.

With ``samples > 1`` the model's dropout stays active (Monte Carlo dropout, Gal and Ghahramani
2016): the result is the mean of the samples and each hole pixel gets a standard deviation.

With ``flip=True`` every prediction is the mean of the model's output for the image and for its
mirror image, mirrored back (test-time augmentation): twice the time, less of the model's
pixel-level noise. With Monte Carlo samples too, every mirrored pass counts as one more sample
(``2 * samples`` in all): the standard deviation stays that of a single pass, where averaging
each pair first would shrink it by about ``sqrt(2)``, and the standard error uses all of them.

Resolution (``scale="auto"``, the default): a model fills holes well only up to the hole depth
(the largest distance from a hole pixel to a known one) it met in training, at the scale it was
trained at; a 24 MP photo with a hole the size of a face is far beyond it. Each connected hole
gets a working scale from its depth, ``2**ceil(log2(depth / hole_depth))`` (1 for holes the
model knows; a deep hole's thin offshoots, such as strokes touching it, keep 1: see
:func:`hole_levels`); each scale level runs on the image downscaled by that factor (area averaging; a
low-resolution pixel is known only when all its pixels are), tiled as above, and its fill is
upsampled and pasted into that level's holes only. Small holes in big photos run at full
resolution; big holes run coarse, where the model sees across them and where far fewer pixels
go through it. ``scale=1`` is plain full-resolution inference; a number forces that factor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

__all__ = [
    "DEFAULT_HOLE_DEPTH",
    "Cancelled",
    "InpaintResult",
    "auto_tile",
    "crop_boxes",
    "hole_levels",
    "inpaint",
    "model_pixels",
    "tile_origins",
]

# Images up to this many pixels run in one pass with tile="auto".
AUTO_SINGLE_PASS_PIXELS = 1024 * 1024
AUTO_TILE = 512
# The hole depth (pixels) a model handles when its file does not say: the 90th percentile of the
# deepest hole of random-stroke masks at 256 px, what the first released models trained on.
DEFAULT_HOLE_DEPTH = 18.0
# Parts of a deep hole thinner than this fraction of the hole depth (half-width) are offshoots.
THIN = 0.25
# Coarse levels keep at least this many pixels on the image's shorter side.
MIN_LEVEL_SIDE = 64


class Cancelled(Exception):
    """:func:`inpaint` stopped early because its ``should_stop`` callback asked it to."""


@dataclass
class InpaintResult:
    """The composite and what was computed on the way.

    Attributes:
        image: ``(H, W, C)`` uint8 composite: known pixels are the input's, holes the prediction
            (the mean over Monte Carlo samples).
        std: ``(H, W, C)`` float32 per-pixel standard deviation over the samples, in [0, 1]
            units (0 at known pixels), or ``None`` for a single pass.
        samples: Monte Carlo samples behind ``image`` and ``std`` (1 for a single pass; with
            ``flip``, twice the samples asked for: the mirrored passes count).
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


def hole_levels(known: np.ndarray, hole_depth: float, max_factor: int | None = None) -> np.ndarray:
    """The working downscale factor of every pixel: 0 at known pixels, else a power of two chosen
    for its connected hole (8-connectivity) from the hole's depth.

    A hole of depth ``d`` (largest distance from one of its pixels to a known pixel) gets
    ``2**ceil(log2(d / hole_depth))``, at least 1 and at most ``max_factor``. A deep hole's thin
    offshoots keep full resolution, where the model fills them well: a stroke touching a big hole
    is filled sharp instead of with the big hole's blurred, upsampled fill. Thin means outside the
    hole's opening by a disk of radius ``hole_depth / 4`` (:data:`THIN`) and reaching farther than
    ``hole_depth`` from it; the rest of the hole, thick parts and the small bits beside them (a
    box's corners), takes the hole's factor.
    """
    holes = (~known).astype(np.uint8)
    levels = np.zeros(known.shape, np.int32)
    if not holes.any():
        return levels
    depth = cv2.distanceTransform(holes, cv2.DIST_L2, 5)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(holes, connectivity=8)
    deepest = np.zeros(count, np.float32)
    inside = np.flatnonzero(holes)  # only hole pixels: a photo is mostly known
    np.maximum.at(deepest, labels.ravel()[inside], depth.ravel()[inside])
    factors = np.ones(count, np.int32)
    big = deepest > hole_depth
    factors[big] = 2 ** np.ceil(np.log2(deepest[big] / hole_depth)).astype(np.int32)
    if max_factor is not None:
        factors = np.minimum(factors, max(1, max_factor))
    factors[0] = 0  # label 0 is the known part
    levels = factors[labels]
    for g in np.flatnonzero(factors > 1):
        x, y, w, h = stats[g, :4]
        window = (slice(y, y + h), slice(x, x + w))
        levels[window][_offshoots(labels[window] == g, depth[window], hole_depth)] = 1
    return levels


def _offshoots(hole: np.ndarray, depth: np.ndarray, hole_depth: float) -> np.ndarray:
    """The thin offshoots of one deep hole (see :func:`hole_levels`)."""
    radius = THIN * hole_depth
    centres = (hole & (depth > radius)).astype(np.uint8)
    body = hole & (cv2.distanceTransform(1 - centres, cv2.DIST_L2, 5) <= radius)
    rest = hole & ~body
    if not rest.any():
        return rest
    reach = cv2.distanceTransform((~body).astype(np.uint8), cv2.DIST_L2, 5)
    count, pieces = cv2.connectedComponents(rest.astype(np.uint8), connectivity=8)
    farthest = np.zeros(count, np.float32)
    np.maximum.at(farthest, pieces[rest], reach[rest])
    return rest & (farthest > hole_depth)[pieces]


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
def _predict(
    model: nn.Module, image: np.ndarray, known: np.ndarray, samples: int, batch: int, device: torch.device, flip: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Prediction ``(h, w, C)`` in [0, 1] (the mean over samples) and its variance ``(h, w, C)`` (or ``None``)."""
    x = torch.from_numpy(np.array(image)).to(device).permute(2, 0, 1)[None].float().div_(255)
    m = torch.from_numpy(np.array(known)).to(device)[None, None].float()
    if samples == 1:
        return _forward(model, x, m, flip)[0].permute(1, 2, 0).cpu().numpy(), None
    total = torch.zeros_like(x[0], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    done = passes = 0
    while done < samples:
        n = min(batch, samples - done)
        xs = x.expand(n, -1, -1, -1)
        # with flip, each mirrored pass is a sample of its own: the spread stays that of one pass
        for pred in (model(xs, m), model(xs.flip(-1), m.flip(-1)).flip(-1)) if flip else (model(xs, m),):
            pred = pred.clamp(0, 1).double()  # (n, C, h, w)
            total += pred.sum(0)
            total_sq += pred.square().sum(0)
            passes += n
        done += n
    mean = total / passes
    var = (total_sq / passes - mean.square()).clamp_(min=0) * passes / (passes - 1)
    return mean.float().permute(1, 2, 0).cpu().numpy(), var.float().permute(1, 2, 0).cpu().numpy()


def inpaint(
    model: nn.Module,
    image: np.ndarray,
    known: np.ndarray,
    *,
    tile: int | str | None = "auto",
    overlap: int | None = None,
    samples: int = 1,
    batch: int = 8,
    flip: bool = False,
    scale: str | float = "auto",
    hole_depth: float | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> InpaintResult:
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
        scale: ``"auto"`` (a working scale per hole from its depth, see the module notes), or a
            downscale factor for every hole (1 = full resolution).
        hole_depth: the hole depth in pixels the model handles at full scale; default the
            model's ``hole_depth`` attribute (set by :func:`pconv.load_model` from the release
            file), else :data:`DEFAULT_HOLE_DEPTH`.
        device: where the model runs (the model is moved there).
        progress: show a progress bar over tiles.
        should_stop: called before every tile; when it returns True, :class:`Cancelled` is raised
            (a server stops the work of a client that left).
    """
    if image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, C) uint8 image, got {image.dtype} {image.shape}")
    if known.shape != image.shape[:2]:
        raise ValueError(
            f"mask {known.shape[1]}x{known.shape[0]} does not match image {image.shape[1]}x{image.shape[0]}"
        )
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if tile is not None and tile != "auto" and tile < 32:
        raise ValueError(f"tiles must be at least 32 pixels, got {tile}")
    if scale != "auto" and not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale >= 1):
        raise ValueError(f"scale must be 'auto' or a factor of at least 1, got {scale!r}")
    hole_depth = hole_depth or getattr(model, "hole_depth", None) or DEFAULT_HOLE_DEPTH
    device = torch.device(device)
    model = model.to(device).eval()
    mc = getattr(model, "mc_dropout", None)
    if samples > 1:
        if mc is None or not getattr(getattr(model, "config", None), "dropout", 0):
            raise ValueError("Monte Carlo sampling needs a model trained with dropout (this one has none)")
        model.mc_dropout = True
    try:
        levels = _scale_levels(known, scale, hole_depth)
        return _multiscale(
            model, image, known, levels, tile, overlap, samples, batch, flip, device, progress, should_stop
        )
    finally:
        if samples > 1:
            model.mc_dropout = mc


def _scale_levels(known: np.ndarray, scale: str | float, hole_depth: float) -> np.ndarray:
    """Each pixel's working downscale factor (0 = known) for ``scale`` (see :func:`inpaint`)."""
    max_factor = max(1, min(known.shape) // MIN_LEVEL_SIDE)
    if scale == "auto":
        return hole_levels(known, hole_depth, max_factor)
    return np.where(known, 0, min(float(scale), max_factor))


@dataclass
class _Level:
    """One working scale: the (downscaled) mask, the pixels to fill there and the tile side."""

    factor: float
    known: np.ndarray  # (h, w) bool at this scale
    targets: np.ndarray  # (h, w) bool: the pixels this level must predict
    mine: np.ndarray  # (H, W) bool: the full-resolution holes this level fills
    tile: int | None


def _levels(known: np.ndarray, levels: np.ndarray, tile: int | str | None) -> Iterator[_Level]:
    """The scale levels of ``levels`` (see :func:`hole_levels`), finest first."""
    height, width = known.shape
    for factor in sorted({float(f) for f in np.unique(levels[levels > 0])}):
        mine = levels == factor
        if factor == 1:
            yield _Level(factor, known, mine, mine, _resolve_tile(tile, height, width))
            continue
        size = (max(1, round(width / factor)), max(1, round(height / factor)))
        small_known = cv2.resize(known.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 1 - 1e-6
        if not small_known.any():
            raise ValueError("the holes leave no known pixel at the working scale; pass a smaller scale")
        small_targets = cv2.resize(mine.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0
        # the upsampling reads the 2 low-resolution pixels around each target pixel
        small_targets = (
            cv2.dilate(small_targets.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & ~small_known
        )
        yield _Level(factor, small_known, small_targets, mine, _resolve_tile(tile, size[1], size[0]))


Box = tuple[int, int, int, int]  # (y, x, height, width) of a crop through the model

# Target pixels are grouped on a grid of cells this many pixels wide.
GROUP_CELL = 16


def crop_boxes(targets: np.ndarray, tile: int, overlap: int, align: int) -> list[Box]:
    """Crops ``(y, x, h, w)`` that cover every target pixel, each at most ``tile`` on a side.

    Target pixels within about ``tile // 4`` of each other form a group. A group that fits in a tile
    with ``tile // 8`` pixels of context on every side gets one crop centred on it, with about the
    group's own size of context around it (the model sees known pixels on all sides, and a small hole
    costs a small crop). A bigger group is covered by those tiles of a grid over it (sharing
    ``overlap`` pixels) that touch a target. Sides are multiples of ``align`` where the image allows.
    """
    height, width = targets.shape
    cell = GROUP_CELL
    gh, gw = -(-height // cell), -(-width // cell)
    padded = np.zeros((gh * cell, gw * cell), bool)
    padded[:height, :width] = targets
    coarse = padded.reshape(gh, cell, gw, cell).any(axis=(1, 3))
    reach = max(1, tile // 4 // cell)
    grouped = cv2.dilate(coarse.astype(np.uint8), np.ones((2 * reach + 1, 2 * reach + 1), np.uint8))
    count, labels = cv2.connectedComponents(grouped, connectivity=8)
    cy, cx = np.nonzero(coarse)
    group = labels[cy, cx]
    context = max(1, tile // 8)
    step = max(1, min(align, cell))
    boxes: list[Box] = []
    for g in range(1, count):
        sel = group == g
        cy0, cy1, cx0, cx1 = (
            cy[sel].min() * cell,
            (cy[sel].max() + 1) * cell,
            cx[sel].min() * cell,
            (cx[sel].max() + 1) * cell,
        )
        ys, xs = np.nonzero(targets[cy0:cy1, cx0:cx1])  # the exact extent inside the cells
        y0, y1 = int(cy0 + ys.min()), int(cy0 + ys.max() + 1)
        x0, x1 = int(cx0 + xs.min()), int(cx0 + xs.max() + 1)
        extent = max(y1 - y0, x1 - x0)
        if extent + 2 * context <= tile:
            margin = max(context, extent)
            (y, h), (x, w) = (
                _centred(y0, y1, margin, tile, align, step, height),
                _centred(x0, x1, margin, tile, align, step, width),
            )
            boxes.append((y, x, h, w))
            continue
        sy0, sy1 = max(0, y0 - context), min(height, y1 + context)
        sx0, sx1 = max(0, x0 - context), min(width, x1 + context)
        th, tw = min(tile, sy1 - sy0), min(tile, sx1 - sx0)
        for y in tile_origins(sy1 - sy0, tile, overlap, align):
            for x in tile_origins(sx1 - sx0, tile, overlap, align):
                if targets[sy0 + y : sy0 + y + th, sx0 + x : sx0 + x + tw].any():
                    boxes.append((sy0 + y, sx0 + x, th, tw))
    return sorted(set(boxes))


def _centred(lo: int, hi: int, margin: int, tile: int, align: int, step: int, length: int) -> tuple[int, int]:
    """Start and size along one axis of a crop around ``[lo, hi)`` with ``margin`` pixels each side."""
    size = min(-(-(hi - lo + 2 * margin) // align) * align, tile, length)
    start = int(round((lo + hi - size) / 2 / step)) * step
    start = min(max(start, hi - size, 0), lo, length - size)  # inside the image, holding [lo, hi)
    return start, size


def model_pixels(
    known: np.ndarray,
    *,
    tile: int | str | None = "auto",
    scale: str | float = "auto",
    hole_depth: float = DEFAULT_HOLE_DEPTH,
    overlap: int | None = None,
    multiple: int = 1,
) -> int:
    """How many pixels :func:`inpaint` would send through the model (per sample, without
    ``flip``): a measure of its work, known before any image is decoded or model run (a server
    refuses requests over a budget with it)."""
    levels = _scale_levels(known, scale, hole_depth)
    total = 0
    for level in _levels(known, levels, tile):
        h, w = level.known.shape
        if level.tile is None or (level.tile >= h and level.tile >= w):
            total += h * w
        else:
            boxes = crop_boxes(
                level.targets, level.tile, level.tile // 4 if overlap is None else overlap, min(multiple, level.tile)
            )
            total += sum(bh * bw for _, _, bh, bw in boxes)
    return total


def _multiscale(
    model: nn.Module,
    image: np.ndarray,
    known: np.ndarray,
    levels: np.ndarray,
    tile: int | str | None,
    overlap: int | None,
    samples: int,
    batch: int,
    flip: bool,
    device: torch.device,
    progress: bool,
    should_stop: Callable[[], bool] | None,
) -> InpaintResult:
    """Run every scale level of ``levels`` and paste each level's fill into its own holes."""
    out = image.copy()
    std = np.zeros(image.shape, np.float32) if samples > 1 else None
    height, width = known.shape
    tiles = 0
    for level in _levels(known, levels, tile):
        mine = level.mine
        if level.factor == 1:
            tiles += _inpaint(
                model,
                image,
                known,
                mine,
                level.tile,
                overlap,
                samples,
                batch,
                flip,
                device,
                progress,
                should_stop,
                out,
                std,
            )
            continue
        size = level.known.shape[::-1]
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA).reshape(size[1], size[0], -1)
        small_out = small.copy()
        small_std = np.zeros(small.shape, np.float32) if std is not None else None
        tiles += _inpaint(
            model,
            small,
            level.known,
            level.targets,
            level.tile,
            overlap,
            samples,
            batch,
            flip,
            device,
            progress,
            should_stop,
            small_out,
            small_std,
        )
        # only the bounding box of this level's holes is upsampled
        ys, xs = np.nonzero(mine)
        box = (ys.min(), ys.max() + 1, xs.min(), xs.max() + 1)
        y0, y1, x0, x1 = box
        big = _upsample_box(small_out.astype(np.float32), (height, width), box)
        sub = mine[y0:y1, x0:x1]
        out[y0:y1, x0:x1][sub] = np.clip(np.rint(big[sub]), 0, 255).astype(np.uint8)
        if std is not None:
            std[y0:y1, x0:x1][sub] = np.maximum(_upsample_box(small_std, (height, width), box)[sub], 0)
    return InpaintResult(out, std, tiles, samples * 2 if flip and samples > 1 else samples)


def _resolve_tile(tile: int | str | None, height: int, width: int) -> int | None:
    return auto_tile(height, width) if tile == "auto" else tile  # type: ignore[return-value]


def _upsample_box(small: np.ndarray, full: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """The part ``box = (y0, y1, x0, x1)`` of ``small`` resized (bicubic) to ``full = (H, W)``,
    computed without upsampling the whole image: pixel centres map as ``cv2.resize`` maps them."""
    (height, width), (y0, y1, x0, x1) = full, box
    sy, sx = small.shape[0] / height, small.shape[1] / width
    gx = (np.arange(x0, x1, dtype=np.float32) + 0.5) * sx - 0.5
    gy = (np.arange(y0, y1, dtype=np.float32) + 0.5) * sy - 0.5
    map_x = np.broadcast_to(gx[None, :], (y1 - y0, x1 - x0)).astype(np.float32)
    map_y = np.broadcast_to(gy[:, None], (y1 - y0, x1 - x0)).astype(np.float32)
    up = cv2.remap(np.ascontiguousarray(small), map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    return up.reshape(y1 - y0, x1 - x0, -1)


def _inpaint(
    model: nn.Module,
    image: np.ndarray,
    known: np.ndarray,
    targets: np.ndarray,
    tile: int | None,
    overlap: int | None,
    samples: int,
    batch: int,
    flip: bool,
    device: torch.device,
    progress: bool,
    should_stop: Callable[[], bool] | None,
    out: np.ndarray,
    std: np.ndarray | None,
) -> int:
    """Write the prediction of the ``targets`` pixels (a subset of the holes) at this resolution into
    ``out`` (and their standard deviation into ``std``); other pixels are left alone. Only tiles
    touching a target run; returns how many ran."""
    height, width = known.shape
    if not targets.any():
        return 0
    if should_stop is not None and should_stop():
        raise Cancelled
    if tile is None or (tile >= height and tile >= width):
        pred, var = _predict(model, image, known, samples, batch, device, flip)
        out[targets] = _to_uint8(pred[targets])
        if std is not None:
            std[targets] = np.sqrt(var[targets])
        return 1

    overlap = tile // 4 if overlap is None else overlap
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got {overlap} for tile {tile}")
    align = min(getattr(model, "multiple", 1), tile)
    boxes = crop_boxes(targets, tile, overlap, align)
    # Accumulators cover only the bounding box of the crops, so memory follows the holes.
    top = min(y for y, _, _, _ in boxes)
    left = min(x for _, x, _, _ in boxes)
    bottom = max(y + h for y, _, h, _ in boxes)
    right = max(x + w for _, x, _, w in boxes)
    acc = np.zeros((bottom - top, right - left, image.shape[2]), np.float32)
    acc_var = np.zeros(acc.shape, np.float32) if samples > 1 else None
    weight = np.zeros((bottom - top, right - left), np.float32)
    for y, x, box_h, box_w in tqdm(boxes, desc="tiles", unit="tile", disable=not progress, leave=False):
        if should_stop is not None and should_stop():
            raise Cancelled
        y1, x1 = y + box_h, x + box_w
        pred, var = _predict(model, image[y:y1, x:x1], known[y:y1, x:x1], samples, batch, device, flip)
        w = _feather(y1 - y, x1 - x, overlap)
        region = (slice(y - top, y1 - top), slice(x - left, x1 - left))
        acc[region] += pred * w[..., None]
        weight[region] += w
        if acc_var is not None:
            acc_var[region] += var * w[..., None]
    sub = targets[top:bottom, left:right]
    out[top:bottom, left:right][sub] = _to_uint8(acc[sub] / weight[sub][:, None])
    if std is not None:
        std[top:bottom, left:right][sub] = np.sqrt(acc_var[sub] / weight[sub][:, None])
    return len(boxes)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)
