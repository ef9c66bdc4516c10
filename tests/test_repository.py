"""The repository is a download for every user: no weights in git beyond the two shipped files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The package carries the files; weights/ holds links to them, where users know to look.
SHIPPED = {
    f"{folder}/{name}"
    for folder in ("pconv/weights", "weights")
    for name in ("pconv-unet-photos-512.safetensors", "vgg16-hed-pool3.safetensors")
}
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".onnx", ".h5", ".bin", ".npz")


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="needs a git checkout")
def test_only_the_shipped_weights_are_tracked():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    weights = {f for f in tracked if f.endswith(WEIGHT_SUFFIXES)}
    assert weights == SHIPPED, f"weights in git besides the shipped ones: {sorted(weights - SHIPPED)}"


def test_the_weights_folder_links_to_the_packaged_files():
    for name in ("pconv-unet-photos-512.safetensors", "vgg16-hed-pool3.safetensors"):
        link = REPO / "weights" / name
        assert link.is_symlink() and link.resolve() == (REPO / "pconv" / "weights" / name).resolve()
