"""The GPU paths, wherever a GPU is: the layer, the losses, every model and a training step with the
paper's full loss on HED features run on each available device (CUDA when PyTorch sees one, the
CPU always), in float32 and under bfloat16 autocast, and agree with a float64 CPU reference."""

from __future__ import annotations

import pytest
import torch

from pconv import InpaintingLoss, PartialConv2d, PConvUNet, UNet3Plus, VGG16Features
from pconv.fill import push_pull
from pconv.training.steps import train_step

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
AMP = [None, torch.bfloat16]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


def _mask(n, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = (torch.rand(n, 1, h, w, generator=g) > 0.35).float()
    m[..., h // 4 : h // 2, w // 4 : w // 2] = 0
    return m


@pytest.mark.parametrize("amp", AMP)
def test_layer_forward_and_backward_match_a_float64_cpu_reference(device, amp):
    torch.manual_seed(0)
    ref = PartialConv2d(3, 8, 3, padding=1, return_mask=True).double()
    layer = PartialConv2d(3, 8, 3, padding=1, return_mask=True).to(device)
    layer.load_state_dict(ref.state_dict())
    x, m = torch.rand(2, 3, 24, 20, dtype=torch.float64), _mask(2, 24, 20).double()
    xd = x.float().to(device).requires_grad_()
    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        out, new_mask = layer(xd, m.float().to(device))
    out.float().sum().backward()
    xr = x.clone().requires_grad_()
    out_ref, mask_ref = ref(xr, m)
    out_ref.sum().backward()
    tol = 3e-2 if amp else 1e-5
    torch.testing.assert_close(out.double().cpu(), out_ref, rtol=tol, atol=tol)
    torch.testing.assert_close(new_mask.double().cpu(), mask_ref)
    torch.testing.assert_close(xd.grad.double().cpu(), xr.grad, rtol=tol, atol=tol)


@pytest.mark.parametrize(
    "build",
    [
        lambda: PConvUNet(depth=4, base_width=8, max_width=32),
        lambda: PConvUNet(depth=4, base_width=8, max_width=32, base_fill="pushpull", gate_head=4),
        lambda: UNet3Plus(depth=3, base_width=8, dropout=0.1),
    ],
    ids=["pconv_unet", "pconv_unet_gated", "unet3plus"],
)
@pytest.mark.parametrize("amp", AMP)
def test_models_run_forward_and_backward(device, amp, build):
    torch.manual_seed(0)
    model = build().to(device).train()
    x, m = torch.rand(2, 3, 40, 36, device=device), _mask(2, 40, 36).to(device)
    deep = isinstance(model, UNet3Plus)  # its deep-supervision heads learn from their own outputs
    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        outs = model(x, m, deep=True) if deep else [model(x, m)]
    assert all(o.shape == x.shape and torch.isfinite(o).all() for o in outs)
    sum((o.float() - x).abs().mean() for o in outs).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_push_pull_agrees_across_devices(device):
    x, m = torch.rand(2, 3, 45, 61), _mask(2, 45, 61)
    torch.testing.assert_close(push_pull(x.to(device), m.to(device)).cpu(), push_pull(x, m), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("amp", [None, pytest.param(torch.bfloat16, marks=pytest.mark.slow)])
def test_a_training_step_with_the_papers_full_loss_on_hed_features(device, amp):
    """Every term of the paper's loss (valid, hole, perceptual, both style terms, TV) at its
    weight, through the training step the loop runs, with the real shipped VGG16 features."""
    torch.manual_seed(0)
    model = PConvUNet(depth=4, base_width=8, max_width=32).to(device)
    loss_fn = InpaintingLoss(VGG16Features("hed")).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    image, mask = torch.rand(2, 3, 48, 48, device=device), _mask(2, 48, 48).to(device)
    before = [p.detach().clone() for p in model.parameters()]
    terms = train_step(model, loss_fn, optimizer, scaler, image, mask, amp)
    for name in ("valid", "hole", "perceptual", "style_out", "style_comp", "tv", "total"):
        assert terms[name] > 0 and terms[name] < float("inf"), (name, terms[name])
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
