"""Hole generators. Each is a pure function of the size and an explicit ``np.random.Generator``:
the same seed gives the same mask. They return ``(H, W)`` bool arrays, True = known, False = hole.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

__all__ = [
    "DEFAULT_MIX",
    "KINDS",
    "MIXES",
    "RATIO_BINS",
    "band_mask",
    "box_mask",
    "free_form_mask",
    "generate",
    "parse_kind",
    "parse_ratio",
    "random_strokes",
    "ratio_mask",
]

# The six hole-to-image ratio bins of the paper's evaluation, each (low, high].
RATIO_BINS: dict[str, tuple[float, float]] = {
    "01-10": (0.01, 0.1),
    "10-20": (0.1, 0.2),
    "20-30": (0.2, 0.3),
    "30-40": (0.3, 0.4),
    "40-50": (0.4, 0.5),
    "50-60": (0.5, 0.6),
}

# Free-form presets: (max vertices, max segment length, (min, max) brush width), as fractions of the side.
FREE_FORM_PRESETS = {
    "thin": (8, 0.08, (0.01, 0.025)),
    "medium": (10, 0.12, (0.025, 0.05)),
    "thick": (12, 0.16, (0.05, 0.09)),
}


def _as_mask(holes: np.ndarray) -> np.ndarray:
    return holes == 0


# ---------------------------------------------------------------- primitives
# A primitive samples all its parameters with one call to the generator and returns
# ``(draw, box)``: ``draw(canvas)`` paints holes as 1, ``box = (x0, y0, x1, y1)`` bounds the
# pixels it can touch, so ratio control saves, counts and restores only that box.
Primitive = tuple[Callable[[np.ndarray], None], tuple[int, int, int, int]]


def _box(h: int, w: int, xs, ys, pad: float) -> tuple[int, int, int, int]:
    pad = int(np.ceil(pad)) + 2
    return (
        max(0, int(min(xs)) - pad),
        max(0, int(min(ys)) - pad),
        min(w, int(max(xs)) + pad + 1),
        min(h, int(max(ys)) + pad + 1),
    )


def _stroke_primitive(h: int, w: int, rng: np.random.Generator, kind: int | None = None) -> Primitive:
    """One line, filled circle or ellipse arc, as in the Keras reimplementation's generator."""
    size = max(4, int((w + h) * 0.03))
    u = rng.random(9)
    kind = int(u[0] * 3) if kind is None else kind
    thick = 3 + int(u[1] * (size - 3))
    x1, y1 = 1 + int(u[2] * (w - 1)), 1 + int(u[3] * (h - 1))
    if kind == 0:
        x2, y2 = 1 + int(u[4] * (w - 1)), 1 + int(u[5] * (h - 1))
        return (lambda c: cv2.line(c, (x1, y1), (x2, y2), 1, thick)), _box(h, w, (x1, x2), (y1, y2), thick / 2)
    if kind == 1:
        return (lambda c: cv2.circle(c, (x1, y1), thick, 1, -1)), _box(h, w, (x1,), (y1,), thick)
    ax, ay = 1 + int(u[4] * (w - 1)), 1 + int(u[5] * (h - 1))
    angle, start, end = (3 + int(v * 177) for v in u[6:9])
    r = max(ax, ay)
    return (
        (lambda c: cv2.ellipse(c, (x1, y1), (ax, ay), angle, start, end, 1, thick)),
        _box(h, w, (x1 - r, x1 + r), (y1 - r, y1 + r), thick / 2),
    )


