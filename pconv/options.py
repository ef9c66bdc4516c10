"""Inference options: one frozen object that ``inpaint``, ``model_pixels``, ``predict.py``,
``evaluate`` and the web server share, checked once when it is made."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pconv.errors import ConfigError

__all__ = ["MIN_TILE", "PRECISIONS", "InpaintOptions"]

# The smallest tile side; smaller tiles give the network too little context to be useful.
MIN_TILE = 32
# The number formats a PyTorch model can run in (bfloat16: autocast, counts and ratios kept in float32).
PRECISIONS = ("float32", "bfloat16")


@dataclass(frozen=True)
class InpaintOptions:
    """How :func:`pconv.inpaint.inpaint` runs a model over an image.

    Attributes:
        tile: ``"auto"`` (one pass up to about one megapixel, else 512-px crops around the holes),
            ``None`` (always one pass) or a tile side in pixels (with ``scale="auto"``, holes deeper
            than a quarter of it are worked at a coarser scale, so that every crop holds known pixels).
        overlap: every crop a full tile sharing this many pixels with its neighbours; ``None``: crops
            sized to the holes or tiles sharing a quarter, whichever is less work (:func:`pconv.tiling.crops_for`).
        scale: ``"auto"`` (a working scale per hole from its depth: see :mod:`pconv.tiling`), or a
            downscale factor for every hole (1 = full resolution).
        samples: Monte Carlo dropout samples; more than 1 needs a model with dropout.
        batch: samples per forward pass.
        flip: average each prediction with that of the mirror image (twice the time, less noise).
        hole_depth: the hole depth (pixels) the model handles at full resolution; ``None``: the
            model's own (from its release file).
        precision: ``"float32"``, or ``"bfloat16"``: the model's convolutions under autocast, for
            GPUs and CPUs with native bfloat16 (AVX512-BF16, AMX); elsewhere far slower.

    Raises:
        ConfigError: a value out of range (when the object is made).
    """

    tile: int | str | None = field(
        default="auto",
        metadata={"help": "auto (one pass up to ~1 megapixel, else 512-px crops), none, or a tile side in pixels"},
    )
    overlap: int | None = field(
        default=None,
        metadata={
            "help": "every crop a full tile sharing this many pixels with its neighbours (default: crops sized "
            "to the holes, or tiles sharing a quarter, whichever is less work)"
        },
    )
    scale: float | str = field(
        default="auto",
        metadata={
            "help": "working scale: auto (each hole at the scale the model was trained for, from its depth: "
            "small holes at full resolution, big holes coarse, upsampled), or a downscale factor for every "
            "hole (1 = full resolution)",
            "metavar": "auto|FACTOR",
        },
    )
    samples: int = field(default=1, metadata={"help": "Monte Carlo dropout samples (needs a model with dropout)"})
    batch: int = field(default=8, metadata={"help": "samples per forward pass", "flag": "--batch-size"})
    flip: bool = field(
        default=False,
        metadata={"help": "average with the prediction for the mirror image (twice the time, less noise)"},
    )
    hole_depth: float | None = field(
        default=None,
        metadata={"help": "the hole depth (pixels) the model fills at full resolution (default: its file's)"},
    )

    precision: str = field(
        default="float32",
        metadata={
            "help": "the model's number format: float32, or bfloat16 (about 0.6x the model's time on GPUs and on "
            "CPUs with AVX512-BF16 or AMX, results within a grey level or so; far slower on other CPUs)",
            "metavar": "|".join(PRECISIONS),
        },
    )

    def __post_init__(self) -> None:
        if self.tile != "auto" and self.tile is not None and (not isinstance(self.tile, int) or self.tile < MIN_TILE):
            raise ConfigError(f"tiles must be 'auto', None or at least {MIN_TILE} pixels, got {self.tile!r}")
        if self.overlap is not None and self.overlap < 0:
            raise ConfigError(f"the tile overlap must be at least 0, got {self.overlap}")
        if isinstance(self.tile, int) and self.overlap is not None and self.overlap >= self.tile:
            raise ConfigError(f"the overlap must be smaller than the tile, got {self.overlap} for tile {self.tile}")
        if self.scale != "auto" and not (
            isinstance(self.scale, (int, float)) and math.isfinite(self.scale) and self.scale >= 1
        ):
            raise ConfigError(f"scale must be 'auto' or a factor of at least 1, got {self.scale!r}")
        if self.samples < 1 or self.batch < 1:
            raise ConfigError(f"samples and batch must be at least 1, got {self.samples} and {self.batch}")
        if self.hole_depth is not None and not self.hole_depth > 0:
            raise ConfigError(f"the hole depth must be positive, got {self.hole_depth}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
