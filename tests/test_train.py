"""train.py: outputs, exact resume, bad data, distributed training on two CPU processes."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import image_size, synthetic_photo
from PIL import Image
from safetensors.torch import load_file

import pconv.training.stage as stage
import pconv.training.steps as steps
from pconv import PConvUNet, load_model, save_model
from pconv.data import EpochSampler, InpaintingDataset
from pconv.images import load_rgb
from pconv.train import config_from_args, main
from pconv.training import lr_at
from pconv.training import train as run_training

ROOT = Path(__file__).resolve().parents[1]


def _save(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("data")
    for i in range(5):
        _save(root / "train" / ("a" if i < 3 else "b") / f"img{i}.png", synthetic_photo(40, 48, i, noise=0))
    (root / "train" / "b" / "broken.jpg").write_bytes(b"this is not a jpeg")
    for i in range(2):
        _save(root / "val" / f"v{i}.png", synthetic_photo(40, 48, 10 + i, noise=0))
    return root / "train", root / "val"


def _args(train: Path, val: Path | None, out: Path, *extra: str) -> list[str]:
    args = [
        "--train",
        str(train),
        "--out",
        str(out),
        "--size",
        "32",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--base-width",
        "4",
        "--loss-perceptual",
        "0",
        "--loss-style",
        "0",
        "--log-every",
        "1",
        *extra,
    ]
    return args + (["--val", str(val)] if val is not None else [])


def test_end_to_end_two_stages_writes_every_output(folders, tmp_path, capsys):
    train, val = folders
    out = tmp_path / "run"
    rc = main(
        _args(train, val, out, "--steps", "3", "--finetune-steps", "2", "--val-every", "2", "--sample-every", "2")
    )
    assert rc == 0
    config = json.loads((out / "config.json").read_text())
    assert [s["name"] for s in config["stages"]] == ["pretrain", "finetune"]
    assert config["model"]["depth"] == 4 and config["train_images"] == 6
    for name in ("last.pt", "best.pt", "model.safetensors"):
        assert (out / name).is_file()
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["state"]["stage_index"] == 2
    assert torch.load(out / "best.pt", weights_only=True)["optimizer"] is None  # weights only: a third of the size
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]
    assert [r["stage"] for r in rows] == ["pretrain"] * 3 + ["finetune"] * 2
    assert all(np.isfinite(float(r["total"])) for r in rows)
    with open(out / "val.csv") as f:
        val_rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in val_rows] == [2, 3, 5] and float(val_rows[0]["ssim"]) > 0
    grids = sorted((out / "samples").glob("*.png"))
    assert [g.name for g in grids] == ["step_0000002.png", "step_0000005.png"]
    assert image_size(grids[0]) == (4 * 32, 2 * 32)  # 4 columns, one row per validation image

    model = load_model(out / "model.safetensors")
    assert isinstance(model, PConvUNet) and model.config.base_width == 4
    # the encoder BN of the released (stage-2) model kept running statistics
    assert not torch.equal(model.encoder[1].bn.running_var, torch.ones(8))
    captured = capsys.readouterr()
    assert captured.err.count("skipped unreadable image") == 1 and "broken.jpg" in captured.err
    assert "1 unreadable image(s) skipped" in captured.out and "model.safetensors" in captured.out


def test_summary_counts_skipped_files(folders, tmp_path):
    train, _ = folders
    summary = run_training(
        config_from_args(
            _args(train, None, tmp_path / "r", "--stage", "pretrain", "--steps", "4", "--sample-every", "0")
        )
    )
    assert summary.skipped == 1 and summary.best_psnr is None
    assert (tmp_path / "r" / "model.safetensors").is_file() and not (tmp_path / "r" / "best.pt").exists()


def test_a_residual_release_fills_holes_a_quarter_of_its_size_deep_at_full_resolution(folders, tmp_path, monkeypatch):
    """Its network only corrects the fill: the recorded depth is the context a crop holds, at least."""
    import pconv.training.release as release

    assert release.release_hole_depth(88.24, 512, "pushpull") == 128.0
    assert release.release_hole_depth(150.0, 512, "pushpull") == 150.0
    assert release.release_hole_depth(88.24, 512, "none") == 88.2
    monkeypatch.setattr(release, "training_hole_depth", lambda masks: 3.0)  # thin masks
    train, _ = folders
    out = tmp_path / "r"
    flags = "--stage pretrain --steps 1 --sample-every 0 --base-fill pushpull".split()
    run_training(config_from_args(_args(train, None, out, *flags)))
    model = load_model(out / "model.safetensors")
    assert model.config.base_fill == "pushpull" and model.hole_depth == 8.0  # a quarter of 32 px, not the masks' 3


def _same_weights(a_path: Path, b_path: Path) -> None:
    a, b = load_file(a_path), load_file(b_path)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _patched_step(monkeypatch, call: int, action) -> None:
    """``train_step`` runs ``action()`` at the start of its ``call``-th call."""
    real_step, calls = stage.train_step, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            action()
        return real_step(*args, **kwargs)

    monkeypatch.setattr(stage, "train_step", step)


def test_ctrl_c_finishes_the_step_saves_and_resumes_exactly(folders, tmp_path, monkeypatch, capsys):
    train, val = folders
    common = ("--steps", "3", "--finetune-steps", "2", "--dropout", "0.2", "--sample-every", "0", "--val-every", "100")
    assert main(_args(train, val, tmp_path / "straight", *common)) == 0

    _patched_step(monkeypatch, 3, lambda: signal.raise_signal(signal.SIGINT))  # Ctrl-C during the third step
    assert main(_args(train, val, tmp_path / "split", *common)) == 130
    assert "stopped: saved" in capsys.readouterr().err
    ckpt = torch.load(tmp_path / "split" / "last.pt", weights_only=True)
    assert ckpt["state"]["batches"] == 3  # the step under way was finished and counted ...
    tracked = {int(v) for k, v in ckpt["model"].items() if k.endswith("num_batches_tracked")}
    assert tracked == {3}  # ... and BatchNorm statistics agree with that count
    monkeypatch.undo()
    assert main(["--resume", "--out", str(tmp_path / "split")]) == 0
    _same_weights(tmp_path / "straight" / "model.safetensors", tmp_path / "split" / "model.safetensors")
    with open(tmp_path / "split" / "log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3, 4, 5]


def test_a_second_ctrl_c_stops_at_once_without_saving(folders, tmp_path, monkeypatch, capsys):
    train, _ = folders

    def twice():
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)

    _patched_step(monkeypatch, 2, twice)
    assert (
        main(_args(train, None, tmp_path / "run", "--stage", "pretrain", "--steps", "4", "--sample-every", "0")) == 130
    )
    assert "not saved" in capsys.readouterr().err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_resume_from_a_periodic_checkpoint_after_a_crash_is_exact_with_dropout(folders, tmp_path, monkeypatch):
    """A kill (no chance to save) after step 3: the run continues from the periodic last.pt of
    step 2, and must not replay step 2's dropout masks."""
    train, val = folders
    common = (
        "--steps",
        "4",
        "--finetune-steps",
        "2",
        "--dropout",
        "0.2",
        "--sample-every",
        "0",
        "--val-every",
        "100",
        "--checkpoint-every",
        "2",
    )
    assert main(_args(train, val, tmp_path / "straight", *common)) == 0

    class Killed(BaseException):
        pass

    def kill():
        raise Killed

    _patched_step(monkeypatch, 4, kill)
    with pytest.raises(Killed):
        main(_args(train, val, tmp_path / "crash", *common))
    assert torch.load(tmp_path / "crash" / "last.pt", weights_only=True)["state"]["batches"] == 2
    monkeypatch.undo()
    assert main(["--resume", "--out", str(tmp_path / "crash")]) == 0
    _same_weights(tmp_path / "straight" / "model.safetensors", tmp_path / "crash" / "model.safetensors")


