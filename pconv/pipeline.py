"""One image file and its mask in, the result files out: what ``predict.py`` runs per image.

:func:`inpaint_file` reads the image (:mod:`pconv.images`: as shown, 8 bits, alpha kept aside)
and the mask, checks the outputs before any work, runs :func:`pconv.inpaint.inpaint` with one
method or several (:mod:`pconv.methods`), and writes every output or none
(:func:`pconv.files.atomic_write_many`). Known pixels of the result are the input's, byte for
byte, in lossless formats.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import cv2
import numpy as np
from PIL import Image

from pconv.errors import ConfigError, InputError, OutputError
from pconv.files import Writer, atomic_write_many
from pconv.images import (
    DecodedImage,
    check_depth,
    decode_image,
    displayed_size,
    encoder,
    open_image,
    output_format,
    read_image,
    to_output_image,
)
from pconv.masks import read_mask
from pconv.options import InpaintOptions
from pconv.sheets import labelled_sheet
from pconv.tiling import Plan, geometry_of_model

if TYPE_CHECKING:
    import torch

    from pconv.inpaint import InpaintResult
    from pconv.models import InpaintingModel

__all__ = [
    "MIN_KNOWN_SHARE",
    "FileReport",
    "Inputs",
    "Outputs",
    "compare_image",
    "inpaint_file",
    "method_path",
    "methods_sheet",
    "read_inputs",
    "uncertainty_outputs",
]

# Below this share of known pixels the result is mostly invented: say so.
MIN_KNOWN_SHARE = 0.02


@dataclass(frozen=True)
class Outputs:
    """The files one image's result goes to; each extension names its format.

    Attributes:
        out: the result; with several methods, each method's result goes to :func:`method_path`
            of it (``filled.png`` -> ``filled.telea.png``).
        compare: input | holes | result side by side; with several methods, holes | each method
            (| the original), labelled.
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
    methods: tuple[str, ...] = ()

    def results(self) -> dict[str, Path]:
        """Where each method's result goes (one method, or none named: ``out``)."""
        if len(self.methods) < 2:
            return {name: self.out for name in self.methods or ("",)}
        return {name: method_path(self.out, name) for name in self.methods}

    def named(self) -> dict[str, Path]:
        """Every file, by the option that names it."""
        several = len(self.methods) > 1
        files = {"--out" + (f" ({name})" if several else ""): path for name, path in self.results().items()}
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


def method_path(out: Path, method: str) -> Path:
    """Where ``method``'s result goes when several are asked for: ``filled.png`` -> ``filled.telea.png``."""
    return out.with_name(f"{out.stem}.{method}{out.suffix}")


@dataclass
class FileReport:
    """What :func:`inpaint_file` did: the result (the first method's; ``None`` when nothing was
    inpainted), every method's result by name, a one-line report and warnings for the user."""

    result: InpaintResult | None
    message: str
    warnings: list[str] = field(default_factory=list)
    results: dict[str, InpaintResult] = field(default_factory=dict)


