"""Images in and out, under one set of rules for every tool (predict, serve, training data,
evaluation, the mask tools).

Reading:

- **Orientation**: images are used as they are shown, EXIF orientation applied; masks likewise,
  so a mask drawn on a phone photo as displayed fits it.
- **Size guard**: Pillow's decompression-bomb limit (about 179 megapixels) for anything a user or
  a client sends; photo folders for training and evaluation, which the user chose, may hold up to
  :data:`TRUSTED_MAX_PIXELS` (:func:`load_rgb`).
- **Depth**: images of more than 8 bits per channel (16-bit grey or RGB, 32-bit integer, float)
  are *refused* where the known pixels are written back (:func:`decode_image`: predict and serve
  write 8-bit results, so those pixels could not stay as they are), and *scaled to 8 bits* where
  an image is only read (:func:`load_rgb`: training and evaluation). Pillow itself silently cuts
  16-bit RGB to 8 bits and clips 16-bit grey; neither happens here.
- **Alpha**: kept aside and put back on the result (:func:`decode_image`), or composited on white
  for training (:func:`load_rgb`).

Writing: :func:`output_format` names the format from the extension before any work is done,
:func:`save_options` holds Pillow's encoder settings (8-bit PNG is written by OpenCV, which is
faster), :func:`encoder` pairs the encoding with the atomic writers of :mod:`pconv.files`.

Problems are :class:`~pconv.errors.InputError` (or :class:`~pconv.errors.TooLargeError`) with a
message that names the file.
"""

from __future__ import annotations

import contextlib
import io
import math
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from pconv.errors import ConfigError, InputError, MissingFileError, TooLargeError
from pconv.files import Writer

__all__ = [
    "TRUSTED_MAX_PIXELS",
    "DecodedImage",
    "check_depth",
    "decode_image",
    "displayed_size",
    "encode",
    "encoder",
    "load_rgb",
    "open_image",
    "output_format",
    "read_image",
    "save_options",
    "to_8bit",
    "to_output_image",
]

# Photo folders for training and evaluation may hold legitimately large images (which load_rgb
# decodes at reduced size anyway): it allows up to this many pixels, where Pillow's own guard,
# meant for untrusted uploads, would refuse. Only load_rgb does.
TRUSTED_MAX_PIXELS = 1_000_000_000
_pixel_limit = threading.Lock()

_UNREADABLE = (UnidentifiedImageError, OSError, SyntaxError, ValueError)
# Output formats by extension, known without asking Pillow to load all its plugins.
COMMON_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
    ".webp": "WEBP",
}


@dataclass(frozen=True)
class DecodedImage:
    """An image as the model takes it, and what is needed to write the result like the input."""

    pixels: np.ndarray  # (H, W, C) uint8, C = the model's channels
    alpha: Image.Image | None  # kept aside and put back on the result
    mode: str  # "RGB" or "L": what the result is saved as


@contextlib.contextmanager
def _trusted_pixel_limit() -> Iterator[None]:
    with _pixel_limit:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = TRUSTED_MAX_PIXELS // 2  # Pillow refuses above twice this
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def open_image(source: str | Path | bytes, what: str = "image", max_megapixels: float | None = None) -> Image.Image:
    """Open an image file or upload, reading its header only (no pixels are decoded yet).

    Raises:
        InputError: missing, empty or not an image Pillow reads.
        TooLargeError: beyond Pillow's decompression-bomb guard or ``max_megapixels``.
    """
    if isinstance(source, bytes):
        if not source:
            raise InputError(f"the {what} is empty")
        name, stream = f"the {what}", io.BytesIO(source)
    else:
        if not Path(source).is_file():
            raise MissingFileError(f"{what} not found: {source}")
        name, stream = f"{what} {source}", source
    try:
        img = Image.open(stream)
    except Image.DecompressionBombError as err:
        raise TooLargeError(
            f"cannot read {name}: it is too large to decode safely ({err}; Pillow's guard against "
            "decompression bombs: a real photo this large must be split or downscaled first)"
        ) from None
    except UnidentifiedImageError:  # its message shows a buffer's memory address
        raise InputError(f"cannot read {name}: not an image Pillow can read") from None
    except _UNREADABLE as err:
        raise InputError(f"cannot read {name}: {err}") from None
    if max_megapixels is not None and img.width * img.height > max_megapixels * 1e6:
        img.close()
        raise TooLargeError(
            f"{name} has {img.width * img.height / 1e6:.1f} megapixels; the limit is {max_megapixels:g}"
        )
    return img


