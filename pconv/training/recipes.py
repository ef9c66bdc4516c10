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
# Training options that name files or folders: in a recipe always an input or an earlier stage
# ("{name}"), so every file a replay reads is pinned or inside --root.
_PATH_OPTIONS = ("train", "val", "init", "masks")
_VGG_NAMES = ("auto", "imagenet", "hed", "none")


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
    raw: dict = field(default_factory=dict)

    def to_json(self) -> str:
        """The recipe as stored in the release file's metadata."""
        return json.dumps(self.raw, sort_keys=True)


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
    inputs = raw.get("inputs") or {}
    if not isinstance(inputs, dict):
        raise ConfigError(f"{where}: inputs is a table of names")
    for key, value in inputs.items():
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
    recipe = Recipe(name, output, folders, files, stages, raw)
    try:
        recipe.to_json()
    except (TypeError, ValueError) as err:  # a TOML date or time, which JSON metadata cannot hold
        raise ConfigError(f"{where}: {err}") from None
    return recipe


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
        _check_train_options(name, spec, "dtype" in table)
        refs = [v[1:-1] for v in spec.values() if _is_ref(v)]
    else:
        refs = spec if kind == "average" else [spec]
        if not refs or not all(isinstance(r, str) for r in refs) or (kind == "average" and len(refs) < 2):
            what = "two or more earlier stages" if kind == "average" else "an earlier stage"
            raise ConfigError(f"stage {name!r}: {kind} names {what}")
    unknown = [r for r in refs if r not in known]
    if unknown:
        raise ConfigError(f"stage {name!r} refers to {unknown[0]!r}, which no input or earlier stage defines")
    return Stage(name, kind, spec, dtype)


def _is_ref(value: object) -> bool:
    return isinstance(value, str) and value.startswith("{") and value.endswith("}")


def _check_train_options(name: str, spec: object, has_dtype: bool) -> None:
    """A train stage's table: ``train.py`` options only, paths only as references."""
    from pconv.training.config import TrainConfig

    if not isinstance(spec, dict):
        raise ConfigError(f"stage {name!r}: train is a table of train.py options")
    if has_dtype:
        raise ConfigError(f"stage {name!r}: dtype belongs to a cast or average stage")
    if {"out", "resume", "overwrite"} & set(spec):
        raise ConfigError(f"stage {name!r}: out, resume and overwrite are the recipe's to set")
    unknown = sorted(set(spec) - set(TrainConfig().to_flat()))
    if unknown:
        raise ConfigError(f"stage {name!r}: {unknown[0]!r} is not a train.py option (see train.py --help; _ for -)")
    for key in _PATH_OPTIONS:
        if key in spec and not _is_ref(spec[key]):
            raise ConfigError(f'stage {name!r}: {key} must name an input or an earlier stage, as "{{name}}"')
    if spec.get("vgg_weights", "auto") not in _VGG_NAMES:
        raise ConfigError(f"stage {name!r}: vgg_weights must be one of {', '.join(_VGG_NAMES)} in a recipe")


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
    out, root = Path(out), Path(root).resolve()
    files, folders = _check_inputs(recipe, root, out)  # before anything is written
    out.mkdir(parents=True, exist_ok=True)
    (out / "stages").mkdir(exist_ok=True)
    _claim(out, recipe, root)
    paths = {**files, **{name: _join(out / "inputs" / name, sources) for name, sources in folders.items()}}
    for stage in recipe.stages:
        paths[stage.name] = _run(stage, paths, out / "stages")
    return _finish(recipe, paths[recipe.stages[-1].name], out)


def _claim(out: Path, recipe: Recipe, root: Path) -> None:
    """``OUT/recipe.json`` says which recipe the folder replays, from which root; another is refused."""
    from pconv.files import atomic_write_bytes

    marker = out / "recipe.json"
    claim = json.dumps({"recipe": json.loads(recipe.to_json()), "root": str(root)}, sort_keys=True)
    if marker.is_file():
        if marker.read_text(encoding="utf-8") != claim:
            raise ConfigError(f"{out} holds the replay of another recipe or root; choose another --out")
        return
    atomic_write_bytes(marker, claim)


