"""The push-pull fill: values against hand-worked cases, the properties of an average, batching,
odd sizes, NaN in holes, gradients; and the gated PConv U-Net that starts from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pconv import PConvUNet, PConvUNetConfig
from pconv.configs import FILL_SMOOTH, GATE_GAIN
from pconv.fill import push_pull
from pconv.training.surgery import grow_weights, start_at_fill, train_gate_only


def random_mask(n, h, w, p=0.4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, h, w, generator=g) > p).float()


def test_hand_worked_2x2():
    """One hole in a 2x2 image: level 1 is the mean of the three known pixels, upsampled into the hole."""
    image = torch.tensor([[[[0.2, 9.0], [0.4, 0.9]]]])
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    out = push_pull(image, mask, smooth=0)
    torch.testing.assert_close(out, torch.tensor([[[[0.2, 0.5], [0.4, 0.9]]]]))


def test_hand_worked_row_takes_the_nearest_level_and_smooths():
    """[0, 0, ?, 1]: level 1 holds [0, 1]; bilinear upsampling puts 0.25*0 + 0.75*1 in the hole;
    one smoothing pass then gives the mean of the 3x3 neighbourhood (replicated edges)."""
    image = torch.tensor([[[[0.0, 0.0, 7.0, 1.0]]]])
    mask = torch.tensor([[[[1.0, 1.0, 0.0, 1.0]]]])
    torch.testing.assert_close(push_pull(image, mask, smooth=0), torch.tensor([[[[0.0, 0.0, 0.75, 1.0]]]]))
    torch.testing.assert_close(
        push_pull(image, mask, smooth=1), torch.tensor([[[[0.0, 0.0, (0.0 + 0.75 + 1.0) / 3, 1.0]]]])
    )


@pytest.mark.parametrize("size", [(1, 1), (7, 3), (37, 53), (64, 64)])
def test_known_pixels_unchanged_and_holes_within_the_known_range(size):
    """Every step is an average of known values, so the fill stays inside their range."""
    torch.manual_seed(0)
    image = torch.rand(2, 3, *size)
    mask = random_mask(2, *size)
    mask[..., 0, 0] = 1  # at least one known pixel
    out = push_pull(image, mask)
    known = mask.bool().expand_as(image)
    assert torch.equal(out[known], image[known])
    for i in range(2):
        for c in range(3):
            values = image[i, c][mask[i, 0].bool()]
            assert out[i, c].min() >= values.min() - 1e-6 and out[i, c].max() <= values.max() + 1e-6


def test_constant_image_is_filled_exactly():
    image = torch.full((1, 3, 50, 70), 0.3)
    mask = random_mask(1, 50, 70, p=0.8)
    mask[..., 10:40, 20:60] = 0
    assert torch.allclose(push_pull(image, mask), image, atol=1e-6)


def test_smoothing_converges_to_the_harmonic_fill():
    """A linear ramp is harmonic: Jacobi smoothing from the pyramid fill converges to it."""
    ramp = torch.linspace(0, 1, 48).view(1, 1, 1, 48).expand(1, 1, 48, 48).clone()
    mask = torch.ones(1, 1, 48, 48)
    mask[..., 12:36, 12:36] = 0
    rough = (push_pull(ramp, mask, smooth=0) - ramp).abs().max()
    smooth = (push_pull(ramp, mask, smooth=2000) - ramp).abs().max()
    assert smooth < 2e-3 < rough


@pytest.mark.parametrize(
    "box",
    [(20, 30, 25, 40), (0, 12, 0, 9), (40, 48, 50, 64), (0, 48, 30, 31)],  # inside, corners, a column
)
def test_smoothing_confined_to_the_holes_equals_the_whole_image(box, monkeypatch):
    """Eagerly the smoothing passes run on the holes' box only; traced, on the whole image: the same
    values, holes at the borders and in two batch items included."""
    import pconv.fill

    torch.manual_seed(3)
    image = torch.rand(2, 3, 48, 64)
    mask = torch.ones(2, 1, 48, 64)
    y0, y1, x0, x1 = box
    mask[0, :, y0:y1, x0:x1] = 0
    mask[1, :, 30:34, 5:8] = 0
    eager = push_pull(image, mask, smooth=7)
    monkeypatch.setattr(pconv.fill, "tracing", lambda: True)
    torch.testing.assert_close(eager, push_pull(image, mask, smooth=7), rtol=0, atol=0)


def test_batch_items_are_independent_and_the_mask_broadcasts():
    torch.manual_seed(1)
    image = torch.rand(3, 2, 33, 21)
    mask = random_mask(1, 33, 21)
    batched = push_pull(image, mask)
    for i in range(3):
        torch.testing.assert_close(batched[i : i + 1], push_pull(image[i : i + 1], mask))


def test_hole_values_are_ignored_even_nan():
    torch.manual_seed(2)
    image = torch.rand(1, 3, 20, 20)
    mask = random_mask(1, 20, 20)
    poisoned = image.masked_fill(mask == 0, float("nan"))
    torch.testing.assert_close(push_pull(poisoned, mask), push_pull(image, mask))


def test_no_known_pixel_gives_zeros_and_deep_holes_take_the_image_mean():
    assert torch.equal(push_pull(torch.rand(1, 3, 8, 8), torch.zeros(1, 1, 8, 8)), torch.zeros(1, 3, 8, 8))
    image = torch.rand(1, 1, 64, 64)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 0, :] = 1  # only the top row is known; two levels cannot reach the bottom
    out = push_pull(image, mask, levels=2, smooth=0)
    assert out[0, 0, -1, -1] == pytest.approx(image[0, 0, 0].mean().item(), abs=1e-6)


def test_gradients_reach_the_known_pixels():
    image = torch.rand(1, 3, 16, 16, requires_grad=True)
    mask = random_mask(1, 16, 16)
    push_pull(image, mask)[..., mask[0, 0] == 0].sum().backward()
    assert image.grad[..., mask[0, 0] == 1].abs().sum() > 0
    assert torch.all(image.grad[..., mask[0, 0] == 0] == 0)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="expected image"):
        push_pull(torch.rand(3, 8, 8), torch.ones(1, 8, 8))
    with pytest.raises(ValueError, match="at least 0"):
        push_pull(torch.rand(1, 3, 8, 8), torch.ones(1, 1, 8, 8), smooth=-1)


# ----------------------------------------------------------------------------- the gated model


def residual(**kw) -> PConvUNet:
    """A small gated model (``base_fill="pushpull"``)."""
    torch.manual_seed(0)
    return PConvUNet(PConvUNetConfig(**{"depth": 4, "base_width": 8, "max_width": 32, "base_fill": "pushpull", **kw}))


@pytest.mark.parametrize("gate_head", [0, 4])
@pytest.mark.parametrize("size", [(16, 16), (37, 50)])
def test_untrained_gated_model_is_exactly_the_fill(gate_head, size):
    """The fill of the input padded to the network's multiple (padding unknown), cropped back:
    what an exported graph, whose input is padded outside it, computes too."""
    model = residual(gate_head=gate_head).eval()
    image, mask = torch.rand(2, 3, *size), random_mask(2, *size)
    pad = (0, -size[1] % model.multiple, 0, -size[0] % model.multiple)
    expected = push_pull(torch.nn.functional.pad(image, pad), torch.nn.functional.pad(mask, pad), smooth=FILL_SMOOTH)
    assert torch.equal(model(image, mask), expected[..., : size[0], : size[1]])
    if size[0] % model.multiple == 0 and size[1] % model.multiple == 0:
        assert torch.equal(model(image, mask), push_pull(image, mask))


def test_gated_model_learns_to_leave_the_fill():
    """Zero gate: the gate's channel gets a gradient at once; after a step the output leaves the fill."""
    model = residual().train()
    image, mask = torch.rand(2, 3, 32, 32), random_mask(2, 32, 32)
    loss = (model(image, mask) - image).abs().mean()
    loss.backward()
    last = model.decoder[-1].conv
    assert last.weight.grad[-1].abs().sum() > 0 and last.bias.grad[-1] != 0
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model.eval()
    assert not torch.allclose(model(image, mask), push_pull(image, mask))


