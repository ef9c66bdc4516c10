"""One image file and its mask in, the result files out: what ``predict.py`` runs per image.

:func:`inpaint_file` reads the image (:mod:`pconv.images`: as shown, 8 bits, alpha kept aside)
and the mask, checks the outputs before any work, runs :func:`pconv.inpaint.inpaint`, and writes
every output or none (:func:`pconv.files.atomic_write_many`). Known pixels of the result are the
input's, byte for byte, in lossless formats.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import cv2
import numpy as np
from PIL import Image

from pconv.errors import ConfigError, InputError, OutputError
from pconv.files import Writer, atomic_write_many
from pconv.images import encoder, output_format, read_image, to_output_image
from pconv.masks import read_mask
from pconv.options import InpaintOptions

if TYPE_CHECKING:
    import torch

    from pconv.inpaint import InpaintResult
    from pconv.models import InpaintingModel

__all__ = ["MIN_KNOWN_SHARE", "FileReport", "Outputs", "compare_image", "inpaint_file", "uncertainty_outputs"]

# Below this share of known pixels the result is mostly invented: say so.
MIN_KNOWN_SHARE = 0.02


@dataclass(frozen=True)
class Outputs:
    """The files one image's result goes to; each extension names its format.

    Attributes:
        out: the result.
        compare: input | holes | result side by side.
        uncertainty: Monte Carlo standard deviation (colour-mapped), with ``.npy`` and
            ``_stderr.npy`` raw values beside it.
        interval: the 95% confidence interval of the mean, as two images.
        smallest: write the smallest files rather than the best time for their size.
    """

    out: Path
    compare: Path | None = None
    uncertainty: Path | None = None
    interval: tuple[Path, Path] | None = None
    smallest: bool = False

    def named(self) -> dict[str, Path]:
        """Every file, by the option that names it."""
        files = {"--out": self.out}
        if self.compare is not None:
            files["--compare"] = self.compare
        if self.uncertainty is not None:
            u = self.uncertainty
            files.update(
                {
                    "--uncertainty": u,
                    "--uncertainty (.npy)": u.with_name(u.stem + ".npy"),
                    "--uncertainty (_stderr.npy)": u.with_name(u.stem + "_stderr.npy"),
                }
            )
        for name, path in zip(("--interval LOW", "--interval HIGH"), self.interval or ()):
            files[name] = path
        return files


@dataclass
class FileReport:
    """What :func:`inpaint_file` did: the result (``None`` when nothing was inpainted), a one-line
    report and warnings for the user."""

    result: InpaintResult | None
    message: str
    warnings: list[str] = field(default_factory=list)


def inpaint_file(
    model: InpaintingModel,
    image_path: Path,
    mask_path: Path,
    outputs: Outputs,
    options: InpaintOptions,
    *,
    device: torch.device | str = "cpu",
    invert_mask: bool = False,
    resize_mask: bool = False,
    progress: bool = False,
) -> FileReport:
    """Inpaint one pair of files and write the outputs.

    Raises:
        InputError: an unreadable image or mask, a mask of another size (without
            ``resize_mask``), a mask without known pixels.
        ConfigError: an output of an unknown format, or one that would overwrite another file
            of the job.
        OutputError: an output could not be written (nothing was).
    """
    _check_outputs(image_path, mask_path, outputs)
    source = read_image(image_path, model.in_channels)
    height, width = source.pixels.shape[:2]
    known = _read_known(mask_path, (width, height), invert_mask, resize_mask)
    out_path = outputs.out
    if known.all():
        if out_path.exists() and out_path.resolve() == image_path.resolve():
            note = f"mask {mask_path} has no holes; {out_path} is the input and stays as it is"
            return FileReport(None, note, [note])
        if out_path.suffix.lower() == image_path.suffix.lower():
            _write_all([(out_path, lambda f: _copy_into(image_path, f))])
        else:
            _write_all([encoder(to_output_image(source.pixels, source), out_path, outputs.smallest)])
        note = f"mask {mask_path} has no holes; wrote the input unchanged to {out_path}"
        return FileReport(None, note, [note])
    if not known.any():
        raise InputError(f"mask {mask_path} covers the whole image: there is nothing to inpaint from")
    from pconv.inpaint import inpaint  # PyTorch loads here, not when the command line is parsed

    result = inpaint(model, source.pixels, known, options, device=device, progress=progress)
    report = FileReport(result, "")
    known_share = float(known.mean())
    if known_share < MIN_KNOWN_SHARE:
        report.warnings.append(
            f"only {known_share:.2%} of {image_path.name} is known: the fill has almost nothing to go on and is a guess"
        )
    writes = [encoder(to_output_image(result.image, source), out_path, outputs.smallest)]
    tiles = f"{result.tiles} tile{'s' if result.tiles != 1 else ''}"
    message = f"wrote {out_path} ({tiles}, {np.count_nonzero(~known)} hole pixels)"
    if outputs.compare is not None:
        sheet = Image.fromarray(compare_image(source.pixels, known, result.image).squeeze())
        writes.append(encoder(sheet, outputs.compare, outputs.smallest))
        message += f"; comparison {outputs.compare}"
    if outputs.uncertainty is not None:
        more, top = uncertainty_outputs(result, known, outputs.uncertainty, outputs.smallest)
        writes += more
        hole_std = float(result.std[~known].mean())
        message += (
            f"; uncertainty {outputs.uncertainty} (+ .npy, _stderr.npy; colour scale 0 to std {top:.4f}, "
            f"mean std in the holes {hole_std:.4f})"
        )
    if outputs.interval is not None:
        for path, pixels in zip(outputs.interval, result.interval()):
            writes.append(encoder(to_output_image(pixels, source), path, outputs.smallest))
        message += f"; 95% interval {outputs.interval[0]} .. {outputs.interval[1]}"
    _write_all(writes)
    report.message = message
    return report


def _check_outputs(image_path: Path, mask_path: Path, outputs: Outputs) -> None:
    """Every output has a known format and its own file, and none is the mask (the result may
    replace the input image, on purpose)."""
    named = outputs.named()
    for name, path in named.items():
        if not name.endswith(".npy)"):
            output_format(path)
    seen: dict[Path, str] = {mask_path.resolve(): "the mask"}
    for name, path in named.items():
        real = path.resolve()
        if real == image_path.resolve() and name != "--out":
            raise ConfigError(f"{name} {path} is the input image: choose another file")
        if real in seen:
            raise ConfigError(f"{name} {path} is also {seen[real]}: each output needs a file of its own")
        seen[real] = name


def _read_known(path: Path, size: tuple[int, int], invert: bool, resize: bool) -> np.ndarray:
    known, _ = read_mask(path, invert)
    h, w = known.shape
    if (w, h) != size:
        if not resize:
            raise InputError(
                f"mask {path} is {w}x{h} but the image is {size[0]}x{size[1]}; pass --resize-mask to scale it"
            )
        known = cv2.resize(known.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    return known


def _write_all(writes: list[tuple[Path, Writer]]) -> None:
    """Write every output or none (a failure leaves no partial or half-updated set of files)."""
    try:
        atomic_write_many(writes)
    except OSError as err:
        raise OutputError(str(err)) from None


def _copy_into(source: Path, f: BinaryIO) -> None:
    with open(source, "rb") as src:
        shutil.copyfileobj(src, f)


def compare_image(source: np.ndarray, known: np.ndarray, result: np.ndarray) -> np.ndarray:
    """Input | holes (white) | result, side by side, at most 3072 px wide."""
    holes = source.copy()
    holes[~known] = 255
    gap = np.full((source.shape[0], 8, source.shape[2]), 255, np.uint8)
    sheet = np.concatenate([source, gap, holes, gap, result], axis=1)
    if sheet.shape[1] > 3072:
        scale = 3072 / sheet.shape[1]
        sheet = cv2.resize(sheet, (3072, max(1, round(sheet.shape[0] * scale))), interpolation=cv2.INTER_AREA)
        sheet = sheet.reshape(*sheet.shape[:2], -1)
    return sheet


def uncertainty_outputs(
    result: InpaintResult, known: np.ndarray, path: Path, smallest: bool = False
) -> tuple[list[tuple[Path, Writer]], float]:
    """The Monte Carlo standard deviation as a colour-mapped image (mean over channels, 0 to its
    maximum, inferno) and raw values: ``<path>.npy`` (std, ``(H, W)`` or ``(H, W, C)``) and
    ``<path>_stderr.npy`` (standard error of the mean). Returns their writers and the colour
    scale's top."""
    assert result.std is not None and result.stderr is not None
    std = result.std.mean(-1)
    top = float(std.max())
    scaled = np.zeros(std.shape, np.uint8) if top == 0 else np.rint(std / top * 255).astype(np.uint8)
    colour = cv2.applyColorMap(scaled, cv2.COLORMAP_INFERNO)[..., ::-1]
    colour[known] = (colour[known] * 0.35).astype(np.uint8)  # dim known pixels (std 0 there)
    writes = [encoder(Image.fromarray(np.ascontiguousarray(colour)), path, smallest)]
    for suffix, values in ((".npy", result.std), ("_stderr.npy", result.stderr)):
        array = values.squeeze(-1) if values.shape[-1] == 1 else values
        writes.append((path.with_name(path.stem + suffix), lambda f, a=array: np.save(f, a)))
    return writes, top