def _check_inputs(recipe: Recipe, root: Path, out: Path) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """The inputs' paths, each inside ``root``: files checked against their sha256, folders
    that exist and do not hold ``out``."""
    from pconv.io import sha256_of

    files: dict[str, Path] = {}
    for name, spec in recipe.files.items():
        path = _inside(root, spec["file"], name)
        if not path.is_file():
            hint = f" ({spec['source']})" if spec.get("source") else ""
            raise ConfigError(f"input {name}: {path} not found{hint}")
        if sha256_of(path) != spec["sha256"]:
            raise ConfigError(f"input {name}: {path} is not the file the recipe names (sha256 differs)")
        files[name] = path
    folders: dict[str, list[Path]] = {}
    for name, relatives in recipe.folders.items():
        folders[name] = [_inside(root, folder, name) for folder in relatives]
        for source in folders[name]:
            if not source.is_dir():
                raise ConfigError(f"input {name}: {source} is not a folder")
            if out.resolve().is_relative_to(source):
                raise ConfigError(f"input {name}: {source} holds --out {out}; the replay would read its own files")
    return files, folders


def _join(joined: Path, sources: list[Path]) -> Path:
    """A folder of links to ``sources`` (what ``train.py`` searches as one folder)."""
    joined.mkdir(parents=True, exist_ok=True)
    for i, source in enumerate(sources):
        link = joined / f"{i}-{source.name}"
        if link.is_symlink() and Path(os.readlink(link)) == source:
            continue
        if link.exists() and not link.is_symlink():
            raise ConfigError(f"{link} is not a link this recipe made; remove it or choose another --out")
        link.unlink(missing_ok=True)
        link.symlink_to(source, target_is_directory=True)
    return joined


def _inside(root: Path, relative: str, name: str) -> Path:
    """``root / relative`` resolved, refused unless it stays inside ``root``."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise ConfigError(f"input {name}: {relative} is outside the root {root}")
    return path


def _run(stage: Stage, paths: dict[str, Path], stages: Path) -> Path:
    """Run one stage unless its file exists; returns that file."""
    if stage.kind == "train":
        return _train(stage, paths, stages / stage.name)
    from pconv.io import read_metadata, sha256_of

    target = stages / f"{stage.name}.safetensors"
    sources = [paths[r] for r in (stage.spec if stage.kind == "average" else [stage.spec])]
    digests = json.dumps([sha256_of(p) for p in sources])
    if not target.is_file() or read_metadata(target).get("recipe_sources") != digests:
        _combine(sources, target, stage.dtype, digests)  # new, or its sources changed since
    return target


def _train(stage: Stage, paths: dict[str, Path], run: Path) -> Path:
    """A training run in ``run``: started, resumed after an interruption, or already finished."""
    from pconv.training import train
    from pconv.training.config import TrainConfig, check
    from pconv.training.setup import inherit_init_architecture

    options = {k: str(paths[v[1:-1]]) if _is_ref(v) else v for k, v in stage.spec.items()}
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


def _combine(sources: list[Path], target: Path, dtype: str, digests: str) -> None:
    """The mean of ``sources``' weights (one source: its own) stored as ``dtype`` with the first
    source's metadata and the sources' sha256 (``digests``)."""
    import torch
    from safetensors.torch import load_file, save

    from pconv.files import atomic_write_bytes
    from pconv.io import read_metadata

    metadata = {**read_metadata(sources[0]), "recipe_sources": digests}
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
    metadata = {k: v for k, v in read_metadata(last).items() if k != "recipe_sources"}
    metadata["recipe"] = recipe.to_json()
    tensors = load_file(last)
    if release.is_file() and read_metadata(release) == metadata:
        done = load_file(release)
        if done.keys() == tensors.keys() and all(torch.equal(done[k], tensors[k]) for k in tensors):
            return release  # written by an earlier call (safetensors orders metadata at random)
    atomic_write_bytes(release, save(tensors, metadata=metadata))
    return release
