"""Every benchmark script runs, at a tiny size, so the figures the README quotes can be measured
again: the scripts cannot rot unnoticed. (Their numbers are not checked here: times in a test
mean nothing.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pconv import PConvUNet, save_model

REPO = Path(__file__).resolve().parents[1]
VAL = [str(REPO / "data" / "photos" / "val")]

CASES = {
    "bench_blend.py": ["--weights", "{tiny}", "--per-bin", "1", "--size", "64", "--images", *VAL],
    "bench_cli.py": ["--repeats", "1", "--sizes", "quickstart"],
    "bench_crops.py": [
        *("--weights", "{tiny}", "--sparse", "--blobs", "--margin", "0.5", "--pad-levels", "7"),
        *("--upscale", "1", "--images", *VAL),
    ],
    "bench_gate.py": ["--weights", "{tiny}", "--per-bin", "1", "--size", "64", "--images", *VAL],
    "bench_flat.py": ["--weights", "{tiny}", "--size", "64", "--hole", "24"],
    "bench_fill.py": ["--repeats", "1", "--per-bin", "1", "--sizes", "64x48", "--size", "64", "--images", *VAL],
    "gpu.py": ["--dry-run"],
    "bench_layer.py": ["--quick", "--repeats", "1"],
    "bench_loss_cost.py": ["--size", "32", "--batch", "1", "--base-width", "4", "--depth", "3", "--repeats", "1"],
    "bench_methods.py": ["--weights", "{tiny}", "--repeats", "1", "--sizes", "64x48"],
    "bench_masks.py": ["--size", "64", "--count", "2"],
    "bench_model.py": ["--sizes", "256", "--repeats", "1"],
    "bench_models.py": ["--size", "64", "--batch", "2", "--repeats", "1", "--base-width", "4"],
    "bench_output.py": ["--images", *VAL, "--repeats", "1"],
    "bench_onnx.py": ["--weights", "{tiny}", "--size", "64", "--repeats", "1"],
    "bench_predict.py": ["--sizes", "0.01", "--mc-samples", "0"],
    "bench_replay.py": ["{tiny}", "{tiny}", "--per-bin", "1", "--size", "64", "--images", *VAL],
    "bench_scale.py": ["speed", "--weights", "{tiny}", "--sizes", "0.05", "--repeats", "1"],
    "bench_train.py": ["--sizes", "64", "--batch", "2", "--steps", "1", "--workers", "0"],
}


def test_every_script_is_covered():
    scripts = {p.name for p in (REPO / "benchmarks").glob("*.py") if p.name != "common.py"}
    assert scripts == set(CASES)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(CASES))
def test_benchmark_runs_at_a_tiny_size(script, tmp_path):
    torch.manual_seed(0)
    tiny = tmp_path / "tiny.safetensors"
    save_model(PConvUNet(depth=3, base_width=4), tiny)
    args = [a.format(tiny=tiny) for a in CASES[script]]
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip(), "printed nothing"
