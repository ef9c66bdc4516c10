"""Image-quality metrics of inpainting results, computed with scikit-image.

Scores follow the paper's protocol: on the composited result (known pixels from the ground
truth), over the whole image, plus PSNR inside the hole alone. Images are float arrays in
[0, 1], ``(H, W, C)`` or ``(H, W)``; ``known`` is an ``(H, W)`` bool array, True = known.
"""

from __future__ import annotations

import numpy as np

__all__ = ["METRICS", "score"]

# Name -> whether higher is better.
METRICS: dict[str, bool] = {"l1": False, "psnr": True, "ssim": True, "hole_psnr": True}


def score(result: np.ndarray, truth: np.ndarray, known: np.ndarray) -> dict[str, float]:
    """``l1`` (mean absolute error, % of the full range), ``psnr`` (dB), ``ssim`` and ``hole_psnr`` (dB).

    PSNR is ``inf`` for a perfect result; ``hole_psnr`` is ``nan`` when there is no hole.
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
    return {
        "l1": float(np.abs(result - truth).mean() * 100.0),
        "psnr": float(psnr),
        "ssim": float(structural_similarity(truth, result, data_range=1.0, channel_axis=channel_axis)),
        "hole_psnr": float(hole_psnr),
    }