def test_start_at_fill_turns_direct_weights_into_a_gated_start():
    direct = PConvUNet(PConvUNetConfig(depth=4, base_width=8, max_width=32)).eval()
    model = residual()
    model.load_state_dict(grow_weights(model, direct.state_dict()))
    with torch.no_grad():
        model.decoder[-1].conv.bias[-1] = 0.05
    image, mask = torch.rand(1, 3, 32, 32), random_mask(1, 32, 32)
    assert not torch.equal(model.eval()(image, mask), push_pull(image, mask))
    assert torch.equal(start_at_fill(model)(image, mask), push_pull(image, mask))
    with pytest.raises(ValueError, match="base fill"):
        start_at_fill(direct)


def test_gated_config_is_checked_and_saved(tmp_path):
    from pconv.io import load_model, save_model

    with pytest.raises(ValueError, match="base_fill"):
        PConvUNetConfig(base_fill="telea")
    with pytest.raises(ValueError, match="gate_head must be 0, or positive with a base fill"):
        PConvUNetConfig(gate_head=4)
    with pytest.raises(ValueError, match="gate_head"):
        PConvUNetConfig(base_fill="pushpull", gate_head=-1)
    model = residual(gate_head=4)
    with torch.no_grad():
        model.decoder[-1].conv.bias[-1] = 0.05
        model.gate_head[-1].bias.fill_(0.02)
    save_model(model, tmp_path / "m.safetensors")
    loaded = load_model(tmp_path / "m.safetensors")
    assert loaded.config == model.config
    image, mask = torch.rand(1, 3, 32, 32), random_mask(1, 32, 32)
    assert torch.equal(loaded(image, mask), model.eval()(image, mask))


