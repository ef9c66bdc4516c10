"""Recipes: every stage that made a release, replayable by one command.

A recipe is a TOML file (``recipes/*.toml``) with ``inputs`` (folders of photos, joined; files
pinned by sha256) and ``stages``, each one of:

- ``train = { ... }``: a training run, its options as ``config.json`` names them (``train.py``'s
  flags with ``_`` for ``-``); ``"{name}"`` in a value is an input's path or an earlier stage's file.
- ``average = ["A", "B"]``: the mean of earlier stages' weights (floating tensors; the others must
  be equal), as the release's gate was averaged from two runs.
- ``cast = "A"`` with ``dtype = "float16"``: the same weights stored in another precision.

:func:`replay` runs them in order into ``OUT/stages/``; a stage whose file exists is done, a
training run that stopped is resumed, so a replay that was interrupted continues where it stopped.
The last stage's file is copied to ``OUT/<output>`` with the recipe in its metadata (``recipe``).
On one machine a replay gives the same weights (the training runs are seeded and deterministic
with ``workers = 0`` or 1); the ``training`` metadata also records each run's seconds, so compare
weights, not files.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pconv.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # the train extra installs it on Python 3.10
    import tomli as tomllib

__all__ = ["Recipe", "Stage", "load_recipe", "replay"]

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_DTYPES = ("float16", "bfloat16", "float32")


@dataclass(frozen=True)
class Stage:
    """One step of a recipe: ``kind`` is ``train``, ``average`` or ``cast``; ``spec`` its table."""

    name: str
    kind: str
    spec: Any
    dtype: str = "float32"


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe (see the module's docstring)."""

    name: str
    output: str
    folders: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, dict[str, str]] = field(default_factory=dict)
    stages: list[Stage] = field(default_factory=list)
    text: str = ""

    def to_json(self) -> str:
        """The recipe as stored in the release file's metadata."""
        return json.dumps(tomllib.loads(self.text), sort_keys=True)


