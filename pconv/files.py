"""One way to write a file: atomically, so a reader never sees a partial file.

The content goes to a hidden temporary file beside the target, which then replaces the target in
one step (``os.replace``). The temporary file is created exclusively under an unpredictable name
(``tempfile.mkstemp``: ``O_CREAT | O_EXCL``, never through a symbolic link) and written through
the descriptor that created it, so another user who can write to the folder cannot redirect the
content by planting a link, and two processes writing the same target never share a temporary
file: each replaces the target with its own complete file, the last one winning. Its name ends
in ``.tmp``, which no tool reads as an image.

On any failure the temporary file is removed and the target is left as it was; a full disk or a
read-only folder becomes an ``OSError`` that names the target, the reason and, when the disk is
nearly full, the free space. The file gets the permissions of the regular file it replaces, or
those of any newly created file (``mkstemp`` and some writers, safetensors among them, create
owner-only files, which others on a shared machine could not read).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TextIO

__all__ = [
    "TMP_SUFFIX",
    "Writer",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_csv",
    "atomic_write_many",
    "atomic_save_image",
    "check_writable",
    "open_append",
    "remove_stale_temporaries",
    "refused_pickle",
]

# Temporary files are named ``.<target name>.<random>.tmp``.
TMP_SUFFIX = ".tmp"


Writer = Callable[[BinaryIO], None]


def atomic_write(path: str | Path, write: Writer) -> None:
    """Call ``write(file)`` to fill a temporary file opened for binary writing, then move it to
    ``path`` atomically.

    Raises:
        OSError: the file could not be written (the message names ``path``, the reason and, when
            the disk is nearly full, the free space); nothing is left behind.
    """
    atomic_write_many([(Path(path), write)])


def atomic_write_many(writes: list[tuple[Path, Writer]]) -> None:
    """Several files written as one: every temporary file is filled first, and only when all of
    them are complete do they replace their targets. When any write fails, no target changes
    (a full disk while writing the third file leaves the first two as they were).

    Raises:
        OSError: as :func:`atomic_write`, naming the target that failed.
    """
    staged: list[tuple[str, Path]] = []
    try:
        for path, write in writes:
            staged.append((_stage(path, write), path))
        for tmp, path in staged:
            try:
                os.replace(tmp, path)
            except OSError as err:
                raise _failure(path, err) from err
    finally:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)  # only those not moved into place are still there


def _stage(path: Path, write: Writer) -> str:
    """A complete temporary file beside ``path`` with the content and mode it should have."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), _mode_for(path))
        return tmp
    except BaseException as err:
        if tmp is not None:  # whatever went wrong (a bug in a writer, Ctrl-C), no temporary file stays
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, (OSError, RuntimeError)):  # torch.save reports a full disk as a RuntimeError
            raise _failure(path, err) from err
        raise


def _failure(path: Path, err: Exception) -> OSError:
    """One line naming the target (never the temporary file), the reason and a nearly full disk."""
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err).splitlines()[0]
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    if free is not None and free < 64 * 2**20:
        reason += f"; only {free / 2**20:.0f} MiB free on that disk"
    return OSError(f"could not write {path}: {reason}")


def atomic_write_bytes(path: str | Path, data: bytes | str) -> None:
    """:func:`atomic_write` of ``data`` (text is written as UTF-8)."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    atomic_write(path, lambda f: f.write(payload))


def atomic_write_csv(path: str | Path, rows: list[list[object]] | list[dict], header: list[str] | None = None) -> None:
    """:func:`atomic_write` of a CSV file: ``rows`` of values, or of dicts keyed by ``header``."""
    buffer = io.StringIO(newline="")
    if rows and isinstance(rows[0], dict):
        writer = csv.DictWriter(buffer, fieldnames=header or list(rows[0]))
        writer.writeheader()
    else:
        writer = csv.writer(buffer)
        if header is not None:
            writer.writerow(header)
    writer.writerows(rows)
    atomic_write_bytes(path, buffer.getvalue())


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files this module's writers leave when killed mid-write
    (``.<name>.<random>.tmp``, hundreds of MB for a checkpoint) from ``folder``; returns them.
    Call it only where no other writer is at work."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [
        p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX) and p.name.count(".") >= 3
    ]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def open_append(path: str | Path) -> TextIO:
    """``path`` opened for appending text, never through a symbolic link (a link planted there is an
    error, not a way to write elsewhere); the file must exist (write it with :func:`atomic_write`).

    Raises:
        OSError: the file is missing, is a link, or cannot be opened.
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0))
    return os.fdopen(fd, "a", newline="", encoding="utf-8")


def atomic_save_image(path: str | Path, image: object, fmt: str = "PNG", **options: object) -> None:
    """:func:`atomic_write` of a PIL image, or of anything with a ``savefig`` (a matplotlib figure)."""
    if hasattr(image, "savefig"):
        atomic_write(path, lambda f: image.savefig(f, format=fmt.lower(), **options))
    else:
        atomic_write(path, lambda f: image.save(f, format=fmt, **options))


def check_writable(folder: str | Path) -> None:
    """Create ``folder`` if needed and make sure a file can be created in it, before long work
    whose results would go there.

    Raises:
        OSError: one line naming the folder and the reason.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise OSError(f"cannot write to {folder}: {err.strerror or err}") from err


def _mode_for(path: Path) -> int:
    """The mode of the regular file at ``path`` (not following a link), else a new file's."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return _new_file_mode()
    return stat.S_IMODE(info.st_mode) if stat.S_ISREG(info.st_mode) else _new_file_mode()


def _new_file_mode() -> int:
    """The mode a newly created file gets in this process: ``0o666`` less the umask."""
    try:
        with open("/proc/self/status") as f:  # Linux: read it without changing it
            mask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def refused_pickle(path: str | Path, err: Exception) -> str:
    """The one-line reason ``torch.load(path, weights_only=True)`` refused a file."""
    if "Unsupported global" in str(err):  # a class or function the file would call
        return (
            f"{path} holds Python objects besides weights, which could run code when loaded: refused (only "
            "tensors and plain values are read)"
        )
    return f"{path} is not a PyTorch weights file"
