"""VGG16 convolutional features for the perceptual and style losses, without torchvision.

The layers carry torchvision's ``features.N`` names, so torchvision's published ImageNet
checkpoint loads as it is. Only the layers up to the last pooling the losses use are built.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from urllib.error import URLError

import torch
from torch import Tensor, nn

__all__ = ["VGG16_URL", "VGG16Features", "load_vgg16_state_dict"]

# torchvision's VGG16 ImageNet weights; the hash prefix in the name is checked on download.
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def load_vgg16_state_dict(weights: str | Path) -> dict[str, Tensor]:
    """VGG16 weights from ``"imagenet"`` (downloaded once into the torch hub cache) or a file.

    Files may be ``.pth``/``.pt`` (loaded with ``weights_only=True``) or ``.safetensors``,
    holding torchvision's full VGG16 state_dict or only its ``features.*`` part.
    """
    if str(weights) == "imagenet":
        try:
            return torch.hub.load_state_dict_from_url(VGG16_URL, check_hash=True, map_location="cpu", weights_only=True)
        except (URLError, OSError) as err:
            raise RuntimeError(
                f"could not download the VGG16 ImageNet weights from {VGG16_URL} ({err}). Offline, "
                "download that file elsewhere and pass its path as the VGG weights (--vgg-weights PATH), "
                f"or place it in {Path(torch.hub.get_dir()) / 'checkpoints'}."
            ) from err
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"VGG16 weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


class VGG16Features(nn.Module):
    """Frozen VGG16 feature extractor returning the outputs of pool1 .. pool``n``.

    Inputs are images in [0, 1]; ImageNet mean/std normalisation happens inside, and
    one-channel images are repeated to three.

    Args:
        weights: ``"imagenet"``, a path to a ``.pth``/``.safetensors`` file, or ``None`` for
            random weights (explicit only, with a warning: the losses then compare random
            features).
        pools: how many pooling outputs to return (3 in the paper: pool1, pool2, pool3).
    """

    def __init__(self, weights: str | Path | None, *, pools: int = 3) -> None:
        super().__init__()
        if not 1 <= pools <= 5:
            raise ValueError(f"pools must be between 1 and 5, got {pools}")
        layers: list[nn.Module] = []
        self.pool_indices: list[int] = []
        cin = 3
        for v in _CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                self.pool_indices.append(len(layers) - 1)
                if len(self.pool_indices) == pools:
                    break
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU(inplace=True)]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if weights is None:
            warnings.warn(
                "VGG16Features with random weights: perceptual and style losses compare random features",
                stacklevel=2,
            )
        else:
            self.load_weights(load_vgg16_state_dict(weights))
        self.requires_grad_(False)
        self.eval()

    def load_weights(self, state_dict: dict[str, Tensor]) -> None:
        """Load the ``features.N`` entries this extractor has; every one must be present."""
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict]
        if missing:
            raise KeyError(f"VGG16 weights lack {len(missing)} entries, e.g. {missing[:3]}; is this a VGG16 checkpoint?")
        self.load_state_dict({k: state_dict[k] for k in own})

    def train(self, mode: bool = True) -> VGG16Features:
        return super().train(False)  # always frozen

    def forward(self, x: Tensor) -> list[Tensor]:
        """``x`` (N, 1|3, H, W) in [0, 1] -> list of pooled features, shallowest first."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ValueError(f"VGG16 features need 1 or 3 channels, got {x.shape[1]}")
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.pool_indices:
                out.append(x)
        return out
