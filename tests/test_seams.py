"""pconv.seams: the Poisson correction of a copied fill, against its defining equations."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("scipy")

from pconv.seams import _correction, seamless_fill  # noqa: E402


def _case(seed: int = 0, size: tuple[int, int] = (24, 31)):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    known = np.ones(size, bool)
    known[5:15, 8:20] = False
    known[18:, 25:] = False  # a hole at the image's corner: the border adds no term
    filled = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    return image, known, filled


def test_the_correction_solves_the_poisson_equations():
    """For every hole pixel p: sum over in-image neighbours q of (f_p - f_q - g_pq) = 0, with f the
    corrected fill (the image at known q), g_pq the fill's own step where q is a hole pixel, 0 across
    the hole's edge."""
    image, known, filled = _case()
    h = np.zeros(known.shape + (3,))
    ys, xs = np.nonzero(~known)
    h[ys, xs] = _correction(image.astype(float), known, filled.astype(float))
    f = np.where(known[..., None], image.astype(float), filled + h)
    for y, x in zip(ys, xs):
        total = np.zeros(3)
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            qy, qx = y + dy, x + dx
            if 0 <= qy < known.shape[0] and 0 <= qx < known.shape[1]:
                guide = 0.0 if known[qy, qx] else filled[y, x].astype(float) - filled[qy, qx]
                total += f[y, x] - f[qy, qx] - guide
        np.testing.assert_allclose(total, 0, atol=1e-8)


def test_a_fill_off_by_a_constant_comes_back_exact():
    """A copy that is the photo plus 40 levels (a flat grey photo with a shaded fill) meets it with
    no step at all: the correction is the constant -40."""
    image = np.full((20, 30, 3), 120, np.uint8)
    image[..., 1] = 60
    known = np.ones((20, 30), bool)
    known[4:16, 6:22] = False
    filled = image + np.uint8(40)
    assert np.array_equal(seamless_fill(image, known, filled), image)


def test_the_fill_keeps_its_texture_and_known_pixels_are_untouched():
    """A textured fill keeps its pixel-to-pixel steps inside the hole (the correction is smooth);
    known pixels are the image's."""
    rng = np.random.default_rng(1)
    image = np.full((40, 40, 3), 100, np.uint8)
    known = np.ones((40, 40), bool)
    known[10:30, 10:30] = False
    texture = rng.integers(0, 2, (40, 40, 1)) * 30
    filled = (image + 50 + texture).astype(np.uint8)
    out = seamless_fill(image, known, filled).astype(int)
    assert np.array_equal(out[known], image[known])
    inner = out[15:25, 15:25, 0]
    np.testing.assert_allclose(np.diff(inner, axis=1), np.diff((50 + texture)[15:25, 15:25, 0], axis=1), atol=2)
    assert abs(out[10:30, 10:30].mean() - 100) < 3  # the offset is gone: the edges meet the photo's 100


def test_nothing_known_or_nothing_missing_returns_the_fill_or_the_image(monkeypatch):
    """Without a known pixel the equations are singular: no solve is attempted."""
    import pconv.seams

    monkeypatch.setattr(pconv.seams, "_correction", lambda *a: pytest.fail("solved a singular system"))
    image, _, filled = _case()
    assert np.array_equal(seamless_fill(image, np.zeros(image.shape[:2], bool), filled), filled)
    assert np.array_equal(seamless_fill(image, np.ones(image.shape[:2], bool), filled), image)
