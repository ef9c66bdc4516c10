"""pconv.registry: every registered name builds, trains, saves and exports; the pretrained name is
the released model; --weights NAME and torch.hub reach the same models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import pconv
from pconv import create_model, list_models, load_model, save_model
from pconv.errors import ConfigError
from pconv.io import DEFAULT_WEIGHTS, read_metadata
from pconv.models import architecture_of
from pconv.predict import main as predict_main
from pconv.registry import MODELS

REPO = Path(__file__).resolve().parents[1]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# every name at a size a test can afford (the architecture's other fields as registered)
SMALL = {"base_width": 4}


def _inputs(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, size, size, generator=g)
    mask = (torch.rand(2, 1, size, size, generator=g) > 0.3).float()
    return image, mask


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(MODELS))
def test_every_name_builds_runs_forward_and_backward_and_round_trips(name, device, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, **SMALL).to(device).train()
    image, mask = (t.to(device) for t in _inputs())
    outputs = model(image, mask, deep=True) if architecture_of(model).deep_supervision else [model(image, mask)]
    assert all(out.shape == image.shape and torch.isfinite(out).all() for out in outputs)
    sum(out.square().mean() for out in outputs).backward()  # as training runs it
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)
    save_model(model.cpu().eval(), tmp_path / "m.safetensors")
    loaded = load_model(tmp_path / "m.safetensors")
    assert type(loaded) is type(model) and loaded.config == model.config
    image, mask = _inputs()
    with torch.no_grad():
        assert torch.allclose(loaded(image, mask), model(image, mask), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_every_name_exports_to_onnx(name, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from pconv.onnx_model import OnnxModel, export_onnx

    torch.manual_seed(0)
    model = create_model(name, **SMALL).eval()
    export_onnx(model, tmp_path / "m.onnx")
    image, mask = _inputs(2**model.config.depth if hasattr(model.config, "depth") else 32)
    with torch.no_grad():
        assert (OnnxModel(tmp_path / "m.onnx")(image, mask) - model(image, mask)).abs().max() < 1e-4


def test_the_pretrained_name_is_the_released_model():
    assert list_models(pretrained=True) == ["pconv_unet_photos_512"]
    named, released = create_model("pconv_unet_photos_512", pretrained=True), load_model()
    assert named.config == released.config and named.hole_depth == released.hole_depth and not named.training
    for (k, a), (_, b) in zip(named.state_dict().items(), released.state_dict().items()):
        assert torch.equal(a, b), k
    # the registry's configuration is the shipped file's, so the untrained build is the same network
    shipped = json.loads(read_metadata(DEFAULT_WEIGHTS)["config"])
    assert create_model("pconv_unet_photos_512").config.to_dict() == shipped


def test_mistakes_are_clear():
    with pytest.raises(ConfigError, match="no model named 'lama'"):
        create_model("lama")
    with pytest.raises(ConfigError, match="has no trained weights"):
        create_model("pconv_unet_paper_512", pretrained=True)
    with pytest.raises(ConfigError, match="pass pretrained=False"):
        create_model("pconv_unet_photos_512", pretrained=True, depth=8)
    with pytest.raises(ConfigError, match="unet3plus"):
        create_model("unet3plus", depth=99)


def test_weights_name_in_a_tool_and_torch_hub_reach_the_release(tmp_path):
    from PIL import Image

    argv = ["--image", str(REPO / "examples" / "chelsea.jpg"), "--mask", str(REPO / "examples" / "chelsea_mask.png")]
    assert predict_main([*argv, "--out", str(tmp_path / "a.png"), "--weights", "pconv_unet_photos_512"]) == 0
    assert predict_main([*argv, "--out", str(tmp_path / "b.png")]) == 0
    with Image.open(tmp_path / "a.png") as a, Image.open(tmp_path / "b.png") as b:
        assert a.tobytes() == b.tobytes()
    hub = torch.hub.load(str(REPO), "unet3plus_mc_dropout", source="local", base_width=4)
    assert type(hub).__name__ == "UNet3Plus" and hub.config.dropout == 0.2
    assert pconv.create_model is create_model
