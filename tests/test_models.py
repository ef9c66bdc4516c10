"""Every registered architecture meets the model interface: forward and backward, a gradient for
every parameter, Monte Carlo sampling on request, a release-file round trip, ONNX export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pconv import load_model, save_model
from pconv.inpaint import inpaint
from pconv.models import ARCHITECTURES, InpaintingModel, architecture_of
from pconv.train import build_parser

# Small configurations with dropout, so sampling can be seen; one per registered architecture.
SMALL = {
    "pconv_unet": {"depth": 3, "base_width": 4, "dropout": 0.2},
    "unet3plus": {"depth": 3, "base_width": 4, "dropout": 0.2},
}


def test_every_registered_architecture_has_a_small_configuration_here():
    assert set(SMALL) == set(ARCHITECTURES)


def test_training_offers_exactly_the_registered_architectures():
    action = next(a for a in build_parser()._actions if a.dest == "arch")
    assert tuple(action.choices) == tuple(ARCHITECTURES)


@pytest.fixture(params=sorted(ARCHITECTURES))
def model(request):
    torch.manual_seed(0)
    return ARCHITECTURES[request.param].build(**SMALL[request.param])


def _inputs(n: int = 2, size: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    image = torch.rand(n, 3, size, size)
    mask = torch.ones(n, 1, size, size)
    mask[..., 5:14, 4:12] = 0
    return image, mask


def test_it_meets_the_interface(model):
    assert isinstance(model, InpaintingModel)
    assert model.in_channels == 3 and model.multiple > 1 and model.hole_depth is None and model.can_sample
    assert architecture_of(model) is ARCHITECTURES[next(k for k, a in ARCHITECTURES.items() if a.model is type(model))]


def test_forward_and_backward_reach_every_parameter(model):
    """As training runs it: with deep supervision, every auxiliary output is in the loss."""
    image, mask = _inputs()  # 20 px: not a multiple of any architecture's, so padding is exercised
    model.train()
    outputs = model(image, mask, deep=True) if architecture_of(model).deep_supervision else [model(image, mask)]
    assert all(out.shape == image.shape for out in outputs)
    sum(out.square().mean() for out in outputs).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_dropout_draws_only_when_sampling(model):
    image, mask = _inputs(1)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(image, mask), model(image, mask))
        assert not torch.equal(model(image, mask, sample=True), model(image, mask, sample=True))
        assert torch.equal(model(image, mask), model(image, mask))  # sampling switched nothing on


def test_release_file_round_trip(model, tmp_path):
    model.eval()
    save_model(model, tmp_path / "m.safetensors")
    loaded = load_model(tmp_path / "m.safetensors")
    assert type(loaded) is type(model) and loaded.config == model.config
    image, mask = _inputs(1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image, mask), model(image, mask))


def test_inpaint_runs_it_and_keeps_known_pixels(model):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
    known = np.ones((40, 52), bool)
    known[10:30, 12:40] = False
    result = inpaint(model, image, known, samples=3, batch=2)
    assert np.array_equal(result.image[known], image[known]) and result.std is not None


def test_inpaint_refuses_what_is_not_a_model():
    with pytest.raises(TypeError, match="InpaintingModel"):
        inpaint(torch.nn.Identity(), np.zeros((8, 8, 3), np.uint8), np.ones((8, 8), bool))


@pytest.mark.slow
def test_onnx_export_matches_pytorch(model, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from pconv.onnx_model import OnnxModel, export_onnx

    model.eval()
    export_onnx(model, tmp_path / "m.onnx")
    exported = OnnxModel(tmp_path / "m.onnx")
    assert isinstance(exported, InpaintingModel) and not exported.can_sample
    image, mask = _inputs(2, 28)
    with torch.no_grad():
        ref = model(image, mask)
    assert (exported(image, mask) - ref).abs().max() < 1e-4
