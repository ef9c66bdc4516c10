"""Loss terms against hand computations; VGG16 loading without torchvision or a network."""

from __future__ import annotations

from urllib.error import URLError

import pytest
import torch
from safetensors.torch import save_file

from pconv import InpaintingLoss, LossWeights, VGG16Features
from pconv.losses import composite, gram_matrix, hole_valid_losses, style_loss, total_variation_loss
from pconv.vgg import load_vgg16_state_dict

# torchvision's VGG16 layout: features.N indices of the convolutions.
TV_CONVS = {
    0: (3, 64),
    2: (64, 64),
    5: (64, 128),
    7: (128, 128),
    10: (128, 256),
    12: (256, 256),
    14: (256, 256),
    17: (256, 512),
    19: (512, 512),
    21: (512, 512),
    24: (512, 512),
    26: (512, 512),
    28: (512, 512),
}


def fake_torchvision_vgg16(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i, (cin, cout) in TV_CONVS.items():
        sd[f"features.{i}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * 0.05
        sd[f"features.{i}.bias"] = torch.randn(cout, generator=g) * 0.01
    sd["classifier.0.weight"] = torch.zeros(4, 4)  # present in the real file, ignored
    return sd


@pytest.fixture(scope="module")
def vgg(tmp_path_factory):
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save(fake_torchvision_vgg16(), path)
    return VGG16Features(path)


def test_hole_and_valid_by_hand():
    out = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    gt = torch.tensor([[[[0.0, 2.0], [5.0, 1.0]]]])
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    hole, valid = hole_valid_losses(out, gt, mask)
    assert hole.item() == pytest.approx((0 + 2) / 4)
    assert valid.item() == pytest.approx((1 + 3) / 4)
    torch.testing.assert_close(composite(out, gt, mask), torch.tensor([[[[0.0, 2.0], [3.0, 1.0]]]]))


def test_gram_matrix_by_hand():
    f = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])  # N=1, C=2, H=1, W=2
    expected = torch.tensor([[[5.0, 11.0], [11.0, 25.0]]]) / (2 * 1 * 2)
    torch.testing.assert_close(gram_matrix(f), expected)
    assert gram_matrix(f.to(torch.bfloat16)).dtype == torch.float32


def test_style_loss_by_hand():
    f = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])
    g = torch.zeros_like(f)
    # mean over the 2x2 Gram entries of |G(f) - 0|
    assert style_loss([f], [g]).item() == pytest.approx((5 + 11 + 11 + 25) / (2 * 1 * 2) / 4)


def test_total_variation_by_hand_and_only_near_holes():
    comp = torch.zeros(1, 1, 5, 5)
    comp[0, 0, 2, 2] = 1.0
    mask = torch.ones(1, 1, 5, 5)
    mask[0, 0, 2, 2] = 0  # dilated region: the 3x3 block around (2, 2)
    # pairs inside the 3x3 block touching the centre: 2 horizontal + 2 vertical, each |1 - 0|
    assert total_variation_loss(comp, mask).item() == pytest.approx(4 / 25)
    far = comp.clone()
    far[0, 0, 0, 4] = 7.0  # outside the dilated hole: ignored
    assert total_variation_loss(far, mask).item() == pytest.approx(4 / 25)
    near = comp.clone()
    near[0, 0, 1, 1] = 1.0  # inside it: counted
    assert total_variation_loss(near, mask).item() != pytest.approx(4 / 25)


def test_total_loss_is_zero_for_perfect_output(vgg):
    torch.manual_seed(0)
    gt = torch.rand(2, 3, 32, 32)
    mask = (torch.rand(2, 1, 32, 32) > 0.3).float()
    loss = InpaintingLoss(vgg)
    terms = loss(gt.clone(), gt, mask)
    # every reconstruction term vanishes; TV is a smoothness prior on I_comp = gt
    assert all(terms[k].item() == 0 for k in ("valid", "hole", "perceptual", "style_out", "style_comp"))
    torch.testing.assert_close(terms["tv"], total_variation_loss(gt, mask))
    flat = torch.full((2, 3, 32, 32), 0.4)
    assert loss(flat.clone(), flat, mask)["total"].item() == 0
    assert all(loss(torch.rand(2, 3, 32, 32), gt, mask)[k] > 0 for k in ("perceptual", "style_out", "style_comp"))


def test_every_term_and_the_total_by_hand():
    """A 2x2 image with one hole pixel, through features that are the pixels themselves."""
    out = torch.full((1, 1, 2, 2), 0.5)
    gt = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    mask = torch.tensor([[[[1.0, 1.0], [1.0, 0.0]]]])  # comp = [[1, 0], [0, 0.5]]
    terms = InpaintingLoss(lambda x: [x])(out, gt, mask)
    expected = {
        "valid": 3 * 0.5 / 4,  # three known pixels, each 0.5 off, over 4 elements
        "hole": 0.5 / 4,
        "tv": (1 + 0.5 + 1 + 0.5) / 4,  # the dilated hole is the whole image: 2 + 2 pairs of comp
        "perceptual": 0.5 + 0.5 / 4,  # mean |out - gt| + mean |comp - gt|
        "style_out": abs(4 * 0.25 / 4 - 2 / 4),  # Gram = sum of squares / (C H W): 0.25 vs 0.5
        "style_comp": abs(1.25 / 4 - 2 / 4),  # 0.3125 vs 0.5
    }
    for name, value in expected.items():
        assert terms[name].item() == pytest.approx(value), name
    # the paper's weights: 1 valid + 6 hole + 0.05 perceptual + 120 style + 0.1 tv
    assert terms["total"].item() == pytest.approx(0.375 + 6 * 0.125 + 0.05 * 0.625 + 120 * 0.4375 + 0.1 * 0.75)
    assert terms["total"].item() == pytest.approx(53.73125)


