"""What a release file says about its model, read without PyTorch: its metadata, the hole depth it
was trained for and the multiple its network pads to. :mod:`pconv.io` builds the model from the
same file; ``predict.py`` reads this while PyTorch imports, to plan the crops meanwhile."""

from __future__ import annotations

import json
import math
from pathlib import Path

from safetensors import SafetensorError, safe_open

from pconv.errors import CheckpointError
from pconv.models import ARCHITECTURES
from pconv.tiling import DEFAULT_HOLE_DEPTH

__all__ = ["DEFAULT_WEIGHTS", "FORMAT", "geometry_of", "hole_depth_of", "read_metadata"]

# The project's released model (see weights/README.md): the command-line tools' default. The file
# is in weights/ at the top of the repository; the package links to it, and a built wheel holds a copy.
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "pconv-unet-photos-512.safetensors"

FORMAT = "pconv-release-1"  # the metadata's "format" of a release file
# The range of hole depths (pixels) a release file may record.
MIN_HOLE_DEPTH, MAX_HOLE_DEPTH = 1.0, 100_000.0


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a release file (its header only)."""
    with safe_open(str(path), framework="numpy") as f:
        return dict(f.metadata() or {})


def hole_depth_of(metadata: dict[str, str]) -> float:
    """The hole depth (pixels) a released model handles at its own scale, from its ``training``
    metadata: ``hole_depth`` when ``train.py`` recorded it, else the random-stroke value at the
    recorded crop ``size`` (the masks the first releases trained on), else the 256-px default."""
    try:
        training = json.loads(metadata.get("training", "{}"))
    except json.JSONDecodeError:
        training = {}
    if not isinstance(training, dict):
        return DEFAULT_HOLE_DEPTH
    depth = training.get("hole_depth")
    if isinstance(depth, (int, float)) and not isinstance(depth, bool):
        depth = float(depth) if abs(depth) < 1e300 else math.inf  # a 400-digit integer is no float
        if not MIN_HOLE_DEPTH <= depth <= MAX_HOLE_DEPTH:
            raise CheckpointError(
                f"the recorded hole depth of {depth:g} pixels is outside {MIN_HOLE_DEPTH:g} to {MAX_HOLE_DEPTH:g}"
            )
        return float(depth)
    size = training.get("size")
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        if size > MAX_HOLE_DEPTH * 256 / DEFAULT_HOLE_DEPTH:
            raise CheckpointError(f"the recorded training crop size of {str(size)[:12]}... pixels is not plausible")
        return DEFAULT_HOLE_DEPTH * size / 256
    return DEFAULT_HOLE_DEPTH


def geometry_of(path: str | Path) -> tuple[float, int]:
    """The hole depth a release file's model handles and the multiple its network pads to, as
    :func:`pconv.io.load_model` would give them (``model.hole_depth``, ``model.multiple``).

    Raises:
        CheckpointError: not a readable pconv release file, or a bad configuration.
        OSError: the file cannot be read.
    """
    try:
        metadata = read_metadata(path)
    except (ValueError, SafetensorError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err
    if metadata.get("format") != FORMAT or metadata.get("architecture") not in ARCHITECTURES:
        raise CheckpointError(f"{path} is not a pconv release file (no pconv architecture in its metadata)")
    try:
        config = ARCHITECTURES[metadata["architecture"]].stored_config(json.loads(metadata.get("config", "")))
    except (TypeError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{path} has a bad configuration: {err}") from err
    return hole_depth_of(metadata), config.multiple
