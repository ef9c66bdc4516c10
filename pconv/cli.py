"""What the command-line tools share: user errors as one line and exit code 2, device choice."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["SCALE_HELP", "UsageError", "prog_name", "require", "resolve_device", "run_main", "scale_arg"]


class UsageError(Exception):
    """A mistake in the command line or its input files: reported as one line, exit code 2."""


def require(extra: str, what: str, *modules: str) -> None:
    """Refuse with the install command when an optional extra's modules are missing."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(
            f"{what} needs {', '.join(missing)}: pip install 'pconv[{extra}]' (or -e \".[{extra}]\" in a clone)"
        )


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; otherwise the named device, checked."""
    import torch  # here, not at the top: the tools' --help should not wait for PyTorch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UsageError(f"unknown device {name!r} ({err})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} asked for, but this PyTorch build sees no CUDA GPU")
    return device


def prog_name(default: str) -> str:
    """How the user called the tool: ``pconv-train`` when run as the installed command, else ``default``
    (``train.py``, ``python -m pconv.evaluate``, ...), for usage lines and error messages."""
    called = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return called if called.startswith("pconv-") else default


def run_main(fn: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None, prog: str) -> int:
    """Call ``fn(argv)``; a :class:`UsageError` becomes ``prog: error: ...`` on stderr and exit code 2."""
    try:
        return fn(argv)
    except UsageError as err:
        print(f"{prog_name(prog)}: error: {err}", file=sys.stderr)
        return 2


def scale_arg(text: str) -> str | float:
    """``--scale``: ``auto`` or a downscale factor of at least 1."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a factor such as 1 or 2, got {text!r}") from None
    if not value >= 1 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"the scale factor must be at least 1, got {text}")
    return value


SCALE_HELP = (
    "working scale: auto (each hole at the scale the model was trained for, from its depth: small holes at "
    "full resolution, big holes coarse, upsampled), or a downscale factor for every hole (1 = full "
    "resolution) (default auto)"
)
