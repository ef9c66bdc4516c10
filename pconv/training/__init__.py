"""Training: configuration, checkpoints, the loop, logs and distributed setup (``train.py``).

- :mod:`~pconv.training.config`: :class:`TrainConfig` (nested frozen dataclasses) and the command line built from it;
- :mod:`~pconv.training.checkpoint`: the typed :class:`TrainState` and checkpoint files;
- :mod:`~pconv.training.loop`: :func:`train`, :func:`train_stage`, :func:`validate`;
- :mod:`~pconv.training.logs`: CSV logs, sample grids, TensorBoard;
- :mod:`~pconv.training.distributed`: ``torchrun`` process groups.

The names load on first use, so the command line's ``--help`` does not wait for PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pconv.lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": "pconv.training.config",
    "TrainState": "pconv.training.checkpoint",
    "load_checkpoint": "pconv.training.checkpoint",
    "lr_at": "pconv.training.loop",
    "train": "pconv.training.loop",
    "train_stage": "pconv.training.loop",
    "validate": "pconv.training.loop",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from pconv.training.checkpoint import TrainState, load_checkpoint
    from pconv.training.config import TrainConfig
    from pconv.training.loop import lr_at, train, train_stage, validate

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
