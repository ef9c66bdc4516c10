"""The command-line tools answer --help without loading PyTorch, and the package imports lazily."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# every console script of pyproject.toml, plus the mask exporter and the ONNX exporter
COMMANDS = [
    "pconv.train",
    "pconv.predict",
    "pconv.evaluate",
    "pconv.compare",
    "pconv.serve",
    "pconv.sweep",
    "pconv.masks.__main__",
    "pconv.export",
]

PROBE = """
import contextlib, io, sys
from importlib import import_module
for name in sys.argv[1:]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        import_module(name).main(["--help"])
    assert "usage:" in out.getvalue(), (name, out.getvalue()[:200])
heavy = sorted(m for m in ("torch", "scipy", "matplotlib") if m in sys.modules)
print(",".join(heavy) or "none")
"""


def test_help_of_every_command_loads_no_torch():
    done = subprocess.run([sys.executable, "-c", PROBE, *COMMANDS], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none"


def test_package_names_load_on_first_use():
    code = (
        "import sys, pconv; assert 'torch' not in sys.modules; "
        "layer = pconv.PartialConv2d(1, 1, 3); assert 'torch' in sys.modules; "
        "assert pconv.PartialConv2d is sys.modules['pconv.partialconv'].PartialConv2d; "
        "assert set(pconv.__all__) <= set(dir(pconv)); print(type(layer).__name__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "PartialConv2d"


def test_an_unknown_name_is_an_attribute_error():
    import pconv
    import pconv.training

    with pytest.raises(AttributeError, match="no attribute 'PartialConv4d'"):
        pconv.PartialConv4d  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        pconv.training.nothing  # noqa: B018


@pytest.mark.parametrize(
    "module, argv, extra",
    [
        ("pconv.serve", [], "serve"),
        ("pconv.evaluate", ["--images", "x", "--out", "y"], "evaluate"),
        ("pconv.sweep", ["space.yaml", "--out", "y"], "sweep"),
        ("pconv.export", ["--onnx", "m.onnx"], "onnx"),
    ],
)
def test_a_missing_extra_names_the_install_command(module, argv, extra, monkeypatch, capsys):
    """A core install (what predict.py needs) runs the other tools only with their extras."""
    import importlib
    import importlib.util

    real = importlib.util.find_spec
    heavy = {"fastapi", "skimage", "optuna", "onnx"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in heavy else real(name, *a))
    assert importlib.import_module(module).main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert f"pip install 'pconv[{extra}]'" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--opset", "3"], "--opset must be between 18 and"),
        (["--onnx", "{tmp}"], "is a folder: name the file to write"),
    ],
)
def test_export_mistakes_are_one_line(tmp_path, capsys, argv, message):
    pytest.importorskip("onnx")
    from pconv.export import main

    full = ["--onnx", str(tmp_path / "m.onnx"), *[a.format(tmp=tmp_path) for a in argv]]
    assert main(full) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_tools_turn_numpy_hugepage_advice_off(monkeypatch):
    import numpy as np

    from pconv.cli import run_main

    _set_madvise_hugepage = (getattr(np, "_core", None) or np.core).multiarray._set_madvise_hugepage

    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    before = _set_madvise_hugepage(True)
    try:
        assert run_main(lambda argv: 0, [], "tool") == 0
        assert _set_madvise_hugepage(True) is False  # the tool turned it off
        monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")  # the user's choice is kept
        assert run_main(lambda argv: 0, [], "tool") == 0
        assert _set_madvise_hugepage(True) is True
    finally:
        _set_madvise_hugepage(before)


def test_a_reader_that_leaves_early_ends_a_tool_quietly(tmp_path):
    """``tool | head``: when stdout's reader is gone, the tool exits 1 without an error message."""
    import json

    pairs = {f"pair-{i:03d}": {"A": "x", "B": "y", "case": f"case-{i:04d}"} for i in range(3000)}
    (tmp_path / "key.json").write_text(json.dumps({"methods": ["x", "y"], "pairs": pairs}))
    (tmp_path / "verdicts.csv").write_text("pair,verdict\n" + "".join(f"{p},A\n" for p in pairs))
    argv = ["score", "--key", str(tmp_path / "key.json"), "--verdicts", str(tmp_path / "verdicts.csv"), "--per-case"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pconv.abtest", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # the reader leaves before the first line
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1 and err == ""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_output_to_a_full_disk_is_a_one_line_error(tmp_path):
    """predict.py's report line, buffered until the end, cannot be written: one line, exit code 2."""
    import numpy as np
    from PIL import Image

    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / "a.png")
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    argv = ["--image", str(tmp_path / "a.png"), "--mask", str(tmp_path / "m.png"), "--out", str(tmp_path / "o.png")]
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "pconv.predict", *argv, "--method", "pushpull"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
        )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0] == "predict.py: error: could not write the output: No space left on device"
    assert (tmp_path / "o.png").is_file()  # the result itself was written


@pytest.mark.parametrize("flag", ["--weights", "--image", "--mask"])
def test_a_file_name_too_long_for_the_file_system_is_a_one_line_error(tmp_path, capsys, flag):
    """A 300-character name makes the first check of the path (``is_file``) raise ENAMETOOLONG."""
    import numpy as np
    from PIL import Image

    from pconv.predict import main

    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "m.png")
    paths = {"--image": tmp_path / "a.png", "--mask": tmp_path / "m.png", "--weights": None}
    paths[flag] = tmp_path / ("n" * 300 + ".png")
    argv = [arg for k, v in paths.items() if v is not None for arg in (k, str(v))]
    assert main([*argv, "--out", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"predict.py: error: {paths[flag]}: the name is too long for the file system"]


def test_the_mask_exporter_reports_file_errors_in_one_line(tmp_path, capsys):
    from pconv.masks.__main__ import main

    (tmp_path / "file").write_text("")
    for out, message in [
        (tmp_path / ("n" * 300), "the name is too long for the file system"),
        (tmp_path / "file" / "masks", "could not write the masks to"),
    ]:
        assert main(["export", "--count", "1", "--size", "32", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("python -m pconv.masks: error: ") and message in err[0], err
