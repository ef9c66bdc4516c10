"""The command-line tools answer --help without loading PyTorch, and the package imports lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest

# every console script of setup.py, plus the mask exporter
COMMANDS = [
    "pconv.train",
    "pconv.predict",
    "pconv.evaluate",
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
