"""Image-quality metrics of inpainting results, computed with scikit-image.

Scores follow the paper's protocol: on the composited result (known pixels from the ground
truth), over the whole image, plus PSNR inside the hole alone and the error along the hole's
edges, where a model that darkens or rings at the boundary shows it. PSNR and SSIM reward blur,
so ``detail`` says how much fine detail a fill has against the photo's own in the hole: a smooth
fill scores near 0, one that copies texture near 1, one that adds strong edges far above 1.
Images are float arrays in [0, 1], ``(H, W, C)`` or ``(H, W)``; ``known`` is an ``(H, W)`` bool
array, True = known.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "DETAIL_FLOOR",
    "DETAIL_SIGMA",
    "EDGE_BAND",
    "METRICS",
    "detail_energy",
    "edge_band",
    "goodness",
    "goodness_difference",
    "higher_is_better",
    "score",
]

# Name -> which way is better: True higher, False lower, a number: closer to that number.
METRICS: dict[str, bool | float] = {
    "l1": False,
    "psnr": True,
    "ssim": True,
    "hole_psnr": True,
    "edge": False,
    "detail": 1.0,
}

EDGE_BAND = 2  # px: the band just inside each hole edge that ``edge`` scores
DETAIL_SIGMA = 1.5  # px: the Gaussian blur whose residual is ``detail``'s fine detail
# Grey levels squared: the photo's own detail energy counts as at least this, so a hole in a flat
# sky (sensor noise only) does not turn a faint fill into a huge ratio.
DETAIL_FLOOR = 1.0


def higher_is_better(metric: str) -> bool:
    """Whether a larger ``goodness`` difference is better: True for higher-is-better metrics and for
    target metrics (compared as closeness to the target), False for lower-is-better ones."""
    return METRICS[metric] is not False


def goodness(metric: str, value: float) -> float:
    """``value`` on a scale where higher is better: itself, its negative, or minus its distance to the target."""
    way = METRICS[metric]
    if isinstance(way, bool):
        return value if way else -value
    return -abs(value - way)


def goodness_difference(metric: str, a: float, b: float) -> float:
    """``a - b`` in ``metric``; for a target metric, how much closer ``a`` is to the target than ``b``."""
    way = METRICS[metric]
    return a - b if isinstance(way, bool) else abs(b - way) - abs(a - way)


def detail_energy(image: np.ndarray, region: np.ndarray) -> float:
    """Mean square of ``image`` minus its Gaussian blur (sigma :data:`DETAIL_SIGMA`) over ``region``,
    in grey levels (0-255) squared."""
    import cv2

    x = image.astype(np.float32) * 255.0
    residual = x - cv2.GaussianBlur(x, (0, 0), DETAIL_SIGMA, borderType=cv2.BORDER_REFLECT)
    return float(np.square(residual[region]).mean())


def edge_band(known: np.ndarray, width: int = EDGE_BAND) -> np.ndarray:
    """Hole pixels within ``width`` px (8-connected steps) of a known pixel; the image border is not an edge."""
    import cv2

    hole = (~known).astype(np.uint8)
    core = cv2.erode(hole, np.ones((3, 3), np.uint8), iterations=width, borderType=cv2.BORDER_REPLICATE)
    return hole.astype(bool) & ~core.astype(bool)


def score(result: np.ndarray, truth: np.ndarray, known: np.ndarray) -> dict[str, float]:
    """``l1`` (mean absolute error, % of the full range), ``psnr`` (dB), ``ssim``, ``hole_psnr`` (dB) and
    ``edge`` (mean absolute error in the band of :data:`EDGE_BAND` px inside the hole edges, in
    grey levels of 0-255) and ``detail`` (the result's :func:`detail_energy` in the hole over the
    photo's, at least :data:`DETAIL_FLOOR`: 1 = as much fine detail as the photo has there).

    PSNR is ``inf`` for a perfect result; ``hole_psnr``, ``edge`` and ``detail`` are ``nan`` when
    there is no hole.
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
        "detail": detail_energy(result, hole) / max(detail_energy(truth, hole), DETAIL_FLOOR)
        if hole.any()
        else float("nan"),
    }