def check_depth(img: Image.Image) -> None:
    """Refuse an image of more than 8 bits per channel, from its header (before decoding).

    The result is written with 8 bits per channel, so the known pixels of a deeper image could not
    stay as they are. Pillow opens a 16-bit RGB PNG as 8-bit RGB, silently; its tile says 16.

    Raises:
        InputError: 16-bit, 32-bit or float pixels.
    """
    deep = img.mode in ("I", "F") or img.mode.startswith("I;16")
    deep = deep or any(";16" in str(tile.args) for tile in getattr(img, "tile", None) or ())
    if deep:
        raise InputError(
            f"{'float' if img.mode == 'F' else 'more than 8 bits per pixel'} images are not supported: the result is "
            "written with 8 bits per channel; convert the image to 8 bits first"
        )


# EXIF orientation -> the transposition that shows the stored pixels as intended.
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def orientation(img: Image.Image) -> int:
    """The EXIF orientation (1-8) of an opened image, from its header alone.

    Pillow's ``getexif()`` decodes a whole PNG to look for an eXIf chunk after the pixel data (and
    hides a broken data stream while doing so); such a late chunk is ignored here, so the size
    checked before decoding and the pixels decoded always agree. A broken EXIF block counts as 1.
    """
    if img.format == "PNG" and "exif" not in img.info:
        return 1
    try:
        value = img.getexif().get(0x0112, 1)
    except (OSError, SyntaxError, ValueError):
        return 1
    return value if value in _TRANSPOSE else 1


def displayed_size(img: Image.Image) -> tuple[int, int]:
    """``(width, height)`` as the image is shown, its EXIF orientation applied (read from the
    header: no pixels are decoded). A phone photo stored landscape with orientation 6 is shown,
    and inpainted, portrait; masks are drawn on what is shown."""
    return (img.height, img.width) if orientation(img) in (5, 6, 7, 8) else img.size


def load_oriented(img: Image.Image) -> Image.Image:
    """Decode an opened image's pixels and turn them as :func:`displayed_size` says they are shown.

    Raises:
        OSError, SyntaxError, ValueError: undecodable pixels (callers name the file).
    """
    turn = _TRANSPOSE.get(orientation(img))  # from the header, before decoding
    img.load()
    return img.transpose(turn) if turn is not None else img


def decode_image(img: Image.Image, channels: int, what: str = "the image") -> DecodedImage:
    """An opened image's pixels as the model's channels, EXIF orientation applied, alpha kept aside.

    Raises:
        InputError: deeper than 8 bits, undecodable pixels, or a model of other than 1 or 3 channels.
    """
    check_depth(img)
    try:
        img = load_oriented(img)
    except _UNREADABLE as err:
        raise InputError(f"{what} could not be decoded ({err})") from None
    if "transparency" in img.info and img.mode in ("P", "L", "RGB"):  # a transparent colour, not a band
        img = img.convert("LA" if img.mode == "L" else "RGBA")
    alpha = img.getchannel("A") if "A" in img.getbands() else None
    if channels == 1:
        mode = "L"
    elif channels == 3:
        mode = "L" if img.mode in ("L", "LA", "1") else "RGB"
    else:
        raise InputError(f"this model takes {channels}-channel inputs; only grayscale and RGB images are read")
    pixels = np.asarray(img.convert("L" if channels == 1 else "RGB"))
    return DecodedImage(pixels.reshape(*pixels.shape[:2], channels), alpha, mode)


def read_image(path: str | Path, channels: int) -> DecodedImage:
    """:func:`open_image` and :func:`decode_image` for a file (errors name the file)."""
    with open_image(path) as img:
        return decode_image(img, channels, f"image {path}")


