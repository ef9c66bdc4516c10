"""The library's exceptions: problems a user can fix, each with a message that says how.

Library functions raise these; the command-line tools print one as a single line and exit with
code 2, the web app answers it with a 4xx status (:attr:`PconvError.status`). Most also derive
from the built-in exception a caller would expect (``ValueError``, ``ImportError``,
``FileNotFoundError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

import importlib.util

__all__ = [
    "CheckpointError",
    "ConfigError",
    "InputError",
    "MissingExtraError",
    "MissingFileError",
    "NonFiniteError",
    "OutputError",
    "PconvError",
    "TooLargeError",
    "require",
]


class PconvError(Exception):
    """Base class: the message is written for the user and fits on one line."""

    status = 400  # what an HTTP front end answers


class InputError(PconvError, ValueError):
    """An input file or array cannot be used: unreadable, wrong depth, wrong size, no pixels to go on."""


class MissingFileError(InputError, FileNotFoundError):
    """A file or folder that was named does not exist."""


class TooLargeError(InputError):
    """An input is larger than a limit (a decompression bomb, a server's upload or work budget)."""

    status = 413


class OutputError(PconvError, OSError):
    """An output could not be written (a missing folder, no permission, a full disk); nothing was."""

    status = 500


class ConfigError(PconvError, ValueError):
    """Options or settings that do not fit together or are out of range."""


class CheckpointError(PconvError, ValueError):
    """A training checkpoint or weights file that cannot be read or written, or that does not fit."""


class NonFiniteError(PconvError, ValueError):
    """A model's output holds NaN or infinite values where it fills holes: its weights are broken."""

    status = 500


class MissingExtraError(PconvError, ImportError):
    """An optional dependency is not installed; the message gives the install command."""

    status = 501


def require(extra: str, what: str, *modules: str) -> None:
    """Raise :class:`MissingExtraError` with the install command when an extra's modules are missing."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtraError(
            f"{what} needs {', '.join(missing)}: pip install 'pconv[{extra}]' (or -e \".[{extra}]\" in a clone)"
        )
