"""pconv.methods: every registered method through the library, predict.py and the web API; the
labelled sheet of several methods; missing extras; non-finite output never written."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import StandIn, synthetic_photo
from PIL import Image

from pconv import PConvUNet, save_model
from pconv.errors import ConfigError, MissingExtraError, NonFiniteError
from pconv.fill import push_pull
from pconv.inpaint import inpaint
from pconv.masks import write_mask
from pconv.methods import FILLS, METHODS, MODEL, ClassicalModel, Method, available, load_method, parse_methods
from pconv.predict import main
from pconv.sheets import labelled_sheet

HAVE_PATCHMATCH = importlib.util.find_spec("patchmatch") is not None


def _tiny(seed: int = 0) -> PConvUNet:
    torch.manual_seed(seed)
    return PConvUNet(depth=3, base_width=4).eval()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_model(_tiny(), path)
    return path


@pytest.fixture()
def photo() -> tuple[np.ndarray, np.ndarray]:
    image = synthetic_photo(48, 64)
    known = np.ones((48, 64), bool)
    known[12:30, 20:44] = False
    known[36:40, 4:60] = False
    return image, known


@pytest.fixture()
def files(tmp_path: Path, photo) -> tuple[Path, Path]:
    image, known = photo
    Image.fromarray(image).save(tmp_path / "photo.png")
    write_mask(tmp_path / "holes.png", known)
    return tmp_path / "photo.png", tmp_path / "holes.png"


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_keeps_known_pixels_and_fills_the_holes(name, photo, weights):
    if not METHODS[name].available():
        pytest.skip(f"{name} needs pconv[{METHODS[name].extra}]")
    image, known = photo
    model = load_method(name, weights if name == MODEL else None)
    out = inpaint(model, image, known).image
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert np.array_equal(out[known], image[known])
    # the holes hold a fill: not the white the mask drew, and close to the smooth photo around them
    assert not np.array_equal(out[~known], image[~known])
    if name != MODEL:  # an untrained network's fill can be anything; a classical one follows the photo
        error = np.abs(out[~known].astype(int) - image[~known].astype(int)).mean()
        assert error < 40, (name, error)


@pytest.mark.parametrize("name", [n for n in FILLS])
def test_a_classical_method_through_inpaint_is_its_fill_on_the_whole_image(name, photo):
    """At 48x64 inpaint runs one pass at full resolution: the result is the method's own fill."""
    if not METHODS[name].available():
        pytest.skip(f"{name} needs pconv[{METHODS[name].extra}]")
    image, known = photo
    expected = np.where(known[..., None], image, FILLS[name](image, known))
    assert np.array_equal(inpaint(name, image, known).image, expected)


def test_pushpull_through_inpaint_is_the_library_fill(photo):
    image, known = photo
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    m = torch.from_numpy(known)[None, None].float()
    fill = push_pull(x, m)[0].permute(1, 2, 0).numpy()
    expected = np.clip(np.rint(fill * 255), 0, 255).astype(np.uint8)
    assert np.array_equal(inpaint("pushpull", image, known).image, expected)


def test_a_classical_method_on_a_big_image_runs_in_crops_around_the_holes():
    """Beyond a megapixel the planner crops around the holes: a fill that counts the pixels it
    sees is called on crops far smaller than the image, and the known pixels stay the input's."""
    seen: list[tuple[int, int]] = []

    def telea(image: np.ndarray, known: np.ndarray) -> np.ndarray:
        seen.append(known.shape)
        return FILLS["telea"](image, known)

    image = synthetic_photo(1200, 1000, noise=0)
    known = np.ones((1200, 1000), bool)
    known[100:120, 100:400] = False
    known[900:940, 700:760] = False
    model = ClassicalModel(Method("counting", "", telea))
    out = inpaint(model, image, known).image
    assert np.array_equal(out[known], image[known])
    assert seen and all(h * w <= 512 * 512 for h, w in seen)


def test_parse_methods():
    assert parse_methods("pushpull") == ["pushpull"]
    assert parse_methods(" telea , ns") == ["telea", "ns"]
    assert parse_methods("all") == available() and MODEL in available()
    for bad, message in (("nope", "unknown method nope"), ("telea,telea", "named twice"), (" , ", "no method")):
        with pytest.raises(ConfigError, match=message):
            parse_methods(bad)


