"""Image-quality metrics of inpainting results, computed with scikit-image.

Scores follow the paper's protocol: on the composited result (known pixels from the ground
truth), over the whole image, plus PSNR inside the hole alone and the error along the hole's
edges, where a model that darkens or rings at the boundary shows it. Images are float arrays in
[0, 1], ``(H, W, C)`` or ``(H, W)``; ``known`` is an ``(H, W)`` bool array, True = known.
"""

from __future__ import annotations

import numpy as np

__all__ = ["EDGE_BAND", "METRICS", "edge_band", "score"]

# Name -> whether higher is better.
METRICS: dict[str, bool] = {"l1": False, "psnr": True, "ssim": True, "hole_psnr": True, "edge": False}

EDGE_BAND = 2  # px: the band just inside each hole edge that ``edge`` scores


def edge_band(known: np.ndarray, width: int = EDGE_BAND) -> np.ndarray:
    """Hole pixels within ``width`` px (8-connected steps) of a known pixel; the image border is not an edge."""
    import cv2

    hole = (~known).astype(np.uint8)
    core = cv2.erode(hole, np.ones((3, 3), np.uint8), iterations=width, borderType=cv2.BORDER_REPLICATE)
    return hole.astype(bool) & ~core.astype(bool)


def score(result: np.ndarray, truth: np.ndarray, known: np.ndarray) -> dict[str, float]:
    """``l1`` (mean absolute error, % of the full range), ``psnr`` (dB), ``ssim``, ``hole_psnr`` (dB) and
    ``edge`` (mean absolute error in the band of :data:`EDGE_BAND` px inside the hole edges, in
    grey levels of 0-255).

    PSNR is ``inf`` for a perfect result; ``hole_psnr`` and ``edge`` are ``nan`` when there is no hole.
    """
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity  # scipy: slow to import, so here

    if result.shape != truth.shape:
        raise ValueError(f"result {result.shape} and ground truth {truth.shape} differ in shape")
    if known.shape != truth.shape[:2]:
        raise ValueError(f"mask {known.shape} does not match the image {truth.shape[:2]}")
    result = result.astype(np.float64)
    truth = truth.astype(np.float64)
    channel_axis = -1 if truth.ndim == 3 else None
    with np.errstate(divide="ignore"):  # a perfect result has infinite PSNR, and says so
        psnr = peak_signal_noise_ratio(truth, result, data_range=1.0)
        hole = ~known
        hole_psnr = peak_signal_noise_ratio(truth[hole], result[hole], data_range=1.0) if hole.any() else float("nan")
    error = np.abs(result - truth)
    band = edge_band(known)
    return {
        "l1": float(error.mean() * 100.0),
        "psnr": float(psnr),
        "ssim": float(structural_similarity(truth, result, data_range=1.0, channel_axis=channel_axis)),
        "hole_psnr": float(hole_psnr),
        "edge": float(error[band].mean() * 255.0) if band.any() else float("nan"),
    }
