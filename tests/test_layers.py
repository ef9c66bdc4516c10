"""How the package is layered: library modules raise library errors and know no command line;
every module is small enough to read in one sitting; pyflakes finds nothing."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pconv"
# The command-line layer: argparse, exit codes and UsageError live here and nowhere else.
COMMAND_LINE = {
    "cli.py",
    "predict.py",
    "evaluate.py",
    "compare.py",
    "abtest.py",
    "serve.py",
    "sweep.py",
    "export.py",
    "train.py",
    "masks/__main__.py",
    "training/recipe.py",
}
MAX_LINES = 410


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            found |= {node.module or ""} | {alias.name for alias in node.names}
        elif isinstance(node, ast.Name):
            found.add(node.id)
    return found


def test_only_the_command_line_layer_knows_argparse_and_usage_errors():
    offenders = [
        str(p.relative_to(PACKAGE))
        for p in _modules()
        if str(p.relative_to(PACKAGE)) not in COMMAND_LINE and {"argparse", "UsageError"} & _names(p)
    ]
    assert not offenders


def test_modules_stay_small():
    long = {str(p.relative_to(PACKAGE)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long


def test_pyflakes_finds_nothing():
    pytest.importorskip("pyflakes")
    done = subprocess.run([sys.executable, "-m", "pyflakes", str(PACKAGE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
