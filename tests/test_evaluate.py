"""pconv.evaluate and pconv.metrics: metric values, bins, baselines and the report files."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import image_size, synthetic_photo
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pconv import PConvUNet, save_model
from pconv.evaluate import bin_of, evaluate, generated_cases, main, summarise
from pconv.masks import RATIO_BINS, write_mask
from pconv.methods import FILLS
from pconv.metrics import detail_energy, edge_band, score


def test_metrics_agree_with_scikit_image_and_the_hole_formula():
    rng = np.random.default_rng(0)
    truth = rng.random((24, 20, 3))
    result = np.clip(truth + rng.normal(0, 0.05, truth.shape), 0, 1)
    known = rng.random((24, 20)) > 0.3
    s = score(result, truth, known)
    assert s["psnr"] == pytest.approx(peak_signal_noise_ratio(truth, result, data_range=1.0))
    assert s["ssim"] == pytest.approx(structural_similarity(truth, result, data_range=1.0, channel_axis=-1))
    assert s["l1"] == pytest.approx(100 * np.abs(result - truth).mean())
    mse = ((result - truth)[~known] ** 2).mean()
    assert s["hole_psnr"] == pytest.approx(10 * math.log10(1 / mse))


def test_a_perfect_result_scores_infinite_psnr_and_unit_ssim():
    truth = np.random.default_rng(1).random((16, 16, 3))
    s = score(truth.copy(), truth, np.eye(16, dtype=bool) == 0)
    assert s["psnr"] == math.inf and s["hole_psnr"] == math.inf and s["ssim"] == 1.0 and s["l1"] == 0.0
    assert math.isnan(score(truth, truth, np.ones((16, 16), bool))["hole_psnr"])  # no hole to score
    assert s["edge"] == 0.0 and math.isnan(score(truth, truth, np.ones((16, 16), bool))["edge"])


def test_edge_error_is_the_mean_error_of_the_two_pixel_band_inside_the_hole():
    """A 6x6 hole: its outer ring (20 px) is off by 10 levels, the next ring (12 px) by 20, the 2x2
    centre by 100; the band is the two rings, so the edge error is (20*10 + 12*20) / 32 levels."""
    known = np.ones((10, 10), bool)
    known[2:8, 2:8] = False
    truth = np.full((10, 10), 0.5)
    error = np.zeros((10, 10))
    error[2:8, 2:8] = 10
    error[3:7, 3:7] = 20
    error[4:6, 4:6] = 100
    s = score(truth + error / 255, truth, known)
    assert s["edge"] == pytest.approx((20 * 10 + 12 * 20) / 32)
    assert edge_band(known).sum() == 32


def test_detail_is_the_fills_fine_detail_against_the_photos():
    """1 for the photo itself; near 0 for a smooth fill; the photo's texture copied into the hole
    from elsewhere scores near 1; a flat photo's floor keeps a faint fill's score small."""
    rng = np.random.default_rng(0)
    truth = np.clip(0.5 + rng.normal(0, 0.1, (64, 64, 3)), 0, 1)
    known = np.ones((64, 64), bool)
    known[16:48, 16:48] = False
    assert score(truth, truth, known)["detail"] == pytest.approx(1.0)
    smooth = truth.copy()
    smooth[~known] = 0.5
    assert score(smooth, truth, known)["detail"] < 0.1
    copied = truth.copy()
    copied[16:48, 16:48] = np.clip(0.5 + rng.normal(0, 0.1, (32, 32, 3)), 0, 1)
    assert score(copied, truth, known)["detail"] == pytest.approx(1.0, abs=0.15)
    flat = np.full((64, 64, 3), 0.5)
    faint = flat + rng.normal(0, 0.5 / 255, flat.shape)  # half a grey level of noise
    assert score(faint, flat, known)["detail"] < 0.5  # against the floor, not against zero energy
    # the definition: mean square of x minus its Gaussian blur (sigma 1.5) in the hole, 0-255 units
    x = smooth.astype(np.float32) * 255
    residual = x - cv2.GaussianBlur(x, (0, 0), 1.5, borderType=cv2.BORDER_REFLECT)
    assert detail_energy(smooth, ~known) == pytest.approx(float(np.square(residual[~known]).mean()), rel=1e-5)


def test_the_image_border_is_not_a_hole_edge():
    known = np.ones((8, 8), bool)
    known[:, :5] = False  # a hole touching the left, top and bottom borders
    band = edge_band(known)
    assert band[:, 3:5].all() and not band[:, :3].any()


def test_perfect_method_and_baselines_through_evaluate():
    cases = generated_cases([("a", synthetic_photo(48, 48, 0)), ("b", synthetic_photo(48, 48, 1))], per_bin=2, seed=0)
    methods = {"oracle": lambda image, known: image.copy(), "telea": FILLS["telea"]}
    keep = {cases[3].name: {}}
    records = evaluate(cases, methods, progress=False, keep=keep)
    assert len(records) == 2 * 6 * 2
    kept = keep[cases[3].name]
    assert list(kept) == ["oracle", "telea"] and np.array_equal(kept["oracle"], cases[3].image)
    assert np.array_equal(kept["telea"][cases[3].known], cases[3].image[cases[3].known])  # composited
    summary = summarise(records)
    assert summary[("oracle", "all")]["psnr"] == math.inf and summary[("oracle", "10-20")]["ssim"] == 1.0
    assert summary[("telea", "01-10")]["psnr"] > summary[("telea", "50-60")]["psnr"]  # bigger holes are harder
    assert summary[("telea", "all")]["cases"] == 12


def test_generated_cases_fall_in_their_bins():
    cases = generated_cases([("a", synthetic_photo(64, 64, 0))], per_bin=3, seed=5)
    assert [c.bin for c in cases] == [b for b in RATIO_BINS for _ in range(3)]
    for case in cases:
        low, high = RATIO_BINS[case.bin]
        assert low < np.count_nonzero(~case.known) / case.known.size <= high
        assert bin_of(case.known) == case.bin
    assert bin_of(np.ones((10, 10), bool)) == "other"


def test_solid_suite_cases_fall_in_their_bins_and_differ_from_strokes():
    images = [("a", synthetic_photo(64, 64, 0))]
    solid = generated_cases(images, per_bin=2, seed=5, kind="solid")
    strokes = generated_cases(images, per_bin=2, seed=5)
    for s, k in zip(solid, strokes):
        low, high = RATIO_BINS[s.bin]
        assert low < np.count_nonzero(~s.known) / s.known.size <= high
        assert not np.array_equal(s.known, k.known)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("eval")
    images = root / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(synthetic_photo(40, 52, i)).save(images / f"p{i}.png")
    torch.manual_seed(0)
    save_model(PConvUNet(depth=3, base_width=4), root / "tiny.safetensors")
    return images, root / "tiny.safetensors"


def test_report_files_are_written(setup, tmp_path, capsys):
    images, weights = setup
    out = tmp_path / "report"
    assert (
        main(
            [
                "--weights",
                str(weights),
                "--images",
                str(images),
                "--size",
                "32",
                "--per-bin",
                "1",
                "--baselines",
                "telea,ns",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    for name in ("report.md", "results.csv", "cases.csv", "metrics.png", "examples.png"):
        assert (out / name).is_file(), name
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["method"] for r in rows} == {"tiny", "telea", "ns"}
    assert {r["bin"] for r in rows} == {*RATIO_BINS, "all"}
    assert {r["metric"] for r in rows} == {"l1", "psnr", "ssim", "hole_psnr", "edge", "detail", "seconds"}
    report = (out / "report.md").read_text()
    assert "| telea |" in report and "## SSIM" in report and "seconds per image" in report
    with open(out / "cases.csv") as f:
        assert len(list(csv.DictReader(f))) == 6 * 3
    assert image_size(out / "examples.png")[0] > 5 * 100  # holes, three methods, ground truth
    assert "report:" in capsys.readouterr().out


def test_mask_folder_with_bin_names(setup, tmp_path):
    images, weights = setup
    masks = tmp_path / "masks" / "30-40"
    masks.mkdir(parents=True)
    known = np.ones((32, 32), bool)
    known[4:24, 2:20] = False  # 35% holes
    write_mask(masks / "0000.png", known)
    out = tmp_path / "report"
    assert (
        main(
            [
                "--weights",
                str(weights),
                "--images",
                str(images),
                "--size",
                "32",
                "--masks",
                str(tmp_path / "masks"),
                "--baselines",
                "none",
                "--flip",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    with open(out / "cases.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["bin"] for r in rows} == {"30-40"}  # the mask is cycled over both images
    assert {r["method"] for r in rows} == {"tiny", "tiny + flip"}
    assert {r["psnr"] for r in rows if r["method"] == "tiny"} != {r["psnr"] for r in rows if r["method"] != "tiny"}


@pytest.mark.parametrize(
    "case, message",
    [
        ("no images", "no images"),
        ("baseline", "unknown baseline"),
        ("weights", "model file not found"),
        ("kind", "unknown mask kind"),
    ],
)
def test_clear_errors(setup, tmp_path, capsys, case, message):
    images, weights = setup
    if case == "no images":
        images = tmp_path / "empty"
        images.mkdir()
    args = [
        "--weights",
        str(tmp_path / "none.safetensors" if case == "weights" else weights),
        "--images",
        str(images),
        "--out",
        str(tmp_path / "r"),
        "--baselines",
        "telea,magic" if case == "baseline" else "telea",
    ]
    if case == "kind":
        args += ["--mask-kind", "spiral"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_images_from_several_folders(tmp_path):
    from pconv.evaluate import _load_images

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.fromarray(synthetic_photo(20, 30, 1)).save(tmp_path / name / f"{name}.png")
    images = _load_images([tmp_path / "a", tmp_path / "b"], 16)
    assert [n for n, _ in images] == ["a", "b"] and images[0][1].shape == (16, 16, 3)


def test_an_unwritable_report_folder_is_refused_before_the_evaluation(setup, tmp_path, capsys, monkeypatch):
    import pconv.evaluate as evaluate_module

    images, weights = setup
    (tmp_path / "file").write_text("not a folder")
    ran = []
    monkeypatch.setattr(evaluate_module, "evaluate", lambda *a, **k: ran.append(1))
    assert (
        main(
            [
                "--weights",
                str(weights),
                "--images",
                str(images),
                "--size",
                "32",
                "--per-bin",
                "1",
                "--baselines",
                "none",
                "--out",
                str(tmp_path / "file" / "report"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert f"cannot write to {tmp_path / 'file' / 'report'}" in err and len(err.splitlines()) == 1 and not ran


def test_pushpull_baseline_fills_holes_from_their_surroundings():
    image = np.full((32, 40, 3), 90, np.uint8)
    image[:, 20:] = 200
    known = np.ones((32, 40), bool)
    known[10:20, 5:12] = False  # inside the dark half
    out = FILLS["pushpull"](image, known)
    assert np.array_equal(out[known], image[known]) and np.abs(out[~known].astype(int) - 90).max() <= 12