def test_a_method_without_its_extra_names_the_install_command(monkeypatch, photo):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "patchmatch" else real(name, *a))
    with pytest.raises(MissingExtraError, match=r"pip install 'pconv\[patchmatch\]'"):
        load_method("patchmatch")
    assert "patchmatch" not in available()
    image, known = photo
    with pytest.raises(MissingExtraError, match="patchmatch"):
        inpaint("patchmatch", image, known)


def test_weights_are_for_the_model_only():
    with pytest.raises(ConfigError, match="weights apply to the trained model"):
        load_method("telea", "model.safetensors")
    with pytest.raises(ConfigError, match="unknown method"):
        load_method("lama")


@pytest.mark.skipif(not HAVE_PATCHMATCH, reason="needs pconv[patchmatch]")
def test_patchmatch_copies_texture_where_the_smooth_fills_blur(photo):
    """Stripes one pixel wide: PatchMatch continues them; push-pull and Telea leave a smooth grey."""
    image = np.zeros((64, 64, 3), np.uint8)
    image[:, ::2] = 255
    known = np.ones((64, 64), bool)
    known[20:44, 20:44] = False

    def detail(out: np.ndarray) -> float:
        hole = out[20:44, 20:44].astype(float)
        return float(np.abs(np.diff(hole, axis=1)).mean())

    copied = detail(inpaint("patchmatch", image, known).image)
    assert copied > 150  # the stripes go on (neighbours 255 apart; the edges' correction clips a few)
    assert detail(inpaint("pushpull", image, known).image) < 50 and detail(inpaint("telea", image, known).image) < 100


@pytest.mark.skipif(not HAVE_PATCHMATCH, reason="needs pconv[patchmatch]")
def test_patchmatch_fills_meet_the_photo_without_a_step(monkeypatch):
    """The copy's edges are Poisson-corrected (pconv.seams): a copy 40 levels brighter than a flat
    photo comes back as the photo."""
    from patchmatch import patch_match

    image = np.full((32, 48, 3), (90, 140, 60), np.uint8)
    known = np.ones((32, 48), bool)
    known[8:24, 10:40] = False
    monkeypatch.setattr(patch_match, "inpaint", lambda rgb, holes, patch_size: rgb + np.uint8(40))
    assert np.array_equal(METHODS["patchmatch"].fill(image, known), image)


def test_predict_method_pushpull_writes_the_library_fill(files, photo, tmp_path):
    image, known = photo
    image_path, mask_path = files
    out = tmp_path / "filled.png"
    assert main(["--image", str(image_path), "--mask", str(mask_path), "--out", str(out), "--method", "pushpull"]) == 0
    assert np.array_equal(np.asarray(Image.open(out)), inpaint("pushpull", image, known).image)


