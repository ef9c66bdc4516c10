"""Image folders for training and validation, with holes from the mask generators or files.

Every random choice of a sample (crop, flip, mask) is drawn from ``np.random.default_rng([seed,
epoch, index])``, so a sample depends only on those three numbers: results do not depend on the
number of DataLoader workers, and a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from pconv.errors import InputError, MissingFileError
from pconv.images import load_rgb
from pconv.masks import IMAGE_SUFFIXES, RATIO_BINS, MaskFolder, generate, image_files, ratio_mask

__all__ = [
    "EpochSampler",
    "InpaintingDataset",
    "MaskSource",
    "UnreadableData",
    "center_crop",
    "collate",
    "find_images",
    "random_resized_crop",
]


class UnreadableData(RuntimeError):
    """No file of a dataset could be read."""


def find_images(root: str | Path, what: str = "image") -> list[Path]:
    """Image files under ``root`` (recursively, sorted); a clear error for a missing or empty folder."""
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"{what} folder not found: {root}")
    files = image_files(root)
    if not files:
        raise InputError(f"no {what}s ({', '.join(IMAGE_SUFFIXES)}) in {root}")
    return files


def random_resized_crop(
    img: Image.Image,
    size: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.25, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Image.Image:
    """A crop covering a random fraction ``scale`` of the area with aspect ``ratio``, resized to ``size``."""
    w, h = img.size
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            break
    else:  # fall back to the largest centred square
        cw = ch = min(w, h)
    left, top = int(rng.integers(w - cw + 1)), int(rng.integers(h - ch + 1))
    return img.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + cw, top + ch), reducing_gap=2.0)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` and cut the centred ``size`` x ``size`` square."""
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return img.resize(
        (size, size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side), reducing_gap=2.0
    )


class MaskSource:
    """Where training holes come from: a generator kind (optionally a ratio range) or a folder.

    Args:
        size: side of the square masks.
        kind: generator kind or mixture (see ``pconv.masks.parse_kind``) when ``folder`` is ``None``.
        ratio: hole-ratio range for generated masks; ``None`` lets the generator choose.
        folder: a folder of mask images (white = hole), augmented on every draw.
    """

    def __init__(
        self,
        size: int,
        kind: str = "strokes",
        ratio: tuple[float, float] | None = None,
        folder: str | Path | None = None,
        invert: bool = False,
    ) -> None:
        self.size, self.kind, self.ratio = size, kind, ratio
        self.folder = MaskFolder(folder, (size, size), invert=invert) if folder is not None else None

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """An ``(size, size)`` bool mask, True = known."""
        if self.folder is not None:
            return self.folder.sample(rng)
        return generate(self.size, self.size, rng, self.kind, self.ratio)


class InpaintingDataset(Dataset):
    """``(image, mask)`` pairs from an image folder, deterministic in ``(seed, epoch, index)``.

    Training samples get a random resized crop, a horizontal flip and a fresh mask. Validation
    samples (``train=False``) get a centre crop and ``val_masks`` fixed masks per image, cycling
    through the paper's six hole-ratio bins, so every validation pass scores the same cases.

    A file that cannot be read is replaced by the next readable one; its path is reported in the
    sample's ``"skipped"`` list so the training loop can warn once and count it.

    Items are ``{"image": (3, S, S) float in [0, 1], "mask": (1, S, S) float, 1 = known,
    "skipped": [paths]}``; keys are ``(epoch, index)`` pairs from :class:`EpochSampler` or plain
    indices (epoch 0).
    """

    def __init__(
        self,
        files: list[Path],
        size: int,
        masks: MaskSource | None = None,
        *,
        train: bool = True,
        seed: int = 0,
        crop_scale: tuple[float, float] = (0.25, 1.0),
        val_masks: int = 1,
    ) -> None:
        if val_masks < 1:
            raise ValueError(f"val_masks must be at least 1, got {val_masks}")
        self.files = files
        self.size = size
        self.masks = masks or MaskSource(size)
        self.train = train
        self.seed = seed
        self.crop_scale = crop_scale
        self.val_masks = 1 if train else val_masks

    def __len__(self) -> int:
        return len(self.files) * self.val_masks

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        skipped: list[str] = []
        for attempt in range(len(self.files)):
            path = self.files[(index + attempt) % len(self.files)]
            try:
                img = load_rgb(path, min_side=self.size)
            except ValueError as err:
                skipped.append(f"{path}: {err.__cause__ or err}")
                continue
            break
        else:
            raise UnreadableData(f"none of the {len(self.files)} images could be read (e.g. {skipped[0]})")
        if self.train:
            rng = np.random.default_rng([self.seed, epoch, index])
            img = random_resized_crop(img, self.size, rng, self.crop_scale)
            if rng.random() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            known = self.masks.sample(rng)
        else:  # fixed: the same masks for this image in every validation pass
            rng = np.random.default_rng([self.seed, 1_000_003, index])
            img = center_crop(img, self.size)
            bins = list(RATIO_BINS.values())
            # repeat r of image k gets bin (k + r): every repeat of an image is a new bin
            image_index, repeat = index % len(self.files), index // len(self.files)
            known = ratio_mask(self.size, self.size, rng, bins[(image_index + repeat) % len(bins)])
        image = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
        mask = torch.from_numpy(known.astype(np.float32))[None]
        return {"image": image, "mask": mask, "skipped": skipped}


def collate(items: list[dict]) -> dict:
    """Stack images and masks; gather the skipped-file reports of the batch."""
    return {
        "image": torch.stack([it["image"] for it in items]),
        "mask": torch.stack([it["mask"] for it in items]),
        "skipped": [s for it in items for s in it["skipped"]],
    }


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` keys: a fresh permutation per epoch from ``(seed, epoch)``.

    Runs forever from ``start`` (a sample position counted from the start of training), so a
    resumed run continues with the very next sample. With ``world_size > 1`` each rank takes
    every ``world_size``-th entry of the permutation (distributed training).
    """

    def __init__(self, size: int, seed: int, start: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if size < world_size:
            raise ValueError(f"{size} images cannot be shared among {world_size} processes")
        self.size, self.seed, self.start = size, seed, start
        self.rank, self.world_size = rank, world_size
        self.per_rank = size // world_size  # every rank sees the same number per epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, pos = divmod(self.start, self.per_rank)
        while True:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.size)
            mine = perm[self.rank :: self.world_size][: self.per_rank]
            for i in mine[pos:]:
                yield epoch, int(i)
            epoch, pos = epoch + 1, 0
