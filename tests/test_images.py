"""One policy for reading images, whoever reads them: orientation, depth, alpha, size guards."""

from __future__ import annotations

import dataclasses
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from pconv.errors import ConfigError, InputError, MissingFileError, TooLargeError
from pconv.images import decode_image, encode, load_rgb, open_image, output_format, read_image
from pconv.masks import read_mask
from pconv.options import InpaintOptions


def _rotated_jpeg(path, pixels: np.ndarray) -> None:
    """Stored as ``pixels`` with EXIF orientation 6: shown rotated 90 degrees clockwise."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(path, exif=exif, quality=100)


def test_a_mask_is_read_as_shown_like_its_photo(tmp_path):
    """A phone's mask file with EXIF orientation: predict.py and the mask tools see it upright."""
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :10] = 255  # a hole along the stored image's left edge
    _rotated_jpeg(tmp_path / "m.jpg", stored)
    known, _ = read_mask(tmp_path / "m.jpg")
    assert known.shape == (40, 20)  # as shown: portrait
    assert not known[:8].any() and known[12:].all()  # the left edge, turned clockwise, is the top


def test_deep_images_are_scaled_when_read_and_refused_when_written_back(tmp_path):
    """16-bit grey and 16-bit RGB under one rule: training and evaluation read them as 8 bits,
    predict and serve refuse them (their known pixels could not stay as they are)."""
    values = np.full((6, 8, 3), 40000, np.uint16)
    cv2.imwrite(str(tmp_path / "rgb16.png"), values)
    cv2.imwrite(str(tmp_path / "grey16.png"), values[..., 0])
    for name in ("rgb16.png", "grey16.png"):
        got = np.asarray(load_rgb(tmp_path / name)).astype(int)
        assert np.abs(got - 40000 / 257).max() <= 1, name  # scaled, not clipped to 255 or cut
        with pytest.raises(InputError, match="more than 8 bits per pixel"):
            read_image(tmp_path / name, 3)


def test_alpha_is_kept_aside_for_the_result_and_composited_on_white_for_training(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent black
    Image.fromarray(rgba).save(tmp_path / "a.png")
    decoded = read_image(tmp_path / "a.png", 3)
    assert decoded.alpha is not None and decoded.mode == "RGB" and (decoded.pixels == 0).all()
    assert (np.asarray(load_rgb(tmp_path / "a.png")) == 255).all()


def test_opening_errors_name_the_problem(tmp_path):
    with pytest.raises(MissingFileError, match="image not found"):
        open_image(tmp_path / "nope.png")
    with pytest.raises(InputError, match="the mask is empty"):
        open_image(b"", "mask")
    with pytest.raises(InputError, match="not an image Pillow can read"):
        open_image(b"hello", "image")
    with pytest.raises(TooLargeError, match="megapixels; the limit is 0.0001"):
        open_image(encode(Image.new("RGB", (20, 20))), "image", max_megapixels=0.0001)


def test_an_image_decodes_upright_with_the_models_channels(tmp_path):
    stored = np.zeros((10, 30, 3), np.uint8)
    stored[..., 0] = 200
    _rotated_jpeg(tmp_path / "p.jpg", stored)
    with open_image(tmp_path / "p.jpg") as img:
        decoded = decode_image(img, 1)
    assert decoded.pixels.shape == (30, 10, 1) and decoded.mode == "L"


def test_output_formats_are_checked_before_any_work():
    assert output_format("x.PNG") == "PNG" and output_format("y.jpeg") == "JPEG"
    with pytest.raises(ConfigError, match="unsupported extension '.txt'"):
        output_format("result.txt")


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"tile": 16}, "at least 32"),
        ({"tile": 64, "overlap": 64}, "smaller than the tile"),
        ({"scale": 0.5}, "factor of at least 1"),
        ({"scale": float("nan")}, "factor of at least 1"),
        ({"samples": 0}, "at least 1"),
        ({"hole_depth": 0}, "positive"),
    ],
)
def test_inference_options_are_checked_when_made(fields, message):
    with pytest.raises(ConfigError, match=message):
        InpaintOptions(**fields)
    with pytest.raises(dataclasses.FrozenInstanceError):
        InpaintOptions().tile = 64  # type: ignore[misc]


