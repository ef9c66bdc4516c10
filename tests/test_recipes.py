"""Recipes: a tiny release rebuilt by one command, bit for bit; resumed where it stopped; the
shipped recipe checked against the shipped file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import synthetic_photo
from PIL import Image
from safetensors.torch import load_file

from pconv.io import load_model, read_metadata, save_model, sha256_of
from pconv.training.recipe import main
from pconv.training.recipes import load_recipe, replay

ROOT = Path(__file__).resolve().parents[1]

TINY = """
name = "tiny"
output = "tiny.safetensors"

[inputs]
train = ["photos/a", "photos/b"]
val = ["photos/val"]
start = { file = "start.safetensors", sha256 = "SHA" }

[[stages]]
name = "gate"
[stages.train]
SMALL
train = "{train}"
val = "{val}"
init = "{start}"
base_fill = "pushpull"
steps = 3
val_every = 2
seed = 8

[[stages]]
name = "gate2"
[stages.train]
SMALL
train = "{train}"
init = "{gate}"
steps = 2
seed = 9
mask_kind = "solid"

[[stages]]
name = "mean"
average = ["gate", "gate2"]

[[stages]]
name = "release"
cast = "mean"
dtype = "float16"
"""


SMALL = """gate_only = true
size = 32
batch_size = 2
workers = 0
loss_perceptual = 0.0
loss_style = 0.0
stage = "pretrain"
sample_every = 0"""


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    """A recipe over a few synthetic photos and a small direct model."""
    for folder, seeds in (("a", (0, 1)), ("b", (2, 3)), ("val", (10,))):
        for s in seeds:
            path = tmp_path / "photos" / folder / f"p{s}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(synthetic_photo(40, 48, s, noise=0)).save(path)
    torch.manual_seed(0)
    from pconv import PConvUNet

    sha = save_model(PConvUNet(depth=3, base_width=4), tmp_path / "start.safetensors")
    (tmp_path / "tiny.toml").write_text(TINY.replace("SHA", sha).replace("SMALL", SMALL), encoding="utf-8")
    return tmp_path


def _files(folder: Path) -> dict[Path, tuple[bytes, int]]:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_tiny_recipe_replays_to_the_same_weights_and_a_second_call_changes_nothing(tiny, capsys):
    args = ["--root", str(tiny)]
    assert main([str(tiny / "tiny.toml"), "--out", str(tiny / "one"), *args]) == 0
    assert main([str(tiny / "tiny.toml"), "--out", str(tiny / "two"), *args]) == 0
    one, two = load_file(tiny / "one" / "tiny.safetensors"), load_file(tiny / "two" / "tiny.safetensors")
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)
    assert all(v.dtype == torch.float16 for v in one.values() if v.is_floating_point())
    # the mean of the two runs, every floating tensor, then float16
    gate = load_file(tiny / "one" / "stages" / "gate" / "model.safetensors")
    gate2 = load_file(tiny / "one" / "stages" / "gate2" / "model.safetensors")
    key = "decoder.2.conv.bias"
    assert not torch.equal(gate[key], gate2[key])
    assert torch.equal(one[key], ((gate[key] + gate2[key]) / 2).half())
    metadata = read_metadata(tiny / "one" / "tiny.safetensors")
    assert json.loads(metadata["recipe"])["stages"][2] == {"name": "mean", "average": ["gate", "gate2"]}
    model = load_model(tiny / "one" / "tiny.safetensors")
    assert model.config.base_fill == "pushpull" and model.config.depth == 3
    assert "tiny.safetensors (sha256 " in capsys.readouterr().out

    before = _files(tiny / "one")
    assert main([str(tiny / "tiny.toml"), "--out", str(tiny / "one"), *args]) == 0
    assert _files(tiny / "one") == before


def test_an_interrupted_replay_continues_where_it_stopped(tiny):
    """The second run stopped after its checkpoint, the later stages never ran: the replay resumes
    the run (not a fresh start) and ends with the weights of an uninterrupted replay."""
    replay(load_recipe(tiny / "tiny.toml"), tiny / "whole", tiny)
    out = tiny / "cut"
    replay(load_recipe(tiny / "tiny.toml"), out, tiny)
    for name in ("model.safetensors", "best.pt"):
        (out / "stages" / "gate2" / name).unlink(missing_ok=True)
    for name in ("mean.safetensors", "release.safetensors"):
        (out / "stages" / name).unlink()
    (out / "tiny.safetensors").unlink()
    gate, run_id = _files(out / "stages" / "gate"), _run_id(out / "stages" / "gate2")
    replay(load_recipe(tiny / "tiny.toml"), out, tiny)
    assert _files(out / "stages" / "gate") == gate  # a finished stage is left alone
    assert _run_id(out / "stages" / "gate2") == run_id  # resumed, not started again
    a, b = load_file(tiny / "whole" / "tiny.safetensors"), load_file(out / "tiny.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_average_is_made_again_when_a_stage_it_averages_changed(tiny):
    """A finished average whose sources were trained again (here: replaced) is not kept stale."""
    recipe = load_recipe(tiny / "tiny.toml")
    replay(recipe, tiny / "r", tiny)
    mean = tiny / "r" / "stages" / "mean.safetensors"
    before = load_file(mean)
    gate2 = tiny / "r" / "stages" / "gate2" / "model.safetensors"
    tensors = load_file(gate2)
    tensors["decoder.2.conv.bias"] = tensors["decoder.2.conv.bias"] + 1
    from safetensors.torch import save_file

    save_file(tensors, gate2, metadata=read_metadata(gate2))
    replay(recipe, tiny / "r", tiny)
    after = load_file(mean)
    assert torch.allclose(after["decoder.2.conv.bias"], before["decoder.2.conv.bias"] + 0.5)


def _run_id(run: Path) -> str:
    from pconv.training.checkpoint import load_checkpoint

    return load_checkpoint(run / "last.pt")["state"].run_id


def test_recipe_mistakes_are_one_line_errors(tiny, capsys):
    good = (tiny / "tiny.toml").read_text(encoding="utf-8")
    cases = {
        "unknown reference": (good.replace('average = ["gate", "gate2"]', 'average = ["gate", "nope"]'), "'nope'"),
        "two kinds": (good.replace('cast = "mean"', 'cast = "mean"\naverage = ["gate", "gate2"]'), "exactly one"),
        "repeated name": (good.replace('name = "gate2"', 'name = "gate"'), "used twice"),
        "not toml": ("name = ", "not a readable recipe"),
        "out in a stage": (good.replace("seed = 9\n", 'seed = 9\nout = "x"\n'), "recipe's to set"),
        "bad dtype": (good.replace('dtype = "float16"', 'dtype = "int8"'), "dtype must be"),
        "path as output": (good.replace('output = "tiny.safetensors"', 'output = "../x.safetensors"'), "file name"),
        "unknown option": (good.replace("seed = 9\n", "seed = 9\ngate_gain = 10\n"), "'gate_gain' is not a train.py"),
        "a plain path": (good.replace('init = "{gate}"', 'init = "start.safetensors"'), "init must name an input"),
        "a VGG file": (good.replace("seed = 9\n", 'seed = 9\nvgg_weights = "/tmp/v.pt"\n'), "vgg_weights must be"),
        "dtype on training": (good.replace('name = "gate2"', 'name = "gate2"\ndtype = "float16"'), "dtype belongs"),
        "inputs not a table": (good.replace("[inputs]", "inputs = 3\n[x]"), "inputs is a table"),
        "a TOML date": (good.replace('name = "tiny"', 'name = "tiny"\nwhen = 2026-12-05'), "not JSON serializable"),
    }
    for name, (text, message) in cases.items():
        (tiny / "bad.toml").write_text(text, encoding="utf-8")
        assert main([str(tiny / "bad.toml"), "--out", str(tiny / "bad"), "--root", str(tiny)]) == 2, name
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, (name, err)
    # inputs outside the root
    for outside in ('train = ["../elsewhere"]', 'train = ["/etc"]'):
        (tiny / "bad.toml").write_text(good.replace('train = ["photos/a", "photos/b"]', outside), encoding="utf-8")
        assert main([str(tiny / "bad.toml"), "--out", str(tiny / "bad2"), "--root", str(tiny)]) == 2
        assert "is outside the root" in capsys.readouterr().err
    # a changed input file, another recipe in the same folder
    (tiny / "start.safetensors").write_bytes((tiny / "start.safetensors").read_bytes() + b" ")
    assert main([str(tiny / "tiny.toml"), "--out", str(tiny / "o"), "--root", str(tiny)]) == 2
    assert "sha256 differs" in capsys.readouterr().err
    assert not (tiny / "o").exists()  # refused before anything was written
    (tiny / "start.safetensors").write_bytes((tiny / "start.safetensors").read_bytes()[:-1])
    (tiny / "o").mkdir()
    (tiny / "o" / "recipe.json").write_text("{}", encoding="utf-8")
    assert main([str(tiny / "tiny.toml"), "--out", str(tiny / "o"), "--root", str(tiny)]) == 2
    assert "another recipe or root" in capsys.readouterr().err


def test_the_shipped_release_records_its_recipe_and_the_recipe_matches_it():
    """The recipe in the release file's metadata is recipes/pconv_unet_photos_512.toml; its last
    stage stores float16, its inputs exist in the repository (but the pinned fifth-round file,
    which git history holds), and its gate stages use the release's architecture flags."""
    recipe = load_recipe(ROOT / "recipes" / "pconv_unet_photos_512.toml")
    shipped = read_metadata(ROOT / "weights" / "pconv-unet-photos-512.safetensors")
    assert json.loads(shipped["recipe"]) == json.loads(recipe.to_json())
    assert recipe.output == "pconv-unet-photos-512.safetensors"
    assert recipe.stages[-1].kind == "cast" and recipe.stages[-1].dtype == "float16"
    assert all((ROOT / f).is_dir() for folders in recipe.folders.values() for f in folders)
    trained = [s for s in recipe.stages if s.kind == "train"]
    assert trained[-1].spec["gate_head"] == 16 and all(s.spec["gate_only"] for s in trained)
    assert np.all([s.spec["seed"] in (8, 9) for s in trained])
    assert sha256_of(ROOT / "weights" / "pconv-unet-photos-512.safetensors") == shipped_sha()


def shipped_sha() -> str:
    """The sha256 the model card gives for the shipped file."""
    text = (ROOT / "weights" / "README.md").read_text(encoding="utf-8")
    line = next(line for line in text.splitlines() if line.startswith("| sha256 |"))
    return line.split("`")[1]
