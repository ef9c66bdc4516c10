"""Training: configuration, checkpoints, the loop, logs and distributed setup (``train.py``).

- :mod:`~pconv.training.config`: :class:`TrainConfig` (nested frozen dataclasses), checked by ``check``;
- :mod:`~pconv.training.setup`: data, model, loaders and run folder, checked before any step;
- :mod:`~pconv.training.schedule`: the stages and :func:`lr_at`;
- :mod:`~pconv.training.steps`: one training step and :func:`validate`;
- :mod:`~pconv.training.loop`: :func:`train` (returns a ``TrainSummary``) and :func:`train_stage`;
- :mod:`~pconv.training.checkpoint`: the typed :class:`TrainState` and checkpoint files;
- :mod:`~pconv.training.release`: the run's release file and its summary;
- :mod:`~pconv.training.surgery`: weights of one architecture made to start another (``--init``),
  the gate trained alone: functions of a model, never methods of it;
- :mod:`~pconv.training.stopping`: Ctrl-C and SIGTERM, saved after the step under way;
- :mod:`~pconv.training.logs`: CSV logs, sample grids, TensorBoard;
- :mod:`~pconv.training.distributed`: ``torchrun`` process groups.

The command line (``train.py``'s flags) is :mod:`pconv.train`. The names load on first use, so
``--help`` does not wait for PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pconv.lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": "pconv.training.config",
    "TrainState": "pconv.training.checkpoint",
    "load_checkpoint": "pconv.training.checkpoint",
    "lr_at": "pconv.training.schedule",
    "train": "pconv.training.loop",
    "train_stage": "pconv.training.loop",
    "validate": "pconv.training.steps",
}

__all__ = [
    "TrainConfig",
    "TrainState",
    "load_checkpoint",
    "lr_at",
    "train",
    "train_stage",
    "validate",
]  # literal, so linters see the lazy names as exported

if TYPE_CHECKING:
    from pconv.training.checkpoint import TrainState, load_checkpoint
    from pconv.training.config import TrainConfig
    from pconv.training.loop import train, train_stage
    from pconv.training.schedule import lr_at
    from pconv.training.steps import validate

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