def load_rgb(path: str | Path, min_side: int | None = None) -> Image.Image:
    """An RGB image for training or evaluation: EXIF orientation applied, deeper than 8 bits
    scaled to 8 (:func:`to_8bit`), grayscale and palette converted, transparency on white.

    Args:
        path: any file Pillow reads, up to :data:`TRUSTED_MAX_PIXELS`.
        min_side: JPEGs are decoded at the smallest power-of-two reduction whose shorter side is
            still at least this (much faster for large photos); ``None`` decodes in full.

    Raises:
        InputError: the file is not a readable image.
    """
    try:
        with _trusted_pixel_limit():
            img = Image.open(path)
        with img:
            if min_side is not None and min(img.size) > 2 * min_side:
                scale = min_side / min(img.size)
                img.draft("RGB", (math.ceil(img.width * scale), math.ceil(img.height * scale)))
            img = load_oriented(img)  # 16-bit RGB: Pillow keeps each value's high byte, i.e. scales it to 8 bits
            img = to_8bit(img)
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                img = img.convert("RGBA")
                background = Image.new("RGBA", img.size, (255, 255, 255, 255))
                img = Image.alpha_composite(background, img)  # transparent areas become white
            return img.convert("RGB")
    except (*_UNREADABLE, Image.DecompressionBombError) as err:
        raise InputError(f"cannot read image {path}: {err}") from None


