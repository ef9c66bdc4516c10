"""Classical inpainting methods the model is measured against (``evaluate --baselines``).

Each takes a uint8 ``(H, W, 3)`` image and a bool ``(H, W)`` mask (True = known) and returns the
filled uint8 image: OpenCV's Telea and Navier-Stokes, scikit-image's biharmonic fill, the push-pull
pyramid fill of :mod:`pconv.fill`, and PatchMatch (Barnes et al. 2009, the method the paper
compares against; optional: ``pip install 'pconv[patchmatch]'``).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

__all__ = ["BASELINES", "Method"]

Method = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (uint8 image, known) -> uint8 result


def _opencv(flag: int) -> Method:
    def run(image: np.ndarray, known: np.ndarray) -> np.ndarray:
        return cv2.inpaint(image, (~known).astype(np.uint8) * 255, 3, flag)

    return run


def _biharmonic(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    from skimage.restoration import inpaint_biharmonic  # scipy: slow to import, so here

    filled = inpaint_biharmonic(image.astype(np.float64) / 255.0, ~known, channel_axis=-1)
    return np.clip(np.rint(filled * 255), 0, 255).astype(np.uint8)


def _pushpull(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    import torch

    from pconv.fill import push_pull

    x = torch.tensor(image).permute(2, 0, 1)[None].float() / 255.0
    m = torch.from_numpy(known)[None, None].float()
    with torch.no_grad():
        filled = push_pull(x, m)[0].permute(1, 2, 0).numpy()
    return np.where(known[..., None], image, np.clip(np.rint(filled * 255), 0, 255).astype(np.uint8))


def _patchmatch(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    from patchmatch import patch_match  # PyPatchMatch: optional (checked by the command line), seconds per image

    return patch_match.inpaint(image, (~known).astype(np.uint8) * 255, patch_size=3)  # the radius its examples use


BASELINES: dict[str, Method] = {
    "telea": _opencv(cv2.INPAINT_TELEA),
    "ns": _opencv(cv2.INPAINT_NS),
    "biharmonic": _biharmonic,
    "pushpull": _pushpull,
    "patchmatch": _patchmatch,
}
