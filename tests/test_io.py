"""Release files: a model rebuilds from its file alone."""

from __future__ import annotations

import json

import pytest
import torch

from pconv import PConvUNet, load_model, save_model
from pconv.io import read_metadata, sha256_of


def test_round_trip_rebuilds_the_model(tmp_path):
    torch.manual_seed(0)
    model = PConvUNet(depth=3, base_width=8, in_channels=1, dropout=0.1).eval()
    digest = save_model(model, tmp_path / "m.safetensors", extra={"note": "test"})
    assert digest == sha256_of(tmp_path / "m.safetensors") and len(digest) == 64
    meta = read_metadata(tmp_path / "m.safetensors")
    assert json.loads(meta["config"])["in_channels"] == 1 and meta["note"] == "test"
    loaded = load_model(tmp_path / "m.safetensors")
    assert loaded.config == model.config and not loaded.training
    x, mask = torch.rand(1, 1, 24, 24), (torch.rand(1, 1, 24, 24) > 0.3).float()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, mask), model(x, mask))


def test_float16_storage_is_half_the_size(tmp_path):
    model = PConvUNet(depth=3, base_width=8)
    save_model(model, tmp_path / "f32.safetensors")
    save_model(model, tmp_path / "f16.safetensors", dtype=torch.float16)
    size32 = (tmp_path / "f32.safetensors").stat().st_size
    size16 = (tmp_path / "f16.safetensors").stat().st_size
    assert size16 < 0.6 * size32
    loaded = load_model(tmp_path / "f16.safetensors")
    assert next(loaded.parameters()).dtype == torch.float32


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "none.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_model(tmp_path / "junk.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a pconv release file"):
        load_model(tmp_path / "other.safetensors")


def test_written_files_get_the_usual_permissions_not_the_writers_owner_only_ones(tmp_path):
    import os
    import stat

    from pconv.files import atomic_write

    saved = os.umask(0o022)
    try:
        save_model(PConvUNet(depth=3, base_width=4), tmp_path / "m.safetensors")  # safetensors makes 0600 files
        assert stat.S_IMODE((tmp_path / "m.safetensors").stat().st_mode) == 0o644
        target = tmp_path / "kept.txt"
        target.write_text("old")
        target.chmod(0o640)
        atomic_write(target, lambda f: f.write(b"new"))  # mkstemp creates an owner-only file
        assert stat.S_IMODE(target.stat().st_mode) == 0o640  # a replaced file keeps its mode
    finally:
        os.umask(saved)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), (float("inf"), float("-inf"))])
def test_weights_with_nan_are_refused(tmp_path, bad):
    model = PConvUNet(depth=3, base_width=4)
    with torch.no_grad():
        model.decoder[0].conv.weight.view(-1)[: len(bad) if isinstance(bad, tuple) else 1] = torch.tensor(bad)
    save_model(model, tmp_path / "nan.safetensors")
    with pytest.raises(ValueError, match="non-finite weights .* diverged"):
        load_model(tmp_path / "nan.safetensors")


def test_huge_finite_weights_load(tmp_path):
    """Weights whose float32 sum overflows are still finite (the quick sum test must not refuse them)."""
    model = PConvUNet(depth=3, base_width=4)
    with torch.no_grad():
        model.decoder[0].conv.weight.view(-1)[:2] = 3e38
    save_model(model, tmp_path / "huge.safetensors")
    assert load_model(tmp_path / "huge.safetensors").decoder[0].conv.weight.view(-1)[1] == torch.tensor(3e38)


@pytest.mark.parametrize(
    "training, message",
    [
        ({"hole_depth": 1e-300}, "hole depth"),
        ({"hole_depth": 1e300}, "hole depth"),
        ({"hole_depth": -5}, "hole depth"),
        ({"hole_depth": int("9" * 400)}, "hole depth"),  # no float holds it
        ({"size": int("9" * 400)}, "crop size"),
    ],
)
def test_an_absurd_recorded_hole_depth_is_one_clear_line(tmp_path, training, message):
    save_model(PConvUNet(depth=3, base_width=4), tmp_path / "m.safetensors", extra={"training": json.dumps(training)})
    with pytest.raises(ValueError) as info:
        load_model(tmp_path / "m.safetensors")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_loading_draws_no_random_initial_weights_and_restores_initialisation(tmp_path):
    """The weights come from the file; the random draws they replace would only cost time."""
    torch.manual_seed(0)
    model = PConvUNet(depth=3, base_width=4)
    save_model(model, tmp_path / "m.safetensors")
    torch.manual_seed(1)
    before = torch.random.get_rng_state()
    loaded = load_model(tmp_path / "m.safetensors")
    assert torch.equal(torch.random.get_rng_state(), before)  # no random number drawn
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    fresh = torch.nn.Conv2d(3, 4, 3)  # initialisation works again afterwards
    assert fresh.weight.abs().sum() > 0 and fresh.weight.std() > 0


def test_a_loaded_model_keeps_its_weights_when_the_file_changes(tmp_path):
    """load_model copies the weights: overwriting the file in place (cp new old) leaves the model alone."""
    path = tmp_path / "m.safetensors"
    torch.manual_seed(0)
    save_model(PConvUNet(depth=3, base_width=4), path)
    model = load_model(path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    save_model(PConvUNet(depth=3, base_width=4), tmp_path / "other.safetensors")
    with open(path, "r+b") as f:  # rewrite the same file (same inode), as cp does
        f.write((tmp_path / "other.safetensors").read_bytes())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize(
    "kwargs", [{"arch": "pconv_unet", "depth": 7}, {"arch": "pconv_unet", "depth": 3}, {"arch": "unet3plus"}]
)
def test_geometry_read_without_pytorch_is_the_loaded_models(tmp_path, kwargs):
    """predict.py plans the crops from the file's header while PyTorch imports: the hole depth and
    multiple it reads there must be those of the model load_model builds."""
    import subprocess
    import sys

    from pconv import UNet3Plus

    kwargs = dict(kwargs)
    arch = kwargs.pop("arch")
    model = PConvUNet(**kwargs) if arch == "pconv_unet" else UNet3Plus(depth=3, base_width=4)
    path = tmp_path / "m.safetensors"
    save_model(model, path, extra={"training": json.dumps({"hole_depth": 77.5})})
    loaded = load_model(path)
    code = (
        "import sys\nfrom pconv.metadata import geometry_of\n"
        f"print(*geometry_of({str(path)!r}), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(loaded.hole_depth), str(loaded.multiple), "False"]


def test_geometry_of_a_file_that_is_not_a_release_is_a_checkpoint_error(tmp_path):
    from pconv.errors import CheckpointError
    from pconv.metadata import geometry_of

    (tmp_path / "x.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError):
        geometry_of(tmp_path / "x.safetensors")
