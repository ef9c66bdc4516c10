"""pconv: image inpainting with partial convolutions (Liu et al. 2018)."""

from pconv.io import load_model, save_model
from pconv.losses import InpaintingLoss, LossWeights
from pconv.partialconv import PartialConv2d, PartialConv3d
from pconv.unet import PConvUNet, PConvUNetConfig
from pconv.unet3plus import UNet3Plus, UNet3PlusConfig
from pconv.vgg import VGG16Features

__version__ = "0.1.0"

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
    "load_model",
    "save_model",
]
