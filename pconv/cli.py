"""What the command-line tools share: user errors as one line and exit code 2, device choice."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import torch

__all__ = ["UsageError", "resolve_device", "run_main"]


class UsageError(Exception):
    """A mistake in the command line or its input files: reported as one line, exit code 2."""


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; otherwise the named device, checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UsageError(f"unknown device {name!r} ({err})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} asked for, but this PyTorch build sees no CUDA GPU")
    return device


def run_main(fn: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None, prog: str) -> int:
    """Call ``fn(argv)``; a :class:`UsageError` becomes ``prog: error: ...`` on stderr and exit code 2."""
    try:
        return fn(argv)
    except UsageError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
