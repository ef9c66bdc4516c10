"""Where a model runs on an image: working scales per hole, crops around the holes, tile blending.

Large images run in crops around the holes (:func:`crop_boxes`): nearby holes form a group; a
group gets one crop centred on it with about its own size of known context on every side, and a
group bigger than a tile is covered by the hole-touching tiles of a grid. Overlapping predictions
are blended with feathered weights (:func:`feather`: highest at a crop's centre, small but
positive at its edges), so memory is bounded by the tile size and time grows with the holes, not
with the image.

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

Everything here works on masks alone (NumPy and OpenCV, no PyTorch): a server can measure a
request's work (:func:`model_pixels`) before it decodes the image.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from pconv.errors import ConfigError, InputError
from pconv.options import InpaintOptions

__all__ = [
    "DEFAULT_HOLE_DEPTH",
    "MIN_LEVEL_SIDE",
    "Box",
    "Level",
    "LevelPlan",
    "Plan",
    "auto_tile",
    "crop_boxes",
    "crop_plan",
    "crops_for",
    "feather",
    "hole_levels",
    "make_plan",
    "model_pixels",
    "scale_levels",
    "scale_plan",
    "tile_origins",
    "upsample_box",
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
    holes = (~known).view(np.uint8)
    if not holes.any():
        return np.zeros(known.shape, np.uint8)
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
    # one byte per pixel where the factors allow: a 24 MP map of int32 cost more than the rest here
    levels = factors.astype(np.uint8 if factors.max() < 256 else np.int32)[labels]
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


def feather(height: int, width: int, overlap: int) -> np.ndarray:
    """Blend weights of a tile: a linear ramp over ``overlap`` pixels at each edge, never 0."""

    def ramp(n: int) -> np.ndarray:
        d = np.minimum(np.arange(n), np.arange(n)[::-1]) + 1.0  # distance to the nearer edge
        return np.clip(d / max(overlap, 1), 1e-3, 1.0)

    return (ramp(height)[:, None] * ramp(width)[None, :]).astype(np.float32)


def scale_levels(known: np.ndarray, scale: str | float, hole_depth: float) -> np.ndarray:
    """Each pixel's working downscale factor (0 = known) for ``scale`` (see :func:`inpaint`)."""
    max_factor = max(1, min(known.shape) // MIN_LEVEL_SIDE)
    if scale == "auto":
        return hole_levels(known, hole_depth, max_factor)
    return np.where(known, 0.0, min(float(scale), max_factor))


@dataclass
class Level:
    """One working scale: the (downscaled) mask, the pixels to fill there and the tile side."""

    factor: float
    known: np.ndarray  # (h, w) bool at this scale
    targets: np.ndarray  # (h, w) bool: the pixels this level must predict
    mine: np.ndarray  # (H, W) bool: the full-resolution holes this level fills
    tile: int | None


def scale_plan(known: np.ndarray, levels: np.ndarray, tile: int | str | None) -> Iterator[Level]:
    """The scale levels of ``levels`` (see :func:`hole_levels`), finest first."""
    height, width = known.shape
    for factor in sorted({float(f) for f in np.unique(levels[levels > 0])}):
        mine = levels == factor
        if factor == 1:
            yield Level(factor, known, mine, mine, resolve_tile(tile, height, width))
            continue
        size = (max(1, round(width / factor)), max(1, round(height / factor)))
        small_known = cv2.resize(known.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 1 - 1e-6
        if not small_known.any():
            raise InputError("the holes leave no known pixel at the working scale; pass a smaller scale")
        small_targets = cv2.resize(mine.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0
        # the upsampling reads the 2 low-resolution pixels around each target pixel
        small_targets = (
            cv2.dilate(small_targets.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & ~small_known
        )
        yield Level(factor, small_known, small_targets, mine, resolve_tile(tile, size[1], size[0]))


Box = tuple[int, int, int, int]  # (y, x, height, width) of a crop through the model

# Target pixels are grouped on a grid of cells this many pixels wide.
GROUP_CELL = 16
# Context on each side of a group that fits in one crop, as a fraction of the group's extent (and
# at least an eighth of the tile): the crop around a 100-px blob is 200 px before rounding up.
# Half rather than all of the extent: the same fills to within 0.005 dB per case (SE 0.006) with
# 14 % less model work on photos with 30 small holes (``bench_crops.py --blobs --upscale 2 --margin 1``
# compares the whole extent with this).
COMPACT_MARGIN = 0.5


def crop_boxes(targets: np.ndarray, tile: int, overlap: int, align: int, step: int | None = None) -> list[Box]:
    """Crops ``(y, x, h, w)`` that cover every target pixel, each at most ``tile`` on a side.

    Target pixels within about ``tile // 4`` of each other form a group. A group that fits in a tile
    with ``tile // 8`` pixels of context on every side gets one crop centred on it, with half the
    group's own size of context around it (:data:`COMPACT_MARGIN`; the model sees known pixels on
    all sides, and a small hole costs a small crop). A bigger group is covered by those tiles of a
    grid over it (sharing ``overlap`` pixels) that touch a target. Sides are multiples of ``align``
    where the image allows; grid offsets are multiples of ``step`` (default ``align``).
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
    grid_step = step or align
    step = max(1, min(grid_step, cell))
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
            margin = max(context, round(COMPACT_MARGIN * extent))
            (y, h), (x, w) = (
                _centred(y0, y1, margin, tile, align, step, height),
                _centred(x0, x1, margin, tile, align, step, width),
            )
            boxes.append((y, x, h, w))
            continue
        # the grid's area: the group with context, at least a tile wide each way (centred) where
        # the image allows, so a thin group's crops see known pixels on both sides
        sy0, sy1 = _span(y0 - context, y1 + context, tile, height)
        sx0, sx1 = _span(x0 - context, x1 + context, tile, width)
        th, tw = min(tile, sy1 - sy0), min(tile, sx1 - sx0)
        for y in tile_origins(sy1 - sy0, tile, overlap, grid_step):
            for x in tile_origins(sx1 - sx0, tile, overlap, grid_step):
                if targets[sy0 + y : sy0 + y + th, sx0 + x : sx0 + x + tw].any():
                    boxes.append((sy0 + y, sx0 + x, th, tw))
    return sorted(set(boxes))


# Crops along a hole are about this many times its depth on a side: context enough for the
# network to continue what is around a thin hole, without sending a tile of mostly known pixels.
CONTEXT_DEPTHS = 8
# and never smaller than this: a few pixels of hole still need some surroundings.
MIN_CROP = 64


def crop_plan(targets: np.ndarray, known: np.ndarray, tile: int, multiple: int) -> list[tuple[Box, int]]:
    """Crops ``(box, overlap)`` covering every target pixel, each sized to the holes it covers.

    Each connected hole gets crops of side ``CONTEXT_DEPTHS`` times its depth (the largest distance
    from one of its pixels to a known pixel), rounded up to the model's ``multiple`` and at most
    ``tile`` (and at least :data:`MIN_CROP`): a 20-px stroke runs in 128-px crops along it
    instead of 512-px tiles. Crops of one
    side come from :func:`crop_boxes` with a quarter of the side as overlap; crops of different
    sides may overlap each other, and their predictions are blended like any others.
    """
    rows, cols = np.flatnonzero(targets.any(axis=1)), np.flatnonzero(targets.any(axis=0))
    if not rows.size:
        return []
    height, width = known.shape
    pad = tile
    y0, y1 = max(0, rows[0] - pad), min(height, rows[-1] + 1 + pad)
    x0, x1 = max(0, cols[0] - pad), min(width, cols[-1] + 1 + pad)
    window = (~known[y0:y1, x0:x1]).view(np.uint8)
    depth = cv2.distanceTransform(window, cv2.DIST_L2, 5)
    count, labels = cv2.connectedComponents(window, connectivity=8)
    deepest = np.zeros(count, np.float32)
    inside = np.flatnonzero(window)
    np.maximum.at(deepest, labels.ravel()[inside], depth.ravel()[inside])
    unit = max(1, min(multiple, tile))
    smallest = min(tile, -(-max(MIN_CROP, unit) // unit) * unit)
    sides = np.minimum(np.ceil(CONTEXT_DEPTHS * deepest / unit).astype(np.int64) * unit, tile)
    sides = np.maximum(sides, smallest)
    near = targets[y0:y1, x0:x1]
    wanted = np.unique(sides[np.unique(labels[near])])
    # each hole's crop side as an index into ``wanted``, one byte per pixel of the window
    index = np.zeros(count, np.uint8 if len(wanted) < 255 else np.int32)
    index[1:] = np.searchsorted(wanted, sides[1:]) + 1
    coded = index[labels]
    plan: list[tuple[Box, int]] = []
    for i, side in enumerate(int(v) for v in wanted):
        mine = np.zeros(known.shape, bool)
        mine[y0:y1, x0:x1] = near & (coded == i + 1)
        overlap = side // 4
        step = unit if side >= 4 * unit else max(1, side // 4)  # small crops: overlap before alignment
        plan += [(box, overlap) for box in crop_boxes(mine, side, overlap, unit, step)]
    return plan


def crops_for(
    targets: np.ndarray, known: np.ndarray, tile: int, overlap: int | None, multiple: int
) -> list[tuple[Box, int]]:
    """The crops ``(box, overlap)`` a tiled level runs. With an ``overlap``: tiles of one size sharing
    that many pixels (:func:`crop_boxes`). Without: crops sized to the holes (:func:`crop_plan`) or
    tiles sharing a quarter of their side, whichever sends fewer pixels through the model (small
    crops win along thin holes far apart; where holes are dense, tiles cover them with less
    overlap)."""
    if overlap is None:
        sized = crop_plan(targets, known, tile, multiple)
        tiles = [(box, tile // 4) for box in crop_boxes(targets, tile, tile // 4, min(multiple, tile))]
        return min(tiles, sized, key=lambda crops: sum(h * w for (_, _, h, w), _ in crops))
    if overlap >= tile:
        raise ConfigError(f"the overlap must be smaller than the tile, got {overlap} for tile {tile}")
    return [(box, overlap) for box in crop_boxes(targets, tile, overlap, min(multiple, tile))]


def _span(lo: int, hi: int, tile: int, length: int) -> tuple[int, int]:
    """``[lo, hi)`` widened to at least ``tile`` about its centre, inside ``[0, length)``."""
    if hi - lo < tile:
        lo = (lo + hi - tile) // 2
        hi = lo + tile
    lo, hi = max(0, lo), min(length, hi)
    if hi - lo < min(tile, length):  # cut by an edge: extend on the other side
        lo, hi = (0, min(length, tile)) if lo == 0 else (max(0, length - tile), length)
    return lo, hi


def _centred(lo: int, hi: int, margin: int, tile: int, align: int, step: int, length: int) -> tuple[int, int]:
    """Start and size along one axis of a crop around ``[lo, hi)`` with ``margin`` pixels each side."""
    size = min(-(-(hi - lo + 2 * margin) // align) * align, tile, length)
    start = int(round((lo + hi - size) / 2 / step)) * step
    start = min(max(start, hi - size, 0), lo, length - size)  # inside the image, holding [lo, hi)
    return start, size


@dataclass
class LevelPlan:
    """Where the model runs at one working scale: the level, and its crops (``None``: one pass
    over the whole level)."""

    level: Level
    crops: list[tuple[Box, int]] | None

    @property
    def pixels(self) -> int:
        if self.crops is None:
            h, w = self.level.known.shape
            return h * w
        return sum(bh * bw for (_, _, bh, bw), _ in self.crops)


@dataclass
class Plan:
    """Every place the model runs on one image, worked out once from the mask: what
    :func:`pconv.inpaint.inpaint` executes and what a server's work budget counts."""

    levels: list[LevelPlan]

    @property
    def pixels(self) -> int:
        """Pixels through the model (per sample, without ``flip``)."""
        return sum(lp.pixels for lp in self.levels)


def make_plan(known: np.ndarray, options: InpaintOptions, hole_depth: float, multiple: int = 1) -> Plan:
    """The :class:`Plan` of inpainting the holes of ``known`` with ``options`` (working scales from
    ``hole_depth``, unless ``options`` overrides it; crops aligned to the model's ``multiple``)."""
    levels = scale_levels(known, options.scale, options.hole_depth or hole_depth)
    planned = []
    for level in scale_plan(known, levels, options.tile):
        h, w = level.known.shape
        if not level.targets.any():
            continue
        if level.tile is None or (level.tile >= h and level.tile >= w):
            planned.append(LevelPlan(level, None))
        else:
            planned.append(
                LevelPlan(level, crops_for(level.targets, level.known, level.tile, options.overlap, multiple))
            )
    return Plan(planned)


def model_pixels(known: np.ndarray, options: InpaintOptions, hole_depth: float, multiple: int = 1) -> int:
    """How many pixels :func:`pconv.inpaint.inpaint` would send through the model (per sample,
    without ``flip``): a measure of its work, known before any image is decoded or model run (a
    server refuses requests over a budget with it). ``hole_depth`` is the model's, unless
    ``options`` overrides it."""
    return make_plan(known, options, hole_depth, multiple).pixels


def resolve_tile(tile: int | str | None, height: int, width: int) -> int | None:
    return auto_tile(height, width) if tile == "auto" else tile  # type: ignore[return-value]


def upsample_box(small: np.ndarray, full: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
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