def test_a_gated_model_starts_at_the_fill_with_the_direct_models_image_inside():
    """fill + g * (image - fill), g = GATE_GAIN x the gate channel: g = 0 gives the fill; a gate
    bias of 1 / GATE_GAIN (g = 1) gives the direct model's prediction; the gate gets a gradient."""
    torch.manual_seed(2)
    direct = PConvUNet(PConvUNetConfig(depth=4, base_width=8, max_width=32)).eval()
    gated = residual().eval()
    gated.load_state_dict(grow_weights(gated, direct.state_dict()))
    start_at_fill(gated)
    image, mask = torch.rand(1, 3, 32, 32), random_mask(1, 32, 32)
    assert torch.equal(gated(image, mask), push_pull(image, mask))
    out = gated(image, mask)
    out.sum().backward()
    gate = gated.decoder[-1].conv
    assert gate.bias.grad[-1] != 0 and gate.weight.grad[-1].abs().sum() > 0
    with torch.no_grad():
        gate.bias[-1] = 1 / GATE_GAIN
    assert torch.allclose(gated(image, mask), direct(image, mask), atol=1e-6)


OLD_GATED = {"base_fill": "pushpull", "fill_input": False, "fill_smooth": 20, "fill_gate": True, "gate_gain": 10.0}


@pytest.mark.parametrize(
    ("stored", "retired"),
    [
        ({"base_fill": "pushpull", "fill_input": True, "fill_gate": True, "gate_gain": 10.0}, "fill_input"),
        ({"base_fill": "pushpull", "fill_gate": False}, "ungated residual"),
        ({**OLD_GATED, "gate_gain": 1.0}, "gate_gain 1.0"),
        ({k: v for k, v in OLD_GATED.items() if k != "gate_gain"}, "gate_gain 1.0"),  # saved before the field
        ({"base_fill": "pushpull", "fill_input": False, "fill_smooth": 20}, "ungated residual"),  # before fill_gate
        ({**OLD_GATED, "fill_smooth": 5}, "fill_smooth 5"),
    ],
)
def test_files_of_retired_experiments_are_refused_by_name(tmp_path, stored, retired):
    """The one migration: a release file or an --init checkpoint of a combination no release used
    is a clear error naming it, never a model that silently computes something else."""
    from pconv.errors import CheckpointError
    from pconv.io import load_model
    from pconv.train import config_from_args

    path = _with_stored_config(tmp_path, residual(), {**stored, "depth": 4, "base_width": 8, "max_width": 32})
    with pytest.raises(CheckpointError, match=retired):
        load_model(path)
    with pytest.raises(CheckpointError, match=retired):
        config_from_args(["--train", str(tmp_path), "--out", str(tmp_path / "r"), "--init", str(path)])


def test_gated_files_of_the_old_format_load_and_init_unchanged(tmp_path):
    """The sixth round's format (fill_gate, fill_smooth, gate_gain, fill_input stored): the same
    model and output; a run started from it takes its architecture."""
    from pconv.io import load_model
    from pconv.train import config_from_args
    from pconv.training.setup import build_model

    model = residual(gate_head=4, max_width=512).eval()  # train.py has no --max-width
    with torch.no_grad():
        model.decoder[-1].conv.bias[-1] = 0.05
        model.gate_head[-1].bias.fill_(0.02)
    stored = {**model.config.to_dict(), **OLD_GATED}
    path = _with_stored_config(tmp_path, model, stored)
    loaded = load_model(path)
    assert loaded.config == model.config
    image, mask = torch.rand(1, 3, 32, 32), random_mask(1, 32, 32)
    assert torch.equal(loaded(image, mask), model(image, mask))
    cfg = config_from_args(["--train", str(tmp_path), "--out", str(tmp_path / "r"), "--init", str(path)])
    assert cfg.model_config() == model.config
    assert torch.equal(build_model(cfg, torch.device("cpu"), None).eval()(image, mask), model(image, mask))


