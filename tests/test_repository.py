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


@pytest.mark.slow
def test_the_setup_py_shim_builds_the_same_package(tmp_path):
    """Older tools call setup.py: the shim builds the wheel pyproject.toml describes."""
    import sys
    import zipfile

    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "pconv", tmp_path / "pconv", ignore=shutil.ignore_patterns("__pycache__"))
    run = subprocess.run(
        [sys.executable, "setup.py", "-q", "bdist_wheel", "-d", str(tmp_path / "dist")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    (wheel,) = (tmp_path / "dist").glob("pconv-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "pconv/methods.py" in names and "pconv/weights/pconv-unet-photos-512.safetensors" in names
    metadata = next(n for n in names if n.endswith("METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Name: pconv" in text and "Requires-Dist: torch>=2.13" in text
