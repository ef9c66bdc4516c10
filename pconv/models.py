"""The model interface every inference path relies on, and the one registry of architectures.

:class:`InpaintingModel` is what :func:`pconv.inpaint.inpaint`, the tools, the web app and the
ONNX runner need of a model; the PConv U-Net, the UNet3+ and :class:`pconv.onnx_model.OnnxModel`
meet it. :data:`ARCHITECTURES` names each trainable architecture with its configuration class:
release files, ``torch.hub``, the training configuration and the tests read it. It imports no
PyTorch (model classes load on first use), so the command line's ``--help`` stays fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pconv.configs import PConvUNetConfig, UNet3PlusConfig, migrate_pconv_unet

if TYPE_CHECKING:
    from torch import Tensor, nn

__all__ = ["ARCHITECTURES", "Architecture", "InpaintingModel", "architecture_of"]


@runtime_checkable
class InpaintingModel(Protocol):
    """A model as inference uses it.

    Attributes:
        in_channels: image channels it takes (1 or 3).
        multiple: input sides are padded to a multiple of this; tiles are aligned to it.
        hole_depth: the hole depth in pixels it handles at full resolution (from its release
            file; ``None``: unknown, :data:`pconv.tiling.DEFAULT_HOLE_DEPTH` is assumed).
        can_sample: whether ``sample=True`` draws Monte Carlo dropout samples.

    A model may also have ``predict_holes(image, mask, sample=False)``: the call's values at the
    hole pixels (others may hold anything finite), computed for less; inference calls it when
    present (:meth:`pconv.PConvUNet.predict_holes`).
    """

    in_channels: int
    multiple: int
    hole_depth: float | None
    can_sample: bool

    def __call__(self, image: Tensor, mask: Tensor, sample: bool = False) -> Tensor:
        """``image (N, C, H, W)`` in [0, 1] and ``mask (N|1, 1, H, W)`` (1 = known) -> the
        prediction ``(N, C, H, W)``; ``sample=True`` keeps dropout on (one Monte Carlo draw)."""
        ...

    def eval(self) -> Any: ...

    def to(self, device: Any) -> Any: ...


@dataclass(frozen=True)
class Architecture:
    """A trainable architecture: its name in files and flags, its configuration and model classes."""

    name: str
    config: type
    module: str
    class_name: str
    deep_supervision: bool = False  # forward(..., deep=True) returns auxiliary outputs for training
    migrate: Callable[[dict], dict] | None = None  # stored fields of older files -> today's

    def stored_config(self, stored: dict) -> Any:
        """The configuration a file stored (its metadata's or checkpoint's ``config``), through the
        architecture's one migration of older files.

        Raises:
            ValueError: fields that are not a valid configuration (or of a retired experiment).
            TypeError: unknown fields.
        """
        if not isinstance(stored, dict):
            raise ValueError(f"a configuration is a mapping of fields, got {type(stored).__name__}")
        return self.config(**(self.migrate(stored) if self.migrate else stored))

    @property
    def model(self) -> type[nn.Module]:
        """The model class (imports PyTorch)."""
        return getattr(importlib.import_module(self.module), self.class_name)

    def build(self, config: Any = None, **fields: Any) -> nn.Module:
        """A new, randomly initialised model from a configuration (or its fields as keywords)."""
        return self.model(config if config is not None else self.config(**fields))


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("pconv_unet", PConvUNetConfig, "pconv.unet", "PConvUNet", migrate=migrate_pconv_unet),
        Architecture("unet3plus", UNet3PlusConfig, "pconv.unet3plus", "UNet3Plus", deep_supervision=True),
    )
}


def architecture_of(model: nn.Module) -> Architecture:
    """The registered architecture of ``model``.

    Raises:
        TypeError: a model of no registered architecture.
    """
    for arch in ARCHITECTURES.values():
        if type(model) is arch.model:
            return arch
    raise TypeError(f"{type(model).__name__} is not a registered architecture ({', '.join(ARCHITECTURES)})")
