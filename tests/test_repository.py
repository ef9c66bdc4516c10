"""The repository is a download for every user: no weights in git beyond the two shipped files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# weights/ holds the files; the package holds links to them, which a built wheel turns into copies.
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


def test_the_package_links_to_the_files_in_weights():
    """The large files are tracked once, in weights/; the package's links are a few bytes."""
    for name in ("pconv-unet-photos-512.safetensors", "vgg16-hed-pool3.safetensors"):
        link = REPO / "pconv" / "weights" / name
        assert link.is_symlink() and link.resolve() == (REPO / "weights" / name).resolve()
        assert not (REPO / "weights" / name).is_symlink()
