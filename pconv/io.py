"""Release files: safetensors weights with the model configuration in their metadata.

A release file rebuilds its model alone: ``load_model(path)`` needs no architecture
arguments. (Training checkpoints, with optimiser state, are the training script's business.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save
from torch import nn

from pconv.errors import CheckpointError, MissingFileError
from pconv.files import atomic_write_bytes
from pconv.metadata import DEFAULT_WEIGHTS, FORMAT, hole_depth_of, read_metadata
from pconv.models import ARCHITECTURES, architecture_of

__all__ = ["DEFAULT_WEIGHTS", "hole_depth_of", "load_model", "read_metadata", "save_model", "sha256_of"]


def save_model(
    model: nn.Module, path: str | Path, *, dtype: torch.dtype | None = None, extra: dict[str, str] | None = None
) -> str:
    """Write ``model`` as a release file (atomically) and return its sha256.

    Args:
        model: a model of a registered architecture (its ``config`` is stored).
        path: destination ``.safetensors`` file.
        dtype: store floating-point tensors in this dtype (e.g. ``torch.float16``) to halve the size.
        extra: more string metadata (training summary, licence, ...).
    """
    path = Path(path)
    tensors = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu().contiguous()
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value
    metadata = {
        "format": FORMAT,
        "architecture": architecture_of(model).name,
        "config": json.dumps(model.config.to_dict()),  # type: ignore[attr-defined]
        **(extra or {}),
    }
    atomic_write_bytes(path, save(tensors, metadata=metadata))
    return sha256_of(path)


def load_model(path: str | Path | None = None, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model from a release file written by :func:`save_model` (in eval mode, float32).

    Args:
        path: the release file, or the name of a pretrained model of :mod:`pconv.registry`
            (``"pconv_unet_photos_512"``); ``None``: the project's released model (:data:`DEFAULT_WEIGHTS`).
        device: where the model goes.

    The model's ``hole_depth`` tells :func:`pconv.inpaint.inpaint` what hole depth it was
    trained for (see :func:`hole_depth_of`).

    Raises:
        MissingFileError: no such file (for the default: the release is not installed).
        CheckpointError: not a readable pconv release file, or one with bad weights.
    """
    if path is None:
        path = DEFAULT_WEIGHTS
        if not path.is_file():
            raise MissingFileError(f"no released model at {path}; pass a release file (--weights FILE)")
    if not Path(path).is_file():
        from pconv.registry import MODELS, weights_of

        if str(path) in MODELS:  # a registered name: its shipped weights
            path = weights_of(str(path))
    path = Path(path)
    if not path.is_file():
        from pconv.registry import list_models

        names = ", ".join(list_models(pretrained=True))
        raise MissingFileError(f"model file not found: {path} (a release file, or a trained model's name: {names})")
    try:
        with safe_open(str(path), framework="pt") as f:  # one read: metadata and tensors
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (a safe_open handle)
    except (SafetensorError, OSError, ValueError) as err:
        with open(path, "rb") as f:
            if f.read(2) == b"PK":  # a zip archive: what torch.save writes
                raise CheckpointError(
                    f"{path} is a training checkpoint (torch.save), not a release file: pass the "
                    "model.safetensors that train.py wrote in the same run folder"
                ) from err
        raise CheckpointError(f"{path} is not a readable safetensors file: {err}") from err
    if metadata.get("format") != FORMAT or metadata.get("architecture") not in ARCHITECTURES:
        raise CheckpointError(f"{path} is not a pconv release file (no pconv architecture in its metadata)")
    arch = ARCHITECTURES[metadata["architecture"]]
    try:
        with _no_initialisation():  # every parameter is loaded right after
            model = arch.build(arch.stored_config(json.loads(metadata.get("config", ""))))
        # copies of their own (safetensors' float32 tensors map the file, which may change or
        # vanish later), taken as the parameters: one copy, not a second by load_state_dict
        tensors = {k: _own_float32(v) for k, v in tensors.items()}
        model.load_state_dict(tensors, assign=True)
        model.hole_depth = hole_depth_of(metadata)
    except (TypeError, ValueError, RuntimeError) as err:  # JSONDecodeError is a ValueError
        raise CheckpointError(
            f"{path} has a bad configuration or weights for {metadata['architecture']}: {str(err).splitlines()[0]}"
        ) from err
    broken = [k for k, v in tensors.items() if v.is_floating_point() and not _finite(v)]
    if broken:
        raise CheckpointError(
            f"{path} has non-finite weights (NaN or infinity) in {len(broken)} tensor(s), e.g. {broken[0]}: "
            "the training run that wrote it diverged"
        )
    return model.to(device).eval()


def _own_float32(values: torch.Tensor) -> torch.Tensor:
    """A copy of a loaded tensor, floating point as float32."""
    return values.to(torch.float32, copy=True) if values.is_floating_point() else values.clone()


def _finite(values: torch.Tensor) -> bool:
    """Whether a float32 tensor holds no NaN or infinity: one sum (NaN and infinities carry through
    it), and the exact test only when the sum is not finite (it may overflow without them)."""
    return bool(torch.isfinite(values.sum())) or bool(torch.isfinite(values).all())


@contextlib.contextmanager
def _no_initialisation() -> Iterator[None]:
    """Build layers without drawing random initial weights (a strict ``load_state_dict`` replaces
    every one of them; the draws cost a sizeable part of a short ``predict.py`` run)."""
    layers = (nn.Conv2d, nn.Conv3d, nn.BatchNorm2d)
    saved = [(cls, cls.__dict__.get("reset_parameters")) for cls in layers]
    try:
        for cls in layers:
            cls.reset_parameters = lambda self: None
        yield
    finally:
        for cls, original in saved:
            if original is None:
                del cls.reset_parameters
            else:
                cls.reset_parameters = original


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
