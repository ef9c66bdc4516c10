"""Models by name, as timm names them: ``pconv.create_model("pconv_unet_photos_512", pretrained=True)``.

Each name is an architecture of :data:`pconv.models.ARCHITECTURES` with a configuration, and for a
released model the weights file the package ships. ``train.py``, ``torch.hub`` (``hubconf.py``,
one entry point per name) and every tool's ``--weights NAME`` read this registry; the tests build
every name here. It imports no PyTorch until a model is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pconv.errors import ConfigError, MissingFileError
from pconv.models import ARCHITECTURES

if TYPE_CHECKING:
    from torch import nn

__all__ = ["MODELS", "WEIGHTS_DIR", "NamedModel", "create_model", "list_models", "weights_of"]

# Where the package keeps the weights it ships (links to the repository's weights/ in a clone).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class NamedModel:
    """A registered model.

    Attributes:
        name: what ``create_model``, ``torch.hub`` and ``--weights`` call it.
        architecture: a key of :data:`pconv.models.ARCHITECTURES`.
        config: its configuration's fields (the rest keep their defaults).
        summary: one line for listings.
        weights: the file of its trained weights in :data:`WEIGHTS_DIR`, or ``None`` (untrained only).
    """

    name: str
    architecture: str
    config: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    weights: str | None = None


MODELS: dict[str, NamedModel] = {
    m.name: m
    for m in (
        NamedModel(
            "pconv_unet_photos_512",
            "pconv_unet",
            {
                "depth": 7,
                "base_width": 32,
                "base_fill": "pushpull",
                "gate_head": 16,
            },
            "the released model: a gated residual on the push-pull fill, trained on 374 photos at 512 px",
            "pconv-unet-photos-512.safetensors",
        ),
        NamedModel(
            "pconv_unet_paper_512", "pconv_unet", {"depth": 8, "base_width": 64}, "the paper's U-Net for 512 px"
        ),
        NamedModel(
            "pconv_unet_paper_256", "pconv_unet", {"depth": 7, "base_width": 64}, "the paper's U-Net for 256 px"
        ),
        NamedModel("unet3plus", "unet3plus", {}, "UNet3+ with partial convolutions and full-scale skips"),
        NamedModel(
            "unet3plus_mc_dropout",
            "unet3plus",
            {"dropout": 0.2},
            "UNet3+ with Monte Carlo dropout: per-pixel uncertainty (predict.py --samples)",
        ),
    )
}


def list_models(pretrained: bool = False) -> list[str]:
    """The registered names (with ``pretrained``: only those with trained weights)."""
    return [name for name, m in MODELS.items() if m.weights is not None or not pretrained]


def _named(name: str) -> NamedModel:
    if name not in MODELS:
        raise ConfigError(f"no model named {name!r}; choose from {', '.join(MODELS)}")
    return MODELS[name]


def weights_of(name: str) -> Path:
    """The weights file of a pretrained name.

    Raises:
        ConfigError: an unknown name, or one without trained weights.
        MissingFileError: the package's weights file is not installed.
    """
    named = _named(name)
    if named.weights is None:
        pretrained = ", ".join(list_models(pretrained=True))
        raise ConfigError(f"{name} has no trained weights (pretrained=False builds it); trained: {pretrained}")
    path = WEIGHTS_DIR / named.weights
    if not path.is_file():
        raise MissingFileError(f"the weights of {name} are not installed at {path}; reinstall pconv")
    return path


def create_model(name: str, pretrained: bool = False, **config: Any) -> nn.Module:
    """The registered model ``name``: its trained weights (``pretrained=True``, in eval mode, as
    :func:`pconv.load_model` gives them) or a new, randomly initialised network of its
    configuration, whose fields ``config`` may change (``create_model("unet3plus", in_channels=1)``).

    Raises:
        ConfigError: an unknown name, pretrained weights that do not exist, fields that do not
            fit, or fields changed on a pretrained model.
    """
    named = _named(name)
    if pretrained:
        if config:
            raise ConfigError(f"{name}'s trained weights fix its configuration; pass pretrained=False to change it")
        from pconv.io import load_model

        return load_model(weights_of(name))
    arch = ARCHITECTURES[named.architecture]
    try:
        return arch.build(arch.config(**{**named.config, **config}))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{name}: {err}") from None
