"""ONNX export: onnxruntime against PyTorch on a real photo, at sizes other than the exported one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pconv import PConvUNet, save_model
from pconv.inpaint import inpaint
from pconv.masks import generate, write_mask
from pconv.onnx_model import OnnxModel, export_onnx
from pconv.predict import main as predict_main

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    model = PConvUNet(depth=4, base_width=8).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    save_model(model, root / "tiny.safetensors")
    export_onnx(model, root / "tiny.onnx")
    return model, root


@pytest.mark.slow
def test_onnxruntime_matches_pytorch_on_a_photo_at_any_size(exported, test_photos):
    model, root = exported
    onnx_model = OnnxModel(root / "tiny.onnx")
    assert onnx_model.multiple == model.graph_multiple and onnx_model.config.depth == 4
    photo = np.asarray(Image.open(test_photos[0]).convert("RGB"))
    for h, w in ((96, 128), (75, 130), (200, 160)):  # not multiples of 16: OnnxModel pads
        x = torch.from_numpy(photo[:h, :w].copy()).permute(2, 0, 1)[None].float() / 255
        k = torch.from_numpy(generate(h, w, np.random.default_rng(h), "mixed", (0.1, 0.4)))[None, None].float()
        with torch.no_grad():
            ref = model(x.expand(2, -1, -1, -1), k)
        got = onnx_model(x.expand(2, -1, -1, -1), k)
        assert got.shape == ref.shape
        assert (got - ref).abs().max() < 1e-4


@pytest.mark.slow
def test_predict_runs_an_onnx_file(exported, test_photos, tmp_path):
    model, root = exported
    image = np.asarray(Image.open(test_photos[1]).convert("RGB"))[:120, :150].copy()
    Image.fromarray(image).save(tmp_path / "p.png")
    known = generate(120, 150, np.random.default_rng(0), "solid", (0.1, 0.3))
    write_mask(tmp_path / "m.png", known)
    out = tmp_path / "o.png"
    assert (
        predict_main(
            [
                "--image",
                str(tmp_path / "p.png"),
                "--mask",
                str(tmp_path / "m.png"),
                "--out",
                str(out),
                "--onnx",
                str(root / "tiny.onnx"),
            ]
        )
        == 0
    )
    expected = inpaint(model, image, known).image
    got = np.asarray(Image.open(out))
    assert np.abs(got.astype(int) - expected).max() <= 1 and np.array_equal(got[known], image[known])


@pytest.mark.slow
def test_a_gated_model_exports_with_its_fill(tmp_path, test_photos):
    """The push-pull fill under a gate with its head is part of the graph: onnxruntime gives the
    same prediction, also at sizes the runner pads. At depth 6 the graph takes multiples of 64,
    where PyTorch pads to 32 only: the runner's result is PyTorch's on the input padded to 64.
    (One model with every option: each export takes half a minute.)"""
    torch.manual_seed(0)
    model = PConvUNet(depth=6, base_width=8, max_width=32, base_fill="pushpull", gate_head=4).eval()
    with torch.no_grad():
        model.decoder[-1].conv.weight.normal_(0, 0.05)  # a prediction and a gate that are not zero
        model.gate_head[-1].weight.normal_(0, 0.05)
    export_onnx(model, tmp_path / "residual.onnx")
    onnx_model = OnnxModel(tmp_path / "residual.onnx")
    assert (onnx_model.multiple, model.multiple) == (64, 32)
    photo = np.asarray(Image.open(test_photos[0]).convert("RGB"))
    for h, w in ((128, 192), (75, 130)):
        x = torch.from_numpy(photo[:h, :w].copy()).permute(2, 0, 1)[None].float() / 255
        k = torch.from_numpy(generate(h, w, np.random.default_rng(h), "mixed", (0.1, 0.4)))[None, None].float()
        pad = (0, -w % 64, 0, -h % 64)
        with torch.no_grad():
            ref = model(torch.nn.functional.pad(x, pad), torch.nn.functional.pad(k, pad))[..., :h, :w]
        assert (onnx_model(x, k) - ref).abs().max() < 1e-4


@pytest.mark.slow
def test_the_export_never_writes_through_a_link_at_its_path(exported, tmp_path):
    model, _ = exported
    target, link = tmp_path / "elsewhere.onnx", tmp_path / "model.onnx"
    link.symlink_to(target)
    export_onnx(model, link)
    assert not target.exists() and link.is_file() and not link.is_symlink()
    assert OnnxModel(link).multiple == model.graph_multiple
