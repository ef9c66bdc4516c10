"""pconv: image inpainting with partial convolutions (Liu et al. 2018).

The names below load on first use (PEP 562), so ``import pconv.masks`` or a command's ``--help``
does not wait for PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pconv.lazy import lazy_exports

__version__ = "0.2.0"

# public name -> module that defines it
_EXPORTS = {
    "InpaintingLoss": "pconv.losses",
    "LossWeights": "pconv.configs",
    "PConvUNet": "pconv.unet",
    "PConvUNetConfig": "pconv.configs",
    "PartialConv2d": "pconv.partialconv",
    "PartialConv3d": "pconv.partialconv",
    "UNet3Plus": "pconv.unet3plus",
    "UNet3PlusConfig": "pconv.configs",
    "VGG16Features": "pconv.vgg",
    "create_model": "pconv.registry",
    "list_models": "pconv.registry",
    "load_method": "pconv.methods",
    "load_model": "pconv.io",
    "save_model": "pconv.io",
}

__all__ = [
    "InpaintingLoss",
    "LossWeights",
    "PConvUNet",
    "PConvUNetConfig",
    "PartialConv2d",
    "PartialConv3d",
    "UNet3Plus",
    "UNet3PlusConfig",
    "VGG16Features",
    "__version__",
    "create_model",
    "list_models",
    "load_method",
    "load_model",
    "save_model",
]  # literal, so linters see the lazy names as exported

if TYPE_CHECKING:
    from pconv.configs import LossWeights, PConvUNetConfig, UNet3PlusConfig
    from pconv.io import load_model, save_model
    from pconv.losses import InpaintingLoss
    from pconv.methods import load_method
    from pconv.partialconv import PartialConv2d, PartialConv3d
    from pconv.registry import create_model, list_models
    from pconv.unet import PConvUNet
    from pconv.unet3plus import UNet3Plus
    from pconv.vgg import VGG16Features


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
