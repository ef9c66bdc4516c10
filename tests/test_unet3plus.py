"""UNet3+: shapes, deep supervision, mask handling, Monte Carlo dropout, training and release files."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import randomise_batchnorm

from pconv import UNet3Plus, UNet3PlusConfig, load_model, save_model
from pconv.inpaint import inpaint
from pconv.masks import band_mask
from pconv.train import main as train_main


@pytest.mark.parametrize("conv", ["partial", "plain"])
@pytest.mark.parametrize("depth", [2, 3, 5])
def test_shapes_deep_supervision_and_gradients(conv, depth):
    torch.manual_seed(0)
    model = UNet3Plus(in_channels=2, depth=depth, base_width=4, conv=conv).train()
    image = torch.rand(2, 2, 29, 35)
    mask = (torch.rand(2, 1, 29, 35) > 0.3).float()
    outputs = model(image, mask, deep=True)
    assert len(outputs) == depth and all(o.shape == (2, 2, 29, 35) for o in outputs)
    assert model(image, mask).shape == (2, 2, 29, 35)
    sum(o.square().mean() for o in outputs).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("conv", ["partial", "plain"])
def test_values_inside_the_holes_are_ignored(conv):
    torch.manual_seed(1)
    model = UNet3Plus(depth=3, base_width=4, conv=conv).eval()
    image = torch.rand(1, 3, 24, 24)
    mask = torch.ones(1, 1, 24, 24)
    mask[..., 6:14, 4:20] = 0
    other = torch.where(mask.bool(), image, torch.rand_like(image) * 100)
    assert torch.equal(model(image, mask), model(other, mask))


def _full_width_reference(model: UNet3Plus, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """UNet3+ written plainly: every partial convolution gets a mask as wide as its input (the
    branches' masks concatenated before fusing), instead of the model's one-channel coverage."""

    def run(block, h, m):
        block.conv.return_mask = True
        try:
            out, new_m = block.conv(h, m.expand(-1, h.shape[1], -1, -1))
        finally:
            block.conv.return_mask = False
        new_m = new_m[:, :1]
        return torch.relu(block.bn(out) * new_m), new_m

    h, m = image, mask
    enc = []
    for i, level in enumerate(model.encoder):
        if i > 0:
            h, m = F.max_pool2d(h, 2), F.max_pool2d(m, 2)
        h, m = run(level.second, *run(level.first, h, m))
        enc.append((h, m))
    depth = model.config.depth
    dec = {depth - 1: enc[-1]}
    for d in reversed(range(depth - 1)):
        parts, masks = [], []
        for s, branch in enumerate(model.branches[d]):
            sh, sm = enc[s] if s <= d else dec[s]
            if s < d:
                sh, sm = F.max_pool2d(sh, 2 ** (d - s)), F.max_pool2d(sm, 2 ** (d - s))
            elif s > d:
                sm = F.interpolate(sm, scale_factor=2 ** (s - d), mode="nearest")
                sh = F.interpolate(sh, scale_factor=2 ** (s - d), mode="bilinear", align_corners=False)
            out, om = run(branch, sh, sm)
            parts.append(out)
            masks.append(om.expand(-1, out.shape[1], -1, -1))
        fused = torch.cat(parts, 1)
        block = model.fuse[d]
        block.conv.return_mask = True
        try:
            out, fm = block.conv(fused, torch.cat(masks, 1))
        finally:
            block.conv.return_mask = False
        dec[d] = (torch.relu(block.bn(out) * fm[:, :1]), fm[:, :1])
    return model.heads[0](dec[0][0])


def test_matches_full_width_mask_formulation():
    torch.manual_seed(0)
    model = UNet3Plus(depth=4, base_width=4, filters=4).eval()
    randomise_batchnorm(model)
    image = torch.rand(2, 3, 64, 64)
    mask = (torch.rand(2, 1, 64, 64) > 0.5).float()
    mask[0, :, 4:40, 6:40] = 0
    mask[1] = 0
    mask[1, :, :4, :4] = 1  # a hole so big that the deep levels' upsampled masks still hold holes
    with torch.no_grad():
        ours, ref = model(image, mask), _full_width_reference(model, image, mask)
    assert ours.abs().mean() > 0.01
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_monte_carlo_samples_differ_only_when_sampling():
    torch.manual_seed(2)
    model = UNet3Plus(depth=3, base_width=4, dropout=0.3).eval()
    image, mask = torch.rand(1, 3, 16, 16), torch.ones(1, 1, 16, 16)
    assert torch.equal(model(image, mask), model(image, mask))
    assert not torch.equal(model(image, mask, sample=True), model(image, mask, sample=True))


def test_release_file_round_trip(tmp_path):
    model = UNet3Plus(depth=3, base_width=4, conv="plain", dropout=0.1).eval()
    save_model(model, tmp_path / "u.safetensors")
    loaded = load_model(tmp_path / "u.safetensors")
    assert isinstance(loaded, UNet3Plus) and loaded.config == model.config
    image, mask = torch.rand(1, 3, 16, 16), torch.ones(1, 1, 16, 16)
    assert torch.equal(loaded(image, mask), model(image, mask))


def test_config_checks():
    with pytest.raises(ValueError, match="conv"):
        UNet3PlusConfig(conv="fancy")
    with pytest.raises(ValueError, match="depth"):
        UNet3PlusConfig(depth=1)


@pytest.mark.slow
def test_uncertainty_is_higher_in_a_blind_zone_after_training():
    """Toy blind-zone task: fill the bottom rows of smooth fields; dropout spread must be
    larger where the model has to guess than where it sees the input."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = UNet3Plus(in_channels=1, depth=3, base_width=8, dropout=0.2).train()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    mask = torch.from_numpy(band_mask(32, 32, rows=8).astype(np.float32))[None, None]
    y, x = np.mgrid[0:32, 0:32] / 32

    def fields(n: int) -> torch.Tensor:
        a, b, c = (rng.uniform(-1, 1, (n, 1, 1)) for _ in range(3))
        f = 0.5 + 0.25 * (a * x + b * y + c * np.sin(3 * x + 2 * y))
        return torch.from_numpy(f.astype(np.float32))[:, None]

    for _ in range(40):
        image = fields(8)
        outputs = model(image, mask, deep=True)
        loss = sum((o - image).abs().mean() for o in outputs)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    image = fields(4)
    with torch.no_grad():
        samples = torch.stack([model(image, mask, sample=True) for _ in range(20)])  # (S, N, 1, H, W)
    std = samples.std(0).mean((0, 1))  # (H, W)
    known = mask[0, 0].bool()
    assert std[~known].mean() > 1.5 * std[known].mean()


def test_train_and_predict_with_unet3plus(tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(images / f"{i}.png")
    out = tmp_path / "run"
    assert (
        train_main(
            [
                "--train",
                str(images),
                "--out",
                str(out),
                "--arch",
                "unet3plus",
                "--depth",
                "3",
                "--base-width",
                "4",
                "--dropout",
                "0.2",
                "--size",
                "32",
                "--batch-size",
                "2",
                "--workers",
                "0",
                "--steps",
                "2",
                "--finetune-steps",
                "1",
                "--loss-perceptual",
                "0",
                "--loss-style",
                "0",
                "--log-every",
                "1",
                "--sample-every",
                "0",
                "--weight-decay",
                "1e-4",
                "--lr-milestones",
                "0.9",
                "0.95",
            ]
        )
        == 0
    )
    model = load_model(out / "model.safetensors")
    assert isinstance(model, UNet3Plus) and model.config.dropout == 0.2 and model.config.depth == 3
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(float(r["deep"]) > 0 for r in rows)
    image = rng.integers(0, 255, (24, 30, 3), dtype=np.uint8)
    known = band_mask(24, 30, rows=6)
    result = inpaint(model, image, known, samples=5, batch=5)
    assert result.std is not None and result.std[~known].mean() > 0
    assert np.array_equal(result.image[known], image[known])