def _with_stored_config(tmp_path, model: PConvUNet, stored: dict):
    """``model`` saved as a release file whose metadata stores ``stored`` as its configuration."""
    import json

    from safetensors.torch import load_file, save_file

    from pconv.io import read_metadata, save_model

    save_model(model, tmp_path / "new.safetensors")
    metadata = read_metadata(tmp_path / "new.safetensors")
    metadata["config"] = json.dumps(stored)
    save_file(load_file(tmp_path / "new.safetensors"), tmp_path / "old.safetensors", metadata=metadata)
    return tmp_path / "old.safetensors"


def test_gate_only_training_changes_the_gate_alone(tmp_path):
    """train.py --gate-only: after optimisation steps in train mode only the gate's channel of the
    last layer has moved; every other weight and BatchNorm statistic is the --init model's."""
    from pconv.io import save_model
    from pconv.train import config_from_args
    from pconv.training.setup import build_model

    torch.manual_seed(4)
    direct = PConvUNet(PConvUNetConfig(depth=4, base_width=8))
    save_model(direct, tmp_path / "direct.safetensors")
    args = ["--train", str(tmp_path), "--out", str(tmp_path / "r"), "--depth", "4", "--base-width", "8"]
    args += ["--base-fill", "pushpull", "--init", str(tmp_path / "direct.safetensors"), "--gate-only"]
    model = build_model(config_from_args(args), torch.device("cpu"), None)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = [p for p in model.parameters() if p.requires_grad]
    assert len(params) == 2  # the last layer's weight and bias
    optimizer = torch.optim.Adam(params, lr=1e-2)
    model.train()
    image, mask = torch.rand(2, 3, 32, 32), random_mask(2, 32, 32)
    for _ in range(3):
        optimizer.zero_grad()
        (model(image, mask) - image).abs().mean().backward()
        optimizer.step()
    after = model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved == {"decoder.3.conv.weight", "decoder.3.conv.bias"}, moved
    for name in moved:
        assert torch.equal(before[name][:-1], after[name][:-1]) and not torch.equal(before[name][-1], after[name][-1])
    with pytest.raises(ValueError, match="gated model"):
        train_gate_only(PConvUNet(PConvUNetConfig(depth=4, base_width=8)))


