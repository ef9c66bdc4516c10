"""Reuse: partial convolutions put into any model, and the torch.hub entry points."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from pconv import PartialConv2d, PConvUNet
from pconv.convert import convert, holes

REPO = Path(__file__).resolve().parents[1]


class _Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


def _resnet() -> nn.Module:
    """A small ResNet-style network: a stem, two residual blocks, a 1x1 head."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), _Block(8), _Block(8), nn.Conv2d(8, 2, 1)).eval()


def test_converted_model_equals_the_original_away_from_the_borders_and_differs_at_them():
    x = torch.rand(2, 3, 32, 32)
    plain = _resnet()
    converted = convert(_resnet())
    assert sum(isinstance(m, PartialConv2d) for m in converted.modules()) == 6
    with torch.no_grad():
        a, b = plain(x), converted(x)
    # five 3x3 convolutions: the border effect reaches 5 pixels in
    torch.testing.assert_close(a[..., 5:-5, 5:-5], b[..., 5:-5, 5:-5])
    assert (a[..., 0, :] - b[..., 0, :]).abs().max() > 1e-3


def test_state_dict_round_trip_and_selective_conversion():
    plain = _resnet()
    converted = convert(_resnet(), include=lambda name, conv: name != "4")  # keep the 1x1 head plain
    assert converted.state_dict().keys() == plain.state_dict().keys()
    back = _resnet()
    back.load_state_dict(converted.state_dict())
    for key, value in plain.state_dict().items():
        assert torch.equal(back.state_dict()[key], value)
    assert type(converted[4]) is nn.Conv2d and isinstance(converted[0], PartialConv2d)


def test_converted_model_trains():
    model = convert(_resnet()).train()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    x, target = torch.rand(4, 3, 16, 16), torch.rand(4, 2, 16, 16)
    losses = []
    for _ in range(20):
        loss = nn.functional.mse_loss(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_mask_aware_conversion_ignores_what_is_in_the_holes():
    model = convert(_resnet(), mask_aware=True)
    x = torch.rand(1, 3, 32, 32)
    mask = torch.ones(1, 1, 32, 32)
    mask[..., 10:20, 12:22] = 0
    other = x.clone()
    other[..., 10:20, 12:22] = torch.rand(1, 3, 10, 10) * 100
    with torch.no_grad(), holes(model, mask):
        a, b = model(x), model(other)
    torch.testing.assert_close(a, b)
    with torch.no_grad():
        assert not torch.allclose(model(x), model(other))  # outside the block the holes count again
    with pytest.raises(ValueError, match="mask_aware=True"):
        with holes(convert(_resnet()), mask):
            pass


def test_torch_hub_entry_points_load_locally():
    released = torch.hub.load(str(REPO), "pconv_unet", source="local", pretrained=True)
    assert isinstance(released, PConvUNet) and not released.training and released.hole_depth > 0
    bare = torch.hub.load(str(REPO), "pconv_unet", source="local", pretrained=False, depth=3, base_width=4)
    assert bare.config.depth == 3
    unet3 = torch.hub.load(str(REPO), "unet3plus", source="local", in_channels=1, depth=3, base_width=4, dropout=0.2)
    assert unet3.config.in_channels == 1
    with pytest.raises(ValueError, match="pretrained=False"):
        torch.hub.load(str(REPO), "pconv_unet", source="local", depth=3)


def test_docstring_example_runs():
    import doctest

    import pconv.convert

    assert doctest.testmod(pconv.convert, raise_on_error=True).attempted == 5


def test_readme_reuse_block_runs(monkeypatch):
    """The README's copy-paste block, executed as a user would (from the repository root)."""
    text = (REPO / "README.md").read_text()
    start = text.index("## Reuse: torch.hub")
    block = text[text.index("```python", start) + len("```python") :]
    block = block[: block.index("```")]
    monkeypatch.chdir(REPO)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)
    assert scope["out"].shape == (1, 16, 64, 64) and scope["model"].hole_depth > 0
