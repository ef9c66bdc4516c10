"""pconv-sweep: a small Optuna study over train.py finishes, resumes after a kill and prunes."""

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
from PIL import Image

optuna = pytest.importorskip("optuna")

from pconv.sweep import load_space, main, run_sweep  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweepdata")
    for split, n in (("train", 4), ("val", 2)):
        (root / split).mkdir()
        for i in range(n):
            rng = np.random.default_rng(i + 10 * len(split))
            y, x = np.mgrid[0:40, 0:40]
            img = np.stack([np.sin(x / (3 + i)), np.cos(y / 5), np.sin((x + y) / 7)], -1) * 100 + 128
            Image.fromarray((img + rng.normal(0, 3, img.shape)).clip(0, 255).astype(np.uint8)).save(
                root / split / f"{i}.png"
            )
    return root


def _space(data: Path, path: Path, trials: int, params: dict, steps: int = 3, **fixed) -> Path:
    space = {
        "objective": "hole_psnr",
        "trials": trials,
        "params": params,
        "fixed": {
            "train": str(data / "train"),
            "val": str(data / "val"),
            "size": 32,
            "batch_size": 2,
            "workers": 0,
            "base_width": 4,
            "loss_perceptual": 0,
            "loss_style": 0,
            "stage": "pretrain",
            "steps": steps,
            "val_every": 1,
            "sample_every": 0,
            "log_every": 1,
            **fixed,
        },
    }
    path.write_text(json.dumps(space))
    return path


def test_a_two_trial_sweep_writes_its_results(data, tmp_path, capsys):
    space = _space(
        data,
        tmp_path / "space.json",
        2,
        {"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "dropout": {"choices": [0.0, 0.1]}},
    )
    out = tmp_path / "sweep"
    assert main([str(space), "--out", str(out)]) == 0
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and {r["state"] for r in rows} == {"complete"}
    values = [float(r["hole_psnr"]) for r in rows]
    assert values == sorted(values, reverse=True)  # best first
    for r in rows:
        assert (Path(r["run_dir"]) / "model.safetensors").is_file()
    best = (out / "best.txt").read_text()
    assert "python train.py" in best and "--lr" in best and "--val" in best
    assert (out / "study.db").is_file() and (out / "history.png").is_file() and (out / "importances.csv").is_file()
    assert "best hole_psnr" in capsys.readouterr().out


def test_a_poor_trial_is_pruned_from_its_validation_scores(data, tmp_path):
    space = load_space(_space(data, tmp_path / "space.json", 3, {"lr": {"choices": [0.01, 0.0]}}, steps=6))
    out = tmp_path / "sweep"
    out.mkdir()
    study = optuna.create_study(
        study_name="pconv", storage=f"sqlite:///{(out / 'study.db').resolve()}", direction="maximize"
    )
    for lr in (0.01, 0.01, 0.0):  # two that learn, then one that cannot
        study.enqueue_trial({"lr": lr})
    study = run_sweep(space, out, quiet=True)
    states = {t.params["lr"]: t.state.name for t in study.trials if t.params["lr"] == 0.0}
    assert states == {0.0: "PRUNED"}
    pruned = next(t for t in study.trials if t.state.name == "PRUNED")
    with open(Path(pruned.user_attrs["run_dir"]) / "val.csv") as f:
        assert len(list(csv.DictReader(f))) < 6  # stopped before the end


@pytest.mark.slow
def test_a_killed_sweep_resumes(data, tmp_path):
    space = _space(data, tmp_path / "space.json", 3, {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}, steps=30)
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "pconv.sweep", str(space), "--out", str(out), "--heartbeat", "1"]
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True) as proc:
        try:
            for _ in range(1200):  # wait until the second trial is under way, then kill everything
                if (out / "trial_0001" / "log.csv").is_file():
                    break
                time.sleep(0.1)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(2.5)  # past the heartbeat's grace period: the killed trial counts as failed
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    study = optuna.load_study(study_name="pconv", storage=f"sqlite:///{(out / 'study.db').resolve()}")
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == 3, states
    assert states.count("FAIL") == 1  # the killed trial failed and was retried


def test_yaml_numbers_read_as_strings_are_converted_and_a_failing_trial_does_not_end_the_sweep(data, tmp_path):
    """PyYAML reads ``1e-4`` as a string; a trial whose value the configuration refuses is recorded
    as failed and the next trial runs."""
    yaml = pytest.importorskip("yaml")
    space = json.loads(_space(data, tmp_path / "s.json", 2, {"depth": {"choices": [3, 99]}}).read_text())
    space["fixed"]["lr"] = "1e-4"
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    assert yaml.safe_load(path.read_text())["fixed"]["lr"] == "1e-4"  # what PyYAML gives
    loaded = load_space(path)
    out = tmp_path / "sweep"
    out.mkdir()
    study = optuna.create_study(
        study_name="pconv", storage=f"sqlite:///{(out / 'study.db').resolve()}", direction="maximize"
    )
    for depth in (99, 3):  # an impossible depth first
        study.enqueue_trial({"depth": depth})
    study = run_sweep(loaded, out, quiet=True)
    states = {t.params["depth"]: t.state.name for t in study.trials}
    assert states == {99: "FAIL", 3: "COMPLETE"}
    config = json.loads((Path(study.best_trial.user_attrs["run_dir"]) / "config.json").read_text())
    assert config["lr"] == 1e-4


def test_a_sweep_whose_every_trial_fails_exits_non_zero(data, tmp_path, capsys):
    space = _space(data, tmp_path / "s.json", 2, {"depth": {"choices": [99]}})  # a depth no image allows
    assert main([str(space), "--out", str(tmp_path / "sweep")]) == 1
    err = capsys.readouterr().err
    assert "no trial completed: all 2 failed" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "params, trials, message",
    [
        ({"lr": {"low": 1e-2, "high": 1e-4}}, 2, "is above high"),
        ({"depth": {"choices": []}}, 2, "choices must be a non-empty list"),
        ({"depth": {"low": 3, "high": 5, "step": 0}}, 2, "step must be positive"),
        ({"lr": {"low": float("nan"), "high": float("inf")}}, 2, "must be finite numbers"),
        ({"lr": {"low": 0, "high": 1e-2, "log": True}}, 2, "a log scale needs a positive low"),
        ({"lr": {"low": 1e-4, "high": 1e-2}}, "many", "trials must be a whole number"),
    ],
)
def test_a_space_that_cannot_be_sampled_is_refused_when_read(data, tmp_path, capsys, params, trials, message):
    path = _space(data, tmp_path / "s.json", 1, params)
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, "trials": trials}))
    assert main([str(path), "--out", str(tmp_path / "sweep")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "sweep").exists()


def test_a_fixed_value_of_the_wrong_type_is_refused_when_the_space_is_read(data, tmp_path):
    from pconv.errors import ConfigError

    with pytest.raises(ConfigError, match="steps: 'many' is not a valid int"):
        load_space(_space(data, tmp_path / "s.json", 1, {"lr": {"low": 1e-4, "high": 1e-2}}, steps="many"))


@pytest.mark.parametrize("objective, direction", [("psnr", "maximize"), ("l1", "minimize"), ("edge", "minimize")])
def test_the_default_direction_is_the_metrics_own(data, tmp_path, objective, direction):
    path = _space(data, tmp_path / "s.json", 1, {"lr": {"choices": [1e-4]}})
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, "objective": objective}))
    assert load_space(path).direction == direction