def test_resume_with_a_shorter_stage_ends_it_and_says_so(folders, tmp_path, monkeypatch, capsys):
    train, _ = folders
    out = tmp_path / "run"
    args = _args(train, None, out, "--steps", "4", "--finetune-steps", "1", "--sample-every", "0")
    _patched_step(monkeypatch, 3, lambda: signal.raise_signal(signal.SIGINT))
    assert main(args) == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert main(["--resume", "--out", str(out), "--steps", "2"]) == 0
    assert "past its new length of 2" in capsys.readouterr().err
    with open(out / "log.csv") as f:
        assert [r["stage"] for r in csv.DictReader(f)] == ["pretrain"] * 3 + ["finetune"]


def test_a_fresh_run_refuses_a_used_out_unless_overwrite(folders, tmp_path, capsys):
    train, _ = folders
    out = tmp_path / "run"
    args = _args(train, None, out, "--stage", "pretrain", "--steps", "1", "--sample-every", "0")
    assert main(args) == 0
    first = load_file(out / "model.safetensors")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "holds another run" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert main([*args, "--seed", "5", "--overwrite"]) == 0
    assert not torch.equal(
        load_file(out / "model.safetensors")["encoder.0.conv.weight"], first["encoder.0.conv.weight"]
    )
    assert main([*args, "--resume", "--overwrite"]) == 2


