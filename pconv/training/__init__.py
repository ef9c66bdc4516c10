"""Training: configuration, checkpoints, the loop, logs and distributed setup (``train.py``).

- :mod:`~pconv.training.config`: :class:`TrainConfig` (nested frozen dataclasses) and the command line built from it;
- :mod:`~pconv.training.checkpoint`: the typed :class:`TrainState` and checkpoint files;
- :mod:`~pconv.training.loop`: :func:`train`, :func:`train_stage`, :func:`validate`;
- :mod:`~pconv.training.logs`: CSV logs, sample grids, TensorBoard;
- :mod:`~pconv.training.distributed`: ``torchrun`` process groups.
"""

from pconv.training.checkpoint import TrainState, load_checkpoint
from pconv.training.config import TrainConfig, build_parser, config_from_args
from pconv.training.loop import lr_at, train, train_stage, validate

__all__ = ["TrainConfig", "TrainState", "build_parser", "config_from_args", "load_checkpoint", "lr_at", "train",
           "train_stage", "validate"]
