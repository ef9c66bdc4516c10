"""Writing files safely on a shared machine: temporary files that never follow a planted link,
concurrent writers, all-or-nothing sets of outputs, errors that name the target."""

from __future__ import annotations

import errno
import os
import tempfile
import threading
from pathlib import Path

import pytest

from pconv.files import TMP_SUFFIX, atomic_write, atomic_write_bytes, atomic_write_many, check_writable


def temporaries(folder: Path) -> list[str]:
    """The writer's temporary files in ``folder`` (not the planted links)."""
    return [n for n in os.listdir(folder) if n.endswith(TMP_SUFFIX) and not (folder / n).is_symlink()]


def test_a_link_planted_at_the_old_fixed_temporary_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "out.png"
    (tmp_path / ".out.png.tmp.png").symlink_to(victim)  # the name the writer used to use
    atomic_write_bytes(target, b"result")
    assert victim.read_text() == "precious" and target.read_bytes() == b"result"


def test_the_temporary_file_is_created_exclusively(tmp_path, monkeypatch):
    """Even an attacker who guesses the next random name cannot redirect the write: the name is
    taken (O_EXCL), so the writer moves on to another one."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    names = iter(["guessed", "fresh"])

    class Names:
        def __iter__(self):
            return self

        def __next__(self):
            return next(names)

    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: Names())
    (tmp_path / f".out.png.guessed{TMP_SUFFIX}").symlink_to(victim)
    used = []
    atomic_write(tmp_path / "out.png", lambda f: (used.extend(temporaries(tmp_path)), f.write(b"result")))
    assert victim.read_text() == "precious" and (tmp_path / "out.png").read_bytes() == b"result"
    assert used == [f".out.png.fresh{TMP_SUFFIX}"]


def test_a_link_at_the_target_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "out.png"
    target.symlink_to(victim)
    atomic_write_bytes(target, b"result")
    assert victim.read_text() == "precious"
    assert not target.is_symlink() and target.read_bytes() == b"result"


def test_temporary_names_are_hidden_unpredictable_and_not_images(tmp_path):
    used = []
    for _ in range(2):
        atomic_write(tmp_path / "a.png", lambda f: (used.extend(temporaries(tmp_path)), f.write(b"x")))
    assert used[0] != used[1]
    assert all(n.startswith(".a.png.") and n.endswith(TMP_SUFFIX) for n in used)


def test_concurrent_writers_each_leave_a_whole_file(tmp_path):
    target = tmp_path / "out.bin"
    contents = [bytes([i]) * 2_000_000 for i in range(8)]
    barrier = threading.Barrier(len(contents))

    def writer(data):
        barrier.wait()
        atomic_write(target, lambda f: [f.write(data[i : i + 65536]) for i in range(0, len(data), 65536)])

    threads = [threading.Thread(target=writer, args=(c,)) for c in contents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert target.read_bytes() in contents
    assert os.listdir(tmp_path) == ["out.bin"]


def test_a_failed_set_of_writes_changes_no_target(tmp_path):
    first, second = tmp_path / "first.png", tmp_path / "second.png"
    first.write_bytes(b"old")

    def full(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=f"could not write {second}: No space left on device"):
        atomic_write_many([(first, lambda f: f.write(b"new")), (second, full)])
    assert first.read_bytes() == b"old" and not second.exists()
    assert sorted(os.listdir(tmp_path)) == ["first.png"]


def test_an_unwritable_folder_names_the_target_not_the_temporary_file(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / ".out.png.x1y2.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(OSError) as info:
        atomic_write_bytes(tmp_path / "out.png", b"x")
    assert str(info.value) == f"could not write {tmp_path / 'out.png'}: Read-only file system"
    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    with pytest.raises(OSError, match=f"cannot write to {tmp_path}: Read-only file system"):
        check_writable(tmp_path)


@pytest.mark.parametrize("error", [ValueError("a bug in a writer"), KeyboardInterrupt()])
def test_any_failing_writer_leaves_no_temporary_file_and_keeps_its_error(tmp_path, error):
    target = tmp_path / "out.png"

    def write(f):
        f.write(b"partial")
        raise error

    with pytest.raises(type(error)):
        atomic_write(target, write)
    assert list(tmp_path.iterdir()) == []