def inpaint_file(
    model: InpaintingModel | Mapping[str, InpaintingModel],
    image_path: Path,
    mask_path: Path,
    outputs: Outputs,
    options: InpaintOptions,
    *,
    device: torch.device | str = "cpu",
    invert_mask: bool = False,
    resize_mask: bool = False,
    progress: bool = False,
    original: Path | None = None,
    in_place: bool = False,
    inputs: Inputs | Future[Inputs] | None = None,
) -> FileReport:
    """Inpaint one pair of files and write the outputs.

    Args:
        model: the model, or several methods by name (:func:`pconv.methods.load_method`), each
            written to ``outputs.results()`` and shown side by side in ``outputs.compare``.
        original: the photo without holes, shown last on a sheet of several methods.
        in_place: the result may replace the input image (``outputs.out`` is ``image_path``).
        inputs: the pair as :func:`read_inputs` read it (or will: a command reads while PyTorch
            imports); read again unless it was read from these files, with these mask flags and
            the model's channels. Its errors are raised after the outputs are checked, as when
            reading here. Its ``plan``, if any, is used for a model of the geometry and with the
            options it was made for.

    Raises:
        InputError: an unreadable image, mask or original, a mask of another size (without
            ``resize_mask``), a mask without known pixels.
        ConfigError: an output of an unknown format, or one that would overwrite another file
            of the job.
        OutputError: an output could not be written (nothing was).
        NonFiniteError: a model gave NaN or infinite values (nothing was written).
    """
    models = dict(model) if isinstance(model, Mapping) else {"": model}
    if not models:
        raise ConfigError("no method to run")
    if len(models) > 1 and tuple(models) != outputs.methods:
        raise ConfigError(f"the outputs name methods {outputs.methods}, the models {tuple(models)}")
    _check_outputs(image_path, mask_path, outputs, original, in_place)
    channels = next(iter(models.values())).in_channels
    if isinstance(inputs, Future):
        inputs = inputs.result()
    if inputs is None or inputs.read_as != (image_path, mask_path, channels, invert_mask, resize_mask):
        inputs = read_inputs(image_path, mask_path, channels, invert_mask=invert_mask, resize_mask=resize_mask)
    source, known = inputs.source, inputs.known
    targets = list(outputs.results().values())
    if known.all():
        if any(p.exists() and p.resolve() == image_path.resolve() for p in targets):
            note = f"mask {mask_path} has no holes; {outputs.out} is the input and stays as it is"
            return FileReport(None, note, [note])
        if outputs.out.suffix.lower() == image_path.suffix.lower():
            _write_all([(p, lambda f: _copy_into(image_path, f)) for p in targets])
        else:
            _write_all([encoder(to_output_image(source.pixels, source), p, outputs.smallest) for p in targets])
        note = f"mask {mask_path} has no holes; wrote the input unchanged to {', '.join(map(str, targets))}"
        return FileReport(None, note, [note])
    if not known.any():
        raise InputError(f"mask {mask_path} covers the whole image: there is nothing to inpaint from")
    truth = _read_original(original, source.pixels.shape) if original is not None else None
    from pconv.inpaint import inpaint  # PyTorch loads here, not when the command line is parsed

    results = {
        name: inpaint(
            m, source.pixels, known, options, device=device, progress=progress, plan=_planned(inputs, m, options)
        )
        for name, m in models.items()
    }
    result = next(iter(results.values()))
    report = FileReport(result, "", results={name: r for name, r in results.items() if name})
    known_share = float(known.mean())
    if known_share < MIN_KNOWN_SHARE:
        report.warnings.append(
            f"only {known_share:.2%} of {image_path.name} is known: the fill has almost nothing to go on and is a guess"
        )
    paths = {name: outputs.out for name in results} if len(results) == 1 else outputs.results()
    writes = [encoder(to_output_image(r.image, source), paths[name], outputs.smallest) for name, r in results.items()]
    if len(results) == 1:
        tiles = f"{result.tiles} tile{'s' if result.tiles != 1 else ''}"
        message = f"wrote {outputs.out} ({tiles}, {np.count_nonzero(~known)} hole pixels)"
    else:
        message = f"wrote {', '.join(str(paths[name]) for name in results)} ({np.count_nonzero(~known)} hole pixels)"
    if outputs.compare is not None:
        if len(results) == 1 and truth is None:
            pixels = compare_image(source.pixels, known, result.image)
        else:
            shown = {name or "result": r.image for name, r in results.items()}
            pixels = methods_sheet(source.pixels, known, shown, truth)
        writes.append(encoder(Image.fromarray(pixels.squeeze()), outputs.compare, outputs.smallest))
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