def test_release_comes_from_the_last_stage_and_never_from_another_runs_best(folders, tmp_path, capsys):
    train, val = folders
    a, b = tmp_path / "a", tmp_path / "b"
    common = ("--steps", "2", "--finetune-steps", "2", "--sample-every", "0", "--val-every", "1")
    assert main(_args(train, val, a, *common)) == 0
    assert "best weights" in capsys.readouterr().out
    best = torch.load(a / "best.pt", weights_only=True)
    assert best["state"]["best_stage"] == 1 and best["state"]["stage_index"] == 1  # written in stage 2
    release = load_file(a / "model.safetensors")
    for key, value in best["model"].items():
        assert torch.equal(release[key], value), key
    # another run's best.pt in a's folder: a's release must not pick it up
    assert main(_args(train, val, b, *common, "--seed", "9")) == 0
    (a / "best.pt").write_bytes((b / "best.pt").read_bytes())
    assert main(["--resume", "--out", str(a)]) == 0
    theirs = torch.load(b / "best.pt", weights_only=True)["model"]
    ours = load_file(a / "model.safetensors")
    assert not torch.equal(ours["encoder.0.conv.weight"], theirs["encoder.0.conv.weight"])
    last = torch.load(a / "last.pt", weights_only=True)["model"]
    assert torch.equal(ours["encoder.0.conv.weight"], last["encoder.0.conv.weight"])


def test_stage_two_keeps_encoder_batchnorm_statistics_through_training_steps(folders, tmp_path):
    train, _ = folders
    common = ("--steps", "2", "--sample-every", "0")
    assert main(_args(train, None, tmp_path / "one", *common, "--stage", "pretrain")) == 0
    assert main(_args(train, None, tmp_path / "both", *common, "--finetune-steps", "3")) == 0
    one, both = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "both" / "model.safetensors")
    stats = [k for k in one if k.endswith(("running_mean", "running_var"))]
    encoder = [k for k in stats if k.startswith("encoder.") and not k.startswith("encoder.0.")]  # layer 0 has no BN
    decoder = [k for k in stats if k.startswith("decoder.")]
    assert encoder and decoder
    for key in encoder:  # frozen through stage 2's three steps
        assert torch.equal(one[key], both[key]), key
    assert any(not torch.equal(one[k], both[k]) for k in decoder)  # the decoder's kept learning


def test_resume_refuses_a_changed_option(folders, tmp_path, capsys):
    train, _ = folders
    out = tmp_path / "run"
    assert main(_args(train, None, out, "--stage", "pretrain", "--steps", "1", "--sample-every", "0")) == 0
    assert main(["--resume", "--out", str(out), "--size", "64"]) == 2
    assert "size" in capsys.readouterr().err
    assert main(["--resume", "--out", str(tmp_path / "nothing")]) == 2


