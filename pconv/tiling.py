"""Where a model runs on an image: working scales per hole, crops around the holes, tile blending.

Large images run in crops around the holes (:mod:`pconv.crops`): nearby holes form a group; a
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
from typing import TYPE_CHECKING

import cv2
import numpy as np

from pconv.crops import Box, Holes, crop_boxes, crop_plan, crops_for, tile_origins
from pconv.errors import InputError
from pconv.options import InpaintOptions

if TYPE_CHECKING:
    from pconv.models import InpaintingModel

__all__ = [
    "DEFAULT_HOLE_DEPTH",
    "MIN_LEVEL_SIDE",
    "TILE_CONTEXT",
    "Box",
    "Holes",
    "Level",
    "LevelPlan",
    "Plan",
    "auto_tile",
    "crop_boxes",
    "crop_plan",
    "crops_for",
    "feather",
    "geometry_of_model",
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
# With a tile side T given and scale="auto", holes are worked at a scale where every hole pixel lies
# within T * TILE_CONTEXT of a known one (at most the model's hole depth), so that a crop never lies
# wholly inside a hole (that needs a depth of T/2) and its holes have context: the ratio the released
# model trained at (512-px crops, holes up to 128 deep), so 512-px tiles leave its depth unchanged.
# Where the image is too small to go that coarse, a level with such a crop runs in one pass.
TILE_CONTEXT = 0.25


def auto_tile(height: int, width: int) -> int | None:
    """Tile side for ``tile="auto"``: ``None`` (one pass) for images up to about one megapixel."""
    return None if height * width <= AUTO_SINGLE_PASS_PIXELS else AUTO_TILE


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
    return _hole_levels(known, hole_depth, max_factor)[0]


def _hole_levels(known: np.ndarray, hole_depth: float, max_factor: int | None) -> tuple[np.ndarray, Holes | None]:
    """:func:`hole_levels`, and the :class:`Holes` it found (``None`` without holes)."""
    holes = (~known).view(np.uint8)
    if not holes.any():
        return np.zeros(known.shape, np.uint8), None
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
    return levels, Holes(labels, deepest)


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
    return _scale_levels(known, scale, hole_depth)[0]


def _scale_levels(known: np.ndarray, scale: str | float, hole_depth: float) -> tuple[np.ndarray, Holes | None]:
    """:func:`scale_levels`, and the :class:`Holes` that ``scale="auto"`` found on the way."""
    max_factor = max(1, min(known.shape) // MIN_LEVEL_SIDE)
    if scale == "auto":
        return _hole_levels(known, hole_depth, max_factor)
    return np.where(known, 0.0, min(float(scale), max_factor)), None


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


def geometry_of_model(model: InpaintingModel) -> tuple[float, int]:
    """What a model's plan depends on: the hole depth it handles (:data:`DEFAULT_HOLE_DEPTH` when
    unknown) and the multiple it pads to; :func:`make_plan`'s last two arguments."""
    return model.hole_depth or DEFAULT_HOLE_DEPTH, model.multiple


def make_plan(known: np.ndarray, options: InpaintOptions, hole_depth: float, multiple: int = 1) -> Plan:
    """The :class:`Plan` of inpainting the holes of ``known`` with ``options`` (working scales from
    ``hole_depth``, unless ``options`` overrides it; crops aligned to the model's ``multiple``)."""
    depth = options.hole_depth or hole_depth
    if options.scale == "auto" and isinstance(options.tile, int):
        depth = min(depth, options.tile * TILE_CONTEXT)
    levels, holes = _scale_levels(known, options.scale, depth)
    planned = []
    for level in scale_plan(known, levels, options.tile):
        h, w = level.known.shape
        if not level.targets.any():
            continue
        crops = None
        if level.tile is not None and (level.tile < h or level.tile < w):
            crops = crops_for(
                level.targets,
                level.known,
                level.tile,
                options.overlap,
                multiple,
                holes if level.factor == 1 else None,  # the full-resolution holes
            )
            blind = _blind_crop(level.known, crops)
            if blind is not None:  # nothing known to fill it from: a model would return black there
                if h * w > AUTO_SINGLE_PASS_PIXELS:
                    at = "" if level.factor == 1 else f" at 1/{level.factor:g} scale"
                    raise InputError(
                        f"a {max(blind[2:])}-px crop{at} lies wholly inside a hole: nothing known to fill it "
                        "from; pass a larger tile"
                    )
                crops = None  # a small level (the coarsest of a small or narrow image): one pass, as "auto" runs it
        planned.append(LevelPlan(level, crops))
    return Plan(planned)


def _blind_crop(known: np.ndarray, crops: list[tuple[Box, int]]) -> Box | None:
    """The first crop that holds no known pixel, if any."""
    return next((box for box, _ in crops if not known[box[0] : box[0] + box[2], box[1] : box[1] + box[3]].any()), None)


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