def test_predict_several_methods_write_each_result_and_a_labelled_sheet(files, photo, weights, tmp_path, capsys):
    image, known = photo
    image_path, mask_path = files
    out, sheet = tmp_path / "filled.png", tmp_path / "sheet.png"
    argv = ["--image", str(image_path), "--mask", str(mask_path), "--out", str(out), "--compare", str(sheet)]
    assert main([*argv, "--method", "all", "--weights", str(weights), "--original", str(image_path)]) == 0
    names = available()
    for name in names:
        result = np.asarray(Image.open(tmp_path / f"filled.{name}.png"))
        expected = inpaint(load_method(name, weights if name == MODEL else None), image, known).image
        assert np.array_equal(result, expected), name
    assert not out.exists()
    printed = capsys.readouterr().out
    assert all(f"filled.{name}.png" in printed for name in names) and "comparison" in printed
    # holes | each method | original, four to a row, each panel labelled above it
    panels = [image, *(image for _ in names), image]
    expected_sheet = labelled_sheet(panels, ["holes", *names, "original"])
    got = np.asarray(Image.open(sheet))
    assert got.shape == expected_sheet.shape
    rows = -(-len(panels) // 4)
    assert got.shape[0] > rows * image.shape[0]  # label bars above the rows
    # the original is the last panel, unchanged (the sheet is not scaled at this size)
    per_row = -(-len(panels) // rows)
    col, row = (len(panels) - 1) % per_row, (len(panels) - 1) // per_row
    bar = (got.shape[0] - rows * image.shape[0]) // rows
    y0, x0 = row * (bar + image.shape[0]) + bar, col * (image.shape[1] + 8)
    assert np.array_equal(got[y0 : y0 + image.shape[0], x0 : x0 + image.shape[1]], image)
    # the label bar holds text (dark pixels) over each panel
    assert (got[:bar, : image.shape[1]] < 128).any() and (
        got[:bar, image.shape[1] + 8 : 2 * image.shape[1]] < 128
    ).any()


def test_method_all_names_what_it_leaves_out(files, tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "patchmatch" else real(name, *a))
    image_path, mask_path = files
    argv = ["--image", str(image_path), "--mask", str(mask_path), "--out", str(tmp_path / "o.png"), "--method", "all"]
    assert main([*argv, "--weights", "pconv_unet_photos_512"]) == 0
    err = capsys.readouterr().err
    assert "not installed: patchmatch (pip install 'pconv[patchmatch]')" in err
    assert not (tmp_path / "o.patchmatch.png").exists() and (tmp_path / "o.telea.png").exists()


def test_predict_folder_mode_with_several_methods_writes_a_folder_each(files, tmp_path):
    image_path, mask_path = files
    images, masks, outs = tmp_path / "images", tmp_path / "masks", tmp_path / "out"
    images.mkdir(), masks.mkdir()
    image_path.rename(images / "a.png"), mask_path.rename(masks / "a.png")
    argv = ["--image-dir", str(images), "--mask-dir", str(masks), "--out-dir", str(outs), "--method", "telea,ns"]
    assert main(argv) == 0
    assert (outs / "telea" / "a.png").is_file() and (outs / "ns" / "a.png").is_file()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--method", "lama"], "unknown method lama"),
        (["--method", "telea", "--weights", "w.safetensors"], "add model to --method"),
        (["--method", "telea", "--samples", "4"], "apply to --method model alone"),
        (["--method", "telea,ns", "--original", "x.png"], "give --compare too"),
    ],
)
def test_predict_method_mistakes_are_one_line(files, tmp_path, capsys, extra, message):
    image_path, mask_path = files
    argv = ["--image", str(image_path), "--mask", str(mask_path), "--out", str(tmp_path / "o.png"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.png").exists()


def test_predict_patchmatch_without_its_extra_is_one_line(files, tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "patchmatch" else real(name, *a))
    image_path, mask_path = files
    out = tmp_path / "o.png"
    argv = ["--image", str(image_path), "--mask", str(mask_path), "--out", str(out), "--method", "patchmatch"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pip install 'pconv[patchmatch]'" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


class _Broken(StandIn):
    """A model whose weights give NaN (as BatchNorm with negative variances does) or infinity."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def predict(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = image.clone()
        out[..., 0, 0] = self.value
        return out


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_output_is_an_error_and_nothing_is_written(value, photo, files, tmp_path, monkeypatch, capsys):
    image, known = photo
    with pytest.raises(NonFiniteError, match="weights are broken"):
        inpaint(_Broken(value), image, known)
    image_path, mask_path = files
    monkeypatch.setattr("pconv.predict.load", lambda *a, **k: _Broken(value))
    out = tmp_path / "o.png"
    assert main(["--image", str(image_path), "--mask", str(mask_path), "--out", str(out)]) == 2
    assert "NaN or infinite" in capsys.readouterr().err and not out.exists()


def test_labelled_sheet_rows_and_scaling():
    panels = [np.full((10, 20, 3), v, np.uint8) for v in (0, 50, 100, 150, 200)]
    sheet = labelled_sheet(panels, list("abcde"))
    assert sheet.shape[1] == 3 * 20 + 2 * 8  # five panels: two rows of three, the last padded white
    assert sheet.shape[0] == 2 * (10 + 20)  # each row under a 20-px label bar
    wide = labelled_sheet([np.zeros((100, 2000, 3), np.uint8)] * 2, ["a", "b"])
    assert wide.shape[1] == 3072
    with pytest.raises(ValueError, match="one label per panel"):
        labelled_sheet(panels, ["a"])


def test_the_page_has_a_method_menu():
    from importlib import resources

    page = resources.files("pconv").joinpath("static/index.html").read_text(encoding="utf-8")
    assert 'id="method"' in page and 'form.append("method"' in page and "/api/health" in page
