"""predict.py and pconv.inpaint: results, tiling, folders, uncertainty and every user error."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import StandIn, image_size, synthetic_photo
from PIL import Image

import pconv.io
from pconv import PConvUNet, save_model
from pconv.inpaint import inpaint
from pconv.masks import write_mask
from pconv.methods import load_method
from pconv.options import InpaintOptions
from pconv.predict import main
from pconv.tiling import tile_origins


def _model(depth: int = 3, dropout: float = 0.0, seed: int = 0) -> PConvUNet:
    torch.manual_seed(seed)
    model = PConvUNet(depth=depth, base_width=4, dropout=dropout)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _holes(height: int, width: int, *boxes: tuple[int, int, int, int]) -> np.ndarray:
    known = np.ones((height, width), bool)
    for y0, y1, x0, x1 in boxes:
        known[y0:y1, x0:x1] = False
    return known


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("weights")
    paths = {"plain": root / "plain.safetensors", "dropout": root / "dropout.safetensors"}
    save_model(_model(), paths["plain"])
    save_model(_model(dropout=0.3), paths["dropout"])
    return paths


@pytest.fixture()
def pair(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    image = synthetic_photo(40, 56)
    known = _holes(40, 56, (10, 22, 12, 30))
    Image.fromarray(image).save(tmp_path / "photo.png")
    write_mask(tmp_path / "holes.png", known)
    return tmp_path / "photo.png", tmp_path / "holes.png", image, known


def test_result_keeps_known_pixels_and_fills_holes_with_the_model(weights, pair, tmp_path, capsys):
    image_path, mask_path, image, known = pair
    out = tmp_path / "filled.png"
    assert (
        main(
            [
                "--image",
                str(image_path),
                "--mask",
                str(mask_path),
                "--out",
                str(out),
                "--weights",
                str(weights["plain"]),
                "--compare",
                str(tmp_path / "cmp.png"),
            ]
        )
        == 0
    )
    result = np.asarray(Image.open(out))
    assert result.shape == image.shape and np.array_equal(result[known], image[known])
    model = _model()
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        pred = model(x, torch.from_numpy(known)[None, None].float())[0].clamp(0, 1).permute(1, 2, 0).numpy()
    expected = np.rint(pred * 255).astype(np.uint8)
    assert np.abs(result[~known].astype(int) - expected[~known]).max() <= 1
    assert image_size(tmp_path / "cmp.png") == (3 * 56 + 16, 40)
    assert "wrote" in capsys.readouterr().out


def test_tiled_equals_untiled_where_a_single_tile_sees_the_whole_receptive_field():
    model = _model(depth=2)
    image = synthetic_photo(64, 160, seed=3)
    known = _holes(64, 160, (20, 40, 70, 86))  # only inside the tile starting at x=48, far from its edges
    whole = inpaint(model, image, known, tile=None, scale=1)
    tiled = inpaint(model, image, known, tile=64, overlap=16, scale=1)
    assert tile_origins(160, 64, 16, align=4) == [0, 48, 96]
    assert tiled.tiles == 1 and whole.tiles == 1
    assert np.abs(tiled.image.astype(int) - whole.image.astype(int)).max() <= 1
    assert np.array_equal(tiled.image[known], image[known])


def test_tiles_run_only_where_holes_are_and_cover_every_hole():
    model = _model(depth=2)
    image = synthetic_photo(200, 260, seed=4)
    corner = inpaint(model, image, _holes(200, 260, (5, 15, 5, 15)), tile=64, overlap=16)
    assert corner.tiles == 1
    # a hole across tile seams: every hole pixel gets a (non-zero-weight) prediction
    known = _holes(200, 260, (40, 120, 30, 200))
    spread = inpaint(model, image, known, tile=64, overlap=16, scale=1)
    assert spread.tiles > 4
    whole = inpaint(model, image, known, tile=None, scale=1)
    assert np.abs(spread.image.astype(int) - whole.image.astype(int))[~known].mean() < 40
    assert np.array_equal(spread.image[known], image[known])


class _Ramp(StandIn):
    """Predicts a left-to-right ramp 0..1 whatever the input: its mirror average is 0.5 everywhere."""

    def predict(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(0, 1, image.shape[-1], dtype=image.dtype)
        return ramp.expand_as(image).clone()


def test_flip_averages_the_prediction_with_that_of_the_mirror_image(weights, pair, tmp_path):
    image = synthetic_photo(40, 56)
    known = _holes(40, 56, (10, 22, 12, 30), (30, 38, 40, 50))
    ramp = inpaint(_Ramp(), image, known, tile=None, flip=True)
    assert np.all(ramp.image[~known] == 128) and np.array_equal(ramp.image[known], image[known])
    assert not np.all(inpaint(_Ramp(), image, known, tile=None).image[~known] == 128)
    model = _model()  # against the formula: (f(x) + mirror(f(mirror(x)))) / 2
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    m = torch.from_numpy(known)[None, None].float()
    with torch.no_grad():
        pred = ((model(x, m) + model(x.flip(-1), m.flip(-1)).flip(-1)) / 2)[0].clamp(0, 1).permute(1, 2, 0).numpy()
    expected = np.rint(pred * 255).astype(np.uint8)
    result = inpaint(model, image, known, tile=None, flip=True, scale=1).image
    assert np.abs(result[~known].astype(int) - expected[~known]).max() <= 1
    image_path, mask_path, *_ = pair  # and from the command line
    out = tmp_path / "flip.png"
    assert (
        main(
            [
                "--image",
                str(image_path),
                "--mask",
                str(mask_path),
                "--out",
                str(out),
                "--weights",
                str(weights["plain"]),
                "--flip",
            ]
        )
        == 0
    )
    _, _, image, known = pair
    assert np.array_equal(np.asarray(Image.open(out)), inpaint(_model(), image, known, flip=True).image)


def test_tile_origins_cover_the_length_with_the_overlap():
    for length, tile, overlap, align in [(1000, 256, 64, 32), (513, 512, 128, 128), (300, 64, 0, 1)]:
        starts = tile_origins(length, tile, overlap, align)
        assert starts[0] == 0 and starts[-1] + tile == length
        assert all(b - a <= tile - overlap and a % align == 0 for a, b in zip(starts, starts[1:]))


def test_folder_mode_keeps_going_past_bad_pairs(weights, tmp_path, capsys):
    images, masks, out = tmp_path / "images", tmp_path / "masks", tmp_path / "out"
    images.mkdir(), masks.mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(synthetic_photo(32, 40)).save(images / f"{name}.jpg")
    write_mask(masks / "a.png", _holes(32, 40, (4, 12, 4, 20)))
    write_mask(masks / "c.png", _holes(16, 16, (2, 5, 2, 5)))  # wrong size
    rc = main(
        [
            "--image-dir",
            str(images),
            "--mask-dir",
            str(masks),
            "--out-dir",
            str(out),
            "--weights",
            str(weights["plain"]),
        ]
    )
    assert rc == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]
    err = capsys.readouterr().err
    assert "2 failed" in err and "b.jpg: no mask named b.*" in err and "c.jpg: mask" in err and "16x16" in err


def test_uncertainty_from_monte_carlo_dropout(weights, pair, tmp_path):
    image_path, mask_path, image, known = pair
    out, unc = tmp_path / "mean.png", tmp_path / "std.png"
    assert (
        main(
            [
                "--image",
                str(image_path),
                "--mask",
                str(mask_path),
                "--out",
                str(out),
                "--weights",
                str(weights["dropout"]),
                "--samples",
                "6",
                "--batch-size",
                "4",
                "--uncertainty",
                str(unc),
                "--interval",
                str(tmp_path / "lo.png"),
                str(tmp_path / "hi.png"),
            ]
        )
        == 0
    )
    std = np.load(tmp_path / "std.npy")
    assert std.shape == (*known.shape, 3) and np.all(std[known] == 0) and std[~known].mean() > 0
    assert np.allclose(np.load(tmp_path / "std_stderr.npy"), std / np.sqrt(6))
    assert image_size(unc) == (56, 40)
    mean = np.asarray(Image.open(out)).astype(int)
    low, high = (np.asarray(Image.open(tmp_path / f"{n}.png")).astype(int) for n in ("lo", "hi"))
    assert np.array_equal(mean[known], image[known]) and np.array_equal(low[known], image[known])
    assert np.all(low <= mean) and np.all(mean <= high) and (high - low)[~known].mean() > 0


def test_bfloat16_runs_the_convolutions_in_bfloat16_and_stays_close():
    """precision="bfloat16": the model's convolutions see bfloat16 (autocast), the result is float32
    pixels within a few levels of float32's; classical methods are refused."""
    seen = []

    class Probe(PConvUNet):
        def forward(self, *args, **kwargs):
            seen.append(torch.is_autocast_enabled("cpu"))
            return super().forward(*args, **kwargs)

    torch.manual_seed(0)
    model = Probe(depth=3, base_width=8).eval()
    rng = np.random.default_rng(0)
    image = (rng.random((64, 96, 3)) * 255).astype(np.uint8)
    known = np.ones((64, 96), bool)
    known[20:40, 30:70] = False
    full = inpaint(model, image, known).image.astype(int)
    assert seen == [False]
    half = inpaint(model, image, known, precision="bfloat16").image.astype(int)
    assert seen == [False, True] and torch.get_autocast_dtype("cpu") == torch.bfloat16
    diff = np.abs(full - half)[~known]
    assert 0 < diff.mean() < 2 and diff.max() <= 12
    assert np.array_equal(full[known], half[known])