@dataclass(frozen=True)
class Inputs:
    """An image file and its mask, decoded."""

    source: DecodedImage  # as shown (EXIF orientation applied), alpha kept aside
    known: np.ndarray  # (H, W) bool, True = known pixel
    read_as: tuple[Path, Path, int, bool, bool]  # image, mask, channels, invert_mask, resize_mask
    # the crops planned before the model loaded: for a model of this (hole depth, multiple), these options
    plan: tuple[tuple[float, int], InpaintOptions, Plan] | None = None


def read_inputs(
    image_path: Path, mask_path: Path, channels: int, *, invert_mask: bool = False, resize_mask: bool = False
) -> Inputs:
    """Read an image as ``channels`` channels and its mask at the image's displayed size.

    Raises:
        InputError: an unreadable image or mask, a mask of another size (without ``resize_mask``).
    """
    with open_image(image_path) as img:  # the header: the mask is checked before any pixel is decoded
        check_depth(img)
        known = _read_known(mask_path, displayed_size(img), invert_mask, resize_mask, img.size)
        source = decode_image(img, channels, f"image {image_path}")
    return Inputs(source, known, (image_path, mask_path, channels, invert_mask, resize_mask))


def _planned(inputs: Inputs, model: InpaintingModel, options: InpaintOptions) -> Plan | None:
    """The plan made with ``inputs`` if it was made for this model's geometry and these options."""
    if inputs.plan is None:
        return None
    geometry, planned_options, plan = inputs.plan
    same = geometry == geometry_of_model(model) and planned_options == options
    return plan if same else None


def _read_original(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """The photo without holes for a sheet: read as the image is, and of its size."""
    pixels = read_image(path, shape[2]).pixels
    if pixels.shape != shape:
        raise InputError(
            f"the original {path} is {pixels.shape[1]}x{pixels.shape[0]} but the image is {shape[1]}x{shape[0]}"
        )
    return pixels


def _check_outputs(
    image_path: Path, mask_path: Path, outputs: Outputs, original: Path | None = None, in_place: bool = False
) -> None:
    """Every output has a known format and its own file, and none is the mask or the original; the
    result replaces the input image only ``in_place``."""
    named = outputs.named()
    for name, path in named.items():
        if not name.endswith(".npy)"):
            output_format(path)
    seen: dict[Path, str] = {mask_path.resolve(): "the mask"}
    if original is not None:
        seen[original.resolve()] = "the original"
    for name, path in named.items():
        real = path.resolve()
        if real == image_path.resolve() and not (in_place and name == "--out"):
            hint = "pass --in-place to replace it" if name == "--out" else "choose another file"
            raise ConfigError(f"{name} {path} is the input image: {hint}")
        if real in seen:
            raise ConfigError(f"{name} {path} is also {seen[real]}: each output needs a file of its own")
        seen[real] = name


def _read_known(
    path: Path, size: tuple[int, int], invert: bool, resize: bool, stored: tuple[int, int] | None = None
) -> np.ndarray:
    """The mask at the image's displayed ``size`` (``stored``: its size before EXIF orientation)."""
    known, _ = read_mask(path, invert)
    h, w = known.shape
    if (w, h) != size:
        if stored is not None and (w, h) == stored and not resize:
            raise InputError(
                f"mask {path} is {w}x{h}, the image as stored, but its EXIF orientation shows it as "
                f"{size[0]}x{size[1]}: draw the mask on the image as it is displayed (or turn the mask the same way)"
            )
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


def methods_sheet(
    source: np.ndarray, known: np.ndarray, results: dict[str, np.ndarray], original: np.ndarray | None = None
) -> np.ndarray:
    """Holes (white) | each method's result | the original (when given), labelled with the
    methods' names, at most 3072 px wide."""
    holes = source.copy()
    holes[~known] = 255
    panels = [holes, *results.values(), *([original] if original is not None else [])]
    labels = ["holes", *results, *(["original"] if original is not None else [])]
    return labelled_sheet(panels, labels)


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
