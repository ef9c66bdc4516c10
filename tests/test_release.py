"""The released model on cases a user checks first: flat images with big solid holes."""

from __future__ import annotations

import numpy as np
import pytest

from pconv import load_model
from pconv.inpaint import inpaint
from pconv.io import DEFAULT_WEIGHTS, read_metadata


@pytest.fixture(scope="module")
def released():
    return load_model(DEFAULT_WEIGHTS)


@pytest.mark.parametrize("level", [40, 150, 235])
def test_a_square_hole_in_a_flat_grey_image_is_filled_with_its_grey(released, level):
    """A 96-px square hole in a flat 256-px image of one grey: every pixel of the fill within 10
    levels (the previous release was up to 14, 31 and 53 off at its corners, a visible box)."""
    image = np.full((256, 256, 3), level, np.uint8)
    known = np.ones((256, 256), bool)
    known[80:176, 80:176] = False
    out = inpaint(released, image, known).image
    error = np.abs(out[~known].astype(int) - level)
    assert error.max() <= 10, (error.max(), np.percentile(error, 99))


def test_the_release_records_its_training_scale(released):
    training = read_metadata(DEFAULT_WEIGHTS)["training"]
    assert '"size": 512' in training and released.hole_depth > 50