def test_perceptual_term_against_direct_computation(vgg):
    torch.manual_seed(0)
    gt, out = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    mask = (torch.rand(1, 1, 16, 16) > 0.5).float()
    comp = composite(out, gt, mask)
    fo, fc, fg = vgg(out), vgg(comp), vgg(gt)
    expected = sum((a - b).abs().mean() + (c - b).abs().mean() for a, c, b in zip(fo, fc, fg))
    torch.testing.assert_close(InpaintingLoss(vgg)(out, gt, mask)["perceptual"], expected)


def test_no_gradient_reaches_vgg_but_reaches_output(vgg):
    out = torch.rand(1, 3, 16, 16, requires_grad=True)
    InpaintingLoss(vgg)(out, torch.rand(1, 3, 16, 16), torch.ones(1, 1, 16, 16))["total"].backward()
    assert all(p.grad is None and not p.requires_grad for p in vgg.parameters())
    assert out.grad is not None and out.grad.abs().sum() > 0


def test_loss_without_vgg_terms():
    loss = InpaintingLoss(None, LossWeights(perceptual=0, style=0))
    terms = loss(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), torch.ones(1, 1, 8, 8))
    assert terms["perceptual"] == 0 and terms["total"] > 0
    with pytest.raises(ValueError, match="need a VGG16Features"):
        InpaintingLoss(None)


def test_vgg_loads_torchvision_layout_pth_and_safetensors(tmp_path):
    sd = fake_torchvision_vgg16(seed=3)
    torch.save(sd, tmp_path / "v.pth")
    save_file({k: v for k, v in sd.items() if k.startswith("features")}, str(tmp_path / "v.safetensors"))
    for path in (tmp_path / "v.pth", tmp_path / "v.safetensors"):
        vgg = VGG16Features(path)
        torch.testing.assert_close(vgg.features[14].weight, sd["features.14.weight"])
        assert len(vgg.features) == 17  # up to pool3 only
    feats = vgg(torch.rand(2, 1, 32, 32))  # grayscale is repeated to RGB
    assert [f.shape[1:] for f in feats] == [(64, 16, 16), (128, 8, 8), (256, 4, 4)]


def test_vgg_normalises_inside(tmp_path):
    torch.save(fake_torchvision_vgg16(), tmp_path / "v.pth")
    vgg = VGG16Features(tmp_path / "v.pth", pools=1)
    x = torch.rand(1, 3, 8, 8)
    normed = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1
    )
    expected = vgg.features(normed)
    torch.testing.assert_close(vgg(x)[0], expected)


def test_vgg_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError):
        VGG16Features(tmp_path / "missing.pth")
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "partial.pth")
    with pytest.raises(KeyError, match="lack"):
        VGG16Features(tmp_path / "partial.pth")
    with pytest.warns(UserWarning, match="random weights"):
        VGG16Features(None)

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="--vgg-weights PATH"):
        load_vgg16_state_dict("imagenet")


def test_ssim_equals_scikit_images_metric():
    """The loss optimises exactly what the evaluation reports (skimage's defaults, channels averaged)."""
    import numpy as np
    from skimage.metrics import structural_similarity

    from pconv.losses import ssim

    torch.manual_seed(0)
    x = torch.rand(2, 3, 40, 50, dtype=torch.float64)
    y = (x + 0.3 * torch.rand_like(x)).clamp(0, 1)
    ref = np.mean(
        [
            structural_similarity(
                a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy(), data_range=1.0, channel_axis=-1
            )
            for a, b in zip(x, y)
        ]
    )
    assert ssim(x, y).item() == pytest.approx(ref, abs=1e-6)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)


def test_ssim_term_is_weighted_into_the_total_and_has_a_gradient():
    torch.manual_seed(1)
    gt = torch.rand(1, 3, 16, 16)
    out = torch.rand(1, 3, 16, 16, requires_grad=True)
    mask = torch.ones(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 0
    plain = InpaintingLoss(None, LossWeights(perceptual=0, style=0))(out, gt, mask)
    with_ssim = InpaintingLoss(None, LossWeights(perceptual=0, style=0, ssim=2.0))(out, gt, mask)
    assert plain["ssim"] == 0
    assert 0 < with_ssim["ssim"] < 1
    assert with_ssim["total"].item() == pytest.approx(plain["total"].item() + 2.0 * with_ssim["ssim"].item(), rel=1e-6)
    with_ssim["ssim"].backward()
    assert out.grad[..., 4:12, 4:12].abs().sum() > 0 and out.grad[..., 0, 0].abs().sum() == 0  # composite: holes only
