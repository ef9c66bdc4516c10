"""Shared fixtures and the synthetic test photo (``from conftest import synthetic_photo``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

# One thread per test process (and for the processes tests start): the tensors are small, and on
# a 2-core machine several threads per process spend their time contending (gradcheck 39 s -> 2 s).
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def test_photos() -> list[Path]:
    """The held-out real photos the project ships (never trained on)."""
    return sorted((REPO / "data" / "photos" / "test").glob("*.jpg"))


def synthetic_photo(height: int, width: int, seed: int = 0, noise: float = 8.0) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 image of smooth colour waves (a phase per seed) with Gaussian noise:
    structure for a model to continue into holes, different for every seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack([np.sin(x / 7 + rng.uniform(0, 6)), np.cos(y / 5), np.sin((x + y) / 11)], -1) * 100 + 128
    return (img + rng.normal(0, noise, img.shape) if noise else img).clip(0, 255).astype(np.uint8)


def image_size(path) -> tuple[int, int]:
    """``(width, height)`` of an image file, closing it again (warnings are errors in this suite)."""
    with Image.open(path) as image:
        return image.size


@torch.no_grad()
def randomise_batchnorm(model: torch.nn.Module, spread: float = 0.5) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters (from torch's RNG), so a
    comparison through the network would notice BatchNorm used wrongly."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-spread, spread)
            module.running_var.uniform_(1 - spread, 1 + 2 * spread)
            module.weight.uniform_(1 - spread, 1 + spread)
            module.bias.uniform_(-spread, spread)
    return model


class StandIn(torch.nn.Module):
    """A fake model that meets :class:`pconv.models.InpaintingModel`: subclasses implement
    ``predict(image, mask)`` (or ``forward`` with ``sample``) to test inference exactly."""

    in_channels = 3
    multiple = 1
    hole_depth = None
    can_sample = False

    def forward(self, image: torch.Tensor, mask: torch.Tensor, sample: bool = False) -> torch.Tensor:
        return self.predict(image, mask)

    def predict(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
