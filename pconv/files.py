"""One way to write a file: atomically, so a reader never sees a partial file.

The content goes to a hidden temporary file beside the target, which then replaces the target in
one step (``os.replace``). On any failure the temporary file is removed and the target is left as
it was; a full disk or a read-only folder becomes an ``OSError`` that says which file and why.
The file gets the permissions of the file it replaces, or those of any newly created file (some
writers, safetensors among them, create owner-only files, which others on a shared machine
could not read).
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` to fill a temporary file, then move it to ``path`` atomically.

    Raises:
        OSError: the file could not be written (the message names it, the reason and, when the
            disk is nearly full, the free space); nothing is left behind.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode) if path.exists() else _new_file_mode())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        # torch.save reports a full disk as a RuntimeError from its zip writer
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err).splitlines()[0]
        try:
            free = shutil.disk_usage(path.parent).free
        except OSError:
            free = None
        if free is not None and free < 64 * 2**20:
            reason += f"; only {free / 2**20:.0f} MiB free on that disk"
        raise OSError(f"could not write {path}: {reason}") from err
    finally:
        tmp.unlink(missing_ok=True)


def _new_file_mode() -> int:
    """The mode a newly created file gets in this process: ``0o666`` less the umask."""
    try:
        with open("/proc/self/status") as f:  # Linux: read it without changing it
            mask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask
