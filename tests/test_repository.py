"""The repository is a download for every user: no weights in git beyond the two shipped files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = {"weights/pconv-unet-photos-512.safetensors", "weights/vgg16-hed-pool3.safetensors"}
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".onnx", ".h5", ".bin", ".npz")


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="needs a git checkout")
def test_only_the_shipped_weights_are_tracked():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    weights = {f for f in tracked if f.endswith(WEIGHT_SUFFIXES)}
    assert weights == SHIPPED, f"weights in git besides the shipped ones: {sorted(weights - SHIPPED)}"
