"""PConvUNet: shapes, the paper's size, equivalence with full-width masks, BN freezing."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import randomise_batchnorm

from pconv import PConvUNet, PConvUNetConfig


def small(**kw) -> PConvUNet:
    torch.manual_seed(0)
    return PConvUNet(PConvUNetConfig(**{"depth": 4, "base_width": 8, "max_width": 32, **kw}))


def random_mask(n, h, w, p=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, h, w, generator=g) > p).float()


@pytest.mark.parametrize("size", [(16, 16), (17, 23), (40, 9)])
@pytest.mark.parametrize("channels", [(3, None), (1, None), (5, 2)])
def test_output_shape_any_size_and_channels(size, channels):
    cin, cout = channels
    model = small(in_channels=cin, out_channels=cout).eval()
    x = torch.rand(2, cin, *size)
    out = model(x, random_mask(2, *size))
    assert out.shape == (2, cout or cin, *size)
    assert torch.isfinite(out).all()


def test_parameter_count_at_depth_8_is_the_papers():
    n = sum(p.numel() for p in PConvUNet().parameters())
    assert 32.8e6 < n < 32.9e6, n


def _full_width_reference(model: PConvUNet, image, mask):
    """The network written plainly: masks as wide as the features, concatenated in the decoder,
    no re-zeroing after BatchNorm (each partial convolution multiplies its input by its mask, which
    also drops what a smooth upsampling mode blurs into the holes; what it blurs out of them is 0)."""

    def run(block, h, m):
        block.conv.return_mask = True
        try:
            out, new_m = block.conv(h, m)
        finally:
            block.conv.return_mask = False
        if block.bn is not None:
            out = block.bn(out)
        if block.act is not None:
            out = block.act(out)
        return out, new_m[:, :1]

    h, m = image, mask
    skips = []
    for block in model.encoder:
        skips.append((h, m))
        h, m = run(block, h, m.expand(-1, h.shape[1], -1, -1))
    for j, block in enumerate(model.decoder):
        sh, sm = skips[-1 - j]
        size = sh.shape[-2:]  # odd sizes below the padding's levels: the upsampling is cropped
        up_m = m.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)[..., : size[0], : size[1]]
        if model.config.upsample_mode == "nearest":  # each pixel becomes the 2x2 block it covers
            up_h = (h * m).repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)[..., : size[0], : size[1]]
        else:
            up_h = F.interpolate(h * m, scale_factor=2, mode=model.config.upsample_mode)[..., : size[0], : size[1]]
        full_mask = torch.cat([up_m.expand(-1, up_h.shape[1], -1, -1), sm.expand(-1, sh.shape[1], -1, -1)], 1)
        h, m = run(block, torch.cat([up_h, sh], 1), full_mask)
    return h


@pytest.mark.parametrize("upsample_mode", ["nearest", "bilinear"])
def test_matches_full_width_mask_formulation(upsample_mode):
    model = small(upsample_mode=upsample_mode).eval()
    torch.manual_seed(1)
    randomise_batchnorm(model)
    x = torch.rand(2, 3, 64, 64)
    mask = random_mask(2, 64, 64, p=0.5)
    mask[0, :, 4:40, 4:40] = 0
    mask[1] = 0
    mask[1, :, :4, :4] = 1  # a hole so big that the bottleneck and the decoder's masks still hold holes
    with torch.no_grad():
        torch.testing.assert_close(model(x, mask), _full_width_reference(model, x, mask), rtol=1e-4, atol=1e-5)


def test_hole_values_are_ignored_and_gradients_flow():
    model = small()
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    mask = random_mask(2, 32, 32)
    out = model(x, mask)
    out.square().mean().backward()
    assert (x.grad * (1 - mask)).abs().max() == 0  # nothing flows into hole pixels
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    garbage = x.detach() + (1 - mask) * 100
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(garbage, mask), model(x.detach(), mask))


def test_large_hole_is_filled_at_the_bottleneck():
    model = small(depth=5).eval()
    x = torch.rand(1, 3, 64, 64)
    mask = torch.ones(1, 1, 64, 64)
    mask[..., 8:56, 8:56] = 0  # 48x48 hole: its centre is 24 px from any known pixel
    seen = {}
    model.encoder[-1].register_forward_hook(lambda mod, inp, out: seen.update(mask=out[1]))
    with torch.no_grad():
        out = model(x, mask)
    assert (seen["mask"] == 1).all()
    assert out[0, :, 32, 32].abs().sum() > 0


@pytest.mark.parametrize("depth", [4, 7])
def test_padding_is_unknown_and_cropped(depth):
    """A size that is not a multiple of 2**min(depth, 5) equals the same image padded by hand to
    it (16 at depth 4; 32 at depth 7, where the levels below the fifth see odd sizes), and the
    network runs on that padded size, not on 2**depth."""
    model = small(depth=depth).eval()
    assert model.multiple == 2 ** min(depth, 5) and model.graph_multiple == 2**depth
    x = torch.rand(1, 3, 20, 27)
    mask = random_mask(1, 20, 27)
    pad = (0, -27 % model.multiple, 0, -20 % model.multiple)
    sizes = []
    model.encoder[0].register_forward_hook(lambda mod, inp, out: sizes.append(tuple(inp[0].shape[-2:])))
    with torch.no_grad():
        torch.testing.assert_close(model(x, mask), model(F.pad(x, pad), F.pad(mask, pad))[..., :20, :27])
    assert sizes == [(20 + pad[3], 27 + pad[1])] * 2 == [(32, 32)] * 2  # 128 x 128 if padded to 2**7


@pytest.mark.parametrize("upsample_mode", ["nearest", "bilinear"])
def test_odd_deep_levels_match_the_full_width_formulation_and_train(upsample_mode):
    """At depth 7 a 96x64 input has levels of 3x2, 2x1 and 1x1 px: the decoder crops each 2x
    upsampling to its skip (the full-width reference crops the same way), and gradients flow."""
    model = small(depth=7, upsample_mode=upsample_mode).eval()
    x, mask = torch.rand(2, 3, 96, 64), random_mask(2, 96, 64, p=0.5)
    with torch.no_grad():
        torch.testing.assert_close(model(x, mask), _full_width_reference(model, x, mask), rtol=1e-4, atol=1e-5)
    model.train()
    model(x, mask).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_freeze_encoder_bn_keeps_encoder_statistics():
    model = small()
    model.freeze_encoder_bn()
    model.train()  # the freeze survives train()
    enc_before = copy.deepcopy([b.bn.state_dict() for b in model.encoder if b.bn is not None])
    dec_before = copy.deepcopy([b.bn.state_dict() for b in model.decoder if b.bn is not None])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.rand(2, 3, 32, 32)
    model(x, random_mask(2, 32, 32)).mean().backward()
    opt.step()
    enc_after = [b.bn.state_dict() for b in model.encoder if b.bn is not None]
    dec_after = [b.bn.state_dict() for b in model.decoder if b.bn is not None]
    for before, after in zip(enc_before, enc_after):
        torch.testing.assert_close(after["running_mean"], before["running_mean"])
        torch.testing.assert_close(after["running_var"], before["running_var"])
        assert not torch.equal(after["weight"], before["weight"])  # affine still learns
    assert any(not torch.equal(a["running_mean"], b["running_mean"]) for a, b in zip(dec_after, dec_before))
    model.freeze_encoder_bn(False)
    assert all(b.bn.training for b in model.encoder if b.bn is not None)


def test_dropout_only_when_training_or_sampling():
    model = small(dropout=0.3).eval()
    x, mask = torch.rand(1, 3, 32, 32), random_mask(1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x, mask), model(x, mask))
        assert not torch.allclose(model(x, mask, sample=True), model(x, mask, sample=True))


@pytest.mark.parametrize("kwargs", [{"depth": 1}, {"dropout": 1.0}, {"upsample_mode": "area"}, {"in_channels": 0}])
def test_bad_config_is_a_clear_error(kwargs):
    with pytest.raises(ValueError):
        PConvUNetConfig(**kwargs)


def test_bad_input_shapes_are_clear_errors():
    model = small().eval()
    with pytest.raises(ValueError, match="image of shape"):
        model(torch.rand(1, 1, 16, 16), torch.ones(1, 1, 16, 16))
    with pytest.raises(ValueError, match="mask of shape"):
        model(torch.rand(1, 3, 16, 16), torch.ones(1, 3, 16, 16))


def _gated_for_test(**kw) -> PConvUNet:
    """A small model whose gate is not zero (zero_fill_correction leaves an untrained one at its fill)."""
    model = small(**kw).eval()
    torch.manual_seed(3)
    randomise_batchnorm(model)
    with torch.no_grad():
        if model.gate_head is not None:
            model.gate_head[-1].weight.normal_(0, 0.3)
        model.decoder[-1].conv.weight.normal_(0, 0.3)
    return model


@pytest.mark.parametrize(
    "kw",
    [
        {"base_fill": "pushpull", "gate_head": 4, "depth": 7},  # the release's kind, odd deep levels
        {"base_fill": "pushpull"},
        {},
    ],
)
def test_predict_holes_equals_forward_at_the_holes_and_runs_the_decoder_on_less(kw):
    model = _gated_for_test(**kw)
    x = torch.rand(2, 3, 75, 101)
    mask = torch.ones(2, 1, 75, 101)
    mask[0, :, 20:29, 40:52] = 0
    mask[1, :, 60:75, 90:101] = 0  # a hole on the bottom and right borders
    mask[1, :, 33, 47] = 0  # one pixel
    seen = []
    model.decoder[-1].register_forward_hook(lambda mod, inp, out: seen.append(tuple(inp[0].shape[-2:])))
    with torch.no_grad():
        full, holes = model(x, mask), model.predict_holes(x, mask)
    hole = (mask == 0).expand_as(full)
    torch.testing.assert_close(holes[hole], full[hole], rtol=1e-5, atol=1e-5)
    # the union of the holes' boxes (rows 20-74, columns 40-100), the gate head's 2 pixels around
    # it and the last layer's 3x3 window (the box may reach into the padding, but not beyond it)
    margin = 3 if model.gate_head is not None else 1
    padded = (75 + -75 % model.multiple, 101 + -101 % model.multiple)
    assert seen[0] == padded and seen[1] == (75 - 20 + 2 * margin, 101 - 40 + 2 * margin)
    outside = torch.ones_like(hole)
    outside[..., 20:, 40:] = False
    torch.testing.assert_close(holes[outside], x[outside])  # beyond the box: the input


def test_predict_holes_without_holes_or_smooth_upsampling():
    model = _gated_for_test(base_fill="pushpull", gate_head=4)
    x = torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(model.predict_holes(x, torch.ones(1, 1, 40, 40)), x)
        smooth = _gated_for_test(upsample_mode="bilinear")
        mask = random_mask(1, 40, 40)
        torch.testing.assert_close(smooth.predict_holes(x, mask), smooth(x, mask))  # forward, whole


def test_forward_takes_no_box_arithmetic(monkeypatch):
    """The whole-input path computes no boxes: under torch.export's symbolic sizes, min/max and
    floor division over seven levels made the ONNX export several times slower."""
    import pconv.unet

    model = _gated_for_test(base_fill="pushpull", gate_head=4)
    x, mask = torch.rand(1, 3, 40, 40), random_mask(1, 40, 40)
    with torch.no_grad():
        expected = model.predict_holes(x, mask)
        monkeypatch.setattr(pconv.unet, "_decoder_reads", lambda *a: pytest.fail("boxes computed"))
        out = model(x, mask)
    hole = (mask == 0).expand_as(out)
    torch.testing.assert_close(out[hole], expected[hole], rtol=1e-4, atol=1e-4)


def test_predict_holes_runs_forward_where_a_box_would_be_wrong():
    """Training mode (BatchNorm would take batch statistics from the box and keep them), other
    output channels, hooks on the model: forward's values, whole."""
    x, mask = torch.rand(2, 3, 32, 32), torch.ones(2, 1, 32, 32)
    mask[..., 12:16, 12:16] = 0  # a box far smaller than the input
    model = _gated_for_test(base_fill="pushpull", gate_head=4).train()
    twin = copy.deepcopy(model)
    torch.testing.assert_close(model.predict_holes(x, mask), twin(x, mask))
    for a, b in zip(model.decoder, twin.decoder):
        if a.bn is not None:
            torch.testing.assert_close(a.bn.running_mean, b.bn.running_mean)
    other = small(in_channels=3, out_channels=2).eval()
    with torch.no_grad():
        assert other.predict_holes(x, mask).shape == (2, 2, 32, 32)
        seen = []
        model.eval().register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
        model.predict_holes(x, mask)
    assert seen == [(2, 3, 32, 32)]


def test_predict_holes_samples_monte_carlo_dropout():
    model = small(dropout=0.3).eval()
    x, mask = torch.rand(1, 3, 32, 32), random_mask(1, 32, 32)
    hole = (mask == 0).expand(1, 3, -1, -1)
    with torch.no_grad():
        fixed = model.predict_holes(x, mask)
        torch.testing.assert_close(fixed[hole], model(x, mask)[hole], rtol=1e-5, atol=1e-5)
        a, b = model.predict_holes(x, mask, sample=True), model.predict_holes(x, mask, sample=True)
    assert torch.isfinite(a).all() and not torch.equal(a[hole], b[hole])
