"""What the command-line tools share: the library's errors (:mod:`pconv.errors`) and command-line
mistakes as one line and exit code 2, the ``--scale`` option."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pconv.devices import resolve_device
from pconv.errors import PconvError, require

__all__ = [
    "SCALE_HELP",
    "WEIGHTS_HELP",
    "UsageError",
    "prog_name",
    "require",
    "resolve_device",
    "run_main",
    "scale_arg",
]


class UsageError(PconvError):
    """A mistake in the command line itself (options that do not fit together): one line, exit code 2."""


def prog_name(default: str) -> str:
    """How the user called the tool: ``pconv-train`` when run as the installed command, else ``default``
    (``train.py``, ``python -m pconv.evaluate``, ...), for usage lines and error messages."""
    called = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return called if called.startswith("pconv-") else default


def run_main(fn: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None, prog: str) -> int:
    """Call ``fn(argv)``; a :class:`~pconv.errors.PconvError` (:class:`UsageError` included) becomes
    ``prog: error: ...`` on stderr and exit code 2."""
    try:
        return fn(argv)
    except PconvError as err:
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


WEIGHTS_HELP = (
    "a release file (from train.py), or a trained model's name such as pconv_unet_photos_512 "
    "(default: the released model)"
)