def test_gate_only_needs_a_gate_and_init(tmp_path, capsys):
    from pconv.train import main

    argv = ["--train", str(tmp_path), "--out", str(tmp_path / "r"), "--gate-only"]
    assert main(argv) == 2 and main([*argv, "--base-fill", "pushpull"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("--gate-only needs --base-fill and --init" in line for line in err)
    from pconv.io import save_model

    save_model(residual(), tmp_path / "gated.safetensors")
    assert main([*argv, "--init", str(tmp_path / "gated.safetensors"), "--weight-decay", "1e-4"]) == 2
    assert "--weight-decay would shrink them" in capsys.readouterr().err


def test_train_init_of_a_gated_model_from_a_direct_release(tmp_path):
    from pconv.io import save_model
    from pconv.train import config_from_args
    from pconv.training.setup import build_model

    direct = PConvUNet(PConvUNetConfig(depth=4, base_width=8))
    save_model(direct, tmp_path / "direct.safetensors")
    args = ["--train", str(tmp_path), "--out", str(tmp_path / "r"), "--depth", "4", "--base-width", "8"]
    args += ["--base-fill", "pushpull", "--init", str(tmp_path / "direct.safetensors")]
    gated = build_model(config_from_args(args), torch.device("cpu"), None)
    last, direct_last = gated.decoder[-1].conv, direct.decoder[-1].conv
    assert torch.equal(last.weight[:3], direct_last.weight) and not last.weight[3:].any()
    assert torch.equal(gated.encoder[0].conv.weight, direct.encoder[0].conv.weight)


def test_release_files_without_the_newer_options_still_load(tmp_path):
    """A file written before base_fill and gate_head existed (the releases before the gated one)
    loads as the direct model it is."""
    model = PConvUNet(PConvUNetConfig(depth=4, base_width=8)).eval()
    stored = {k: v for k, v in model.config.to_dict().items() if k not in ("base_fill", "gate_head")}
    from pconv.io import load_model

    loaded = load_model(_with_stored_config(tmp_path, model, stored))
    assert loaded.config == model.config
    image, mask = torch.rand(1, 3, 32, 32), random_mask(1, 32, 32)
    assert torch.equal(loaded(image, mask), model(image, mask))


def test_inpaint_with_an_untrained_residual_model_equals_the_fill_baseline():
    """Through the whole inference path (uint8 in and out, working scales, crops)."""
    from pconv.inpaint import inpaint
    from pconv.methods import FILLS

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    known = rng.random((64, 80)) > 0.3
    got = inpaint(residual().eval(), image, known, scale=1).image
    assert np.abs(got.astype(int) - FILLS["pushpull"](image, known).astype(int)).max() <= 1


def test_a_gate_head_starts_at_its_gated_init_and_trains_with_the_gate_alone(tmp_path):
    """--gate-head from a gated file without one: the same output at the start; with --gate-only
    the head and the gate's channel move, nothing else; the head then changes the output, and a
    saved file with the head loads with it."""
    from pconv.io import load_model, save_model
    from pconv.train import config_from_args
    from pconv.training.setup import build_model

    torch.manual_seed(5)
    gated = PConvUNet(PConvUNetConfig(depth=4, base_width=8, base_fill="pushpull"))
    with torch.no_grad():
        gated.decoder[-1].conv.bias[-1] = 0.05
    save_model(gated, tmp_path / "gated.safetensors")
    args = ["--train", str(tmp_path), "--out", str(tmp_path / "r"), "--depth", "4", "--base-width", "8"]
    args += ["--init", str(tmp_path / "gated.safetensors")]
    model = build_model(config_from_args([*args, "--gate-only", "--gate-head", "4"]), torch.device("cpu"), None)
    image, mask = torch.rand(2, 3, 32, 32), random_mask(2, 32, 32)
    assert torch.equal(model.eval()(image, mask), gated.eval()(image, mask))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        (model(image, mask) - image).abs().mean().backward()
        optimizer.step()
    moved = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    head = {f"gate_head.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}
    assert moved == head | {"decoder.3.conv.weight", "decoder.3.conv.bias"}, moved
    model.eval()
    with torch.no_grad():
        model.decoder[-1].conv.load_state_dict(gated.decoder[-1].conv.state_dict())
    assert not torch.allclose(model(image, mask), gated(image, mask))  # the head alone changes g
    save_model(model, tmp_path / "head.safetensors")
    loaded = load_model(tmp_path / "head.safetensors")
    assert loaded.config.gate_head == 4 and torch.equal(loaded(image, mask), model(image, mask))
    with pytest.raises(ValueError, match="gate_head"):
        PConvUNetConfig(gate_head=4)  # a head without a gate


def test_a_gate_head_without_a_gate_is_a_clear_error(tmp_path, capsys):
    from pconv.train import main

    argv = ["--train", str(tmp_path), "--out", str(tmp_path / "r"), "--base-fill", "pushpull"]
    assert main([*argv, "--base-fill", "none", "--gate-head", "8"]) == 2
    assert main([*argv, "--gate-head", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("--gate-head must be 0, or positive with a base fill" in line for line in err)


def test_gate_returns_g_at_the_input_size():
    """g = GATE_GAIN x (gate channel + head): with the channel's bias at 0.03 and its weights and
    the head at zero, g is 0.3 at every pixel, cropped like the output; models without a gate refuse."""
    torch.manual_seed(6)
    gated = PConvUNet(PConvUNetConfig(depth=4, base_width=8, base_fill="pushpull"))
    gated.eval()
    with torch.no_grad():
        gated.decoder[-1].conv.bias[-1] = 0.03
    image, mask = torch.rand(2, 3, 30, 36), random_mask(2, 30, 36)
    g = gated.gate(image, mask)
    assert g.shape == (2, 1, 30, 36) and torch.allclose(g, torch.full_like(g, 0.3))
    with pytest.raises(ValueError, match="gated model"):
        PConvUNet(PConvUNetConfig(depth=4, base_width=8)).gate(image, mask)
