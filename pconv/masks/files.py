"""Mask files and folders.

On disk a mask is an 8-bit PNG with white (255) = hole and black (0) = known. Readers accept
any grayscale, RGB or RGBA image: with a meaningful alpha channel, alpha > 127 is a hole;
otherwise luminance > 127 is a hole. In memory masks are bool arrays, True = known.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from pconv.errors import InputError
from pconv.files import atomic_save_image
from pconv.images import load_oriented, open_image

__all__ = [
    "CONTACT_SHEET",
    "IMAGE_SUFFIXES",
    "MaskFolder",
    "image_files",
    "mask_files",
    "mask_from_image",
    "read_mask",
    "write_mask",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# The preview ``python -m pconv.masks export`` writes beside a mask set: never read as a mask.
CONTACT_SHEET = "contact_sheet.png"


def image_files(root: str | Path) -> list[Path]:
    """The image files under ``root``, recursively and sorted.

    Symlinked folders are followed (a data set is often a folder of links to others), each real
    folder once, so a link cycle cannot loop.
    """
    found, seen = [], set()
    for folder, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs.clear()
            continue
        seen.add(real)
        found += [
            Path(folder, n)
            for n in names
            if Path(n).suffix.lower() in IMAGE_SUFFIXES and os.path.isfile(os.path.join(folder, n))
        ]
    return sorted(found)


def mask_files(root: str | Path) -> list[Path]:
    """The mask images under ``root`` (recursively, sorted), without contact sheets."""
    return [p for p in image_files(root) if p.name != CONTACT_SHEET]


def write_mask(path: str | Path, known: np.ndarray) -> None:
    """Write a bool mask (True = known) as an 8-bit PNG, white = hole."""
    path = Path(path)
    if known.ndim != 2:
        raise ValueError(f"a mask must be 2-D (H, W), got shape {known.shape}")
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    atomic_save_image(path, Image.fromarray(np.where(known, 0, 255).astype(np.uint8), mode="L"), fmt)


def read_mask(path: str | Path, invert: bool = False) -> tuple[np.ndarray, str]:
    """Read a mask image as it is shown (EXIF orientation applied); returns ``(known, rule)``
    where ``rule`` says how holes were found.

    Args:
        path: any image Pillow reads.
        invert: treat white as known instead (for mask sets drawn the other way round).

    Raises:
        InputError: the file is missing or not a readable image.
    """
    with open_image(path, "mask") as img:
        try:
            img = load_oriented(img)
        except (OSError, SyntaxError, ValueError) as err:
            raise InputError(f"cannot read mask {path}: {err}") from None
        return mask_from_image(img, invert)


def mask_from_image(img: Image.Image, invert: bool = False) -> tuple[np.ndarray, str]:
    """``(known, rule)`` from a loaded mask image, by the rules of :func:`read_mask`."""
    alpha = np.asarray(img.getchannel("A")) if "A" in img.getbands() else None
    if alpha is not None and alpha.min() < 255:
        holes, rule = alpha > 127, "alpha > 127 = hole"
    else:
        holes, rule = np.asarray(img.convert("L")) > 127, "luminance > 127 = hole"
    if invert:
        holes, rule = ~holes, rule.replace("> 127 = hole", "<= 127 = hole")
    return ~holes, rule


class MaskFolder:
    """Masks from a folder of images (e.g. NVIDIA's irregular mask set), augmented for training.

    Each draw picks a file and applies a random dilation or erosion, rotation, flip and crop
    (after resizing when the file is smaller than ``size``); values stay binary.

    Args:
        root: folder searched recursively for images.
        size: ``(height, width)`` of the masks returned.
        augment: apply the random augmentation (else: resize to ``size`` only).
        invert: white = known in these files.
    """

    def __init__(self, root: str | Path, size: tuple[int, int], augment: bool = True, invert: bool = False) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"mask folder not found: {self.root}")
        self.files = mask_files(self.root)
        if not self.files:
            raise ValueError(f"no mask images ({', '.join(IMAGE_SUFFIXES)}) in {self.root}")
        self.size = size
        self.augment = augment
        self.invert = invert

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> np.ndarray:
        """The ``index``-th file as a bool mask, True = known, at its own size."""
        return read_mask(self.files[index], self.invert)[0]

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """A random, augmented mask of ``size``."""
        holes = (~self.load(int(rng.integers(len(self.files))))).astype(np.uint8)
        h, w = self.size
        if not self.augment:
            return cv2.resize(holes, (w, h), interpolation=cv2.INTER_NEAREST) == 0
        k = int(rng.integers(1, 4)) * 2 + 1
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        holes = cv2.dilate(holes, kernel) if rng.random() < 0.5 else cv2.erode(holes, kernel)
        mh, mw = holes.shape
        rot = cv2.getRotationMatrix2D((mw / 2, mh / 2), float(rng.uniform(-45, 45)), 1.0)
        holes = cv2.warpAffine(holes, rot, (mw, mh), flags=cv2.INTER_NEAREST, borderValue=0)
        if rng.random() < 0.5:
            holes = holes[:, ::-1]
        if rng.random() < 0.5:
            holes = holes[::-1]
        scale = max(h / mh, w / mw, 1.0)
        if scale > 1.0:
            holes = cv2.resize(
                np.ascontiguousarray(holes),
                (int(np.ceil(mw * scale)), int(np.ceil(mh * scale))),
                interpolation=cv2.INTER_NEAREST,
            )
        mh, mw = holes.shape
        top, left = int(rng.integers(mh - h + 1)), int(rng.integers(mw - w + 1))
        return holes[top : top + h, left : left + w] == 0
