"""Seamless edges for copied fills: a fill that meets the photo without a step at the hole's edge.

A fill copied from elsewhere in the photo (PatchMatch) carries its own texture and shading, and
where it meets the known pixels it often leaves a thin, hard outline in the hole's shape. Poisson
editing (Pérez et al. 2003) keeps the fill's gradients inside the hole and asks for none across
its edge: the result is the fill plus a correction ``h`` that is harmonic in the hole (the
4-neighbour Laplacian of ``h`` is zero) and that, across every edge from a hole pixel to a known
one, makes up the step between them. The correction is smooth, so the copied texture stays.
Solved exactly with SciPy's sparse LU (a 512-px image with half of it in holes: under a second).
"""

from __future__ import annotations

import numpy as np

__all__ = ["seamless_fill"]

_STEPS = ((0, 1), (0, -1), (1, 0), (-1, 0))


def seamless_fill(image: np.ndarray, known: np.ndarray, filled: np.ndarray) -> np.ndarray:
    """``filled`` with its hole pixels corrected so they meet the known pixels of ``image`` smoothly.

    Args:
        image: ``(H, W, C)`` uint8; its known pixels are what the fill must meet.
        known: ``(H, W)`` bool, True = known.
        filled: ``(H, W, C)`` uint8, the fill (any values at known pixels).

    Returns:
        ``(H, W, C)`` uint8: ``image`` at known pixels, the corrected fill in the holes. Holes that
        touch no known pixel (an image with nothing known) keep the fill.
    """
    out = np.where(known[..., None], image, filled)
    if known.all() or not known.any():
        return out
    correction = _correction(image.astype(np.float64), known, filled.astype(np.float64))
    ys, xs = np.nonzero(~known)
    out[ys, xs] = np.clip(np.rint(filled[ys, xs] + correction), 0, 255).astype(np.uint8)
    return out


def _correction(image: np.ndarray, known: np.ndarray, filled: np.ndarray) -> np.ndarray:
    """The correction ``h`` at the hole pixels (in ``np.nonzero(~known)`` order), ``(N, C)``: for each
    hole pixel ``p``, ``sum over its neighbours q of (h_p - h_q) = sum over its known neighbours q
    of (image_q - filled_p)``, where ``h_q`` is 0 at known pixels (the image's border adds nothing)."""
    import scipy.sparse as sparse  # the patchmatch extra installs it
    from scipy.sparse.linalg import splu

    height, width = known.shape
    ys, xs = np.nonzero(~known)
    n = ys.size
    index = np.full((height, width), -1, np.int64)
    index[ys, xs] = np.arange(n)
    diagonal = np.zeros(n)
    rhs = np.zeros((n, filled.shape[2]))
    rows, cols = [], []
    for dy, dx in _STEPS:
        qy, qx = ys + dy, xs + dx
        inside = (qy >= 0) & (qy < height) & (qx >= 0) & (qx < width)
        p, qy, qx = np.flatnonzero(inside), qy[inside], qx[inside]
        diagonal[p] += 1
        q = index[qy, qx]
        hole = q >= 0
        rows.append(p[hole])
        cols.append(q[hole])
        edge = p[~hole]  # an edge to a known pixel: its step is the fill's to make up
        rhs[edge] += image[qy[~hole], qx[~hole]] - filled[ys[edge], xs[edge]]
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    values = np.concatenate([-np.ones(sum(r.size for r in rows[:-1])), diagonal])
    matrix = sparse.csc_matrix((values, (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return splu(matrix).solve(rhs)  # every channel at once
