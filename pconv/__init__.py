"""pconv: image inpainting with partial convolutions (Liu et al. 2018)."""

from pconv.partialconv import PartialConv2d, PartialConv3d

__version__ = "0.1.0"

__all__ = ["PartialConv2d", "PartialConv3d", "__version__"]
