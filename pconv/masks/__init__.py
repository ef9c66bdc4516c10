"""Hole masks for training and evaluation: generators, files and folders.

In memory a mask is an ``(H, W)`` bool array, True = known, False = hole (the library's
convention: 1 = known). On disk: 8-bit PNG, white = hole. ``python -m pconv.masks export``
writes mask sets.
"""

from pconv.masks.files import (
    CONTACT_SHEET,
    IMAGE_SUFFIXES,
    MaskFolder,
    image_files,
    mask_files,
    mask_from_image,
    read_mask,
    write_mask,
)
from pconv.masks.generators import (
    DEFAULT_MIX,
    KINDS,
    MIXES,
    RATIO_BINS,
    band_mask,
    box_mask,
    free_form_mask,
    generate,
    parse_kind,
    parse_ratio,
    random_strokes,
    ratio_mask,
    solid_mask,
)

__all__ = [
    "CONTACT_SHEET",
    "DEFAULT_MIX",
    "IMAGE_SUFFIXES",
    "image_files",
    "KINDS",
    "MIXES",
    "RATIO_BINS",
    "MaskFolder",
    "band_mask",
    "box_mask",
    "free_form_mask",
    "generate",
    "mask_files",
    "mask_from_image",
    "parse_kind",
    "parse_ratio",
    "random_strokes",
    "ratio_mask",
    "read_mask",
    "solid_mask",
    "write_mask",
]