def load_recipe(path: str | Path) -> Recipe:
    """Read and check a recipe file.

    Raises:
        ConfigError: unreadable TOML, or a recipe that names an unknown stage kind, refers to a
            name defined nowhere before it, or repeats a name.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
        raw = tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{path} is not a readable recipe: {err}") from None
    where = f"recipe {path}"
    name, output = raw.get("name"), raw.get("output")
    if not isinstance(name, str) or not isinstance(output, str) or not output.endswith(".safetensors"):
        raise ConfigError(f"{where} needs a name and an output ending in .safetensors")
    if Path(output).name != output:
        raise ConfigError(f"{where}: the output is a file name, not a path ({output!r})")
    folders: dict[str, list[str]] = {}
    files: dict[str, dict[str, str]] = {}
    for key, value in (raw.get("inputs") or {}).items():
        _check_name(key, where)
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            folders[key] = value
        elif isinstance(value, dict) and isinstance(value.get("file"), str) and isinstance(value.get("sha256"), str):
            files[key] = value
        else:
            raise ConfigError(f"{where}: input {key!r} is neither a list of folders nor a file with its sha256")
    known = set(folders) | set(files)
    stages = []
    for table in raw.get("stages") or []:
        stage = _stage(table, known, where)
        stages.append(stage)
        known.add(stage.name)
    if not stages:
        raise ConfigError(f"{where} has no stages")
    return Recipe(name, output, folders, files, stages, text)


def _check_name(name: object, where: str) -> None:
    if not isinstance(name, str) or not name or not set(name) <= _NAME_CHARS:
        raise ConfigError(f"{where}: {name!r} is not a name (letters, digits, _ and -)")


def _stage(table: Any, known: set[str], where: str) -> Stage:
    """One ``[[stages]]`` table, checked against the names defined before it."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: a stage is a table")
    name = table.get("name")
    _check_name(name, where)
    if name in known:
        raise ConfigError(f"{where}: the name {name!r} is used twice")
    kinds = [k for k in ("train", "average", "cast") if k in table]
    if len(kinds) != 1:
        raise ConfigError(f"stage {name!r} needs exactly one of train, average or cast")
    kind, spec = kinds[0], table[kinds[0]]
    dtype = table.get("dtype", "float32")
    if dtype not in _DTYPES:
        raise ConfigError(f"stage {name!r}: dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    if kind == "train":
        if not isinstance(spec, dict):
            raise ConfigError(f"stage {name!r}: train is a table of train.py options")
        if {"out", "resume", "overwrite"} & set(spec):
            raise ConfigError(f"stage {name!r}: out, resume and overwrite are the recipe's to set")
        refs = [v[1:-1] for v in spec.values() if isinstance(v, str) and v.startswith("{") and v.endswith("}")]
    else:
        refs = spec if kind == "average" else [spec]
        if not refs or not all(isinstance(r, str) for r in refs) or (kind == "average" and len(refs) < 2):
            what = "two or more earlier stages" if kind == "average" else "an earlier stage"
            raise ConfigError(f"stage {name!r}: {kind} names {what}")
    unknown = [r for r in refs if r not in known]
    if unknown:
        raise ConfigError(f"stage {name!r} refers to {unknown[0]!r}, which no input or earlier stage defines")
    return Stage(name, kind, spec, dtype)


def replay(recipe: Recipe, out: str | Path, root: str | Path = ".") -> Path:
    """Run every stage of ``recipe`` not yet done in ``out``; returns the release file.

    Args:
        recipe: from :func:`load_recipe`.
        out: the replay's folder (created); one recipe per folder.
        root: where the inputs' relative paths start (the repository, for the shipped recipes).

    Raises:
        ConfigError: ``out`` holds another recipe's replay, or an input is missing or differs.
        CheckpointError, InputError, ...: as the stages' own steps raise them.
    """
    out, root = Path(out), Path(root)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stages").mkdir(exist_ok=True)
    _claim(out, recipe)
    paths = _inputs(recipe, out, root)
    for stage in recipe.stages:
        paths[stage.name] = _run(stage, paths, out / "stages")
    return _finish(recipe, paths[recipe.stages[-1].name], out)


def _claim(out: Path, recipe: Recipe) -> None:
    """``OUT/recipe.json`` says which recipe the folder replays; another one is refused."""
    from pconv.files import atomic_write_bytes

    marker = out / "recipe.json"
    if marker.is_file():
        if marker.read_text(encoding="utf-8") != recipe.to_json():
            raise ConfigError(f"{out} holds the replay of another recipe; choose another --out")
        return
    atomic_write_bytes(marker, recipe.to_json())


def _inputs(recipe: Recipe, out: Path, root: Path) -> dict[str, Path]:
    """Each input's path: files checked against their sha256, folder lists joined as links."""
    from pconv.io import sha256_of

    paths: dict[str, Path] = {}
    for name, spec in recipe.files.items():
        path = root / spec["file"]
        if not path.is_file():
            hint = f" ({spec['source']})" if spec.get("source") else ""
            raise ConfigError(f"input {name}: {path} not found{hint}")
        if sha256_of(path) != spec["sha256"]:
            raise ConfigError(f"input {name}: {path} is not the file the recipe names (sha256 differs)")
        paths[name] = path.resolve()
    for name, folders in recipe.folders.items():
        joined = out / "inputs" / name
        joined.mkdir(parents=True, exist_ok=True)
        for i, folder in enumerate(folders):
            source = (root / folder).resolve()
            if not source.is_dir():
                raise ConfigError(f"input {name}: {root / folder} is not a folder")
            link = joined / f"{i}-{Path(folder).name}"
            if link.is_symlink() and Path(os.readlink(link)) == source:
                continue
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(source, target_is_directory=True)
        paths[name] = joined
    return paths


def _run(stage: Stage, paths: dict[str, Path], stages: Path) -> Path:
    """Run one stage unless its file exists; returns that file."""
    if stage.kind == "train":
        return _train(stage, paths, stages / stage.name)
    target = stages / f"{stage.name}.safetensors"
    if not target.is_file():
        sources = [paths[r] for r in (stage.spec if stage.kind == "average" else [stage.spec])]
        _combine(sources, target, stage.dtype)
    return target


def _train(stage: Stage, paths: dict[str, Path], run: Path) -> Path:
    """A training run in ``run``: started, resumed after an interruption, or already finished."""
    from pconv.training import train
    from pconv.training.config import TrainConfig, check
    from pconv.training.setup import inherit_init_architecture

    def resolve(value: Any) -> Any:
        if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
            return str(paths[value[1:-1]])
        return value

    options = {k: resolve(v) for k, v in stage.spec.items()}
    if "init" in options:
        options = inherit_init_architecture(options)
    resume = (run / "last.pt").is_file() and (run / "config.json").is_file()
    try:
        cfg = TrainConfig.from_flat({**options, "out": str(run), "resume": resume, "overwrite": not resume})
    except ValueError as err:
        raise ConfigError(f"stage {stage.name}: {err}") from None
    check(cfg)
    summary = train(cfg)
    if summary.release is None:
        raise ConfigError(f"stage {stage.name} wrote no release file (was it stopped?); replay again to resume it")
    return Path(summary.release)


def _combine(sources: list[Path], target: Path, dtype: str) -> None:
    """The mean of ``sources``' weights (one source: its own) stored as ``dtype`` with the first
    source's metadata."""
    import torch
    from safetensors.torch import load_file, save

    from pconv.files import atomic_write_bytes
    from pconv.io import read_metadata

    metadata = read_metadata(sources[0])
    if any(read_metadata(s).get("config") != metadata.get("config") for s in sources[1:]):
        raise ConfigError(f"{target.stem}: the weights to average are of different architectures")
    loaded = [load_file(s) for s in sources]
    if any(t.keys() != loaded[0].keys() for t in loaded[1:]):
        raise ConfigError(f"{target.stem}: the weights to average hold different tensors")
    tensors = {}
    for key, first in loaded[0].items():
        values = [t[key] for t in loaded]
        if first.is_floating_point():
            mean = torch.stack([v.float() for v in values]).mean(0)
            tensors[key] = mean.to(getattr(torch, dtype)).contiguous()
        elif all(torch.equal(v, first) for v in values[1:]):
            tensors[key] = first
        else:
            raise ConfigError(f"{target.stem}: {key} differs between the weights to average and cannot be averaged")
    atomic_write_bytes(target, save(tensors, metadata=metadata))


def _finish(recipe: Recipe, last: Path, out: Path) -> Path:
    """The last stage's file with the recipe in its metadata, as ``OUT/<output>``."""
    import torch
    from safetensors.torch import load_file, save

    from pconv.files import atomic_write_bytes
    from pconv.io import read_metadata

    release = out / recipe.output
    metadata = {**read_metadata(last), "recipe": recipe.to_json()}
    tensors = load_file(last)
    if release.is_file() and read_metadata(release) == metadata:
        done = load_file(release)
        if done.keys() == tensors.keys() and all(torch.equal(done[k], tensors[k]) for k in tensors):
            return release  # written by an earlier call (safetensors orders metadata at random)
    atomic_write_bytes(release, save(tensors, metadata=metadata))
    return release