def _brush_primitive(h: int, w: int, rng: np.random.Generator, preset: str = "medium") -> Primitive:
    """One free-form brush stroke: a connected thick polyline with rounded joints."""
    side = min(h, w)
    max_vertex, max_len, (wmin, wmax) = FREE_FORM_PRESETS[preset]
    u = rng.random(5 + 3 * max_vertex)
    width = max(1, int((wmin + u[0] * (wmax - wmin)) * side))
    xs, ys = [int(u[1] * (w - 1))], [int(u[2] * (h - 1))]
    angle = u[3] * 2 * np.pi
    for i in range(2 + int(u[4] * (max_vertex - 1))):
        a, b, c = u[5 + 3 * i : 8 + 3 * i]
        angle += (a - 0.5) * 2 * np.pi / 3 + (np.pi if c < 0.15 else 0)
        length = (0.3 + 0.7 * b) * max_len * side
        xs.append(int(np.clip(xs[-1] + length * np.cos(angle), 0, w - 1)))
        ys.append(int(np.clip(ys[-1] + length * np.sin(angle), 0, h - 1)))
    points = np.array([xs, ys], np.int32).T.reshape(-1, 1, 2)

    def draw(canvas: np.ndarray) -> None:
        cv2.polylines(canvas, [points], False, 1, width, lineType=cv2.LINE_8)
        for x, y in zip(xs[1:], ys[1:]):
            cv2.circle(canvas, (x, y), width // 2, 1, -1)

    return draw, _box(h, w, xs, ys, width / 2)


def _box_primitive(h: int, w: int, rng: np.random.Generator) -> Primitive:
    u = rng.random(4)
    bh, bw = int((0.05 + 0.3 * u[0]) * h) + 1, int((0.05 + 0.3 * u[1]) * w) + 1
    top, left = int(u[2] * (h - bh + 1)), int(u[3] * (w - bw + 1))

    def draw(canvas: np.ndarray) -> None:
        canvas[top : top + bh, left : left + bw] = 1

    return draw, (left, top, left + bw, top + bh)


def _ellipse_primitive(h: int, w: int, rng: np.random.Generator) -> Primitive:
    """A filled ellipse, semi-axes 3-20% of the shorter side, any angle."""
    side = min(h, w)
    u = rng.random(5)
    ax, ay = max(2, int((0.03 + 0.17 * u[0]) * side)), max(2, int((0.03 + 0.17 * u[1]) * side))
    x, y, angle = int(u[2] * w), int(u[3] * h), float(u[4] * 180)
    r = max(ax, ay)
    return (lambda c: cv2.ellipse(c, (x, y), (ax, ay), angle, 0, 360, 1, -1)), _box(
        h, w, (x - r, x + r), (y - r, y + r), 0
    )


def _blob_primitive(h: int, w: int, rng: np.random.Generator) -> Primitive:
    """A filled irregular blob: a star-shaped polygon whose radius wanders around the centre
    (an object cut out of a photo, a stain, a torn patch)."""
    side = min(h, w)
    n = 12
    u = rng.random(3 + 2 * n)
    radius = (0.04 + 0.16 * u[0]) * side
    x, y = u[1] * w, u[2] * h
    angles = np.sort(u[3 : 3 + n]) * 2 * np.pi
    radii = radius * (0.5 + u[3 + n :])  # 0.5-1.5 times the mean radius
    radii = (radii + np.roll(radii, 1) + np.roll(radii, -1)) / 3  # smoother outline
    xs = np.clip(x + radii * np.cos(angles), 0, w - 1).astype(np.int32)
    ys = np.clip(y + radii * np.sin(angles), 0, h - 1).astype(np.int32)
    points = np.stack([xs, ys], axis=1).reshape(-1, 1, 2)
    return (lambda c: cv2.fillPoly(c, [points], 1)), _box(h, w, xs, ys, 0)


def _solid_primitive(h: int, w: int, rng: np.random.Generator) -> Primitive:
    """One solid hole: a rectangle, an ellipse or a blob, with equal chances."""
    return (_box_primitive, _ellipse_primitive, _blob_primitive)[int(rng.integers(3))](h, w, rng)


def _disc_primitive(h: int, w: int, rng: np.random.Generator, radius: int) -> Primitive:
    x, y = (int(v) for v in rng.integers((w, h)))
    return (lambda c: cv2.circle(c, (x, y), radius, 1, -1)), _box(h, w, (x,), (y,), radius)


# ---------------------------------------------------------------- generators
def random_strokes(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Random lines, filled circles and ellipse arcs (1-20 of each), sizes scaled to the image."""
    canvas = np.zeros((height, width), np.uint8)
    for kind, count in enumerate(rng.integers(1, 21, size=3)):
        for _ in range(int(count)):
            _stroke_primitive(height, width, rng, kind)[0](canvas)
    return _as_mask(canvas)


def free_form_mask(height: int, width: int, rng: np.random.Generator, preset: str = "medium") -> np.ndarray:
    """1-4 free-form brush strokes of the ``thin``/``medium``/``thick`` preset."""
    if preset not in FREE_FORM_PRESETS:
        raise ValueError(f"unknown free-form preset {preset!r}; choose from {', '.join(FREE_FORM_PRESETS)}")
    canvas = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        _brush_primitive(height, width, rng, preset)[0](canvas)
    return _as_mask(canvas)


def box_mask(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """1-3 random rectangles."""
    return solid_mask(height, width, rng, "boxes")


def solid_mask(height: int, width: int, rng: np.random.Generator, kind: str = "solid") -> np.ndarray:
    """1-3 solid holes of ``kind`` (``boxes``, ``ellipses``, ``blobs`` or any of them: ``solid``)."""
    canvas = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        _PRIMITIVES[kind](height, width, rng)[0](canvas)
    return _as_mask(canvas)


def band_mask(height: int, width: int, rows: int, side: str = "bottom") -> np.ndarray:
    """The ``rows`` rows at the ``bottom`` (or ``top``) missing: an instrument's blind zone."""
    if not 0 < rows < height:
        raise ValueError(f"rows must be between 1 and {height - 1}, got {rows}")
    if side not in ("bottom", "top"):
        raise ValueError(f"side must be 'bottom' or 'top', got {side!r}")
    known = np.ones((height, width), bool)
    if side == "bottom":
        known[height - rows :] = False
    else:
        known[:rows] = False
    return known


_PRIMITIVES: dict[str, Callable[[int, int, np.random.Generator], Primitive]] = {
    "strokes": _stroke_primitive,
    "free-form": _brush_primitive,
    "thin": lambda h, w, r: _brush_primitive(h, w, r, "thin"),
    "medium": lambda h, w, r: _brush_primitive(h, w, r, "medium"),
    "thick": lambda h, w, r: _brush_primitive(h, w, r, "thick"),
    "boxes": _box_primitive,
    "ellipses": _ellipse_primitive,
    "blobs": _blob_primitive,
    "solid": _solid_primitive,
}
KINDS = (*_PRIMITIVES, "band")
_SOLID = ("boxes", "ellipses", "blobs", "solid")

# Named mixtures of kinds (weights need not sum to 1). "mixed" is what the released model trains
# on: thin strokes alone teach nothing about the large solid holes users cut out of photos.
MIXES: dict[str, dict[str, float]] = {
    "mixed": {"strokes": 0.2, "medium": 0.2, "thick": 0.2, "solid": 0.4},
}
DEFAULT_MIX = "mixed"


def parse_kind(text: str) -> dict[str, float]:
    """A kind, a named mixture (see :data:`MIXES`) or ``"strokes=1,solid=2"`` -> ``{kind: probability}``."""
    if text in KINDS:
        return {text: 1.0}
    if text in MIXES:
        weights = MIXES[text]
    else:
        weights = {}
        for part in text.split(","):
            name, _, value = part.partition("=")
            name = name.strip()
            if name not in KINDS:
                raise ValueError(
                    f"unknown mask kind {name!r}; choose from {', '.join(KINDS)}, a mixture "
                    f"({', '.join(MIXES)}) or KIND=WEIGHT,KIND=WEIGHT,..."
                )
            try:
                weights[name] = float(value) if value else 1.0
            except ValueError:
                raise ValueError(f"mask mixture weight must be a number, got {part!r}") from None
    total = sum(weights.values())
    if any(v < 0 for v in weights.values()) or total <= 0:
        raise ValueError(f"mask mixture weights must be non-negative with a positive sum, got {text!r}")
    return {k: v / total for k, v in weights.items() if v > 0}


def ratio_mask(
    height: int, width: int, rng: np.random.Generator, ratio: tuple[float, float], kind: str = "strokes"
) -> np.ndarray:
    """A mask whose hole ratio lies in ``(low, high]``, grown one primitive at a time.

    Growth stops past a target drawn uniformly from the range, so ratios spread over it. A
    primitive that would overshoot ``high`` is rejected; after a run of rejections the generator
    falls back to small discs sized to the remaining gap, so every range of
    reasonable width is reached quickly.
    """
    low, high = ratio
    if not 0 <= low < high <= 1:
        raise ValueError(f"ratio range must satisfy 0 <= low < high <= 1, got ({low}, {high})")
    if kind not in _PRIMITIVES:
        raise ValueError(f"unknown mask kind {kind!r} for ratio growth; choose from {', '.join(_PRIMITIVES)}")
    sample = _PRIMITIVES[kind]
    total = height * width
    # Stop past a random point of the range (not always its low end), leaving room below high.
    target = rng.uniform(low, high - 0.1 * (high - low))
    canvas = np.zeros((height, width), np.uint8)
    holes, rejected = 0, 0
    for _ in range(100_000):
        if rejected < 20:
            draw, (x0, y0, x1, y1) = sample(height, width, rng)
        else:  # a disc covering about half of the room left below high (a single pixel at least)
            area = max(1.0, (high * total - holes) / 2)
            draw, (x0, y0, x1, y1) = _disc_primitive(height, width, rng, int(np.sqrt(area / np.pi)))
        region = canvas[y0:y1, x0:x1]
        saved = region.copy()
        before = int(np.count_nonzero(saved))
        draw(canvas)
        n = holes - before + int(np.count_nonzero(region))
        if n > high * total:  # overshoot: undo inside the box
            region[...] = saved
            rejected += 1
            continue
        holes, rejected = n, 0
        if n > target * total:
            return _as_mask(canvas)
    raise RuntimeError(f"could not reach a hole ratio in ({low}, {high}] at {height}x{width}")


def parse_ratio(text: str) -> tuple[float, float]:
    """``"0.1-0.2"`` or a bin name such as ``"10-20"`` -> ``(0.1, 0.2)``."""
    if text in RATIO_BINS:
        return RATIO_BINS[text]
    try:
        low, high = (float(v) for v in text.split("-"))
    except ValueError:
        raise ValueError(f"ratio must look like 0.1-0.2 or be one of {', '.join(RATIO_BINS)}, got {text!r}") from None
    if not 0 <= low < high <= 1:
        raise ValueError(f"ratio range must satisfy 0 <= low < high <= 1, got {text!r}")
    return low, high


def generate(
    height: int, width: int, rng: np.random.Generator, kind: str = "strokes", ratio: tuple[float, float] | None = None
) -> np.ndarray:
    """One mask of ``kind`` (a kind or a mixture, see :func:`parse_kind`); inside the ``ratio`` range when given."""
    if kind not in KINDS:
        mix = parse_kind(kind)
        kind = list(mix)[int(np.searchsorted(np.cumsum(list(mix.values())), rng.random() * 0.999999999))]
    if kind == "band":  # the bottom rows missing, as in an instrument's blind zone
        low, high = ratio if ratio is not None else (0.05, 0.4)
        rows = int(
            np.clip(
                round(rng.uniform(low, high) * height),
                max(1, int(np.floor(low * height)) + 1),
                max(1, min(height - 1, int(np.floor(high * height)))),
            )
        )
        return band_mask(height, width, rows)
    if ratio is not None:
        return ratio_mask(height, width, rng, ratio, kind)
    if kind == "strokes":
        return random_strokes(height, width, rng)
    if kind in _SOLID:
        return solid_mask(height, width, rng, kind)
    if kind in ("free-form", "medium"):
        return free_form_mask(height, width, rng, "medium")
    if kind in ("thin", "thick"):
        return free_form_mask(height, width, rng, kind)
    raise ValueError(f"unknown mask kind {kind!r}; choose from {', '.join(KINDS)}")