def test_sampling_is_random_only_when_asked():
    model = _model(dropout=0.3)
    image, known = synthetic_photo(32, 32), _holes(32, 32, (8, 20, 8, 20))
    once = [inpaint(model, image, known).image for _ in range(2)]
    assert np.array_equal(*once)
    a, b = (inpaint(model, image, known, samples=3, batch=2) for _ in range(2))
    assert not np.array_equal(a.image, b.image) and a.std is not None
    assert np.array_equal(inpaint(model, image, known).image, once[0])  # sampling left nothing switched on


def test_grayscale_and_alpha_images_round_trip(weights, tmp_path):
    known = _holes(24, 24, (5, 12, 5, 12))
    write_mask(tmp_path / "m.png", known)
    gray = synthetic_photo(24, 24)[..., 0]
    Image.fromarray(gray).save(tmp_path / "g.png")
    assert (
        main(
            [
                "--image",
                str(tmp_path / "g.png"),
                "--mask",
                str(tmp_path / "m.png"),
                "--out",
                str(tmp_path / "g_out.png"),
                "--weights",
                str(weights["plain"]),
            ]
        )
        == 0
    )
    with Image.open(tmp_path / "g_out.png") as out:
        assert out.mode == "L" and np.array_equal(np.asarray(out)[known], gray[known])
    rgba = np.dstack([synthetic_photo(24, 24), np.full((24, 24), 200, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert (
        main(
            [
                "--image",
                str(tmp_path / "a.png"),
                "--mask",
                str(tmp_path / "m.png"),
                "--out",
                str(tmp_path / "a_out.png"),
                "--weights",
                str(weights["plain"]),
            ]
        )
        == 0
    )
    out = np.asarray(Image.open(tmp_path / "a_out.png"))
    assert out.shape == (24, 24, 4) and np.all(out[..., 3] == 200) and np.array_equal(out[known], rgba[known])


def test_empty_mask_writes_the_input_unchanged(weights, pair, tmp_path, capsys):
    image_path, _, _, _ = pair
    write_mask(tmp_path / "none.png", np.ones((40, 56), bool))
    out = tmp_path / "same.png"
    assert (
        main(
            [
                "--image",
                str(image_path),
                "--mask",
                str(tmp_path / "none.png"),
                "--out",
                str(out),
                "--weights",
                str(weights["plain"]),
            ]
        )
        == 0
    )
    assert out.read_bytes() == image_path.read_bytes()
    assert "no holes" in capsys.readouterr().err


def test_resize_mask_scales_a_mask_of_another_size(weights, pair, tmp_path):
    image_path, _, image, _ = pair
    write_mask(tmp_path / "half.png", _holes(20, 28, (5, 11, 6, 15)))
    out = tmp_path / "r.png"
    assert (
        main(
            [
                "--image",
                str(image_path),
                "--mask",
                str(tmp_path / "half.png"),
                "--out",
                str(out),
                "--weights",
                str(weights["plain"]),
                "--resize-mask",
            ]
        )
        == 0
    )
    result = np.asarray(Image.open(out))
    assert np.array_equal(result[:10], image[:10]) and not np.array_equal(result[10:22, 12:30], image[10:22, 12:30])


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing image", "image not found"),
        ("unreadable image", "cannot read image"),
        ("missing mask", "mask not found"),
        ("unreadable mask", "cannot read mask"),
        ("mask size", "is 20x10 but the image is 56x40"),
        ("all holes", "covers the whole image"),
        ("format", "unsupported extension '.xyz'"),
        ("no dropout", "needs a model trained with dropout"),
        ("not a model", "not a readable safetensors file"),
        ("uncertainty without samples", "need --samples N with N >= 2"),
        ("mixed modes", "not both"),
        ("16-bit image", "more than 8 bits per pixel images are not supported"),
        ("16-bit RGB image", "more than 8 bits per pixel images are not supported"),
        ("checkpoint as weights", "is a training checkpoint (torch.save), not a release file"),
        ("bad release config", "has a bad configuration or weights for pconv_unet"),
        ("output is a folder", "could not write"),
        ("unknown precision", "precision must be one of float32, bfloat16, got 'bf16'"),
        ("precision of a classical method", "precision bfloat16 applies to PyTorch models, not to telea"),
    ],
)
def test_user_errors_are_one_line_exit_2_and_write_nothing(weights, pair, tmp_path, capsys, case, message):
    image_path, mask_path, _, _ = pair
    out = tmp_path / "out.png"
    args = {"--image": str(image_path), "--mask": str(mask_path), "--out": str(out), "--weights": str(weights["plain"])}
    extra: list[str] = []
    if case == "missing image":
        args["--image"] = str(tmp_path / "nope.png")
    elif case == "unreadable image":
        (tmp_path / "bad.png").write_bytes(b"not a png")
        args["--image"] = str(tmp_path / "bad.png")
    elif case == "missing mask":
        args["--mask"] = str(tmp_path / "nope_mask.png")
    elif case == "unreadable mask":
        (tmp_path / "bad_mask.png").write_text("text")
        args["--mask"] = str(tmp_path / "bad_mask.png")
    elif case == "mask size":
        write_mask(tmp_path / "small.png", np.zeros((10, 20), bool))
        args["--mask"] = str(tmp_path / "small.png")
    elif case == "all holes":
        write_mask(tmp_path / "all.png", np.zeros((40, 56), bool))
        args["--mask"] = str(tmp_path / "all.png")
    elif case == "format":
        out = tmp_path / "out.xyz"
        args["--out"] = str(out)
    elif case == "no dropout":
        extra = ["--samples", "3"]
    elif case == "not a model":
        (tmp_path / "fake.safetensors").write_bytes(b"\x00" * 32)
        args["--weights"] = str(tmp_path / "fake.safetensors")
    elif case == "uncertainty without samples":
        extra = ["--uncertainty", str(tmp_path / "u.png")]
    elif case == "mixed modes":
        extra = ["--image-dir", str(tmp_path)]
    elif case == "checkpoint as weights":
        torch.save({"version": 1, "model": {}}, tmp_path / "last.pt")
        args["--weights"] = str(tmp_path / "last.pt")
    elif case == "bad release config":
        from safetensors.torch import save_file

        save_file(
            {"x": torch.zeros(1)},
            str(tmp_path / "bad.safetensors"),
            metadata={"format": "pconv-release-1", "architecture": "pconv_unet", "config": '{"depth": 99}'},
        )
        args["--weights"] = str(tmp_path / "bad.safetensors")
    elif case == "output is a folder":
        out = tmp_path / "out.png"
        out.mkdir()
        (out / "keep.txt").write_text("a folder named like an image")
    elif case == "unknown precision":
        extra = ["--precision", "bf16"]
    elif case == "precision of a classical method":
        del args["--weights"]
        extra = ["--method", "telea", "--precision", "bfloat16"]
    elif case == "16-bit image":
        Image.fromarray(np.full((40, 56), 40000, np.uint16)).save(tmp_path / "deep.png")
        args["--image"] = str(tmp_path / "deep.png")
    elif case == "16-bit RGB image":  # Pillow opens it as 8-bit RGB, silently
        cv2.imwrite(str(tmp_path / "deep_rgb.png"), np.full((40, 56, 3), 40000, np.uint16))
        args["--image"] = str(tmp_path / "deep_rgb.png")
    argv = [v for pair_ in args.items() for v in pair_] + extra
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("predict.py: error: ") and message in err and len(err.splitlines()) == 1
    assert (not out.exists() or out.is_dir()) and not list(tmp_path.glob(".*.tmp*"))


def test_missing_default_weights_say_what_to_do(pair, tmp_path, monkeypatch, capsys):
    image_path, mask_path, _, _ = pair
    monkeypatch.setattr(pconv.io, "DEFAULT_WEIGHTS", tmp_path / "absent.safetensors")
    assert main(["--image", str(image_path), "--mask", str(mask_path), "--out", str(tmp_path / "o.png")]) == 2
    assert "--weights FILE" in capsys.readouterr().err


def test_folder_mode_refuses_two_images_that_would_write_the_same_file(weights, tmp_path, capsys):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    Image.fromarray(synthetic_photo(16, 16)).save(images / "a.png")
    Image.fromarray(synthetic_photo(16, 16)).save(images / "a.jpg")
    write_mask(masks / "a.png", _holes(16, 16, (4, 8, 4, 8)))
    assert (
        main(
            [
                "--image-dir",
                str(images),
                "--mask-dir",
                str(masks),
                "--out-dir",
                str(tmp_path / "out"),
                "--weights",
                str(weights["plain"]),
            ]
        )
        == 2
    )
    assert "would both be written as a.png" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_almost_no_known_context_warns(weights, tmp_path, capsys):
    Image.fromarray(synthetic_photo(40, 40)).save(tmp_path / "p.png")
    known = np.zeros((40, 40), bool)
    known[20, 20] = True  # one known pixel
    write_mask(tmp_path / "m.png", known)
    assert (
        main(
            [
                "--image",
                str(tmp_path / "p.png"),
                "--mask",
                str(tmp_path / "m.png"),
                "--out",
                str(tmp_path / "o.png"),
                "--weights",
                str(weights["plain"]),
            ]
        )
        == 0
    )
    assert "only 0.06% of p.png is known" in capsys.readouterr().err


def test_no_holes_with_the_output_the_input_itself_leaves_it_alone(weights, pair, tmp_path, capsys):
    image_path, _, _, _ = pair
    before = image_path.read_bytes()
    write_mask(tmp_path / "none.png", np.ones((40, 56), bool))
    assert (
        main(
            [
                "--image",
                str(image_path),
                "--mask",
                str(tmp_path / "none.png"),
                "--out",
                str(image_path),
                "--in-place",
                "--weights",
                str(weights["plain"]),
            ]
        )
        == 0
    )
    assert image_path.read_bytes() == before and "stays as it is" in capsys.readouterr().err


def test_a_decompression_bomb_is_a_failed_pair_in_folder_mode(weights, tmp_path, capsys):
    import zlib

    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    png = io.BytesIO()
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(png, format="PNG")
    data = png.getvalue()
    ihdr = b"IHDR" + (20000).to_bytes(4, "big") * 2 + data[24:29]  # claims 400 megapixels
    (images / "bomb.png").write_bytes(data[:12] + ihdr + zlib.crc32(ihdr).to_bytes(4, "big") + data[33:])
    write_mask(masks / "bomb.png", _holes(16, 16, (4, 8, 4, 8)))
    Image.fromarray(synthetic_photo(16, 16)).save(images / "fine.png")
    write_mask(masks / "fine.png", _holes(16, 16, (4, 8, 4, 8)))
    assert (
        main(
            [
                "--image-dir",
                str(images),
                "--mask-dir",
                str(masks),
                "--out-dir",
                str(tmp_path / "out"),
                "--weights",
                str(weights["plain"]),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "bomb.png: cannot read image" in err and "decompression bomb" in err
    assert (tmp_path / "out" / "fine.png").is_file()


class _Half(StandIn):
    """Predicts 0.5 everywhere: every hole pixel must come out exactly 128 however the tiles fall."""

    multiple = 4

    def predict(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.full_like(image, 0.5)


@pytest.mark.parametrize("tile, overlap", [(32, 8), (48, 0), (64, 31)])
def test_every_hole_pixel_gets_a_prediction_from_the_tiles(tile, overlap):
    import warnings

    image = synthetic_photo(150, 230, seed=2)
    known = _holes(150, 230, (0, 150, 100, 104), (10, 140, 5, 225), (149, 150, 0, 230))
    known[::7, ::5] = True  # a sieve: holes in every tile, touching every tile edge
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a pixel no tile covered would divide 0 by 0
        result = inpaint(_Half(), image, known, tile=tile, overlap=overlap, scale=1)
    assert (result.image[~known] == 128).all() and np.array_equal(result.image[known], image[known])
    assert result.tiles > 6


class _Spread(StandIn):
    """A stand-in for a dropout model: sample ``b`` of a batch of ``n`` predicts ``b / (n - 1)``
    everywhere, so every pixel's samples are exactly ``0, 1/(n-1), ..., 1`` in every tile."""

    multiple = 4
    can_sample = True

    def predict(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n = image.shape[0]
        return (torch.arange(n, dtype=image.dtype) / (n - 1)).view(n, 1, 1, 1).expand_as(image).clone()


@pytest.mark.parametrize("flip, scale", [(False, 1), (True, 1), (True, 2)])
def test_monte_carlo_mean_and_spread_are_exact_across_tiles_and_with_flip(flip, scale):
    image = synthetic_photo(150, 230, seed=3)
    known = _holes(150, 230, (0, 150, 100, 104), (10, 140, 5, 225))
    # at scale 2 the fill and its spread are computed on the half-size image and upsampled, which
    # blends them with the known pixels within a few pixels of the big holes' edges
    away = cv2.erode((~known).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) if scale > 1 else ~known
    known[::7, ::5] = True
    checked = away & ~known
    result = inpaint(_Spread(), image, known, tile=48, overlap=12, samples=5, batch=5, flip=flip, scale=scale)
    values = np.linspace(0, 1, 5).repeat(2 if flip else 1)  # mirrored passes are samples of their own
    assert result.tiles >= 6 and result.samples == values.size and checked.sum() > 10_000
    assert (result.image[checked] == 128).all() and np.array_equal(result.image[known], image[known])
    np.testing.assert_allclose(result.std[checked], values.std(ddof=1), rtol=1e-5)
    assert (result.std[known] == 0).all()
    np.testing.assert_allclose(result.stderr[checked], values.std(ddof=1) / np.sqrt(values.size), rtol=1e-5)


class _Alternating(StandIn):
    """Each tile predicts a constant, 0.1 and 0.9 in turn: neighbouring tiles disagree. Tiles of one
    size arrive batched: each sample of a batch counts as a tile."""

    multiple = 4

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def predict(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n = image.shape[0]
        values = torch.tensor([0.9 if (self.calls + i + 1) % 2 == 0 else 0.1 for i in range(n)])
        self.calls += n
        return values.view(n, 1, 1, 1).expand_as(image).clone()


def test_overlapping_tiles_are_feathered_into_each_other_without_steps():
    image = synthetic_photo(64, 400, seed=5)
    known = _holes(64, 400, (16, 48, 0, 400))  # a band across the image: one row of tiles
    model = _Alternating()
    out = inpaint(model, image, known, tile=64, overlap=32, scale=1).image.astype(int)
    band = out[16:48]
    assert model.calls >= 8 and band.max() - band.min() > 150  # the tiles' values both show
    # a linear ramp over the 32-px overlap moves at most ~2 x 0.8 x 255 / 32 levels per pixel;
    # a plain average would jump by 0.4 x 255 at each overlap's edge
    assert np.abs(np.diff(band, axis=1)).max() <= 15


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--out", "{mask}"], "--out {mask} is also the mask"),
        (["--compare", "{out}"], "--compare {out} is also --out"),
        (["--compare", "{image}"], "--compare {image} is the input image"),
        (["--out", "{image}"], "--out {image} is the input image: pass --in-place to replace it"),
    ],
)
def test_outputs_that_would_overwrite_the_mask_or_each_other_are_refused(
    weights, pair, tmp_path, capsys, flags, message
):
    image_path, mask_path, _, _ = pair
    out = tmp_path / "filled.png"
    names = {"mask": mask_path, "out": out, "image": image_path}
    args = {"--image": str(image_path), "--mask": str(mask_path), "--out": str(out), "--weights": str(weights["plain"])}
    args[flags[0]] = flags[1].format(**names)
    before = {p: p.read_bytes() for p in (image_path, mask_path)}
    assert main([v for kv in args.items() for v in kv]) == 2
    assert message.format(**names) in capsys.readouterr().err
    assert {p: p.read_bytes() for p in before} == before and not out.exists()


def test_in_place_replaces_the_input_image(weights, pair, capsys):
    image_path, mask_path, image, known = pair
    argv = ["--image", str(image_path), "--mask", str(mask_path), "--out", str(image_path)]
    assert main([*argv, "--weights", str(weights["plain"]), "--in-place"]) == 0
    result = np.asarray(Image.open(image_path))
    assert np.array_equal(result[known], image[known]) and not np.array_equal(result, image)


def test_a_failed_comparison_leaves_no_main_output(weights, pair, tmp_path, capsys, monkeypatch):
    """Disk full while writing --compare: the command fails and writes nothing at all."""
    import errno

    from PIL import Image as PILImage

    image_path, mask_path, _, _ = pair
    out, cmp = tmp_path / "filled.png", tmp_path / "cmp.jpg"
    real_save = PILImage.Image.save

    def save(self, fp, format=None, **kwargs):
        if format == "JPEG":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, format=format, **kwargs)

    monkeypatch.setattr(PILImage.Image, "save", save)
    assert (
        main(
            [
                "--image",
                str(image_path),
                "--mask",
                str(mask_path),
                "--out",
                str(out),
                "--compare",
                str(cmp),
                "--weights",
                str(weights["plain"]),
            ]
        )
        == 2
    )
    assert f"could not write {cmp}: No space left on device" in capsys.readouterr().err
    assert not out.exists() and not cmp.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_folder_mode_skips_hidden_files_such_as_a_killed_writers_temporary_file(weights, tmp_path, capsys):
    images, masks, out = tmp_path / "images", tmp_path / "masks", tmp_path / "out"
    images.mkdir(), masks.mkdir()
    Image.fromarray(synthetic_photo(32, 40)).save(images / "a.png")
    Image.fromarray(synthetic_photo(32, 40)).save(images / ".a.png.k3x9_q.tmp.png")  # hidden, image suffix
    write_mask(masks / "a.png", _holes(32, 40, (4, 12, 4, 20)))
    write_mask(masks / ".a.png", _holes(32, 40, (4, 12, 4, 20)))
    assert (
        main(
            [
                "--image-dir",
                str(images),
                "--mask-dir",
                str(masks),
                "--out-dir",
                str(out),
                "--weights",
                str(weights["plain"]),
            ]
        )
        == 0
    )
    assert "inpainted 1 of 1" in capsys.readouterr().out


def test_smallest_writes_smaller_files_with_the_same_pixels(weights, pair, tmp_path):
    image_path, mask_path, _, _ = pair
    sizes, pixels = [], []
    for flag in ([], ["--smallest"]):
        out = tmp_path / f"out{len(flag)}.png"
        argv = [
            "--image",
            str(image_path),
            "--mask",
            str(mask_path),
            "--out",
            str(out),
            "--weights",
            str(weights["plain"]),
        ]
        assert main([*argv, *flag]) == 0
        sizes.append(out.stat().st_size)
        with Image.open(out) as img:
            pixels.append(np.asarray(img))
    assert sizes[1] < sizes[0] and np.array_equal(pixels[0], pixels[1])


def test_folder_mode_names_an_unreadable_image_as_such_not_as_a_missing_mask(weights, tmp_path, capsys):
    images, masks, out = tmp_path / "images", tmp_path / "masks", tmp_path / "out"
    images.mkdir(), masks.mkdir()
    (images / "junk.png").write_bytes(b"not an image at all")
    Image.fromarray(synthetic_photo(32, 40)).save(images / "a.png")
    write_mask(masks / "a.png", _holes(32, 40, (4, 12, 4, 20)))
    assert (
        main(
            [
                "--image-dir",
                str(images),
                "--mask-dir",
                str(masks),
                "--out-dir",
                str(out),
                "--weights",
                str(weights["plain"]),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "junk.png: cannot read image" in err and "no mask named junk" not in err


def test_a_mask_drawn_on_a_phone_photo_as_stored_names_the_exif_orientation(tmp_path, capsys):
    """Stored 56x40 with EXIF orientation 6 (shown 40x56): a 56x40 mask was drawn on the stored
    pixels. --resize-mask would stretch it; the message says what happened instead."""
    photo = Image.fromarray(synthetic_photo(40, 56))
    exif = photo.getexif()
    exif[0x0112] = 6
    photo.save(tmp_path / "phone.jpg", exif=exif.tobytes())
    write_mask(tmp_path / "m.png", _holes(40, 56, (10, 20, 10, 30)))
    argv = ["--image", str(tmp_path / "phone.jpg"), "--mask", str(tmp_path / "m.png"), "--out", str(tmp_path / "o.png")]
    assert main([*argv, "--method", "telea"]) == 2
    err = capsys.readouterr().err
    assert "EXIF orientation shows it as 40x56" in err and "--resize-mask" not in err


def test_the_mask_size_is_checked_before_the_image_is_decoded(pair, tmp_path, capsys, monkeypatch):
    image_path, _, _, _ = pair
    write_mask(tmp_path / "small.png", np.ones((10, 10), bool))
    monkeypatch.setattr("pconv.pipeline.decode_image", lambda *a, **k: pytest.fail("decoded before the mask check"))
    argv = ["--image", str(image_path), "--mask", str(tmp_path / "small.png"), "--out", str(tmp_path / "o.png")]
    assert main([*argv, "--method", "telea"]) == 2
    err = capsys.readouterr().err
    assert "is 10x10 but the image is 56x40; pass --resize-mask" in err


def test_a_palette_pngs_transparency_is_kept(tmp_path):
    """A palette PNG whose index 0 is transparent: the result keeps that transparency as alpha."""
    rgb = synthetic_photo(40, 56, noise=0)
    pal = Image.fromarray(rgb).quantize(16)
    indices = np.asarray(pal).copy()
    indices[:8] = 0  # the top rows use the transparent index
    img = Image.fromarray(indices, mode="P")
    img.putpalette(pal.getpalette())
    img.save(tmp_path / "p.png", transparency=0)
    write_mask(tmp_path / "m.png", _holes(40, 56, (20, 30, 10, 40)))
    argv = ["--image", str(tmp_path / "p.png"), "--mask", str(tmp_path / "m.png"), "--out", str(tmp_path / "o.png")]
    assert main([*argv, "--method", "telea"]) == 0
    with Image.open(tmp_path / "o.png") as out:
        assert out.mode == "RGBA"
        alpha = np.asarray(out.getchannel("A"))
    assert np.array_equal(alpha == 0, indices == 0)


def test_inputs_read_beforehand_are_used_and_their_errors_follow_the_outputs_check(pair, tmp_path, monkeypatch):
    """inpaint_file takes the pair as read_inputs read it (a command reads while PyTorch imports):
    not read again, re-read when the model's channels differ, its error raised only after the
    outputs are checked, as when it reads the files itself."""
    from concurrent.futures import Future

    import pconv.pipeline as pipeline
    from pconv.errors import ConfigError, InputError

    image_path, mask_path, image, known = pair
    telea = load_method("telea")
    early: Future = Future()
    early.set_result(pipeline.read_inputs(image_path, mask_path, 3))
    read = pipeline.read_inputs
    calls = []
    monkeypatch.setattr(pipeline, "read_inputs", lambda *a, **k: calls.append(a[2]) or read(*a, **k))
    out = pipeline.Outputs(tmp_path / "o.png")
    pipeline.inpaint_file(telea, image_path, mask_path, out, InpaintOptions(), inputs=early)
    assert calls == [] and np.array_equal(np.asarray(Image.open(out.out))[known], image[known])
    gray = PConvUNet(depth=3, base_width=4, in_channels=1).eval()
    pipeline.inpaint_file(gray, image_path, mask_path, out, InpaintOptions(), inputs=early)
    assert calls == [1] and np.asarray(Image.open(out.out)).ndim == 2
    other_mask = tmp_path / "other.png"
    write_mask(other_mask, known)
    pipeline.inpaint_file(telea, image_path, other_mask, out, InpaintOptions(), inputs=early)
    assert calls == [1, 3]  # read for another mask: read again
    failed: Future = Future()
    failed.set_exception(InputError("image photo.png could not be decoded"))
    with pytest.raises(ConfigError, match="is also the mask"):
        pipeline.inpaint_file(
            telea, image_path, mask_path, pipeline.Outputs(mask_path), InpaintOptions(), inputs=failed
        )
    with pytest.raises(InputError, match="could not be decoded"):
        pipeline.inpaint_file(telea, image_path, mask_path, out, InpaintOptions(), inputs=failed)


def test_one_image_is_read_beside_the_start_up_and_once(weights, pair, tmp_path, monkeypatch):
    import threading

    import pconv.pipeline as pipeline
    import pconv.predict

    image_path, mask_path, image, known = pair
    threads, read = [], pipeline.read_inputs

    def spy(*args, **kwargs):
        threads.append(threading.current_thread() is threading.main_thread())
        return read(*args, **kwargs)

    monkeypatch.setattr(pconv.predict, "read_inputs", spy)
    monkeypatch.setattr(pipeline, "read_inputs", spy)
    argv = ["--image", str(image_path), "--mask", str(mask_path), "--out", str(tmp_path / "o.png")]
    assert main([*argv, "--weights", str(weights["plain"])]) == 0
    assert threads == [False]  # read in a thread, not again by the pipeline
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png"))[known], image[known])


def test_inference_asks_the_network_for_its_holes_only(monkeypatch):
    calls = []
    original = PConvUNet.predict_holes

    def spy(self, *args, **kwargs):
        calls.append(args[0].shape)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PConvUNet, "predict_holes", spy)
    image = synthetic_photo(40, 56)
    known = _holes(40, 56, (10, 22, 12, 30))
    inpaint(_model(), image, known)
    assert len(calls) == 1


def test_a_start_up_error_does_not_wait_for_the_early_read(weights, pair, tmp_path, monkeypatch, capsys):
    import threading
    import time

    import pconv.predict

    image_path, mask_path, _, _ = pair
    release = threading.Event()

    def slow(*args, **kwargs):
        release.wait(10)  # a huge photo still decoding
        raise AssertionError("never used")

    monkeypatch.setattr(pconv.predict, "read_inputs", slow)
    argv = ["--image", str(image_path), "--mask", str(mask_path), "--out", str(tmp_path / "o.png")]
    start = time.perf_counter()
    try:
        code = main([*argv, "--weights", str(tmp_path / "missing.safetensors")])
    finally:
        release.set()
    assert code == 2 and time.perf_counter() - start < 5
    assert "missing.safetensors" in capsys.readouterr().err


def test_one_image_plans_the_crops_while_pytorch_imports(weights, pair, tmp_path, monkeypatch):
    """The early read also plans the model's crops from the release file's header; the pipeline uses
    that plan (no second planning) for a model of that geometry, and plans again for another."""
    import threading
    from dataclasses import replace

    import pconv.inpaint
    import pconv.pipeline as pipeline
    import pconv.predict

    image_path, mask_path, image, known = pair
    early_threads, late = [], []
    plan_early, plan_late = pconv.predict.make_plan, pconv.inpaint.make_plan

    def early(*args, **kwargs):
        early_threads.append(threading.current_thread() is threading.main_thread())
        return plan_early(*args, **kwargs)

    monkeypatch.setattr(pconv.predict, "make_plan", early)
    monkeypatch.setattr(pconv.inpaint, "make_plan", lambda *a, **k: late.append(1) or plan_late(*a, **k))
    argv = ["--image", str(image_path), "--mask", str(mask_path), "--out", str(tmp_path / "o.png")]
    assert main([*argv, "--weights", str(weights["plain"])]) == 0
    assert early_threads == [False] and late == []
    first = np.asarray(Image.open(tmp_path / "o.png"))
    assert main([*argv, "--weights", str(weights["plain"]), "--method", "model,telea"]) == 0
    assert late == [1, 1]  # two methods: planned by each, not early

    model = pconv.io.load_model(weights["plain"])
    inputs = pipeline.read_inputs(image_path, mask_path, 3)
    options = InpaintOptions()
    plan = pconv.predict.make_plan(known, options, model.hole_depth, model.multiple)
    out = pipeline.Outputs(tmp_path / "p.png")
    late.clear()
    pipeline.inpaint_file(
        model, image_path, mask_path, out, options, inputs=replace(inputs, plan=((1.0, 4), options, plan))
    )
    assert late == [1]  # made for another geometry: planned again
    assert np.array_equal(np.asarray(Image.open(out.out)), first)


@pytest.mark.parametrize("failure", ["geometry", "all holes"])
def test_an_early_plan_that_cannot_be_made_leaves_planning_to_the_pipeline(
    weights, pair, tmp_path, monkeypatch, capsys, failure
):
    import pconv.inpaint
    import pconv.predict

    image_path, mask_path, _, known = pair
    late = []
    plan_late = pconv.inpaint.make_plan
    monkeypatch.setattr(pconv.inpaint, "make_plan", lambda *a, **k: late.append(1) or plan_late(*a, **k))
    if failure == "geometry":  # e.g. a file the reading thread cannot stat: never a hang or a traceback
        monkeypatch.setattr(pconv.predict, "geometry_of", lambda path: (_ for _ in ()).throw(OSError("EIO")))
    else:
        monkeypatch.setattr(pconv.predict, "make_plan", lambda *a, **k: late.append("early"))
        write_mask(mask_path, np.zeros_like(known))
    argv = ["--image", str(image_path), "--mask", str(mask_path), "--out", str(tmp_path / "o.png")]
    code = main([*argv, "--weights", str(weights["plain"])])
    err = capsys.readouterr().err
    if failure == "geometry":
        assert code == 0 and late == [1] and "Traceback" not in err
    else:  # a mask of only holes is reported without planning it early (seconds at 24 MP)
        assert code == 2 and "covers the whole image" in err and late == []


def test_the_reading_thread_hands_over_the_pair_even_if_planning_breaks(weights, pair, tmp_path, monkeypatch):
    import threading

    import pconv.predict

    image_path, mask_path, _, _ = pair
    monkeypatch.setattr(pconv.predict, "_plan_early", lambda *a: (_ for _ in ()).throw(RuntimeError("planning broke")))
    monkeypatch.setattr(threading, "excepthook", lambda args: None)  # the thread's own report
    argv = ["--image", str(image_path), "--mask", str(mask_path), "--out", str(tmp_path / "o.png")]
    codes = []
    runner = threading.Thread(
        target=lambda: codes.append(main([*argv, "--weights", str(weights["plain"])])), daemon=True
    )
    runner.start()
    runner.join(30)
    assert codes == [0]  # not waiting forever for a pair never handed over