def test_the_displayed_size_of_a_png_decodes_no_pixels(tmp_path, monkeypatch):
    """Pillow's getexif() decodes a whole PNG looking for a late eXIf chunk: a 41 MP upload would be
    decoded before its work budget is checked. The size as shown comes from the header alone."""
    from pconv.images import displayed_size

    Image.fromarray(np.zeros((30, 50, 3), np.uint8)).save(tmp_path / "p.png")
    with open_image(tmp_path / "p.png") as img:
        monkeypatch.setattr(img, "load", lambda: pytest.fail("pixels decoded"))
        assert displayed_size(img) == (50, 30)


def test_a_log_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    """Disk full while logging: an OutputError naming the log, not a chained OSError."""
    import errno

    from pconv.errors import OutputError
    from pconv.training import logs

    class Full:
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            pass

        def close(self):
            pass

    monkeypatch.setattr(logs, "open_append", lambda path: Full())
    run = logs.RunLogs(tmp_path, None)
    with pytest.raises(OutputError, match="cannot write the log .*log.csv: No space left on device"):
        run.row("log.csv", {"step": 1, "loss": 0.5})
    run.close()


def _png_rows_filters(data: bytes, row_bytes: int) -> set[int]:
    """The filter byte of every row of a PNG's image data."""
    import struct
    import zlib as _zlib

    idat, pos = b"", 8
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    raw = _zlib.decompress(idat)
    return {raw[i] for i in range(0, len(raw), row_bytes + 1)}


@pytest.mark.parametrize("mode, channels", [("L", 1), ("RGB", 3), ("RGBA", 4), ("LA", 2)])
def test_png_output_is_exact_in_every_mode(tmp_path, mode, channels):
    """8-bit PNG (L, RGB, RGBA) comes from OpenCV with one row filter (Paeth); LA from Pillow; both
    lossless, as files and in memory; --smallest is Pillow's level 9."""
    from pconv.files import atomic_write_many
    from pconv.images import encode, encoder

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (37, 53, channels), dtype=np.uint8)
    img = Image.fromarray(pixels.squeeze(), mode=mode)
    atomic_write_many([encoder(img, tmp_path / "out.png")])
    for data in ((tmp_path / "out.png").read_bytes(), encode(img), encode(img, smallest=True)):
        with Image.open(io.BytesIO(data)) as back:
            assert back.mode == mode
            assert np.array_equal(np.asarray(back).reshape(pixels.shape), pixels)
    if mode != "LA":
        assert _png_rows_filters(encode(img), 53 * channels) == {4}
    assert _png_rows_filters(encode(img, smallest=True), 53 * channels) != {4}


@pytest.mark.parametrize("case", ["opencv fails", "opencv raises", "old opencv", "transparency", "icc", "long side"])
def test_png_falls_back_to_pillow_where_opencv_cannot_or_would_drop_something(case, monkeypatch):
    """The same pixels (and the metadata Pillow keeps) when OpenCV fails, lacks the row-filter
    option (before 4.12), the image carries a transparent colour or an ICC profile, or a side
    passes libpng's limit."""
    from pconv.images import encode

    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    img = Image.fromarray(pixels)
    if case == "opencv fails":
        monkeypatch.setattr(cv2, "imencode", lambda *a: (False, None))
    elif case == "opencv raises":

        def broken(*args):
            raise cv2.error("no")

        monkeypatch.setattr(cv2, "imencode", broken)
    elif case == "old opencv":
        monkeypatch.delattr(cv2, "IMWRITE_PNG_FILTER")
    elif case == "transparency":
        img.info["transparency"] = (1, 2, 3)
    elif case == "icc":
        img.info["icc_profile"] = b"not a real profile"
    else:
        pixels = rng.integers(0, 256, (1, 1_000_001), dtype=np.uint8)
        img = Image.fromarray(pixels)
    data = encode(img)
    with Image.open(io.BytesIO(data)) as back:
        assert np.array_equal(np.asarray(back).reshape(pixels.shape), pixels)
        if case == "transparency":
            assert back.info["transparency"] == (1, 2, 3)
        if case == "icc":
            assert back.info["icc_profile"] == b"not a real profile"
    if case != "long side":
        assert _png_rows_filters(data, 9 * 3) != {4}  # Pillow's filters, not OpenCV's Paeth rows
