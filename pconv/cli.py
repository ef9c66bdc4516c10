"""What the command-line tools share: the library's errors (:mod:`pconv.errors`) and command-line
mistakes as one line and exit code 2, and the inference flags derived from
:class:`~pconv.options.InpaintOptions`."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pconv.devices import resolve_device
from pconv.errors import PconvError, require

__all__ = [
    "WEIGHTS_HELP",
    "UsageError",
    "add_inpaint_options",
    "inpaint_options",
    "prog_name",
    "require",
    "resolve_device",
    "run_main",
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
    ``prog: error: ...`` on stderr and exit code 2, as do a file name too long for the file system and
    a full disk behind a redirected stdout; a reader of stdout that went away (``| head``) is a quiet
    exit code 1. NumPy's huge-page advice is turned off first (:func:`no_numpy_hugepages`)."""
    no_numpy_hugepages()
    try:
        code = fn(argv)
        sys.stdout.flush()  # a reader that went away or a full disk shows here, not at the interpreter's exit
    except BrokenPipeError:
        _quiet_stdout()
        return 1
    except PconvError as err:
        print(f"{prog_name(prog)}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno == errno.ENAMETOOLONG:  # a path argument no file system takes, met by any check of it
            print(
                f"{prog_name(prog)}: error: {err.filename}: the name is too long for the file system", file=sys.stderr
            )
            return 2
        # the tools turn failures of the files they write into PconvErrors: a full disk met here
        # is the one behind stdout (output redirected to a file)
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        _quiet_stdout()
        print(f"{prog_name(prog)}: error: could not write the output: {err.strerror}", file=sys.stderr)
        return 2
    return code


def _quiet_stdout() -> None:
    """After stdout failed (its reader left, ``tool | head``, or its disk is full): send what is still
    buffered nowhere, so the interpreter's exit adds no second error."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor behind stdout (captured in tests)
        pass


def no_numpy_hugepages() -> None:
    """Stop NumPy advising the kernel to back its large arrays with huge pages (``MADV_HUGEPAGE``),
    unless ``NUMPY_MADVISE_HUGEPAGE`` says otherwise.

    Where the kernel defragments on demand for such advice (``defrag`` = ``madvise``, the default
    of Linux and of the common distributions), page faults in fresh full-size arrays of a 24 MP
    photo stall on memory compaction, at random: seconds instead of milliseconds per run
    (``benchmarks/bench_cli.py``). The tools touch each big array a few times, so small pages are
    the better trade. A process-wide setting, so the tools make it, not the library; it holds for
    the whole process (calling a tool's ``main`` from Python changes it for the caller too) and
    for workers forked from it, not for processes started afresh.
    """
    if "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        return
    import numpy as np

    core = getattr(np, "_core", None) or np.core  # NumPy 2 / 1
    setter = getattr(core.multiarray, "_set_madvise_hugepage", None)
    if setter is not None:
        setter(False)


WEIGHTS_HELP = (
    "a release file (from train.py), or a trained model's name such as pconv_unet_photos_512 "
    "(default: the released model)"
)


def _tile_arg(text: str) -> int | str | None:
    """``--tile``: ``auto``, ``none`` or a number (its range is :class:`InpaintOptions`' to check)."""
    if text in ("auto", "none"):
        return None if text == "none" else "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto, none or a number of pixels, got {text!r}") from None


def _scale_text(text: str) -> str | float:
    """``--scale``: ``auto`` or a number (its range is :class:`InpaintOptions`' to check)."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a factor such as 1 or 2, got {text!r}") from None


_PARSERS: dict[str, Callable[[str], object]] = {
    "tile": _tile_arg,
    "scale": _scale_text,
    "hole_depth": float,
    "precision": str,
}


def add_inpaint_options(group: argparse._ActionsContainer, names: Sequence[str]) -> None:
    """Flags for the :class:`~pconv.options.InpaintOptions` fields ``names``, derived from the dataclass
    (its defaults, help and flag names); :func:`inpaint_options` builds the object, which checks them."""
    from dataclasses import MISSING, fields

    from pconv.options import InpaintOptions

    for f in fields(InpaintOptions):
        if f.name not in names:
            continue
        flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
        default = f.default if f.default is not MISSING else None
        help_text = f.metadata["help"] + (
            "" if f.type == "bool" else f" (default {default if default is not None else 'none'})"
        )
        if f.type == "bool":
            group.add_argument(flag, dest=f.name, action="store_true", help=f.metadata["help"])
            continue
        parse = _PARSERS.get(f.name, int)
        metavar = f.metadata.get("metavar")
        group.add_argument(flag, dest=f.name, type=parse, default=default, metavar=metavar, help=help_text)


def inpaint_options(args: argparse.Namespace, names: Sequence[str], **fixed: object):
    """The :class:`~pconv.options.InpaintOptions` of the flags ``names`` that :func:`add_inpaint_options`
    added (and ``fixed`` fields); a value out of range is the object's own one-line error."""
    from pconv.options import InpaintOptions

    return InpaintOptions(**{**{name: getattr(args, name) for name in names}, **fixed})