@pytest.mark.parametrize("case", ["empty", "missing"])
def test_bad_training_folder_is_a_clear_error_before_anything_starts(tmp_path, capsys, case):
    folder = tmp_path / "images"
    if case == "empty":
        folder.mkdir()
        (folder / "notes.txt").write_text("no images here")
    out = tmp_path / "run"
    assert main(["--train", str(folder), "--out", str(out), "--vgg-weights", "none"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("train.py: error: ") and str(folder) in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_unknown_mask_kind_is_a_clear_error(folders, tmp_path, capsys):
    train, _ = folders
    assert main(_args(train, None, tmp_path / "run", "--mask-kind", "strokes=1,spiral=2")) == 2
    err = capsys.readouterr().err
    assert "unknown mask kind 'spiral'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_finetune_alone_needs_initial_weights(folders, tmp_path, capsys):
    train, _ = folders
    assert main(_args(train, None, tmp_path / "run", "--stage", "finetune")) == 2
    assert "--init" in capsys.readouterr().err


def test_finetune_from_a_release_file(folders, tmp_path):
    train, _ = folders
    first = tmp_path / "first"
    assert main(_args(train, None, first, "--stage", "pretrain", "--steps", "2", "--sample-every", "0")) == 0
    second = tmp_path / "second"
    assert (
        main(
            _args(
                train,
                None,
                second,
                "--stage",
                "finetune",
                "--finetune-steps",
                "1",
                "--sample-every",
                "0",
                "--init",
                str(first / "model.safetensors"),
            )
        )
        == 0
    )
    assert (second / "model.safetensors").is_file()


def test_init_takes_its_architecture_from_the_file_and_refuses_a_contradicting_flag(folders, tmp_path, capsys):
    train, _ = folders
    save_model(PConvUNet(depth=3, base_width=8), tmp_path / "other.safetensors")
    args = _args(train, None, tmp_path / "run", "--init", str(tmp_path / "other.safetensors"))
    assert main(args) == 2  # _args passes --base-width 4
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--base-width 4 contradicts --init" in err and "base_width 8" in err
    without = [a for i, a in enumerate(args) if a != "--base-width" and (i == 0 or args[i - 1] != "--base-width")]
    assert main([*without, "--stage", "pretrain", "--steps", "1", "--sample-every", "0"]) == 0
    assert load_model(tmp_path / "run" / "model.safetensors").config == PConvUNet(depth=3, base_width=8).config


def test_early_stop_needs_validation(folders, tmp_path, capsys):
    train, _ = folders
    assert main(_args(train, None, tmp_path / "run", "--early-stop", "2")) == 2
    assert "--val" in capsys.readouterr().err


def test_lr_step_decay():
    assert lr_at(1.0, 0, 100, [0.9, 0.95], 0.1) == 1.0
    assert lr_at(1.0, 90, 100, [0.9, 0.95], 0.1) == pytest.approx(0.1)
    assert lr_at(1.0, 99, 100, [0.9, 0.95], 0.1) == pytest.approx(0.01)
    assert lr_at(1.0, 500, 1000, [400, 800], 0.5) == 0.5  # milestones in steps


def test_lr_linear_decay_reaches_zero_at_the_end_of_the_stage():
    assert lr_at(2.0, 0, 100, [], 0.1, "linear") == 2.0
    assert lr_at(2.0, 25, 100, [], 0.1, "linear") == pytest.approx(1.5)
    assert lr_at(2.0, 100, 100, [], 0.1, "linear") == 0.0
    assert lr_at(2.0, 50, 100, [0.5], 0.1, "linear") == pytest.approx(0.1)  # with a milestone


def test_epoch_sampler_resumes_and_shards():
    stream = EpochSampler(10, seed=3)
    first = [k for _, k in zip(range(25), iter(stream))]
    assert sorted(k[1] for k in first[:10]) == list(range(10)) and first[10][0] == 1
    resumed = [k for _, k in zip(range(13), iter(EpochSampler(10, seed=3, start=12)))]
    assert resumed == first[12:]
    ranks = [[k for _, k in zip(range(5), iter(EpochSampler(10, seed=3, rank=r, world_size=2)))] for r in (0, 1)]
    assert not {k[1] for k in ranks[0]} & {k[1] for k in ranks[1]}


def test_dataset_is_deterministic_and_binary(folders):
    train, _ = folders
    files = sorted(p for p in train.rglob("*.png"))
    ds = InpaintingDataset(files, 32, seed=1)
    a, b = ds[(2, 1)], ds[(2, 1)]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert a["image"].shape == (3, 32, 32) and 0 <= a["image"].min() and a["image"].max() <= 1
    assert set(a["mask"].unique().tolist()) <= {0.0, 1.0} and a["mask"].mean() < 1
    assert not torch.equal(ds[(3, 1)]["mask"], a["mask"])


def test_validation_set_has_several_fixed_masks_per_image_across_bins(folders):
    _, val = folders
    files = sorted(val.glob("*.png"))
    one = InpaintingDataset(files, 32, train=False, seed=1)
    three = InpaintingDataset(files, 32, train=False, seed=1, val_masks=3)
    assert len(one) == 2 and len(three) == 6
    for i in range(2):  # the first pass is the single-mask set, so old runs keep their cases
        assert torch.equal(one[i]["mask"], three[i]["mask"])
    masks = [three[i]["mask"] for i in range(6)]
    assert torch.equal(three[4]["image"], three[0]["image"]) and not torch.equal(masks[4], masks[0])
    from pconv.evaluate import bin_of

    bins = [bin_of(m[0].bool().numpy()) for m in masks]
    # image 0 gets bins 1, 2, 3 and image 1 bins 2, 3, 4 (repeat r of image k: bin k + r)
    assert bins[0::2] == ["01-10", "10-20", "20-30"] and bins[1::2] == ["10-20", "20-30", "30-40"]
    six = InpaintingDataset(sorted(val.glob("*.png")) * 3, 32, train=False, seed=1, val_masks=2)  # 6 "images"
    assert len({bin_of(six[i]["mask"][0].bool().numpy()) for i in (0, 6)}) == 2  # a repeat is a new bin
    assert torch.equal(three[5]["mask"], InpaintingDataset(files, 32, train=False, seed=1, val_masks=3)[5]["mask"])
    with pytest.raises(ValueError, match="val_masks"):
        InpaintingDataset(files, 32, train=False, val_masks=0)


def test_bad_val_masks_is_a_clear_error(folders, tmp_path, capsys):
    train, val = folders
    assert main(_args(train, val, tmp_path / "run", "--steps", "1", "--val-masks", "0")) == 2
    assert "--val-masks must be at least 1" in capsys.readouterr().err


def test_load_image_applies_exif_orientation_and_converts_modes(tmp_path):
    img = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert load_rgb(tmp_path / "rot.jpg").size == (20, 40)
    Image.new("L", (8, 6), 77).save(tmp_path / "gray.png")
    Image.new("RGBA", (8, 6), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert load_rgb(tmp_path / "gray.png").getpixel((0, 0)) == (77, 77, 77)
    assert load_rgb(tmp_path / "clear.png").getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match="cannot read image"):
        load_rgb(tmp_path / "bad.png")


# train.py under torchrun, keeping each rank's model (the module DDP wraps) after training.
_RANK_WEIGHTS = """
import os, sys
import torch
import pconv.training.loop as loop
import pconv.training.stage as stage
from pconv.train import config_from_args

wrapped = []


class Recording(loop.DistributedDataParallel):
    def __init__(self, module, *args, **kwargs):
        super().__init__(module, *args, **kwargs)
        wrapped.append(module)


loop.DistributedDataParallel = Recording
loop.train(config_from_args(sys.argv[2:]))
params = {k: v.detach().clone() for k, v in wrapped[0].named_parameters()}
torch.save(params, os.path.join(sys.argv[1], f"rank{os.environ['RANK']}.pt"))
"""


@pytest.mark.slow
def test_two_process_gloo_run_trains_and_keeps_the_ranks_weights_equal(folders, tmp_path):
    train, val = folders
    out = tmp_path / "ddp"
    script = tmp_path / "ranks.py"
    script.write_text(_RANK_WEIGHTS)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        str(tmp_path),
        *_args(train, val, out, "--stage", "pretrain", "--steps", "2", "--sample-every", "0", "--device", "cpu"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2]  # one log, from rank 0
    assert load_model(out / "model.safetensors").config.base_width == 4
    # the ranks start from different seeds, yet train one model: every weight equal, bit for bit
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    released = load_file(out / "model.safetensors")
    assert all(torch.equal(rank0[k], released[k].to(rank0[k].dtype)) for k in rank0 if k in released)


def test_sixteen_bit_and_float_images_are_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(ramp).save(tmp_path / "deep.png")  # 16-bit grey ("I;16")
    got = np.asarray(load_rgb(tmp_path / "deep.png"))[..., 0]
    assert np.abs(got.astype(int) - np.rint(ramp / 257)).max() <= 1 and got.min() == 0 and got.max() == 255
    floats = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(floats, "F").save(tmp_path / "float.tif")
    got = np.asarray(load_rgb(tmp_path / "float.tif"))[..., 0]
    assert np.abs(got.astype(int) - np.rint(floats * 255)).max() <= 1
    Image.fromarray(floats * 300, "F").save(tmp_path / "hdr.tif")
    with pytest.raises(ValueError, match=r"only \[0, 1\] float images"):
        load_rgb(tmp_path / "hdr.tif")


def test_checkpoint_on_a_full_disk_is_one_clear_line_and_leaves_no_partial_file(folders, tmp_path, monkeypatch, capsys):
    train, _ = folders
    out = tmp_path / "run"

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0\nmore detail")

    monkeypatch.setattr(torch, "save", full_disk)
    assert main(_args(train, None, out, "--steps", "2", "--checkpoint-every", "1", "--sample-every", "0")) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("train.py: error: could not write") and "last.pt" in err and "intact" in err
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]


@pytest.mark.slow
def test_a_folder_of_only_unreadable_images_is_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(2):
        (bad / f"b{i}.jpg").write_bytes(b"not a jpeg")
    assert main(_args(bad, None, tmp_path / "run0", "--steps", "1", "--sample-every", "0")) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("train.py: error: none of the 2 images could be read") and "Traceback" not in err
    # from a loader worker process (its own command: forking a test process that runs threads can hang)
    args = _args(bad, None, tmp_path / "run1", "--steps", "1", "--sample-every", "0")
    args[args.index("--workers") + 1] = "1"
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: error: none of the 2 images could be read") and "Traceback" not in done.stderr


def test_amp_on_a_cpu_without_native_bf16_says_so_and_trains_in_float32(monkeypatch, capsys):
    monkeypatch.setattr(steps, "cpu_has_native_bf16", lambda: False)
    assert steps.amp_dtype_for("on", torch.device("cpu")) is None
    assert "no native bfloat16" in capsys.readouterr().err
    monkeypatch.setattr(steps, "cpu_has_native_bf16", lambda: True)
    assert steps.amp_dtype_for("on", torch.device("cpu")) == torch.bfloat16
    assert steps.amp_dtype_for("auto", torch.device("cpu")) is None


def test_errors_name_the_command_the_user_ran(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/pconv-train"])
    assert main(["--size", "64"]) == 2
    assert capsys.readouterr().err.startswith("pconv-train: error: --train DIR is required")
    monkeypatch.setattr(sys, "argv", ["train.py"])
    assert main(["--size", "64"]) == 2
    assert capsys.readouterr().err.startswith("train.py: error: ")


@pytest.mark.slow
def test_sigterm_to_the_whole_process_group_saves_and_resumes(folders, tmp_path):
    """What a cluster scheduler or `docker stop` does: SIGTERM to every process of the run,
    loader workers included. The run finishes its step, saves and exits 130."""
    train, _ = folders
    out = tmp_path / "run"
    args = _args(
        train,
        None,
        out,
        "--stage",
        "pretrain",
        "--steps",
        "100000",
        "--sample-every",
        "0",
        "--checkpoint-every",
        "100000",
    )
    args[args.index("--workers") + 1] = "1"
    with subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            for _ in range(600):
                if (out / "log.csv").is_file() and len((out / "log.csv").read_text().splitlines()) > 3:
                    break
                time.sleep(0.1)
            os.killpg(proc.pid, signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-2000:]
    assert "stopped: saved" in err
    steps = torch.load(out / "last.pt", weights_only=True)["state"]["batches"]
    assert steps >= 3


@pytest.mark.slow
def test_weights_and_biases_logs_offline_without_an_account(folders, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for name in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    train, val = folders
    out = tmp_path / "run"
    assert (
        main(
            _args(
                train,
                val,
                out,
                "--stage",
                "pretrain",
                "--steps",
                "2",
                "--val-every",
                "2",
                "--sample-every",
                "2",
                "--wandb",
                "pconv-test",
            )
        )
        == 0
    )
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1  # for `wandb sync` later
    log = next(runs[0].glob("run-*.wandb"))  # W&B's record log: keys are stored as text
    keys = (b"log/total", b"val/psnr", b"val/hole_psnr", b"mask_kind")  # scalars, validation, config
    deadline = time.monotonic() + 20  # W&B's service process may still be writing after finish() on a busy machine
    while not all(key in log.read_bytes() for key in keys) and time.monotonic() < deadline:
        time.sleep(0.2)
    records = log.read_bytes()
    for key in keys:
        assert key in records, key
    assert list((runs[0] / "files" / "media").rglob("samples_2_*.png"))  # the sample grid of step 2


@pytest.mark.parametrize("flag", ["--channels-last", "--amp"])
def test_one_step_with_each_speed_option(folders, tmp_path, flag, capsys):
    """--channels-last and --amp on the CPU (bf16 where native, else float32 with a warning) train
    a step to finite weights that differ from the start."""
    train, _ = folders
    extra = [flag] + (["on"] if flag == "--amp" else [])
    assert (
        main(_args(train, None, tmp_path / "run", "--stage", "pretrain", "--steps", "1", "--sample-every", "0", *extra))
        == 0
    )
    weights = load_file(tmp_path / "run" / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    if flag == "--amp" and not steps.cpu_has_native_bf16():
        assert "no native bfloat16" in capsys.readouterr().err


@pytest.mark.slow
def test_one_step_compiled(folders, tmp_path):
    train, _ = folders
    assert (
        main(
            _args(
                train, None, tmp_path / "run", "--stage", "pretrain", "--steps", "1", "--sample-every", "0", "--compile"
            )
        )
        == 0
    )
    assert (tmp_path / "run" / "model.safetensors").is_file()


def _pickle_with_code(path: Path) -> None:
    """A torch.save file whose unpickling would call a function (weights_only refuses it)."""
    import collections

    class Runs:
        def __reduce__(self):
            return (print, ("this ran",))

    torch.save({"version": 1, "model": collections.OrderedDict(w=Runs())}, path)


@pytest.mark.parametrize("flag", ["--init", "--vgg-weights"])
def test_a_pickle_with_code_is_refused_in_one_line(folders, tmp_path, capsys, flag):
    train, _ = folders
    _pickle_with_code(tmp_path / "evil.pt")
    extra = [flag, str(tmp_path / "evil.pt")]
    if flag == "--vgg-weights":
        extra += ["--loss-perceptual", "0.05"]
    else:
        extra += ["--stage", "finetune"]
    assert main(_args(train, None, tmp_path / "run", "--steps", "1", *extra)) == 2
    out, err = capsys.readouterr()
    err = err.strip()
    assert "could run code when loaded: refused" in err and len(err.splitlines()) == 1 and "this ran" not in out


def test_an_unwritable_out_is_one_line(folders, tmp_path, capsys):
    train, _ = folders
    (tmp_path / "file").write_text("not a folder")
    assert main(_args(train, None, tmp_path / "file" / "run", "--steps", "1")) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"train.py: error: cannot write to {tmp_path / 'file' / 'run'}: Not a directory"


def test_a_run_that_saved_no_weights_does_not_block_a_fresh_start(folders, tmp_path, capsys):
    """Failed before its first step, or killed during its first checkpoint: only its config and logs."""
    train, _ = folders
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "log.csv").write_text("step\n")
    (out / ".last.pt.x7k2.tmp").write_bytes(b"PK partial")
    assert main(_args(train, None, out, "--stage", "pretrain", "--steps", "1", "--sample-every", "0")) == 0
    assert "stopped before it saved any weights" in capsys.readouterr().err
    assert (out / "model.safetensors").is_file()
    (out / "model.safetensors").unlink()
    (out / "last.pt").write_bytes(b"x")  # weights of a run: still refused without --overwrite
    assert main(_args(train, None, out, "--steps", "1")) == 2


def test_a_file_that_is_not_weights_is_named_as_such(folders, tmp_path, capsys):
    train, _ = folders
    (tmp_path / "notes.md").write_text("# not weights\n")
    args = _args(train, None, tmp_path / "run", "--steps", "1", "--vgg-weights", str(tmp_path / "notes.md"))
    assert main([*args, "--loss-perceptual", "0.05"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("notes.md is not a PyTorch weights file") and len(err.splitlines()) == 1


def test_weight_average_follows_the_formula_with_its_warm_up():
    from pconv.training.ema import WeightAverage

    model = torch.nn.BatchNorm1d(2)
    average = WeightAverage(model, 0.99, torch.nn.BatchNorm1d(2))
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
        model.num_batches_tracked += 5
    average.update(model, step=0)  # warm-up: decay (1 + 0) / (10 + 0) = 0.1
    torch.testing.assert_close(average.state["weight"], 0.1 * start + 0.9 * (start + 1))
    assert average.state["num_batches_tracked"] == 5  # integers are copied
    average.update(model, step=10_000)  # past the warm-up: the decay asked for
    expected = 0.99 * (0.1 * start + 0.9 * (start + 1)) + 0.01 * (start + 1)
    torch.testing.assert_close(average.model().weight.detach(), expected)


def test_ema_weights_are_validated_saved_released_and_resumed_exactly(folders, tmp_path, monkeypatch):
    train, val = folders
    common = ("--stage", "pretrain", "--steps", "4", "--ema", "0.5", "--sample-every", "0", "--val-every", "100")
    assert main(_args(train, val, tmp_path / "straight", *common)) == 0
    last = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    released = load_file(tmp_path / "straight" / "model.safetensors")
    key = next(k for k, v in last["model"].items() if v.is_floating_point() and v.dim() == 4)
    assert not torch.equal(last["model"][key], last["ema"][key])  # the average lags the weights
    torch.testing.assert_close(released[key].float(), last["ema"][key])  # and is what is released

    _patched_step(monkeypatch, 3, lambda: signal.raise_signal(signal.SIGINT))  # stop after step 3 ...
    assert main(_args(train, val, tmp_path / "split", *common)) == 130
    monkeypatch.undo()
    assert main(["--resume", "--out", str(tmp_path / "split")]) == 0  # ... and continue: the same average
    _same_weights(tmp_path / "straight" / "model.safetensors", tmp_path / "split" / "model.safetensors")


def test_init_from_a_gated_model_keeps_its_gate(folders, tmp_path, capsys):
    """The release is a gated model with a gate head: --init from it needs no gate flags."""
    train, _ = folders
    gated = PConvUNet(depth=3, base_width=4, base_fill="pushpull", gate_head=4)
    save_model(gated, tmp_path / "gated.safetensors")
    argv = _args(train, None, tmp_path / "run", "--stage", "pretrain", "--steps", "1", "--sample-every", "0")
    assert main([*argv, "--init", str(tmp_path / "gated.safetensors")]) == 0
    assert load_model(tmp_path / "run" / "model.safetensors").config == gated.config
    assert main([*argv, "--init", str(tmp_path / "gated.safetensors"), "--overwrite", "--base-fill", "none"]) == 2
    assert "--base-fill none contradicts --init" in capsys.readouterr().err


def test_logs_are_never_written_through_a_planted_link(folders, tmp_path, monkeypatch, capsys):
    """A dangling link at RUN/log.csv creates nothing outside the run; on --resume a link to an
    existing file leaves that file as it was; the log is a file of the run's own."""
    train, _ = folders
    out, outside = tmp_path / "run", tmp_path / "outside.csv"
    out.mkdir()
    (out / "log.csv").symlink_to(outside)
    args = _args(train, None, out, "--stage", "pretrain", "--steps", "3", "--sample-every", "0")
    _patched_step(monkeypatch, 2, lambda: signal.raise_signal(signal.SIGINT))
    assert main([*args, "--overwrite"]) == 130
    monkeypatch.undo()
    assert not outside.exists() and not (out / "log.csv").is_symlink()
    outside.write_text("precious\n")
    (out / "log.csv").unlink()
    (out / "log.csv").symlink_to(outside)
    capsys.readouterr()
    assert main(["--resume", "--out", str(out)]) == 0
    assert outside.read_text() == "precious\n"
    with open(out / "log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [3]  # the link's rows were not the run's


def test_resume_with_a_log_that_is_not_the_runs_is_one_line(folders, tmp_path, monkeypatch, capsys):
    train, _ = folders
    out = tmp_path / "run"
    args = _args(train, None, out, "--stage", "pretrain", "--steps", "3", "--sample-every", "0")
    _patched_step(monkeypatch, 2, lambda: signal.raise_signal(signal.SIGINT))
    assert main(args) == 130
    monkeypatch.undo()
    (out / "log.csv").write_text("when,loss\nyesterday,1\n")
    capsys.readouterr()
    assert main(["--resume", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no step column" in err.splitlines()[-1] and "Traceback" not in err


def test_the_default_vgg_is_the_bundled_one_when_imagenet_is_not_downloaded(folders, tmp_path, monkeypatch, capsys):
    train, _ = folders
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # nothing downloaded there

    def offline(*args, **kwargs):
        raise AssertionError("no download may be tried")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    args = _args(train, None, tmp_path / "run", "--stage", "pretrain", "--steps", "1", "--sample-every", "0")
    assert main([*args, "--loss-perceptual", "0.05"]) == 0
    err = capsys.readouterr().err
    assert "use the HED VGG16 this package ships" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lr", "nan"], "--lr must be a finite number"),
        (["--loss-hole", "inf"], "--loss-hole must be a finite number"),
        (["--lr", "-1"], "must be at least 0"),
        (["--loss-tv", "-0.5"], "loss weights must be at least 0: --loss-tv"),
    ],
)
def test_non_finite_or_negative_numbers_are_one_line(folders, tmp_path, capsys, flags, message):
    train, _ = folders
    assert main([*_args(train, None, tmp_path / "run", "--steps", "1"), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("text", ['{"lr": ', "[1, 2]", '{"lr": "fast"}'])
def test_resume_with_a_broken_config_json_is_one_line(folders, tmp_path, capsys, text):
    train, _ = folders
    out = tmp_path / "run"
    assert main(_args(train, None, out, "--stage", "pretrain", "--steps", "1", "--sample-every", "0")) == 0
    if text.startswith('{"lr": "'):
        config = json.loads((out / "config.json").read_text())
        text = json.dumps({**config, "lr": "fast"})
    (out / "config.json").write_text(text)
    capsys.readouterr()
    assert main(["--resume", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is not a configuration this project wrote" in err and len(err.strip().splitlines()) == 1


def test_a_killed_writers_temporary_files_are_removed_when_the_run_starts(folders, tmp_path, monkeypatch):
    train, _ = folders
    out = tmp_path / "run"
    args = _args(train, None, out, "--stage", "pretrain", "--steps", "3", "--sample-every", "0")
    _patched_step(monkeypatch, 2, lambda: signal.raise_signal(signal.SIGINT))
    assert main(args) == 130
    monkeypatch.undo()
    stale = [out / ".last.pt.k2j3h4.tmp", out / ".log.csv.x9y8.tmp", out / "samples" / ".step_0000001.png.ab12.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    kept = [out / "notes.tmp", out / ".hidden"]  # not the writers' pattern
    for path in kept:
        path.write_text("mine")
    assert main(["--resume", "--out", str(out)]) == 0
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)


def test_resuming_a_finished_run_changes_no_file(folders, tmp_path, capsys):
    train, val = folders
    out = tmp_path / "run"
    assert main(_args(train, val, out, "--steps", "2", "--finetune-steps", "1", "--val-every", "1")) == 0
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.rglob("*")) if p.is_file()}
    capsys.readouterr()
    assert main(["--resume", "--out", str(out)]) == 0
    assert "had already finished (3 steps); nothing was trained and no file changed" in capsys.readouterr().out
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before


def test_init_by_a_trained_models_name(folders, tmp_path):
    from pconv.training.setup import inherit_init_architecture

    given = inherit_init_architecture({"init": "pconv_unet_photos_512"})
    assert given["init"].endswith("pconv-unet-photos-512.safetensors") and given["gate_head"] == 16
    assert given["depth"] == 7 and given["base_fill"] == "pushpull" and "fill_gate" not in given


def test_a_gate_only_run_changes_nothing_but_the_gate(folders, tmp_path):
    """train.py --gate-only through the whole loop (pretrain stage, BatchNorm otherwise in train
    mode): every tensor of the --init model, BatchNorm statistics included, is unchanged but the
    gate's channel of the last layer."""
    train, _ = folders
    torch.manual_seed(0)
    save_model(PConvUNet(depth=3, base_width=4), tmp_path / "direct.safetensors")
    argv = _args(train, None, tmp_path / "run", "--stage", "pretrain", "--steps", "2", "--sample-every", "0")
    argv += ["--init", str(tmp_path / "direct.safetensors"), "--base-fill", "pushpull", "--gate-only"]
    assert main(argv) == 0
    before = load_file(tmp_path / "direct.safetensors")
    after = load_file(tmp_path / "run" / "model.safetensors")
    kept = {k: after[k][: len(v)] if v.ndim else after[k] for k, v in before.items()}  # the gate's row cut off
    moved = {k for k in before if not torch.equal(before[k], kept[k])}
    assert moved == set(), moved
    assert after["decoder.2.conv.bias"][-1] != 0  # the gate learned
