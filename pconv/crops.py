"""Crops around the holes: where the model runs at one working scale (see :mod:`pconv.tiling`).

Nearby holes form a group; a group gets one crop centred on it with about its own size of known
context on every side (:func:`crop_boxes`), and a group bigger than a tile is covered by the tiles
of a grid that touch it. Along thin holes, crops are sized to each hole's depth (:func:`crop_plan`);
:func:`crops_for` takes whichever plan sends fewer pixels through the model. The work follows the
hole pixels, not the image: a 24 MP photo with 60 small holes is planned from its 0.3 MP of holes.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pconv.errors import ConfigError

__all__ = [
    "COMPACT_MARGIN",
    "CONTEXT_DEPTHS",
    "MIN_CROP",
    "Box",
    "Holes",
    "crop_boxes",
    "crop_plan",
    "crops_for",
    "tile_origins",
]


def tile_origins(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``length``, sharing at least ``overlap``.

    Offsets are multiples of ``align`` (the network's padding multiple, so a tile sees the same
    pixel grid as the whole image would down to that level; deeper levels may differ, which only
    matters where tiles are blended), except the last, which ends at the edge. Callers keep
    ``align <= tile``.
    """
    if tile >= length:
        return [0]
    stride = max(align, (tile - overlap) // align * align)
    return [*range(0, length - tile, stride), length - tile]


@dataclass(frozen=True)
class Holes:
    """The connected holes of a full-resolution mask (8-connectivity), found once while
    :func:`pconv.tiling.make_plan` picks the working scales and read again by :func:`crop_plan`:
    ``labels`` per pixel (0 = known) and the ``deepest`` distance to a known pixel in each hole."""

    labels: np.ndarray
    deepest: np.ndarray


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
    grid over it (sharing ``overlap`` pixels) that touch one of its targets. Sides are multiples of ``align``
    where the image allows; grid offsets are multiples of ``step`` (default ``align``).
    """
    ys, xs = np.nonzero(targets)
    return _boxes(ys, xs, targets.shape, tile, overlap, align, step)


def _boxes(
    ys: np.ndarray, xs: np.ndarray, shape: tuple[int, int], tile: int, overlap: int, align: int, step: int | None
) -> list[Box]:
    """:func:`crop_boxes` of the target pixels at ``(ys, xs)`` in an image of ``shape``: work in
    proportion to the targets, not the image (a 24 MP photo with 60 small holes has 0.3 MP)."""
    height, width = shape
    cell = GROUP_CELL
    cy, cx = ys // cell, xs // cell
    coarse = np.zeros((-(-height // cell), -(-width // cell)), np.uint8)
    coarse[cy, cx] = 1
    reach = max(1, tile // 4 // cell)
    grouped = cv2.dilate(coarse, np.ones((2 * reach + 1, 2 * reach + 1), np.uint8))
    count, labels = cv2.connectedComponents(grouped, connectivity=8)
    group = labels[cy, cx]
    order = np.argsort(group, kind="stable")
    ends = np.searchsorted(group[order], np.arange(1, count + 1))  # group g's pixels: order[ends[g-1]:ends[g]]
    context = max(1, tile // 8)
    grid_step = step or align
    step = max(1, min(grid_step, cell))
    boxes: list[Box] = []
    for g in range(1, count):
        mine = order[ends[g - 1] : ends[g]]
        gy, gx = ys[mine], xs[mine]
        y0, y1, x0, x1 = int(gy.min()), int(gy.max()) + 1, int(gx.min()), int(gx.max()) + 1
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
        own = np.zeros((sy1 - sy0, sx1 - sx0), bool)  # the group's pixels: a crop must touch one
        own[gy - sy0, gx - sx0] = True
        for y in tile_origins(sy1 - sy0, tile, overlap, grid_step):
            for x in tile_origins(sx1 - sx0, tile, overlap, grid_step):
                if own[y : y + th, x : x + tw].any():
                    boxes.append((sy0 + y, sx0 + x, th, tw))
    return sorted(set(boxes))


# Crops along a hole are about this many times its depth on a side: context enough for the
# network to continue what is around a thin hole, without sending a tile of mostly known pixels.
CONTEXT_DEPTHS = 8
# and never smaller than this: a few pixels of hole still need some surroundings.
MIN_CROP = 64


def crop_plan(
    targets: np.ndarray, known: np.ndarray, tile: int, multiple: int, holes: Holes | None = None
) -> list[tuple[Box, int]]:
    """Crops ``(box, overlap)`` covering every target pixel, each sized to the holes it covers.

    Each connected hole gets crops of side ``CONTEXT_DEPTHS`` times its depth (the largest distance
    from one of its pixels to a known pixel), rounded up to the model's ``multiple`` and at most
    ``tile`` (and at least :data:`MIN_CROP`): a 20-px stroke runs in 96-px crops along it (with
    the release's multiple of 32) instead of 512-px tiles. Crops of one
    side come from :func:`crop_boxes` with a quarter of the side as overlap; crops of different
    sides may overlap each other, and their predictions are blended like any others. ``holes``:
    those of ``known`` when already found (see :class:`Holes`), else they are found here, in a
    window around the targets.
    """
    ys, xs = np.nonzero(targets)
    return _sized(ys, xs, known, tile, multiple, holes)


def _sized(
    ys: np.ndarray, xs: np.ndarray, known: np.ndarray, tile: int, multiple: int, holes: Holes | None
) -> list[tuple[Box, int]]:
    """:func:`crop_plan` of the target pixels at ``(ys, xs)`` (in ``np.nonzero`` order)."""
    if not ys.size:
        return []
    if holes is None:
        height, width = known.shape
        y0, y1 = max(0, int(ys[0]) - tile), min(height, int(ys[-1]) + 1 + tile)
        x0, x1 = max(0, int(xs.min()) - tile), min(width, int(xs.max()) + 1 + tile)
        window = (~known[y0:y1, x0:x1]).view(np.uint8)
        depth = cv2.distanceTransform(window, cv2.DIST_L2, 5)
        count, labels = cv2.connectedComponents(window, connectivity=8)
        deepest = np.zeros(count, np.float32)
        inside = np.flatnonzero(window)
        np.maximum.at(deepest, labels.ravel()[inside], depth.ravel()[inside])
        label_of = labels[ys - y0, xs - x0]
    else:
        label_of, deepest = holes.labels[ys, xs], holes.deepest
    unit = max(1, min(multiple, tile))
    smallest = min(tile, -(-max(MIN_CROP, unit) // unit) * unit)
    sides = np.minimum(np.ceil(CONTEXT_DEPTHS * deepest / unit).astype(np.int64) * unit, tile)
    sides = np.maximum(sides, smallest)
    side_of = sides[label_of]  # each target pixel's crop side
    plan: list[tuple[Box, int]] = []
    for side in (int(v) for v in np.unique(side_of)):
        mine = side_of == side
        overlap = side // 4
        step = unit if side >= 4 * unit else max(1, side // 4)  # small crops: overlap before alignment
        plan += [(box, overlap) for box in _boxes(ys[mine], xs[mine], known.shape, side, overlap, unit, step)]
    return plan


def crops_for(
    targets: np.ndarray, known: np.ndarray, tile: int, overlap: int | None, multiple: int, holes: Holes | None = None
) -> list[tuple[Box, int]]:
    """The crops ``(box, overlap)`` a tiled level runs. With an ``overlap``: tiles of one size sharing
    that many pixels (:func:`crop_boxes`). Without: crops sized to the holes (:func:`crop_plan`) or
    tiles sharing a quarter of their side, whichever sends fewer pixels through the model (small
    crops win along thin holes far apart; where holes are dense, tiles cover them with less
    overlap)."""
    if overlap is not None and overlap >= tile:
        raise ConfigError(f"the overlap must be smaller than the tile, got {overlap} for tile {tile}")
    ys, xs = np.nonzero(targets)  # once, for both plans
    align = min(multiple, tile)
    if overlap is not None:
        return [(box, overlap) for box in _boxes(ys, xs, targets.shape, tile, overlap, align, None)]
    sized = _sized(ys, xs, known, tile, multiple, holes)
    tiles = [(box, tile // 4) for box in _boxes(ys, xs, targets.shape, tile, tile // 4, align, None)]
    return min(tiles, sized, key=lambda crops: sum(h * w for (_, _, h, w), _ in crops))


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