def to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit integer images scaled to 8 bits (65535 -> 255), float images in [0, 1]
    scaled by 255; other modes unchanged. (Pillow's own conversion clips them instead: 99% of a
    16-bit photo's pixels would become 255, a float image in [0, 1] all 0.)

    Raises:
        InputError: a float image with values outside [0, 1] (or not finite), or an integer image
            beyond 16 bits, whose scale cannot be known.
    """
    if img.mode not in ("I", "F") and not img.mode.startswith("I;16"):
        return img
    values = np.asarray(img)
    if img.mode == "F":
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise InputError(
                f"float image with values in [{values.min():g}, {values.max():g}]; "
                "only [0, 1] float images are understood: convert it to 8 or 16 bits"
            )
        scaled = values * 255.0
    else:
        if values.min() < 0 or values.max() > 65535:
            raise InputError(f"{img.mode} image with values in [{values.min()}, {values.max()}], beyond 16 bits")
        scaled = values.astype(np.float64) / 257.0
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def output_format(path: str | Path) -> str:
    """The Pillow format ``path``'s extension names; a clear error before any work when unsupported.

    Raises:
        ConfigError: an extension Pillow cannot write.
    """
    path = Path(path)
    fmt = COMMON_FORMATS.get(path.suffix.lower())
    if fmt is not None:
        return fmt
    fmt = Image.registered_extensions().get(path.suffix.lower())  # loads every Pillow plugin: ~0.1 s
    if fmt is None or fmt not in Image.SAVE:
        raise ConfigError(
            f"cannot write {path}: unsupported extension {path.suffix or '(none)'!r}; "
            "use .png, .jpg, .tif, .bmp or .webp"
        )
    return fmt


# 8-bit images OpenCV writes as PNG, with the conversion to its channel order: one row filter
# (Paeth) at level 1 with run-length coding takes 0.7x the time of Pillow's adaptive filters at the
# same size (within 1 %; ``benchmarks/bench_output.py``), 0.26 s less for a 24 MP photo.
_OPENCV_PNG = {"L": None, "RGB": "COLOR_RGB2BGR", "RGBA": "COLOR_RGBA2BGRA"}
# libpng refuses longer sides unless told otherwise (Pillow writes any).
_LIBPNG_MAX_SIDE = 1_000_000


def _by_opencv(img: Image.Image, fmt: str, smallest: bool) -> bool:
    """Whether OpenCV writes ``img``: 8-bit PNG (L, RGB, RGBA) at the default effort (``smallest``:
    Pillow's level 9), carrying nothing Pillow would write beside the pixels (a transparent colour,
    an ICC profile), within libpng's side limit, on an OpenCV with the row-filter option (4.12+)."""
    if fmt != "PNG" or smallest or img.mode not in _OPENCV_PNG or max(img.size) > _LIBPNG_MAX_SIDE:
        return False
    if {"transparency", "icc_profile"} & img.info.keys():
        return False
    import cv2

    return hasattr(cv2, "IMWRITE_PNG_FILTER")


def _png_opencv(img: Image.Image) -> np.ndarray | None:
    """``img`` as PNG bytes (a uint8 array) from OpenCV's writer, or ``None`` when it fails."""
    import cv2

    pixels = np.asarray(img)
    conversion = _OPENCV_PNG[img.mode]
    if conversion is not None:
        pixels = cv2.cvtColor(pixels, getattr(cv2, conversion))
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    try:
        ok, data = cv2.imencode(".png", pixels, [*params, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH])
    except cv2.error:
        return None
    return data if ok else None


def _write(img: Image.Image, fmt: str, smallest: bool, f: BinaryIO) -> None:
    """``img`` encoded into ``f``: by OpenCV where :func:`_by_opencv` says so (and it succeeds), else
    by Pillow with :func:`save_options`."""
    data = _png_opencv(img) if _by_opencv(img, fmt, smallest) else None
    if data is not None:
        f.write(data)
    else:
        _prepared(img, fmt).save(f, format=fmt, **save_options(fmt, smallest))


def save_options(fmt: str, smallest: bool = False) -> dict:
    """Pillow's encoder options for ``fmt``: lossless formats at the effort that measured best for
    time against size, or (``smallest``) the smallest file at any cost in time. On the 2-MP test
    photos (``benchmarks/bench_output.py``) PNG with zlib's run-length strategy (what OpenCV's PNG
    writer uses) takes 0.16-0.31x the time of Pillow's default (level 6) for files 4-16% larger,
    about half the time of level 3 at the same size (level 9: 4-8x the time, 4-8% smaller);
    lossless WebP method 0 takes 0.48-0.63x the time of the default 4 for files 15-21% larger.
    TIFF stays uncompressed unless ``smallest`` (deflate). (8-bit PNG at the default effort is
    written by OpenCV instead: :func:`encoder`.)"""
    if fmt == "PNG":
        return {"compress_level": 9} if smallest else {"compress_level": 1, "compress_type": zlib.Z_RLE}
    if fmt == "WEBP":
        return {"lossless": True, "method": 6 if smallest else 0}
    if fmt == "TIFF":
        return {"compression": "tiff_adobe_deflate"} if smallest else {}
    if fmt == "JPEG":
        return {"quality": 95}
    return {}


def to_output_image(pixels: np.ndarray, source: DecodedImage) -> Image.Image:
    """A result ``(H, W, C)`` as an image like its source: grayscale stays grayscale, alpha is put back."""
    img = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    if source.mode == "L" and img.mode != "L":
        img = img.convert("L")  # exact for gray input: the RGB weights sum to one
    if source.alpha is not None:
        img = img.convert("LA" if img.mode == "L" else "RGBA")
        img.putalpha(source.alpha)
    return img


def _prepared(img: Image.Image, fmt: str) -> Image.Image:
    return img.convert("RGB") if fmt == "JPEG" and img.mode not in ("RGB", "L") else img


def encoder(img: Image.Image, path: Path, smallest: bool = False) -> tuple[Path, Writer]:
    """``(path, writer)`` for :func:`pconv.files.atomic_write_many`: writes ``img`` in the format
    ``path``'s extension names (8-bit PNG by OpenCV, the rest by Pillow with :func:`save_options`)."""
    fmt = output_format(path)
    return path, lambda f: _write(img, fmt, smallest, f)


def encode(img: Image.Image, fmt: str = "PNG", smallest: bool = False) -> bytes:
    """``img`` encoded in memory (for a response body), as :func:`encoder` writes it."""
    buffer = io.BytesIO()
    _write(img, fmt, smallest, buffer)
    return buffer.getvalue()
